//! Journal benchmark (not a test): `cargo bench -p broker-store --bench journal`.
//!
//! 1. Appends/s from 32 concurrent writers on PostgreSQL, one entry per request, next to
//!    plain single-row INSERT transactions from 32 writers on the same database, and
//!    their ratio; also one writer alone for each. Two ways to append: through the group
//!    writer (`Db::append_grouped`, many requests per transaction, as sign-ins do) and in
//!    a transaction of its own (`Db::write`).
//! 2. `journal verify` speed over a large journal, on PostgreSQL and SQLite; then, on
//!    the same journal, the cost of a signed checkpoint (RFC 6962 root over every leaf
//!    + Ed25519 signature + storage) and of the stand-alone verifier over its export
//!    (every line parsed, re-encoded, hashed, and the tree rebuilt).
//! 3. Inclusion proofs against the latest checkpoint, read from the stored tiles: p50
//!    and p99 latency over random entries, on a 10,000-entry journal and on the large
//!    one of 2 (whose tiles are first built from the backlog, as `broker migrate` does).
//!
//! Settings: AC_BENCH_SECONDS (default 5) per measurement, AC_BENCH_VERIFY_ENTRIES
//! (default 1000000), AC_BENCH_PROOFS (default 1000), AC_TEST_PG_URL as for the tests.

use broker_core::journal::{parse_hash, Action, Entry, GENESIS};
use broker_core::Timestamp;
use broker_store::{journal, Db};
use broker_testkit::TestDb;
use diesel::connection::SimpleConnection;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Runs `op` from `writers` threads for `secs` seconds; returns operations per second.
fn rate(db: &Db, writers: usize, secs: u64, op: impl Fn(&Db, u64) + Sync) -> f64 {
    let stop = AtomicBool::new(false);
    let done = AtomicU64::new(0);
    let started = Instant::now();
    std::thread::scope(|s| {
        for w in 0..writers {
            let (stop, done, op) = (&stop, &done, &op);
            s.spawn(move || {
                let mut i = w as u64 * 1_000_000_000;
                while !stop.load(Ordering::Relaxed) {
                    op(db, i);
                    i += 1;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        std::thread::sleep(Duration::from_secs(secs));
        stop.store(true, Ordering::Relaxed);
    });
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

fn plain_insert(db: &Db, i: u64) {
    let mut c = db.conn().unwrap();
    c.batch_execute(&format!("INSERT INTO bench_plain (n, payload) VALUES ({i}, 'aidant_login')")).unwrap();
}

fn journal_append(db: &Db, i: u64) {
    db.write(|c| journal::append(c, &[Entry::new(Action::AidantLogin).aidant(i as i64).detail("method", "totp")]))
        .unwrap();
}

fn journal_append_grouped(db: &Db, i: u64) {
    db.append_grouped(vec![Entry::new(Action::AidantLogin).aidant(i as i64).detail("method", "totp")]).unwrap();
}

fn append_throughput() {
    let secs = env_num("AC_BENCH_SECONDS", 5);
    let t = TestDb::postgres_with_pool(40);
    t.db.conn().unwrap().batch_execute("CREATE TABLE bench_plain (id BIGSERIAL PRIMARY KEY, n BIGINT NOT NULL, payload TEXT NOT NULL)").unwrap();
    println!("PostgreSQL, one row per transaction, synchronous commit, {secs} s per run:");
    for writers in [1usize, 32] {
        let plain = rate(&t.db, writers, secs, plain_insert);
        let grouped = rate(&t.db, writers, secs, journal_append_grouped);
        let alone = rate(&t.db, writers, secs, journal_append);
        println!(
            "  {writers:>2} writer(s): plain INSERT {plain:>8.0} tx/s | grouped append {grouped:>8.0}/s, ratio {:.2} | append in its own transaction {alone:>8.0}/s, ratio {:.2}",
            grouped / plain,
            alone / plain
        );
    }
    let v = t.db.read_snapshot(journal::verify).unwrap();
    assert!(v.fault.is_none() && v.pending == 0, "journal intact and complete after the run");
}

/// Writes `n` chained entries directly (bulk), as the appender would have.
fn bulk_fill(db: &Db, n: u64) {
    let mut c = db.conn().unwrap();
    let mut prev = GENESIS;
    let at = Timestamp::now();
    let mut seq = 0i64;
    let quote = |s: &str| format!("'{}'", s.replace('\'', "''"));
    while (seq as u64) < n {
        let mut sql = String::from("BEGIN; INSERT INTO journal (seq, at, action, aidant_id, organisation_id, details, leaf_hash, chain_hash) VALUES ");
        let batch = 5_000.min(n - seq as u64);
        for k in 0..batch {
            seq += 1;
            let r = Entry::new(Action::AutorisationUsed).aidant(seq % 97).organisation(seq % 13).detail("client", "fc").seal(seq, at, &prev);
            prev = parse_hash(&r.chain_hash).unwrap();
            if k > 0 {
                sql.push(',');
            }
            sql.push_str(&format!(
                "({}, {}, {}, {}, {}, {}, {}, {})",
                r.seq, r.at, quote(&r.action), r.aidant.unwrap(), r.organisation.unwrap(), quote(&r.details), quote(&r.leaf_hash), quote(&r.chain_hash)
            ));
        }
        sql.push_str(&format!("; UPDATE journal_head SET seq = {seq}, chain_hash = '{}' WHERE id = 1; COMMIT;", hex::encode(prev)));
        c.batch_execute(&sql).unwrap();
    }
}

fn verify_speed() {
    let n = env_num("AC_BENCH_VERIFY_ENTRIES", 1_000_000);
    for t in [TestDb::sqlite(), TestDb::postgres()] {
        let fill = Instant::now();
        bulk_fill(&t.db, n);
        let filled = fill.elapsed().as_secs_f64();
        let started = Instant::now();
        let v = t.db.read_snapshot(journal::verify).unwrap();
        let secs = started.elapsed().as_secs_f64();
        assert_eq!((v.verified, v.fault), (n as i64, None));
        println!(
            "journal verify on {:<8}: {n} entries in {secs:.2} s ({:.0} entries/s; filled in {filled:.1} s)",
            t.name(),
            n as f64 / secs
        );
        build_tiles(&t.db);
        checkpoint_and_audit(&t.db, n);
        proof_latency(&t.db);
    }
}

/// Builds the tiles of a journal filled without them, as `broker migrate` does.
fn build_tiles(db: &Db) {
    let started = Instant::now();
    let built = db.read(broker_store::tiles::catch_up).unwrap();
    let secs = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let size = db.read(broker_store::checkpoints::tree_size).unwrap();
    assert_eq!(db.read_snapshot(|c| broker_store::tiles::verify(c, size)).unwrap(), None);
    println!(
        "  tiles built from the backlog: {built} in {secs:.2} s; checked against the leaf hashes (as journal verify does) in {:.2} s",
        started.elapsed().as_secs_f64()
    );
}

/// p50 and p99 of inclusion proofs of random entries against the latest checkpoint,
/// each on a connection from the pool, as the public endpoint does.
fn proof_latency(db: &Db) {
    let count = env_num("AC_BENCH_PROOFS", 1000).max(1);
    let size = db.read(broker_store::checkpoints::latest).unwrap().expect("a checkpoint").size as u64;
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut took: Vec<f64> = (0..count)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let seq = 1 + (state % size) as i64;
            let started = Instant::now();
            let p = db.read(|c| broker_store::checkpoints::inclusion(c, seq, None)).unwrap();
            let us = started.elapsed().as_secs_f64() * 1e6;
            std::hint::black_box(p);
            us
        })
        .collect();
    took.sort_by(f64::total_cmp);
    let at = |q: f64| took[((took.len() - 1) as f64 * q).round() as usize];
    println!("  inclusion proof against the checkpoint of {size} entries ({count} random entries): p50 {:.0} µs, p99 {:.0} µs", at(0.5), at(0.99));
}

/// Inclusion proofs on a small journal (10,000 entries), on both backends.
fn small_journal_proofs() {
    for t in [TestDb::sqlite(), TestDb::postgres()] {
        bulk_fill(&t.db, 10_000);
        println!("journal of 10000 entries on {}:", t.name());
        build_tiles(&t.db);
        let key = broker_core::checkpoint::JournalKey::generate("bench.example/journal").unwrap();
        broker_store::checkpoints::create(&t.db, &key, Timestamp::now(), false).unwrap().expect("a checkpoint");
        proof_latency(&t.db);
    }
}

fn checkpoint_and_audit(db: &Db, n: u64) {
    use broker_core::checkpoint::{export_line, parse_export_line, Audit, ExportLine, JournalKey};
    let key = JournalKey::generate("bench.example/journal").unwrap();
    let started = Instant::now();
    broker_store::checkpoints::create(db, &key, Timestamp::now(), false).unwrap().expect("a checkpoint");
    let made = started.elapsed().as_secs_f64();
    let sign = Instant::now();
    let latest = db.read(broker_store::checkpoints::latest).unwrap().unwrap();
    let cp = key.verifier().verify(&latest.note).unwrap();
    for _ in 0..1000 {
        std::hint::black_box(key.sign(&cp).unwrap());
    }
    let sign_us = sign.elapsed().as_secs_f64() * 1e6 / 1000.0;
    println!("  signed checkpoint of {} entries: {made:.2} s (tree root, signature, storage); Ed25519 signature alone {sign_us:.0} µs", cp.size);
    let started = Instant::now();
    let mut audit = Audit::new(cp.size);
    let mut after = 0;
    let mut bytes = 0usize;
    loop {
        let page = db.read(|c| journal::page(c, after, 5_000)).unwrap();
        let Some(last) = page.last().map(|r| r.seq) else { break };
        for r in page.iter().filter(|r| r.seq as u64 <= cp.size) {
            let line = export_line(r);
            bytes += line.len() + 1;
            let ExportLine::Entry { record, canonical } = parse_export_line(&line).unwrap() else { panic!("an entry line") };
            audit.push(&record, canonical);
        }
        after = last;
    }
    let (checked, _) = audit.finish(&cp).expect("the export matches its checkpoint");
    let secs = started.elapsed().as_secs_f64();
    println!(
        "  stand-alone verification of the export ({checked} entries, {:.0} MB): {secs:.2} s, reading included",
        bytes as f64 / 1e6
    );
    let _ = n;
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing special.
    append_throughput();
    small_journal_proofs();
    verify_speed();
}
