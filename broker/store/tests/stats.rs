//! The référent's statistics, on both backends: autorisations created per démarche and
//! per month (Paris time), uses counted from the journal, other organisations and other
//! months left out.

use broker_core::identite::{usager_key, IdentitePivot, FRANCE};
use broker_core::journal::{Action, Entry};
use broker_core::mandat::Duree;
use broker_core::{Demarche, Timestamp};
use broker_store::admin::{self, NewAidant};
use broker_store::mandats::{self, NewMandat};
use broker_store::stats::{self, Month};
use broker_store::journal;
use broker_testkit::TestDb;
use Demarche::*;

struct World {
    t: TestDb,
    org: i64,
    other_org: i64,
    aidant: i64,
}

fn world(t: TestDb) -> World {
    let org = admin::create_organisation(&t.db, "CCAS de Roubaix", "81234567800013", "", None).unwrap().id;
    let other_org = admin::create_organisation(&t.db, "France Services Lens", "35600000000048", "", None).unwrap().id;
    let aidant = admin::create_aidant(&t.db, &NewAidant { organisation_id: org, email: "a@exemple.fr", first_name: "A", last_name: "B", profession: "", referent: true })
        .unwrap()
        .id;
    World { t, org, other_org, aidant }
}

fn at(text: &str) -> Timestamp {
    Timestamp::parse_rfc3339(text).unwrap()
}

fn usager(w: &World, sub: &str) -> i64 {
    let identity = IdentitePivot {
        given_name: "Jeanne".into(),
        family_name: "Martin".into(),
        preferred_username: None,
        birthdate: "1950-00-00".into(),
        gender: "female".into(),
        birthplace: "59512".into(),
        birthcountry: FRANCE.into(),
        email: format!("{sub}@exemple.fr"),
    }
    .validate()
    .unwrap();
    w.t.db.write(|c| mandats::upsert_usager(c, &usager_key(&[3; 32], sub), &identity, at("2025-01-01T00:00:00Z"))).unwrap()
}

fn mandat(w: &World, org: i64, usager: i64, demarches: &[Demarche], when: &str) {
    let n = NewMandat { organisation_id: org, usager_id: usager, aidant_id: w.aidant, demarches: demarches.to_vec(), duree: Duree::UnAn };
    mandats::create_mandat(&w.t.db, &n, at(when)).unwrap();
}

fn used(w: &World, org: i64, d: Demarche, times: usize) {
    let entries: Vec<Entry> = (0..times).map(|_| Entry::new(Action::AutorisationUsed).aidant(w.aidant).organisation(org).demarche(d)).collect();
    w.t.db.write(|c| journal::append(c, &entries)).unwrap();
}

#[test]
fn mandats_are_counted_per_demarche_and_per_paris_month() {
    for t in TestDb::both() {
        let w = world(t);
        let name = w.t.name();
        let (u1, u2, u3, u4) = (usager(&w, "u1"), usager(&w, "u2"), usager(&w, "u3"), usager(&w, "u4"));
        mandat(&w, w.org, u1, &[Social, Argent], "2026-11-05T10:00:00Z");
        // 1 November at 00:30 in Paris: November, though still October in UTC.
        mandat(&w, w.org, u2, &[Social], "2026-10-31T23:30:00Z");
        mandat(&w, w.org, u3, &[Logement], "2026-03-15T12:00:00Z");
        // The first day of the period, and the last hour before it.
        mandat(&w, w.org, u4, &[Papiers], "2025-11-30T23:00:00Z");
        mandat(&w, w.org, u4, &[Famille], "2025-11-30T22:59:59Z");
        // Another organisation's mandat, the same month.
        mandat(&w, w.other_org, u1, &[Social, Travail], "2026-11-05T10:00:00Z");

        let now = at("2026-11-20T10:00:00Z");
        let s = w.t.db.read_snapshot(|c| stats::organisation_stats(c, w.org, now, 12)).unwrap();
        assert_eq!(s.months.len(), 12, "{name}");
        assert_eq!(s.months[0], Month { year: 2025, month: 12 }, "{name}");
        assert_eq!(s.months[11], Month { year: 2026, month: 11 }, "{name}");
        assert_eq!(s.months[11].label(), "novembre 2026");
        assert_eq!(s.months[3].label(), "mars 2026");

        let per: Vec<(Demarche, Vec<i64>)> = s.created.clone();
        let mut papiers = vec![0; 12];
        papiers[0] = 1;
        let mut logement = vec![0; 12];
        logement[3] = 1;
        let mut social = vec![0; 12];
        social[11] = 2;
        let mut argent = vec![0; 12];
        argent[11] = 1;
        assert_eq!(per, vec![(Papiers, papiers), (Social, social), (Logement, logement), (Argent, argent)], "{name}");
        assert_eq!(s.created_total(), 5, "{name}");
        assert_eq!(s.created_in(11), 3, "{name}");
        assert_eq!(s.used_total(), 0, "{name}");

        // A month later, December 2025 has left the period; December 2026 is empty.
        let later = w.t.db.read_snapshot(|c| stats::organisation_stats(c, w.org, at("2026-12-01T09:00:00Z"), 12)).unwrap();
        assert_eq!(later.months[11].label(), "décembre 2026", "{name}");
        assert_eq!(later.created.iter().map(|(d, _)| *d).collect::<Vec<_>>(), vec![Social, Logement, Argent], "{name}");
        assert_eq!(later.created_in(10), 3, "{name}");
        assert_eq!(later.created_in(11), 0, "{name}");

        // The other organisation sees only its own.
        let other = w.t.db.read_snapshot(|c| stats::organisation_stats(c, w.other_org, now, 12)).unwrap();
        assert_eq!(other.created.iter().map(|(d, n)| (*d, n[11])).collect::<Vec<_>>(), vec![(Social, 1), (Travail, 1)], "{name}");
    }
}

#[test]
fn uses_are_counted_from_the_journal() {
    for t in TestDb::both() {
        let w = world(t);
        let name = w.t.name();
        used(&w, w.org, Social, 2);
        used(&w, w.org, Argent, 1);
        used(&w, w.other_org, Social, 4);
        // Another action of the organisation is not a use.
        w.t.db.write(|c| journal::append(c, &[Entry::new(Action::AidantLogin).aidant(w.aidant).organisation(w.org)])).unwrap();

        // The journal stamps entries with the real time.
        let now = Timestamp::now();
        let s = w.t.db.read_snapshot(|c| stats::organisation_stats(c, w.org, now, 12)).unwrap();
        assert_eq!(s.used.len(), 12, "{name}");
        assert_eq!(s.used[11], 3, "{name}");
        assert_eq!(s.used_total(), 3, "{name}");
        assert!(s.created.is_empty(), "{name}");

        let other = w.t.db.read_snapshot(|c| stats::organisation_stats(c, w.other_org, now, 12)).unwrap();
        assert_eq!(other.used_total(), 4, "{name}");

        let again = w.t.db.read_snapshot(|c| stats::organisation_stats(c, w.org, now, 3)).unwrap();
        assert_eq!(again.used, vec![0, 0, 3], "{name}");

        // Thirteen months later the uses are out of the period.
        let much_later = w.t.db.read_snapshot(|c| stats::organisation_stats(c, w.org, now.plus_days(400), 12)).unwrap();
        assert_eq!(much_later.used_total(), 0, "{name}");
    }
}
