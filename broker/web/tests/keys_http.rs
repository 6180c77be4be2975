//! Security keys through the real actix application, with a software authenticator:
//! adding a key (fresh second factor), signing in with it without typing an e-mail,
//! re-authenticating with it, and removing keys but never the last second factor.

mod common;

use actix_web::http::StatusCode;
use actix_web::test::{self, TestRequest};
use broker_store::journal;
use broker_testkit::authenticator::SoftAuthenticator;
use broker_testkit::TestDb;
use common::{sign_in, world, Browser, Page, ISSUER};
use serde_json::{json, Value};

fn json_post(path: &str, csrf: &str, body: Value) -> TestRequest {
    TestRequest::post().uri(path).insert_header(("X-CSRF-Token", csrf.to_owned())).set_json(body)
}

fn parse(p: &Page) -> Value {
    serde_json::from_str(&p.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", p.body))
}

/// An authenticator holding a credential for this site that the broker never registered.
fn stranger() -> SoftAuthenticator {
    let mut key = SoftAuthenticator::new();
    let options = json!({ "publicKey": { "rp": { "id": "localhost", "name": "x" }, "user": { "id": "AAAAAAAAAAAAAAAAAAAAAA", "name": "x", "displayName": "x" },
        "challenge": "AAAA", "pubKeyCredParams": [{ "type": "public-key", "alg": -7 }] } });
    key.register(&options, ISSUER);
    key
}

#[actix_web::test]
async fn a_key_added_in_the_security_page_signs_in_without_an_email() {
    for t in TestDb::both() {
        let w = world(t);
        let app = app!(w);
        let mut b = sign_in(&w, &app).await;
        let mut key = SoftAuthenticator::new();

        // Add a named key.
        let csrf = b.get(&app, "/espace/securite").await.csrf();
        let options = b.send(&app, json_post("/espace/securite/cles/options", &csrf, json!({ "name": "Clé bleue du bureau" }))).await;
        assert_eq!(options.status, StatusCode::OK, "{}", options.body);
        let credential = key.register(&parse(&options), ISSUER);
        let done = b.send(&app, json_post("/espace/securite/cles", &csrf, json!({ "credential": credential }))).await;
        assert_eq!(done.status, StatusCode::OK, "{}: {}", w.t.name(), done.body);
        assert_eq!(parse(&done)["redirect"], "/espace/securite?ok=ajout");
        let page = b.get(&app, "/espace/securite?ok=ajout").await;
        assert!(page.shows("La clé de sécurité a été ajoutée.") && page.shows("Clé bleue du bureau"), "{}", w.t.name());
        assert!(page.shows("Application d'authentification sur téléphone"), "TOTP devices listed");

        // The ceremony cannot be finished twice.
        let again = b.send(&app, json_post("/espace/securite/cles", &csrf, json!({ "credential": credential }))).await;
        assert_eq!(again.status, StatusCode::BAD_REQUEST);

        // Sign out, then sign in with the key in a new browser.
        b.post(&app, "/deconnexion", &[("csrf", &page.csrf())]).await;
        let mut fresh = Browser::default();
        let csrf = fresh.get(&app, "/connexion").await.csrf();
        let options = fresh.send(&app, json_post("/connexion/cle/options", &csrf, json!({}))).await;
        assert_eq!(options.status, StatusCode::OK, "{}", options.body);
        let assertion = key.sign_in(&parse(&options), ISSUER);
        let done = fresh.send(&app, json_post("/connexion/cle", &csrf, json!({ "credential": assertion, "suite": "/espace/securite" }))).await;
        assert_eq!(done.status, StatusCode::OK, "{}: {}", w.t.name(), done.body);
        assert_eq!(parse(&done)["redirect"], "/espace/securite");
        assert!(fresh.get(&app, "/espace").await.shows("Nadia Benali"));
        let recs = broker_testkit::journal(&w.t.db, |c| journal::page(c, 0, 100)).unwrap();
        let last = recs.last().unwrap();
        assert_eq!((last.action.as_str(), last.aidant), ("aidant_login", Some(w.aidant_id)));
        assert!(last.details.contains("\"method\":\"webauthn\""));
        assert!(recs.iter().any(|r| r.action == "second_factor_added" && r.details.contains("security_key")));
    }
}

#[actix_web::test]
async fn an_unknown_key_or_a_replayed_assertion_is_refused_with_the_generic_text() {
    for t in TestDb::both() {
        let w = world(t);
        let app = app!(w);
        let mut b = sign_in(&w, &app).await;
        let mut key = SoftAuthenticator::new();
        let csrf = b.get(&app, "/espace/securite").await.csrf();
        let options = b.send(&app, json_post("/espace/securite/cles/options", &csrf, json!({ "name": "Clé" }))).await;
        let credential = key.register(&parse(&options), ISSUER);
        b.send(&app, json_post("/espace/securite/cles", &csrf, json!({ "credential": credential }))).await;

        // A key the broker never saw.
        let mut stranger = stranger();
        let mut other = Browser::default();
        let csrf = other.get(&app, "/connexion").await.csrf();
        let options = other.send(&app, json_post("/connexion/cle/options", &csrf, json!({}))).await;
        let opts = parse(&options);
        let forged = stranger.sign_in(&opts, ISSUER);
        let p = other.send(&app, json_post("/connexion/cle", &csrf, json!({ "credential": forged }))).await;
        assert_eq!(p.status, StatusCode::UNAUTHORIZED, "{}", w.t.name());
        assert!(parse(&p)["error"].as_str().unwrap().contains("n'a pas été reconnue"));

        // A good assertion, replayed.
        let options = other.send(&app, json_post("/connexion/cle/options", &csrf, json!({}))).await;
        let good = key.sign_in(&parse(&options), ISSUER);
        let ok = other.send(&app, json_post("/connexion/cle", &csrf, json!({ "credential": good }))).await;
        assert_eq!(ok.status, StatusCode::OK, "{}: {}", w.t.name(), ok.body);
        let mut third = Browser::default();
        let csrf3 = third.get(&app, "/connexion").await.csrf();
        third.send(&app, json_post("/connexion/cle/options", &csrf3, json!({}))).await;
        let replay = third.send(&app, json_post("/connexion/cle", &csrf3, json!({ "credential": good }))).await;
        assert_eq!(replay.status, StatusCode::UNAUTHORIZED, "{}: replay", w.t.name());
        assert_eq!(third.get(&app, "/espace").await.status, StatusCode::SEE_OTHER);
    }
}

#[actix_web::test]
async fn keys_can_be_removed_but_never_the_last_second_factor() {
    for t in TestDb::both() {
        let w = world(t);
        let app = app!(w);
        let mut b = sign_in(&w, &app).await;
        let mut key = SoftAuthenticator::new();
        let csrf = b.get(&app, "/espace/securite").await.csrf();
        let options = b.send(&app, json_post("/espace/securite/cles/options", &csrf, json!({ "name": "Clé rouge" }))).await;
        let credential = key.register(&parse(&options), ISSUER);
        b.send(&app, json_post("/espace/securite/cles", &csrf, json!({ "credential": credential }))).await;
        let ids: Vec<i64> = broker_store::webauthn::list_credentials(&w.t.db, w.aidant_id).unwrap().iter().map(|c| c.id).collect();
        assert_eq!(ids.len(), 1);

        // The TOTP app remains: the key can go.
        let p = b.post(&app, &format!("/espace/securite/cles/{}/retirer", ids[0]), &[("csrf", &csrf)]).await;
        assert_eq!((p.status, p.location.as_deref()), (actix_web::http::StatusCode::SEE_OTHER, Some("/espace/securite?ok=retrait")), "{}", w.t.name());
        assert!(broker_store::webauthn::list_credentials(&w.t.db, w.aidant_id).unwrap().is_empty());

        // Removing needs a fresh second factor.
        let options = b.send(&app, json_post("/espace/securite/cles/options", &csrf, json!({ "name": "Clé verte" }))).await;
        let credential = key.register(&parse(&options), ISSUER);
        b.send(&app, json_post("/espace/securite/cles", &csrf, json!({ "credential": credential }))).await;
        let id = broker_store::webauthn::list_credentials(&w.t.db, w.aidant_id).unwrap()[0].id;
        w.clock.advance_seconds(16 * 60);
        let p = b.post(&app, &format!("/espace/securite/cles/{id}/retirer"), &[("csrf", &csrf)]).await;
        assert!(p.location.unwrap().starts_with("/reauthentification"), "{}", w.t.name());

        // Re-authenticate with the key itself.
        let csrf_r = b.get(&app, "/reauthentification?suite=%2Fespace%2Fsecurite").await.csrf();
        let options = b.send(&app, json_post("/reauthentification/cle/options", &csrf_r, json!({}))).await;
        let assertion = key.sign_in(&parse(&options), ISSUER);
        let done = b.send(&app, json_post("/reauthentification/cle", &csrf_r, json!({ "credential": assertion, "suite": "/espace/securite" }))).await;
        assert_eq!(done.status, StatusCode::OK, "{}: {}", w.t.name(), done.body);
        assert_eq!(w.actions().last().unwrap(), "reauthentication");
        let p = b.post(&app, &format!("/espace/securite/cles/{id}/retirer"), &[("csrf", &csrf_r)]).await;
        assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", w.t.name());
        assert!(w.actions().contains(&"second_factor_removed".to_owned()));
    }
}

#[actix_web::test]
async fn failed_key_attempts_do_not_lock_anyone_else_out() {
    let w = world(TestDb::sqlite());
    let app = app!(w);
    let mut stranger = stranger();
    let mut b = Browser::default();
    let csrf = b.get(&app, "/connexion").await.csrf();
    for _ in 0..8 {
        let options = b.send(&app, json_post("/connexion/cle/options", &csrf, json!({}))).await;
        let forged = stranger.sign_in(&parse(&options), ISSUER);
        let p = b.send(&app, json_post("/connexion/cle", &csrf, json!({ "credential": forged }))).await;
        assert_eq!(p.status, StatusCode::UNAUTHORIZED);
    }
    // The aidant still signs in with e-mail and code.
    let mut aidant = sign_in(&w, &app).await;
    assert_eq!(aidant.get(&app, "/espace").await.status, StatusCode::OK);
}
