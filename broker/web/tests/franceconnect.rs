//! The FranceConnect relying party against the provider simulator (fcsim) served over HTTP
//! on a loopback port: success for each test identity, each failure scenario, the JWKS
//! refetched on an unknown key id, logout, and the state bound to the session.

mod common;

use actix_session::{Session, SessionMiddleware};
use actix_web::cookie::Key;
use actix_web::{test, web, App, HttpResponse};
use broker_store::cache::InProcess;
use broker_web::franceconnect::{
    callback_error, store_pending, take_pending, Document, FcClient, FcError, FcSettings, Pending, SCOPE,
};
use broker_web::session_store::CacheSessionStore;
use common::simulator::{self, http, query};
use fcsim::provider::{self, ProviderSettings, IDENTITIES};
use openidconnect::reqwest;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

const CLIENT_ID: &str = "aidants-connect-test";
const SECRET: &str = "secret-de-test";
const SIM_PATH: &str = "/simulateur-franceconnect/api/v2";

fn provider_settings(base: &str, seed: &[u8]) -> ProviderSettings {
    ProviderSettings::new(
        ProviderSettings::issuer_under(base),
        CLIENT_ID,
        SECRET,
        vec![format!("{base}/mandats/nouveau/franceconnect/retour")],
        vec![format!("{base}/mandats/nouveau")],
    )
    .with_key_seed(seed)
}

/// A JWKS served in place of the simulator's, and how many times it was fetched.
#[derive(Clone, Default)]
struct JwksOverride {
    body: Arc<Mutex<String>>,
    hits: Arc<AtomicUsize>,
}

/// A simulator on 127.0.0.1:0 with this key seed; with `jwks`, its `/jwks` is replaced.
fn serve(seed: &'static [u8], jwks: Option<JwksOverride>) -> String {
    let routes = move |cfg: &mut web::ServiceConfig| {
        if let Some(o) = jwks.clone() {
            cfg.route(
                &format!("{SIM_PATH}/jwks"),
                web::get().to(move || {
                    let o = o.clone();
                    async move {
                        o.hits.fetch_add(1, Ordering::SeqCst);
                        let body = o.body.lock().unwrap().clone();
                        HttpResponse::Ok().content_type("application/json").body(body)
                    }
                }),
            );
        }
    };
    provider::serve_on_loopback(|base| provider_settings(base, seed), routes).0
}

fn fc_settings(base: &str) -> FcSettings {
    FcSettings {
        issuer: ProviderSettings::issuer_under(base),
        client_id: CLIENT_ID.into(),
        client_secret: SECRET.into(),
        redirect_uri: format!("{base}/mandats/nouveau/franceconnect/retour"),
        post_logout_redirect_uri: format!("{base}/mandats/nouveau"),
    }
}

/// Plays the usager on the simulator's page: the identity, the scenario, and "choisir" or
/// "annuler". Returns the callback's query after checking it goes to the redirect_uri.
async fn usager(http: &reqwest::Client, base: &str, url: &url::Url, identity: &str, scenario: &str, action: &str) -> HashMap<String, String> {
    let location = simulator::choose(http, base, url.as_str(), identity, scenario, action).await;
    assert!(location.starts_with(&format!("{base}/mandats/nouveau/franceconnect/retour?")), "{location}");
    query(&location)
}

/// The whole round trip for one identity and scenario, as the broker's pages will make it.
async fn identify(fc: &FcClient, http: &reqwest::Client, base: &str, identity: &str, scenario: &str) -> Result<broker_web::franceconnect::FcIdentity, FcError> {
    let (url, pending) = fc.begin().await?;
    let q = usager(http, base, &url, identity, scenario, "choisir").await;
    assert_eq!(q["state"], pending.state);
    if let Some(error) = q.get("error") {
        return Err(callback_error(error, q.get("error_description").map(String::as_str)));
    }
    fc.finish(&q["code"], &pending.nonce).await
}

#[actix_web::test]
async fn the_authorization_request_carries_only_franceconnect_parameters() {
    let base = serve(b"graine", None);
    let fc = FcClient::new(fc_settings(&base)).unwrap();
    let (url, pending) = fc.begin().await.unwrap();
    assert!(url.as_str().starts_with(&format!("{base}{SIM_PATH}/authorize?")));
    let q = query(url.as_str());
    let mut names: Vec<&str> = q.keys().map(String::as_str).collect();
    names.sort();
    assert_eq!(names, ["acr_values", "client_id", "nonce", "redirect_uri", "response_type", "scope", "state"]);
    assert_eq!(q["client_id"], CLIENT_ID);
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["redirect_uri"], format!("{base}/mandats/nouveau/franceconnect/retour"));
    assert_eq!(q["scope"], SCOPE);
    assert_eq!(q["acr_values"], "eidas1");
    assert_eq!(q["state"], pending.state);
    assert_eq!(q["nonce"], pending.nonce);
    for v in [&pending.state, &pending.nonce] {
        assert_eq!(v.len(), 43, "32 bytes in base64url");
        assert!(v.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
    }
    assert_ne!(pending.state, pending.nonce);
    let (_, again) = fc.begin().await.unwrap();
    assert_ne!(again.state, pending.state);
    assert_ne!(again.nonce, pending.nonce);
    let page = http().get(url.as_str()).send().await.unwrap();
    assert_eq!(page.status(), 200, "the simulator, which refuses unknown parameters, shows its identity page");
}

#[actix_web::test]
async fn each_test_identity_comes_back_verified_and_validated() {
    let base = serve(b"graine", None);
    let fc = FcClient::new(fc_settings(&base)).unwrap();
    let http = http();
    for expected in IDENTITIES {
        let got = identify(&fc, &http, &base, expected.key, "normal").await.unwrap_or_else(|e| panic!("{}: {e}", expected.key));
        assert_eq!(got.fc_sub, provider::pairwise_sub(CLIENT_ID, expected.key));
        let i = &got.identity;
        assert_eq!(i.given_name, expected.given_name, "{}", expected.key);
        assert_eq!(i.family_name, expected.family_name);
        assert_eq!(i.preferred_username.as_deref(), expected.preferred_username);
        assert_eq!(i.birthdate, expected.birthdate);
        assert_eq!(i.gender, expected.gender);
        assert_eq!(i.birthplace, expected.birthplace);
        assert_eq!(i.birthcountry, expected.birthcountry);
        assert_eq!(i.email, expected.email);
        assert_eq!(got.id_token.split('.').count(), 3, "the raw id_token, for the logout");
        let debug = format!("{got:?}");
        assert!(!debug.contains(expected.family_name) && !debug.contains(&got.fc_sub), "{debug}");
    }
    let abroad = identify(&fc, &http, &base, "karim-benali", "normal").await.unwrap();
    assert_eq!((abroad.identity.birthplace.as_str(), abroad.identity.birthcountry.as_str()), ("", "99350"));
    let partial = identify(&fc, &http, &base, "aminata-diallo", "normal").await.unwrap();
    assert_eq!(partial.identity.birthdate, "1958-00-00");
    let composed = identify(&fc, &http, &base, "jean-pierre-durand", "normal").await.unwrap();
    assert_eq!(composed.identity.given_name, "Jean Pierre");
    assert_eq!(composed.identity.preferred_username.as_deref(), Some("Durand-Leroy"));
}

#[actix_web::test]
async fn each_failure_scenario_gives_its_error() {
    let base = serve(b"graine", None);
    let fc = FcClient::new(fc_settings(&base)).unwrap();
    let http = http();

    let (url, pending) = fc.begin().await.unwrap();
    let q = usager(&http, &base, &url, "marie-martin", "normal", "annuler").await;
    assert_eq!(q["state"], pending.state);
    assert!(!q.contains_key("code"));
    let cancelled = callback_error(&q["error"], q.get("error_description").map(String::as_str));
    assert_eq!(cancelled, FcError::Cancelled);
    assert!(cancelled.message().contains("annulé"));

    let err = identify(&fc, &http, &base, "marie-martin", "erreur-jeton").await.unwrap_err();
    assert!(matches!(&err, FcError::Token(d) if d.starts_with("invalid_grant")), "{err:?}");

    let err = identify(&fc, &http, &base, "marie-martin", "signature-id-token").await.unwrap_err();
    assert!(matches!(&err, FcError::BadSignature { document: Document::IdToken, .. }), "{err:?}");

    let err = identify(&fc, &http, &base, "marie-martin", "nonce-different").await.unwrap_err();
    assert_eq!(err, FcError::WrongNonce);

    let err = identify(&fc, &http, &base, "marie-martin", "niveau-insuffisant").await.unwrap_err();
    assert!(matches!(&err, FcError::AcrTooLow(d) if d.contains("eidas0")), "{err:?}");
    assert!(err.message().contains("niveau de sécurité"));

    let err = identify(&fc, &http, &base, "marie-martin", "signature-userinfo").await.unwrap_err();
    assert!(matches!(&err, FcError::BadSignature { document: Document::Userinfo, .. }), "{err:?}");

    for e in [&err, &FcError::WrongNonce] {
        let detail = e.to_string();
        assert!(!detail.contains("Marie") && !detail.contains("Martin") && !detail.contains("marie.martin"), "{detail}");
    }

    // The nonce kept by another request does not verify this one's id_token.
    let (url, _) = fc.begin().await.unwrap();
    let (_, other) = fc.begin().await.unwrap();
    let q = usager(&http, &base, &url, "marie-martin", "normal", "choisir").await;
    assert_eq!(fc.finish(&q["code"], &other.nonce).await.unwrap_err(), FcError::WrongNonce);
}

#[actix_web::test]
async fn a_code_is_redeemed_once() {
    let base = serve(b"graine", None);
    let fc = FcClient::new(fc_settings(&base)).unwrap();
    let http = http();
    let (url, pending) = fc.begin().await.unwrap();
    let q = usager(&http, &base, &url, "ange-santoni", "normal", "choisir").await;
    let first = fc.finish(&q["code"], &pending.nonce).await.unwrap();
    assert_eq!(first.identity.birthplace, "2A004");
    let err = fc.finish(&q["code"], &pending.nonce).await.unwrap_err();
    assert!(matches!(&err, FcError::Token(d) if d.starts_with("invalid_grant")), "{err:?}");
}

#[actix_web::test]
async fn an_unknown_kid_makes_the_client_fetch_the_jwks_once_more() {
    let foreign = serve(b"une autre graine", None);
    let twin = serve(b"graine", None);
    let jwks_of = |base: String| async move { http().get(format!("{base}{SIM_PATH}/jwks")).send().await.unwrap().text().await.unwrap() };
    let (foreign_jwks, own_jwks) = (jwks_of(foreign).await, jwks_of(twin).await);
    assert_ne!(foreign_jwks, own_jwks);

    // The simulator signs with the key of "graine"; its JWKS is first another instance's.
    let jwks = JwksOverride::default();
    *jwks.body.lock().unwrap() = foreign_jwks;
    let base = serve(b"graine", Some(jwks.clone()));
    let fc = FcClient::new(fc_settings(&base)).unwrap();
    let http = http();

    let err = identify(&fc, &http, &base, "marie-martin", "normal").await.unwrap_err();
    assert!(matches!(&err, FcError::BadSignature { document: Document::IdToken, .. }), "{err:?}");
    assert_eq!(jwks.hits.load(Ordering::SeqCst), 2, "fetched at discovery, then once more for the unknown kid");

    // The provider now publishes the key of "graine" (as a restarted instance would).
    *jwks.body.lock().unwrap() = own_jwks;
    let ok = identify(&fc, &http, &base, "marie-martin", "normal").await.unwrap();
    assert_eq!(ok.identity.family_name, "Martin");
    assert_eq!(jwks.hits.load(Ordering::SeqCst), 3, "one more fetch; the userinfo's kid is then known");

    identify(&fc, &http, &base, "karim-benali", "normal").await.unwrap();
    assert_eq!(jwks.hits.load(Ordering::SeqCst), 3, "a known kid fetches nothing");
}

#[actix_web::test]
async fn the_logout_url_is_accepted_by_the_provider() {
    let base = serve(b"graine", None);
    let fc = FcClient::new(fc_settings(&base)).unwrap();
    let http = http();
    let got = identify(&fc, &http, &base, "helene-lefevre", "normal").await.unwrap();
    let url = fc.logout_url(&got.id_token, "etat-de-sortie").await.unwrap();
    assert!(url.as_str().starts_with(&format!("{base}{SIM_PATH}/session/end?")));
    let q = query(url.as_str());
    let mut names: Vec<&str> = q.keys().map(String::as_str).collect();
    names.sort();
    assert_eq!(names, ["id_token_hint", "post_logout_redirect_uri", "state"]);
    let resp = http.get(url.as_str()).send().await.unwrap();
    assert_eq!(resp.status(), 303);
    assert_eq!(resp.headers()["location"].to_str().unwrap(), format!("{base}/mandats/nouveau?state=etat-de-sortie"));
}

#[actix_web::test]
async fn an_unreachable_provider_is_reported_as_such() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let fc = FcClient::new(fc_settings(&base)).unwrap();
    let err = fc.begin().await.unwrap_err();
    assert!(matches!(&err, FcError::Unreachable(d) if d.starts_with("discovery")), "{err:?}");
    assert!(err.message().contains("ne répond pas"));
    assert!(matches!(fc.finish("code", "nonce").await.unwrap_err(), FcError::Unreachable(_)));
}

async fn begin_here(session: Session, q: web::Query<HashMap<String, String>>) -> HttpResponse {
    let pending = Pending { state: q["state"].clone(), nonce: format!("nonce-de-{}", q["state"]) };
    store_pending(&session, &pending).unwrap();
    HttpResponse::Ok().finish()
}

async fn come_back(session: Session, q: web::Query<HashMap<String, String>>) -> HttpResponse {
    match take_pending(&session, &q["state"]) {
        Some(p) => HttpResponse::Ok().body(p.nonce),
        None => HttpResponse::BadRequest().finish(),
    }
}

#[actix_web::test]
async fn the_state_is_bound_to_the_session_and_taken_once() {
    let cache = Arc::new(InProcess::new());
    let app = test::init_service(
        App::new()
            .wrap(SessionMiddleware::builder(CacheSessionStore::new(cache), Key::generate()).cookie_secure(false).build())
            .route("/debut", web::get().to(begin_here))
            .route("/retour", web::get().to(come_back)),
    )
    .await;
    let start = |state: &str| test::TestRequest::get().uri(&format!("/debut?state={state}")).to_request();
    let a = test::call_service(&app, start("etat-a")).await;
    let cookie_a = a.response().cookies().next().expect("session cookie").into_owned();
    let b = test::call_service(&app, start("etat-b")).await;
    let cookie_b = b.response().cookies().next().expect("session cookie").into_owned();
    let back = |cookie: &actix_web::cookie::Cookie<'static>, state: &str| {
        test::TestRequest::get().uri(&format!("/retour?state={state}")).cookie(cookie.clone()).to_request()
    };

    let resp = test::call_service(&app, back(&cookie_b, "etat-a")).await;
    assert_eq!(resp.status(), 400, "a state from another session does not match");
    let resp = test::call_service(&app, back(&cookie_a, "etat-a")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(test::read_body(resp).await, "nonce-de-etat-a");
    let resp = test::call_service(&app, back(&cookie_a, "etat-a")).await;
    assert_eq!(resp.status(), 400, "taken once");
    let resp = test::call_service(&app, back(&cookie_b, "etat-b")).await;
    assert_eq!(resp.status(), 400, "the mismatched attempt consumed the other session's request too");
    let resp = test::call_service(&app, test::TestRequest::get().uri("/retour?state=etat-a").to_request()).await;
    assert_eq!(resp.status(), 400, "no session");
}
