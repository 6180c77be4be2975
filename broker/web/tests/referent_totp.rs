//! The référent's TOTP pages (cards and apps of the organisation's aidants) through the
//! real actix application on both storage backends.

mod common;

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::test;
use broker_core::time::Clock;
use broker_core::totp::{CardRecord, Seed, APP_STEP, CARD_STEP, DIGITS};
use broker_core::Timestamp;
use broker_store::admin::{self, NewAidant};
use broker_store::auth::{self, TotpDeviceView};
use broker_store::journal;
use broker_testkit::TestDb;
use common::{sign_in, world, Browser, Page, World, ISSUER};
use std::time::Duration;

/// Signs in with an e-mail, a code and the e-mailed link.
async fn sign_in_with<S, B>(w: &World, app: &S, email: &str, code: &str) -> Browser
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let mut b = Browser::default();
    let before = w.smtp.received().len();
    let form = b.get(app, "/connexion").await;
    let sent = b.post(app, "/connexion", &[("csrf", &form.csrf()), ("email", email), ("code", code), ("suite", "/espace")]).await;
    assert!(sent.shows("Consultez votre messagerie"), "{}", sent.body);
    let mails = w.smtp.wait_for(before + 1, Duration::from_secs(10));
    let link = mails[before].find_link(&format!("{ISSUER}/connexion/lien?jeton=")).expect("link in the e-mail");
    let path = link.strip_prefix(ISSUER).unwrap().to_owned();
    let confirm = b.get(app, &path).await;
    let jeton = path.split("jeton=").nth(1).unwrap().to_owned();
    let done = b.post(app, "/connexion/lien", &[("csrf", &confirm.csrf()), ("jeton", &jeton)]).await;
    assert_eq!((done.status, done.location.as_deref()), (StatusCode::SEE_OTHER, Some("/espace")), "{}", done.body);
    b
}

struct Referent {
    id: i64,
    email: String,
    seed: Seed,
}

fn organisation_of(w: &World) -> i64 {
    w.organisation()
}

/// A référent of the world's organisation, with a TOTP app.
fn referent(w: &World, org: i64) -> Referent {
    let email = "referente@exemple.fr".to_owned();
    let id = admin::create_aidant(&w.t.db, &NewAidant { organisation_id: org, email: &email, first_name: "Rose", last_name: "Martin", profession: "", referent: true }).unwrap().id;
    let (_, seed) = admin::enroll_app(&w.t.db, &w.state.sealer, &email).unwrap();
    Referent { id, email, seed }
}

async fn sign_in_referent<S, B>(w: &World, app: &S, r: &Referent) -> Browser
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let code = r.seed.code_at(APP_STEP, DIGITS, w.clock.now());
    sign_in_with(w, app, &r.email, &code).await
}

/// Imports two cards; returns the seed of `C-0001`.
fn stock(w: &World) -> Seed {
    let card = Seed::generate();
    let cards = [
        CardRecord { serial: "C-0001".into(), seed: card.clone(), step: CARD_STEP, digits: DIGITS },
        CardRecord { serial: "C-0002".into(), seed: Seed::generate(), step: CARD_STEP, digits: DIGITS },
    ];
    admin::import_cards(&w.t.db, &w.state.sealer, &cards).unwrap();
    card
}

fn devices(w: &World, aidant: i64) -> Vec<TotpDeviceView> {
    auth::totp_devices(&w.t.db, aidant).unwrap()
}

/// (action, aidant, details) of every journal entry.
fn journal_of(w: &World) -> Vec<(String, Option<i64>, serde_json::Value)> {
    broker_testkit::journal(&w.t.db, |c| journal::page(c, 0, 1000))
        .unwrap()
        .into_iter()
        .map(|r| (r.action, r.aidant, serde_json::from_str(&r.details).unwrap()))
        .collect()
}

/// A 6-digit code that is none of `seed`'s card codes within ±12 steps of `at`.
fn wrong_card_code(seed: &Seed, at: Timestamp) -> String {
    let near: Vec<String> = (-12..=12).map(|d| seed.code_at(CARD_STEP, DIGITS, at.plus_seconds(d * 60))).collect();
    (0..).map(|n: u32| format!("{:06}", (n * 137_713) % 1_000_000)).find(|c| !near.contains(c)).unwrap()
}

fn assert_redirect(p: &Page, to: &str, what: &str) {
    assert_eq!((p.status, p.location.as_deref()), (StatusCode::SEE_OTHER, Some(to)), "{what}: {}", p.body);
}

#[actix_web::test]
async fn a_drifting_card_is_associated_validated_and_signs_in() {
    for t in TestDb::both() {
        let w = world(t);
        let app = app!(w);
        let org = organisation_of(&w);
        let card = stock(&w);
        let r = referent(&w, org);
        let mut b = sign_in_referent(&w, &app, &r).await;
        let base = format!("/referent/aidants/{}/carte", w.aidant_id);

        let page = b.get(&app, &base).await;
        assert_eq!(page.status, StatusCode::OK, "{}: {}", w.t.name(), page.body);
        assert!(page.shows("Cartes à code de Nadia Benali") && page.shows("n'a aucune carte à code"), "{}", w.t.name());
        let done = b.post(&app, &base, &[("csrf", &page.csrf()), ("serie", " C-0001 ")]).await;
        assert_redirect(&done, &format!("{base}?ok=associee"), w.t.name());
        let page = b.get(&app, &format!("{base}?ok=associee")).await;
        assert!(page.shows("La carte est associée") && page.shows("Carte n° C-0001") && page.shows("À valider"), "{}", page.body);
        let d = devices(&w, w.aidant_id);
        let card_device = d.iter().find(|d| d.kind == "totp_card").unwrap();
        assert!(!card_device.confirmed);

        // The card runs 3 minutes ahead: a wrong code first, then the one it shows.
        let now = w.clock.now();
        let valider = format!("{base}/{}/valider", card_device.id);
        let wrong = b.post(&app, &valider, &[("csrf", &page.csrf()), ("code", &wrong_card_code(&card, now))]).await;
        assert_eq!(wrong.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", w.t.name());
        assert!(wrong.shows("Le code ne correspond pas à la carte C-0001") && wrong.shows("fr-alert--error"), "{}", wrong.body);
        let shown = card.code_at(CARD_STEP, DIGITS, now.plus_seconds(180));
        let done = b.post(&app, &valider, &[("csrf", &page.csrf()), ("code", &shown)]).await;
        assert_redirect(&done, &format!("{base}?ok=validee"), w.t.name());
        let page = b.get(&app, &format!("{base}?ok=validee")).await;
        assert!(page.shows("La carte est validée") && page.shows("Validée"), "{}", page.body);
        let validated: Vec<_> = journal_of(&w).into_iter().filter(|e| e.0 == "second_factor_validated").collect();
        assert_eq!(validated.len(), 1);
        assert_eq!((validated[0].1, validated[0].2["drift"].as_i64()), (Some(w.aidant_id), Some(3)));

        // Two minutes later, the aidant signs in with the card, still 3 minutes ahead.
        w.clock.advance_seconds(120);
        let code = card.code_at(CARD_STEP, DIGITS, w.clock.now().plus_seconds(180));
        let mut aidant = sign_in_with(&w, &app, &w.email, &code).await;
        assert_eq!(aidant.get(&app, "/espace").await.status, StatusCode::OK);
    }
}

#[actix_web::test]
async fn taken_and_unknown_cards_are_explained() {
    for t in TestDb::both() {
        let w = world(t);
        let app = app!(w);
        let org = organisation_of(&w);
        stock(&w);
        let r = referent(&w, org);
        let mut b = sign_in_referent(&w, &app, &r).await;
        let base = format!("/referent/aidants/{}/carte", w.aidant_id);
        let page = b.get(&app, &base).await;
        let done = b.post(&app, &base, &[("csrf", &page.csrf()), ("serie", "C-0001")]).await;
        assert_eq!(done.status, StatusCode::SEE_OTHER);

        // The référent's own page: the card is taken by someone else.
        let me = r.id;
        let mine = format!("/referent/aidants/{me}/carte");
        let before = journal_of(&w).len();
        let taken = b.post(&app, &mine, &[("csrf", &page.csrf()), ("serie", "C-0001")]).await;
        assert_eq!(taken.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", w.t.name());
        assert!(taken.shows("La carte C-0001 est déjà associée à un aidant") && taken.shows("dissociez-la d'abord"), "{}", taken.body);
        let again = b.post(&app, &base, &[("csrf", &page.csrf()), ("serie", "C-0001")]).await;
        assert!(again.status == StatusCode::UNPROCESSABLE_ENTITY && again.shows("déjà associée à cet aidant"), "{}", again.body);
        let unknown = b.post(&app, &mine, &[("csrf", &page.csrf()), ("serie", "C-9999")]).await;
        assert_eq!(unknown.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(unknown.shows("Aucune carte ne porte le numéro de série « C-9999 »") && unknown.shows("value=\"C-9999\""), "{}", unknown.body);
        let empty = b.post(&app, &mine, &[("csrf", &page.csrf()), ("serie", "")]).await;
        assert!(empty.status == StatusCode::UNPROCESSABLE_ENTITY && empty.shows("Tapez le numéro de série"), "{}", empty.body);
        assert_eq!(journal_of(&w).len(), before, "{}: refusals change nothing", w.t.name());
        assert!(devices(&w, me).iter().all(|d| d.kind != "totp_card"));

        // No CSRF token: refused.
        let forged = b.post(&app, &mine, &[("serie", "C-0002")]).await;
        assert_eq!(forged.status, StatusCode::FORBIDDEN, "{}", w.t.name());
        assert!(devices(&w, me).iter().all(|d| d.kind != "totp_card"));
    }
}

#[actix_web::test]
async fn another_organisations_aidant_is_not_found_and_aidants_are_refused() {
    for t in TestDb::both() {
        let w = world(t);
        let app = app!(w);
        let org = organisation_of(&w);
        stock(&w);
        let other = admin::create_organisation(&w.t.db, "CCAS de Roubaix", "21590512700019", "", None).unwrap().id;
        let stranger = admin::create_aidant(
            &w.t.db,
            &NewAidant { organisation_id: other, email: "binta@exemple.fr", first_name: "Binta", last_name: "Sow", profession: "", referent: false },
        )
        .unwrap()
        .id;
        let r = referent(&w, org);
        let mut b = sign_in_referent(&w, &app, &r).await;
        let csrf = b.get(&app, "/referent").await.csrf();
        let before = journal_of(&w).len();
        let base = format!("/referent/aidants/{stranger}");
        for path in [format!("{base}/carte"), format!("{base}/application")] {
            let p = b.get(&app, &path).await;
            assert_eq!(p.status, StatusCode::NOT_FOUND, "{}: {path}", w.t.name());
            assert!(p.shows("Page introuvable"));
            assert!(!p.shows("Binta"), "{path}");
        }
        for (path, form) in [
            (format!("{base}/carte"), vec![("csrf", csrf.as_str()), ("serie", "C-0001")]),
            (format!("{base}/carte/1/valider"), vec![("csrf", csrf.as_str()), ("code", "123456")]),
            (format!("{base}/carte/1/dissocier"), vec![("csrf", csrf.as_str()), ("raison", "perdue")]),
            (format!("{base}/application"), vec![("csrf", csrf.as_str())]),
            (format!("{base}/application/1/confirmer"), vec![("csrf", csrf.as_str()), ("code", "123456")]),
            ("/referent/aidants/999999/carte".to_owned(), vec![("csrf", csrf.as_str()), ("serie", "C-0001")]),
            ("/referent/aidants/abc/carte".to_owned(), vec![("csrf", csrf.as_str()), ("serie", "C-0001")]),
        ] {
            let p = b.post(&app, &path, &form).await;
            assert_eq!(p.status, StatusCode::NOT_FOUND, "{}: {path}", w.t.name());
        }
        assert_eq!(journal_of(&w).len(), before, "{}: nothing journaled", w.t.name());
        assert!(devices(&w, stranger).is_empty(), "{}", w.t.name());

        // The world's aidant is not a référent.
        let mut a = sign_in(&w, &app).await;
        let mine = format!("/referent/aidants/{}/carte", w.aidant_id);
        let p = a.get(&app, &mine).await;
        assert_eq!(p.status, StatusCode::FORBIDDEN, "{}", w.t.name());
        assert!(p.shows("Espace réservé aux référents"));
        let csrf = a.get(&app, "/espace").await.csrf();
        let p = a.post(&app, &mine, &[("csrf", &csrf), ("serie", "C-0001")]).await;
        assert_eq!(p.status, StatusCode::FORBIDDEN);
        assert_eq!(a.get(&app, &format!("/referent/aidants/{}/application", w.aidant_id)).await.status, StatusCode::FORBIDDEN);
        assert_eq!(devices(&w, w.aidant_id).len(), 1, "{}: only the world's app", w.t.name());
    }
}

#[actix_web::test]
async fn a_stale_second_factor_is_asked_again() {
    for t in TestDb::both() {
        let w = world(t);
        let app = app!(w);
        let org = organisation_of(&w);
        stock(&w);
        let r = referent(&w, org);
        let mut b = sign_in_referent(&w, &app, &r).await;
        let base = format!("/referent/aidants/{}/carte", w.aidant_id);
        let csrf = b.get(&app, &base).await.csrf();
        w.clock.advance_seconds(16 * 60);
        let expected = format!("/reauthentification?suite=%2Freferent%2Faidants%2F{}%2Fcarte", w.aidant_id);
        assert_redirect(&b.get(&app, &base).await, &expected, w.t.name());
        assert_redirect(&b.post(&app, &base, &[("csrf", &csrf), ("serie", "C-0001")]).await, &expected, w.t.name());
        let app_expected = format!("/reauthentification?suite=%2Freferent%2Faidants%2F{}%2Fapplication", w.aidant_id);
        assert_redirect(&b.post(&app, &format!("/referent/aidants/{}/application", w.aidant_id), &[("csrf", &csrf)]).await, &app_expected, w.t.name());
        assert_eq!(devices(&w, w.aidant_id).len(), 1, "{}: nothing added", w.t.name());

        // After re-authentication the page opens again.
        let suite = base.clone();
        let reauth = b.get(&app, &expected).await;
        let code = r.seed.code_at(APP_STEP, DIGITS, w.clock.now());
        let done = b.post(&app, "/reauthentification", &[("csrf", &reauth.csrf()), ("code", &code), ("suite", &suite)]).await;
        assert_redirect(&done, &suite, w.t.name());
        assert_eq!(b.get(&app, &base).await.status, StatusCode::OK);
    }
}

#[actix_web::test]
async fn an_app_is_started_with_a_qr_code_and_confirmed() {
    for t in TestDb::both() {
        let w = world(t);
        let app = app!(w);
        let org = organisation_of(&w);
        let r = referent(&w, org);
        let mut b = sign_in_referent(&w, &app, &r).await;
        let base = format!("/referent/aidants/{}/application", w.aidant_id);
        let page = b.get(&app, &base).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        assert!(page.shows("Ajouter une application à code") && !page.shows("<svg"), "{}", w.t.name());
        let done = b.post(&app, &base, &[("csrf", &page.csrf())]).await;
        assert_redirect(&done, &format!("{base}?ok=demarree"), w.t.name());
        let page = b.get(&app, &format!("{base}?ok=demarree")).await;
        assert!(page.shows("<svg role=\"img\" aria-label=\"QR code à scanner avec l'application à code\""), "{}", page.body);
        assert!(page.shows("Scannez le QR code"));
        let pending = devices(&w, w.aidant_id).into_iter().find(|d| d.kind == "totp_app" && !d.confirmed).expect("pending app");
        let (_, seed) = broker_store::second_factors::pending_app(&w.t.db, &w.state.sealer, org, w.aidant_id).unwrap().unwrap();
        let at = page.body.find("id=\"cle-secrete\">").unwrap() + "id=\"cle-secrete\">".len();
        let shown: String = page.body[at..page.body[at..].find('<').unwrap() + at].split_whitespace().collect();
        assert_eq!(shown, seed.base32(), "{}: the secret in text", w.t.name());

        let confirmer = format!("{base}/{}/confirmer", pending.id);
        let wrong = b.post(&app, &confirmer, &[("csrf", &page.csrf()), ("code", "12345")]).await;
        assert_eq!(wrong.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(wrong.shows("Le code ne correspond pas") && wrong.shows("<svg"), "{}", wrong.body);
        let code = seed.code_at(APP_STEP, DIGITS, w.clock.now());
        let done = b.post(&app, &confirmer, &[("csrf", &page.csrf()), ("code", &code)]).await;
        assert_redirect(&done, &format!("{base}?ok=confirmee"), w.t.name());
        let page = b.get(&app, &format!("{base}?ok=confirmee")).await;
        assert!(page.shows("L'application est activée") && !page.shows("<svg"), "{}", page.body);
        assert!(devices(&w, w.aidant_id).iter().any(|d| d.id == pending.id && d.confirmed));
        let e = journal_of(&w);
        assert!(e.iter().any(|x| x.0 == "second_factor_added" && x.1 == Some(w.aidant_id) && x.2["kind"] == "totp_app" && x.2["via"] == "web"));
        assert!(e.iter().any(|x| x.0 == "second_factor_validated" && x.1 == Some(w.aidant_id) && x.2["kind"] == "totp_app"));

        // The aidant signs in with the new app.
        w.clock.advance_seconds(30);
        let mut a = sign_in_with(&w, &app, &w.email, &seed.code_at(APP_STEP, DIGITS, w.clock.now())).await;
        assert_eq!(a.get(&app, "/espace").await.status, StatusCode::OK);
    }
}

#[actix_web::test]
async fn a_dissociated_card_is_removed_with_its_reason() {
    for t in TestDb::both() {
        let w = world(t);
        let app = app!(w);
        let org = organisation_of(&w);
        stock(&w);
        let r = referent(&w, org);
        let mut b = sign_in_referent(&w, &app, &r).await;
        let base = format!("/referent/aidants/{}/carte", w.aidant_id);
        let page = b.get(&app, &base).await;
        b.post(&app, &base, &[("csrf", &page.csrf()), ("serie", "C-0002")]).await;
        let device = devices(&w, w.aidant_id).into_iter().find(|d| d.kind == "totp_card").unwrap().id;
        let dissocier = format!("{base}/{device}/dissocier");

        let missing = b.post(&app, &dissocier, &[("csrf", &page.csrf()), ("raison", "autre"), ("precision", "")]).await;
        assert_eq!(missing.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(missing.shows("Précisez la raison"), "{}", missing.body);
        let none = b.post(&app, &dissocier, &[("csrf", &page.csrf())]).await;
        assert!(none.status == StatusCode::UNPROCESSABLE_ENTITY && none.shows("Choisissez la raison"), "{}", none.body);
        assert!(devices(&w, w.aidant_id).iter().any(|d| d.id == device));

        let done = b.post(&app, &dissocier, &[("csrf", &page.csrf()), ("raison", "cassee"), ("precision", "")]).await;
        assert_redirect(&done, &format!("{base}?ok=dissociee"), w.t.name());
        let page = b.get(&app, &format!("{base}?ok=dissociee")).await;
        assert!(page.shows("La carte est dissociée") && !page.shows("Carte n° C-0002"), "{}", page.body);
        assert!(devices(&w, w.aidant_id).iter().all(|d| d.id != device), "{}", w.t.name());
        let removed: Vec<_> = journal_of(&w).into_iter().filter(|e| e.0 == "second_factor_removed").collect();
        assert_eq!(removed.len(), 1, "{}", w.t.name());
        assert_eq!((removed[0].1, removed[0].2["reason"].as_str(), removed[0].2["serial"].as_str()), (Some(w.aidant_id), Some("cassee"), Some("C-0002")));

        // The card can be associated again.
        let again = b.post(&app, &base, &[("csrf", &page.csrf()), ("serie", "C-0002")]).await;
        assert_eq!(again.status, StatusCode::SEE_OTHER, "{}", again.body);
    }
}
