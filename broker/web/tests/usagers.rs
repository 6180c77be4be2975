//! The usagers pages (list, detail with history), revocation of an autorisation or of a
//! whole mandat with its printable attestation, and renewal, through the real actix
//! application on both storage backends.

mod common;

use actix_web::http::StatusCode;
use actix_web::test;
use broker_core::mandat::{Duree, Status};
use broker_core::time::Clock;
use broker_core::Demarche;
use broker_store::admin;
use broker_store::mandats::{self, NewMandat};
use broker_store::{attestations, journal};
use broker_testkit::TestDb;
use common::{sign_in, world, Browser, Page, World};

fn organisation_of(w: &World) -> i64 {
    w.organisation()
}

fn usager(w: &World, sub: &str, given: &str, family: &str) -> i64 {
    w.usager(sub, given, family)
}

fn mandat(w: &World, org: i64, usager: i64, demarches: &[Demarche], duree: Duree) -> i64 {
    mandats::create_mandat(
        &w.t.db,
        &NewMandat { organisation_id: org, usager_id: usager, aidant_id: w.aidant_id, demarches: demarches.to_vec(), duree },
        w.clock.now(),
    )
    .unwrap()
    .mandat_id
}

fn autorisation_of(w: &World, org: i64, usager: i64, mandat_id: i64, d: Demarche) -> i64 {
    let facts = w.t.db.read(|c| mandats::facts(c, org, usager)).unwrap();
    facts.iter().find(|m| m.id == mandat_id).unwrap().autorisations.iter().find(|a| a.demarche == d).unwrap().id
}

fn other_organisation(w: &World) -> i64 {
    admin::create_organisation(&w.t.db, "CCAS de Roubaix", "21590512700019", "", None).unwrap().id
}

fn journal_actions(w: &World) -> Vec<(String, Option<i64>, Option<String>)> {
    broker_testkit::journal(&w.t.db, |c| journal::page(c, 0, 1000)).unwrap().into_iter().map(|r| (r.action, r.mandat, r.attestation_hash)).collect()
}

fn fingerprint_in(location: &str) -> String {
    location.rsplit('/').next().unwrap().to_owned()
}

/// Makes the second factor stale, then proves it again through the re-authentication page.
async fn refresh<S, B>(w: &World, app: &S, b: &mut Browser, suite: &str)
where
    S: actix_web::dev::Service<actix_http::Request, Response = actix_web::dev::ServiceResponse<B>, Error = actix_web::Error>,
    B: actix_web::body::MessageBody,
{
    let reauth = b.get(app, &format!("/reauthentification?suite={}", url_encode(suite))).await;
    let done = b.post(app, "/reauthentification", &[("csrf", &reauth.csrf()), ("code", &w.code()), ("suite", suite)]).await;
    assert_eq!((done.status, done.location.as_deref()), (StatusCode::SEE_OTHER, Some(suite)), "{}", done.body);
}

fn url_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn assert_not_found(p: &Page, what: &str) {
    assert_eq!(p.status, StatusCode::NOT_FOUND, "{what}: {}", p.body);
    assert!(p.shows("Page introuvable"), "{what}");
}

#[actix_web::test]
async fn the_list_shows_the_organisation_usagers_with_search() {
    for t in TestDb::both() {
        let w = world(t);
        let app = app!(w);
        let org = organisation_of(&w);
        let other = other_organisation(&w);
        let angela = usager(&w, "sub-angela", "Angela", "Dubois");
        let bruno = usager(&w, "sub-bruno", "Bruno", "Éloi");
        let chloe = usager(&w, "sub-chloe", "Chloé", "Martin");
        let stranger = usager(&w, "sub-stranger", "Zoé", "Inconnue");
        mandat(&w, org, angela, &[Demarche::Argent, Demarche::Logement], Duree::UnAn);
        mandat(&w, org, angela, &[Demarche::Social], Duree::UnMois);
        mandat(&w, org, bruno, &[Demarche::Travail], Duree::UnJour);
        mandat(&w, other, stranger, &[Demarche::Travail], Duree::UnAn);
        // Chloé's mandat ended more than a year ago: she is no longer listed.
        mandat(&w, org, chloe, &[Demarche::Famille], Duree::UnJour);
        let now = w.clock.now();
        w.clock.advance_seconds(2 * 86_400);
        // Bruno's mandat has expired; Chloé's too.
        let mut b = sign_in(&w, &app).await;
        let page = b.get(&app, "/usagers").await;
        assert_eq!(page.status, StatusCode::OK, "{}: {}", w.t.name(), page.body);
        assert!(page.shows("Angela Dubois") && page.shows("Bruno Éloi") && page.shows("Chloé Martin"), "{}", w.t.name());
        assert!(!page.shows("Zoé Inconnue"), "{}", w.t.name());
        assert!(page.shows(Demarche::Argent.title()) && page.shows(Demarche::Logement.title()) && page.shows(Demarche::Social.title()));
        // Soonest expiry of Angela's active mandats: the one-month mandat.
        assert!(page.shows(&now.plus_days(31).french_date()), "{}", w.t.name());
        assert!(page.shows(Status::Active.label()) && page.shows(Status::Expired.label()));

        let found = b.get(&app, "/usagers?q=eloi").await;
        assert!(found.shows("Bruno Éloi") && !found.shows("Angela Dubois"), "{}", w.t.name());
        let none = b.get(&app, "/usagers?q=personne").await;
        assert!(none.shows("Aucune personne ne correspond"), "{}", w.t.name());

        w.clock.advance_seconds(366 * 86_400);
        let mut b = sign_in(&w, &app).await;
        let later = b.get(&app, "/usagers").await;
        assert_eq!(later.status, StatusCode::OK, "{}", w.t.name());
        assert!(!later.shows("Chloé Martin") && !later.shows("Bruno Éloi"), "{}", w.t.name());
        assert!(later.shows("Angela Dubois"), "{}", w.t.name());

        // The space links to the list.
        assert!(b.get(&app, "/espace").await.body.contains("href=\"/usagers\""));
        // Signed out: to the sign-in page.
        let anon = Browser::default().get(&app, "/usagers").await;
        assert_eq!(anon.status, StatusCode::SEE_OTHER);
        assert!(anon.location.unwrap().starts_with("/connexion?suite=%2Fusagers"));
    }
}

#[actix_web::test]
async fn the_detail_shows_mandats_autorisations_and_history_and_hides_other_organisations() {
    for t in TestDb::both() {
        let w = world(t);
        let app = app!(w);
        let org = organisation_of(&w);
        let other = other_organisation(&w);
        let angela = usager(&w, "sub-angela", "Angela", "Dubois");
        let stranger = usager(&w, "sub-stranger", "Zoé", "Inconnue");
        let m = mandat(&w, org, angela, &[Demarche::Argent, Demarche::Logement], Duree::UnAn);
        let theirs = mandat(&w, other, angela, &[Demarche::Justice], Duree::UnAn);
        let strangers = mandat(&w, other, stranger, &[Demarche::Travail], Duree::UnAn);
        let mut b = sign_in(&w, &app).await;

        let page = b.get(&app, &format!("/usagers/{angela}")).await;
        assert_eq!(page.status, StatusCode::OK, "{}: {}", w.t.name(), page.body);
        assert!(page.shows("Angela Dubois") && page.shows("24/08/1962"));
        assert!(page.shows(&format!("Mandat n° {m}")) && !page.shows(&format!("Mandat n° {theirs}")), "{}", w.t.name());
        assert!(page.shows(Demarche::Argent.title()) && !page.shows(Demarche::Justice.title()));
        let a = autorisation_of(&w, org, angela, m, Demarche::Argent);
        assert!(page.body.contains(&format!("/usagers/{angela}/autorisations/{a}/revoquer")));
        assert!(page.body.contains(&format!("/usagers/{angela}/mandats/{m}/revoquer")));
        assert!(page.body.contains(&format!("/usagers/{angela}/mandats/{m}/renouveler")));
        // History, in plain French, from the journal of this organisation only.
        assert!(page.shows("Mandat créé") && page.shows("Autorisation créée : Argent"), "{}: {}", w.t.name(), page.body);
        assert!(page.shows("Nadia Benali"));
        assert!(!page.shows(&format!("(mandat n° {theirs})")), "{}", w.t.name());

        // Another organisation's usager, mandat or autorisation: page introuvable everywhere.
        let sa = autorisation_of(&w, other, stranger, strangers, Demarche::Travail);
        let ta = autorisation_of(&w, other, angela, theirs, Demarche::Justice);
        for path in [
            format!("/usagers/{stranger}"),
            format!("/usagers/{stranger}/mandats/{strangers}/revoquer"),
            format!("/usagers/{stranger}/autorisations/{sa}/revoquer"),
            format!("/usagers/{stranger}/mandats/{strangers}/renouveler"),
            format!("/usagers/{angela}/mandats/{theirs}/revoquer"),
            format!("/usagers/{angela}/autorisations/{ta}/revoquer"),
            format!("/usagers/{angela}/mandats/{theirs}/renouveler"),
            format!("/usagers/{angela}/mandats/{strangers}/renouveler"),
            "/usagers/999999".to_owned(),
            "/usagers/abc".to_owned(),
        ] {
            assert_not_found(&b.get(&app, &path).await, &format!("{} {path}", w.t.name()));
        }
        let csrf = page.csrf();
        for path in [format!("/usagers/{angela}/mandats/{theirs}/revoquer"), format!("/usagers/{stranger}/autorisations/{sa}/revoquer")] {
            let p = b.post(&app, &path, &[("csrf", &csrf), ("confirmation", "oui")]).await;
            assert_not_found(&p, &path);
        }
        let p = b.post(&app, &format!("/usagers/{angela}/mandats/{theirs}/renouveler"), &[("csrf", &csrf), ("demarche", "justice"), ("duree", "365")]).await;
        assert_not_found(&p, "renew other");
        // Nothing of theirs was revoked.
        let facts = w.t.db.read(|c| mandats::facts(c, other, angela)).unwrap();
        assert_eq!(facts[0].status(w.clock.now()), Status::Active);
    }
}

#[actix_web::test]
async fn revoking_one_autorisation_needs_confirmation_and_a_fresh_factor_and_prints_an_attestation() {
    for t in TestDb::both() {
        let w = world(t);
        let app = app!(w);
        let org = organisation_of(&w);
        let angela = usager(&w, "sub-angela", "Angela", "Dubois");
        let m = mandat(&w, org, angela, &[Demarche::Argent, Demarche::Logement], Duree::UnAn);
        let a = autorisation_of(&w, org, angela, m, Demarche::Argent);
        let mut b = sign_in(&w, &app).await;
        let here = format!("/usagers/{angela}/autorisations/{a}/revoquer");

        // Stale second factor: the confirmation page sends to re-authentication first.
        w.clock.advance_seconds(16 * 60);
        let stale = b.get(&app, &here).await;
        assert_eq!(stale.status, StatusCode::SEE_OTHER);
        assert_eq!(stale.location.as_deref(), Some(format!("/reauthentification?suite={}", url_encode(&here)).as_str()));
        let csrf = b.get(&app, "/usagers").await.csrf();
        let confirm_stale_post = b.post(&app, &here, &[("csrf", &csrf), ("confirmation", "oui")]).await;
        assert_eq!(confirm_stale_post.status, StatusCode::SEE_OTHER);
        assert!(confirm_stale_post.location.unwrap().starts_with("/reauthentification"));
        refresh(&w, &app, &mut b, &here).await;

        let confirm = b.get(&app, &here).await;
        assert_eq!(confirm.status, StatusCode::OK, "{}: {}", w.t.name(), confirm.body);
        assert!(confirm.shows(Demarche::Argent.title()) && !confirm.shows(Demarche::Logement.title()));
        // Without the CSRF token: refused, nothing revoked.
        let forged = b.post(&app, &here, &[("csrf", "x"), ("confirmation", "oui")]).await;
        assert_eq!(forged.status, StatusCode::FORBIDDEN);
        // Without the confirmation box: the page again, nothing revoked.
        let unticked = b.post(&app, &here, &[("csrf", &confirm.csrf())]).await;
        assert_eq!(unticked.status, StatusCode::BAD_REQUEST);
        assert!(unticked.shows("Cochez la case"));
        assert_eq!(w.t.db.read(|c| mandats::facts(c, org, angela)).unwrap()[0].active_demarches(w.clock.now()).len(), 2);

        let done = b.post(&app, &here, &[("csrf", &confirm.csrf()), ("confirmation", "oui")]).await;
        assert_eq!(done.status, StatusCode::SEE_OTHER, "{}: {}", w.t.name(), done.body);
        let location = done.location.unwrap();
        assert!(location.starts_with(&format!("/usagers/{angela}/revocations/")), "{location}");
        let fp = fingerprint_in(&location);
        let now = w.clock.now();
        let facts = w.t.db.read(|c| mandats::facts(c, org, angela)).unwrap();
        assert_eq!(facts[0].active_demarches(now), vec![Demarche::Logement]);
        assert_eq!(facts[0].status(now), Status::Active);

        let entries = journal_actions(&w);
        assert!(entries.iter().any(|e| e.0 == "autorisation_revoked" && e.1 == Some(m)), "{}", w.t.name());
        assert!(!entries.iter().any(|e| e.0 == "mandat_revoked"));
        assert!(entries.iter().any(|e| e.0 == "attestation_created" && e.2.as_deref() == Some(fp.as_str())));

        let printed = b.get(&app, &location).await;
        assert_eq!(printed.status, StatusCode::OK, "{}: {}", w.t.name(), printed.body);
        assert!(printed.shows(&format!("Attestation de révocation partielle du mandat n° {m}")));
        assert!(printed.shows("Angela Dubois") && printed.shows("France Services Tourcoing") && printed.shows("Nadia Benali"));
        assert!(printed.shows(Demarche::Argent.description()) && !printed.shows(Demarche::Logement.description()));
        assert!(printed.body.contains(&format!("id=\"empreinte\">{fp}<")));
        assert!(printed.shows(&format!("/attestations/verifier/{fp}")));
        // The public verification page knows it.
        let verified = Browser::default().get(&app, &format!("/attestations/verifier/{fp}")).await;
        assert_eq!(verified.status, StatusCode::OK, "{}", verified.body);
        assert!(verified.shows("attestation de révocation"));
        // Same content recorded: its fingerprint matches what the store rebuilds.
        let found = w.t.db.read(|c| attestations::find_by_fingerprint(c, &fp)).unwrap().unwrap();
        assert_eq!(found.mandat_id, m);

        // Revoking again: nothing left to revoke.
        let again = b.get(&app, &here).await;
        assert_eq!(again.status, StatusCode::CONFLICT);
        let detail = b.get(&app, &format!("/usagers/{angela}")).await;
        assert!(detail.shows("Autorisation révoquée : Argent"), "{}", detail.body);
        assert!(detail.shows("Attestation de révocation créée"), "{}", detail.body);
        assert!(!detail.body.contains(&here));
    }
}

#[actix_web::test]
async fn revoking_a_whole_mandat_revokes_every_active_autorisation() {
    for t in TestDb::both() {
        let w = world(t);
        let app = app!(w);
        let org = organisation_of(&w);
        let angela = usager(&w, "sub-angela", "Angela", "Dubois");
        let m = mandat(&w, org, angela, &[Demarche::Argent, Demarche::Logement, Demarche::Social], Duree::SixMois);
        let mut b = sign_in(&w, &app).await;
        let here = format!("/usagers/{angela}/mandats/{m}/revoquer");
        let confirm = b.get(&app, &here).await;
        assert_eq!(confirm.status, StatusCode::OK, "{}: {}", w.t.name(), confirm.body);
        assert!(confirm.shows(&format!("Révoquer le mandat n° {m}")));
        let done = b.post(&app, &here, &[("csrf", &confirm.csrf()), ("confirmation", "oui")]).await;
        assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
        let location = done.location.unwrap();
        let now = w.clock.now();
        let facts = w.t.db.read(|c| mandats::facts(c, org, angela)).unwrap();
        assert_eq!(facts[0].status(now), Status::Revoked);
        let entries = journal_actions(&w);
        assert_eq!(entries.iter().filter(|e| e.0 == "autorisation_revoked").count(), 3, "{}", w.t.name());
        assert_eq!(entries.iter().filter(|e| e.0 == "mandat_revoked" && e.1 == Some(m)).count(), 1);
        let printed = b.get(&app, &location).await;
        assert_eq!(printed.status, StatusCode::OK, "{}", printed.body);
        assert!(printed.shows(&format!("Attestation de révocation du mandat n° {m}")));
        for d in [Demarche::Argent, Demarche::Logement, Demarche::Social] {
            assert!(printed.shows(d.title()));
        }
        // A modified fingerprint is not found.
        let fp = fingerprint_in(&location);
        let mut bad = fp.clone().into_bytes();
        bad[0] = if bad[0] == b'a' { b'b' } else { b'a' };
        let bad = String::from_utf8(bad).unwrap();
        assert_not_found(&b.get(&app, &format!("/usagers/{angela}/revocations/{bad}")).await, "modified fingerprint");
        let detail = b.get(&app, &format!("/usagers/{angela}")).await;
        assert!(detail.shows("Mandat révoqué"), "{}", detail.body);
        assert!(!detail.body.contains(&here));
        // The list shows the usager as revoked.
        assert!(b.get(&app, "/usagers").await.shows(Status::Revoked.label()));
    }
}

#[actix_web::test]
async fn renewing_a_mandat_prefills_summarises_and_creates_the_new_mandat() {
    for t in TestDb::both() {
        let w = world(t);
        let app = app!(w);
        let org = organisation_of(&w);
        let angela = usager(&w, "sub-angela", "Angela", "Dubois");
        let m = mandat(&w, org, angela, &[Demarche::Argent, Demarche::Logement], Duree::UnMois);
        let mut b = sign_in(&w, &app).await;
        let base = format!("/usagers/{angela}/mandats/{m}/renouveler");

        let form = b.get(&app, &base).await;
        assert_eq!(form.status, StatusCode::OK, "{}: {}", w.t.name(), form.body);
        assert!(form.body.contains("value=\"argent\" aria-describedby=\"demarche-argent-detail\" checked"));
        assert!(form.body.contains("value=\"logement\" aria-describedby=\"demarche-logement-detail\" checked"));
        assert!(!form.body.contains("value=\"social\" aria-describedby=\"demarche-social-detail\" checked"));
        assert!(form.body.contains("value=\"31\" required checked"));
        assert!(form.shows("1 jour") && form.shows("1 mois") && form.shows("6 mois") && form.shows("1 an"));

        let empty = b.post(&app, &base, &[("csrf", &form.csrf()), ("duree", "365")]).await;
        assert_eq!(empty.status, StatusCode::BAD_REQUEST);
        assert!(empty.shows("Choisissez au moins une démarche"));

        let chosen = b
            .post(&app, &base, &[("csrf", &form.csrf()), ("demarche", "logement"), ("demarche", "social"), ("duree", "365")])
            .await;
        assert_eq!((chosen.status, chosen.location.as_deref()), (StatusCode::SEE_OTHER, Some(format!("{base}/recapitulatif").as_str())), "{}", chosen.body);

        // The summary needs a fresh second factor.
        w.clock.advance_seconds(16 * 60);
        let stale = b.get(&app, &format!("{base}/recapitulatif")).await;
        assert_eq!(stale.status, StatusCode::SEE_OTHER);
        assert!(stale.location.unwrap().starts_with("/reauthentification?suite="));
        refresh(&w, &app, &mut b, &format!("{base}/recapitulatif")).await;
        let recap = b.get(&app, &format!("{base}/recapitulatif")).await;
        assert_eq!(recap.status, StatusCode::OK, "{}", recap.body);
        let now = w.clock.now();
        assert!(recap.shows(Demarche::Logement.title()) && recap.shows(Demarche::Social.title()) && !recap.shows(Demarche::Argent.title()));
        assert!(recap.shows(&now.plus_days(365).french_date()));
        assert!(recap.shows("J'atteste avoir informé la personne"));

        let unticked = b.post(&app, &format!("{base}/recapitulatif"), &[("csrf", &recap.csrf())]).await;
        assert_eq!(unticked.status, StatusCode::BAD_REQUEST);
        assert_eq!(w.t.db.read(|c| mandats::facts(c, org, angela)).unwrap().len(), 1);

        let done = b.post(&app, &format!("{base}/recapitulatif"), &[("csrf", &recap.csrf()), ("consentement", "oui")]).await;
        assert_eq!(done.status, StatusCode::SEE_OTHER, "{}: {}", w.t.name(), done.body);
        let facts = w.t.db.read(|c| mandats::facts(c, org, angela)).unwrap();
        assert_eq!(facts.len(), 2);
        let new = &facts[1];
        assert_eq!(done.location.as_deref(), Some(format!("/mandats/{}/attestation", new.id).as_str()));
        let mut active = new.active_demarches(now);
        active.sort();
        assert_eq!(active, vec![Demarche::Social, Demarche::Logement]);
        assert_eq!(new.expires_at, now.plus_days(365));
        // The old mandat keeps only Argent: Logement was superseded by the renewal.
        assert_eq!(facts[0].active_demarches(now), vec![Demarche::Argent]);
        let entries = journal_actions(&w);
        assert!(entries.iter().any(|e| e.0 == "mandat_renewed" && e.1 == Some(new.id)), "{}", w.t.name());
        // The attestation of the new mandat prints.
        let att = b.get(&app, &format!("/mandats/{}/attestation", new.id)).await;
        assert_eq!(att.status, StatusCode::OK, "{}", att.body);
        // The renewal draft is gone: the summary sends back to the form.
        let again = b.get(&app, &format!("{base}/recapitulatif")).await;
        assert_eq!((again.status, again.location.as_deref()), (StatusCode::SEE_OTHER, Some(base.as_str())));
        let detail = b.get(&app, &format!("/usagers/{angela}")).await;
        assert!(detail.shows("Mandat renouvelé"), "{}", detail.body);
        assert!(detail.shows(&format!("Autorisation remplacée par un nouveau mandat : {} (mandat n° {m})", Demarche::Logement.title())), "{}", detail.body);
    }
}
