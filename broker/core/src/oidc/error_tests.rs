use super::*;

#[test]
fn codes_are_the_rfc_strings() {
    let strs: Vec<_> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    assert_eq!(
        strs,
        [
            "invalid_request",
            "unauthorized_client",
            "access_denied",
            "unsupported_response_type",
            "invalid_scope",
            "server_error",
            "temporarily_unavailable",
            "login_required",
            "interaction_required",
            "invalid_client",
            "invalid_grant",
            "unsupported_grant_type",
            "invalid_token",
        ]
    );
    assert_eq!(ErrorCode::InvalidGrant.to_string(), "invalid_grant");
}

#[test]
fn http_status_for_json_errors() {
    assert_eq!(ErrorCode::InvalidClient.http_status(), 401);
    assert_eq!(ErrorCode::InvalidToken.http_status(), 401);
    assert_eq!(ErrorCode::ServerError.http_status(), 500);
    assert_eq!(ErrorCode::TemporarilyUnavailable.http_status(), 503);
    for c in [
        ErrorCode::InvalidRequest,
        ErrorCode::InvalidGrant,
        ErrorCode::UnsupportedGrantType,
        ErrorCode::UnauthorizedClient,
        ErrorCode::InvalidScope,
    ] {
        assert_eq!(c.http_status(), 400, "{c}");
    }
    assert_eq!(
        OAuthError::new(ErrorCode::InvalidClient, "x").http_status(),
        401
    );
}

#[test]
fn json_body_has_error_and_description_only() {
    let e = OAuthError::new(ErrorCode::InvalidGrant, "code expiré ou déjà utilisé")
        .with_detail("code abc123 replayed");
    assert_eq!(
        e.to_json(),
        json!({"error": "invalid_grant", "error_description": "code expire ou deja utilise"})
    );
    assert!(!e.to_json().to_string().contains("abc123"));
}

#[test]
fn internal_failures_become_generic_server_errors() {
    let e = OAuthError::internal("pool timed out: postgres://broker:hunter2@db/broker");
    assert_eq!(e.code, ErrorCode::ServerError);
    assert_eq!(e.description, GENERIC_SERVER_ERROR);
    assert_eq!(e.http_status(), 500);
    assert!(e.detail.as_deref().unwrap().contains("pool timed out"));
    for shown in [
        e.to_string(),
        e.to_json().to_string(),
        e.redirect_url("https://rp.exemple/cb", None, "https://broker.exemple")
            .unwrap()
            .to_string(),
    ] {
        assert!(
            !shown.contains("hunter2") && !shown.contains("pool"),
            "{shown}"
        );
    }
}

fn pairs(url: &Url) -> Vec<(String, String)> {
    url.query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

#[test]
fn redirect_url_appends_query_pairs() {
    let e = OAuthError::invalid_request("state est obligatoire");
    let url = e
        .redirect_url(
            "https://fc.exemple/api/v2/oidc-callback",
            Some("a b&c=d"),
            "https://broker.exemple",
        )
        .unwrap();
    assert_eq!(url.path(), "/api/v2/oidc-callback");
    assert_eq!(
        pairs(&url),
        [
            ("error".into(), "invalid_request".into()),
            ("error_description".into(), "state est obligatoire".into()),
            ("state".into(), "a b&c=d".into()),
            ("iss".into(), "https://broker.exemple".into()),
        ]
    );
    assert!(url.as_str().contains("state=a+b%26c%3Dd"), "{url}");
    assert!(url.fragment().is_none());
}

#[test]
fn redirect_url_without_state_keeps_the_registered_query() {
    let e = OAuthError::new(ErrorCode::AccessDenied, "L'aidant a annulé");
    let url = e
        .redirect_url(
            "https://rp.exemple/cb?tenant=a%20b&x=1",
            None,
            "https://broker.exemple",
        )
        .unwrap();
    assert!(
        url.as_str()
            .starts_with("https://rp.exemple/cb?tenant=a%20b&x=1&error=access_denied&"),
        "{url}"
    );
    let p = pairs(&url);
    assert_eq!(p[0], ("tenant".into(), "a b".into()));
    assert_eq!(p[1], ("x".into(), "1".into()));
    assert!(!p.iter().any(|(k, _)| k == "state"));
    assert_eq!(
        p.last().unwrap(),
        &("iss".into(), "https://broker.exemple".into())
    );
}

#[test]
fn page_errors_are_never_redirected() {
    let e = OAuthError::page(ErrorCode::InvalidRequest, "redirect_uri non enregistrée");
    assert!(!e.redirectable);
    assert_eq!(
        e.redirect_url("https://rp.exemple/cb", Some("s"), "https://broker.exemple"),
        Err(RedirectError::NotRedirectable)
    );
    assert!(matches!(
        OAuthError::invalid_request("x").redirect_url("/relative", None, "i"),
        Err(RedirectError::BadRedirectUri(_))
    ));
}

#[test]
fn wire_description_uses_the_rfc_character_set() {
    let d = wire_description("Démarche inconnue : « impôts » \\ “x” … ☃");
    assert_eq!(d, "Demarche inconnue : 'impots' / 'x' ... ?");
    assert!(d
        .chars()
        .all(|c| (' '..='~').contains(&c) && c != '"' && c != '\\'));
    assert_eq!(
        wire_description("Votre structure n'est pas habilitée pour ces démarches : argent"),
        "Votre structure n'est pas habilitee pour ces demarches : argent"
    );
}
