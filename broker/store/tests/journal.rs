use broker_core::journal::{Action, Entry, FaultKind};
use broker_store::{journal, Backend, StoreError};
use broker_testkit::TestDb;
use diesel::connection::SimpleConnection;
use std::path::PathBuf;
use std::process::Command;

fn append_n(t: &TestDb, n: usize) {
    for i in 0..n {
        t.db.write(|c| journal::append(c, &[Entry::new(Action::AidantLogin).aidant(i as i64 + 1).detail("method", "totp")]))
            .unwrap();
    }
}

fn verify(t: &TestDb) -> journal::Verification {
    broker_testkit::journal(&t.db, journal::verify).unwrap()
}

fn seqs(t: &TestDb) -> Vec<i64> {
    broker_testkit::journal(&t.db, |c| journal::page(c, 0, 1_000_000)).unwrap().iter().map(|r| r.seq).collect()
}

#[test]
fn appends_are_sequenced_chained_and_verify() {
    for t in TestDb::both() {
        append_n(&t, 25);
        t.db.write(|c| {
            journal::append(c, &[Entry::new(Action::MandatCreated).mandat(1), Entry::new(Action::AutorisationCreated).autorisation(1)])
        })
        .unwrap();
        let recs = broker_testkit::journal(&t.db, |c| journal::page(c, 25, 10)).unwrap();
        let got: Vec<(i64, &str)> = recs.iter().map(|r| (r.seq, r.action.as_str())).collect();
        assert_eq!(got, vec![(26, "mandat_created"), (27, "autorisation_created")], "{}: numbered before write returns", t.name());
        let v = verify(&t);
        assert_eq!((v.verified, v.head_seq, v.pending, v.fault), (27, 27, 0, None), "{}", t.name());
    }
}

#[test]
fn an_entry_is_written_with_its_change_or_not_at_all() {
    for t in TestDb::both() {
        append_n(&t, 3);
        let r: Result<(), StoreError> = t.db.write(|c| {
            c.batch_execute("INSERT INTO organisations (name, siret, address, allowed_demarches, created_at) VALUES ('S', '81234567800013', '', 'social', 1)")?;
            journal::append(c, &[Entry::new(Action::OrganisationCreated)])?;
            Err(StoreError::Invalid("refused after the append".into()))
        });
        assert!(r.is_err());
        let orgs: i64 = t.db.read(|c| {
            use diesel::prelude::*;
            Ok(broker_store::schema::organisations::table.count().get_result(c)?)
        }).unwrap();
        assert_eq!(orgs, 0, "{}: the change was rolled back", t.name());
        assert_eq!(broker_testkit::journal(&t.db, journal::count).unwrap(), 3, "{}: the entry was rolled back", t.name());
        assert_eq!(broker_testkit::journal(&t.db, journal::head).unwrap().0, 3, "{}", t.name());
        append_n(&t, 1);
        assert_eq!(seqs(&t), vec![1, 2, 3, 4], "{}: no gap after a rollback", t.name());
    }
}

#[test]
fn update_delete_and_truncate_are_refused_by_the_database() {
    for t in TestDb::both() {
        append_n(&t, 5);
        let mut c = t.db.conn().unwrap();
        let mut statements = vec![
            "UPDATE journal SET details = '{}' WHERE seq = 2",
            "DELETE FROM journal WHERE seq = 5",
            "DELETE FROM journal",
            "DELETE FROM journal_head",
            "UPDATE journal_head SET seq = 1",
        ];
        if t.db.backend() == Backend::Postgres {
            statements.push("TRUNCATE journal");
            statements.push("TRUNCATE journal_head");
        }
        for sql in statements {
            let err = c.batch_execute(sql).expect_err(sql);
            let msg = err.to_string();
            assert!(msg.contains("append-only") || msg.contains("forward"), "{}: {sql}: {msg}", t.name());
        }
        drop(c);
        assert_eq!(verify(&t).verified, 5, "{}", t.name());
    }
}

#[test]
fn entries_left_pending_by_an_earlier_version_are_numbered_by_migrate_in_order() {
    for t in TestDb::both() {
        append_n(&t, 2);
        // An earlier version wrote entries here with their change and numbered them after.
        t.db.conn().unwrap().batch_execute(
            "INSERT INTO journal_pending (at, action, aidant_id, details) VALUES (1795000000000000, 'logout', 42, '{}'); \
             INSERT INTO journal_pending (at, action, aidant_id, details) VALUES (1795000000000001, 'logout', 43, '{}')",
        ).unwrap();
        assert_eq!(verify(&t).pending, 2, "{}", t.name());
        t.db.migrate().unwrap();
        append_n(&t, 1);
        let recs = broker_testkit::journal(&t.db, |c| journal::page(c, 0, 10)).unwrap();
        let got: Vec<(i64, &str, Option<i64>)> = recs.iter().map(|r| (r.seq, r.action.as_str(), r.aidant)).collect();
        assert_eq!(
            got,
            vec![(1, "aidant_login", Some(1)), (2, "aidant_login", Some(2)), (3, "logout", Some(42)), (4, "logout", Some(43)), (5, "aidant_login", Some(1))],
            "{}",
            t.name()
        );
        let v = verify(&t);
        assert_eq!((v.verified, v.pending, v.fault), (5, 0, None), "{}", t.name());
    }
}

#[test]
fn pending_entries_cannot_be_changed_or_dropped_before_they_are_numbered() {
    for t in TestDb::both() {
        let mut c = t.db.conn().unwrap();
        c.batch_execute("INSERT INTO journal_pending (at, action, details) VALUES (1, 'logout', '{}')").unwrap();
        for sql in ["UPDATE journal_pending SET action = 'aidant_login'", "DELETE FROM journal_pending"] {
            let msg = c.batch_execute(sql).expect_err(sql).to_string();
            assert!(msg.contains("append-only"), "{}: {sql}: {msg}", t.name());
        }
        if t.db.backend() == Backend::Postgres {
            assert!(c.batch_execute("TRUNCATE journal_pending").is_err());
        }
    }
}

/// Runs SQL with the append-only triggers out of the way, as a superuser could.
fn tamper(t: &TestDb, sql: &str) {
    let mut c = t.db.conn().unwrap();
    match t.db.backend() {
        Backend::Postgres => c.batch_execute(&format!("SET session_replication_role = replica; {sql}; SET session_replication_role = origin;")),
        Backend::Sqlite => c.batch_execute(&format!(
            "DROP TRIGGER journal_no_update; DROP TRIGGER journal_no_delete; {sql};"
        )),
    }
    .unwrap();
}

fn first_fault(t: &TestDb) -> (i64, FaultKind) {
    let f = verify(t).fault.unwrap_or_else(|| panic!("{}: tampering not detected", t.name()));
    (f.seq, f.kind)
}

#[test]
fn an_edited_row_is_reported_at_its_number() {
    for t in TestDb::both() {
        append_n(&t, 40);
        tamper(&t, "UPDATE journal SET aidant_id = 999 WHERE seq = 17");
        assert_eq!(first_fault(&t), (17, FaultKind::ContentChanged), "{}", t.name());
    }
}

#[test]
fn a_deleted_row_is_reported_at_its_number() {
    for t in TestDb::both() {
        append_n(&t, 40);
        tamper(&t, "DELETE FROM journal WHERE seq = 23");
        assert_eq!(first_fault(&t), (23, FaultKind::Missing), "{}", t.name());
    }
}

#[test]
fn two_swapped_rows_are_reported_at_the_first() {
    for t in TestDb::both() {
        append_n(&t, 40);
        tamper(&t, "UPDATE journal SET seq = 1000000 WHERE seq = 11; UPDATE journal SET seq = 11 WHERE seq = 12; UPDATE journal SET seq = 12 WHERE seq = 1000000");
        let (seq, kind) = first_fault(&t);
        assert_eq!(seq, 11, "{}", t.name());
        assert_eq!(kind, FaultKind::ContentChanged, "{}", t.name());
    }
}

#[test]
fn a_truncated_tail_is_reported_after_the_last_entry_left() {
    for t in TestDb::both() {
        append_n(&t, 40);
        tamper(&t, "DELETE FROM journal WHERE seq > 33");
        assert_eq!(first_fault(&t), (34, FaultKind::Truncated), "{}", t.name());
    }
}

#[test]
fn eight_writers_times_250_appends_on_postgres_give_1_to_2000() {
    let t = TestDb::postgres();
    // Half of the writers in transactions of their own, half through the group writer.
    std::thread::scope(|s| {
        for w in 0..8 {
            let db = t.db.clone();
            s.spawn(move || {
                for i in 0..250 {
                    let e = Entry::new(Action::AutorisationUsed).aidant(w).detail("i", i);
                    if w % 2 == 0 {
                        db.write(|c| journal::append(c, &[e])).unwrap();
                    } else {
                        db.append_grouped(vec![e]).unwrap();
                    }
                }
            });
        }
    });
    assert_eq!(broker_testkit::journal(&t.db, journal::count).unwrap(), 2000);
    assert_eq!(seqs(&t), (1..=2000).collect::<Vec<_>>());
    let v = verify(&t);
    assert_eq!((v.verified, v.fault), (2000, None));
}

fn writer_example() -> PathBuf {
    // target/<profile>/deps/<test> → target/<profile>/examples/journal_writer
    let exe = std::env::current_exe().unwrap();
    let p = exe.parent().unwrap().parent().unwrap().join("examples").join("journal_writer");
    assert!(p.exists(), "{} missing: build the store examples (cargo test builds them)", p.display());
    p
}

fn several_processes(t: &TestDb, processes: usize, threads: usize, appends: usize) {
    let bin = writer_example();
    let children: Vec<_> = (0..processes)
        .map(|_| {
            Command::new(&bin)
                .args([&t.url, &threads.to_string(), &appends.to_string()])
                .spawn()
                .unwrap()
        })
        .collect();
    for mut ch in children {
        assert!(ch.wait().unwrap().success(), "{}: a writer process failed", t.name());
    }
    let total = (processes * threads * appends) as i64;
    assert_eq!(seqs(t), (1..=total).collect::<Vec<_>>(), "{}", t.name());
    let v = verify(t);
    assert_eq!((v.verified, v.fault), (total, None), "{}", t.name());
}

#[test]
fn writers_in_several_processes_on_postgres_leave_no_gap_and_no_fork() {
    several_processes(&TestDb::postgres(), 4, 2, 150);
}

#[test]
fn writers_in_several_processes_on_sqlite_leave_no_gap_and_no_fork() {
    several_processes(&TestDb::sqlite(), 3, 2, 60);
}
