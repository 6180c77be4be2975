//! Mandat rules applied by the store, on both backends.

use broker_core::identite::{usager_key, IdentitePivot, FRANCE};
use broker_core::mandat::{Duree, Status};
use broker_core::{Demarche, Timestamp};
use broker_store::admin::{self, NewAidant};
use broker_store::mandats::{self, NewMandat};
use broker_store::{journal, StoreError};
use broker_testkit::TestDb;
use Demarche::*;

const T0: Timestamp = Timestamp::from_micros(1_800_000_000_000_000);

struct World {
    t: TestDb,
    org: i64,
    aidant: i64,
    usager: i64,
}

fn world(t: TestDb, allowed: Option<&str>) -> World {
    let org = admin::create_organisation(&t.db, "CCAS de Roubaix", "81234567800013", "", allowed).unwrap().id;
    let aidant = admin::create_aidant(&t.db, &NewAidant { organisation_id: org, email: "a@exemple.fr", first_name: "A", last_name: "B", profession: "", referent: false })
        .unwrap()
        .id;
    let identity = IdentitePivot {
        given_name: "Jean Pierre".into(),
        family_name: "Lefèvre".into(),
        preferred_username: None,
        birthdate: "1950-00-00".into(),
        gender: "male".into(),
        birthplace: "59512".into(),
        birthcountry: FRANCE.into(),
        email: "jp@exemple.fr".into(),
    }
    .validate()
    .unwrap();
    let key = usager_key(&[3; 32], "fc-sub-123");
    let usager = t.db.write(|c| mandats::upsert_usager(c, &key, &identity, T0)).unwrap();
    assert_eq!(t.db.write(|c| mandats::upsert_usager(c, &key, &identity, T0)).unwrap(), usager, "same sub, same usager");
    World { t, org, aidant, usager }
}

fn new(w: &World, demarches: &[Demarche], duree: Duree) -> NewMandat {
    NewMandat { organisation_id: w.org, usager_id: w.usager, aidant_id: w.aidant, demarches: demarches.to_vec(), duree }
}

fn status_at(w: &World, mandat: i64, at: Timestamp) -> Status {
    let list = mandats::list_for_organisation(&w.t.db, w.org, at).unwrap();
    list.iter().find(|(m, _)| m.id == mandat).map(|(_, s)| *s).expect("mandat listed")
}

#[test]
fn a_new_mandat_supersedes_the_same_demarches_and_keeps_the_others() {
    for t in TestDb::both() {
        let w = world(t, None);
        let first = mandats::create_mandat(&w.t.db, &new(&w, &[Social, Argent, Logement], Duree::UnAn), T0).unwrap();
        let later = T0.plus_days(10);
        let second = mandats::create_mandat(&w.t.db, &new(&w, &[Argent, Famille], Duree::UnMois), later).unwrap();
        let argent_old = first.autorisations.iter().find(|a| a.1 == Argent).unwrap().0;
        assert_eq!(second.plan.superseded, vec![argent_old], "{}", w.t.name());

        let list = mandats::list_for_organisation(&w.t.db, w.org, later).unwrap();
        let old = &list.iter().find(|(m, _)| m.id == first.mandat_id).unwrap().0;
        assert_eq!(old.active_demarches(later), vec![Social, Logement], "{}", w.t.name());
        let new = &list.iter().find(|(m, _)| m.id == second.mandat_id).unwrap().0;
        assert_eq!(new.active_demarches(later), vec![Famille, Argent]);
        assert_eq!(new.expires_at, later.plus_days(31));

        let recs = broker_testkit::journal(&w.t.db, |c| journal::page(c, 0, 100)).unwrap();
        let actions: Vec<&str> = recs.iter().skip(2).map(|r| r.action.as_str()).collect();
        assert_eq!(
            actions,
            vec![
                "mandat_created", "autorisation_created", "autorisation_created", "autorisation_created",
                "mandat_created", "autorisation_revoked", "autorisation_created", "autorisation_created",
            ],
            "{}",
            w.t.name()
        );
        let revoked = recs.iter().find(|r| r.action == "autorisation_revoked").unwrap();
        assert_eq!((revoked.autorisation, revoked.demarche.as_deref(), revoked.usager), (Some(argent_old), Some("argent"), Some(w.usager)));
        assert!(!recs.iter().any(|r| r.details.contains("Lefèvre") || r.details.contains("fc-sub")), "no identity in the journal");
        assert!(broker_testkit::journal(&w.t.db, journal::verify).unwrap().fault.is_none());
    }
}

#[test]
fn a_restricted_organisation_cannot_make_other_mandats_and_nothing_is_written() {
    for t in TestDb::both() {
        let w = world(t, Some("social,logement"));
        let before = broker_testkit::journal(&w.t.db, journal::count).unwrap();
        let err = mandats::create_mandat(&w.t.db, &new(&w, &[Social, Argent], Duree::UnAn), T0).unwrap_err();
        assert!(matches!(&err, StoreError::Invalid(m) if m.contains("argent")), "{}: {err}", w.t.name());
        assert!(mandats::list_for_organisation(&w.t.db, w.org, T0).unwrap().is_empty());
        assert_eq!(broker_testkit::journal(&w.t.db, journal::count).unwrap(), before);
        assert!(mandats::create_mandat(&w.t.db, &new(&w, &[Logement], Duree::UnAn), T0).is_ok());
    }
}

#[test]
fn a_mandat_expires_at_the_exact_instant() {
    for t in TestDb::both() {
        let w = world(t, None);
        let m = mandats::create_mandat(&w.t.db, &new(&w, &[Transports], Duree::UnJour), T0).unwrap();
        let expiry = T0.plus_days(1);
        assert_eq!(status_at(&w, m.mandat_id, Timestamp::from_micros(expiry.micros() - 1)), Status::Active, "{}", w.t.name());
        assert_eq!(status_at(&w, m.mandat_id, expiry), Status::Expired, "{}", w.t.name());
        let err = mandats::revoke_autorisation(&w.t.db, m.autorisations[0].0, w.aidant, expiry).unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)));
    }
}

#[test]
fn revoking_every_autorisation_revokes_the_mandat() {
    for t in TestDb::both() {
        let w = world(t, None);
        let m = mandats::create_mandat(&w.t.db, &new(&w, &[Justice, Loisirs], Duree::SixMois), T0).unwrap();
        let t1 = T0.plus_days(3);
        mandats::revoke_autorisation(&w.t.db, m.autorisations[0].0, w.aidant, t1).unwrap();
        assert_eq!(status_at(&w, m.mandat_id, t1), Status::Active);
        assert!(matches!(mandats::revoke_autorisation(&w.t.db, m.autorisations[0].0, w.aidant, t1), Err(StoreError::Conflict(_))));
        mandats::revoke_autorisation(&w.t.db, m.autorisations[1].0, w.aidant, t1).unwrap();
        assert_eq!(status_at(&w, m.mandat_id, t1), Status::Revoked, "{}", w.t.name());
    }
}

#[test]
fn ended_mandats_leave_lists_after_365_days_but_stay_stored() {
    for t in TestDb::both() {
        let w = world(t, None);
        let m = mandats::create_mandat(&w.t.db, &new(&w, &[Papiers], Duree::UnJour), T0).unwrap();
        let end = T0.plus_days(1);
        assert_eq!(status_at(&w, m.mandat_id, end.plus_days(365)), Status::Expired);
        let later = Timestamp::from_micros(end.plus_days(365).micros() + 1);
        assert!(mandats::list_for_organisation(&w.t.db, w.org, later).unwrap().is_empty(), "{}", w.t.name());
        let stored = w.t.db.read(|c| mandats::facts(c, w.org, w.usager)).unwrap();
        assert_eq!(stored.len(), 1, "never deleted");
    }
}
