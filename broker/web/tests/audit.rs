//! Reading the journal over HTTP: auditors see everything, référents their organisation
//! only, others nothing; keyset pagination; streamed exports ending with a signed
//! checkpoint that covers them. On SQLite and on PostgreSQL + Redis.

mod common;

use actix_web::http::StatusCode;
use actix_web::{test, web};
use broker_core::checkpoint::{parse_export_line, ExportLine, JournalKey};
use broker_core::journal::{Action, Entry};
use broker_core::totp::Seed;
use broker_store::admin::{self, NewAidant};
use broker_store::{audit, journal};
use broker_testkit::TestDb;
use broker_web::AppState;
use common::{sign_in, sign_in_as, world, Browser, World};
use serde_json::Value;
use std::sync::Arc;

fn with_journal_key(mut w: World) -> (World, Arc<JournalKey>) {
    let key = Arc::new(JournalKey::generate("localhost/journal").unwrap());
    let state = AppState { journal_key: Some(key.clone()), ..(**w.state).clone() };
    w.state = web::Data::new(state);
    (w, key)
}

fn org_of(w: &World) -> i64 {
    w.organisation()
}

fn auditor(w: &World) -> (String, Seed) {
    let email = format!("auditeur-{}@exemple.fr", hex::encode(rand::random::<[u8; 3]>()));
    audit::create_auditor(&w.t.db, &email, "Paul", "Contrôle").unwrap();
    let (_, seed) = admin::enroll_app(&w.t.db, &w.state.sealer, &email).unwrap();
    (email, seed)
}

/// `n` entries in `org` (or none), one transaction each batch of 50.
fn entries(w: &World, org: Option<i64>, n: usize, action: Action) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(50) {
        w.t.db
            .write(|c| {
                let list: Vec<Entry> = chunk.iter().map(|i| Entry::new(action).in_organisation(org).detail("i", *i as i64)).collect();
                journal::append(c, &list)
            })
            .unwrap();
    }
}

fn json(page: &common::Page) -> Value {
    serde_json::from_str(&page.body).unwrap_or_else(|e| panic!("{e}: {}", page.body))
}

#[actix_web::test]
async fn an_auditor_pages_through_everything_with_filters() {
    for t in TestDb::both() {
        let w = world(t);
        let app = app!(w);
        let org = org_of(&w);
        let other = admin::create_organisation(&w.t.db, "CCAS de Lille", "21590350100017", "", None).unwrap().id;
        entries(&w, Some(org), 70, Action::SecondFactorValidated);
        entries(&w, Some(other), 60, Action::SecondFactorValidated);
        let (email, seed) = auditor(&w);
        let mut b = sign_in_as(&w, &app, &email, &seed).await;
        assert!(b.get(&app, "/espace").await.shows("Journal"));

        // Keyset pagination: every matching entry once, in order.
        let mut seen = Vec::new();
        let mut url = "/audit/api?action=second_factor_validated".to_owned();
        loop {
            let p = b.get(&app, &url).await;
            assert_eq!(p.status, StatusCode::OK, "{}", p.body);
            let v = json(&p);
            let list = v["entries"].as_array().unwrap();
            assert!(list.len() <= 50);
            seen.extend(list.iter().map(|e| (e["seq"].as_i64().unwrap(), e["organisation"].as_i64())));
            match v["next_after"].as_i64() {
                Some(n) => url = format!("/audit/api?action=second_factor_validated&apres={n}"),
                None => break,
            }
        }
        assert_eq!(seen.len(), 130, "{}", w.t.name());
        assert!(seen.windows(2).all(|p| p[0].0 < p[1].0), "increasing sequence numbers");
        assert_eq!(seen.iter().filter(|s| s.1 == Some(other)).count(), 60);

        // Filters: organisation, action, period.
        let v = json(&b.get(&app, &format!("/audit/api?structure={other}&action=second_factor_validated")).await);
        assert_eq!(v["entries"].as_array().unwrap().len(), 50);
        assert!(v["entries"].as_array().unwrap().iter().all(|e| e["organisation"].as_i64() == Some(other)));
        let v = json(&b.get(&app, "/audit/api?du=2000-01-01&au=2000-01-31").await);
        assert!(v["entries"].as_array().unwrap().is_empty());
        let bad = b.get(&app, "/audit/api?action=inexistante").await;
        assert_eq!(bad.status, StatusCode::BAD_REQUEST);
        assert!(json(&bad)["error"].as_str().unwrap().contains("action inconnue"));

        // The page: a table, a link to the next entries.
        let page = b.get(&app, "/audit?action=second_factor_validated").await;
        assert_eq!(page.status, StatusCode::OK);
        assert!(page.shows("Second facteur validé") && page.shows("Entrées suivantes"));
        assert!(page.body.contains("apres="), "{}", page.body);
    }
}

#[actix_web::test]
async fn a_referent_reads_their_organisation_only_and_aidants_nothing() {
    for t in TestDb::both() {
        let w = world(t);
        let app = app!(w);
        let org = org_of(&w);
        let other = admin::create_organisation(&w.t.db, "CCAS de Lille", "21590350100017", "", None).unwrap().id;
        entries(&w, Some(other), 5, Action::SecondFactorValidated);
        let email = format!("referent-{}@exemple.fr", hex::encode(rand::random::<[u8; 3]>()));
        admin::create_aidant(&w.t.db, &NewAidant { organisation_id: org, email: &email, first_name: "Claire", last_name: "Fontaine", profession: "", referent: true }).unwrap();
        let (_, seed) = admin::enroll_app(&w.t.db, &w.state.sealer, &email).unwrap();

        assert_eq!(Browser::default().get(&app, "/audit").await.status, StatusCode::SEE_OTHER);
        let mut aidant = sign_in(&w, &app).await;
        assert_eq!(aidant.get(&app, "/audit").await.status, StatusCode::FORBIDDEN);
        assert_eq!(aidant.get(&app, "/audit/api").await.status, StatusCode::FORBIDDEN);
        assert_eq!(aidant.get(&app, "/audit/export.csv").await.status, StatusCode::FORBIDDEN);

        let mut b = sign_in_as(&w, &app, &email, &seed).await;
        // Asking for the other organisation does not widen the scope.
        for url in ["/audit/api", &format!("/audit/api?structure={other}")] {
            let v = json(&b.get(&app, url).await);
            let list = v["entries"].as_array().unwrap();
            assert!(!list.is_empty(), "the organisation's own entries (creation, sign-ins)");
            assert!(list.iter().all(|e| e["organisation"].as_i64() == Some(org)), "{url}: {v}");
        }
        let page = b.get(&app, "/audit").await;
        assert!(page.shows("qui concernent votre structure") && !page.shows("Numéro de structure"));
    }
}

#[actix_web::test]
async fn exports_are_streamed_and_end_with_a_signed_checkpoint_that_covers_them() {
    for t in TestDb::both() {
        let (w, key) = with_journal_key(world(t));
        let app = app!(w);
        let org = org_of(&w);
        entries(&w, Some(org), 120, Action::SecondFactorValidated);
        let (email, seed) = auditor(&w);
        let mut b = sign_in_as(&w, &app, &email, &seed).await;

        let p = b.get(&app, "/audit/export.jsonl").await;
        assert_eq!(p.status, StatusCode::OK, "{}", p.body);
        let lines: Vec<&str> = p.body.lines().collect();
        let last = parse_export_line(lines.last().unwrap()).unwrap();
        let ExportLine::Checkpoint(note) = last else { panic!("the export ends with the checkpoint: {}", lines.last().unwrap()) };
        let cp = key.verifier().verify(&note).expect("signed by the journal key");
        let records: Vec<_> = lines[..lines.len() - 1]
            .iter()
            .map(|l| match parse_export_line(l).unwrap() {
                ExportLine::Entry { record, canonical } => {
                    assert!(canonical, "{l}");
                    record
                }
                ExportLine::Checkpoint(_) => panic!("one checkpoint, at the end"),
            })
            .collect();
        assert_eq!(records.len() as u64, cp.size, "the checkpoint covers exactly the entries exported");
        assert!(records.iter().enumerate().all(|(i, r)| r.seq == i as i64 + 1));
        let leaves: Vec<[u8; 32]> = records.iter().map(|r| broker_core::journal::parse_hash(&r.leaf_hash).unwrap()).collect();
        assert_eq!(broker_core::merkle::root(&leaves), cp.root, "the root of the exported leaves is the checkpoint's");
        let exported = broker_testkit::journal(&w.t.db, |c| journal::page(c, 0, 10_000)).unwrap();
        assert!(exported.iter().any(|e| e.action == "journal_exported"), "the export is journaled");

        // CSV, filtered: a header, the matching rows, the checkpoint last.
        let p = b.get(&app, "/audit/export.csv?action=second_factor_validated").await;
        assert_eq!(p.status, StatusCode::OK);
        let lines: Vec<&str> = p.body.lines().collect();
        assert!(lines[0].starts_with("seq,at,action,"));
        assert_eq!(lines[1..].iter().filter(|l| l.contains(",second_factor_validated,")).count(), 120);
        // The checkpoint note spans lines: one quoted CSV field (RFC 4180).
        let tail = &p.body[p.body.rfind("\ncheckpoint,\"").expect("the checkpoint row") + 1..];
        let note = tail.strip_prefix("checkpoint,\"").and_then(|t| t.strip_suffix("\"\n")).expect("a quoted field, last").replace("\"\"", "\"");
        let cp2 = key.verifier().verify(&note).expect("signed by the journal key");
        assert!(cp2.size > cp.size, "a fresh checkpoint: the first export was journaled since");
    }
}
