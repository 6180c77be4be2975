//! The usager's space through the real application and the FranceConnect simulator on a
//! loopback port: identification, their mandats and uses only, their own revocations.

mod common;

use actix_web::http::StatusCode;
use actix_web::test;
use broker_core::journal::{Action, Entry};
use broker_core::mandat::Duree;
use broker_core::time::Clock;
use broker_core::Demarche;
use broker_store::admin::{self, NewAidant};
use broker_store::mandats::{self, NewMandat};
use broker_store::{auth, idp, journal};
use broker_testkit::TestDb;
use common::simulator::{fc_world, http, serve_simulator, usager_on_simulator, CLIENT_ID};
use common::{Browser, World, ISSUER};
use fcsim::provider;

fn usager(w: &World, sub: &str, given: &str, family: &str) -> i64 {
    w.usager(sub, given, family)
}

fn mandat(w: &World, org: i64, aidant: i64, usager: i64, demarches: &[Demarche]) -> i64 {
    mandats::create_mandat(&w.t.db, &NewMandat { organisation_id: org, usager_id: usager, aidant_id: aidant, demarches: demarches.to_vec(), duree: Duree::SixMois }, w.clock.now())
        .unwrap()
        .mandat_id
}

fn used(w: &World, org: i64, aidant: i64, usager: i64, d: Demarche, client: &str) {
    w.t.db.write(|c| journal::append(c, &[Entry::new(Action::AutorisationUsed).aidant(aidant).organisation(org).usager(usager).demarche(d).client(client)])).unwrap();
}

/// Identifies as `identity` on the simulator from the usager space; returns the page.
async fn identify<S, B>(app: &S, b: &mut Browser, base: &str, identity: &str, action: &str) -> common::Page
where
    S: actix_web::dev::Service<actix_http::Request, Response = actix_web::dev::ServiceResponse<B>, Error = actix_web::Error>,
    B: actix_web::body::MessageBody,
{
    let landing = b.get(app, "/espace-usager").await;
    assert!(landing.shows("S'identifier avec"), "{}", landing.body);
    let sent = b.post(app, "/espace-usager/connexion", &[("csrf", &landing.csrf())]).await;
    let authorize = sent.location.expect("to FranceConnect");
    assert!(authorize.starts_with(base), "{authorize}");
    let back = usager_on_simulator(base, &authorize, identity, "normal", action).await;
    let captured = b.get(app, &back).await;
    let mut next = captured.location.expect("a redirect");
    if next.starts_with("http") {
        // FranceConnect's logout, then back on the broker.
        let returned = http().get(&next).send().await.unwrap();
        next = returned.headers()["location"].to_str().unwrap().strip_prefix(ISSUER).unwrap().to_owned();
        let hop = b.get(app, &next).await;
        next = hop.location.expect("to the usager space");
    }
    assert!(next.starts_with("/espace-usager"), "{next}");
    b.get(app, &next).await
}

#[actix_web::test]
async fn a_usager_sees_their_mandats_and_uses_only_and_revokes_them() {
    let base = serve_simulator();
    for t in TestDb::both() {
        let w = fc_world(t, &base);
        let app = test::init_service(broker_web::app(w.state.clone(), std::path::PathBuf::from("/nonexistent"), &[7u8; 64])).await;
        let org = w.t.db.read(|c| auth::find_active_by_id(c, w.aidant_id)).unwrap().unwrap().current_organisation_id.unwrap();
        let other_org = admin::create_organisation(&w.t.db, "CCAS de Lille", "21590350100017", "", None).unwrap().id;
        let other_aidant = admin::create_aidant(
            &w.t.db,
            &NewAidant { organisation_id: other_org, email: "paul.durand@exemple.fr", first_name: "Paul", last_name: "Durand", profession: "", referent: false },
        )
        .unwrap()
        .id;
        let marie = usager(&w, &provider::pairwise_sub(CLIENT_ID, "marie-martin"), "Marie", "Martin");
        let someone = usager(&w, "quelqu-un-d-autre", "Angela", "Dubois");
        let m1 = mandat(&w, org, w.aidant_id, marie, &[Demarche::Argent, Demarche::Famille]);
        let m2 = mandat(&w, other_org, other_aidant, marie, &[Demarche::Logement]);
        let theirs = mandat(&w, org, w.aidant_id, someone, &[Demarche::Travail]);
        used(&w, org, w.aidant_id, marie, Demarche::Argent, "client-impots");
        used(&w, org, w.aidant_id, someone, Demarche::Travail, "client-pole-emploi");

        let mut b = Browser::default();
        let page = identify(&app, &mut b, &base, "marie-martin", "choisir").await;
        assert_eq!(page.status, StatusCode::OK, "{}: {}", w.t.name(), page.body);
        assert!(page.shows(&format!("Mandat n° {m1} avec France Services Tourcoing")), "{}", page.body);
        assert!(page.shows(&format!("Mandat n° {m2} avec CCAS de Lille")));
        assert!(page.shows("Nadia Benali") && page.shows("client-impots"), "the use: aidant and e-service");
        assert!(
            page.shows("un deuxième service en ligne peut recevoir votre identité directement de FranceConnect") && page.shows("n'apparaissent pas ici"),
            "the space says which uses it cannot show"
        );
        assert!(!page.shows(&format!("Mandat n° {theirs}")) && !page.shows("Angela") && !page.shows("client-pole-emploi") && !page.shows("Travail"));

        // Someone else's autorisation or mandat: 404, nothing revoked.
        let theirs_aut = w.t.db.read(|c| mandats::facts(c, org, someone)).unwrap()[0].autorisations[0].id;
        let csrf = page.csrf();
        let p = b.post(&app, &format!("/espace-usager/autorisations/{theirs_aut}/revoquer"), &[("csrf", &csrf)]).await;
        assert_eq!(p.status, StatusCode::NOT_FOUND);
        let p = b.post(&app, &format!("/espace-usager/mandats/{theirs}/revoquer"), &[("csrf", &csrf)]).await;
        assert_eq!(p.status, StatusCode::NOT_FOUND);
        assert!(w.t.db.read(|c| mandats::facts(c, org, someone)).unwrap()[0].autorisations[0].revoked_at.is_none());
        // Without the CSRF token: refused.
        let argent = w.t.db.read(|c| mandats::facts(c, org, marie)).unwrap()[0].autorisations.iter().find(|a| a.demarche == Demarche::Argent).unwrap().id;
        let p = b.post(&app, &format!("/espace-usager/autorisations/{argent}/revoquer"), &[("csrf", "x")]).await;
        assert_eq!(p.status, StatusCode::FORBIDDEN);

        let by = idp::in_organisation(&w.t.db, broker_core::capability::AidantId(w.aidant_id)).unwrap().expect("the aidant's structure");
        assert_eq!(by.organisation().get(), org);
        assert!(idp::usager_autorisations(&w.t.db, &by, broker_core::capability::UsagerId(marie), w.clock.now()).unwrap().iter().any(|a| a.demarche == Demarche::Argent));
        let done = b.post(&app, &format!("/espace-usager/autorisations/{argent}/revoquer"), &[("csrf", &csrf)]).await;
        let location = done.location.expect("back to the space");
        let fp = location.strip_prefix("/espace-usager?revocation=").expect("with the attestation").to_owned();
        let after = b.get(&app, &location).await;
        assert!(after.shows("La révocation est enregistrée"));
        // The next IdP flow no longer offers that démarche.
        let left = idp::usager_autorisations(&w.t.db, &by, broker_core::capability::UsagerId(marie), w.clock.now()).unwrap();
        assert!(left.iter().all(|a| a.demarche != Demarche::Argent) && left.iter().any(|a| a.demarche == Demarche::Famille), "{left:?}");
        let entry = broker_testkit::journal(&w.t.db, |c| journal::page(c, 0, 1000)).unwrap().into_iter().find(|e| e.action == "autorisation_revoked").unwrap();
        assert_eq!((entry.aidant, entry.usager, entry.organisation), (None, Some(marie), Some(org)));
        assert!(entry.details.contains("\"by\":\"usager\""), "{}", entry.details);

        let attestation = b.get(&app, &format!("/espace-usager/revocations/{fp}")).await;
        assert_eq!(attestation.status, StatusCode::OK, "{}", attestation.body);
        assert!(attestation.shows("la personne elle-même") && attestation.shows(&fp));

        // The whole mandat held by the other organisation.
        let done = b.post(&app, &format!("/espace-usager/mandats/{m2}/revoquer"), &[("csrf", &csrf)]).await;
        assert!(done.location.unwrap().starts_with("/espace-usager?revocation="));
        assert!(w.t.db.read(|c| mandats::facts(c, other_org, marie)).unwrap()[0].autorisations.iter().all(|a| a.revoked_at.is_some()));

        // Each revocation was e-mailed to the usager, with its attestation's link.
        let told = common::wait_for_subject(&w, "a été révoqué", 2);
        assert_eq!(told.len(), 2, "{}", w.t.name());
        assert!(told.iter().any(|m| m.body_text().contains(&format!("/attestations/verifier/{fp}"))));

        // The notices of use: on by default, turned off here (journaled), CSRF-checked.
        let page = b.get(&app, "/espace-usager").await;
        assert!(page.shows("Avis par e-mail") && page.shows(r#"id="avis-oui" name="avis" value="oui" checked"#), "{}", page.body);
        let p = b.post(&app, "/espace-usager/avis", &[("csrf", "x"), ("avis", "non")]).await;
        assert_eq!(p.status, StatusCode::FORBIDDEN);
        let p = b.post(&app, "/espace-usager/avis", &[("csrf", &csrf), ("avis", "non")]).await;
        assert_eq!(p.location.as_deref(), Some("/espace-usager?avis=enregistre#avis"));
        assert!(!w.t.db.read(|c| broker_store::lifecycle::use_notices(c, marie)).unwrap());
        let page = b.get(&app, "/espace-usager?avis=enregistre").await;
        assert!(page.shows("Votre choix est enregistré") && page.shows(r#"id="avis-non" name="avis" value="non" checked"#));
        let entry = broker_testkit::journal(&w.t.db, |c| journal::page(c, 0, 1000)).unwrap().into_iter().find(|e| e.action == "usager_notices_changed").unwrap();
        assert_eq!(entry.usager, Some(marie));

        // The visit ends after 30 minutes.
        w.clock.advance_seconds(31 * 60);
        assert!(b.get(&app, "/espace-usager").await.shows("S'identifier avec"));
        let p = b.get(&app, &format!("/espace-usager/revocations/{fp}")).await;
        assert_eq!(p.status, StatusCode::SEE_OTHER);
    }
}

#[actix_web::test]
async fn a_cancelled_identification_says_so_and_a_stranger_sees_nothing() {
    let base = serve_simulator();
    for t in TestDb::both() {
        let w = fc_world(t, &base);
        let app = test::init_service(broker_web::app(w.state.clone(), std::path::PathBuf::from("/nonexistent"), &[7u8; 64])).await;
        let org = w.t.db.read(|c| auth::find_active_by_id(c, w.aidant_id)).unwrap().unwrap().current_organisation_id.unwrap();
        let someone = usager(&w, "quelqu-un-d-autre", "Angela", "Dubois");
        mandat(&w, org, w.aidant_id, someone, &[Demarche::Travail]);

        let mut b = Browser::default();
        let page = identify(&app, &mut b, &base, "marie-martin", "annuler").await;
        assert!(page.shows("Identification annulée") && page.shows("S'identifier avec"), "{}", page.body);

        // Identified, but no mandat in this name: an empty space, nothing of anyone else.
        let page = identify(&app, &mut b, &base, "marie-martin", "choisir").await;
        assert!(page.shows("Aucun mandat n'a été signé à votre nom"), "{}", page.body);
        assert!(!page.shows("Angela") && !page.shows("Travail"));
        let left = b.post(&app, "/espace-usager/quitter", &[("csrf", &page.csrf())]).await;
        assert_eq!(left.location.as_deref(), Some("/espace-usager"));
        assert!(b.get(&app, "/espace-usager").await.shows("S'identifier avec"));
    }
}
