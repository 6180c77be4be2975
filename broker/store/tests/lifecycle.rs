//! Scheduled jobs, reminders, notices and the mail queue, on both backends.

use broker_core::identite::{usager_key, IdentitePivot, FRANCE};
use broker_core::journal::{Action, Entry};
use broker_core::lifecycle::Job;
use broker_core::mandat::Duree;
use broker_core::notice::{MandatChange, Notice};
use broker_core::{Demarche, Timestamp};
use broker_store::admin::{self, NewAidant};
use broker_store::mail_queue::{self, NewMail};
use broker_store::mandats::{self, NewMandat};
use broker_store::schema::{aidants, mail_queue as q};
use broker_store::{auth, jobs, journal, lifecycle, mandat_changes, capabilities, Db};
use broker_core::capability::{AidantId, AutorisationId};
use broker_testkit::TestDb;
use diesel::prelude::*;

const NOW: Timestamp = Timestamp::from_micros(1_800_000_000_000_000);

struct World {
    t: TestDb,
    org: i64,
    aidant: i64,
    second: i64,
    referent: i64,
}

fn aidant(db: &Db, org: i64, email: &str, referent: bool) -> i64 {
    let id = admin::create_aidant(db, &NewAidant { organisation_id: org, email, first_name: "Awa", last_name: email, profession: "", referent }).unwrap().id;
    admin::enroll_app(db, &broker_store::seal::Sealer::new(&[1; 32]), email).unwrap();
    id
}

fn world(t: TestDb) -> World {
    let org = admin::create_organisation(&t.db, "CCAS de Roubaix", "81234567800013", "", None).unwrap().id;
    let aidant_id = aidant(&t.db, org, "awa@exemple.fr", false);
    let second = aidant(&t.db, org, "leo@exemple.fr", false);
    let referent = aidant(&t.db, org, "rita@exemple.fr", true);
    World { t, org, aidant: aidant_id, second, referent }
}

fn usager(w: &World, sub: &str, email: &str) -> i64 {
    let identity = IdentitePivot {
        given_name: "Jean".into(),
        family_name: "Lefèvre".into(),
        preferred_username: None,
        birthdate: "1950-03-12".into(),
        gender: "male".into(),
        birthplace: "59512".into(),
        birthcountry: FRANCE.into(),
        email: email.into(),
    }
    .validate()
    .unwrap();
    w.t.db.write(|c| mandats::upsert_usager(c, &usager_key(&[3; 32], sub), &identity, NOW)).unwrap()
}

fn mandat(w: &World, usager: i64, d: Demarche, duree: Duree, at: Timestamp) -> i64 {
    mandats::create_mandat(&w.t.db, &NewMandat { organisation_id: w.org, usager_id: usager, aidant_id: w.aidant, demarches: vec![d], duree }, at).unwrap().mandat_id
}

/// The notices queued for `recipient` of `kind`, oldest first.
fn queued(db: &Db, recipient: &str, kind: &str) -> Vec<Notice> {
    let rows: Vec<String> = db
        .read(|c| Ok(q::table.filter(q::recipient.eq(recipient)).filter(q::kind.eq(kind)).order(q::id).select(q::notice).load(c)?))
        .unwrap();
    rows.iter().map(|n| serde_json::from_str(n).unwrap()).collect()
}

fn count(db: &Db, kind: &str) -> i64 {
    db.read(|c| Ok(q::table.filter(q::kind.eq(kind)).count().get_result(c)?)).unwrap()
}

fn run(db: &Db, job: Job, at: Timestamp) -> Option<jobs::Run> {
    jobs::run_one(db, job, at).unwrap()
}

#[test]
fn expiring_mandats_are_announced_up_to_the_thirtieth_day_once_per_run() {
    for t in TestDb::both() {
        let w = world(t);
        let u = usager(&w, "u1", "u1@exemple.fr");
        // One month is 31 days: created 2 days ago ends in 29 days, 1 day ago in 30, now in 31.
        let in29 = mandat(&w, u, Demarche::Argent, Duree::UnMois, NOW.plus_days(-2));
        let in30 = mandat(&w, u, Demarche::Logement, Duree::UnMois, NOW.plus_days(-1));
        let _in31 = mandat(&w, u, Demarche::Famille, Duree::UnMois, NOW);
        jobs::list(&w.t.db, NOW).unwrap();
        let r = run(&w.t.db, Job::MandatsExpiring, NOW).expect("due at first start");
        assert!(r.ok, "{}", r.outcome);
        for email in ["awa@exemple.fr", "leo@exemple.fr", "rita@exemple.fr"] {
            let got = queued(&w.t.db, email, "mandats_expiring");
            assert_eq!(got.len(), 1, "{email} on {}", w.t.name());
            let Notice::MandatsExpiring { mandats, .. } = &got[0] else { panic!() };
            let ids: Vec<i64> = mandats.iter().map(|m| m.mandat).collect();
            assert_eq!(ids, vec![in29, in30], "{}", w.t.name());
        }
        // Not due again within the week, whoever asks.
        assert!(run(&w.t.db, Job::MandatsExpiring, NOW.plus_days(6)).is_none());
        assert_eq!(count(&w.t.db, "mandats_expiring"), 3);
        // A deactivated aidant is not written to.
        w.t.db.write(|c| Ok(diesel::update(aidants::table.find(w.second)).set(aidants::active.eq(false)).execute(c)?)).unwrap();
        let r = run(&w.t.db, Job::MandatsExpiring, NOW.plus_days(7)).expect("due a week later");
        assert!(r.ok);
        assert_eq!(queued(&w.t.db, "awa@exemple.fr", "mandats_expiring").len(), 2);
        assert_eq!(queued(&w.t.db, "leo@exemple.fr", "mandats_expiring").len(), 1);
        // A week later every mandat above is within 30 days, the first two have ended.
        let Notice::MandatsExpiring { mandats, .. } = queued(&w.t.db, "awa@exemple.fr", "mandats_expiring").pop().unwrap() else { panic!() };
        assert_eq!(mandats.len(), 3);
    }
}

#[test]
fn a_revoked_mandat_is_not_announced() {
    for t in TestDb::both() {
        let w = world(t);
        let u = usager(&w, "u2", "u2@exemple.fr");
        let m = mandat(&w, u, Demarche::Argent, Duree::UnMois, NOW.plus_days(-2));
        let by = capabilities::in_organisation(&w.t.db, AidantId(w.aidant)).unwrap();
        let a = w.t.db.read(|c| mandats::facts(c, w.org, u)).unwrap()[0].autorisations[0].id;
        mandat_changes::revoke_autorisation(&w.t.db, &by, AutorisationId(a), NOW.plus_days(-1)).unwrap();
        run(&w.t.db, Job::MandatsExpiring, NOW).unwrap();
        assert_eq!(count(&w.t.db, "mandats_expiring"), 0, "mandat {m} on {}", w.t.name());
        // The usager was told of the revocation, with the attestation's fingerprint.
        let told = queued(&w.t.db, "u2@exemple.fr", "mandat_changed");
        assert_eq!(told.len(), 1);
        let Notice::MandatChanged { change, demarches, .. } = &told[0] else { panic!() };
        assert_eq!((*change, demarches.clone()), (MandatChange::Revoked, vec![Demarche::Argent]));
    }
}

#[test]
fn concurrent_runs_of_one_due_job_run_it_once() {
    for t in TestDb::both() {
        let w = world(t);
        let u = usager(&w, "u3", "u3@exemple.fr");
        mandat(&w, u, Demarche::Argent, Duree::UnMois, NOW.plus_days(-2));
        jobs::list(&w.t.db, NOW).unwrap();
        let runs: Vec<usize> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|_| s.spawn(|| jobs::run_due(&w.t.db, NOW).unwrap().iter().filter(|r| r.job == Job::MandatsExpiring).count()))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(runs.iter().sum::<usize>(), 1, "{runs:?} on {}", w.t.name());
        assert_eq!(count(&w.t.db, "mandats_expiring"), 3);
        let state = jobs::list(&w.t.db, NOW).unwrap().into_iter().find(|s| s.job == Job::MandatsExpiring).unwrap();
        assert_eq!(state.last_run_at, Some(NOW));
        assert_eq!(state.next_due_at, NOW.plus_days(7));
        assert_eq!(state.last_outcome.as_deref(), Some("3 messages"));
    }
}

fn signed_in(db: &Db, aidant: i64, at: Timestamp) {
    auth::record_signin(db, aidant, Entry::new(Action::AidantLogin).aidant(aidant).at(at), at).unwrap();
}

fn active(db: &Db, aidant: i64) -> bool {
    db.read(|c| Ok(aidants::table.find(aidant).select(aidants::active).first::<bool>(c)?)).unwrap()
}

#[test]
fn inactivity_warns_at_150_days_and_deactivates_at_180_unless_the_aidant_signs_in() {
    for t in TestDb::both() {
        let w = world(t);
        let d149 = aidant(&w.t.db, w.org, "d149@exemple.fr", false);
        let d150 = aidant(&w.t.db, w.org, "d150@exemple.fr", false);
        let d179 = aidant(&w.t.db, w.org, "d179@exemple.fr", false);
        let d180 = aidant(&w.t.db, w.org, "d180@exemple.fr", false);
        for (a, days) in [(d149, 149), (d150, 150), (d179, 179), (d180, 180), (w.aidant, 1), (w.second, 1), (w.referent, 1)] {
            signed_in(&w.t.db, a, NOW.plus_days(-days));
        }
        let r = run(&w.t.db, Job::Inactivity, NOW).unwrap();
        assert_eq!(r.outcome, "2 avertissement(s), 1 désactivation(s), 1 message(s) aux référents", "{}", w.t.name());
        assert!(queued(&w.t.db, "d149@exemple.fr", "inactivity_warning").is_empty());
        assert_eq!(queued(&w.t.db, "d150@exemple.fr", "inactivity_warning").len(), 1);
        assert_eq!(queued(&w.t.db, "d179@exemple.fr", "inactivity_warning").len(), 1);
        assert!(queued(&w.t.db, "d180@exemple.fr", "inactivity_warning").is_empty());
        assert!(active(&w.t.db, d179) && !active(&w.t.db, d180));
        let told = queued(&w.t.db, "rita@exemple.fr", "inactive_aidant_deactivated");
        assert_eq!(told.len(), 1);
        let Notice::InactiveAidantDeactivated { aidant, .. } = &told[0] else { panic!() };
        assert_eq!(aidant.id, d180);
        let entries = broker_testkit::journal(&w.t.db, |c| journal::page(c, 0, 10_000)).unwrap();
        let deactivated: Vec<_> = entries.iter().filter(|e| e.action == "aidant_deactivated").collect();
        assert_eq!(deactivated.len(), 1);
        assert_eq!(deactivated[0].aidant, Some(d180));
        assert!(deactivated[0].details.contains("\"reason\":\"inactivité\""), "{}", deactivated[0].details);

        // d150 signs in the next day: no deactivation 30 days later; d179 is deactivated
        // the next day; the warning is not repeated.
        signed_in(&w.t.db, d150, NOW.plus_days(1));
        run(&w.t.db, Job::Inactivity, NOW.plus_days(1)).unwrap();
        assert!(!active(&w.t.db, d179));
        assert_eq!(queued(&w.t.db, "d149@exemple.fr", "inactivity_warning").len(), 1, "149 days yesterday, 150 today");
        assert_eq!(queued(&w.t.db, "d150@exemple.fr", "inactivity_warning").len(), 1);
        run(&w.t.db, Job::Inactivity, NOW.plus_days(31)).unwrap();
        assert!(active(&w.t.db, d150));
        assert!(!active(&w.t.db, d149));
    }
}

#[test]
fn referents_hear_of_aidants_who_cannot_sign_in() {
    for t in TestDb::both() {
        let w = world(t);
        let none = admin::create_aidant(&w.t.db, &NewAidant { organisation_id: w.org, email: "sans@exemple.fr", first_name: "Sam", last_name: "Sans", profession: "", referent: false })
            .unwrap()
            .id;
        run(&w.t.db, Job::MissingSecondFactors, NOW).unwrap();
        let got = queued(&w.t.db, "rita@exemple.fr", "missing_second_factor");
        assert_eq!(got.len(), 1, "{}", w.t.name());
        let Notice::MissingSecondFactor { aidants, .. } = &got[0] else { panic!() };
        assert_eq!(aidants.iter().map(|a| a.id).collect::<Vec<_>>(), vec![none]);
        assert_eq!(count(&w.t.db, "missing_second_factor"), 1, "only référents are told");
    }
}

fn used(db: &Db, w: &World, usager: i64, at: Timestamp) {
    let e = Entry::new(Action::AutorisationUsed)
        .aidant(w.aidant)
        .organisation(w.org)
        .usager(usager)
        .demarche(Demarche::Argent)
        .client("impots".to_owned())
        .at(at);
    db.write(|c| journal::append(c, &[e])).unwrap();
}

#[test]
fn usagers_get_one_digest_an_hour_of_the_uses_unless_they_turned_it_off() {
    for t in TestDb::both() {
        let w = world(t);
        let u = usager(&w, "u4", "u4@exemple.fr");
        let quiet = usager(&w, "u5", "u5@exemple.fr");
        used(&w.t.db, &w, u, NOW);
        used(&w.t.db, &w, u, NOW.plus_seconds(30));
        used(&w.t.db, &w, quiet, NOW);
        assert!(w.t.db.write(|c| lifecycle::set_use_notices(c, quiet, false, NOW)).unwrap());
        assert!(!w.t.db.write(|c| lifecycle::set_use_notices(c, quiet, false, NOW)).unwrap(), "no change, nothing journaled");
        run(&w.t.db, Job::UsagerNotices, NOW.plus_seconds(60)).unwrap();
        let got = queued(&w.t.db, "u4@exemple.fr", "mandat_uses");
        assert_eq!(got.len(), 1, "{}", w.t.name());
        let Notice::MandatUses { uses, .. } = &got[0] else { panic!() };
        assert_eq!(uses.len(), 2);
        assert_eq!(uses[0].demarche, Demarche::Argent);
        assert!(queued(&w.t.db, "u5@exemple.fr", "mandat_uses").is_empty());
        // A use ten minutes later waits for the hour.
        used(&w.t.db, &w, u, NOW.plus_seconds(600));
        run(&w.t.db, Job::UsagerNotices, NOW.plus_seconds(660)).unwrap();
        assert_eq!(queued(&w.t.db, "u4@exemple.fr", "mandat_uses").len(), 1);
        run(&w.t.db, Job::UsagerNotices, NOW.plus_seconds(3_660)).unwrap();
        let got = queued(&w.t.db, "u4@exemple.fr", "mandat_uses");
        assert_eq!(got.len(), 2);
        let Notice::MandatUses { uses, .. } = &got[1] else { panic!() };
        assert_eq!(uses.len(), 1, "only the use not told yet");
        let entries = broker_testkit::journal(&w.t.db, |c| journal::page(c, 0, 10_000)).unwrap();
        let changed: Vec<_> = entries.iter().filter(|e| e.action == "usager_notices_changed").collect();
        assert_eq!(changed.len(), 1);
        assert_eq!(changed[0].usager, Some(quiet));
    }
}

#[test]
fn the_queue_takes_a_key_once_hands_a_message_to_one_sender_and_backs_off() {
    for t in TestDb::both() {
        let db = &t.db;
        let notice = Notice::Message { subject: "Objet".into(), text: "Texte".into() };
        let m = NewMail { key: "k1".into(), recipient: "x@exemple.fr", notice: &notice, organisation: None, aidant: None, usager: None };
        assert!(db.write(|c| mail_queue::enqueue(c, &m, NOW)).unwrap());
        assert!(!db.write(|c| mail_queue::enqueue(c, &m, NOW)).unwrap(), "same key: nothing queued");
        let first = db.write(|c| mail_queue::claim(c, NOW, 10)).unwrap();
        assert_eq!(first.len(), 1);
        assert!(db.write(|c| mail_queue::claim(c, NOW, 10)).unwrap().is_empty(), "held by the first sender");
        let out = db.write(|c| mail_queue::failed(c, &first[0], "serveur SMTP injoignable", false, NOW)).unwrap();
        assert_eq!(out, mail_queue::Outcome::Retry { at: NOW.plus_seconds(30) });
        assert!(db.write(|c| mail_queue::claim(c, NOW.plus_seconds(29), 10)).unwrap().is_empty());
        let again = db.write(|c| mail_queue::claim(c, NOW.plus_seconds(30), 10)).unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].attempts, 2);
        let s = db.read(mail_queue::stats).unwrap();
        assert_eq!((s.waiting, s.retrying, s.delivered), (1, 1, 0));
        assert_eq!(s.oldest_waiting_since, Some(NOW));
        db.write(|c| mail_queue::sent(c, again[0].id, NOW.plus_seconds(31))).unwrap();
        let s = db.read(mail_queue::stats).unwrap();
        assert_eq!((s.waiting, s.delivered), (0, 1));
        assert!(db.write(|c| mail_queue::claim(c, NOW.plus_days(1), 10)).unwrap().is_empty(), "delivered once");
        // A sender that stopped mid-way: its claim expires and another takes the message.
        let m2 = NewMail { key: "k2".into(), ..m };
        db.write(|c| mail_queue::enqueue(c, &m2, NOW)).unwrap();
        assert_eq!(db.write(|c| mail_queue::claim(c, NOW, 10)).unwrap().len(), 1);
        assert!(db.write(|c| mail_queue::claim(c, NOW.plus_seconds(60), 10)).unwrap().is_empty());
        assert_eq!(db.write(|c| mail_queue::claim(c, NOW.plus_seconds(120), 10)).unwrap().len(), 1);
        // A permanent refusal gives the message up.
        let m3 = NewMail { key: "k3".into(), ..m2 };
        db.write(|c| mail_queue::enqueue(c, &m3, NOW.plus_days(2))).unwrap();
        let c3 = db.write(|c| mail_queue::claim(c, NOW.plus_days(2), 10)).unwrap();
        let k3 = c3.into_iter().find(|c| c.key == "k3").unwrap();
        assert_eq!(db.write(|c| mail_queue::failed(c, &k3, "refusé", true, NOW.plus_days(2))).unwrap(), mail_queue::Outcome::GivenUp);
        assert_eq!(db.read(mail_queue::stats).unwrap().given_up, 1, "{}", t.name());
    }
}

#[test]
fn concurrent_senders_take_each_message_once() {
    for t in TestDb::both() {
        let db = &t.db;
        let notice = Notice::Message { subject: "Objet".into(), text: "Texte".into() };
        for i in 0..60 {
            let m = NewMail { key: format!("c{i}"), recipient: "x@exemple.fr", notice: &notice, organisation: None, aidant: None, usager: None };
            db.write(|c| mail_queue::enqueue(c, &m, NOW)).unwrap();
        }
        let taken: Vec<i64> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        let mut mine = Vec::new();
                        loop {
                            let got = db.write(|c| mail_queue::claim(c, NOW, 7)).unwrap();
                            if got.is_empty() {
                                break mine;
                            }
                            mine.extend(got.into_iter().map(|m| m.id));
                        }
                    })
                })
                .collect();
            hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        let mut sorted = taken.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!((taken.len(), sorted.len()), (60, 60), "{}", t.name());
    }
}
