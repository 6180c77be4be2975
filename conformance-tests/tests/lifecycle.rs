//! The lifecycle as aidants, référents and usagers meet it in their mailboxes: real
//! `broker serve` processes running their scheduled jobs every second
//! (`AC_JOBS_INTERVAL_SECONDS=1`) and delivering their mail queue to a real SMTP listener,
//! their schedule moved by the development clock (`AC_DEV_CLOCK_OFFSET_FILE`). Data is
//! seeded through `broker_store` on the brokers' own database. Each case runs on the
//! embedded default (SQLite) and on PostgreSQL with Redis.
//!
//! - the weekly digest of the mandats ending within 30 days reaches each aidant once per
//!   week, however many instances and `broker jobs run-due` look at the schedule;
//! - inactivity: a warning from 150 days without a sign-in, deactivation at 180, the
//!   référent told, a sign-in in between keeping the account;
//! - a mail server outage loses no message and delivers none twice;
//! - the uses of a mandat are told to its usager, at most once an hour, unless they
//!   turned the notices off.

use broker_core::client::NewClient;
use broker_core::identite::{usager_key, IdentitePivot, FRANCE};
use broker_core::journal::{Action, Entry, Record};
use broker_core::mandat::Duree;
use broker_core::{Demarche, Timestamp};
use broker_store::admin::{self, NewAidant};
use broker_store::mandats::{self, NewMandat};
use broker_store::schema::mail_queue as q;
use broker_store::seal::Sealer;
use broker_store::{auth, jobs, journal, lifecycle, referent, DatabaseUrl, Db};
use broker_testkit::smtp::{Received, SmtpListener};
use broker_testkit::TestDb;
use conformance_tests::idp::Backend;
use conformance_tests::{broker_bin, on_both_backends, Broker};
use diesel::prelude::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

const DAY: i64 = 86_400;
/// How long a message may take to arrive once its job is due.
const ARRIVAL: Duration = Duration::from_secs(20);
/// How long to keep watching after the expected messages arrived, for a duplicate.
const SETTLE: Duration = Duration::from_secs(3);

const MANDATS_SUBJECT: &str = "de votre structure pren"; // « prend fin » / « prennent fin »
const WARNING_SUBJECT: &str = "Votre compte Aidants Connect sera désactivé faute de connexion";
const DEACTIVATED_SUBJECT: &str = "Un compte d'aidant de votre structure a été désactivé pour inactivité";
const USES_SUBJECT: &str = "Votre mandat Aidants Connect a été utilisé";

/// Brokers on one storage with the same keys, issuer, clock file and SMTP listener.
struct Lab {
    /// Dropped first: the processes stop before their listener and database go.
    brokers: Vec<Broker>,
    smtp: SmtpListener,
    /// What listeners stopped before `smtp` received.
    earlier: Vec<Received>,
    db: Db,
    _pg: Option<TestDb>,
    env: Vec<(String, String)>,
    offset: AtomicI64,
    clock_file: PathBuf,
    _work: tempfile::TempDir,
}

impl Lab {
    /// `instances` brokers on `backend`, once each has run the jobs due at its start.
    fn start(backend: Backend, instances: usize) -> Lab {
        let work = tempfile::tempdir().unwrap();
        let clock_file = work.path().join("clock-offset");
        std::fs::write(&clock_file, "0").unwrap();
        let smtp = SmtpListener::start();
        let mut env: Vec<(String, String)> = vec![
            ("AC_KEYS_DIR".into(), work.path().join("keys").display().to_string()),
            ("AC_OUTBOX_DIR".into(), work.path().join("outbox").display().to_string()),
            ("AC_DEV_CLOCK_OFFSET_FILE".into(), clock_file.display().to_string()),
            ("AC_SMTP_URL".into(), smtp.url()),
            ("AC_JOBS_INTERVAL_SECONDS".into(), "1".into()),
        ];
        let pg = backend.store_env(&mut env, work.path(), "lifecycle");
        let brokers = conformance_tests::idp::start_brokers(&env, instances);
        let url = env.iter().find(|(k, _)| k == "DATABASE_URL").unwrap().1.clone();
        let db = Db::open(&DatabaseUrl::parse(&url), 4).unwrap();
        let lab = Lab { brokers, smtp, earlier: Vec::new(), db, _pg: pg, env, offset: AtomicI64::new(0), clock_file, _work: work };
        lab.wait_for("the jobs run at start", || jobs::list(&lab.db, lab.now()).unwrap().iter().all(|j| j.last_run_at.is_some()));
        lab
    }

    // ---- the development clock ------------------------------------------------------------

    /// The brokers' time.
    fn now(&self) -> Timestamp {
        Timestamp::now().plus_seconds(self.offset.load(Ordering::SeqCst))
    }

    /// Moves the brokers' clock forward by `seconds`. The file is replaced at once, so that
    /// no broker reads it half-written (which it would take for no offset at all).
    fn advance(&self, seconds: i64) {
        let o = self.offset.fetch_add(seconds, Ordering::SeqCst) + seconds;
        conformance_tests::idp::write_clock(&self.clock_file, o);
    }

    // ---- the operator's CLI -------------------------------------------------------------------

    /// `broker --json ARGS` on the brokers' storage, clock and SMTP server, started.
    fn spawn_cli(&self, args: &[&str]) -> Child {
        Command::new(broker_bin())
            .arg("--json")
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("AC_LOG", "warn")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// The JSON a CLI process printed (it must succeed).
    fn cli_result(child: Child) -> Value {
        let o = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "broker exited with {}: {}{stdout}", o.status, String::from_utf8_lossy(&o.stderr));
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
    }

    fn cli(&self, args: &[&str]) -> Value {
        Lab::cli_result(self.spawn_cli(args))
    }

    // ---- seeding ------------------------------------------------------------------------------

    fn organisation(&self, name: &str) -> i64 {
        admin::create_organisation(&self.db, name, &siret(), "1 place de la Mairie, 59200 Tourcoing", None).unwrap().id
    }

    /// An active aidant of `org` with a TOTP application: (id, e-mail).
    fn aidant(&self, org: i64, first_name: &str, last_name: &str, referent: bool) -> (i64, String) {
        let email = format!("{}-{}@france-services.exemple.fr", first_name.to_lowercase(), hex::encode(rand::random::<[u8; 4]>()));
        let n = NewAidant { organisation_id: org, email: &email, first_name, last_name, profession: "Conseiller numérique", referent };
        let id = admin::create_aidant(&self.db, &n).unwrap().id;
        admin::enroll_app(&self.db, &Sealer::new(&[7; 32]), &email).unwrap();
        (id, email)
    }

    /// Records a sign-in of the aidant at `at`, as the sign-in page does.
    fn signed_in(&self, aidant: i64, org: i64, at: Timestamp) {
        let e = Entry::new(Action::AidantLogin).aidant(aidant).organisation(org).detail("method", "totp").at(at);
        auth::record_signin(&self.db, aidant, e, at).unwrap();
    }

    /// A usager as FranceConnect identified them, with the e-mail address it gave.
    fn usager(&self, given_name: &str, family_name: &str, email: &str) -> i64 {
        let identity = IdentitePivot {
            given_name: given_name.into(),
            family_name: family_name.into(),
            preferred_username: None,
            birthdate: "1952-03-14".into(),
            gender: "female".into(),
            birthplace: "59599".into(),
            birthcountry: FRANCE.into(),
            email: email.into(),
        }
        .validate()
        .unwrap();
        let key = usager_key(&[3; 32], &format!("fc-{}", hex::encode(rand::random::<[u8; 16]>())));
        let now = self.now();
        self.db.write(|c| mandats::upsert_usager(c, &key, &identity, now)).unwrap()
    }

    /// A mandat signed at `at`: (mandat id, its autorisations).
    fn mandat(&self, org: i64, aidant: i64, usager: i64, demarches: &[Demarche], duree: Duree, at: Timestamp) -> (i64, Vec<(i64, Demarche)>) {
        let n = NewMandat { organisation_id: org, usager_id: usager, aidant_id: aidant, demarches: demarches.to_vec(), duree };
        let m = mandats::create_mandat(&self.db, &n, at).unwrap();
        (m.mandat_id, m.autorisations)
    }

    // ---- what was delivered ----------------------------------------------------------------

    fn received(&self) -> Vec<Received> {
        let mut all = self.earlier.clone();
        all.extend(self.smtp.received());
        all
    }

    /// The messages delivered to `email` whose subject contains `subject`, in order.
    fn mails(&self, email: &str, subject: &str) -> Vec<Received> {
        self.received().into_iter().filter(|m| m.rcpt_to.iter().any(|r| r == email) && m.subject().unwrap_or_default().contains(subject)).collect()
    }

    /// The mail server goes away: its port is closed.
    fn smtp_down(&mut self) {
        self.smtp.stop();
    }

    /// The mail server is back on the same port.
    fn smtp_back(&mut self) {
        let port = self.smtp.port();
        let back = SmtpListener::start_on(port);
        let before = std::mem::replace(&mut self.smtp, back);
        self.earlier.extend(before.received());
    }

    /// Polls `done` until it holds, for up to [`ARRIVAL`]; else fails with what the
    /// brokers said and what arrived.
    fn wait_for(&self, what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + ARRIVAL;
        while !done() {
            if Instant::now() >= deadline {
                let arrived: Vec<String> = self.received().iter().map(|m| format!("{:?} {:?}", m.rcpt_to, m.subject())).collect();
                let logs: String = self.brokers.iter().map(|b| b.stderr_so_far()).collect::<Vec<_>>().join("\n----\n");
                let tail: Vec<&str> = logs.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect();
                panic!("{what}: not within {} s\narrived: {arrived:#?}\nbrokers:\n{}", ARRIVAL.as_secs(), tail.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until `email` has at least `n` messages with `subject`.
    fn wait_mails(&self, email: &str, subject: &str, n: usize) {
        self.wait_for(&format!("{n} message(s) « {subject} » to {email}"), || self.mails(email, subject).len() >= n);
    }

    // ---- the journal and the queue ------------------------------------------------------------

    fn journal(&self, action: Action) -> Vec<Record> {
        let all = broker_testkit::journal(&self.db, |c| journal::page(c, 0, 1_000_000)).unwrap();
        all.into_iter().filter(|r| r.action == action.key()).collect()
    }

    /// The queue's rows for `recipients`: (recipient, kind, attempts, last error, sent).
    fn queued(&self, recipients: &[&str]) -> Vec<(String, String, i32, Option<String>, bool)> {
        let to: Vec<String> = recipients.iter().map(|r| r.to_string()).collect();
        let rows: Vec<(String, String, i32, Option<String>, Option<i64>)> = self
            .db
            .read(|c| {
                Ok(q::table
                    .filter(q::recipient.eq_any(&to))
                    .order(q::id)
                    .select((q::recipient, q::kind, q::attempts, q::last_error, q::sent_at))
                    .load(c)?)
            })
            .unwrap();
        rows.into_iter().map(|(r, k, a, e, s)| (r, k, a, e, s.is_some())).collect()
    }

    fn active(&self, email: &str) -> bool {
        self.db.read(|c| admin::find_aidant_by_email(c, email)).unwrap().active
    }
}

/// A valid SIRET (Luhn), random.
fn siret() -> String {
    let mut digits: Vec<u32> = (0..13).map(|i| if i == 0 { 8 } else { rand::random::<u32>() % 10 }).collect();
    let weighted = |i: usize, d: u32| if i % 2 == 0 { let x = d * 2; if x > 9 { x - 9 } else { x } } else { d };
    let sum: u32 = digits.iter().enumerate().map(|(i, &d)| weighted(i, d)).sum();
    digits.push((10 - sum % 10) % 10);
    digits.iter().map(|d| char::from_digit(*d, 10).unwrap()).collect()
}

fn renew_link(usager: i64, mandat: i64) -> String {
    format!("/usagers/{usager}/mandats/{mandat}/renouveler")
}

fn message_ids(mails: &[Received]) -> Vec<String> {
    mails.iter().map(|m| m.header("Message-ID").expect("a Message-ID")).collect()
}

fn details(r: &Record) -> Value {
    serde_json::from_str(&r.details).unwrap_or(Value::Null)
}

/// The digests of the mandats ending within 30 days, week after week: two aidants of a
/// structure, mandats ending in 29, 30 and 31 days. On PostgreSQL two instances run the
/// schedule; on both backends two `broker jobs run-due` race them when the week turns.
fn mandats_digest(backend: Backend) {
    let instances = if backend == Backend::Postgres { 2 } else { 1 };
    let lab = Lab::start(backend, instances);
    let week = 7 * DAY + 60;
    // The brokers' time once the clock has moved a week on: the next weekly run.
    let t1 = lab.now().plus_seconds(week);
    let org = lab.organisation("France Services Tourcoing");
    let (signer, nadia) = lab.aidant(org, "Nadia", "Benali", false);
    let (_, leo) = lab.aidant(org, "Léo", "Martin", false);
    let u29 = lab.usager("Jeanne", "Martin", "jeanne.martin@courriel.exemple.fr");
    let u30 = lab.usager("Paul", "Durand", "paul.durand@courriel.exemple.fr");
    let u31 = lab.usager("Rose", "Petit", "rose.petit@courriel.exemple.fr");
    // One month is 31 days: signed 2 days before t1, a mandat ends 29 days after it.
    let (m29, _) = lab.mandat(org, signer, u29, &[Demarche::Argent], Duree::UnMois, t1.plus_days(-2));
    let (m30, _) = lab.mandat(org, signer, u30, &[Demarche::Famille, Demarche::Logement], Duree::UnMois, t1.plus_days(-1));
    let (m31, _) = lab.mandat(org, signer, u31, &[Demarche::Social], Duree::UnMois, t1);

    lab.advance(week);
    let racers: Vec<Child> = (0..2).map(|_| lab.spawn_cli(&["jobs", "run-due"])).collect();
    for who in [&nadia, &leo] {
        lab.wait_mails(who, MANDATS_SUBJECT, 1);
    }
    let runs: Vec<Value> = racers.into_iter().flat_map(|c| Lab::cli_result(c)["runs"].as_array().unwrap().clone()).collect();
    let by_cli = runs.iter().filter(|r| r["name"] == "rappel-mandats-echeance").count();
    assert!(by_cli <= 1, "the weekly job ran {by_cli} times from the CLI: {runs:?}");
    std::thread::sleep(SETTLE);

    let mut ids = BTreeSet::new();
    for who in [&nadia, &leo] {
        let got = lab.mails(who, MANDATS_SUBJECT);
        assert_eq!(got.len(), 1, "{who}: one digest this week, got {:?}", got.iter().map(|m| m.subject()).collect::<Vec<_>>());
        let m = &got[0];
        assert_eq!(m.subject().as_deref(), Some("2 mandats de votre structure prennent fin dans les 30 jours"));
        let text = m.body_text();
        assert!(text.contains("France Services Tourcoing"), "{text}");
        assert!(text.contains(&renew_link(u29, m29)) && text.contains("Jeanne Martin : fin le"), "the 29th day is announced: {text}");
        assert!(text.contains(&renew_link(u30, m30)) && text.contains("Paul Durand : fin le"), "the 30th day is announced: {text}");
        assert!(text.contains(&format!("fin le {}", t1.plus_days(29).paris_date())), "{text}");
        assert!(!text.contains(&renew_link(u31, m31)) && !text.contains("Rose Petit"), "the 31st day is not announced: {text}");
        ids.extend(message_ids(&got));
    }
    assert_eq!(ids.len(), 2, "one message per aidant");

    // Nothing is due any more: a run sends nothing.
    let again = lab.cli(&["jobs", "run-due"]);
    assert_eq!(again["runs"], serde_json::json!([]), "{again}");
    assert_eq!(again["mail"]["sent"], 0, "{again}");

    // A week later, one more digest each, the three mandats now within 30 days.
    lab.advance(week);
    for who in [&nadia, &leo] {
        lab.wait_mails(who, MANDATS_SUBJECT, 2);
    }
    std::thread::sleep(SETTLE);
    for who in [&nadia, &leo] {
        let got = lab.mails(who, MANDATS_SUBJECT);
        assert_eq!(got.len(), 2, "{who}: one more digest the next week");
        let text = got[1].body_text();
        assert_eq!(got[1].subject().as_deref(), Some("3 mandats de votre structure prennent fin dans les 30 jours"));
        for (u, m) in [(u29, m29), (u30, m30), (u31, m31)] {
            assert!(text.contains(&renew_link(u, m)), "{text}");
        }
        ids.extend(message_ids(&got));
    }
    assert_eq!(ids.len(), 4);
}

/// Inactivity at its boundaries: aidants whose last sign-in was 149, 150, 179 and 180 days
/// before the daily run.
fn inactivity(backend: Backend) {
    let lab = Lab::start(backend, 1);
    let day = DAY + 60;
    let t1 = lab.now().plus_seconds(day);
    let org = lab.organisation("CCAS de Roubaix");
    let (rita_id, rita) = lab.aidant(org, "Rita", "Lambert", true);
    let idle = |days: i64| {
        let (id, email) = lab.aidant(org, "Awa", &format!("Inactive{days}"), false);
        lab.signed_in(id, org, t1.plus_days(-days));
        (id, email)
    };
    let (_, e149) = idle(149);
    let (_, e150) = idle(150);
    let (i179, e179) = idle(179);
    let (i180, e180) = idle(180);

    lab.advance(day);
    lab.wait_mails(&e150, WARNING_SUBJECT, 1);
    lab.wait_mails(&e179, WARNING_SUBJECT, 1);
    lab.wait_mails(&rita, DEACTIVATED_SUBJECT, 1);
    std::thread::sleep(SETTLE);

    // Warned from the 150th day, with the day of the deactivation.
    for (email, days) in [(&e150, 150), (&e179, 179)] {
        let got = lab.mails(email, WARNING_SUBJECT);
        assert_eq!(got.len(), 1, "{days} days: one warning");
        let text = got[0].body_text();
        let since = t1.plus_days(-days);
        assert!(text.contains(&format!("depuis le {}", since.paris_date())), "{text}");
        assert!(text.contains(&format!("désactivé le {}", since.plus_days(180).paris_date())), "{text}");
        assert!(text.contains("/connexion"), "{text}");
        assert!(lab.active(email));
    }
    assert!(lab.received().iter().all(|m| !m.rcpt_to.contains(&e149)), "149 days: nothing yet");
    assert!(lab.active(&e149));
    assert!(lab.mails(&e180, WARNING_SUBJECT).is_empty(), "180 days: deactivated, not warned");

    // Deactivated at 180 days, journaled, the référent told.
    assert!(!lab.active(&e180), "180 days: deactivated");
    let deactivated = lab.journal(Action::AidantDeactivated);
    assert_eq!(deactivated.iter().map(|r| r.aidant).collect::<Vec<_>>(), [Some(i180)], "{deactivated:?}");
    assert_eq!(details(&deactivated[0])["reason"], "inactivité", "{}", deactivated[0].details);
    assert_eq!(deactivated[0].organisation, Some(org));
    let told = lab.mails(&rita, DEACTIVATED_SUBJECT);
    assert_eq!(told.len(), 1);
    let text = told[0].body_text();
    assert!(text.contains(&e180) && text.contains(&format!("/referent/aidants/{i180}")), "{text}");
    assert!(text.contains(&t1.plus_days(-180).paris_date()), "{text}");

    // The 179-day aidant signs in and the référent reactivates the deactivated one, as the
    // message invites them to: the next day keeps both accounts; the 149-day aidant is
    // warned in turn; nobody is warned twice.
    lab.signed_in(i179, org, lab.now());
    assert!(referent::set_active(&lab.db, org, i180, true, rita_id, lab.now()).unwrap());
    lab.advance(day);
    lab.wait_mails(&e149, WARNING_SUBJECT, 1);
    std::thread::sleep(SETTLE);
    assert!(lab.active(&e179), "a sign-in in between keeps the account");
    assert!(lab.active(&e180), "an account reactivated by its référent is not deactivated again the next day");
    assert_eq!(lab.journal(Action::AidantDeactivated).len(), 1, "no other deactivation");
    assert_eq!(lab.mails(&rita, DEACTIVATED_SUBJECT).len(), 1);
    for email in [&e149, &e150, &e179] {
        assert_eq!(lab.mails(email, WARNING_SUBJECT).len(), 1, "one warning per period of inactivity");
    }
    assert!(lab.active(&e150) && lab.active(&e149));
}

/// The mail server away while the jobs queue messages: each is tried again, 30 s after the
/// first failure then twice as long, and delivered once the server is back, exactly once.
fn smtp_outage(backend: Backend) {
    let mut lab = Lab::start(backend, 1);
    let week = 7 * DAY + 60;
    let t1 = lab.now().plus_seconds(week);
    let org = lab.organisation("Maison France Services de Lille");
    let (signer, a) = lab.aidant(org, "Inès", "Roux", false);
    let (_, b) = lab.aidant(org, "Hugo", "Blanc", false);
    let (_, c) = lab.aidant(org, "Sarah", "Nguyen", false);
    let (d_id, d) = lab.aidant(org, "Marc", "Faure", false);
    lab.signed_in(d_id, org, t1.plus_days(-160));
    let u = lab.usager("Jeanne", "Martin", "jeanne.martin@courriel.exemple.fr");
    lab.mandat(org, signer, u, &[Demarche::Argent], Duree::UnMois, t1.plus_days(-21));
    // A digest to each aidant, and a warning to the idle one.
    let expected: BTreeSet<(String, &str)> =
        [&a, &b, &c, &d].iter().map(|e| (e.to_string(), MANDATS_SUBJECT)).chain([(d.clone(), WARNING_SUBJECT)]).collect();
    let recipients = [a.as_str(), b.as_str(), c.as_str(), d.as_str()];

    lab.smtp_down();
    lab.advance(week);
    let tried = |n: i32| {
        let rows = lab.queued(&recipients);
        rows.len() == expected.len() && rows.iter().all(|(_, _, attempts, error, sent)| *attempts >= n && error.is_some() && !sent)
    };
    lab.wait_for("every message tried once", || tried(1));
    // 30 s after the first failure, tried again (and failing again).
    lab.advance(31);
    lab.wait_for("every message tried twice", || tried(2));
    assert!(lab.brokers[0].get("/healthz").0 == 200);

    lab.smtp_back();
    // The next attempt comes 60 s after the second failure, not 30.
    lab.advance(31);
    std::thread::sleep(Duration::from_secs(2));
    assert!(lab.smtp.received().iter().all(|m| !m.rcpt_to.iter().any(|r| recipients.contains(&r.as_str()))), "tried again before its time");
    lab.advance(30);
    lab.wait_for("every message delivered", || expected.iter().all(|(to, subject)| !lab.mails(to, subject).is_empty()));
    std::thread::sleep(SETTLE);

    let mine: Vec<Received> = lab.received().into_iter().filter(|m| m.rcpt_to.iter().any(|r| recipients.contains(&r.as_str()))).collect();
    assert_eq!(mine.len(), expected.len(), "{:?}", mine.iter().map(|m| (&m.rcpt_to, m.subject())).collect::<Vec<_>>());
    for (to, subject) in &expected {
        assert_eq!(lab.mails(to, subject).len(), 1, "{to} « {subject} »: exactly once");
    }
    let ids: BTreeSet<String> = message_ids(&mine).into_iter().collect();
    assert_eq!(ids.len(), expected.len(), "distinct messages");
    let rows = lab.queued(&recipients);
    assert!(rows.iter().all(|(_, _, attempts, _, sent)| *sent && *attempts == 3), "{rows:?}");
}

/// The uses of a mandat told to its usager: one digest per usager, at most one an hour,
/// none to a usager who turned them off.
fn usager_notices(backend: Backend) {
    let lab = Lab::start(backend, 1);
    let org = lab.organisation("CCAS de Tourcoing");
    let (nadia, _) = lab.aidant(org, "Nadia", "Benali", false);
    let client = NewClient::validate("Impots.gouv", &["https://fc.exemple.gouv.fr/api/v2/oidc-callback".to_owned()], &[], "ES256", "json").unwrap();
    let client = admin::create_client(&lab.db, &Sealer::new(&[7; 32]), &client).unwrap().client_id;
    let jeanne = lab.usager("Jeanne", "Martin", "Jeanne.Martin@courriel.exemple.fr");
    let paul_email = "paul.durand@courriel.exemple.fr";
    let paul = lab.usager("Paul", "Durand", paul_email);
    // The address FranceConnect gave, as the broker keeps it.
    let stored: Option<String> = lab
        .db
        .read(|c| Ok(broker_store::schema::usagers::table.find(jeanne).select(broker_store::schema::usagers::email).first(c)?))
        .unwrap();
    let jeanne_email = stored.expect("Jeanne's e-mail");
    let jeanne_email = jeanne_email.as_str();
    let now = lab.now();
    let (mj, aj) = lab.mandat(org, nadia, jeanne, &[Demarche::Argent, Demarche::Famille], Duree::UnAn, now);
    let (mp, ap) = lab.mandat(org, nadia, paul, &[Demarche::Logement], Duree::UnAn, now);

    // Paul turns the notices off, journaled.
    assert!(lab.db.write(|c| lifecycle::set_use_notices(c, paul, false, now)).unwrap());
    let changed = lab.journal(Action::UsagerNoticesChanged);
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0].usager, Some(paul));
    assert_eq!(details(&changed[0])["use_notices"], false, "{}", changed[0].details);

    // The e-service received their identities, as /userinfo journals it.
    let used = |mandat: i64, (autorisation, demarche): (i64, Demarche), usager: i64| {
        let e = Entry::new(Action::AutorisationUsed)
            .aidant(nadia)
            .organisation(org)
            .usager(usager)
            .mandat(mandat)
            .autorisation(autorisation)
            .client(client.clone())
            .demarche(demarche)
            .at(lab.now());
        lab.db.write(|c| journal::append(c, &[e])).unwrap();
    };
    used(mj, aj[0], jeanne);
    used(mj, aj[1], jeanne);
    used(mp, ap[0], paul);

    lab.advance(600 + 30);
    lab.wait_mails(jeanne_email, USES_SUBJECT, 1);
    std::thread::sleep(SETTLE);
    let got = lab.mails(jeanne_email, USES_SUBJECT);
    assert_eq!(got.len(), 1, "one digest for the two uses");
    assert_eq!(got[0].rcpt_to, [jeanne_email], "to the address FranceConnect gave");
    let text = got[0].body_text();
    assert!(text.starts_with("Bonjour Jeanne,"), "{text}");
    assert!(text.contains("Vos mandats ont été utilisés"), "{text}");
    for d in [Demarche::Argent, Demarche::Famille] {
        assert!(text.contains(&format!(": Nadia Benali (CCAS de Tourcoing) pour « {} », sur le service Impots.gouv", d.title())), "{text}");
    }
    assert!(text.contains("/espace-usager"), "{text}");
    assert!(lab.received().iter().all(|m| !m.rcpt_to.iter().any(|r| r == paul_email)), "Paul turned the notices off");

    // Another use within the hour waits for the hour to pass, then comes alone.
    used(mj, aj[0], jeanne);
    lab.advance(600 + 30);
    let ran = lab.now().plus_seconds(-2);
    lab.wait_for("the notices job run again", || {
        jobs::list(&lab.db, lab.now()).unwrap().iter().any(|j| j.job.name() == "avis-usagers" && j.last_run_at.is_some_and(|t| t >= ran))
    });
    std::thread::sleep(SETTLE);
    assert_eq!(lab.mails(jeanne_email, USES_SUBJECT).len(), 1, "at most one digest an hour");
    lab.advance(3_600);
    lab.wait_mails(jeanne_email, USES_SUBJECT, 2);
    std::thread::sleep(SETTLE);
    let got = lab.mails(jeanne_email, USES_SUBJECT);
    assert_eq!(got.len(), 2);
    let text = got[1].body_text();
    assert!(text.contains("Votre mandat a été utilisé"), "only the new use: {text}");
    assert_eq!(text.matches("sur le service Impots.gouv").count(), 1, "{text}");
    assert!(lab.received().iter().all(|m| !m.rcpt_to.iter().any(|r| r == paul_email)));
    let for_paul = lab.queued(&[paul_email]);
    assert!(for_paul.iter().all(|(_, kind, ..)| kind != "mandat_uses"), "nothing queued for Paul: {for_paul:?}");
}

on_both_backends! {
    fn each_aidant_receives_one_digest_of_expiring_mandats_a_week(backend) {
        mandats_digest(backend)
    }

    fn inactive_aidants_are_warned_at_150_days_and_deactivated_at_180(backend) {
        inactivity(backend)
    }

    fn messages_queued_while_the_mail_server_is_down_arrive_once_when_it_is_back(backend) {
        smtp_outage(backend)
    }

    fn usagers_are_told_of_the_uses_of_their_mandats_unless_they_opt_out(backend) {
        usager_notices(backend)
    }
}
