//! Aidant sign-in through the real actix application, on both storage backends (SQLite
//! with the in-process cache, PostgreSQL with Redis), with e-mails read from a real SMTP
//! listener and an injectable clock.

mod common;

use actix_web::http::StatusCode;
use actix_web::test::{self, TestRequest};
use broker_store::admin;
use broker_store::journal;
use broker_testkit::TestDb;
use broker_web::signin::{GENERIC_FAILURE, LINK_FAILURE, LOCKED};
use common::{request_link, sign_in, world, Browser};

#[actix_web::test]
async fn totp_sign_in_end_to_end_with_the_emailed_link() {
    for t in TestDb::both() {
        let w = world(t);
        let app = app!(w);
        let mut b = sign_in(&w, &app).await;
        let home = b.get(&app, "/espace").await;
        assert_eq!(home.status, StatusCode::OK, "{}", w.t.name());
        assert!(home.shows("Nadia Benali") && home.shows("France Services Tourcoing"));
        assert!(w.actions().ends_with(&["aidant_login".to_owned()]), "{}: {:?}", w.t.name(), w.actions());
        let login = broker_testkit::journal(&w.t.db, |c| journal::page(c, 0, 100)).unwrap().pop().unwrap();
        assert_eq!(login.aidant, Some(w.aidant_id));
        assert!(login.details.contains("\"method\":\"totp\""));

        // Sign-out really ends the session.
        let out = b.post(&app, "/deconnexion", &[("csrf", &home.csrf())]).await;
        assert_eq!(out.status, StatusCode::SEE_OTHER);
        let after = b.get(&app, "/espace").await;
        assert_eq!(after.status, StatusCode::SEE_OTHER);
        assert!(after.location.unwrap().starts_with("/connexion"));
        assert_eq!(w.actions().last().unwrap(), "logout");
    }
}

#[actix_web::test]
async fn every_failure_shows_the_same_generic_text() {
    for t in TestDb::both() {
        let w = world(t);
        let app = app!(w);
        let mut b = Browser::default();
        let form = b.get(&app, "/connexion").await;
        let csrf = form.csrf();
        let wrong = if w.code() == "000000" { "111111".to_owned() } else { "000000".to_owned() };
        let other = format!("inconnu-{}@exemple.fr", hex::encode(rand::random::<[u8; 3]>()));
        for (email, code) in [(w.email.as_str(), wrong.as_str()), (other.as_str(), "123456"), ("pas-une-adresse", "123456"), (w.email.as_str(), "12")] {
            let p = b.post(&app, "/connexion", &[("csrf", &csrf), ("email", email), ("code", code)]).await;
            assert_eq!(p.status, StatusCode::OK);
            assert!(p.shows(GENERIC_FAILURE), "{}: {email}/{code}", w.t.name());
        }
        // Deactivated aidant, with a correct code.
        admin::deactivate_aidant(&w.t.db, &w.email).unwrap();
        let p = b.post(&app, "/connexion", &[("csrf", &csrf), ("email", &w.email), ("code", &w.code())]).await;
        assert!(p.shows(GENERIC_FAILURE), "{}: deactivated", w.t.name());
        assert_eq!(common::queued(&w, ""), 0, "no e-mail queued");
        assert!(w.smtp.received().is_empty(), "no e-mail sent");
    }
}

#[actix_web::test]
async fn a_code_is_accepted_once() {
    for t in TestDb::both() {
        let w = world(t);
        let app = app!(w);
        let _signed_in = sign_in(&w, &app).await;
        let mut b = Browser::default();
        let form = b.get(&app, "/connexion").await;
        let p = b.post(&app, "/connexion", &[("csrf", &form.csrf()), ("email", &w.email), ("code", &w.code())]).await;
        assert!(p.shows(GENERIC_FAILURE), "{}: replayed code", w.t.name());
        w.clock.advance_seconds(30);
        let p = b.post(&app, "/connexion", &[("csrf", &form.csrf()), ("email", &w.email), ("code", &w.code())]).await;
        assert!(p.shows("Consultez votre messagerie"), "{}: next code works", w.t.name());
    }
}

#[actix_web::test]
async fn links_expire_serve_once_and_only_in_the_browser_that_asked() {
    for t in TestDb::both() {
        let w = world(t);
        let app = app!(w);

        // Another browser.
        let mut asker = Browser::default();
        let jeton = request_link(&w, &app, &mut asker).await;
        let mut other = Browser::default();
        let page = other.get(&app, &format!("/connexion/lien?jeton={jeton}")).await;
        let p = other.post(&app, "/connexion/lien", &[("csrf", &page.csrf()), ("jeton", &jeton)]).await;
        assert_eq!(p.status, StatusCode::BAD_REQUEST);
        assert!(p.shows(LINK_FAILURE), "{}: other browser", w.t.name());

        // The asking browser can still use it, once.
        let page = asker.get(&app, &format!("/connexion/lien?jeton={jeton}")).await;
        let ok = asker.post(&app, "/connexion/lien", &[("csrf", &page.csrf()), ("jeton", &jeton)]).await;
        assert_eq!(ok.status, StatusCode::SEE_OTHER, "{}", ok.body);
        let csrf = asker.get(&app, "/connexion/lien").await.csrf();
        let again = asker.post(&app, "/connexion/lien", &[("csrf", &csrf), ("jeton", &jeton)]).await;
        assert!(again.shows(LINK_FAILURE), "{}: used twice", w.t.name());

        // Expired after 5 minutes.
        w.clock.advance_seconds(30);
        let mut late = Browser::default();
        let jeton = request_link(&w, &app, &mut late).await;
        w.clock.advance_seconds(301);
        let page = late.get(&app, &format!("/connexion/lien?jeton={jeton}")).await;
        let p = late.post(&app, "/connexion/lien", &[("csrf", &page.csrf()), ("jeton", &jeton)]).await;
        assert!(p.shows(LINK_FAILURE), "{}: expired", w.t.name());
        assert_eq!(late.get(&app, "/espace").await.status, StatusCode::SEE_OTHER);
    }
}

#[actix_web::test]
async fn repeated_failures_lock_the_email_and_are_journaled() {
    for t in TestDb::both() {
        let w = world(t);
        let app = app!(w);
        let mut b = Browser::default();
        let csrf = b.get(&app, "/connexion").await.csrf();
        let wrong = if w.code() == "000000" { "111111".to_owned() } else { "000000".to_owned() };
        for _ in 0..5 {
            let p = b.post(&app, "/connexion", &[("csrf", &csrf), ("email", &w.email), ("code", &wrong)]).await;
            assert!(p.shows(GENERIC_FAILURE));
        }
        let p = b.post(&app, "/connexion", &[("csrf", &csrf), ("email", &w.email), ("code", &w.code())]).await;
        assert!(p.shows(LOCKED), "{}: locked even with the right code", w.t.name());
        let links = w.smtp.received().iter().filter(|m| m.find_link(&format!("{}/connexion/lien", common::ISSUER)).is_some()).count();
        assert_eq!(links, 0, "no sign-in link while locked");
        assert_eq!(common::queued(&w, "connexion:"), 0, "no sign-in link queued while locked");
        let recs = broker_testkit::journal(&w.t.db, |c| journal::page(c, 0, 100)).unwrap();
        let lock = recs.iter().find(|r| r.action == "signin_locked").expect("lock journaled");
        assert_eq!(lock.aidant, Some(w.aidant_id));
    }
}

#[actix_web::test]
async fn forms_without_the_csrf_token_are_refused() {
    let w = world(TestDb::sqlite());
    let app = app!(w);
    let mut b = Browser::default();
    b.get(&app, "/connexion").await;
    let p = b.post(&app, "/connexion", &[("csrf", "forged"), ("email", &w.email), ("code", &w.code())]).await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);
    assert_eq!(common::queued(&w, ""), 0);
    assert!(w.smtp.received().is_empty());
}

#[actix_web::test]
async fn sensitive_actions_need_a_second_factor_from_the_last_15_minutes() {
    for t in TestDb::both() {
        let w = world(t);
        let app = app!(w);
        let mut b = sign_in(&w, &app).await;
        let csrf = b.get(&app, "/espace/securite").await.csrf();
        let options = |csrf: String| {
            TestRequest::post().uri("/espace/securite/cles/options").insert_header(("X-CSRF-Token", csrf)).set_json(serde_json::json!({ "name": "Clé bleue" }))
        };
        w.clock.advance_seconds(14 * 60);
        let p = b.send(&app, options(csrf.clone())).await;
        assert_eq!(p.status, StatusCode::OK, "{}: still fresh at 14 min: {}", w.t.name(), p.body);
        w.clock.advance_seconds(2 * 60);
        let p = b.send(&app, options(csrf.clone())).await;
        assert_eq!(p.status, StatusCode::FORBIDDEN, "{}: stale at 16 min", w.t.name());
        assert!(p.shows("/reauthentification"));

        let page = b.get(&app, "/reauthentification?suite=%2Fespace%2Fsecurite").await;
        assert!(page.shows("Confirmer votre identité"));
        let done = b.post(&app, "/reauthentification", &[("csrf", &page.csrf()), ("code", &w.code()), ("suite", "/espace/securite")]).await;
        assert_eq!((done.status, done.location.as_deref()), (StatusCode::SEE_OTHER, Some("/espace/securite")));
        let p = b.send(&app, options(csrf.clone())).await;
        assert_eq!(p.status, StatusCode::OK, "{}: fresh again", w.t.name());
        assert_eq!(w.actions().last().unwrap(), "reauthentication");
    }
}

#[actix_web::test]
async fn sessions_end_12_hours_after_sign_in_whatever_the_activity() {
    let w = world(TestDb::sqlite());
    let app = app!(w);
    let mut b = sign_in(&w, &app).await;
    w.clock.advance_seconds(11 * 3600 + 3599);
    assert_eq!(b.get(&app, "/espace").await.status, StatusCode::OK);
    w.clock.advance_seconds(1);
    let p = b.get(&app, "/espace").await;
    assert_eq!(p.status, StatusCode::SEE_OTHER);
    assert!(p.location.unwrap().starts_with("/connexion"));
}

#[actix_web::test]
async fn too_many_failures_from_one_address_lock_that_address_only() {
    let w = world(TestDb::sqlite());
    let app = app!(w);
    let mut b = Browser::default();
    let csrf = b.get(&app, "/connexion").await.csrf();
    let from = |ip: &str, email: &str, code: &str| {
        TestRequest::post()
            .uri("/connexion")
            .insert_header(("X-Forwarded-For", ip.to_owned()))
            .set_form([("csrf", csrf.as_str()), ("email", email), ("code", code)])
    };
    for i in 0..broker_web::throttle::PER_ADDRESS {
        let p = b.send(&app, from("203.0.113.7", &format!("inconnu{i}@exemple.fr"), "123456")).await;
        assert!(p.shows(GENERIC_FAILURE));
    }
    let p = b.send(&app, from("203.0.113.7", &w.email, &w.code())).await;
    assert!(p.shows(LOCKED), "that address is locked");
    // What the client writes itself does not unlock it: an entry before the proxy's, or a
    // `Forwarded` header.
    let p = b.send(&app, from("198.51.100.9, 203.0.113.7", &w.email, &w.code())).await;
    assert!(p.shows(LOCKED), "the proxy's (right-most) entry counts");
    let p = b.send(&app, from("203.0.113.7", &w.email, &w.code()).insert_header(("Forwarded", "for=192.0.2.1"))).await;
    assert!(p.shows(LOCKED), "Forwarded is not read");
    let p = b.send(&app, from("198.51.100.4", &w.email, &w.code())).await;
    assert!(p.shows("Consultez votre messagerie"), "another address is not");
}

#[actix_web::test]
async fn failures_from_elsewhere_do_not_lock_the_aidant_out() {
    use broker_web::throttle::{PER_EMAIL, PER_EMAIL_AND_ADDRESS};
    for t in TestDb::both() {
        let w = world(t);
        let app = app!(w);
        // The aidant works in two browsers where they signed in: both are recognised.
        let mut own = sign_in(&w, &app).await;
        w.clock.advance_seconds(30);
        let mut working = sign_in(&w, &app).await;
        let home = own.get(&app, "/espace").await;
        own.post(&app, "/deconnexion", &[("csrf", &home.csrf())]).await;

        // A stranger tries the aidant's e-mail from several addresses.
        let wrong = if w.code() == "000000" { "111111".to_owned() } else { "000000".to_owned() };
        let mut stranger = Browser::default();
        let csrf = stranger.get(&app, "/connexion").await.csrf();
        let try_from = |ip: &str, csrf: &str, code: &str| {
            TestRequest::post()
                .uri("/connexion")
                .insert_header(("X-Forwarded-For", ip.to_owned()))
                .set_form([("csrf", csrf), ("email", w.email.as_str()), ("code", code)])
        };
        let addresses = (PER_EMAIL / PER_EMAIL_AND_ADDRESS) as usize;
        for i in 0..addresses {
            let ip = format!("198.51.100.{}", i + 1);
            for _ in 0..PER_EMAIL_AND_ADDRESS {
                assert!(stranger.send(&app, try_from(&ip, &csrf, &wrong)).await.shows(GENERIC_FAILURE));
            }
            assert!(stranger.send(&app, try_from(&ip, &csrf, &w.code())).await.shows(LOCKED), "{}: that address is locked for this e-mail", w.t.name());
        }
        // The e-mail is now locked for browsers it never signed in with, from anywhere.
        assert!(stranger.send(&app, try_from("203.0.113.50", &csrf, &w.code())).await.shows(LOCKED), "{}", w.t.name());
        let mut new_browser = Browser::default();
        let csrf_new = new_browser.get(&app, "/connexion").await.csrf();
        assert!(new_browser.send(&app, try_from("203.0.113.51", &csrf_new, &w.code())).await.shows(LOCKED));

        // The aidant at their own computer signs in, even behind the stranger's address.
        w.clock.advance_seconds(30);
        let form = own.get(&app, "/connexion").await;
        let p = own.send(&app, try_from("198.51.100.1", &form.csrf(), &w.code())).await;
        assert!(p.shows("Consultez votre messagerie"), "{}: the aidant's own browser is not locked out: {}", w.t.name(), p.body);

        // A signed-in aidant's re-authentication (FranceConnect always asks for it) works too.
        w.clock.advance_seconds(30);
        let page = working.get(&app, "/reauthentification?suite=%2Fespace").await;
        let done = working.post(&app, "/reauthentification", &[("csrf", &page.csrf()), ("code", &w.code()), ("suite", "/espace")]).await;
        assert_eq!((done.status, done.location.as_deref()), (StatusCode::SEE_OTHER, Some("/espace")), "{}: {}", w.t.name(), done.body);

        // The bursts are journaled, and the aidant was told once.
        let recs = broker_testkit::journal(&w.t.db, |c| journal::page(c, 0, 1000)).unwrap();
        let locks: Vec<_> = recs.iter().filter(|r| r.action == "signin_locked").collect();
        assert!(locks.iter().all(|r| r.aidant == Some(w.aidant_id)));
        assert_eq!(locks.iter().filter(|r| r.details.contains(r#""scope":"email_et_adresse""#)).count(), addresses, "{}", w.t.name());
        assert_eq!(locks.iter().filter(|r| r.details.contains(r#""scope":"email""#)).count(), 1);
        let notices = common::wait_for_subject(&w, "Tentatives de connexion", 1);
        assert_eq!(notices.len(), 1, "{}: told once per window", w.t.name());
        assert_eq!(notices[0].rcpt_to, vec![w.email.clone()]);
        assert!(notices[0].body_text().contains("depuis un ordinateur ou un navigateur"));
    }
}

#[actix_web::test]
async fn re_authentication_has_its_own_bound() {
    let w = world(TestDb::sqlite());
    let app = app!(w);
    let mut b = sign_in(&w, &app).await;
    let wrong = if w.code() == "000000" { "111111".to_owned() } else { "000000".to_owned() };
    let page = b.get(&app, "/reauthentification?suite=%2Fespace").await;
    for _ in 0..broker_web::throttle::PER_REAUTHENTICATION {
        let p = b.post(&app, "/reauthentification", &[("csrf", &page.csrf()), ("code", &wrong), ("suite", "/espace")]).await;
        assert_eq!(p.status, StatusCode::OK);
    }
    w.clock.advance_seconds(30);
    let p = b.post(&app, "/reauthentification", &[("csrf", &page.csrf()), ("code", &w.code()), ("suite", "/espace")]).await;
    assert_eq!(p.status, StatusCode::OK, "guessing in a session is bounded too: {:?}", p.location);
    assert!(p.shows("Le code est incorrect"));
    // Sign-in from another browser is not affected by the session's failures.
    w.clock.advance_seconds(30);
    let mut other = Browser::default();
    let form = other.get(&app, "/connexion").await;
    let sent = other.post(&app, "/connexion", &[("csrf", &form.csrf()), ("email", &w.email), ("code", &w.code())]).await;
    assert!(sent.shows("Consultez votre messagerie"), "{}", sent.body);
}
