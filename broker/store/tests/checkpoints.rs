use broker_core::checkpoint::{JournalKey, VerifierKey};
use broker_core::journal::{parse_hash, Action, Entry};
use broker_core::merkle::{self, Hash};
use broker_core::Timestamp;
use broker_store::{checkpoints, journal, StoreError};
use broker_testkit::TestDb;
use diesel::connection::SimpleConnection;

const ORIGIN: &str = "localhost:8000/journal";

fn key() -> JournalKey {
    JournalKey::from_seed(ORIGIN, &[42u8; 32]).unwrap()
}

fn append_n(t: &TestDb, n: usize) {
    for i in 0..n {
        t.db.write(|c| journal::append(c, &[Entry::new(Action::AidantLogin).aidant(i as i64 + 1).detail("method", "totp")]))
            .unwrap();
    }
}

/// Leaf hashes recomputed from the entries' canonical encoding.
fn leaves(t: &TestDb) -> Vec<Hash> {
    broker_testkit::journal(&t.db, |c| journal::page(c, 0, 1_000_000)).unwrap().iter().map(|r| r.compute_leaf()).collect()
}

fn hashes(v: &[String]) -> Vec<Hash> {
    v.iter().map(|h| parse_hash(h).unwrap()).collect()
}

#[test]
fn checkpoint_after_appends_is_signed_stored_and_journaled() {
    for t in TestDb::both() {
        let name = t.name();
        let k = key();
        append_n(&t, 5);
        let made = checkpoints::create(&t.db, &k, Timestamp::now(), false).unwrap().unwrap();
        assert!(made.created, "{name}");
        let cp = k.verifier().verify(&made.checkpoint.note).unwrap();
        let all = leaves(&t);
        assert_eq!((cp.size, cp.root), (5, merkle::root(&all[..5])), "{name}");
        assert_eq!(made.checkpoint.root_hash, hex::encode(cp.root), "{name}");
        assert_eq!(cp.origin, ORIGIN);

        let recs = broker_testkit::journal(&t.db, |c| journal::page(c, 5, 10)).unwrap();
        assert_eq!(recs.len(), 1, "{name}: the checkpoint is journaled");
        assert_eq!(recs[0].action, "journal_checkpoint");
        assert_eq!(recs[0].details, format!(r#"{{"root":"{}","size":5}}"#, made.checkpoint.root_hash));

        let read = |f: fn(&mut broker_store::AnyConnection) -> Result<Option<checkpoints::Stored>, StoreError>| t.db.read(f).unwrap();
        assert_eq!(read(checkpoints::latest), Some(made.checkpoint.clone()), "{name}");
        assert_eq!(t.db.read(|c| checkpoints::by_size(c, 5)).unwrap(), Some(made.checkpoint.clone()));
        assert_eq!(t.db.read(|c| checkpoints::by_size(c, 4)).unwrap(), None);

        // The periodic task makes nothing while only checkpoints were journaled.
        assert_eq!(checkpoints::create(&t.db, &k, Timestamp::now(), true).unwrap(), None, "{name}");
        // On demand, the checkpoint's own entry is covered.
        let second = checkpoints::create(&t.db, &k, Timestamp::now(), false).unwrap().unwrap();
        assert_eq!((second.checkpoint.size, second.created), (6, true), "{name}");
        assert_eq!(checkpoints::create(&t.db, &k, Timestamp::now(), true).unwrap(), None, "{name}");
        append_n(&t, 2);
        let third = checkpoints::create(&t.db, &k, Timestamp::now(), true).unwrap().unwrap();
        assert_eq!(third.checkpoint.size, 9, "{name}");
        assert_eq!(k.verifier().verify(&third.checkpoint.note).unwrap().root, merkle::root(&leaves(&t)[..9]));
        // Each on-demand checkpoint covers the entry of the previous one.
        let count = broker_testkit::journal(&t.db, journal::count).unwrap();
        let again = checkpoints::create(&t.db, &k, Timestamp::now(), false).unwrap().unwrap();
        assert_eq!(again.checkpoint.size, 10);
        let same = checkpoints::create(&t.db, &k, Timestamp::now(), false).unwrap().unwrap();
        assert_eq!((same.checkpoint.size, same.created), (11, true), "{name}: size 10 covered its entry");
        assert_eq!(broker_testkit::journal(&t.db, journal::count).unwrap(), count + 2);

        // Stored checkpoints are append-only.
        let r = t.db.read(|c| Ok(c.batch_execute("UPDATE journal_checkpoints SET note = 'x' WHERE size = 5")?));
        assert!(r.is_err(), "{name}: UPDATE refused");
        let r = t.db.read(|c| Ok(c.batch_execute("DELETE FROM journal_checkpoints WHERE size = 5")?));
        assert!(r.is_err(), "{name}: DELETE refused");
        assert_eq!(t.db.read(checkpoints::list).unwrap().len(), 5);
    }
}

#[test]
fn inclusion_and_consistency_proofs_verify_for_trees_1_to_20() {
    for t in TestDb::both() {
        let name = t.name();
        let k = key();
        let v = VerifierKey::parse(&k.verifier().to_string()).unwrap();
        append_n(&t, 1);
        let mut roots = vec![merkle::empty_root()];
        // Each checkpoint journals one entry, so the next one is one larger.
        for n in 1..=20i64 {
            let made = checkpoints::create(&t.db, &k, Timestamp::now(), false).unwrap().unwrap();
            assert_eq!(made.checkpoint.size, n, "{name}");
            roots.push(v.verify(&made.checkpoint.note).unwrap().root);
        }
        let all = leaves(&t);
        for n in 1..=20usize {
            assert_eq!(roots[n], merkle::root(&all[..n]), "{name} root {n}");
            for seq in 1..=n as i64 {
                let p = t.db.read(|c| checkpoints::inclusion(c, seq, Some(n as i64))).unwrap();
                assert_eq!((p.seq, p.tree_size, p.leaf_index), (seq, n as i64, seq - 1));
                assert_eq!(p.leaf_hash, hex::encode(all[seq as usize - 1]), "{name}: leaf from the canonical encoding");
                let cp = v.verify(&p.checkpoint).unwrap();
                assert_eq!(cp.size, n as u64);
                assert_eq!(
                    merkle::verify_inclusion(&all[seq as usize - 1], (seq - 1) as u64, n as u64, &hashes(&p.proof), &cp.root),
                    Ok(()),
                    "{name} seq {seq} size {n}"
                );
            }
            for m in 0..=n {
                let p = t.db.read(|c| checkpoints::consistency(c, m as i64, n as i64)).unwrap();
                assert_eq!((p.from_root.clone(), p.to_root.clone()), (hex::encode(roots[m]), hex::encode(roots[n])));
                assert_eq!(p.from_checkpoint.is_some(), m > 0);
                assert_eq!(
                    merkle::verify_consistency(m as u64, n as u64, &roots[m], &roots[n], &hashes(&p.proof)),
                    Ok(()),
                    "{name} {m} -> {n}"
                );
            }
        }
        // Without a size: against the latest checkpoint.
        let p = t.db.read(|c| checkpoints::inclusion(c, 3, None)).unwrap();
        assert_eq!(p.tree_size, 20);
    }
}

#[test]
fn unknown_sizes_and_bad_input_are_errors() {
    for t in TestDb::both() {
        let name = t.name();
        assert!(matches!(t.db.read(|c| checkpoints::inclusion(c, 1, None)), Err(StoreError::NotFound(_))), "{name}: no checkpoint yet");
        append_n(&t, 4);
        checkpoints::create(&t.db, &key(), Timestamp::now(), false).unwrap().unwrap();
        let e = t.db.read(|c| checkpoints::inclusion(c, 1, Some(3))).unwrap_err();
        assert!(matches!(e, StoreError::NotFound(_)), "{name}: {e}");
        assert!(e.to_string().contains("taille 3"));
        assert!(matches!(t.db.read(|c| checkpoints::inclusion(c, 5, Some(4))), Err(StoreError::Invalid(_))), "{name}");
        assert!(matches!(t.db.read(|c| checkpoints::inclusion(c, 0, Some(4))), Err(StoreError::Invalid(_))), "{name}");
        assert!(matches!(t.db.read(|c| checkpoints::consistency(c, 2, 4)), Err(StoreError::NotFound(_))), "{name}");
        assert!(matches!(t.db.read(|c| checkpoints::consistency(c, 4, 9)), Err(StoreError::NotFound(_))), "{name}");
        assert!(matches!(t.db.read(|c| checkpoints::consistency(c, 4, 0)), Err(StoreError::Invalid(_))), "{name}");
        assert!(matches!(t.db.read(|c| checkpoints::consistency(c, -1, 4)), Err(StoreError::Invalid(_))), "{name}");
        assert_eq!(t.db.read(|c| checkpoints::consistency(c, 4, 4)).unwrap().proof, Vec::<String>::new());
    }
}

#[test]
fn export_streams_every_entry_and_ends_with_its_checkpoint() {
    use broker_core::checkpoint::{parse_export_line, ExportLine};
    for t in TestDb::both() {
        let name = t.name();
        append_n(&t, 7);
        let made = checkpoints::create(&t.db, &key(), Timestamp::now(), false).unwrap().unwrap();
        append_n(&t, 2);
        let mut out = Vec::new();
        let n = t.db.read(|c| checkpoints::export(c, &made.checkpoint, &mut out)).unwrap();
        assert_eq!(n, 7, "{name}: the entries the checkpoint covers, no more");
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 8);
        let recs = broker_testkit::journal(&t.db, |c| journal::page(c, 0, 7)).unwrap();
        for (i, r) in recs.iter().enumerate() {
            assert_eq!(parse_export_line(lines[i]).unwrap(), ExportLine::Entry { record: r.clone(), canonical: true }, "{name}");
        }
        assert_eq!(parse_export_line(lines[7]).unwrap(), ExportLine::Checkpoint(made.checkpoint.note.clone()));
    }
}

/// A journal written without its tiles: the root is computed from the stored leaf
/// hashes, read in pages; the checkpoint first builds the tiles, then reads them. A debug
/// build on a shared machine does 250,000 leaves well under 10 s;
/// `AC_TEST_CHECKPOINT_ENTRIES` changes the size (docs/audit.md gives release figures
/// for 1,000,000).
#[test]
fn root_of_a_large_tree_is_fast() {
    let n: u64 = std::env::var("AC_TEST_CHECKPOINT_ENTRIES").ok().and_then(|v| v.parse().ok()).unwrap_or(250_000);
    let t = TestDb::sqlite();
    t.db.read(|c| {
        Ok(c.batch_execute(&format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {n}) \
             INSERT INTO journal (seq, at, action, details, leaf_hash, chain_hash) \
             SELECT i, i, 'aidant_login', '{{}}', printf('%064x', i * 7919), '' FROM n; \
             UPDATE journal_head SET seq = {n}, chain_hash = printf('%064x', 0);"
        ))?)
    })
    .unwrap();
    let started = std::time::Instant::now();
    let root = t.db.read(|c| checkpoints::tree_root(c, n as i64)).unwrap();
    let took = started.elapsed();
    let expected: Vec<Hash> = (1..=n).map(|i| parse_hash(&format!("{:064x}", i * 7919)).unwrap()).collect();
    assert_eq!(root, merkle::root(&expected));
    let started = std::time::Instant::now();
    let made = checkpoints::create(&t.db, &key(), Timestamp::now(), false).unwrap().unwrap();
    let signed = started.elapsed();
    assert_eq!(key().verifier().verify(&made.checkpoint.note).unwrap().root, root);
    eprintln!("{n} leaves from SQLite: root {took:?}; checkpoint (root, signature, storage, journal entry) {signed:?}");
    assert!(took.as_secs_f64() < 10.0, "{took:?}");
    assert!(signed.as_secs_f64() < 10.0, "{signed:?}");
}
