//! The référent's space over HTTP: the aidants of the organisation (add, deactivate,
//! reactivate), the organisation's allowed démarches, security keys enrolled for an
//! aidant, and switching organisations. On SQLite and on PostgreSQL + Redis.

mod common;

use actix_web::http::StatusCode;
use actix_web::test;
use broker_core::client::NewClient;
use broker_core::time::Clock;
use broker_core::totp::Seed;
use broker_core::Demarche;
use broker_store::admin::{self, NewAidant};
use broker_core::mandat::Duree;
use broker_store::mandats::{self, NewMandat};
use broker_store::referent;
use broker_testkit::TestDb;
use common::{sign_in, sign_in_as, world, Browser, World, ISSUER};

/// A référent of the world's organisation, with a TOTP app.
struct Ref {
    id: i64,
    email: String,
    seed: Seed,
}

fn org_of(w: &World) -> i64 {
    w.organisation()
}

fn referent_of(w: &World, org: i64, tag: &str) -> Ref {
    let email = format!("referent-{tag}-{}@exemple.fr", hex::encode(rand::random::<[u8; 3]>()));
    let id = admin::create_aidant(
        &w.t.db,
        &NewAidant { organisation_id: org, email: &email, first_name: "Claire", last_name: "Fontaine", profession: "Responsable", referent: true },
    )
    .unwrap()
    .id;
    let (_, seed) = admin::enroll_app(&w.t.db, &w.state.sealer, &email).unwrap();
    Ref { id, email, seed }
}

fn is_active(w: &World, id: i64) -> bool {
    w.t.db.read(|c| referent::is_active(c, id)).unwrap()
}

#[actix_web::test]
async fn the_referent_sees_the_organisation_aidants_and_others_are_kept_out() {
    for t in TestDb::both() {
        let w = world(t);
        let app = app!(w);
        let org = org_of(&w);
        let r = referent_of(&w, org, "a");

        let anonymous = Browser::default().get(&app, "/referent").await;
        assert_eq!(anonymous.status, StatusCode::SEE_OTHER);
        assert!(anonymous.location.unwrap().starts_with("/connexion?suite="));

        let mut aidant = sign_in(&w, &app).await;
        let refused = aidant.get(&app, "/referent").await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", w.t.name());
        assert!(refused.shows("réservée aux référents"));
        let espace = aidant.get(&app, "/espace").await;
        assert!(!espace.shows("Espace référent"), "a plain aidant is not offered the référent space");

        w.clock.advance_seconds(31);
        let mut b = sign_in_as(&w, &app, &r.email, &r.seed).await;
        assert!(b.get(&app, "/espace").await.shows("Espace référent"));
        let home = b.get(&app, "/referent").await;
        assert_eq!(home.status, StatusCode::OK, "{}", home.body);
        assert!(home.shows("France Services Tourcoing"));
        assert!(home.shows("Nadia Benali") && home.shows(&w.email));
        assert!(home.shows("Claire Fontaine") && home.shows("1 application à code"));
        // Both signed in just now.
        assert!(!home.shows("jamais"), "{}", home.body);

        let detail = b.get(&app, &format!("/referent/aidants/{}", w.aidant_id)).await;
        assert_eq!(detail.status, StatusCode::OK);
        assert!(detail.shows("Désactiver Nadia Benali"));
        let own = b.get(&app, &format!("/referent/aidants/{}", r.id)).await;
        assert!(own.shows("Vous ne pouvez pas désactiver votre propre compte"));
    }
}

#[actix_web::test]
async fn adding_an_aidant_invites_them_and_an_existing_account_joins() {
    for t in TestDb::both() {
        let w = world(t);
        let app = app!(w);
        let org = org_of(&w);
        let r = referent_of(&w, org, "b");
        let mut b = sign_in_as(&w, &app, &r.email, &r.seed).await;

        let form = b.get(&app, "/referent/aidants/nouveau").await;
        assert_eq!(form.status, StatusCode::OK);
        let before = w.smtp.received().len();
        let done = b
            .post(
                &app,
                "/referent/aidants/nouveau",
                &[("csrf", &form.csrf()), ("email", "Lucie.Martin@Exemple.fr"), ("prenom", "Lucie"), ("nom", "Martin"), ("profession", "Médiatrice numérique")],
            )
            .await;
        assert_eq!((done.status, done.location.as_deref()), (StatusCode::SEE_OTHER, Some("/referent?ok=ajoute")), "{}", done.body);
        let mails = w.smtp.wait_for(before + 1, std::time::Duration::from_secs(10));
        assert_eq!(mails[before].rcpt_to, vec!["lucie.martin@exemple.fr".to_owned()]);
        let home = b.get(&app, "/referent?ok=ajoute").await;
        assert!(home.shows("Lucie Martin") && home.shows("aucun : ne peut pas se connecter"), "{}", home.body);
        assert!(home.shows("Invitation d&#x27;un aidant") || home.shows("Invitation d'un aidant"), "the invitation is listed: {}", home.body);
        assert!(home.shows("lucie.martin@exemple.fr"));
        assert!(w.actions().iter().filter(|a| *a == "aidant_created").count() >= 3);

        // The same address again (any case): refused with a message, nothing written.
        let again = b
            .post(&app, "/referent/aidants/nouveau", &[("csrf", &form.csrf()), ("email", "lucie.martin@exemple.fr"), ("prenom", "Lucie"), ("nom", "Martin"), ("profession", "")])
            .await;
        assert_eq!(again.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(again.shows("fait déjà partie de la structure"), "{}", again.body);

        // An aidant of another organisation joins this one with their account.
        let other = admin::create_organisation(&w.t.db, "CCAS de Lille", "21590350100017", "", None).unwrap().id;
        let elsewhere = admin::create_aidant(
            &w.t.db,
            &NewAidant { organisation_id: other, email: "paul.durand@exemple.fr", first_name: "Paul", last_name: "Durand", profession: "", referent: false },
        )
        .unwrap();
        let joined = b
            .post(&app, "/referent/aidants/nouveau", &[("csrf", &form.csrf()), ("email", "paul.durand@exemple.fr"), ("prenom", "P"), ("nom", "D"), ("profession", "")])
            .await;
        assert_eq!(joined.location.as_deref(), Some("/referent?ok=rejoint"));
        let ms = w.t.db.read(|c| referent::memberships_of(c, elsewhere.id)).unwrap();
        assert_eq!(ms.iter().map(|m| m.organisation_id).collect::<Vec<_>>().len(), 2);
        assert!(w.actions().contains(&"aidant_added".to_owned()));
        // Their names are theirs, not retyped.
        assert!(b.get(&app, "/referent").await.shows("Paul Durand"));

        // A stale second factor: the form asks for a new proof first.
        w.clock.advance_seconds(16 * 60);
        let stale = b.post(&app, "/referent/aidants/nouveau", &[("csrf", &form.csrf()), ("email", "x@exemple.fr"), ("prenom", "X"), ("nom", "Y"), ("profession", "")]).await;
        assert_eq!(stale.status, StatusCode::SEE_OTHER);
        assert!(stale.location.unwrap().starts_with("/reauthentification?suite="));
        assert!(w.t.db.read(|c| admin::find_aidant_by_email(c, "x@exemple.fr")).is_err(), "nothing added without a fresh second factor");
    }
}

#[actix_web::test]
async fn a_deactivated_aidant_is_signed_out_at_the_next_request_and_cannot_sign_in() {
    for t in TestDb::both() {
        let w = world(t);
        let app = app!(w);
        let org = org_of(&w);
        let r = referent_of(&w, org, "c");
        let mut aidant = sign_in(&w, &app).await;
        assert_eq!(aidant.get(&app, "/espace").await.status, StatusCode::OK);

        let mut b = sign_in_as(&w, &app, &r.email, &r.seed).await;
        let page = b.get(&app, &format!("/referent/aidants/{}", w.aidant_id)).await;
        // Missing CSRF token: refused, nothing changes.
        let forged = b.post(&app, &format!("/referent/aidants/{}/desactiver", w.aidant_id), &[("csrf", "x")]).await;
        assert_eq!(forged.status, StatusCode::FORBIDDEN);
        assert!(is_active(&w, w.aidant_id));
        let done = b.post(&app, &format!("/referent/aidants/{}/desactiver", w.aidant_id), &[("csrf", &page.csrf())]).await;
        assert_eq!(done.location.as_deref(), Some("/referent?ok=desactive"), "{}", done.body);
        assert!(!is_active(&w, w.aidant_id));
        assert!(w.actions().contains(&"aidant_deactivated".to_owned()));

        // The aidant's session ends at their very next request.
        let next = aidant.get(&app, "/espace").await;
        assert_eq!(next.status, StatusCode::SEE_OTHER, "{}", w.t.name());
        assert!(next.location.unwrap().starts_with("/connexion"));
        let usagers = aidant.get(&app, "/usagers").await;
        assert_eq!(usagers.status, StatusCode::SEE_OTHER);

        // Signing in again: the generic refusal, no e-mail sent.
        w.clock.advance_seconds(31);
        let before = w.smtp.received().len();
        let queued_before = common::queued(&w, "connexion:");
        let mut fresh = Browser::default();
        let form = fresh.get(&app, "/connexion").await;
        let refused = fresh.post(&app, "/connexion", &[("csrf", &form.csrf()), ("email", &w.email), ("code", &w.code())]).await;
        assert!(!refused.shows("Consultez votre messagerie"), "{}", refused.body);
        assert_eq!(common::queued(&w, "connexion:"), queued_before);
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert_eq!(w.smtp.received().len(), before);

        // Reactivated: signs in again.
        let page = b.get(&app, &format!("/referent/aidants/{}", w.aidant_id)).await;
        assert!(page.shows("Réactiver Nadia Benali"));
        let back = b.post(&app, &format!("/referent/aidants/{}/reactiver", w.aidant_id), &[("csrf", &page.csrf())]).await;
        assert_eq!(back.location.as_deref(), Some("/referent?ok=reactive"));
        assert!(w.actions().contains(&"aidant_reactivated".to_owned()));
        w.clock.advance_seconds(31);
        let again = sign_in(&w, &app).await;
        drop(again);

        // The référent cannot deactivate themselves.
        let own = b.post(&app, &format!("/referent/aidants/{}/desactiver", r.id), &[("csrf", &page.csrf())]).await;
        assert_eq!(own.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(is_active(&w, r.id));
    }
}

#[actix_web::test]
async fn a_referent_of_one_organisation_gets_nothing_of_another() {
    for t in TestDb::both() {
        let w = world(t);
        let app = app!(w);
        let org = org_of(&w);
        let other = admin::create_organisation(&w.t.db, "CCAS de Lille", "21590350100017", "", None).unwrap().id;
        let theirs = admin::create_aidant(
            &w.t.db,
            &NewAidant { organisation_id: other, email: "paul.durand@exemple.fr", first_name: "Paul", last_name: "Durand", profession: "", referent: false },
        )
        .unwrap()
        .id;
        let r = referent_of(&w, org, "d");
        let mut b = sign_in_as(&w, &app, &r.email, &r.seed).await;
        let home = b.get(&app, "/referent").await;
        assert!(!home.shows("Paul Durand"));
        let csrf = home.csrf();
        for path in [format!("/referent/aidants/{theirs}"), format!("/referent/aidants/{theirs}/cles")] {
            let p = b.get(&app, &path).await;
            assert_eq!(p.status, StatusCode::NOT_FOUND, "{path}");
            assert!(!p.shows("Paul"));
        }
        let p = b.post(&app, &format!("/referent/aidants/{theirs}/desactiver"), &[("csrf", &csrf)]).await;
        assert_eq!(p.status, StatusCode::NOT_FOUND);
        assert!(is_active(&w, theirs));
        let p = b.post(&app, &format!("/referent/aidants/{theirs}/cles/1/retirer"), &[("csrf", &csrf)]).await;
        assert_eq!(p.status, StatusCode::NOT_FOUND);
        // Switching to an organisation one does not belong to.
        let p = b.post(&app, "/espace/structure", &[("csrf", &csrf), ("structure", &other.to_string())]).await;
        assert_eq!(p.status, StatusCode::NOT_FOUND);
        assert!(!w.actions().contains(&"organisation_switched".to_owned()));
    }
}

#[actix_web::test]
async fn an_aidant_of_two_organisations_switches_and_sees_the_current_one() {
    for t in TestDb::both() {
        let w = world(t);
        let app = app!(w);
        let org = org_of(&w);
        let other = admin::create_organisation(&w.t.db, "CCAS de Lille", "21590350100017", "", None).unwrap().id;
        let r2 = referent_of(&w, other, "e");
        // The référent of the other organisation adds the world's aidant.
        let mut rb = sign_in_as(&w, &app, &r2.email, &r2.seed).await;
        let form = rb.get(&app, "/referent/aidants/nouveau").await;
        let joined = rb.post(&app, "/referent/aidants/nouveau", &[("csrf", &form.csrf()), ("email", &w.email), ("prenom", "N"), ("nom", "B"), ("profession", "")]).await;
        assert_eq!(joined.location.as_deref(), Some("/referent?ok=rejoint"));

        w.clock.advance_seconds(31);
        let mut b = sign_in(&w, &app).await;
        let espace = b.get(&app, "/espace").await;
        assert!(espace.shows("Nadia Benali — France Services Tourcoing"), "the current organisation is in the header");
        assert!(espace.shows("Changer de structure") && espace.shows("CCAS de Lille"));
        let switched = b.post(&app, "/espace/structure", &[("csrf", &espace.csrf()), ("structure", &other.to_string())]).await;
        assert_eq!(switched.location.as_deref(), Some("/espace?ok=structure"));
        let after = b.get(&app, "/espace?ok=structure").await;
        assert!(after.shows("Nadia Benali — CCAS de Lille"), "{}", after.body);
        let current = w.t.db.read(|c| broker_store::auth::find_active_by_id(c, w.aidant_id)).unwrap().unwrap().current_organisation_id;
        assert_eq!(current, Some(other));
        let entry = broker_testkit::journal(&w.t.db, |c| broker_store::journal::page(c, 0, 1000))
            .unwrap()
            .into_iter()
            .find(|e| e.action == "organisation_switched")
            .expect("journaled");
        assert_eq!((entry.aidant, entry.organisation), (Some(w.aidant_id), Some(other)));
        assert!(entry.details.contains(&format!("\"from\":{org}")), "{}", entry.details);
        // Not a référent there: no référent space.
        assert_eq!(b.get(&app, "/referent").await.status, StatusCode::FORBIDDEN);
    }
}

#[actix_web::test]
async fn restricting_the_allowed_demarches_limits_new_mandats_and_idp_requests() {
    for t in TestDb::both() {
        let w = world(t);
        let app = app!(w);
        let org = org_of(&w);
        let r = referent_of(&w, org, "f");
        let usager = w.usager("sub-r", "Angela", "Dubois");
        mandats::create_mandat(
            &w.t.db,
            &NewMandat { organisation_id: org, usager_id: usager, aidant_id: w.aidant_id, demarches: vec![Demarche::Argent, Demarche::Famille], duree: Duree::UnMois },
            w.clock.now(),
        )
        .unwrap();
        let mut b = sign_in_as(&w, &app, &r.email, &r.seed).await;
        let form = b.get(&app, "/referent/demarches").await;
        assert_eq!(form.status, StatusCode::OK);
        assert_eq!(form.body.matches(" checked>").count(), 10, "every démarche is allowed at first");

        let none = b.post(&app, "/referent/demarches", &[("csrf", &form.csrf())]).await;
        assert_eq!(none.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(none.shows("Choisissez au moins une démarche"));

        let done = b.post(&app, "/referent/demarches", &[("csrf", &form.csrf()), ("demarche", "famille"), ("demarche", "social")]).await;
        assert_eq!(done.location.as_deref(), Some("/referent?ok=demarches"), "{}", done.body);
        let o = w.t.db.read(|c| admin::find_organisation(c, org)).unwrap();
        assert_eq!(o.allowed(), vec![Demarche::Famille, Demarche::Social]);
        assert!(w.actions().contains(&"organisation_demarches_changed".to_owned()));

        // New mandats: only those two are offered.
        w.clock.advance_seconds(31);
        let mut a = sign_in(&w, &app).await;
        let mandat = a.get(&app, "/mandats/nouveau").await;
        assert!(mandat.shows("value=\"famille\"") && mandat.shows("value=\"social\""));
        assert!(!mandat.shows("value=\"argent\""), "a removed démarche is not offered");
        // The existing autorisation stays visible, marked as not usable; the other is usable.
        let page = a.get(&app, &format!("/usagers/{usager}")).await;
        assert_eq!(page.status, StatusCode::OK);
        assert_eq!(page.body.matches("non utilisable").count(), 1, "{}", page.body);

        // An IdP request for a removed démarche: an OAuth error redirect.
        let client = NewClient::validate("Service démo", &["http://localhost:9999/cb".to_owned()], &[], "ES256", "json").unwrap();
        admin::create_client(&w.t.db, &w.state.sealer, &client).unwrap();
        let claims = r#"{"id_token":{"rep_scope":{"essential":true,"values":["argent"]}}}"#;
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        q.append_pair("response_type", "code")
            .append_pair("client_id", &client.client_id)
            .append_pair("redirect_uri", "http://localhost:9999/cb")
            .append_pair("scope", "openid profile")
            .append_pair("acr_values", "eidas1")
            .append_pair("state", "etat-123456")
            .append_pair("nonce", "nonce-123456")
            .append_pair("claims", claims);
        let mut page = a.get(&app, &format!("/authorize?{}", q.finish())).await;
        for _ in 0..3 {
            match page.location.clone() {
                Some(l) if l.starts_with('/') => page = a.get(&app, &l).await,
                _ => break,
            }
        }
        let location = page.location.expect("a redirect to the client");
        assert!(location.starts_with("http://localhost:9999/cb?"), "{location}");
        assert!(location.contains("error=access_denied") && location.contains("state=etat-123456"), "{location}");
        assert!(location.contains(&format!("iss={}", url::form_urlencoded::byte_serialize(ISSUER.as_bytes()).collect::<String>())), "{location}");
    }
}

#[actix_web::test]
async fn keys_of_an_aidant_are_listed_and_a_lost_one_removed_by_the_referent() {
    for t in TestDb::both() {
        let w = world(t);
        let app = app!(w);
        let org = org_of(&w);
        let r = referent_of(&w, org, "g");
        let key = broker_store::webauthn::add_credential(&w.t.db, w.aidant_id, "Y3JlZGVudGlhbC0x", "{\"cred\":1}", "Clé bleue", w.clock.now()).unwrap();
        let mut b = sign_in_as(&w, &app, &r.email, &r.seed).await;
        let page = b.get(&app, &format!("/referent/aidants/{}/cles", w.aidant_id)).await;
        assert_eq!(page.status, StatusCode::OK);
        assert!(page.shows("Clé bleue"));
        assert!(page.shows(&format!("data-options=\"/referent/aidants/{}/cles/options\"", w.aidant_id)));

        // Options for enrolling a key for the aidant, through the page script's endpoint.
        let req = test::TestRequest::post()
            .uri(&format!("/referent/aidants/{}/cles/options", w.aidant_id))
            .insert_header(("x-csrf-token", page.csrf()))
            .set_json(serde_json::json!({ "name": "Clé verte" }));
        let opts = b.send(&app, req).await;
        assert_eq!(opts.status, StatusCode::OK, "{}", opts.body);
        let v: serde_json::Value = serde_json::from_str(&opts.body).unwrap();
        assert_eq!(v["publicKey"]["user"]["name"].as_str(), Some(w.email.as_str()), "the key is the aidant's, not the référent's");

        let removed = b.post(&app, &format!("/referent/aidants/{}/cles/{key}/retirer", w.aidant_id), &[("csrf", &page.csrf())]).await;
        assert_eq!(removed.location.as_deref(), Some(format!("/referent/aidants/{}/cles?ok=retrait", w.aidant_id).as_str()), "{}", removed.body);
        assert!(broker_store::webauthn::list_credentials(&w.t.db, w.aidant_id).unwrap().is_empty());
        let entry = broker_testkit::journal(&w.t.db, |c| broker_store::journal::page(c, 0, 1000))
            .unwrap()
            .into_iter()
            .find(|e| e.action == "second_factor_removed")
            .expect("journaled");
        assert_eq!(entry.aidant, Some(w.aidant_id));
        assert!(entry.details.contains(&format!("\"by\":{}", r.id)), "{}", entry.details);
        let _ = ISSUER;
    }
}

#[actix_web::test]
async fn an_aidant_who_also_works_elsewhere_gets_no_new_way_in_from_one_referent() {
    for t in TestDb::both() {
        let w = world(t);
        let app = app!(w);
        let org = org_of(&w);
        let r = referent_of(&w, org, "x");
        // Paul belongs to another structure, then is added to this one by its référent.
        let other = admin::create_organisation(&w.t.db, "CCAS de Lille", "21590350100017", "", None).unwrap().id;
        let paul = admin::create_aidant(
            &w.t.db,
            &NewAidant { organisation_id: other, email: "paul.durand@exemple.fr", first_name: "Paul", last_name: "Durand", profession: "", referent: true },
        )
        .unwrap();
        let mut b = sign_in_as(&w, &app, &r.email, &r.seed).await;
        let form = b.get(&app, "/referent/aidants/nouveau").await;
        let joined = b
            .post(&app, "/referent/aidants/nouveau", &[("csrf", &form.csrf()), ("email", "paul.durand@exemple.fr"), ("prenom", "P"), ("nom", "D"), ("profession", "")])
            .await;
        assert_eq!(joined.location.as_deref(), Some("/referent?ok=rejoint"), "{}", joined.body);

        // No key of this référent's choosing on Paul's account (it would open the other
        // structure to them): refused, nothing written.
        let before = w.actions().len();
        let key = broker_store::webauthn::add_credential_for(&w.t.db, org, paul.id, "Y3JlZGVudGlhbC14", "{\"cred\":1}", "Clé du référent", w.clock.now(), r.id);
        assert!(matches!(&key, Err(broker_store::StoreError::Conflict(m)) if m == referent::NOT_ALL_YOURS), "{key:?}");
        assert!(broker_store::webauthn::list_credentials(&w.t.db, paul.id).unwrap().is_empty());
        assert_eq!(w.actions().len(), before);

        // Taking a way in away stays possible here: deactivation, over HTTP.
        let page = b.get(&app, &format!("/referent/aidants/{}", paul.id)).await;
        let off = b.post(&app, &format!("/referent/aidants/{}/desactiver", paul.id), &[("csrf", &page.csrf())]).await;
        assert_eq!(off.location.as_deref(), Some("/referent?ok=desactive"), "{}", off.body);
        assert!(!is_active(&w, paul.id));
        // Reactivation, which the other structure did not decide, is refused with the reason.
        let on = b.post(&app, &format!("/referent/aidants/{}/reactiver", paul.id), &[("csrf", &page.csrf())]).await;
        assert_eq!(on.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", on.body);
        assert!(on.shows("travaille aussi pour une autre structure"), "{}", on.body);
        assert!(!is_active(&w, paul.id));
    }
}
