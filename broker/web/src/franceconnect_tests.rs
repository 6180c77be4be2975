use super::*;

#[test]
fn the_callback_error_access_denied_is_a_cancellation_others_are_refusals() {
    assert_eq!(callback_error("access_denied", Some("l'usager a annulé")), FcError::Cancelled);
    let e = callback_error("invalid_scope", Some("scope inconnu\r\n: adresse"));
    assert_eq!(e, FcError::Refused { error: "invalid_scope".into(), description: Some("scope inconnu: adresse".into()) });
    assert_eq!(e.to_string(), "callback: invalid_scope (scope inconnu: adresse)");
    let long = callback_error(&"x".repeat(500), Some(""));
    assert!(matches!(&long, FcError::Refused { error, description: None } if error.len() == 64));
}

#[test]
fn state_must_match_exactly() {
    let p = Pending { state: "a".repeat(43), nonce: "n".repeat(43) };
    assert_eq!(matching(Some(p.clone()), &"a".repeat(43)), Some(p.clone()));
    assert_eq!(matching(Some(p.clone()), &"a".repeat(42)), None);
    assert_eq!(matching(Some(p.clone()), ""), None);
    assert_eq!(matching(None, &p.state), None);
    assert_eq!(format!("{p:?}"), "Pending(…)");
}

#[test]
fn every_error_speaks_french_to_the_aidant() {
    let all = [
        FcError::Cancelled,
        callback_error("server_error", None),
        FcError::Token("invalid_grant".into()),
        FcError::BadSignature { document: Document::IdToken, detail: String::new() },
        FcError::WrongNonce,
        FcError::AcrTooLow(String::new()),
        FcError::BadIdToken(String::new()),
        FcError::BadUserinfo(String::new()),
        FcError::InvalidIdentity(String::new()),
        FcError::Unreachable(String::new()),
    ];
    for e in all {
        let m = e.message();
        assert!(m.contains("identification") || m.contains("FranceConnect"), "{e:?}: {m}");
        assert!(m.ends_with('.') || m.ends_with(").") || m.ends_with("…)."), "{m}");
        assert!(!e.title().is_empty());
    }
}

#[test]
fn random_tokens_are_43_base64url_characters_and_differ() {
    let (a, b) = (random_token(), random_token());
    assert_eq!(a.len(), 43);
    assert!(a.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
    assert_ne!(a, b);
}
