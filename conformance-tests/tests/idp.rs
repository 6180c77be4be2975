//! The broker as FranceConnect's core meets it (shared/docs/franceconnect.md §1): a real
//! `broker` process, seeded through its CLI, against an OpenID Connect client built on the
//! `openidconnect` crate that sends what the core sends. The aidant's steps go through
//! the broker's pages over HTTP. Every case runs on the embedded default (SQLite and the
//! in-process cache) and on PostgreSQL with Redis; docs/franceconnect.md lists them.

use conformance_tests::on_both_backends;
use conformance_tests::fc::{core_checks, Core, FcIdTokenClaims, FcTokenResponse, Raw};
use conformance_tests::idp::{Aidant, Backend, Browser, Callback, Idp, Mandat, Page, Proof, Usager, CALLBACK, LOGOUT_CALLBACK, OTHER_CALLBACK};
use data_encoding::BASE64URL_NOPAD;
use openidconnect::{AccessToken, JsonWebKey, OAuth2TokenResponse, TokenResponse};
use serde_json::Value;
use std::time::{Duration, Instant};


/// A broker with one structure, its aidant, and a usager who signed a mandat with them.
struct World {
    idp: Idp,
    aidant: Aidant,
    usager: Usager,
    mandat: Mandat,
}

/// The organisation allows `org_demarches` (all when `None`); the mandat covers `mandat`.
fn world_with(backend: Backend, org_demarches: Option<&str>, mandat: &str) -> World {
    let idp = Idp::start(backend);
    let org = idp.organisation("France Services Tourcoing", org_demarches);
    let aidant = idp.aidant(org);
    let usager = idp.usager("Jeanne Marie", "Martin", "1952-03-14");
    let mandat = idp.mandat(&aidant, &usager, mandat);
    World { idp, aidant, usager, mandat }
}

fn world(backend: Backend) -> World {
    world_with(backend, None, "argent,famille,logement")
}

/// The callback carries `code`, the request's `state` and the issuer as `iss`, and
/// nothing else; returns the code.
fn code_of(cb: &Callback, state: &str, issuer: &str) -> String {
    assert_eq!(cb.target(), CALLBACK, "back to the registered callback: {}", cb.url);
    assert_eq!(cb.get("state"), Some(state), "state echoed: {}", cb.url);
    assert_eq!(cb.get("iss"), Some(issuer), "iss is the issuer: {}", cb.url);
    assert_eq!(cb.get("error"), None, "{}", cb.url);
    let mut names = cb.names.clone();
    names.sort();
    assert_eq!(names, ["code", "iss", "state"], "{}", cb.url);
    let code = cb.get("code").unwrap().to_owned();
    assert!(code.len() >= 32, "a code of at least 32 characters: {code}");
    code
}

/// An error redirect (RFC 6749 §4.1.2.1): `error`, a description, `state` when given
/// (`None`: not echoed), `iss`, and no code.
fn assert_error_redirect(page: &Page, error: &str, state: Option<&str>, issuer: &str) -> Callback {
    assert_eq!(page.status, 303, "a redirect to the client expected: {:?} {}", page.location, page.body);
    let cb = page.callback().unwrap_or_else(|| panic!("not a redirect to the client: {:?}", page.location));
    assert_eq!(cb.target(), CALLBACK, "{}", cb.url);
    assert_eq!(cb.get("error"), Some(error), "{}", cb.url);
    assert!(cb.get("error_description").is_some_and(|d| !d.is_empty()), "error_description: {}", cb.url);
    assert_eq!(cb.get("state"), state, "state: {}", cb.url);
    assert_eq!(cb.get("iss"), Some(issuer), "iss: {}", cb.url);
    assert_eq!(cb.get("code"), None, "{}", cb.url);
    cb
}

/// An HTML error page: status 400, no redirect at all.
fn assert_error_page(page: &Page) {
    assert_eq!(page.status, 400, "{:?} {}", page.location, page.body);
    assert_eq!(page.location, None, "never a redirect");
    assert!(page.content_type.as_deref().is_some_and(|c| c.starts_with("text/html")), "{:?}", page.content_type);
    assert!(page.body.contains("<html lang=\"fr\""), "{}", page.body);
}

/// A refusal at `/token`: RFC 6749 §5.2 JSON with `error`, not cached, and the status.
fn assert_token_refused(r: Result<FcTokenResponse, conformance_tests::fc::TokenRefusal>, error: &str, status: u16) {
    let refusal = match r {
        Ok(t) => panic!("tokens issued where {error} was expected: {:?}", t.access_token().secret().len()),
        Err(e) => e,
    };
    assert_eq!(refusal.error.as_deref(), Some(error), "{}", refusal.raw.text());
    assert_eq!(refusal.raw.status, status, "{}", refusal.raw.text());
    assert_eq!(refusal.raw.header("cache-control"), Some("no-store"));
    assert!(refusal.raw.header("content-type").is_some_and(|c| c.starts_with("application/json")));
    assert_eq!(refusal.raw.json()["error"], error);
}

/// A userinfo refusal: 401 with `WWW-Authenticate: Bearer … error="invalid_token"`.
fn assert_invalid_token(r: Result<conformance_tests::fc::UserInfo, Raw>) {
    let raw = match r {
        Ok(u) => panic!("identity disclosed where invalid_token was expected: {}", u.raw.text()),
        Err(raw) => raw,
    };
    assert_eq!(raw.status, 401, "{}", raw.text());
    let challenge = raw.header("www-authenticate").unwrap_or_default();
    assert!(challenge.starts_with("Bearer ") && challenge.contains("error=\"invalid_token\""), "{challenge}");
    assert_eq!(raw.header("cache-control"), Some("no-store"));
    assert_eq!(raw.json()["error"], "invalid_token");
}

/// Runs one authorization to its code: (request, callback's code).
fn authorize_to_code(w: &World, core: &Core, b: &mut Browser, rep_scope: Option<&[&str]>, pkce: bool, demarche: Option<&str>) -> (conformance_tests::fc::AuthRequest, String) {
    let req = core.auth_request_with(rep_scope, pkce);
    let cb = w.idp.run_flow(b, &w.aidant, &req.url, &w.usager, demarche);
    let code = code_of(&cb, &req.state, w.idp.issuer());
    (req, code)
}

/// The id_token as FranceConnect's core checks it, and the claims the broker owes.
fn check_id_token(core: &Core, tokens: &FcTokenResponse, nonce: &openidconnect::Nonce, usager: &Usager) -> FcIdTokenClaims {
    let claims = core.verify_id_token(tokens, nonce).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(claims.issuer().as_str(), core.issuer);
    let aud: Vec<&str> = claims.audiences().iter().map(|a| a.as_str()).collect();
    assert_eq!(aud, [core.registration.client_id.as_str()], "aud is the client alone");
    assert_eq!(claims.subject().as_str(), usager.sub, "sub is the usager's broker id");
    assert_eq!(claims.auth_context_ref().map(|a| a.as_str()), Some("eidas1"));
    assert!(claims.auth_time().is_some(), "auth_time");
    let amr: Vec<&str> = claims.auth_method_refs().map(|a| a.iter().map(|m| m.as_str()).collect()).unwrap_or_default();
    assert!(amr.contains(&"mfa"), "amr names a second factor: {amr:?}");
    assert!(claims.access_token_hash().is_some(), "at_hash (checked against the access token)");
    assert!(claims.expiration() > claims.issue_time());

    // The signature: the registered algorithm, a key of the JWKS named by its kid (or
    // the client secret for HS256); any change to the claims breaks it.
    let text = tokens.id_token().unwrap().to_string();
    let (header, _) = core.verify_jws(&text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(header["alg"], core.registration.alg.as_str());
    if core.registration.alg != "HS256" {
        let kid = header["kid"].as_str().expect("kid");
        let published: Vec<Value> = core.fetch_jwks()["keys"].as_array().unwrap().clone();
        let key = published.iter().find(|k| k["kid"] == kid).unwrap_or_else(|| panic!("kid {kid} not published"));
        assert_eq!(key["alg"], core.registration.alg.as_str());
    }
    let parts: Vec<&str> = text.split('.').collect();
    let mut payload: Value = serde_json::from_slice(&BASE64URL_NOPAD.decode(parts[1].as_bytes()).unwrap()).unwrap();
    payload["sub"] = Value::String("usager-usurpe".into());
    let forged = format!("{}.{}.{}", parts[0], BASE64URL_NOPAD.encode(payload.to_string().as_bytes()), parts[2]);
    assert!(core.verify_id_token_text(&forged, nonce).is_err(), "a changed id_token must not verify");
    assert!(core.verify_id_token_text(&text, nonce).is_ok());
    claims
}

/// The identité pivot of `usager`, in FranceConnect's formats.
fn check_identity(info: &conformance_tests::fc::UserInfo, usager: &Usager) {
    let c = &info.claims;
    assert_eq!(c.subject().as_str(), usager.sub);
    assert_eq!(c.given_name().and_then(|n| n.get(None)).map(|n| n.as_str()), Some(usager.given_name.as_str()));
    assert_eq!(c.family_name().and_then(|n| n.get(None)).map(|n| n.as_str()), Some(usager.family_name.as_str()));
    assert_eq!(c.birthdate().map(|d| d.as_str()), Some(usager.birthdate.as_str()));
    assert_eq!(c.gender().map(|g| serde_json::to_value(g).unwrap()), Some(Value::String(usager.gender.clone())));
    assert_eq!(c.email().map(|e| e.as_str()), Some(usager.email.as_str()));
    assert_eq!(c.additional_claims().birthplace.as_deref(), Some(usager.birthplace.as_str()));
    assert_eq!(c.additional_claims().birthcountry.as_deref(), Some(usager.birthcountry.as_str()));
    assert_eq!(info.raw.header("cache-control"), Some("no-store"));
}

/// The complete flow with the client registered with `alg` and `userinfo`.
fn happy_path(backend: Backend, alg: &str, userinfo: &str) {
    let w = world(backend);
    let reg = w.idp.client(alg, userinfo);
    let core = Core::discover(&w.idp, &reg);
    let req = core.auth_request(Some(&["argent", "famille"]));

    // What the core sends.
    let q: std::collections::HashMap<String, String> = req.url.query_pairs().into_owned().collect();
    assert_eq!(q["scope"], "openid profile email birth");
    assert_eq!((q["acr_values"].as_str(), q["prompt"].as_str(), q["response_type"].as_str()), ("eidas1", "login", "code"));
    assert!(q["state"].len() == 64 && q["nonce"].len() == 64 && q["state"].bytes().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(serde_json::from_str::<Value>(&q["claims"]).unwrap(), serde_json::json!({"id_token": {"rep_scope": {"essential": true, "values": ["argent", "famille"]}}}));
    assert_eq!(req.url.as_str().split('?').next(), Some(format!("{}/authorize", w.idp.issuer()).as_str()));

    let mut b = w.idp.browser();
    let start = w.idp.authorize(&mut b, &req.url);
    let flow = start.flow().unwrap_or_else(|| panic!("no flow: {:?} {}", start.location, start.body));
    let (page, proof) = w.idp.open_flow(&mut b, &w.aidant, &flow);
    assert_eq!(proof, Proof::SignIn);
    assert!(page.shows("Jeanne Marie MARTIN"), "{}", page.body);
    let next = w.idp.pick_usager(&mut b, &flow, &page, &w.usager);
    assert_eq!(next.location.as_deref(), Some(format!("{flow}/demarche").as_str()), "two démarches possible: the aidant chooses");
    let page = b.get(&format!("{flow}/demarche"));
    let mut offered = page.button_values("demarche");
    offered.sort();
    assert_eq!(offered, ["argent", "famille"], "the usager's autorisations within rep_scope, not logement");
    let cb = w.idp.pick_demarche(&mut b, &flow, &page, "famille").callback().expect("callback");
    let code = code_of(&cb, &req.state, w.idp.issuer());

    let tokens = core.exchange(&code).unwrap_or_else(|e| panic!("{e:?}"));
    let raw = core.http(0).last();
    assert_eq!(raw.header("cache-control"), Some("no-store"));
    let body = raw.json();
    assert_eq!(body["token_type"], "Bearer");
    assert!(body["expires_in"].as_u64().is_some_and(|s| s > 0 && s <= 3600), "{body}");
    assert!(body.get("refresh_token").is_none(), "no refresh token");
    assert!(tokens.refresh_token().is_none());

    let claims = check_id_token(&core, &tokens, &req.nonce, &w.usager);
    assert_eq!(claims.additional_claims().rep_scope, Some(vec!["famille".to_owned()]), "rep_scope: the démarche chosen");

    let info = core.userinfo(tokens.access_token(), claims.subject()).unwrap_or_else(|r| panic!("userinfo refused: {} {}", r.status, r.text()));
    check_identity(&info, &w.usager);
    let ct = info.raw.header("content-type").unwrap_or_default().to_owned();
    match userinfo {
        "json" => {
            assert!(ct.starts_with("application/json"), "{ct}");
            assert!(info.jwt.is_none());
        }
        _ => {
            assert!(ct.starts_with("application/jwt"), "{ct}");
            let (header, payload) = info.jwt.as_ref().expect("a signed answer");
            assert_eq!(header["alg"], alg);
            assert_eq!(payload["iss"], w.idp.issuer());
            assert_eq!(payload["aud"], reg.client_id.as_str());
        }
    }
}

on_both_backends! {
    /// ES256 id_token, plain JSON userinfo.
    fn happy_path_es256_json(b) { happy_path(b, "ES256", "json") }
    /// ES256 id_token, userinfo as an ES256 JWT.
    fn happy_path_es256_jwt(b) { happy_path(b, "ES256", "jwt") }
    /// RS256 id_token, plain JSON userinfo.
    fn happy_path_rs256_json(b) { happy_path(b, "RS256", "json") }
    /// RS256 id_token, userinfo as an RS256 JWT (verified by the library itself).
    fn happy_path_rs256_jwt(b) { happy_path(b, "RS256", "jwt") }
    /// HS256 id_token (the client secret), plain JSON userinfo.
    fn happy_path_hs256_json(b) { happy_path(b, "HS256", "json") }
    /// HS256 id_token, userinfo as an HS256 JWT.
    fn happy_path_hs256_jwt(b) { happy_path(b, "HS256", "jwt") }

    /// Discovery lists every endpoint under the issuer and only what is supported.
    fn discovery_lists_the_endpoints_and_what_is_supported(b) {
        let idp = Idp::start(b);
        let (status, headers, body) = idp.brokers[0].get("/.well-known/openid-configuration");
        assert_eq!(status, 200);
        assert!(headers.get("etag").is_some(), "cheap to revalidate");
        let d: Value = serde_json::from_str(&body).unwrap();
        let iss = idp.issuer();
        assert_eq!(d["issuer"], iss);
        for (k, path) in [("authorization_endpoint", "/authorize"), ("token_endpoint", "/token"), ("userinfo_endpoint", "/userinfo"), ("jwks_uri", "/jwks"), ("end_session_endpoint", "/logout")] {
            assert_eq!(d[k], format!("{iss}{path}"), "{k}");
        }
        let set = |k: &str| {
            let mut v: Vec<String> = d[k].as_array().unwrap_or_else(|| panic!("{k}")).iter().map(|x| x.as_str().unwrap().to_owned()).collect();
            v.sort();
            v
        };
        assert_eq!(set("scopes_supported"), ["birth", "email", "openid", "profile"]);
        assert_eq!(set("response_types_supported"), ["code"]);
        assert_eq!(set("grant_types_supported"), ["authorization_code"]);
        assert_eq!(set("acr_values_supported"), ["eidas1"]);
        assert_eq!(set("token_endpoint_auth_methods_supported"), ["client_secret_basic", "client_secret_post"]);
        assert_eq!(set("id_token_signing_alg_values_supported"), ["ES256", "HS256", "RS256"]);
        assert_eq!(set("userinfo_signing_alg_values_supported"), ["ES256", "HS256", "RS256"]);
        assert_eq!(set("code_challenge_methods_supported"), ["S256"]);
        assert_eq!(set("subject_types_supported"), ["pairwise", "public"]);
        assert_eq!(d["claims_parameter_supported"], true);
        assert_eq!(d["authorization_response_iss_parameter_supported"], true);
        for c in ["rep_scope", "given_name", "family_name", "birthdate", "gender", "birthplace", "birthcountry", "email", "preferred_username", "acr"] {
            assert!(set("claims_supported").iter().any(|x| x == c), "claims_supported lacks {c}");
        }
        // The library accepts the document and the JWKS it points to.
        let reg = idp.client("ES256", "json");
        let core = Core::discover(&idp, &reg);
        assert!(core.metadata.jwks().keys().len() >= 2, "ES256 and RS256 keys published");
    }

    /// Unknown client_id, or a redirect_uri not exactly registered: an error page, and
    /// the browser is sent nowhere.
    fn unknown_client_or_unregistered_redirect_uri_shows_a_page_without_redirect(b) {
        let w = world(b);
        let core = Core::discover(&w.idp, &w.idp.client("ES256", "json"));
        let req = core.auth_request(Some(&["argent"]));
        let mut br = w.idp.browser();
        for changes in [
            vec![("client_id", Some("client-inconnu"))],
            vec![("client_id", None)],
            vec![("redirect_uri", Some("https://attaquant.exemple/api/v2/oidc-callback"))],
            vec![("redirect_uri", Some(&*format!("{CALLBACK}/autre")))],
            vec![("redirect_uri", Some(&*format!("{CALLBACK}?x=1")))],
            vec![("redirect_uri", None)],
            // Faults that would otherwise be redirected are not, when the client is unknown.
            vec![("client_id", Some("client-inconnu")), ("scope", Some("profile"))],
        ] {
            let page = w.idp.authorize(&mut br, &req.with(&changes));
            assert_error_page(&page);
            assert!(page.shows("Demande de connexion refusée"), "{changes:?}: {}", page.body);
        }
        // The unchanged request starts a flow.
        assert!(w.idp.authorize(&mut br, &req.url).flow().is_some());
    }

    /// state and nonce are required and bounded (1 to 256 characters): refused by an
    /// error redirect; a state that is not well formed is not sent back.
    fn missing_or_too_long_state_or_nonce_is_refused(b) {
        let w = world(b);
        let core = Core::discover(&w.idp, &w.idp.client("ES256", "json"));
        let req = core.auth_request(Some(&["argent"]));
        let iss = w.idp.issuer();
        let mut br = w.idp.browser();
        let long = "a".repeat(257);
        let page = w.idp.authorize(&mut br, &req.with(&[("state", None)]));
        assert_error_redirect(&page, "invalid_request", None, iss);
        let page = w.idp.authorize(&mut br, &req.with(&[("state", Some(&long))]));
        assert_error_redirect(&page, "invalid_request", None, iss);
        let page = w.idp.authorize(&mut br, &req.with(&[("nonce", None)]));
        assert_error_redirect(&page, "invalid_request", Some(&req.state), iss);
        let page = w.idp.authorize(&mut br, &req.with(&[("nonce", Some(&long))]));
        assert_error_redirect(&page, "invalid_request", Some(&req.state), iss);
        // 256 characters are accepted.
        let max = "b".repeat(256);
        assert!(w.idp.authorize(&mut br, &req.with(&[("state", Some(&max)), ("nonce", Some(&max))])).flow().is_some());
    }

    /// acr_values must contain eidas1.
    fn bad_acr_is_refused(b) {
        let w = world(b);
        let core = Core::discover(&w.idp, &w.idp.client("ES256", "json"));
        let req = core.auth_request(Some(&["argent"]));
        let mut br = w.idp.browser();
        for acr in [Some("eidas2"), Some("eidas3"), None] {
            let page = w.idp.authorize(&mut br, &req.with(&[("acr_values", acr)]));
            assert_error_redirect(&page, "invalid_request", Some(&req.state), w.idp.issuer());
        }
        assert!(w.idp.authorize(&mut br, &req.with(&[("acr_values", Some("eidas2 eidas1"))])).flow().is_some(), "eidas1 among others is accepted");
    }

    /// scope without openid → invalid_scope; response_type other than code →
    /// unsupported_response_type.
    fn scope_without_openid_or_other_response_type_is_refused(b) {
        let w = world(b);
        let core = Core::discover(&w.idp, &w.idp.client("ES256", "json"));
        let req = core.auth_request(Some(&["argent"]));
        let mut br = w.idp.browser();
        let iss = w.idp.issuer();
        let page = w.idp.authorize(&mut br, &req.with(&[("scope", Some("profile email birth"))]));
        assert_error_redirect(&page, "invalid_scope", Some(&req.state), iss);
        let page = w.idp.authorize(&mut br, &req.with(&[("scope", None)]));
        assert_error_redirect(&page, "invalid_scope", Some(&req.state), iss);
        let page = w.idp.authorize(&mut br, &req.with(&[("response_type", Some("token"))]));
        assert_error_redirect(&page, "unsupported_response_type", Some(&req.state), iss);
    }

    /// rep_scope asking for a démarche the aidant's organisation is not allowed →
    /// access_denied once the aidant is known; an unknown démarche or malformed claims →
    /// invalid_request at once, before the aidant signs in.
    fn rep_scope_outside_the_organisation_is_access_denied(b) {
        let w = world_with(b, Some("argent,famille"), "argent,famille");
        let core = Core::discover(&w.idp, &w.idp.client("ES256", "json"));
        let iss = w.idp.issuer();
        let mut br = w.idp.browser();

        let req = core.auth_request(Some(&["impots"]));
        assert_error_redirect(&w.idp.authorize(&mut br, &req.url), "invalid_request", Some(&req.state), iss);
        let page = w.idp.authorize(&mut br, &req.with(&[("claims", Some("{\"id_token\":"))]));
        assert_error_redirect(&page, "invalid_request", Some(&req.state), iss);

        let req = core.auth_request(Some(&["argent", "logement"]));
        let flow = w.idp.authorize(&mut br, &req.url).flow().expect("the organisation is checked once the aidant is known");
        let (page, proof) = w.idp.open_flow(&mut br, &w.aidant, &flow);
        assert_eq!(proof, Proof::SignIn);
        assert_error_redirect(&page, "access_denied", Some(&req.state), iss);

        // Within the organisation's démarches, the same aidant gets a code.
        let req = core.auth_request(Some(&["argent"]));
        let cb = w.idp.run_flow(&mut br, &w.aidant, &req.url, &w.usager, None);
        code_of(&cb, &req.state, iss);
    }

    /// A code serves once: the second exchange is invalid_grant and the access token of
    /// the first is revoked.
    fn code_reuse_is_refused_and_revokes_the_tokens(b) {
        let w = world(b);
        let core = Core::discover(&w.idp, &w.idp.client("ES256", "json"));
        let mut br = w.idp.browser();
        let (req, code) = authorize_to_code(&w, &core, &mut br, Some(&["argent"]), false, None);
        let tokens = core.exchange(&code).unwrap_or_else(|e| panic!("{e:?}"));
        let claims = core.verify_id_token(&tokens, &req.nonce).unwrap();
        assert_token_refused(core.exchange(&code), "invalid_grant", 400);
        assert_invalid_token(core.userinfo(tokens.access_token(), claims.subject()));
        assert!(w.idp.journal_entries("autorisation_used").is_empty(), "nothing disclosed");
    }

    /// The same code redeemed by several requests at once: at most one gets tokens, and
    /// whatever was issued from that code is refused at userinfo (a replay revokes it).
    fn concurrent_redemptions_of_a_code_disclose_nothing(b) {
        let w = world(b);
        let core = Core::discover(&w.idp, &w.idp.client("ES256", "json"));
        let mut br = w.idp.browser();
        let (_, code) = authorize_to_code(&w, &core, &mut br, Some(&["argent"]), false, None);
        let base = w.idp.brokers[0].base.clone();
        let reg = core.registration.clone();
        let barrier = std::sync::Barrier::new(4);
        let answers: Vec<(u16, Value)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        barrier.wait();
                        let mut r = conformance_tests::agent()
                            .post(format!("{base}/token"))
                            .send_form([
                                ("grant_type", "authorization_code"),
                                ("code", code.as_str()),
                                ("redirect_uri", CALLBACK),
                                ("client_id", reg.client_id.as_str()),
                                ("client_secret", reg.secret.as_str()),
                            ])
                            .unwrap();
                        let status = r.status().as_u16();
                        (status, serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap())
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let issued: Vec<&Value> = answers.iter().filter(|(st, _)| *st == 200).map(|(_, v)| v).collect();
        assert!(issued.len() <= 1, "one code, several tokens: {answers:?}");
        for (st, v) in &answers {
            assert!(*st == 200 || (*st == 400 && v["error"] == "invalid_grant"), "{st} {v}");
        }
        for t in issued {
            let token = AccessToken::new(t["access_token"].as_str().unwrap().to_owned());
            assert_invalid_token(core.userinfo(&token, &openidconnect::SubjectIdentifier::new(w.usager.sub.clone())));
        }
        assert!(w.idp.journal_entries("autorisation_used").is_empty(), "nothing disclosed");
    }

    /// A flow belongs to the browser that started it: another browser (with its own
    /// signed-in aidant) gets the expired page, and no code.
    fn a_flow_opened_in_another_browser_is_refused(b) {
        let w = world(b);
        let core = Core::discover(&w.idp, &w.idp.client("ES256", "json"));
        let mut first = w.idp.browser();
        let req = core.auth_request(Some(&["argent"]));
        let flow = w.idp.authorize(&mut first, &req.url).flow().expect("flow");
        let mut other = w.idp.browser();
        // The other browser has its own live session and flow.
        let own = core.auth_request(Some(&["argent"]));
        let own_flow = w.idp.authorize(&mut other, &own.url).flow().expect("flow");
        let (page, _) = w.idp.open_flow(&mut other, &w.aidant, &own_flow);
        assert_eq!(page.status, 200);
        let stolen = other.get(&flow);
        assert_error_page(&stolen);
        let picked = other.post(&format!("{flow}/usager"), &[("csrf", &page.csrf()), ("usager", &w.usager.id.to_string())]);
        assert_error_page(&picked);
        // The browser that started it can still go on.
        let (page, _) = w.idp.open_flow(&mut first, &w.aidant, &flow);
        assert_eq!(page.status, 200);
    }

    /// A code older than 60 seconds is refused (invalid_grant); at 30 seconds it is
    /// still good (FranceConnect expects 30 to 60 seconds).
    fn code_after_60_seconds_is_refused(b) {
        let w = world(b);
        let core = Core::discover(&w.idp, &w.idp.client("ES256", "json"));
        let mut br = w.idp.browser();
        let (req, code) = authorize_to_code(&w, &core, &mut br, Some(&["argent"]), false, None);
        w.idp.advance(30);
        let tokens = core.exchange(&code).unwrap_or_else(|e| panic!("a code of 30 seconds: {e:?}"));
        core.verify_id_token(&tokens, &req.nonce).unwrap();
        let (_, code) = authorize_to_code(&w, &core, &mut br, Some(&["argent"]), false, None);
        w.idp.advance(61);
        assert_token_refused(core.exchange(&code), "invalid_grant", 400);
    }

    /// A wrong client secret, or an unknown client, is invalid_client (401); the code
    /// is not spent by such a request.
    fn wrong_client_secret_is_invalid_client(b) {
        let w = world(b);
        let core = Core::discover(&w.idp, &w.idp.client("ES256", "json"));
        let mut br = w.idp.browser();
        let (req, code) = authorize_to_code(&w, &core, &mut br, Some(&["argent"]), false, None);
        let wrong = format!("{}x", core.registration.secret);
        assert_token_refused(core.exchange_as(&code, CALLBACK, &wrong), "invalid_client", 401);
        assert_token_refused(core.exchange_as(&code, CALLBACK, ""), "invalid_client", 401);
        let mut unknown = conformance_tests::agent()
            .post(format!("{}/token", w.idp.brokers[0].base))
            .send_form([
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("redirect_uri", CALLBACK),
                ("client_id", "client-inconnu"),
                ("client_secret", core.registration.secret.as_str()),
            ])
            .unwrap();
        assert_eq!(unknown.status(), 401);
        assert_eq!(serde_json::from_str::<Value>(&unknown.body_mut().read_to_string().unwrap()).unwrap()["error"], "invalid_client");
        let tokens = core.exchange(&code).unwrap_or_else(|e| panic!("{e:?}"));
        core.verify_id_token(&tokens, &req.nonce).unwrap();
    }

    /// client_secret_basic is accepted as well as client_secret_post.
    fn client_secret_basic_is_accepted(b) {
        let w = world(b);
        let core = Core::discover(&w.idp, &w.idp.client("ES256", "json"));
        let mut br = w.idp.browser();
        let (req, code) = authorize_to_code(&w, &core, &mut br, Some(&["argent"]), false, None);
        let tokens = core.exchange_basic(&code).unwrap_or_else(|e| panic!("{e:?}"));
        check_id_token(&core, &tokens, &req.nonce, &w.usager);
    }

    /// The redirect_uri at /token must be the one of the authorization request, even
    /// another one registered for the client.
    fn wrong_redirect_uri_at_token_is_invalid_grant(b) {
        let w = world(b);
        let core = Core::discover(&w.idp, &w.idp.client("ES256", "json"));
        let mut br = w.idp.browser();
        let (_, code) = authorize_to_code(&w, &core, &mut br, Some(&["argent"]), false, None);
        assert!(core.registration.redirect_uris.iter().any(|u| u == OTHER_CALLBACK));
        assert_token_refused(core.exchange_as(&code, OTHER_CALLBACK, &core.registration.secret), "invalid_grant", 400);
    }

    /// PKCE: S256 only. plain is refused at /authorize; at /token a wrong verifier, a
    /// missing verifier, or a verifier without a challenge is invalid_grant.
    fn pkce_downgrades_are_refused(b) {
        let w = world(b);
        let core = Core::discover(&w.idp, &w.idp.client("ES256", "json"));
        let mut br = w.idp.browser();
        let iss = w.idp.issuer();

        let req = core.auth_request(Some(&["argent"]));
        let verifier = "v".repeat(43);
        let plain = req.with(&[("code_challenge", Some(&verifier)), ("code_challenge_method", Some("plain"))]);
        assert_error_redirect(&w.idp.authorize(&mut br, &plain), "invalid_request", Some(&req.state), iss);
        let no_method = req.with(&[("code_challenge", Some(&verifier))]);
        assert_error_redirect(&w.idp.authorize(&mut br, &no_method), "invalid_request", Some(&req.state), iss);

        // With S256 and the right verifier: tokens.
        let (req, code) = authorize_to_code(&w, &core, &mut br, Some(&["argent"]), true, None);
        let v = req.pkce_verifier.as_ref().unwrap().secret().clone();
        let tokens = core.exchange_on(0, &code, Some(&v)).unwrap_or_else(|e| panic!("{e:?}"));
        core.verify_id_token(&tokens, &req.nonce).unwrap();

        // A wrong verifier.
        let (_, code) = authorize_to_code(&w, &core, &mut br, Some(&["argent"]), true, None);
        assert_token_refused(core.exchange_on(0, &code, Some(&"w".repeat(43))), "invalid_grant", 400);
        // No verifier for a code bound to a challenge.
        let (_, code) = authorize_to_code(&w, &core, &mut br, Some(&["argent"]), true, None);
        assert_token_refused(core.exchange_on(0, &code, None), "invalid_grant", 400);
        // A verifier for a code issued without a challenge.
        let (_, code) = authorize_to_code(&w, &core, &mut br, Some(&["argent"]), false, None);
        assert_token_refused(core.exchange_on(0, &code, Some(&v)), "invalid_grant", 400);
    }

    /// The autorisation revoked between the code and userinfo: 401 invalid_token, and
    /// nothing disclosed.
    fn mandat_revoked_between_code_and_userinfo_is_invalid_token(b) {
        let w = world(b);
        let core = Core::discover(&w.idp, &w.idp.client("ES256", "json"));
        let mut br = w.idp.browser();
        let (req, code) = authorize_to_code(&w, &core, &mut br, Some(&["argent"]), false, None);
        let tokens = core.exchange(&code).unwrap_or_else(|e| panic!("{e:?}"));
        let claims = core.verify_id_token(&tokens, &req.nonce).unwrap();
        w.idp.revoke(&w.aidant, w.mandat.autorisation("argent"));
        assert_invalid_token(core.userinfo(tokens.access_token(), claims.subject()));
        assert!(w.idp.journal_entries("autorisation_used").is_empty(), "nothing disclosed");
    }

    /// A flow older than 5 minutes shows a page saying it expired; no code, no redirect.
    /// At 4 minutes it is still open.
    fn expired_flow_shows_a_page(b) {
        let w = world(b);
        let core = Core::discover(&w.idp, &w.idp.client("ES256", "json"));
        let mut br = w.idp.browser();
        let req = core.auth_request(Some(&["argent"]));
        let flow = w.idp.authorize(&mut br, &req.url).flow().expect("flow");
        let (page, _) = w.idp.open_flow(&mut br, &w.aidant, &flow);
        assert_eq!(page.status, 200, "usager page");
        w.idp.advance(240);
        let page = br.get(&flow);
        assert_eq!(page.status, 200, "still open after 4 minutes: {}", page.body);
        w.idp.advance(61);
        let late = w.idp.pick_usager(&mut br, &flow, &page, &w.usager);
        assert_error_page(&late);
        assert!(late.shows("expiré"), "{}", late.body);
        let again = br.get(&flow);
        assert_error_page(&again);
        assert!(again.shows("Cette demande de connexion a expiré"), "{}", again.body);
    }

    /// A signing key rotated while a token is in flight: the id_token signed before
    /// still verifies with the JWKS fetched after the rotation, the new key is in the
    /// JWKS before it signs, and the tokens it signs later verify with that JWKS.
    fn key_rotation_keeps_tokens_in_flight_verifiable(b) {
        let w = world(b);
        let reg = w.idp.client("ES256", "jwt");
        let before = Core::discover(&w.idp, &reg);
        let mut br = w.idp.browser();
        let (req, code) = authorize_to_code(&w, &before, &mut br, Some(&["argent"]), false, None);
        let tokens = before.exchange(&code).unwrap_or_else(|e| panic!("{e:?}"));
        let claims = check_id_token(&before, &tokens, &req.nonce, &w.usager);
        let kid_of = |t: &FcTokenResponse| -> String {
            let text = t.id_token().unwrap().to_string();
            let h: Value = serde_json::from_slice(&BASE64URL_NOPAD.decode(text.split('.').next().unwrap().as_bytes()).unwrap()).unwrap();
            h["kid"].as_str().unwrap().to_owned()
        };
        let old_kid = kid_of(&tokens);

        let rotated = w.idp.cli_ok(&["keys", "rotate", "--alg", "ES256"]);
        let new_kid = rotated["kid"].as_str().unwrap().to_owned();
        assert_ne!(new_kid, old_kid);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !w.idp.brokers[0].get("/jwks").2.contains(&new_kid) {
            assert!(Instant::now() < deadline, "the new key is not published");
            std::thread::sleep(Duration::from_millis(200));
        }
        let state_of = |kid: &str| {
            let list = w.idp.cli_ok(&["keys", "list"]);
            list.as_array().unwrap().iter().find(|k| k["kid"] == kid).map(|k| k["state"].as_str().unwrap().to_owned())
        };
        assert_eq!(state_of(&new_kid).as_deref(), Some("pending"), "published before it signs");

        // The core refreshes its JWKS: the id_token in flight still verifies, and its
        // userinfo (still signed with the old key) too.
        let after = Core::discover(&w.idp, &reg);
        assert!(after.metadata.jwks().keys().iter().any(|k| k.key_id().map(|x| x.as_str()) == Some(old_kid.as_str())));
        after.verify_id_token(&tokens, &req.nonce).unwrap_or_else(|e| panic!("token in flight: {e}"));
        let info = after.userinfo(tokens.access_token(), claims.subject()).unwrap_or_else(|r| panic!("{} {}", r.status, r.text()));
        check_identity(&info, &w.usager);

        // Once the publish delay is over (the broker's clock moves on), the new key signs;
        // the JWKS the core fetched before verifies it.
        w.idp.advance(3601);
        let (req2, code2) = authorize_to_code(&w, &after, &mut br, Some(&["argent"]), false, None);
        let tokens2 = after.exchange(&code2).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(kid_of(&tokens2), new_kid);
        after.verify_id_token(&tokens2, &req2.nonce).unwrap_or_else(|e| panic!("{e}"));
        assert!(w.idp.brokers[0].get("/jwks").2.contains(&old_kid), "the old key stays published while its tokens live");
    }

    /// Logout to a URI not registered for the client: a page, no redirect, and the
    /// aidant's session ends all the same.
    fn logout_to_an_unregistered_uri_shows_a_page_and_still_ends_the_session(b) {
        let w = world(b);
        let core = Core::discover(&w.idp, &w.idp.client("ES256", "json"));
        let mut br = w.idp.browser();
        let (_, code) = authorize_to_code(&w, &core, &mut br, Some(&["argent"]), false, None);
        let tokens = core.exchange(&code).unwrap_or_else(|e| panic!("{e:?}"));
        for uri in ["https://attaquant.exemple/logout", &format!("{LOGOUT_CALLBACK}/autre"), CALLBACK] {
            let page = br.get(core.logout_url(&tokens, uri, "etat-1").as_str());
            assert_error_page(&page);
        }
        // Even refused, the logout ends the aidant's session (shared computers).
        let req = core.auth_request(Some(&["argent"]));
        let flow = w.idp.authorize(&mut br, &req.url).flow().expect("flow");
        let first = br.get(&flow);
        assert!(first.location.as_deref().is_some_and(|l| l.starts_with("/connexion?")), "sign-in required again: {:?}", first.location);
    }

    /// Logout to the registered URI: 303 there with state, and the aidant's session is
    /// over (the next authorization asks them to sign in again). The core logs out long
    /// after the id_token expired: the hint still names the client (HS256 and ES256).
    fn logout_to_the_registered_uri_ends_the_session(b) {
        let w = world(b);
        let mut br = w.idp.browser();
        for alg in ["HS256", "ES256"] {
            let core = Core::discover(&w.idp, &w.idp.client(alg, "json"));
            let req = core.auth_request(Some(&["argent"]));
            let flow = w.idp.authorize(&mut br, &req.url).flow().expect("flow");
            let (page, proof) = w.idp.open_flow(&mut br, &w.aidant, &flow);
            assert_eq!(proof, Proof::SignIn, "{alg}: a signed-out browser must sign in");
            let cb = w.idp.pick_usager(&mut br, &flow, &page, &w.usager).callback().expect("callback");
            let tokens = core.exchange(&code_of(&cb, &req.state, w.idp.issuer())).unwrap_or_else(|e| panic!("{e:?}"));
            w.idp.advance(1800);
            let state = conformance_tests::fc::random_hex64();
            let page = br.get(core.logout_url(&tokens, LOGOUT_CALLBACK, &state).as_str());
            assert_eq!(page.status, 303, "{alg}: {}", page.body);
            let cb = page.callback().expect("redirect");
            assert_eq!(cb.target(), LOGOUT_CALLBACK);
            assert_eq!(cb.get("state"), Some(state.as_str()));
        }
        let core = Core::discover(&w.idp, &w.idp.client("ES256", "json"));
        let req = core.auth_request(Some(&["argent"]));
        let flow = w.idp.authorize(&mut br, &req.url).flow().expect("flow");
        let first = br.get(&flow);
        assert!(first.location.as_deref().is_some_and(|l| l.starts_with("/connexion?")), "sign-in required again: {:?}", first.location);
    }

    /// Logout without an id_token_hint (any page could send the browser there): the
    /// signed-in aidant is asked first and the session goes on; once they confirm (the
    /// form's CSRF token), it ends and the registered URI is followed with `state`.
    fn logout_without_a_hint_asks_the_aidant_first(b) {
        let w = world(b);
        let core = Core::discover(&w.idp, &w.idp.client("ES256", "json"));
        let mut br = w.idp.browser();
        let (_, code) = authorize_to_code(&w, &core, &mut br, Some(&["argent"]), false, None);
        let tokens = core.exchange(&code).unwrap_or_else(|e| panic!("{e:?}"));
        let mut url = core.logout_url(&tokens, LOGOUT_CALLBACK, "etat-2");
        let kept: Vec<(String, String)> = url.query_pairs().filter(|(k, _)| k != "id_token_hint").map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
        url.query_pairs_mut().clear().extend_pairs(&kept);
        let page = br.get(url.as_str());
        assert_eq!(page.status, 200, "{}", page.body);
        assert!(page.body.contains("Se déconnecter d&#x27;Aidants Connect ?") || page.body.contains("Se déconnecter d'Aidants Connect ?"), "{}", page.body);
        assert_eq!(br.get("/espace").status, 200, "the session goes on until the aidant confirms");
        // A forged confirmation (wrong token) changes nothing.
        assert_eq!(br.post("/logout", &[("csrf", "faux"), ("client_id", &page.hidden("client_id").unwrap())]).status, 403);
        assert_eq!(br.get("/espace").status, 200);
        let fields: Vec<(String, String)> = ["csrf", "client_id", "post_logout_redirect_uri", "state"].iter().map(|k| (k.to_string(), page.hidden(k).unwrap_or_else(|| panic!("{k}")))).collect();
        let form: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let done = br.post("/logout", &form);
        assert_eq!(done.status, 303, "{}", done.body);
        let cb = done.callback().expect("redirect");
        assert_eq!((cb.target().as_str(), cb.get("state")), (LOGOUT_CALLBACK, Some("etat-2")));
        let after = br.get("/espace");
        assert!(after.location.as_deref().is_some_and(|l| l.starts_with("/connexion")), "signed out: {:?}", after.location);
    }

    /// Without rep_scope in the request (a direct client), the aidant chooses among every
    /// démarche of the usager's mandat and the id_token carries no rep_scope.
    fn without_rep_scope_the_id_token_has_none(b) {
        let w = world(b);
        let core = Core::discover(&w.idp, &w.idp.client("ES256", "json"));
        let mut br = w.idp.browser();
        let req = core.auth_request(None);
        let flow = w.idp.authorize(&mut br, &req.url).flow().expect("flow");
        let (page, _) = w.idp.open_flow(&mut br, &w.aidant, &flow);
        w.idp.pick_usager(&mut br, &flow, &page, &w.usager);
        let page = br.get(&format!("{flow}/demarche"));
        let mut offered = page.button_values("demarche");
        offered.sort();
        assert_eq!(offered, ["argent", "famille", "logement"]);
        let cb = w.idp.pick_demarche(&mut br, &flow, &page, "logement").callback().expect("callback");
        let tokens = core.exchange(&code_of(&cb, &req.state, w.idp.issuer())).unwrap_or_else(|e| panic!("{e:?}"));
        let claims = check_id_token(&core, &tokens, &req.nonce, &w.usager);
        assert_eq!(claims.additional_claims().rep_scope, None);
    }

    /// The identité pivot in FranceConnect's formats for a usager born abroad (empty
    /// birthplace, foreign COG code), with a partly unknown birthdate and a usage name.
    fn identity_of_a_usager_born_abroad_keeps_the_formats(b) {
        let w = world(b);
        let usager = w.idp.register_usager(Usager {
            id: 0,
            sub: String::new(),
            given_name: "Ana Lucía".into(),
            family_name: "García".into(),
            preferred_username: Some("Dupont".into()),
            birthdate: "1950-00-00".into(),
            gender: "male".into(),
            birthplace: "".into(),
            birthcountry: "99134".into(),
            email: "ana.garcia@courriel.exemple.fr".into(),
        });
        w.idp.mandat(&w.aidant, &usager, "social");
        let core = Core::discover(&w.idp, &w.idp.client("RS256", "json"));
        let mut br = w.idp.browser();
        let req = core.auth_request(Some(&["social"]));
        let cb = w.idp.run_flow(&mut br, &w.aidant, &req.url, &usager, None);
        let tokens = core.exchange(&code_of(&cb, &req.state, w.idp.issuer())).unwrap_or_else(|e| panic!("{e:?}"));
        let claims = check_id_token(&core, &tokens, &req.nonce, &usager);
        assert_eq!(claims.additional_claims().rep_scope, Some(vec!["social".to_owned()]));
        let info = core.userinfo(tokens.access_token(), claims.subject()).unwrap_or_else(|r| panic!("{} {}", r.status, r.text()));
        check_identity(&info, &usager);
        let raw = info.raw.json();
        assert_eq!(raw["birthplace"], "", "empty string for a birth abroad: {raw}");
        assert_eq!(raw["birthcountry"], "99134");
        assert_eq!(raw["birthdate"], "1950-00-00");
        assert_eq!(raw["given_name"], "Ana Lucía");
        assert_eq!(raw["preferred_username"], "Dupont");
    }

    /// prompt=login: with a live session, a fresh second factor is still required.
    fn prompt_login_requires_a_fresh_second_factor(b) {
        let w = world(b);
        let core = Core::discover(&w.idp, &w.idp.client("ES256", "json"));
        let mut br = w.idp.browser();
        authorize_to_code(&w, &core, &mut br, Some(&["argent"]), false, None);
        let req = core.auth_request(Some(&["argent"]));
        let flow = w.idp.authorize(&mut br, &req.url).flow().expect("flow");
        let first = br.get(&flow);
        assert!(first.location.as_deref().is_some_and(|l| l.starts_with("/reauthentification?")), "{:?} {}", first.location, first.body);
        let (page, proof) = w.idp.open_flow(&mut br, &w.aidant, &flow);
        assert_eq!((page.status, proof), (200, Proof::Reauthentication));
    }

    /// The aidant cancels at the usager step (or the démarche step): access_denied
    /// redirect with state and iss; the flow is over.
    fn cancel_is_access_denied(b) {
        let w = world(b);
        let core = Core::discover(&w.idp, &w.idp.client("ES256", "json"));
        let mut br = w.idp.browser();
        let req = core.auth_request(Some(&["argent", "famille"]));
        let flow = w.idp.authorize(&mut br, &req.url).flow().expect("flow");
        let (page, _) = w.idp.open_flow(&mut br, &w.aidant, &flow);
        let cancelled = br.post(&format!("{flow}/annuler"), &[("csrf", &page.csrf())]);
        assert_error_redirect(&cancelled, "access_denied", Some(&req.state), w.idp.issuer());
        assert_error_page(&br.get(&flow));

        let req = core.auth_request(Some(&["argent", "famille"]));
        let flow = w.idp.authorize(&mut br, &req.url).flow().expect("flow");
        let (page, _) = w.idp.open_flow(&mut br, &w.aidant, &flow);
        w.idp.pick_usager(&mut br, &flow, &page, &w.usager);
        let page = br.get(&format!("{flow}/demarche"));
        assert_eq!(page.status, 200);
        let cancelled = br.post(&format!("{flow}/annuler"), &[("csrf", &page.csrf())]);
        assert_error_redirect(&cancelled, "access_denied", Some(&req.state), w.idp.issuer());
    }

    /// An access token serves userinfo once; the disclosure is journaled as
    /// autorisation_used with who, for whom, which démarche and which client.
    fn userinfo_serves_once_and_is_journaled(b) {
        let w = world(b);
        let core = Core::discover(&w.idp, &w.idp.client("ES256", "json"));
        let mut br = w.idp.browser();
        let (req, code) = authorize_to_code(&w, &core, &mut br, Some(&["argent"]), false, None);
        let tokens = core.exchange(&code).unwrap_or_else(|e| panic!("{e:?}"));
        let claims = core.verify_id_token(&tokens, &req.nonce).unwrap();
        core.userinfo(tokens.access_token(), claims.subject()).unwrap_or_else(|r| panic!("{} {}", r.status, r.text()));
        assert_invalid_token(core.userinfo(tokens.access_token(), claims.subject()));
        assert_invalid_token(core.userinfo(&AccessToken::new("jeton-invente".into()), claims.subject()));
        let (status, headers, _) = w.idp.brokers[0].get("/userinfo");
        assert_eq!(status, 401, "no token");
        assert!(headers.get("www-authenticate").and_then(|h| h.to_str().ok()).is_some_and(|h| h.starts_with("Bearer")), "{headers:?}");

        let used = w.idp.journal_entries("autorisation_used");
        assert_eq!(used.len(), 1, "one disclosure, one entry");
        let e = &used[0];
        assert_eq!(e.aidant, Some(w.aidant.id));
        assert_eq!(e.organisation, Some(w.aidant.organisation));
        assert_eq!(e.usager, Some(w.usager.id));
        assert_eq!(e.mandat, Some(w.mandat.id));
        assert_eq!(e.autorisation, Some(w.mandat.autorisation("argent")));
        assert_eq!(e.demarche.as_deref(), Some("argent"));
        assert_eq!(e.client.as_deref(), Some(core.registration.client_id.as_str()));
        let verified = w.idp.cli_ok(&["journal", "verify"]);
        assert_eq!(verified["ok"], true, "{verified}");
    }
}

/// Two broker processes on one PostgreSQL database and one Redis: every browser request
/// goes to the other instance, the code is redeemed on the second one and userinfo is
/// asked of the first. Nothing is kept in process memory.
#[test]
fn two_instances_share_every_step_postgres() {
    let idp = Idp::start_instances(Backend::Postgres, 2);
    assert_eq!(idp.brokers[1].issuer, idp.issuer());
    let org = idp.organisation("France Services Roubaix", None);
    let aidant = idp.aidant(org);
    let usager = idp.usager("Jeanne Marie", "Martin", "1952-03-14");
    let mandat = idp.mandat(&aidant, &usager, "argent,famille,logement");
    let w = World { idp, aidant, usager, mandat };
    let reg = w.idp.client("ES256", "jwt");
    let core = Core::discover(&w.idp, &reg);
    for i in 0..2 {
        let (_, _, d) = w.idp.brokers[i].get("/.well-known/openid-configuration");
        assert_eq!(serde_json::from_str::<Value>(&d).unwrap()["issuer"], w.idp.issuer(), "instance {i}");
    }
    assert_eq!(w.idp.brokers[0].get("/jwks").2, w.idp.brokers[1].get("/jwks").2, "same keys");

    let mut br = w.idp.browser();
    let (req, code) = authorize_to_code(&w, &core, &mut br, Some(&["argent", "famille"]), false, Some("argent"));
    let tokens = core.exchange_on(1, &code, None).unwrap_or_else(|e| panic!("{e:?}"));
    let claims = check_id_token(&core, &tokens, &req.nonce, &w.usager);
    assert_eq!(claims.additional_claims().rep_scope, Some(vec!["argent".to_owned()]));
    let info = core.userinfo_on(0, tokens.access_token(), claims.subject()).unwrap_or_else(|r| panic!("{} {}", r.status, r.text()));
    check_identity(&info, &w.usager);
    // The code spent on B is spent for A too; the token used on A is used for B too.
    assert_token_refused(core.exchange_on(0, &code, None), "invalid_grant", 400);
    assert_invalid_token(core.userinfo_on(1, tokens.access_token(), claims.subject()));
    assert_eq!(w.idp.journal_entries("autorisation_used").len(), 1);
}

// ---- FranceConnect's core as its code behaves -------------------------------------------

/// The id_token's claims as sent (the signature was checked by `check_id_token`).
fn payload_of(tokens: &FcTokenResponse) -> Value {
    let text = tokens.id_token().expect("id_token").to_string();
    let part = text.split('.').nth(1).expect("a compact JWS");
    serde_json::from_slice(&BASE64URL_NOPAD.decode(part.as_bytes()).unwrap()).unwrap()
}

/// What the core's client library and verify handler check on the answers, then the
/// identity DTO on userinfo.
fn core_accepts(tokens: &FcTokenResponse, service_list: &[&str], info: &conformance_tests::fc::UserInfo) {
    let id_token = payload_of(tokens);
    core_checks::token_result(&id_token).unwrap_or_else(|e| panic!("{e}: {id_token}"));
    core_checks::rep_scope_matches(&id_token, service_list).unwrap_or_else(|e| panic!("{e}"));
    let identity: Value = match &info.jwt {
        Some((_, payload)) => payload.clone(),
        None => info.raw.json(),
    };
    core_checks::identity(&identity).unwrap_or_else(|e| panic!("{e}: {identity}"));
}

/// The whole flow as the core sends it (`values` as the e-service's list, `None`: no
/// `values` member), with a client registered with the defaults; the aidant is offered
/// `offered` and picks `pick` (`None`: the only one, the page is skipped). Returns the
/// id_token's `rep_scope`.
fn flow_as_core_sends_it(b: Backend, values: Option<&[&str]>, offered: &[&str], pick: Option<&str>) -> (World, Vec<String>) {
    let w = world(b);
    let core = Core::discover(&w.idp, &w.idp.client_with("ES256", "json", &[]));
    let req = core.auth_request_as_core(values);
    let q: std::collections::HashMap<String, String> = req.url.query_pairs().into_owned().collect();
    assert_eq!((q["state"].len(), q["nonce"].len()), (32, 43), "as the core's library generates them");
    let mut br = w.idp.browser();
    let start = w.idp.authorize(&mut br, &req.url);
    let flow = start.flow().unwrap_or_else(|| panic!("the core's request is refused: {:?} {}", start.location, start.body));
    let (page, _) = w.idp.open_flow(&mut br, &w.aidant, &flow);
    let next = w.idp.pick_usager(&mut br, &flow, &page, &w.usager);
    let cb = match pick {
        None => next.callback().unwrap_or_else(|| panic!("one démarche: no démarche page expected: {:?}", next.location)),
        Some(d) => {
            let page = br.get(&format!("{flow}/demarche"));
            let mut got = page.button_values("demarche");
            got.sort();
            assert_eq!(got, offered, "{}", page.body);
            w.idp.pick_demarche(&mut br, &flow, &page, d).callback().expect("callback")
        }
    };
    let tokens = core.exchange(&code_of(&cb, &req.state, w.idp.issuer())).unwrap_or_else(|e| panic!("{e:?}"));
    let claims = core.verify_id_token(&tokens, &req.nonce).unwrap_or_else(|e| panic!("{e}"));
    let info = core.userinfo(tokens.access_token(), claims.subject()).unwrap_or_else(|r| panic!("{} {}", r.status, r.text()));
    core_accepts(&tokens, values.unwrap_or(&[]), &info);
    let rep = claims.additional_claims().rep_scope.clone().expect("rep_scope asked, rep_scope answered");
    assert_eq!(w.idp.journal_entries("autorisation_used").len(), 1);
    (w, rep)
}

on_both_backends! {
    /// `values: []` (an e-service with no list, most of them): the flow goes through, the
    /// aidant picks among every démarche of the mandat, and the id_token names the one
    /// chosen with FranceConnect's label.
    fn core_with_an_empty_rep_scope_list(b) {
        let (_, rep) = flow_as_core_sends_it(b, Some(&[]), &["argent", "famille", "logement"], Some("logement"));
        assert_eq!(rep, ["Logement"]);
    }

    /// `rep_scope: {essential: true}` without `values` (an undefined list disappears from
    /// the core's JSON): the same.
    fn core_without_rep_scope_values(b) {
        let (_, rep) = flow_as_core_sends_it(b, None, &["argent", "famille", "logement"], Some("argent"));
        assert_eq!(rep, ["Argent-Impots-Consommation"]);
    }

    /// FranceConnect's labels (its `rep-scopes` fixtures): `Famille-Scolarité` and
    /// `Travail-Formation`; the mandat covers famille only, so the démarche page is
    /// skipped, and the id_token answers in the request's spelling.
    fn core_with_franceconnect_labels(b) {
        let (_, rep) = flow_as_core_sends_it(b, Some(&["Famille-Scolarité", "Travail-Formation"]), &[], None);
        assert_eq!(rep, ["Famille-Scolarité"]);
    }

    /// A value the broker does not know beside a known one: ignored (logged at info
    /// level); alone, `invalid_request` naming it.
    fn core_with_an_unknown_value_beside_a_known_one(b) {
        let (w, rep) = flow_as_core_sends_it(b, Some(&["Démarche-Inconnue", "argent", "famille"]), &["argent", "famille"], Some("famille"));
        assert_eq!(rep, ["famille"]);
        let logs = w.idp.logs();
        assert!(logs.contains("rep_scope values not known") && logs.contains("Démarche-Inconnue"), "{logs}");
        assert!(!logs.lines().any(|l| l.contains("Démarche-Inconnue") && l.contains("ERROR")), "{logs}");

        let core = Core::discover(&w.idp, &w.idp.client_with("ES256", "json", &[]));
        let req = core.auth_request_as_core(Some(&["Démarche-Inconnue"]));
        let mut br = w.idp.browser();
        let cb = assert_error_redirect(&w.idp.authorize(&mut br, &req.url), "invalid_request", Some(&req.state), w.idp.issuer());
        // error_description is ASCII (RFC 6749 §4.1.2.1): accents are folded.
        assert!(cb.get("error_description").unwrap().contains("'Demarche-Inconnue'"), "{}", cb.url);
    }

    /// Pairwise subjects (OIDC Core §8): the defaults give each client its own `sub` for
    /// a usager, stable across logins, the same in the id_token and userinfo; clients of
    /// one sector share it; a public client gets the broker id.
    fn pairwise_subjects_per_client_and_sector(b) {
        let w = world(b);
        let login = |reg: &conformance_tests::idp::Registration| -> (String, FcTokenResponse, Core) {
            let core = Core::discover(&w.idp, reg);
            let mut br = w.idp.browser();
            let (req, code) = authorize_to_code(&w, &core, &mut br, Some(&["argent"]), false, None);
            let tokens = core.exchange(&code).unwrap_or_else(|e| panic!("{e:?}"));
            let claims = core.verify_id_token(&tokens, &req.nonce).unwrap_or_else(|e| panic!("{e}"));
            let sub = claims.subject().as_str().to_owned();
            // userinfo is asked for the id_token's sub: the library refuses another one.
            let info = core.userinfo(tokens.access_token(), claims.subject()).unwrap_or_else(|r| panic!("{} {}", r.status, r.text()));
            assert_eq!(info.claims.subject().as_str(), sub);
            (sub, tokens, core)
        };
        let a = w.idp.client_with("ES256", "json", &[]);
        let other = w.idp.client_with("RS256", "jwt", &[]);
        let (sub_a, _, _) = login(&a);
        let (sub_a_again, _, _) = login(&a);
        let (sub_other, _, _) = login(&other);
        assert_eq!(sub_a, sub_a_again, "stable for one client");
        assert_ne!(sub_a, sub_other, "different for two clients");
        for s in [&sub_a, &sub_other] {
            assert_ne!(s, &w.usager.sub, "the broker id never reaches a pairwise client");
            assert!(s.is_ascii() && s.len() == 43, "{s}");
        }
        let s1 = w.idp.client_with("ES256", "json", &["--sector-identifier", "demarches.exemple.fr"]);
        let s2 = w.idp.client_with("HS256", "json", &["--subject-type", "pairwise", "--sector-identifier", "demarches.exemple.fr"]);
        let (sub_s1, _, _) = login(&s1);
        let (sub_s2, _, _) = login(&s2);
        assert_eq!(sub_s1, sub_s2, "one sector, one subject");
        assert_ne!(sub_s1, sub_a);
        let (sub_public, _, _) = login(&w.idp.client("ES256", "json"));
        assert_eq!(sub_public, w.usager.sub, "public: today's sub");

        let listed = w.idp.cli_ok(&["admin", "client", "list"]);
        let find = |id: &str| listed.as_array().unwrap().iter().find(|c| c["client_id"] == id).cloned().unwrap();
        assert_eq!(find(&a.client_id)["subject_type"], "pairwise");
        assert_eq!(find(&s1.client_id)["sector_identifier"], "demarches.exemple.fr");
    }

    /// `--act-claim`: the id_token and userinfo carry `act` with the aidant's pairwise id
    /// for that client and the organisation; other clients get no `act`.
    fn act_claim_names_the_acting_aidant_for_clients_that_ask(b) {
        let w = world(b);
        for (extra, userinfo) in [(&["--act-claim"][..], "json"), (&["--act-claim"][..], "jwt"), (&[][..], "json")] {
            let reg = w.idp.client_with("ES256", userinfo, extra);
            let core = Core::discover(&w.idp, &reg);
            let mut br = w.idp.browser();
            let (req, code) = authorize_to_code(&w, &core, &mut br, Some(&["argent"]), false, None);
            let tokens = core.exchange(&code).unwrap_or_else(|e| panic!("{e:?}"));
            let claims = core.verify_id_token(&tokens, &req.nonce).unwrap_or_else(|e| panic!("{e}"));
            let info = core.userinfo(tokens.access_token(), claims.subject()).unwrap_or_else(|r| panic!("{} {}", r.status, r.text()));
            let in_token = claims.additional_claims().act.clone();
            let in_userinfo = info.claims.additional_claims().act.clone();
            if extra.is_empty() {
                assert_eq!((in_token, in_userinfo), (None, None), "no act unless asked");
                continue;
            }
            let act = in_token.expect("act in the id_token");
            assert_eq!(Some(&act), in_userinfo.as_ref(), "the same act at userinfo");
            assert_eq!(act["organisation"]["name"], "France Services Tourcoing");
            assert!(act["organisation"]["siret"].as_str().is_some_and(|s| s.len() == 14), "{act}");
            let aidant_sub = act["sub"].as_str().expect("act.sub");
            assert!(aidant_sub.len() == 43 && aidant_sub != w.aidant.id.to_string() && aidant_sub != claims.subject().as_str(), "{act}");
            assert!(!aidant_sub.contains(&w.aidant.email));
        }
    }
}

on_both_backends! {
    /// A code presented by another registered client (with its own valid credentials) is
    /// `invalid_grant` and is not spent: the client it was issued to still redeems it.
    fn a_code_presented_by_another_client_is_refused_and_not_spent(b) {
        let w = world(b);
        let core = Core::discover(&w.idp, &w.idp.client("ES256", "json"));
        let other = Core::discover(&w.idp, &w.idp.client("ES256", "json"));
        let mut br = w.idp.browser();
        let (req, code) = authorize_to_code(&w, &core, &mut br, Some(&["argent"]), false, None);
        assert_token_refused(other.exchange(&code), "invalid_grant", 400);
        assert_token_refused(other.exchange_basic(&code), "invalid_grant", 400);
        let tokens = core.exchange(&code).unwrap_or_else(|e| panic!("the rightful client lost its code: {e:?}"));
        let claims = check_id_token(&core, &tokens, &req.nonce, &w.usager);
        let info = core.userinfo(tokens.access_token(), claims.subject()).unwrap_or_else(|r| panic!("{} {}", r.status, r.text()));
        check_identity(&info, &w.usager);
        assert_token_refused(core.exchange(&code), "invalid_grant", 400);
    }
}

on_both_backends! {
    /// Ten authorizations started at the same moment in one signed-in browser (a session
    /// that has never started a flow): every flow stays usable and ends with its code.
    fn simultaneous_authorizations_in_one_browser_all_stay_usable(b) {
        let w = world(b);
        let core = Core::discover(&w.idp, &w.idp.client("ES256", "json"));
        let mut br = w.idp.browser();
        w.idp.sign_in(&mut br, &w.aidant, "/connexion");
        let requests: Vec<_> = (0..10).map(|_| core.auth_request(Some(&["argent"]))).collect();
        let targets: Vec<String> = requests.iter().map(|r| r.url.to_string()).collect();
        let starts = br.get_all_at_once(&targets);
        let flows: Vec<String> = starts.iter().map(|p| p.flow().unwrap_or_else(|| panic!("no flow: {:?} {}", p.location, p.body))).collect();
        for (req, flow) in requests.iter().zip(&flows) {
            let (page, _) = w.idp.open_flow(&mut br, &w.aidant, flow);
            assert_eq!(page.status, 200, "flow {flow} lost: {:?} {}", page.location, page.body);
            let cb = w.idp.pick_usager(&mut br, flow, &page, &w.usager).callback().expect("a code for every flow");
            let code = code_of(&cb, &req.state, w.idp.issuer());
            core.exchange(&code).unwrap_or_else(|e| panic!("{e:?}"));
        }
    }
}
