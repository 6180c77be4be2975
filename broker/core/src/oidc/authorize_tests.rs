use super::*;
use crate::oidc::rep_scope::Accepted;
use crate::Demarche;

const CB: &str = "https://fc.exemple/api/v2/oidc-callback";
const CB_WITH_QUERY: &str = "https://rp.exemple/cb?tenant=a%20b";
const STATE: &str = "5d2c7a0f9b1e4c6a8d3f2b7e1a9c4d6f5d2c7a0f9b1e4c6a8d3f2b7e1a9c4d6f";
const NONCE: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
const ISS: &str = "https://broker.exemple";

type P = Vec<(String, String)>;

/// What FranceConnect's core sends.
fn fc_request() -> P {
    [
        ("client_id", "fc"),
        ("response_type", "code"),
        ("redirect_uri", CB),
        ("scope", "openid profile email birth"),
        ("acr_values", "eidas1"),
        ("state", STATE),
        ("nonce", NONCE),
        ("prompt", "login"),
        (
            "claims",
            r#"{"id_token":{"rep_scope":{"essential":true,"values":["argent","social"]}}}"#,
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

fn set(mut p: P, name: &str, value: &str) -> P {
    match p.iter_mut().find(|(k, _)| k == name) {
        Some(pair) => pair.1 = value.to_owned(),
        None => p.push((name.to_owned(), value.to_owned())),
    }
    p
}

fn without(mut p: P, name: &str) -> P {
    p.retain(|(k, _)| k != name);
    p
}

fn add(mut p: P, name: &str, value: &str) -> P {
    p.push((name.to_owned(), value.to_owned()));
    p
}

fn run(p: &P) -> Result<AuthorizeRequest, Rejection> {
    let uris = vec![CB.to_owned(), CB_WITH_QUERY.to_owned()];
    validate(p, |id| {
        (id == "fc").then_some(ClientView {
            client_id: "fc",
            redirect_uris: &uris,
        })
    })
}

fn page(p: &P) -> OAuthError {
    match run(p) {
        Err(Rejection::ErrorPage(e)) => {
            assert!(!e.redirectable, "{e}");
            e
        }
        other => panic!("expected an error page, got {other:?}"),
    }
}

fn redirect(p: &P) -> (String, Option<String>, OAuthError) {
    match run(p) {
        Err(Rejection::Redirect {
            redirect_uri,
            state,
            error,
        }) => {
            assert!(error.redirectable, "{error}");
            (redirect_uri.as_str().to_owned(), state, error)
        }
        other => panic!("expected an error redirect, got {other:?}"),
    }
}

/// The error code and description of a redirected error.
fn fault(p: &P) -> (ErrorCode, String) {
    let (_, _, e) = redirect(p);
    (e.code, e.description)
}

fn assert_fault(p: &P, code: ErrorCode, needle: &str) {
    let (c, d) = fault(p);
    assert_eq!(c, code, "{d}");
    assert!(d.contains(needle), "{d:?} should mention {needle:?}");
}

#[test]
fn franceconnect_core_request_is_accepted() {
    let r = run(&fc_request()).unwrap();
    assert_eq!(
        r,
        AuthorizeRequest {
            client_id: "fc".into(),
            redirect_uri: RegisteredUri(CB.into()),
            state: STATE.into(),
            nonce: NONCE.into(),
            scopes: vec![Scope::OpenId, Scope::Profile, Scope::Email, Scope::Birth],
            prompt_login: true,
            prompt_none: false,
            rep_scope: Some(RepScope::Among(vec![
                Accepted { demarche: Demarche::Social, spelling: "social".into() },
                Accepted { demarche: Demarche::Argent, spelling: "argent".into() },
            ])),
            rep_scope_ignored: Vec::new(),
            code_challenge: None,
            acr: "eidas1",
        }
    );
}

#[test]
fn params_may_be_borrowed_pairs_and_clients_owned() {
    struct Stored {
        id: String,
        uris: Vec<String>,
    }
    impl AsClientView for Stored {
        fn client_view(&self) -> ClientView<'_> {
            ClientView {
                client_id: &self.id,
                redirect_uris: &self.uris,
            }
        }
    }
    let owned = fc_request();
    let p: Vec<(&str, &str)> = owned
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut calls = 0;
    let r = validate(&p, |id| {
        calls += 1;
        Some(Stored {
            id: id.to_owned(),
            uris: vec![CB.to_owned()],
        })
    });
    assert!(r.is_ok());
    assert_eq!(calls, 1);
}

#[test]
fn client_problems_are_pages_even_when_other_faults_exist() {
    let bad_scope = set(fc_request(), "scope", "profile");
    let e = page(&set(bad_scope.clone(), "client_id", "inconnu"));
    assert_eq!(e.code, ErrorCode::InvalidRequest);
    assert!(e.description.contains("Client inconnu"));
    assert!(page(&without(bad_scope.clone(), "client_id"))
        .description
        .contains("obligatoire"));
    assert!(page(&add(bad_scope.clone(), "client_id", "fc"))
        .description
        .contains("répété"));
    assert!(
        page(&set(bad_scope, "client_id", ""))
            .description
            .contains("obligatoire"),
        "empty = omitted"
    );
    // unknown client + no redirect_uri: still a page, never a redirect
    page(&without(
        set(fc_request(), "client_id", "x"),
        "redirect_uri",
    ));
}

#[test]
fn a_failing_lookup_is_a_generic_server_error_page() {
    let r = try_validate(&fc_request(), |_| {
        Err::<Option<ClientView<'_>>, _>("connection refused: postgres://broker:hunter2@db")
    });
    let Err(Rejection::ErrorPage(e)) = r else {
        panic!("{r:?}")
    };
    assert_eq!(e.code, ErrorCode::ServerError);
    assert!(!e.redirectable);
    assert!(!e.description.contains("hunter2"));
    assert!(e.detail.unwrap().contains("connection refused"));
}

#[test]
fn a_loosely_matching_lookup_is_an_unknown_client() {
    let uris = vec![CB.to_owned()];
    let r = validate(&set(fc_request(), "client_id", "FC"), |_| {
        Some(ClientView {
            client_id: "fc",
            redirect_uris: &uris,
        })
    });
    assert!(
        matches!(r, Err(Rejection::ErrorPage(e)) if e.description.contains("Client inconnu"))
    );
}

#[test]
fn redirect_uri_must_be_exactly_a_registered_one() {
    for bad in [
        "https://fc.exemple/api/v2/oidc-callback/",
        "https://FC.exemple/api/v2/oidc-callback",
        "https://fc.exemple/api/v2/OIDC-callback",
        "https://fc.exemple/api/v2/oidc-callback?x=1",
        "https://fc.exemple/api/v2/oidc-callback#",
        "https://fc.exemple:443/api/v2/oidc-callback",
        "http://fc.exemple/api/v2/oidc-callback",
        "https://rp.exemple/cb",
        "https://rp.exemple/cb?tenant=a+b",
        "https://evil.exemple/cb",
    ] {
        let e = page(&set(set(fc_request(), "redirect_uri", bad), "scope", "bad"));
        assert!(
            e.description.contains("aucune URI enregistrée"),
            "{bad}: {e}"
        );
        assert!(e.detail.as_deref().unwrap().contains(bad));
    }
    assert!(page(&without(fc_request(), "redirect_uri"))
        .description
        .contains("obligatoire"));
    assert!(page(&add(fc_request(), "redirect_uri", CB))
        .description
        .contains("répété"));
    let r = run(&set(fc_request(), "redirect_uri", CB_WITH_QUERY)).unwrap();
    assert_eq!(r.redirect_uri.as_str(), CB_WITH_QUERY);
}

#[test]
fn any_repeated_parameter_is_refused_first() {
    for name in [
        "scope",
        "response_type",
        "nonce",
        "claims",
        "prompt",
        "ui_locales",
    ] {
        let mut p = add(set(fc_request(), "response_type", "token"), name, "x");
        if name == "ui_locales" {
            p = add(p, name, "fr");
        }
        assert_fault(&p, ErrorCode::InvalidRequest, &format!("{name} est répété"));
    }
    // a repeated state is reported, and not echoed (which one would it be?)
    let (uri, state, e) = redirect(&add(fc_request(), "state", "autre"));
    assert_eq!(
        (uri.as_str(), state, e.code),
        (CB, None, ErrorCode::InvalidRequest)
    );
    // empty values count as omitted (RFC 6749 §3.1)
    assert!(run(&add(fc_request(), "nonce", "")).is_ok());
    assert!(run(&add(fc_request(), "foo", "")).is_ok());
}

#[test]
fn response_type_is_checked_before_state() {
    // bad response_type and missing state: unsupported_response_type, no state
    let (_, state, e) = redirect(&without(
        set(fc_request(), "response_type", "token"),
        "state",
    ));
    assert_eq!((e.code, state), (ErrorCode::UnsupportedResponseType, None));
    // bad response_type and a state: the state is carried back
    let (uri, state, e) = redirect(&set(fc_request(), "response_type", "code id_token"));
    assert_eq!(e.code, ErrorCode::UnsupportedResponseType);
    assert_eq!((uri.as_str(), state.as_deref()), (CB, Some(STATE)));
    assert_fault(
        &without(fc_request(), "response_type"),
        ErrorCode::InvalidRequest,
        "response_type",
    );
    assert_fault(
        &set(fc_request(), "response_type", "CODE"),
        ErrorCode::UnsupportedResponseType,
        "code",
    );
}

#[test]
fn the_checks_run_in_the_documented_order() {
    // Everything wrong at once; fix one fault at a time and watch the next appear.
    let mut p = fc_request();
    p = add(p, "prompt", "login");
    p = set(p, "response_type", "token");
    p = set(p, "scope", "profile");
    p = set(p, "acr_values", "eidas2");
    p = without(p, "state");
    p = set(p, "nonce", &"n".repeat(257));
    p = set(p, "prompt", "none login");
    p = set(p, "claims", "{");
    p = set(p, "code_challenge_method", "plain");

    type Fix = fn(P) -> P;
    let steps: [(ErrorCode, &str, Fix); 9] = [
        (ErrorCode::InvalidRequest, "prompt est répété", |p| {
            let mut seen = false;
            p.into_iter()
                .filter(|(k, _)| !(k == "prompt" && std::mem::replace(&mut seen, true)))
                .collect()
        }),
        (ErrorCode::UnsupportedResponseType, "response_type", |p| {
            set(p, "response_type", "code")
        }),
        (ErrorCode::InvalidScope, "openid", |p| {
            set(p, "scope", "openid")
        }),
        (ErrorCode::InvalidRequest, "eidas1", |p| {
            set(p, "acr_values", "eidas1")
        }),
        (ErrorCode::InvalidRequest, "state est obligatoire", |p| {
            set(p, "state", STATE)
        }),
        (ErrorCode::InvalidRequest, "nonce", |p| {
            set(p, "nonce", NONCE)
        }),
        (ErrorCode::InvalidRequest, "prompt=none", |p| {
            set(p, "prompt", "login")
        }),
        (ErrorCode::InvalidRequest, "JSON valide", |p| {
            without(p, "claims")
        }),
        (ErrorCode::InvalidRequest, "plain", |p| {
            without(p, "code_challenge_method")
        }),
    ];
    for (code, needle, fix) in steps {
        assert_fault(&p, code, needle);
        p = fix(p);
    }
    assert!(run(&p).is_ok());
}

#[test]
fn scope_needs_openid_and_ignores_unknown_values() {
    assert_fault(
        &set(fc_request(), "scope", "profile email birth"),
        ErrorCode::InvalidScope,
        "openid",
    );
    assert_fault(
        &without(fc_request(), "scope"),
        ErrorCode::InvalidScope,
        "openid",
    );
    assert_fault(
        &set(fc_request(), "scope", "OpenID"),
        ErrorCode::InvalidScope,
        "openid",
    );
    assert_fault(
        &set(fc_request(), "scope", "openid,profile"),
        ErrorCode::InvalidScope,
        "openid",
    );
    let r = run(&set(
        fc_request(),
        "scope",
        "birth  openid given_name offline_access openid email",
    ))
    .unwrap();
    assert_eq!(r.scopes, [Scope::OpenId, Scope::Email, Scope::Birth]);
    assert_eq!(
        run(&set(fc_request(), "scope", "openid")).unwrap().scopes,
        [Scope::OpenId]
    );
}

#[test]
fn acr_values_must_contain_eidas1() {
    for bad in ["eidas2", "eidas1x", "EIDAS1", "eidas2,eidas1"] {
        assert_fault(
            &set(fc_request(), "acr_values", bad),
            ErrorCode::InvalidRequest,
            "acr_values",
        );
    }
    assert_fault(
        &without(fc_request(), "acr_values"),
        ErrorCode::InvalidRequest,
        "acr_values",
    );
    assert_eq!(
        run(&set(fc_request(), "acr_values", "eidas3 eidas1"))
            .unwrap()
            .acr,
        "eidas1"
    );
}

#[test]
fn state_and_nonce_are_required_and_bounded() {
    for name in ["state", "nonce"] {
        assert_fault(
            &without(fc_request(), name),
            ErrorCode::InvalidRequest,
            &format!("{name} est obligatoire"),
        );
        let max = "~".repeat(256);
        let r = run(&set(fc_request(), name, &max)).unwrap();
        assert_eq!(if name == "state" { &r.state } else { &r.nonce }, &max);
        assert_eq!(run(&set(fc_request(), name, "x")).map(|_| ()), Ok(()));
        for bad in [
            "a".repeat(257),
            "a b".into(),
            "été".into(),
            "a\tb".into(),
            "a\u{7f}".into(),
        ] {
            assert_fault(
                &set(fc_request(), name, &bad),
                ErrorCode::InvalidRequest,
                &format!("{name} doit compter"),
            );
        }
    }
    // a malformed state is not reflected in the redirect
    let (_, state, _) = redirect(&set(fc_request(), "state", &"a".repeat(257)));
    assert_eq!(state, None);
    let (_, state, _) = redirect(&set(fc_request(), "nonce", &"a".repeat(257)));
    assert_eq!(state.as_deref(), Some(STATE));
}

#[test]
fn prompt_values() {
    let r = run(&without(fc_request(), "prompt")).unwrap();
    assert_eq!((r.prompt_login, r.prompt_none), (false, false));
    let r = run(&set(fc_request(), "prompt", "none")).unwrap();
    assert_eq!((r.prompt_login, r.prompt_none), (false, true));
    let r = run(&set(fc_request(), "prompt", "consent login select_account")).unwrap();
    assert_eq!((r.prompt_login, r.prompt_none), (true, false));
    for bad in ["none login", "consent none", "none none login"] {
        assert_fault(
            &set(fc_request(), "prompt", bad),
            ErrorCode::InvalidRequest,
            "prompt=none",
        );
    }
    for bad in ["create", "Login", "login,consent"] {
        assert_fault(
            &set(fc_request(), "prompt", bad),
            ErrorCode::InvalidRequest,
            "prompt",
        );
    }
}

fn with_claims(claims: &str) -> P {
    set(fc_request(), "claims", claims)
}

#[test]
fn claims_must_be_a_json_object() {
    for bad in ["{", "rep_scope=argent", r#"{"id_token":}"#] {
        assert_fault(&with_claims(bad), ErrorCode::InvalidRequest, "JSON valide");
    }
    for bad in ["[]", "\"x\"", "null", "1"] {
        assert_fault(&with_claims(bad), ErrorCode::InvalidRequest, "objet JSON");
    }
    assert_fault(
        &with_claims(r#"{"id_token":["rep_scope"]}"#),
        ErrorCode::InvalidRequest,
        "id_token doit",
    );
    let long = format!(r#"{{"userinfo":{{"x":"{}"}}}}"#, "a".repeat(CLAIMS_MAX));
    assert_fault(&with_claims(&long), ErrorCode::InvalidRequest, "trop long");
    // no claims, or claims without id_token.rep_scope: rep_scope not requested
    for none in [
        "{}",
        r#"{"id_token":null}"#,
        r#"{"id_token":{"acr":{"essential":true}}}"#,
        r#"{"userinfo":{"rep_scope":{"values":["inconnue"]}}}"#,
    ] {
        assert_eq!(run(&with_claims(none)).unwrap().rep_scope, None, "{none}");
    }
    assert_eq!(
        run(&without(fc_request(), "claims")).unwrap().rep_scope,
        None
    );
}

#[test]
fn rep_scope_as_franceconnect_core_sends_it() {
    let rep = |claims: &str| run(&with_claims(claims)).map(|r| r.rep_scope.and_then(|s| s.restricted_to()));
    assert_eq!(
        rep(r#"{"id_token":{"rep_scope":{"values":["social","argent","social"],"extra":1}}}"#),
        Ok(Some(vec![Demarche::Social, Demarche::Argent]))
    );
    assert_eq!(rep(r#"{"id_token":{"rep_scope":{"value":"justice"}}}"#), Ok(Some(vec![Demarche::Justice])));
    // No list, or an empty one: requested, restricting nothing.
    for any in [
        r#"{"id_token":{"rep_scope":null}}"#,
        r#"{"id_token":{"rep_scope":{"essential":true}}}"#,
        r#"{"id_token":{"rep_scope":{"essential":true,"values":[]}}}"#,
    ] {
        assert_eq!(run(&with_claims(any)).unwrap().rep_scope, Some(RepScope::Any), "{any}");
    }
    // Labels, and an unknown value beside a known one.
    let r = run(&with_claims(r#"{"id_token":{"rep_scope":{"essential":true,"values":["Famille-Scolarité","impots"]}}}"#)).unwrap();
    assert_eq!(r.rep_scope.as_ref().and_then(RepScope::restricted_to), Some(vec![Demarche::Famille]));
    assert_eq!(r.rep_scope_ignored, vec!["impots".to_owned()]);

    assert_fault(
        &with_claims(r#"{"id_token":{"rep_scope":{"essential":true,"values":["impots"]}}}"#),
        ErrorCode::InvalidRequest,
        "« impots »",
    );
    assert_fault(&with_claims(r#"{"id_token":{"rep_scope":{"values":["Argent"]}}}"#), ErrorCode::InvalidRequest, "Argent");
    for (bad, needle) in [
        (r#"{"id_token":{"rep_scope":{"values":"argent"}}}"#, "liste"),
        (r#"{"id_token":{"rep_scope":{"values":["argent",1]}}}"#, "chaînes"),
        (r#"{"id_token":{"rep_scope":{"value":1}}}"#, "chaînes"),
        (r#"{"id_token":{"rep_scope":{"value":"argent","values":["argent"]}}}"#, "ensemble"),
        (r#"{"id_token":{"rep_scope":{"essential":"true","values":["argent"]}}}"#, "essential"),
        (r#"{"id_token":{"rep_scope":["argent"]}}"#, "rep_scope doit"),
    ] {
        assert_fault(&with_claims(bad), ErrorCode::InvalidRequest, needle);
    }
}

#[test]
fn pkce_s256_only() {
    let pk = |m: Option<&str>, c: Option<&str>| {
        let mut p = fc_request();
        if let Some(m) = m {
            p = set(p, "code_challenge_method", m);
        }
        if let Some(c) = c {
            p = set(p, "code_challenge", c);
        }
        p
    };
    assert_eq!(
        run(&pk(Some("S256"), Some(CHALLENGE)))
            .unwrap()
            .code_challenge
            .as_deref(),
        Some(CHALLENGE)
    );
    assert_eq!(run(&pk(None, None)).unwrap().code_challenge, None);
    assert_fault(
        &pk(Some("plain"), Some(CHALLENGE)),
        ErrorCode::InvalidRequest,
        "plain est refusée",
    );
    assert_fault(
        &pk(Some("s256"), Some(CHALLENGE)),
        ErrorCode::InvalidRequest,
        "S256 seulement",
    );
    assert_fault(
        &pk(Some("S256"), None),
        ErrorCode::InvalidRequest,
        "sans code_challenge",
    );
    assert_fault(
        &pk(None, Some(CHALLENGE)),
        ErrorCode::InvalidRequest,
        "sans code_challenge_method",
    );
    let ok43 = "a".repeat(43);
    let ok128 = "-._~".repeat(32);
    assert!(run(&pk(Some("S256"), Some(&ok43))).is_ok());
    assert!(run(&pk(Some("S256"), Some(&ok128))).is_ok());
    for bad in [
        "a".repeat(42),
        "a".repeat(129),
        format!("{}+", "a".repeat(42)),
        format!("{}=", "a".repeat(42)),
    ] {
        assert_fault(
            &pk(Some("S256"), Some(&bad)),
            ErrorCode::InvalidRequest,
            "43 à 128",
        );
    }
}

#[test]
fn error_redirect_url_shape() {
    let p = set(
        set(fc_request(), "redirect_uri", CB_WITH_QUERY),
        "scope",
        "profile",
    );
    let r = run(&p).unwrap_err();
    let Rejection::Redirect {
        redirect_uri,
        state,
        error,
    } = &r
    else {
        panic!("{r:?}")
    };
    assert_eq!(r.error().code, ErrorCode::InvalidScope);
    let url = error
        .redirect_url(redirect_uri.as_str(), state.as_deref(), ISS)
        .unwrap();
    assert!(
        url.as_str()
            .starts_with("https://rp.exemple/cb?tenant=a%20b&error=invalid_scope&"),
        "{url}"
    );
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
    let keys: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        ["tenant", "error", "error_description", "state", "iss"]
    );
    assert_eq!(pairs[3].1, STATE);
    assert_eq!(pairs[4].1, ISS);

    // page errors refuse to become redirects
    let r = run(&set(
        fc_request(),
        "redirect_uri",
        "https://evil.exemple/cb",
    ))
    .unwrap_err();
    assert!(r
        .error()
        .redirect_url("https://evil.exemple/cb", None, ISS)
        .is_err());
}

#[test]
fn organisation_must_be_allowed_every_requested_demarche() {
    use Demarche::*;
    let scope = |v: &str| RepScope::parse(&serde_json::from_str(v).unwrap()).unwrap().scope;
    assert_eq!(scope(r#"{"values":["argent","social"]}"#).within(&Demarche::ALL), Ok(vec![Social, Argent]));
    assert_eq!(RepScope::Any.within(&[Social]), Ok(vec![Social]));
    let e = scope(r#"{"values":["argent","social","papiers"]}"#).within(&[Social]).unwrap_err();
    assert_eq!(e.code, ErrorCode::AccessDenied);
    assert!(e.redirectable);
    assert_eq!(e.description, "Votre structure n'est pas habilitée pour ces démarches : papiers, argent.");
}

#[test]
fn pkce_verification_rfc7636_appendix_b() {
    let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    assert!(verify_pkce(
        "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        verifier
    ));
    assert!(!verify_pkce(
        "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cN",
        verifier
    ));
    assert!(!verify_pkce(
        "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM=",
        verifier
    ));
    assert!(!verify_pkce(
        CHALLENGE,
        "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXj"
    ));
    assert!(!verify_pkce(verifier, verifier), "plain is never accepted");
    // the verifier's own format: 43..=128 unreserved characters
    let short = &verifier[..42];
    let challenge_of = |v: &str| BASE64URL_NOPAD.encode(&Sha256::digest(v.as_bytes()));
    assert!(!verify_pkce(&challenge_of(short), short));
    let long = "a".repeat(129);
    assert!(!verify_pkce(&challenge_of(&long), &long));
    let max = "~".repeat(128);
    assert!(verify_pkce(&challenge_of(&max), &max));
    let bad = format!("{verifier}+");
    assert!(!verify_pkce(&challenge_of(&bad), &bad));
}
