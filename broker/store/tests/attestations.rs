//! Attestations recorded and found again, on both backends.

use broker_core::attestation::{Kind, LEGAL_TEXT_VERSION};
use broker_core::identite::{usager_key, IdentitePivot, FRANCE};
use broker_core::mandat::{Duree, Status};
use broker_core::capability::{AidantId, MandatId};
use broker_core::{Demarche, Timestamp};
use broker_store::admin::{self, NewAidant};
use broker_store::attestations;
use broker_store::mandats::{self, NewMandat};
use broker_store::{journal, StoreError};
use broker_testkit::TestDb;

const T0: Timestamp = Timestamp::from_micros(1_800_000_000_000_000);

struct World {
    t: TestDb,
    org: i64,
    aidant: i64,
    usager: i64,
}

fn world(t: TestDb) -> World {
    let org = admin::create_organisation(&t.db, "CCAS de Roubaix", "81234567800013", "17 Grand-Place, 59100 Roubaix", None).unwrap().id;
    let aidant = admin::create_aidant(&t.db, &NewAidant { organisation_id: org, email: "a@exemple.fr", first_name: "Awa", last_name: "Diallo", profession: "", referent: false })
        .unwrap()
        .id;
    let identity = IdentitePivot {
        given_name: "Jean Pierre".into(),
        family_name: "Lefèvre".into(),
        preferred_username: None,
        birthdate: "1950-03-12".into(),
        gender: "male".into(),
        birthplace: "59512".into(),
        birthcountry: FRANCE.into(),
        email: "jp@exemple.fr".into(),
    }
    .validate()
    .unwrap();
    let usager = t.db.write(|c| mandats::upsert_usager(c, &usager_key(&[3; 32], "fc-sub-att"), &identity, T0)).unwrap();
    World { t, org, aidant, usager }
}

fn mandat(w: &World, demarches: &[Demarche], at: Timestamp) -> i64 {
    mandats::create_mandat(
        &w.t.db,
        &NewMandat { organisation_id: w.org, usager_id: w.usager, aidant_id: w.aidant, demarches: demarches.to_vec(), duree: Duree::SixMois },
        at,
    )
    .unwrap()
    .mandat_id
}

fn record(w: &World, mandat_id: i64, at: Timestamp) -> Result<String, StoreError> {
    w.t.db.write(|c| {
        let content = attestations::content_for_mandat(c, mandat_id)?;
        attestations::record(c, mandat_id, "mandat", &content, w.aidant, w.org, w.usager, at)
    })
}

#[test]
fn content_is_rebuilt_from_the_database() {
    for t in TestDb::both() {
        let w = world(t);
        let at = T0.plus_seconds(3_723);
        let m = mandat(&w, &[Demarche::Argent, Demarche::Social], at);
        let c = w.t.db.read(|c| attestations::content_for_mandat(c, m)).unwrap();
        assert_eq!(c.kind, Kind::Mandat);
        assert_eq!(c.mandat_id, m);
        assert_eq!(c.legal_text_version, LEGAL_TEXT_VERSION);
        assert_eq!((c.organisation_name.as_str(), c.organisation_siret.as_str()), ("CCAS de Roubaix", "81234567800013"));
        assert_eq!(c.organisation_address, "17 Grand-Place, 59100 Roubaix");
        assert_eq!((c.usager_given_name.as_str(), c.usager_family_name.as_str()), ("Jean Pierre", "Lefèvre"));
        assert_eq!((c.usager_birthdate.as_str(), c.usager_birthplace.as_str(), c.usager_birthcountry.as_str()), ("1950-03-12", "59512", FRANCE));
        assert_eq!(c.demarches, vec![Demarche::Social, Demarche::Argent]);
        assert_eq!(c.duration_days, 182);
        assert_eq!(c.created_at, at, "the date of the mandat itself, {}", w.t.name());
        assert_eq!(c.expires_at, at.plus_days(182));
        assert_eq!(c.revoked_at, None);
    }
}

#[test]
fn recording_writes_the_row_and_a_journal_entry_with_the_fingerprint() {
    for t in TestDb::both() {
        let w = world(t);
        let m = mandat(&w, &[Demarche::Famille], T0);
        let fp = record(&w, m, T0).unwrap();
        let expected = w.t.db.read(|c| attestations::content_for_mandat(c, m)).unwrap().fingerprint();
        assert_eq!(fp, expected);

        let recs = broker_testkit::journal(&w.t.db, |c| journal::page(c, 0, 100)).unwrap();
        let entry = recs.iter().find(|r| r.action == "attestation_created").expect("journal entry");
        assert_eq!(entry.attestation_hash.as_deref(), Some(fp.as_str()), "{}", w.t.name());
        assert_eq!((entry.mandat, entry.aidant, entry.organisation, entry.usager), (Some(m), Some(w.aidant), Some(w.org), Some(w.usager)));

        let found = w.t.db.read(|c| attestations::find_by_fingerprint(c, &fp)).unwrap().expect("found");
        assert_eq!((found.mandat_id, found.kind, found.journaled), (m, Kind::Mandat, true));
        assert_eq!(found.legal_text_version, LEGAL_TEXT_VERSION);
        assert_eq!(found.mandat.status(T0.plus_days(1)), Status::Active);
        assert_eq!(found.mandat.status(T0.plus_days(200)), Status::Expired);
        assert_eq!(w.t.db.read(|c| attestations::recorded_by(c, &fp)).unwrap(), Some(w.aidant));
        assert_eq!(w.t.db.read(|c| attestations::mandat_fingerprint(c, m)).unwrap(), Some(fp.clone()));
        let v = broker_testkit::journal(&w.t.db, journal::verify).unwrap();
        assert!(v.fault.is_none(), "{:?}", v.fault);
    }
}

#[test]
fn recording_again_changes_nothing_and_reprinting_gives_the_same_fingerprint() {
    for t in TestDb::both() {
        let w = world(t);
        let m = mandat(&w, &[Demarche::Logement, Demarche::Travail], T0);
        let first = record(&w, m, T0).unwrap();
        // Revoking one autorisation later does not change the attestation of the mandat.
        let later = T0.plus_days(3);
        let facts = w.t.db.read(|c| mandats::facts(c, w.org, w.usager)).unwrap();
        let aut = facts.iter().find(|f| f.id == m).unwrap().autorisations[0].id;
        mandats::revoke_autorisation(&w.t.db, aut, w.aidant, later).unwrap();
        let again = record(&w, m, later).unwrap();
        assert_eq!(first, again, "{}", w.t.name());
        let (_, fp) = attestations::ensure_for_mandat(&w.t.db, MandatId(m), AidantId(w.aidant), later).unwrap();
        assert_eq!(fp, first);
        let recs = broker_testkit::journal(&w.t.db, |c| journal::page(c, 0, 100)).unwrap();
        assert_eq!(recs.iter().filter(|r| r.action == "attestation_created").count(), 1, "{}", w.t.name());
    }
}

#[test]
fn ensure_records_once_then_finds_it() {
    for t in TestDb::both() {
        let w = world(t);
        let m = mandat(&w, &[Demarche::Transports], T0);
        assert_eq!(w.t.db.read(|c| attestations::mandat_fingerprint(c, m)).unwrap(), None);
        let (content, fp) = attestations::ensure_for_mandat(&w.t.db, MandatId(m), AidantId(w.aidant), T0).unwrap();
        assert_eq!(content.fingerprint(), fp);
        let (_, fp2) = attestations::ensure_for_mandat(&w.t.db, MandatId(m), AidantId(w.aidant), T0.plus_days(1)).unwrap();
        assert_eq!(fp, fp2);
        let recs = broker_testkit::journal(&w.t.db, |c| journal::page(c, 0, 100)).unwrap();
        assert_eq!(recs.iter().filter(|r| r.action == "attestation_created").count(), 1, "{}", w.t.name());
    }
}

#[test]
fn record_works_inside_another_transaction_and_rolls_back_with_it() {
    for t in TestDb::both() {
        let w = world(t);
        let m = mandat(&w, &[Demarche::Justice], T0);
        let before = broker_testkit::journal(&w.t.db, journal::count).unwrap();
        let failed: Result<(), StoreError> = w.t.db.write(|c| {
            let content = attestations::content_for_mandat(c, m)?;
            attestations::record(c, m, "mandat", &content, w.aidant, w.org, w.usager, T0)?;
            Err(StoreError::Conflict("later step failed".into()))
        });
        assert!(failed.is_err());
        let content = w.t.db.read(|c| attestations::content_for_mandat(c, m)).unwrap();
        assert!(w.t.db.read(|c| attestations::find_by_fingerprint(c, &content.fingerprint())).unwrap().is_none(), "{}", w.t.name());
        assert_eq!(broker_testkit::journal(&w.t.db, journal::count).unwrap(), before);
    }
}

#[test]
fn unknown_and_modified_fingerprints_are_not_found() {
    for t in TestDb::both() {
        let w = world(t);
        let m = mandat(&w, &[Demarche::Social], T0);
        let fp = record(&w, m, T0).unwrap();
        let mut content = w.t.db.read(|c| attestations::content_for_mandat(c, m)).unwrap();
        content.demarches.push(Demarche::Argent);
        assert!(w.t.db.read(|c| attestations::find_by_fingerprint(c, &content.fingerprint())).unwrap().is_none());
        assert!(w.t.db.read(|c| attestations::find_by_fingerprint(c, &"0".repeat(64))).unwrap().is_none());
        assert!(w.t.db.read(|c| attestations::find_by_fingerprint(c, &fp)).unwrap().is_some(), "{}", w.t.name());
    }
}

#[test]
fn wrong_kind_or_mismatched_content_is_refused() {
    for t in TestDb::both() {
        let w = world(t);
        let m = mandat(&w, &[Demarche::Social], T0);
        let other = mandat(&w, &[Demarche::Famille], T0.plus_days(1));
        let r = w.t.db.write(|c| {
            let content = attestations::content_for_mandat(c, m)?;
            attestations::record(c, m, "autre", &content, w.aidant, w.org, w.usager, T0)
        });
        assert!(matches!(r, Err(StoreError::Invalid(_))), "{r:?}");
        let r = w.t.db.write(|c| {
            let content = attestations::content_for_mandat(c, m)?;
            attestations::record(c, other, "mandat", &content, w.aidant, w.org, w.usager, T0)
        });
        assert!(matches!(r, Err(StoreError::Invalid(_))), "{r:?}");
        let r = w.t.db.write(|c| {
            let content = attestations::content_for_mandat(c, m)?;
            attestations::record(c, m, "revocation", &content, w.aidant, w.org, w.usager, T0)
        });
        assert!(matches!(r, Err(StoreError::Invalid(_))), "{r:?}");
        assert!(matches!(w.t.db.read(|c| attestations::content_for_mandat(c, 999_999)), Err(StoreError::NotFound(_))));
    }
}

#[test]
fn a_revocation_attestation_has_its_own_fingerprint() {
    for t in TestDb::both() {
        let w = world(t);
        let m = mandat(&w, &[Demarche::Social, Demarche::Argent], T0);
        let fp_mandat = record(&w, m, T0).unwrap();
        let at = T0.plus_days(2);
        let fp_rev = w
            .t
            .db
            .write(|c| {
                let content = attestations::content_for_revocation(c, m, &[Demarche::Argent], at)?;
                assert_eq!((content.kind, content.revoked_at), (Kind::Revocation, Some(at)));
                attestations::record(c, m, "revocation", &content, w.aidant, w.org, w.usager, at)
            })
            .unwrap();
        assert_ne!(fp_mandat, fp_rev);
        let found = w.t.db.read(|c| attestations::find_by_fingerprint(c, &fp_rev)).unwrap().unwrap();
        assert_eq!((found.kind, found.mandat_id), (Kind::Revocation, m), "{}", w.t.name());
        assert_eq!(w.t.db.read(|c| attestations::mandat_fingerprint(c, m)).unwrap(), Some(fp_mandat));
    }
}

#[test]
fn concurrent_first_prints_record_one_attestation() {
    for t in TestDb::both() {
        let w = world(t);
        let m = mandat(&w, &[Demarche::Loisirs], T0);
        let results: Vec<String> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4).map(|_| s.spawn(|| attestations::ensure_for_mandat(&w.t.db, MandatId(m), AidantId(w.aidant), T0).map(|r| r.1))).collect();
            handles.into_iter().map(|h| h.join().unwrap().unwrap()).collect()
        });
        assert!(results.windows(2).all(|p| p[0] == p[1]), "{}", w.t.name());
        let recs = broker_testkit::journal(&w.t.db, |c| journal::page(c, 0, 100)).unwrap();
        assert_eq!(recs.iter().filter(|r| r.action == "attestation_created").count(), 1, "{}", w.t.name());
    }
}
