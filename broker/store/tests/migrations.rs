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
