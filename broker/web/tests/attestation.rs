//! The printable attestation and the public verification page, through the real actix
//! application on both storage backends.

mod common;

use actix_web::http::StatusCode;
use actix_web::test;
use broker_core::mandat::Duree;
use broker_core::time::Clock;
use broker_core::Demarche;
use broker_store::admin::{self, NewAidant};
use broker_store::mandats::{self, NewMandat};
use broker_store::{attestations, journal};
use broker_testkit::TestDb;
use broker_web::attestation::{qr_svg, verification_url};
use common::{sign_in, world, Browser, World, ISSUER};

fn organisation_of(w: &World) -> i64 {
    w.organisation()
}

fn usager(w: &World, sub: &str) -> i64 {
    w.usager(sub, "Angela Claire Louise", "Dubois")
}

/// A mandat of `org` created by `aidant`, with its attestation recorded in the same
/// transaction as the creation journey does.
fn mandat(w: &World, org: i64, aidant: i64, usager: i64, demarches: &[Demarche]) -> (i64, String) {
    let m = mandats::create_mandat(
        &w.t.db,
        &NewMandat { organisation_id: org, usager_id: usager, aidant_id: aidant, demarches: demarches.to_vec(), duree: Duree::UnMois },
        w.clock.now(),
    )
    .unwrap()
    .mandat_id;
    let fp = w
        .t
        .db
        .write(|c| {
            let content = attestations::content_for_mandat(c, m)?;
            attestations::record(c, m, "mandat", &content, aidant, org, usager, w.clock.now())
        })
        .unwrap();
    (m, fp)
}

fn fingerprint_on(page: &common::Page) -> String {
    let at = page.body.find("id=\"empreinte\">").expect("fingerprint on the page") + "id=\"empreinte\">".len();
    page.body[at..at + 64].to_owned()
}

fn attestation_entries(w: &World) -> usize {
    broker_testkit::journal(&w.t.db, |c| journal::page(c, 0, 1000)).unwrap().iter().filter(|r| r.action == "attestation_created").count()
}

#[actix_web::test]
async fn the_attestation_shows_everything_and_reprints_with_the_same_fingerprint() {
    for t in TestDb::both() {
        let w = world(t);
        let app = app!(w);
        let org = organisation_of(&w);
        let u = usager(&w, "sub-1");
        let (m, fp) = mandat(&w, org, w.aidant_id, u, &[Demarche::Argent, Demarche::Logement]);
        let mut b = sign_in(&w, &app).await;

        let page = b.get(&app, &format!("/mandats/{m}/attestation")).await;
        assert_eq!(page.status, StatusCode::OK, "{}: {}", w.t.name(), page.body);
        assert_eq!(fingerprint_on(&page), fp);
        let created = w.clock.now();
        for text in [
            format!("Attestation de mandat n° {m}"),
            "Angela Claire Louise Dubois".to_owned(),
            "24/08/1962".to_owned(),
            "France Services Tourcoing".to_owned(),
            "81234567800013".to_owned(),
            "Nadia Benali".to_owned(),
            Demarche::Argent.title().to_owned(),
            Demarche::Argent.description().to_owned(),
            Demarche::Logement.title().to_owned(),
            Demarche::Logement.description().to_owned(),
            Duree::UnMois.label().to_owned(),
            format!("Mandat conclu le {}", created.french_date()),
            format!("Il prend fin le {}", created.plus_days(31).french_date()),
            "articles 1984 et suivants du Code civil".to_owned(),
            "révoquer ce mandat à tout moment".to_owned(),
            "droit d'accès, de rectification".to_owned(),
            "Ne réaliser que les démarches listées".to_owned(),
            "strictement nécessaires".to_owned(),
            "confidentielles".to_owned(),
            format!("le {}.", created.french_date()),
            "Signature du mandant".to_owned(),
            "Signature de l'aidant ou de l'aidante".to_owned(),
            format!("Version du texte légal : {}", broker_core::attestation::LEGAL_TEXT_VERSION),
            verification_url(ISSUER, &fp),
        ] {
            assert!(page.shows(&text), "{}: missing {text:?}", w.t.name());
        }
        assert!(!page.shows(Demarche::Justice.title()));
        // The QR code is inline SVG encoding the verification address, with a text alternative.
        let qr = qr_svg(&verification_url(ISSUER, &fp), "QR code de vérification de l'attestation").unwrap();
        assert!(page.body.contains(&qr), "{}", w.t.name());
        assert!(page.body.contains("role=\"img\" aria-label=\"QR code de vérification de l&#39;attestation\""));
        assert!(page.body.contains("href=\"/static/app/attestation.css\""));
        assert!(page.body.contains("src=\"/static/app/attestation.js\"") && page.body.contains("id=\"imprimer\" hidden"));

        // Later, after revoking one démarche, the printed attestation is the same.
        w.clock.advance_seconds(3_600);
        let facts = w.t.db.read(|c| mandats::facts(c, org, u)).unwrap();
        let aut = facts.iter().find(|f| f.id == m).unwrap().autorisations[0].id;
        mandats::revoke_autorisation(&w.t.db, aut, w.aidant_id, w.clock.now()).unwrap();
        let again = b.get(&app, &format!("/mandats/{m}/attestation")).await;
        assert_eq!(again.status, StatusCode::OK);
        assert_eq!(fingerprint_on(&again), fp, "{}", w.t.name());
        assert!(again.shows(Demarche::Argent.description()));
        assert_eq!(attestation_entries(&w), 1, "re-printing records nothing new");
    }
}

#[actix_web::test]
async fn a_mandat_without_an_attestation_gets_one_recorded_on_first_print() {
    for t in TestDb::both() {
        let w = world(t);
        let app = app!(w);
        let org = organisation_of(&w);
        let u = usager(&w, "sub-2");
        let m = mandats::create_mandat(
            &w.t.db,
            &NewMandat { organisation_id: org, usager_id: u, aidant_id: w.aidant_id, demarches: vec![Demarche::Social], duree: Duree::UnAn },
            w.clock.now(),
        )
        .unwrap()
        .mandat_id;
        let mut b = sign_in(&w, &app).await;
        let first = b.get(&app, &format!("/mandats/{m}/attestation")).await;
        assert_eq!(first.status, StatusCode::OK, "{}", w.t.name());
        let fp = fingerprint_on(&first);
        assert_eq!(fp, w.t.db.read(|c| attestations::content_for_mandat(c, m)).unwrap().fingerprint());
        let second = b.get(&app, &format!("/mandats/{m}/attestation")).await;
        assert_eq!(fingerprint_on(&second), fp);
        assert_eq!(attestation_entries(&w), 1, "{}", w.t.name());
        let entry = broker_testkit::journal(&w.t.db, |c| journal::page(c, 0, 1000)).unwrap().into_iter().find(|r| r.action == "attestation_created").unwrap();
        assert_eq!((entry.attestation_hash.as_deref(), entry.mandat, entry.aidant), (Some(fp.as_str()), Some(m), Some(w.aidant_id)));
    }
}

#[actix_web::test]
async fn the_verification_page_is_public_and_tells_known_unknown_and_modified() {
    for t in TestDb::both() {
        let w = world(t);
        let app = app!(w);
        let org = organisation_of(&w);
        let u = usager(&w, "sub-3");
        let (m, fp) = mandat(&w, org, w.aidant_id, u, &[Demarche::Famille]);
        let mut anonymous = Browser::default();

        let known = anonymous.get(&app, &format!("/attestations/verifier/{fp}")).await;
        assert_eq!(known.status, StatusCode::OK, "{}: {}", w.t.name(), known.body);
        assert!(known.shows("Attestation connue"));
        assert!(known.shows(&format!("n° {m}")));
        assert!(known.shows("actif"));
        // Nothing about the usager or the structure.
        assert!(!known.shows("Dubois") && !known.shows("Angela") && !known.shows("Tourcoing"), "{}", known.body);

        let upper = anonymous.get(&app, &format!("/attestations/verifier/{}", fp.to_uppercase())).await;
        assert!(upper.shows("Attestation connue"));

        let unknown = anonymous.get(&app, &format!("/attestations/verifier/{}", "ab".repeat(32))).await;
        assert_eq!(unknown.status, StatusCode::NOT_FOUND);
        assert!(unknown.shows("Attestation inconnue") && !unknown.shows("Attestation connue"));

        let malformed = anonymous.get(&app, "/attestations/verifier/pas-une-empreinte").await;
        assert_eq!(malformed.status, StatusCode::NOT_FOUND);
        assert!(malformed.shows("Attestation inconnue"));

        // A paper whose content was changed (one more démarche) has another fingerprint.
        let mut modified = w.t.db.read(|c| attestations::content_for_mandat(c, m)).unwrap();
        modified.demarches.push(Demarche::Argent);
        let changed = anonymous.get(&app, &format!("/attestations/verifier/{}", modified.fingerprint())).await;
        assert_eq!(changed.status, StatusCode::NOT_FOUND, "{}", w.t.name());
        assert!(changed.shows("Attestation inconnue"));
        let mut one_char = fp.clone().into_bytes();
        one_char[10] = if one_char[10] == b'0' { b'1' } else { b'0' };
        let flipped = anonymous.get(&app, &format!("/attestations/verifier/{}", String::from_utf8(one_char).unwrap())).await;
        assert!(flipped.shows("Attestation inconnue"));

        // The status follows the mandat: expired after its end.
        w.clock.advance_seconds(86_400 * 32);
        let later = anonymous.get(&app, &format!("/attestations/verifier/{fp}")).await;
        assert!(later.shows("Attestation connue") && later.shows("expiré"), "{}", w.t.name());
    }
}

#[actix_web::test]
async fn a_revoked_mandat_shows_as_revoked() {
    for t in TestDb::both() {
        let w = world(t);
        let app = app!(w);
        let org = organisation_of(&w);
        let u = usager(&w, "sub-4");
        let (m, fp) = mandat(&w, org, w.aidant_id, u, &[Demarche::Travail]);
        let aut = w.t.db.read(|c| mandats::facts(c, org, u)).unwrap().into_iter().find(|f| f.id == m).unwrap().autorisations[0].id;
        w.clock.advance_seconds(60);
        mandats::revoke_autorisation(&w.t.db, aut, w.aidant_id, w.clock.now()).unwrap();
        let page = Browser::default().get(&app, &format!("/attestations/verifier/{fp}")).await;
        assert!(page.shows("Attestation connue") && page.shows("révoqué"), "{}: {}", w.t.name(), page.body);
    }
}

#[actix_web::test]
async fn only_aidants_of_the_mandat_organisation_see_the_attestation() {
    for t in TestDb::both() {
        let w = world(t);
        let app = app!(w);
        let other_org = admin::create_organisation(&w.t.db, "CCAS de Lille", "21590350100017", "Place Augustin Laurent, 59000 Lille", None).unwrap().id;
        let other_aidant = admin::create_aidant(
            &w.t.db,
            &NewAidant { organisation_id: other_org, email: "autre@exemple.fr", first_name: "Paul", last_name: "Martin", profession: "", referent: false },
        )
        .unwrap()
        .id;
        let u = usager(&w, "sub-5");
        let (theirs, _) = mandat(&w, other_org, other_aidant, u, &[Demarche::Papiers]);

        // Not signed in: to the sign-in page.
        let anonymous = Browser::default().get(&app, &format!("/mandats/{theirs}/attestation")).await;
        assert_eq!(anonymous.status, StatusCode::SEE_OTHER);
        assert!(anonymous.location.unwrap().starts_with("/connexion?suite="));

        let mut b = sign_in(&w, &app).await;
        let before = attestation_entries(&w);
        let page = b.get(&app, &format!("/mandats/{theirs}/attestation")).await;
        assert_eq!(page.status, StatusCode::NOT_FOUND, "{}", w.t.name());
        assert!(!page.shows("CCAS de Lille") && !page.shows("Dubois"));
        for missing in ["/mandats/999999/attestation", "/mandats/abc/attestation"] {
            assert_eq!(b.get(&app, missing).await.status, StatusCode::NOT_FOUND, "{missing}");
        }
        assert_eq!(attestation_entries(&w), before, "nothing recorded for a refused page");
    }
}

#[actix_web::test]
async fn the_print_stylesheet_and_script_are_served() {
    let w = world(TestDb::sqlite());
    let app = app!(w);
    let res = test::call_service(&app, test::TestRequest::get().uri("/static/app/attestation.css").to_request()).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers().get("content-type").unwrap(), "text/css; charset=utf-8");
    let body = String::from_utf8(test::read_body(res).await.to_vec()).unwrap();
    assert!(body.contains("@media print") && body.contains(".fr-header"));
    let res = test::call_service(&app, test::TestRequest::get().uri("/static/app/attestation.js").to_request()).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers().get("content-type").unwrap(), "text/javascript; charset=utf-8");
    let body = String::from_utf8(test::read_body(res).await.to_vec()).unwrap();
    assert!(body.contains("window.print()"));
}

/// The hex strings inside `<code>` elements after `marker` up to `end`.
fn codes_between(body: &str, marker: &str, end: &str) -> Vec<String> {
    let from = body.find(marker).unwrap_or_else(|| panic!("{marker} in {body}"));
    let to = from + body[from..].find(end).unwrap();
    body[from..to].split("<code>").skip(1).map(|s| s[..s.find("</code>").unwrap()].to_owned()).collect()
}

#[actix_web::test]
async fn the_verification_page_proves_the_entry_against_the_signed_checkpoint() {
    for t in TestDb::both() {
        let w = world(t);
        let app = app!(w);
        let org = organisation_of(&w);
        let u = usager(&w, "sub-proof");
        let (_, fp) = mandat(&w, org, w.aidant_id, u, &[Demarche::Famille]);
        let mut anonymous = Browser::default();

        // Numbered, not yet covered by a checkpoint.
        let before = anonymous.get(&app, &format!("/attestations/verifier/{fp}")).await;
        assert!(before.shows("Attestation connue") && before.shows("prochain point de contrôle"), "{}", before.body);

        let key = broker_core::checkpoint::JournalKey::generate("localhost/journal").unwrap();
        broker_store::checkpoints::create(&w.t.db, &key, w.clock.now(), false).unwrap();
        let page = anonymous.get(&app, &format!("/attestations/verifier/{fp}")).await;
        assert!(page.shows("Preuve d'inscription au journal") && page.shows("Point de contrôle signé"), "{}", page.body);
        // Checked as an outsider would: the note's signature, then leaf + proof → root.
        let start = page.body.find("<pre id=\"point-de-controle\"").unwrap();
        let note_html = &page.body[page.body[start..].find('>').unwrap() + start + 1..start + page.body[start..].find("</pre>").unwrap()];
        let note = note_html.replace("&#43;", "+").replace("&#x2b;", "+").replace("&#x2f;", "/").replace("&#47;", "/").replace("&#61;", "=").replace("&#x3d;", "=");
        let cp = key.verifier().verify(&note).unwrap_or_else(|e| panic!("{e:?}: {note}"));
        let hashes = codes_between(&page.body, "Hachage de l'entrée", "Point de contrôle signé");
        let parse = |h: &str| broker_core::journal::parse_hash(h).unwrap();
        let seq: u64 = page.body.split("entrée n° ").nth(1).unwrap().split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap();
        let (leaf, root, proof) = (parse(&hashes[0]), parse(&hashes[1]), hashes[2..].iter().map(|h| parse(h)).collect::<Vec<_>>());
        assert_eq!(root, cp.root);
        broker_core::merkle::verify_inclusion(&leaf, seq - 1, cp.size, &proof, &cp.root).expect("a valid proof");
        // A forged leaf does not verify.
        let mut forged = leaf;
        forged[0] ^= 1;
        assert!(broker_core::merkle::verify_inclusion(&forged, seq - 1, cp.size, &proof, &cp.root).is_err());
    }
}
