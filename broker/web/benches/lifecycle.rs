//! Lifecycle benchmark (not a test): `cargo bench -p broker-web --bench lifecycle`.
//!
//! 1. The cost of each scheduled job's run over a large base: 10,000 mandats (AC_BENCH_MANDATS)
//!    in 200 structures of 5 aidants, ending over the next 90 days, and one use of each
//!    mandat journaled (for the notices to usagers), on SQLite and on PostgreSQL.
//! 2. Mail throughput: messages queued at once (AC_BENCH_MAILS, default 2,000), then
//!    delivered by one sender (four connections at a time) to a local SMTP server, on both
//!    backends; and the rate at
//!    which requests queue messages (one transaction each).
//!
//! AC_TEST_PG_URL as for the tests.

use broker_core::journal::{Action, Entry};
use broker_core::lifecycle::Job;
use broker_core::notice::Notice;
use broker_core::{Demarche, Timestamp};
use broker_store::mail_queue::{self, NewMail};
use broker_store::schema::{aidants, autorisations, mandats, memberships, organisations, usagers};
use broker_store::{jobs, journal, Db};
use broker_testkit::smtp::SmtpListener;
use broker_testkit::TestDb;
use broker_web::mail::Mailer;
use broker_web::mail_sender::deliver_due;
use diesel::prelude::*;
use std::time::{Duration, Instant};

fn env_num(name: &str, default: i64) -> i64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

const NOW: Timestamp = Timestamp::from_micros(1_800_000_000_000_000);

/// 200 structures of 5 aidants, `n` usagers with one mandat each (two démarches), ending
/// from tomorrow to 90 days from now, and one use of each journaled.
fn seed(db: &Db, n: i64) {
    db.write(|c| {
        for o in 0..200i64 {
            let org: i64 = diesel::insert_into(organisations::table)
                .values((
                    organisations::name.eq(format!("Structure {o}")),
                    organisations::siret.eq(format!("{:014}", o)),
                    organisations::allowed_demarches.eq("argent,logement"),
                    organisations::created_at.eq(NOW.micros()),
                ))
                .returning(organisations::id)
                .get_result(c)?;
            for a in 0..5i64 {
                let id: i64 = diesel::insert_into(aidants::table)
                    .values((
                        aidants::email.eq(format!("a{o}-{a}@exemple.fr")),
                        aidants::first_name.eq("Awa"),
                        aidants::last_name.eq(format!("A{a}")),
                        aidants::active.eq(true),
                        aidants::current_organisation_id.eq(Some(org)),
                        aidants::created_at.eq(NOW.plus_days(-10).micros()),
                        aidants::last_signin_at.eq(Some(NOW.plus_days(-(a * 40)).micros())),
                    ))
                    .returning(aidants::id)
                    .get_result(c)?;
                diesel::insert_into(memberships::table)
                    .values((
                        memberships::aidant_id.eq(id),
                        memberships::organisation_id.eq(org),
                        memberships::role.eq(if a == 0 { "referent" } else { "aidant" }),
                        memberships::created_at.eq(NOW.micros()),
                    ))
                    .execute(c)?;
            }
        }
        Ok(())
    })
    .unwrap();
    let orgs: Vec<i64> = db.read(|c| Ok(organisations::table.select(organisations::id).order(organisations::id).load(c)?)).unwrap();
    for chunk in (0..n).collect::<Vec<_>>().chunks(1_000) {
        db.write(|c| {
            let mut entries = Vec::new();
            for &i in chunk {
                let usager: i64 = diesel::insert_into(usagers::table)
                    .values((
                        usagers::sub_hash.eq(format!("u{i}")),
                        usagers::given_name.eq("Jean"),
                        usagers::family_name.eq(format!("U{i}")),
                        usagers::birthdate.eq("1950-03-12"),
                        usagers::gender.eq("male"),
                        usagers::birthplace.eq("59512"),
                        usagers::birthcountry.eq("99100"),
                        usagers::email.eq(Some(format!("u{i}@exemple.fr"))),
                        usagers::created_at.eq(NOW.micros()),
                    ))
                    .returning(usagers::id)
                    .get_result(c)?;
                let org = orgs[(i as usize) % orgs.len()];
                let expires = NOW.plus_days(1 + (i * 90 / n.max(1)));
                let mandat: i64 = diesel::insert_into(mandats::table)
                    .values((
                        mandats::organisation_id.eq(org),
                        mandats::usager_id.eq(usager),
                        mandats::created_at.eq(expires.plus_days(-365).micros()),
                        mandats::expires_at.eq(expires.micros()),
                        mandats::duration_days.eq(365),
                    ))
                    .returning(mandats::id)
                    .get_result(c)?;
                for d in ["argent", "logement"] {
                    diesel::insert_into(autorisations::table)
                        .values((autorisations::mandat_id.eq(mandat), autorisations::demarche.eq(d), autorisations::created_at.eq(NOW.micros())))
                        .execute(c)?;
                }
                entries.push(Entry::new(Action::AutorisationUsed).organisation(org).usager(usager).mandat(mandat).demarche(Demarche::Argent).client("impots".to_owned()).at(NOW));
            }
            journal::append(c, &entries)
        })
        .unwrap();
    }
}

fn jobs_over(t: &TestDb, n: i64) {
    let started = Instant::now();
    seed(&t.db, n);
    println!("  seeded {n} mandats, 1,000 aidants and {n} uses in {:.1} s", started.elapsed().as_secs_f64());
    for job in Job::ALL {
        let r = jobs::run_one(&t.db, job, NOW).unwrap().expect("due");
        println!("  {:<26} {:>8.1} ms  {}", job.name(), r.micros as f64 / 1000.0, r.outcome);
    }
}

fn mail_throughput(t: &TestDb, n: i64) {
    let smtp = SmtpListener::start();
    let mailer = Mailer::from_settings(Some(&smtp.url()), "Aidants Connect <ne-pas-repondre@exemple.fr>", std::path::Path::new("unused")).unwrap();
    let notice = Notice::Message { subject: "Rappel".into(), text: "Bonjour,\n\nCeci est un message de mesure.\n".into() };
    let started = Instant::now();
    for i in 0..n {
        let m = NewMail { key: format!("bench:{i}"), recipient: "x@exemple.fr", notice: &notice, organisation: None, aidant: None, usager: None };
        t.db.write(|c| mail_queue::enqueue(c, &m, NOW)).unwrap();
    }
    let queued = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let mut sent = 0;
    while sent < n as usize {
        let p = deliver_due(&t.db, &mailer, "https://aidants.example.fr", NOW).unwrap();
        assert!(p.taken() > 0, "messages left undelivered");
        sent += p.sent;
    }
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(smtp.wait_for(n as usize, Duration::from_secs(10)).len(), n as usize);
    println!("  queued {n} messages, one transaction each: {:.0}/s", n as f64 / queued);
    println!("  delivered by one sender (4 SMTP connections) to a local SMTP server: {:.0}/s ({:.2} ms each)", n as f64 / secs, secs * 1000.0 / n as f64);
}

fn main() {
    let mandats_n = env_num("AC_BENCH_MANDATS", 10_000);
    let mails = env_num("AC_BENCH_MAILS", 2_000);
    for (name, make) in [("SQLite", TestDb::sqlite as fn() -> TestDb), ("PostgreSQL", TestDb::postgres)] {
        println!("{name}: scheduled jobs over {mandats_n} mandats");
        jobs_over(&make(), mandats_n);
        println!("{name}: mail queue");
        mail_throughput(&make(), mails);
    }
}
