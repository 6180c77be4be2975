use broker_store::db::{applied_migrations, migrate};
use broker_testkit::TestDb;
use diesel::connection::SimpleConnection;
use std::path::Path;

fn versions_on_disk(backend: &str) -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations").join(backend);
    let mut v: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.path().join("up.sql").exists())
        .map(|e| e.file_name().to_string_lossy().split('_').next().unwrap().replace('-', ""))
        .collect();
    v.sort();
    v
}

#[test]
fn both_backends_have_the_same_migration_numbering() {
    let pg = versions_on_disk("postgres");
    assert!(!pg.is_empty());
    assert_eq!(pg, versions_on_disk("sqlite"));
}

#[test]
fn every_migration_file_is_applied_on_both_backends() {
    for t in TestDb::both() {
        let mut c = t.db.conn().unwrap();
        let mut applied = applied_migrations(&mut c).unwrap();
        applied.sort();
        assert_eq!(applied, versions_on_disk(t.name()), "{}", t.name());
        // Every table of the schema answers.
        for table in [
            "organisations", "aidants", "memberships", "usagers", "mandats", "autorisations", "attestations",
            "oidc_clients", "totp_cards", "totp_devices", "webauthn_credentials", "journal", "journal_head",
        ] {
            c.batch_execute(&format!("SELECT count(*) FROM {table}"))
                .unwrap_or_else(|e| panic!("{}: table {table}: {e}", t.name()));
        }
        // Running again applies nothing.
        assert!(migrate(&mut c).unwrap().is_empty());
    }
}

#[test]
fn refuses_to_run_on_a_newer_schema() {
    for t in TestDb::both() {
        let mut c = t.db.conn().unwrap();
        c.batch_execute("INSERT INTO __diesel_schema_migrations (version) VALUES ('29991231000001')").unwrap();
        let err = migrate(&mut c).unwrap_err().to_string();
        assert!(err.contains("29991231000001"), "{}: {err}", t.name());
    }
}

/// The lifecycle migration starts each existing aidant's inactivity count at their last
/// sign-in from the journal (or creation), but never more than 150 days back: an account
/// long unused is warned at the first run, never deactivated at once.
#[test]
fn existing_aidants_are_never_deactivated_by_the_first_inactivity_run() {
    use broker_core::journal::{Action, Entry};
    use broker_core::lifecycle::{inactivity, Inactivity, Job};
    use broker_core::Timestamp;
    use broker_store::schema::aidants;
    use diesel::prelude::*;
    use diesel_migrations::MigrationHarness;
    for t in TestDb::both() {
        let db = &t.db;
        db.read(|c| {
            let source = broker_store::db::migrations_for(c);
            match c {
                broker_store::AnyConnection::Postgresql(pg) => pg.revert_last_migration(source).map(|_| ()),
                broker_store::AnyConnection::Sqlite(sq) => sq.revert_last_migration(source).map(|_| ()),
            }
            .map_err(|e| broker_store::StoreError::Migration(e.to_string()))
        })
        .unwrap();
        let now = Timestamp::now();
        let org = broker_store::admin::create_organisation(db, "CCAS", "81234567800013", "", None).unwrap().id;
        let insert = |email: &str, created: Timestamp| -> i64 {
            db.read(|c| {
                c.batch_execute(&format!(
                    "INSERT INTO aidants (email, first_name, last_name, profession, active, current_organisation_id, created_at, auditor) \
                     VALUES ('{email}', 'A', 'B', '', TRUE, {org}, {}, FALSE)",
                    created.micros()
                ))?;
                let id: i64 = aidants::table.filter(aidants::email.eq(email)).select(aidants::id).first(c)?;
                c.batch_execute(&format!("INSERT INTO memberships (aidant_id, organisation_id, role, created_at) VALUES ({id}, {org}, 'aidant', 0)"))?;
                Ok(id)
            })
            .unwrap()
        };
        let never = insert("never@exemple.fr", now.plus_days(-400));
        let old_login = insert("old@exemple.fr", now.plus_days(-400));
        let recent = insert("recent@exemple.fr", now.plus_days(-400));
        let new = insert("new@exemple.fr", now.plus_days(-3));
        for (a, days) in [(old_login, 300), (recent, 20)] {
            let e = Entry::new(Action::AidantLogin).aidant(a).at(now.plus_days(-days));
            db.write(|c| broker_store::journal::append(c, &[e])).unwrap();
        }
        assert_eq!(db.migrate().unwrap().len(), 1, "{}", t.name());
        std::thread::sleep(std::time::Duration::from_millis(20));
        let after = Timestamp::now();
        let since = |a: i64| Timestamp::from_micros(db.read(|c| Ok(aidants::table.find(a).select(aidants::last_signin_at).first::<Option<i64>>(c)?)).unwrap().unwrap());
        for a in [never, old_login] {
            assert!(matches!(inactivity(since(a), after), Inactivity::Warn { .. }), "{}: warned first", t.name());
            assert!(since(a) >= now.plus_days(-150) && since(a) <= after.plus_days(-150));
        }
        assert_eq!(since(recent), now.plus_days(-20));
        assert_eq!(since(new), now.plus_days(-3));
        let run = broker_store::jobs::run_one(db, Job::Inactivity, after).unwrap().unwrap();
        assert!(run.outcome.starts_with("2 avertissement(s), 0 désactivation(s)"), "{}: {}", t.name(), run.outcome);
    }
}
