//! Making a mandat through the real actix application on both storage backends, with the
//! usager identified by the FranceConnect simulator served on a loopback port.

mod common;

use actix_web::http::StatusCode;
use actix_web::test;
use broker_core::identite::usager_key;
use broker_core::time::Clock;
use broker_core::Demarche;
use broker_store::mandats;
use broker_testkit::TestDb;
use common::simulator::{fc_world, http, query, serve_simulator, usager_on_simulator, CLIENT_ID, SALT};
use common::{sign_in, world, Browser, World, ISSUER};
use fcsim::provider::{self, ProviderSettings};

fn organisation_of(w: &World) -> i64 {
    w.organisation()
}

fn usager_id(w: &World, identity: &str) -> Option<i64> {
    let key = usager_key(&SALT, &provider::pairwise_sub(CLIENT_ID, identity));
    w.t.db.read(|c| mandats::find_usager_by_key(c, &key)).unwrap()
}

/// Fills the form and sends the browser to FranceConnect; returns the authorization URL.
macro_rules! choose {
    ($app:expr, $b:expr, $demarches:expr, $duree:expr) => {{
        let page = $b.get(&$app, "/mandats/nouveau").await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        let csrf = page.csrf();
        let mut form: Vec<(&str, &str)> = vec![("csrf", csrf.as_str()), ("duree", $duree)];
        for d in $demarches {
            form.push(("demarche", d));
        }
        let sent = $b.post(&$app, "/mandats/nouveau", &form).await;
        assert_eq!(sent.status, StatusCode::SEE_OTHER, "{}", sent.body);
        sent.location.unwrap()
    }};
}

/// The whole journey for `identity`; returns the new mandat's id.
macro_rules! make_mandat {
    ($w:expr, $app:expr, $b:expr, $base:expr, $identity:expr, $demarches:expr, $duree:expr) => {{
        let authorize = choose!($app, $b, $demarches, $duree);
        assert!(authorize.starts_with(&$base), "{authorize}");
        let back = usager_on_simulator(&$base, &authorize, $identity, "normal", "choisir").await;
        let captured = $b.get(&$app, &back).await;
        assert_eq!(captured.status, StatusCode::SEE_OTHER, "{}", captured.body);
        let logout = captured.location.unwrap();
        assert!(logout.starts_with(&format!("{}/session/end?", ProviderSettings::issuer_under(&$base))), "{logout}");
        assert_eq!(query(&logout)["post_logout_redirect_uri"], format!("{ISSUER}/mandats/nouveau"));
        let returned = http().get(&logout).send().await.unwrap();
        assert_eq!(returned.status(), 303);
        let after = returned.headers()["location"].to_str().unwrap().strip_prefix(ISSUER).unwrap().to_owned();
        let to_recap = $b.get(&$app, &after).await;
        assert_eq!(to_recap.location.as_deref(), Some("/mandats/nouveau/recapitulatif"));
        let recap = $b.get(&$app, "/mandats/nouveau/recapitulatif").await;
        assert_eq!(recap.status, StatusCode::OK);
        $w.clock.advance_seconds(31);
        let code = $w.code();
        let done = $b.post(&$app, "/mandats/nouveau/recapitulatif", &[("csrf", &recap.csrf()), ("consentement", "oui"), ("code", &code)]).await;
        assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
        let location = done.location.unwrap();
        let id: i64 = location.strip_prefix("/mandats/").unwrap().strip_suffix("/attestation").unwrap().parse().unwrap();
        (id, recap)
    }};
}

#[actix_web::test]
async fn a_mandat_is_made_from_the_choices_to_the_attestation() {
    let base = serve_simulator();
    for t in TestDb::both() {
        let w = fc_world(t, &base);
        let app = test::init_service(broker_web::app(w.state.clone(), std::path::PathBuf::from("/nonexistent"), &[7u8; 64])).await;
        let mut b = sign_in(&w, &app).await;

        let form = b.get(&app, "/mandats/nouveau").await;
        for label in ["1 jour", "1 mois", "6 mois", "1 an", Demarche::Argent.description()] {
            assert!(form.shows(label), "{label}");
        }
        let incomplete = b.post(&app, "/mandats/nouveau", &[("csrf", &form.csrf()), ("duree", "31")]).await;
        assert_eq!(incomplete.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(incomplete.shows("Choisissez au moins une démarche."));
        let forged = b.post(&app, "/mandats/nouveau", &[("csrf", "faux"), ("duree", "31"), ("demarche", "papiers")]).await;
        assert_eq!(forged.status, StatusCode::FORBIDDEN);

        let before = w.actions().len();
        let (id, recap) = make_mandat!(w, app, b, base, "marie-martin", ["papiers", "argent"], "31");
        assert!(recap.shows("Marie") && recap.shows("Martin") && recap.shows("1 mois"), "{}", recap.body);
        assert!(recap.shows(Demarche::Papiers.description()) && recap.shows("ne réalisez jamais de paiement"));
        assert!(recap.shows("J'atteste avoir informé la personne"));

        let usager = usager_id(&w, "marie-martin").expect("the usager, under the keyed hash of the sub");
        let org = organisation_of(&w);
        let facts = w.t.db.read(|c| mandats::facts(c, org, usager)).unwrap();
        assert_eq!(facts.len(), 1);
        assert_eq!(facts[0].id, id);
        let mut kept: Vec<Demarche> = facts[0].autorisations.iter().map(|a| a.demarche).collect();
        kept.sort();
        let mut expected = [Demarche::Argent, Demarche::Papiers];
        expected.sort();
        assert_eq!(kept, expected);
        assert_eq!(facts[0].expires_at, facts[0].created_at.plus_days(31));
        let new: Vec<String> = w.actions()[before..].to_vec();
        for a in ["reauthentication", "usager_identified", "mandat_created", "autorisation_created", "attestation_created"] {
            assert!(new.contains(&a.to_owned()), "{a} in {new:?}");
        }
        let fp = w.t.db.read(|c| broker_store::attestations::mandat_fingerprint(c, id)).unwrap();
        assert!(fp.is_some(), "the attestation is recorded with the mandat");
        let attestation = b.get(&app, &format!("/mandats/{id}/attestation")).await;
        assert_eq!(attestation.status, StatusCode::OK, "{}", w.t.name());
        assert!(attestation.shows("Martin"));

        // The draft is gone: the summary leads back to the form.
        let again = b.get(&app, "/mandats/nouveau/recapitulatif").await;
        assert_eq!(again.location.as_deref(), Some("/mandats/nouveau"));
    }
}

#[actix_web::test]
async fn the_summary_needs_consent_and_a_second_factor_proved_after_the_identification() {
    let base = serve_simulator();
    for t in TestDb::both() {
        let w = fc_world(t, &base);
        let app = test::init_service(broker_web::app(w.state.clone(), std::path::PathBuf::from("/nonexistent"), &[7u8; 64])).await;
        let mut b = sign_in(&w, &app).await;
        let authorize = choose!(app, b, ["papiers"], "1");
        let back = usager_on_simulator(&base, &authorize, "marie-martin", "normal", "choisir").await;
        b.get(&app, &back).await;
        let recap = b.get(&app, "/mandats/nouveau/recapitulatif").await;
        assert!(recap.shows("1 jour"));
        let csrf = recap.csrf();
        let no_consent = b.post(&app, "/mandats/nouveau/recapitulatif", &[("csrf", &csrf), ("code", "")]).await;
        assert_eq!(no_consent.status, StatusCode::UNPROCESSABLE_ENTITY);
        // Signed in minutes ago, but before the identification: the second factor is asked again.
        let stale = b.post(&app, "/mandats/nouveau/recapitulatif", &[("csrf", &csrf), ("consentement", "oui"), ("code", "")]).await;
        assert_eq!(stale.status, StatusCode::SEE_OTHER);
        assert!(stale.location.unwrap().starts_with("/reauthentification?suite=%2Fmandats%2Fnouveau%2Frecapitulatif"));
        let wrong = b.post(&app, "/mandats/nouveau/recapitulatif", &[("csrf", &csrf), ("consentement", "oui"), ("code", "000000")]).await;
        assert_eq!(wrong.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(wrong.shows("Le code est incorrect"));
        assert_eq!(usager_id(&w, "marie-martin"), None);

        // After the re-authentication page, the summary is accepted without a code.
        w.clock.advance_seconds(31);
        let reauth = b.get(&app, "/reauthentification?suite=%2Fmandats%2Fnouveau%2Frecapitulatif").await;
        let fresh = b.post(&app, "/reauthentification", &[("csrf", &reauth.csrf()), ("code", &w.code()), ("suite", "/mandats/nouveau/recapitulatif")]).await;
        assert_eq!(fresh.location.as_deref(), Some("/mandats/nouveau/recapitulatif"));
        let done = b.post(&app, "/mandats/nouveau/recapitulatif", &[("csrf", &csrf), ("consentement", "oui"), ("code", "")]).await;
        assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
        assert!(done.location.unwrap().ends_with("/attestation"));
        assert!(usager_id(&w, "marie-martin").is_some());
    }
}

#[actix_web::test]
async fn each_franceconnect_failure_writes_nothing_and_keeps_the_choices() {
    let base = serve_simulator();
    for t in TestDb::both() {
        let w = fc_world(t, &base);
        let app = test::init_service(broker_web::app(w.state.clone(), std::path::PathBuf::from("/nonexistent"), &[7u8; 64])).await;
        let mut b = sign_in(&w, &app).await;
        let before = w.actions();
        let org = organisation_of(&w);
        let cases = [
            ("normal", "annuler", "Identification annulée"),
            ("erreur-jeton", "choisir", "L'identification a échoué"),
            ("signature-id-token", "choisir", "L'identification a échoué"),
            ("nonce-different", "choisir", "ne correspond pas à la demande"),
            ("niveau-insuffisant", "choisir", "Niveau de sécurité insuffisant"),
        ];
        for (scenario, action, shown) in cases {
            let authorize = choose!(app, b, ["logement", "argent"], "182");
            let back = usager_on_simulator(&base, &authorize, "marie-martin", scenario, action).await;
            let failed = b.get(&app, &back).await;
            assert_eq!(failed.location.as_deref(), Some("/mandats/nouveau"), "{scenario}: {}", failed.body);
            let form = b.get(&app, "/mandats/nouveau").await;
            assert!(form.shows(shown), "{scenario}: {}", form.body);
            assert!(form.body.contains("value=\"logement\" aria-describedby=\"demarche-logement-detail\" checked"), "{scenario}");
            assert!(form.body.contains("value=\"argent\" aria-describedby=\"demarche-argent-detail\" checked"), "{scenario}");
            assert!(form.body.contains("value=\"182\" required checked"), "{scenario}");
            assert!(!form.body.contains("value=\"papiers\" aria-describedby=\"demarche-papiers-detail\" checked"));
            let recap = b.get(&app, "/mandats/nouveau/recapitulatif").await;
            assert_eq!(recap.location.as_deref(), Some("/mandats/nouveau"), "{scenario}");
            assert_eq!(usager_id(&w, "marie-martin"), None, "{scenario}");
            assert!(mandats::list_for_organisation(&w.t.db, org, w.clock.now()).unwrap().is_empty(), "{scenario}");
            assert_eq!(w.actions(), before, "{scenario}");
        }

        // An answer to another session's request: refused, nothing written, choices kept.
        w.clock.advance_seconds(31);
        let mut other = sign_in(&w, &app).await;
        let theirs = choose!(app, other, ["papiers"], "1");
        let ours = choose!(app, b, ["transports"], "365");
        assert!(ours.starts_with(&base));
        let before = w.actions();
        let back = usager_on_simulator(&base, &theirs, "marie-martin", "normal", "choisir").await;
        let refused = b.get(&app, &back).await;
        assert_eq!(refused.location.as_deref(), Some("/mandats/nouveau"));
        let form = b.get(&app, "/mandats/nouveau").await;
        assert!(form.shows("ne correspond à aucune demande faite depuis ce navigateur"), "{}", form.body);
        assert!(form.body.contains("value=\"transports\" aria-describedby=\"demarche-transports-detail\" checked"));
        assert_eq!(usager_id(&w, "marie-martin"), None);
        assert_eq!(w.actions(), before);
        // A callback without any request from this browser.
        let mut stranger = Browser::default();
        let anonymous = stranger.get(&app, &back).await;
        assert!(anonymous.location.unwrap().starts_with("/connexion"));
    }
}

#[actix_web::test]
async fn a_new_mandat_supersedes_the_same_demarches_of_the_previous_one() {
    let base = serve_simulator();
    for t in TestDb::both() {
        let w = fc_world(t, &base);
        let app = test::init_service(broker_web::app(w.state.clone(), std::path::PathBuf::from("/nonexistent"), &[7u8; 64])).await;
        let mut b = sign_in(&w, &app).await;
        let (first, _) = make_mandat!(w, app, b, base, "jean-pierre-durand", ["papiers", "famille"], "365");
        w.clock.advance_seconds(60);
        let (second, _) = make_mandat!(w, app, b, base, "jean-pierre-durand", ["papiers"], "182");
        assert_ne!(first, second);
        let usager = usager_id(&w, "jean-pierre-durand").unwrap();
        let facts = w.t.db.read(|c| mandats::facts(c, organisation_of(&w), usager)).unwrap();
        assert_eq!(facts.len(), 2, "one usager, two mandats");
        let old = facts.iter().find(|m| m.id == first).unwrap();
        let papiers = old.autorisations.iter().find(|a| a.demarche == Demarche::Papiers).unwrap();
        let famille = old.autorisations.iter().find(|a| a.demarche == Demarche::Famille).unwrap();
        assert!(papiers.revoked_at.is_some(), "{}", w.t.name());
        assert!(famille.revoked_at.is_none());
        let new = facts.iter().find(|m| m.id == second).unwrap();
        assert!(new.autorisations.iter().all(|a| a.revoked_at.is_none()));
        assert!(w.actions().contains(&"autorisation_revoked".to_owned()));
    }
}

#[actix_web::test]
async fn a_refused_creation_leaves_no_usager_behind() {
    for t in TestDb::both() {
        let w = world(t);
        let org = organisation_of(&w);
        let identity = broker_core::identite::IdentitePivot {
            given_name: "Angela Claire Louise".into(),
            family_name: "Dubois".into(),
            preferred_username: None,
            birthdate: "1962-08-24".into(),
            gender: "female".into(),
            birthplace: "75107".into(),
            birthcountry: broker_core::identite::FRANCE.into(),
            email: "angela@exemple.fr".into(),
        };
        let key = usager_key(&SALT, "sub-refuse");
        let before = w.actions();
        let n = mandats::NewMandatForUsager {
            organisation_id: org,
            aidant_id: w.aidant_id,
            usager_key: &key,
            identity: &identity,
            demarches: Vec::new(),
            duree: broker_core::mandat::Duree::UnMois,
        };
        let err = mandats::create_mandat_with_attestation(&w.t.db, &n, w.clock.now()).unwrap_err();
        assert!(matches!(err, broker_store::StoreError::Invalid(_)), "{err:?}");
        assert_eq!(w.t.db.read(|c| mandats::find_usager_by_key(c, &key)).unwrap(), None, "{}", w.t.name());
        assert_eq!(w.actions(), before);
        let ok = mandats::create_mandat_with_attestation(&w.t.db, &mandats::NewMandatForUsager { demarches: vec![Demarche::Papiers], ..n }, w.clock.now()).unwrap();
        assert_eq!(w.t.db.read(|c| mandats::find_usager_by_key(c, &key)).unwrap(), Some(ok.usager_id));
        assert_eq!(w.t.db.read(|c| broker_store::attestations::mandat_fingerprint(c, ok.mandat.mandat_id)).unwrap(), Some(ok.fingerprint));
    }
}
