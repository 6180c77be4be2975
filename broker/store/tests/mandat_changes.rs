//! Revocations with their attestation, renewal, and a usager's history, on both backends.

use broker_core::attestation::Kind;
use broker_core::identite::{usager_key, IdentitePivot, FRANCE};
use broker_core::mandat::{Duree, Status};
use broker_core::{Demarche, Timestamp};
use broker_store::admin::{self, NewAidant};
use broker_store::mandats::{self, NewMandat};
use broker_core::capability::{AidantId, AutorisationId, InOrganisation, MandatId, OrganisationId, UsagerId};
use broker_store::{attestations, capabilities, journal, mandat_changes, StoreError};
use broker_testkit::TestDb;

const T0: Timestamp = Timestamp::from_micros(1_800_000_000_000_000);

struct World {
    t: TestDb,
    org: i64,
    other_org: i64,
    aidant: i64,
    usager: i64,
}

fn world(t: TestDb) -> World {
    let org = admin::create_organisation(&t.db, "CCAS de Roubaix", "81234567800013", "17 Grand-Place, 59100 Roubaix", None).unwrap().id;
    let other_org = admin::create_organisation(&t.db, "France Services Lens", "35600000000048", "", None).unwrap().id;
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
    let usager = t.db.write(|c| mandats::upsert_usager(c, &usager_key(&[3; 32], "fc-sub-changes"), &identity, T0)).unwrap();
    World { t, org, other_org, aidant, usager }
}

fn mandat(w: &World, org: i64, demarches: &[Demarche], at: Timestamp) -> i64 {
    mandats::create_mandat(
        &w.t.db,
        &NewMandat { organisation_id: org, usager_id: w.usager, aidant_id: w.aidant, demarches: demarches.to_vec(), duree: Duree::SixMois },
        at,
    )
    .unwrap()
    .mandat_id
}

fn by(w: &World) -> InOrganisation {
    capabilities::in_organisation(&w.t.db, AidantId(w.aidant)).unwrap()
}

fn facts(w: &World, mandat_id: i64) -> broker_core::mandat::MandatFacts {
    w.t.db.read(|c| mandats::facts(c, w.org, w.usager)).unwrap().into_iter().find(|m| m.id == mandat_id).unwrap()
}

fn actions(w: &World) -> Vec<(String, Option<i64>)> {
    broker_testkit::journal(&w.t.db, |c| journal::page(c, 0, 1000)).unwrap().into_iter().map(|r| (r.action, r.mandat)).collect()
}

#[test]
fn revoking_one_autorisation_records_a_revocation_attestation_that_rebuilds() {
    for t in TestDb::both() {
        let w = world(t);
        let m = mandat(&w, w.org, &[Demarche::Argent, Demarche::Logement], T0);
        let argent = facts(&w, m).autorisations.iter().find(|a| a.demarche == Demarche::Argent).unwrap().id;
        let at = T0.plus_seconds(60);
        let r = mandat_changes::revoke_autorisation(&w.t.db, &by(&w), AutorisationId(argent), at).unwrap();
        assert_eq!(r.mandat_id, m);
        assert_eq!(r.demarches, vec![Demarche::Argent]);
        let f = facts(&w, m);
        assert_eq!(f.active_demarches(at), vec![Demarche::Logement]);
        assert_eq!(f.status(at), Status::Active);

        let content = w.t.db.read(|c| mandat_changes::revocation_content(c, &r.fingerprint)).unwrap().expect("rebuilt");
        assert_eq!(content.kind, Kind::Revocation);
        assert_eq!(content.fingerprint(), r.fingerprint);
        assert_eq!(content.demarches, vec![Demarche::Argent]);
        assert_eq!(content.revoked_at, Some(at));
        let found = w.t.db.read(|c| attestations::find_by_fingerprint(c, &r.fingerprint)).unwrap().unwrap();
        assert!(found.journaled, "{}", w.t.name());

        let a = actions(&w);
        assert!(a.contains(&("autorisation_revoked".into(), Some(m))));
        assert!(a.contains(&("attestation_created".into(), Some(m))));
        assert!(!a.iter().any(|x| x.0 == "mandat_revoked"));

        // Again: nothing to revoke, nothing written.
        let before = a.len();
        assert!(matches!(mandat_changes::revoke_autorisation(&w.t.db, &by(&w), AutorisationId(argent), at.plus_seconds(1)), Err(StoreError::Conflict(_))));
        assert!(matches!(mandat_changes::revoke_autorisation(&w.t.db, &by(&w), AutorisationId(999_999), at), Err(StoreError::NotFound(_))));
        assert_eq!(actions(&w).len(), before);
        // A mandat fingerprint is not a revocation.
        let mandat_fp = w
            .t
            .db
            .write(|c| {
                let content = attestations::content_for_mandat(c, m)?;
                attestations::record(c, m, "mandat", &content, w.aidant, w.org, w.usager, at)
            })
            .unwrap();
        assert_eq!(w.t.db.read(|c| mandat_changes::revocation_content(c, &mandat_fp)).unwrap(), None);
        assert_eq!(w.t.db.read(|c| mandat_changes::revocation_content(c, &"0".repeat(64))).unwrap(), None);
    }
}

#[test]
fn revoking_a_mandat_revokes_what_is_left_and_journals_it() {
    for t in TestDb::both() {
        let w = world(t);
        let m = mandat(&w, w.org, &[Demarche::Argent, Demarche::Logement, Demarche::Social], T0);
        let argent = facts(&w, m).autorisations.iter().find(|a| a.demarche == Demarche::Argent).unwrap().id;
        mandat_changes::revoke_autorisation(&w.t.db, &by(&w), AutorisationId(argent), T0.plus_seconds(10)).unwrap();
        let at = T0.plus_seconds(20);
        let r = mandat_changes::revoke_mandat(&w.t.db, &by(&w), MandatId(m), at).unwrap();
        let mut expected = vec![Demarche::Logement, Demarche::Social];
        expected.sort();
        assert_eq!(r.demarches, expected);
        assert_eq!(facts(&w, m).status(at), Status::Revoked);
        let content = w.t.db.read(|c| mandat_changes::revocation_content(c, &r.fingerprint)).unwrap().unwrap();
        assert_eq!(content.demarches, expected);
        let a = actions(&w);
        assert_eq!(a.iter().filter(|x| x.0 == "autorisation_revoked").count(), 3);
        assert_eq!(a.iter().filter(|x| x.0 == "mandat_revoked").count(), 1);
        assert_eq!(a.iter().filter(|x| x.0 == "attestation_created").count(), 2);
        assert!(matches!(mandat_changes::revoke_mandat(&w.t.db, &by(&w), MandatId(m), at), Err(StoreError::Conflict(_))));

        // An expired mandat cannot be revoked.
        let old = mandat(&w, w.org, &[Demarche::Famille], T0);
        assert!(matches!(mandat_changes::revoke_mandat(&w.t.db, &by(&w), MandatId(old), T0.plus_days(200)), Err(StoreError::Conflict(_))));
        assert!(matches!(mandat_changes::revoke_mandat(&w.t.db, &by(&w), MandatId(999_999), at), Err(StoreError::NotFound(_))));
    }
}

#[test]
fn renewing_supersedes_and_journals_the_renewal() {
    for t in TestDb::both() {
        let w = world(t);
        let m = mandat(&w, w.org, &[Demarche::Argent, Demarche::Logement], T0);
        let at = T0.plus_days(10);
        let created = mandat_changes::renew_mandat(
            &w.t.db,
            &by(&w),
            MandatId(m),
            &NewMandat { organisation_id: w.org, usager_id: w.usager, aidant_id: w.aidant, demarches: vec![Demarche::Logement], duree: Duree::UnAn },
            at,
        )
        .unwrap();
        assert_eq!(facts(&w, m).active_demarches(at), vec![Demarche::Argent]);
        assert_eq!(facts(&w, created.mandat_id).expires_at, at.plus_days(365));
        assert!(actions(&w).contains(&("mandat_renewed".into(), Some(created.mandat_id))));
    }
}

#[test]
fn the_history_holds_the_usager_entries_of_one_organisation() {
    for t in TestDb::both() {
        let w = world(t);
        let m = mandat(&w, w.org, &[Demarche::Argent], T0);
        let theirs = mandat(&w, w.other_org, &[Demarche::Justice], T0);
        mandat_changes::revoke_mandat(&w.t.db, &by(&w), MandatId(m), T0.plus_seconds(5)).unwrap();
        // Read at once: on PostgreSQL some entries may not be numbered yet, and still count.
        let lines = w.t.db.read(|c| mandat_changes::history(c, OrganisationId(w.org), UsagerId(w.usager))).unwrap();
        let got: Vec<&str> = lines.iter().map(|l| l.action.as_str()).collect();
        assert_eq!(
            got,
            vec!["mandat_created", "autorisation_created", "autorisation_revoked", "mandat_revoked", "attestation_created"],
            "{}",
            w.t.name()
        );
        assert!(lines.iter().all(|l| l.mandat_id == Some(m) && l.aidant_id == Some(w.aidant)));
        assert!(!lines.iter().any(|l| l.mandat_id == Some(theirs)));
        let again = w.t.db.read(|c| mandat_changes::history(c, OrganisationId(w.org), UsagerId(w.usager))).unwrap();
        assert_eq!(again, lines, "{}", w.t.name());
        let names = w.t.db.read(|c| mandat_changes::usager_names(c, &[w.usager, 999_999])).unwrap();
        assert_eq!(names.len(), 1);
        assert_eq!((names[0].given_name.as_str(), names[0].family_name.as_str()), ("Jean Pierre", "Lefèvre"));
    }
}
