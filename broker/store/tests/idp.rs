//! What the identity provider reads and writes, on both backends: the usagers an aidant
//! may pick, and the disclosure of an identity at /userinfo with its journal entry.

use broker_core::client::{IdTokenAlg, NewClient, UserinfoFormat};
use broker_core::secret::Secret;
use broker_store::seal::Sealer;
use broker_core::identite::{usager_key, IdentitePivot, FRANCE};
use broker_core::journal::Action;
use broker_core::mandat::Duree;
use broker_core::{Demarche, Timestamp};
use broker_store::admin::{self, NewAidant};
use broker_store::idp::{self, Disclosure};
use broker_store::mandats::{self, NewMandat};
use broker_core::capability::{AidantId, InOrganisation, UsagerId};
use broker_core::oidc::claims::Scope;
use broker_core::oidc::grant::Grant;
use broker_store::journal;
use broker_testkit::TestDb;
use diesel::prelude::*;
use std::time::Duration;
use Demarche::*;

const T0: Timestamp = Timestamp::from_micros(1_800_000_000_000_000);

struct World {
    t: TestDb,
    org: i64,
    other_org: i64,
    aidant: i64,
    clients: idp::ClientCache,
}

fn world(t: TestDb) -> World {
    let org = admin::create_organisation(&t.db, "CCAS de Roubaix", "81234567800013", "", None).unwrap().id;
    let other_org = admin::create_organisation(&t.db, "France Services Lens", "35600000000048", "", None).unwrap().id;
    let aidant = admin::create_aidant(&t.db, &NewAidant { organisation_id: org, email: "a@exemple.fr", first_name: "A", last_name: "B", profession: "", referent: false })
        .unwrap()
        .id;
    let client = NewClient {
        client_id: "fc".into(),
        secret: Secret::generate(),
        name: "FranceConnect".into(),
        redirect_uris: vec!["https://fc.exemple/api/v2/oidc-callback".into()],
        post_logout_redirect_uris: vec![],
        id_token_alg: IdTokenAlg::Es256,
        userinfo: UserinfoFormat::Json,
        subject_type: broker_core::client::SubjectType::Public,
        sector_identifier: None,
        act_claim: false,
    };
    admin::create_client(&t.db, &Sealer::new(&[7; 32]), &client).unwrap();
    World { t, org, other_org, aidant, clients: idp::ClientCache::new(Duration::from_secs(10)) }
}

fn usager(w: &World, sub: &str, given: &str, family: &str) -> i64 {
    let identity = IdentitePivot {
        given_name: given.into(),
        family_name: family.into(),
        preferred_username: None,
        birthdate: "1950-00-00".into(),
        gender: "female".into(),
        birthplace: "59512".into(),
        birthcountry: FRANCE.into(),
        email: format!("{sub}@exemple.fr"),
    }
    .validate()
    .unwrap();
    w.t.db.write(|c| mandats::upsert_usager(c, &usager_key(&[3; 32], sub), &identity, T0)).unwrap()
}

/// The world's aidant acting in their organisation.
fn by(w: &World) -> InOrganisation {
    idp::in_organisation(&w.t.db, AidantId(w.aidant)).unwrap().expect("an aidant with a structure")
}

/// Another aidant, of the other organisation.
fn by_other(w: &World) -> InOrganisation {
    let a = admin::create_aidant(
        &w.t.db,
        &NewAidant { organisation_id: w.other_org, email: "o@exemple.fr", first_name: "O", last_name: "P", profession: "", referent: false },
    )
    .unwrap();
    idp::in_organisation(&w.t.db, AidantId(a.id)).unwrap().unwrap()
}

fn mandat(w: &World, org: i64, usager: i64, demarches: &[Demarche], at: Timestamp) -> mandats::CreatedMandat {
    let n = NewMandat { organisation_id: org, usager_id: usager, aidant_id: w.aidant, demarches: demarches.to_vec(), duree: Duree::UnMois };
    mandats::create_mandat(&w.t.db, &n, at).unwrap()
}

#[test]
fn candidates_are_the_organisations_active_autorisations_most_recent_first() {
    for t in TestDb::both() {
        let w = world(t);
        let helene = usager(&w, "s1", "Hélène", "Dupont");
        let jean = usager(&w, "s2", "Jean Pierre", "Martin");
        let elsewhere = usager(&w, "s3", "Paul", "Durand");
        let revoked = usager(&w, "s4", "Anne", "Leroy");
        mandat(&w, w.org, helene, &[Argent, Social], T0);
        mandat(&w, w.org, jean, &[Famille], T0.plus_seconds(60));
        mandat(&w, w.other_org, elsewhere, &[Argent], T0);
        let m = mandat(&w, w.org, revoked, &[Argent], T0);
        mandats::revoke_autorisation(&w.t.db, m.autorisations[0].0, w.aidant, T0.plus_seconds(1)).unwrap();

        let now = T0.plus_seconds(120);
        let all = idp::candidates(&w.t.db, &by(&w), now, None).unwrap();
        assert_eq!(all.iter().map(|c| c.usager_id).collect::<Vec<_>>(), vec![jean, helene], "{}", w.t.name());
        assert_eq!(all[1].autorisations.iter().map(|a| a.demarche).collect::<Vec<_>>(), vec![Social, Argent], "canonical order");
        assert_eq!(all[1].birthdate, "1950-00-00");

        // Restricted to the requested démarches.
        let argent = idp::candidates(&w.t.db, &by(&w).narrowed(&[Argent]), now, None).unwrap();
        assert_eq!(argent.iter().map(|c| c.usager_id).collect::<Vec<_>>(), vec![helene]);
        assert_eq!(argent[0].autorisations.len(), 1);

        // Search: word starts, case and accents ignored.
        let found = idp::candidates(&w.t.db, &by(&w), now, Some("helene")).unwrap();
        assert_eq!(found.iter().map(|c| c.usager_id).collect::<Vec<_>>(), vec![helene]);
        assert!(idp::candidates(&w.t.db, &by(&w), now, Some("pont")).unwrap().is_empty());

        // After expiry (31 days), nobody.
        assert!(idp::candidates(&w.t.db, &by(&w), T0.plus_days(32), None).unwrap().is_empty());
        assert!(idp::usager_autorisations(&w.t.db, &by(&w), UsagerId(helene), T0.plus_days(31)).unwrap().is_empty());
        assert_eq!(idp::usager_autorisations(&w.t.db, &by(&w), UsagerId(helene), now).unwrap().len(), 2);
        assert!(idp::usager_autorisations(&w.t.db, &by_other(&w), UsagerId(helene), now).unwrap().is_empty());
        let one = idp::candidate(&w.t.db, &by(&w), UsagerId(helene), now).unwrap().expect("helene");
        assert_eq!((one.given_name.as_str(), one.birthdate.as_str(), one.autorisations.len()), ("Hélène", "1950-00-00", 2));
        assert!(idp::candidate(&w.t.db, &by(&w), UsagerId(elsewhere), now).unwrap().is_none());
    }
}

/// A grant for the autorisation `i` of `m`, with its capability checked at T0.
fn grant_for(w: &World, usager: i64, m: &mandats::CreatedMandat, i: usize) -> Grant {
    let by = by(w);
    let chosen = idp::usager_autorisations(&w.t.db, &by, UsagerId(usager), T0)
        .unwrap()
        .into_iter()
        .find(|a| a.autorisation_id == m.autorisations[i].0)
        .expect("active autorisation");
    Grant {
        client_id: "fc".into(),
        redirect_uri: "https://fc.exemple/api/v2/oidc-callback".into(),
        nonce: "n".into(),
        code_challenge: None,
        scopes: vec![Scope::OpenId],
        acting: idp::acting_for(&w.t.db, &by, &chosen, T0).unwrap().expect("acting for the usager"),
        usager_sub: "sub".into(),
        rep_scope: None,
        auth_time: T0,
        amr: vec![],
    }
}

fn grant(w: &World, usager: i64, m: &mandats::CreatedMandat) -> Grant {
    grant_for(w, usager, m, 0)
}

fn used_entries(t: &TestDb) -> Vec<broker_core::journal::Record> {
    broker_testkit::journal(&t.db, |c| journal::page(c, 0, 1000))
        .unwrap()
        .into_iter()
        .filter(|r| r.action == Action::AutorisationUsed.key())
        .collect()
}

#[test]
fn a_token_discloses_the_identity_once_and_journals_it_in_the_same_transaction() {
    for t in TestDb::both() {
        let w = world(t);
        let u = usager(&w, "s1", "Hélène", "Dupont");
        let m = mandat(&w, w.org, u, &[Argent], T0);
        let g = grant(&w, u, &m);
        match idp::disclose(&w.t.db, &w.clients, "hash-1", &g, T0.plus_seconds(5)).unwrap() {
            Disclosure::Identity(found) => {
                let (i, client) = *found;
                assert_eq!((i.given_name.as_str(), i.email.as_str(), client.client_id.as_str()), ("Hélène", "s1@exemple.fr", "fc"));
            }
            _ => panic!("{}: identity expected", w.t.name()),
        }
        assert!(matches!(idp::disclose(&w.t.db, &w.clients, "hash-1", &g, T0.plus_seconds(6)).unwrap(), Disclosure::AlreadyUsed));
        let used = used_entries(&w.t);
        assert_eq!(used.len(), 1, "{}", w.t.name());
        assert_eq!(used[0].autorisation, Some(m.autorisations[0].0));
        assert_eq!(used[0].aidant, Some(w.aidant));
        assert_eq!(used[0].client.as_deref(), Some("fc"));
        assert_eq!(used[0].demarche.as_deref(), Some("argent"));
    }
}

#[test]
fn a_revoked_or_expired_autorisation_discloses_nothing_and_writes_nothing() {
    for t in TestDb::both() {
        let w = world(t);
        let u = usager(&w, "s1", "Hélène", "Dupont");
        let m = mandat(&w, w.org, u, &[Argent, Social], T0);
        let g = grant(&w, u, &m);
        // Expired: the mandat lasts 31 days, to the microsecond.
        assert!(matches!(idp::disclose(&w.t.db, &w.clients, "h-exp", &g, T0.plus_days(31)).unwrap(), Disclosure::NotActive));
        mandats::revoke_autorisation(&w.t.db, g.acting.autorisation().get(), w.aidant, T0.plus_seconds(10)).unwrap();
        assert!(matches!(idp::disclose(&w.t.db, &w.clients, "h-rev", &g, T0.plus_seconds(11)).unwrap(), Disclosure::NotActive));
        // A grant that names another organisation (altered in the cache) is not honoured.
        let mut altered = serde_json::to_value(grant_for(&w, u, &m, 1)).unwrap();
        altered["acting"]["organisation"] = w.other_org.into();
        let other: Grant = serde_json::from_value(altered).unwrap();
        assert!(matches!(idp::disclose(&w.t.db, &w.clients, "h-org", &other, T0.plus_seconds(11)).unwrap(), Disclosure::NotActive));
        // A grant for a client deactivated since: nothing either.
        let mut gone = grant_for(&w, u, &m, 1);
        gone.client_id = "ancien-client".into();
        assert!(matches!(idp::disclose(&w.t.db, &w.clients, "h-client", &gone, T0.plus_seconds(11)).unwrap(), Disclosure::ClientInactive));
        assert!(used_entries(&w.t).is_empty(), "{}", w.t.name());
    }
}

#[test]
fn of_eight_concurrent_disclosures_with_one_token_exactly_one_wins() {
    for t in [TestDb::sqlite(), TestDb::postgres_with_pool(8)] {
        let w = world(t);
        let u = usager(&w, "s1", "Hélène", "Dupont");
        let m = mandat(&w, w.org, u, &[Argent], T0);
        let g = grant(&w, u, &m);
        let barrier = std::sync::Barrier::new(8);
        let wins = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| {
                        barrier.wait();
                        matches!(idp::disclose(&w.t.db, &w.clients, "race", &g, T0.plus_seconds(1)).unwrap(), Disclosure::Identity(_))
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).filter(|&won| won).count()
        });
        assert_eq!(wins, 1, "{}", w.t.name());
        assert_eq!(used_entries(&w.t).len(), 1);
    }
}

fn set_client_active(t: &TestDb, active: bool) {
    use broker_store::schema::oidc_clients;
    t.db.write(|c| Ok(diesel::update(oidc_clients::table.filter(oidc_clients::client_id.eq("fc"))).set(oidc_clients::active.eq(active)).execute(c)?)).unwrap();
}

#[test]
fn the_client_copy_is_served_within_its_lifetime_and_read_again_after_it() {
    for t in TestDb::both() {
        let w = world(t);
        let short = idp::ClientCache::new(Duration::from_secs(2));
        let every_time = idp::ClientCache::new(Duration::ZERO);
        assert_eq!(short.get(&w.t.db, "fc").unwrap().unwrap().name, "FranceConnect");
        assert!(every_time.get(&w.t.db, "fc").unwrap().is_some());
        assert!(short.get(&w.t.db, "inconnu").unwrap().is_none());
        set_client_active(&w.t, false);
        // Within its lifetime the copy still answers; a cache of lifetime zero does not.
        assert!(short.get(&w.t.db, "fc").unwrap().is_some(), "{}", w.t.name());
        assert!(every_time.get(&w.t.db, "fc").unwrap().is_none(), "{}", w.t.name());
        std::thread::sleep(Duration::from_millis(2200));
        assert!(short.get(&w.t.db, "fc").unwrap().is_none(), "past its lifetime the copy is read again: {}", w.t.name());
        // A client that becomes active is found at once: a miss is never remembered.
        set_client_active(&w.t, true);
        assert!(short.get(&w.t.db, "fc").unwrap().is_some(), "{}", w.t.name());
    }
}

#[test]
fn uses_of_expired_tokens_are_forgotten_and_recent_ones_still_refuse_a_second_use() {
    for t in TestDb::both() {
        let w = world(t);
        let u = usager(&w, "s1", "Hélène", "Dupont");
        let m = mandat(&w, w.org, u, &[Argent], T0);
        let g = grant(&w, u, &m);
        assert!(matches!(idp::disclose(&w.t.db, &w.clients, "old", &g, T0.plus_seconds(1)).unwrap(), Disclosure::Identity(_)));
        assert!(matches!(idp::disclose(&w.t.db, &w.clients, "recent", &g, T0.plus_seconds(500)).unwrap(), Disclosure::Identity(_)));
        assert_eq!(idp::purge_token_uses(&w.t.db, T0.plus_seconds(100)).unwrap(), 1, "{}", w.t.name());
        assert!(matches!(idp::disclose(&w.t.db, &w.clients, "recent", &g, T0.plus_seconds(501)).unwrap(), Disclosure::AlreadyUsed), "{}", w.t.name());
        assert_eq!(used_entries(&w.t).len(), 2, "the journal keeps every disclosure");
    }
}

#[test]
fn a_batch_with_a_revoked_autorisation_refuses_it_and_serves_the_others() {
    for t in [TestDb::sqlite(), TestDb::postgres_with_pool(8)] {
        let w = world(t);
        let u = usager(&w, "s1", "Hélène", "Dupont");
        let m = mandat(&w, w.org, u, &[Argent, Social], T0);
        let (served, refused) = (grant_for(&w, u, &m, 0), grant_for(&w, u, &m, 1));
        mandats::revoke_autorisation(&w.t.db, refused.acting.autorisation().get(), w.aidant, T0.plus_seconds(10)).unwrap();
        let before = w.t.db.group_stats();
        // 32 requests at once: 24 tokens of the active autorisation, 6 of the revoked one,
        // and one token presented twice.
        let jobs: Vec<(String, &Grant)> = (0..24)
            .map(|i| (format!("ok-{i}"), &served))
            .chain((0..6).map(|i| (format!("revoked-{i}"), &refused)))
            .chain([("twice".to_owned(), &served), ("twice".to_owned(), &served)])
            .collect();
        let barrier = std::sync::Barrier::new(jobs.len());
        let answers: Vec<(String, &'static str)> = std::thread::scope(|s| {
            let hs: Vec<_> = jobs
                .iter()
                .map(|(hash, g)| {
                    let (w, barrier) = (&w, &barrier);
                    s.spawn(move || {
                        barrier.wait();
                        let kind = match idp::disclose(&w.t.db, &w.clients, hash, g, T0.plus_seconds(20)).unwrap() {
                            Disclosure::Identity(found) => {
                                assert_eq!(found.0.given_name, "Hélène");
                                "identity"
                            }
                            Disclosure::NotActive => "not active",
                            Disclosure::AlreadyUsed => "already used",
                            Disclosure::ClientInactive => "client inactive",
                        };
                        (hash.clone(), kind)
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let name = w.t.name();
        for (hash, kind) in &answers {
            let expected = if hash.starts_with("ok-") { "identity" } else if hash.starts_with("revoked-") { "not active" } else { continue };
            assert_eq!(*kind, expected, "{name}: {hash}");
        }
        let twice: Vec<&str> = answers.iter().filter(|(h, _)| h == "twice").map(|(_, k)| *k).collect();
        assert!(twice.contains(&"identity") && twice.contains(&"already used"), "{name}: {twice:?}");
        // One entry per identity disclosed, none for the refusals; the journal verifies.
        let used = used_entries(&w.t);
        assert_eq!(used.len(), 25, "{name}");
        assert!(used.iter().all(|r| r.autorisation == Some(served.acting.autorisation().get())), "{name}");
        let v = broker_testkit::journal(&w.t.db, journal::verify).unwrap();
        assert_eq!(v.fault, None, "{name}");
        // The requests were committed together, not one transaction each.
        let after = w.t.db.group_stats();
        let (batches, jobs) = (after.batches - before.batches, after.jobs - before.jobs);
        assert_eq!(jobs, 32, "{name}");
        assert!(batches < jobs, "{name}: {batches} transactions for {jobs} disclosures");
    }
}
