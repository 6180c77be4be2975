use broker_core::journal::{Action, Entry};
use broker_core::merkle::sourced::{inclusion_proof_of, Tiled};
use broker_core::merkle::tile::{self, TileId};
use broker_core::merkle::{self, Hash};
use broker_store::tiles::{self, DbTiles};
use broker_store::{checkpoints, journal, AnyConnection, StoreError};
use broker_testkit::TestDb;
use diesel::connection::SimpleConnection;

fn append_batch(t: &TestDb, from: usize, n: usize) {
    let entries: Vec<Entry> = (from..from + n).map(|i| Entry::new(Action::AidantLogin).aidant(i as i64 + 1).detail("method", "totp")).collect();
    t.db.write(|c| journal::append(c, &entries)).unwrap();
}

/// Leaf hashes recomputed from the entries' canonical encoding.
fn leaves(t: &TestDb) -> Vec<Hash> {
    broker_testkit::journal(&t.db, |c| journal::page(c, 0, 1_000_000)).unwrap().iter().map(|r| r.compute_leaf()).collect()
}

fn stored_count(c: &mut AnyConnection, level: i32) -> i64 {
    #[derive(diesel::QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    use diesel::RunQueryDsl;
    let q = format!("SELECT count(*) AS n FROM journal_tiles WHERE level = {level}");
    diesel::sql_query(q).get_result::<N>(c).unwrap().n
}

/// Root, inclusion and consistency proofs from the tiles equal the leaf-based ones for
/// the tree of `k` leaves.
fn check_tree(c: &mut AnyConnection, all: &[Hash], k: u64, indices: &[u64], olds: &[u64], name: &str) {
    let d = &all[..k as usize];
    assert_eq!(tiles::root(c, k as i64).unwrap(), merkle::root(d), "{name}: root {k}");
    for &i in indices.iter().filter(|&&i| i < k) {
        assert_eq!(tiles::inclusion_proof(c, i, k).unwrap(), merkle::inclusion_proof(d, i), "{name}: inclusion {i} in {k}");
    }
    for &m in olds.iter().filter(|&&m| m <= k) {
        assert_eq!(tiles::consistency_proof(c, m, k).unwrap(), merkle::consistency_proof(d, m), "{name}: consistency {m} -> {k}");
    }
}

#[test]
fn tiles_follow_the_journal_batch_by_batch() {
    for t in TestDb::both() {
        let name = t.name();
        let batches = [1usize, 3, 7, 2, 31, 64, 5, 100, 13, 1, 29, 200, 3, 17, 127, 1];
        let mut n = 0usize;
        for b in batches.iter().cycle() {
            if n >= 600 {
                break;
            }
            append_batch(&t, n, *b);
            n += b;
            let all = leaves(&t);
            assert_eq!(all.len(), n, "{name}");
            t.db.read(|c| {
                // Every tile that became full was stored with the numbering.
                assert_eq!(stored_count(c, 0), (n / 256) as i64, "{name}: level 0 at {n}");
                assert_eq!(tiles::verify(c, n as i64)?, None, "{name}: {n}");
                let k = n as u64;
                check_tree(c, &all, k, &[0, k / 2, k.saturating_sub(1)], &[0, 1, k / 3, k.saturating_sub(1), k], name);
                Ok(())
            })
            .unwrap();
        }
        let all = leaves(&t);
        t.db.read(|c| {
            for k in 1..=n as u64 {
                check_tree(c, &all, k, &[0, k / 2, k - 1], &[1, k / 2, k - 1], name);
            }
            for k in [1u64, 2, 255, 256, 257, 300, 511, 512, 513, n as u64] {
                let every: Vec<u64> = (0..=k).collect();
                check_tree(c, &all, k, &every, &every, name);
            }
            Ok(())
        })
        .unwrap();
    }
}

/// Writes `n` entries straight into the journal, as a journal numbered before tiles
/// existed (leaf hashes are arbitrary: only the tree is looked at).
fn numbered_without_tiles(t: &TestDb, n: u64) -> Vec<Hash> {
    let sql = match t.name() {
        "sqlite" => format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {n}) \
             INSERT INTO journal (seq, at, action, details, leaf_hash, chain_hash) \
             SELECT i, i, 'aidant_login', '{{}}', printf('%064x', i * 7919), '' FROM n; \
             UPDATE journal_head SET seq = {n}, chain_hash = printf('%064x', 0);"
        ),
        _ => format!(
            "INSERT INTO journal (seq, at, action, details, leaf_hash, chain_hash) \
             SELECT i, i, 'aidant_login', '{{}}', lpad(to_hex(i * 7919), 64, '0'), '' FROM generate_series(1, {n}) AS i; \
             UPDATE journal_head SET seq = {n}, chain_hash = lpad('0', 64, '0');"
        ),
    };
    t.db.read(|c| Ok(c.batch_execute(&sql)?)).unwrap();
    (1..=n).map(|i| broker_core::journal::parse_hash(&format!("{:064x}", i * 7919)).unwrap()).collect()
}

fn all_tiles(c: &mut AnyConnection) -> Vec<(i32, i64, Vec<u8>, Vec<u8>)> {
    #[derive(diesel::QueryableByName)]
    struct T {
        #[diesel(sql_type = diesel::sql_types::Integer)]
        level: i32,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        idx: i64,
        #[diesel(sql_type = diesel::sql_types::Binary)]
        hashes: Vec<u8>,
        #[diesel(sql_type = diesel::sql_types::Binary)]
        root: Vec<u8>,
    }
    use diesel::RunQueryDsl;
    let rows: Vec<T> = diesel::sql_query("SELECT level, idx, hashes, root FROM journal_tiles ORDER BY level, idx").load(c).unwrap();
    rows.into_iter().map(|r| (r.level, r.idx, r.hashes, r.root)).collect()
}

/// The tiles the tree of `leaves` should have, made in memory.
fn expected_tiles(leaves: &[Hash]) -> Vec<(i32, i64, Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    let mut level_hashes = leaves.to_vec();
    let mut level = 0;
    while level_hashes.len() >= 256 {
        let mut roots = Vec::new();
        for (i, (h, r)) in tile::full_tiles_of(&level_hashes).enumerate() {
            out.push((level, i as i64, tile::to_bytes(h), r.to_vec()));
            roots.push(r);
        }
        level_hashes = roots;
        level += 1;
    }
    out
}

fn allow_tile_changes(t: &TestDb) {
    let sql = match t.name() {
        "sqlite" => "DROP TRIGGER journal_tiles_no_update; DROP TRIGGER journal_tiles_no_delete;",
        _ => "ALTER TABLE journal_tiles DISABLE TRIGGER USER;",
    };
    t.db.read(|c| Ok(c.batch_execute(sql)?)).unwrap();
}

#[test]
fn catch_up_builds_the_backlog_and_verify_finds_a_bad_tile() {
    const N: u64 = 256 * 256 + 300;
    for t in TestDb::both() {
        let name = t.name();
        let all = numbered_without_tiles(&t, N);
        t.db.read(|c| {
            // Without tiles, roots and proofs come from the leaves.
            check_tree(c, &all, N, &[0, N - 1], &[1, 65_536], name);
            // The numbering transaction does not take on a backlog.
            broker_store::tx::write_tx(c, |c| tiles::extend(c, N as i64))?;
            assert!(all_tiles(c).is_empty(), "{name}");
            assert_eq!(tiles::catch_up(c)?, 257 + 1, "{name}");
            assert_eq!(tiles::catch_up(c)?, 0, "{name}");
            assert_eq!(all_tiles(c), expected_tiles(&all), "{name}");
            assert_eq!(tiles::verify(c, N as i64)?, None, "{name}");
            check_tree(c, &all, N, &[0, 1000, 65_535, 65_536, N - 1], &[0, 1, 300, 65_536, 65_537, N], name);
            // A proof reads a few rows.
            let mut src = Tiled::new(DbTiles::new(c), N);
            inclusion_proof_of(&mut src, 12_345, N).map_err(|_| StoreError::Invalid("proof".into()))?;
            assert!(src.reader.queries <= 12, "{name}: {} queries", src.reader.queries);
            Ok(())
        })
        .unwrap();

        allow_tile_changes(&t);
        let before = t.db.read(|c| Ok(all_tiles(c))).unwrap();
        let sql = match name {
            "sqlite" => "UPDATE journal_tiles SET hashes = zeroblob(8192) WHERE level = 0 AND idx = 3",
            _ => "UPDATE journal_tiles SET hashes = decode(repeat('00', 8192), 'hex') WHERE level = 0 AND idx = 3",
        };
        t.db.read(|c| Ok(c.batch_execute(sql)?)).unwrap();
        let fault = t.db.read(|c| tiles::verify(c, N as i64)).unwrap().unwrap();
        assert_eq!((fault.tile, fault.first_seq), (TileId::full(0, 3), 3 * 256 + 1), "{name}");
        assert!(fault.to_string().contains("tile/0/003"), "{name}");

        // Tiles removed: catch_up makes them again, the same.
        t.db.read(|c| Ok(c.batch_execute("DELETE FROM journal_tiles")?)).unwrap();
        assert_eq!(t.db.read(tiles::catch_up).unwrap(), 258, "{name}");
        assert_eq!(t.db.read(|c| Ok(all_tiles(c))).unwrap(), before, "{name}");

        // A tile beyond the tree is a fault too.
        let sql = "INSERT INTO journal_tiles (level, idx, hashes, root) SELECT 0, 300, hashes, root FROM journal_tiles WHERE level = 0 AND idx = 0";
        t.db.read(|c| Ok(c.batch_execute(sql)?)).unwrap();
        let fault = t.db.read(|c| tiles::verify(c, N as i64)).unwrap().unwrap();
        assert_eq!(fault.tile, TileId::full(0, 257), "{name}");
    }
}

#[test]
fn numbering_after_catch_up_extends_the_tiles() {
    for t in TestDb::both() {
        let name = t.name();
        numbered_without_tiles(&t, 600);
        assert_eq!(t.db.read(tiles::catch_up).unwrap(), 2, "{name}");
        append_batch(&t, 600, 200);
        let stored = t.db.read(|c| Ok(stored_count(c, 0))).unwrap();
        assert_eq!(stored, 3, "{name}: the tile filled by the new entries is stored with them");
        let all: Vec<Hash> = t.db.read(|c| checkpoints::leaf_hashes(c, 800)).unwrap();
        t.db.read(|c| {
            assert_eq!(tiles::verify(c, 800)?, None, "{name}");
            check_tree(c, &all, 800, &[0, 767, 768, 799], &[1, 600, 768], name);
            Ok(())
        })
        .unwrap();
    }
}

#[test]
fn stored_tiles_are_append_only_and_published_as_tlog_tiles() {
    for t in TestDb::both() {
        let name = t.name();
        append_batch(&t, 0, 700);
        let all = leaves(&t);
        let body = |id: TileId| t.db.read(|c| tiles::body(c, id)).unwrap();
        assert_eq!(body(TileId::full(0, 1)), Some(tile::to_bytes(&all[256..512])), "{name}");
        assert_eq!(body(TileId { level: 0, index: 2, width: 188 }), Some(tile::to_bytes(&all[512..700])), "{name}");
        assert_eq!(body(TileId { level: 0, index: 2, width: 10 }), Some(tile::to_bytes(&all[512..522])), "{name}");
        assert_eq!(body(TileId { level: 0, index: 0, width: 10 }), Some(tile::to_bytes(&all[..10])), "{name}");
        let level1 = vec![merkle::root(&all[..256]), merkle::root(&all[256..512])];
        assert_eq!(body(TileId { level: 1, index: 0, width: 2 }), Some(tile::to_bytes(&level1)), "{name}");
        assert_eq!(body(TileId { level: 0, index: 2, width: 189 }), None, "{name}: beyond the tree");
        assert_eq!(body(TileId::full(0, 2)), None, "{name}");
        assert_eq!(body(TileId { level: 1, index: 0, width: 3 }), None, "{name}");
        assert_eq!(body(TileId { level: 2, index: 0, width: 1 }), None, "{name}");

        for sql in ["UPDATE journal_tiles SET idx = 9 WHERE idx = 0", "DELETE FROM journal_tiles WHERE idx = 0"] {
            assert!(t.db.read(|c| Ok(c.batch_execute(sql)?)).is_err(), "{name}: {sql} refused");
        }
        if name == "postgres" {
            assert!(t.db.read(|c| Ok(c.batch_execute("TRUNCATE journal_tiles")?)).is_err(), "TRUNCATE refused");
        }
        assert_eq!(t.db.read(|c| Ok(stored_count(c, 0))).unwrap(), 2, "{name}");
    }
}
