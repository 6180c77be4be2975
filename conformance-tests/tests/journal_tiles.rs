//! The journal's tiles as a mirror or an auditor fetches them (C2SP tlog-tiles under
//! `/journal/tile/`): the latest checkpoint's root and proofs recomputed from tiles
//! fetched over HTTP from the real binary, and strict paths.

use broker_core::checkpoint::VerifierKey;
use broker_core::journal::{parse_hash, Action, Entry};
use broker_core::merkle::sourced::{inclusion_proof_of, root_of, TileReader, Tiled};
use broker_core::merkle::tile::{self, TileId};
use broker_core::merkle::{self, Hash};
use broker_store::journal;
use broker_testkit::{redis_url, TestDb};
use conformance_tests::{agent, Broker};
use serde_json::Value;
use std::collections::HashMap;

/// GET returning status, content type, cache control and the body's bytes.
fn get_bytes(b: &Broker, path: &str) -> (u16, String, String, Vec<u8>) {
    let mut r = agent().get(format!("{}{}", b.base, path)).call().unwrap();
    let header = |name: &str| r.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let (ct, cc) = (header("content-type"), header("cache-control"));
    let body = r.body_mut().read_to_vec().unwrap_or_default();
    (r.status().as_u16(), ct, cc, body)
}

/// Tiles fetched over HTTP, as a mirror would.
struct HttpTiles<'a> {
    b: &'a Broker,
    got: HashMap<TileId, Vec<Hash>>,
}

impl TileReader for HttpTiles<'_> {
    type Error = String;

    fn tile(&mut self, t: TileId) -> Result<Option<&[Hash]>, String> {
        if !self.got.contains_key(&t) {
            let path = t.path();
            let (status, ct, cc, body) = get_bytes(self.b, &format!("/journal/{path}"));
            if status != 200 {
                return Err(format!("{path}: {status} {}", String::from_utf8_lossy(&body)));
            }
            assert_eq!(ct, "application/octet-stream", "{path}");
            let expected_cache = if t.is_full() { "public, max-age=31536000, immutable" } else { "public, max-age=60" };
            assert_eq!(cc, expected_cache, "{path}");
            let hashes = tile::from_bytes(&body).filter(|h| h.len() == usize::from(t.width)).ok_or(format!("{path}: {} bytes", body.len()))?;
            self.got.insert(t, hashes);
        }
        Ok(self.got.get(&t).map(Vec::as_slice))
    }

    fn leaves_root(&mut self, height: u32, index: u64) -> Result<Hash, String> {
        Err(format!("node ({height}, {index}) asked outside the tiles"))
    }
}

fn prefill(t: &TestDb, n: usize) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(97) {
        let entries: Vec<Entry> = chunk.iter().map(|i| Entry::new(Action::AidantLogin).aidant(*i as i64 + 1).detail("method", "totp")).collect();
        t.db.write(|c| journal::append(c, &entries)).unwrap();
    }
}

#[test]
fn tiles_fetched_over_http_give_the_latest_checkpoint_root_and_proofs() {
    let t = TestDb::postgres();
    prefill(&t, 700);
    let prefix = format!("ac-tiles-{}:", hex::encode(rand::random::<[u8; 6]>()));
    let b = Broker::start(&[("DATABASE_URL", &t.url), ("REDIS_URL", &redis_url()), ("AC_CACHE_PREFIX", &prefix), ("AC_JOURNAL_CHECKPOINT_SECONDS", "1")]);
    let (_, _, key) = b.get("/journal/cle");
    let vkey = VerifierKey::parse(key.trim()).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let cp = loop {
        let (status, _, body) = b.get("/journal/checkpoint");
        if status == 200 {
            let cp = vkey.verify(&body).unwrap();
            if cp.size >= 700 {
                break cp;
            }
        }
        assert!(std::time::Instant::now() < deadline, "no checkpoint of the prefilled journal after 20 s");
        std::thread::sleep(std::time::Duration::from_millis(200));
    };

    // The root from the fewest tiles (full ones and the right edge's partial ones).
    let mut src = Tiled::new(HttpTiles { b: &b, got: HashMap::new() }, cp.size);
    assert_eq!(root_of(&mut src, cp.size), Ok(cp.root));
    // Every leaf from the level-0 tiles: the same root.
    let mut leaves = Vec::new();
    for index in 0..cp.size.div_ceil(256) {
        let t = TileId::in_tree(0, index, cp.size).unwrap();
        leaves.extend(src.reader.tile(t).unwrap().unwrap().to_vec());
    }
    assert_eq!(merkle::root(&leaves), cp.root);
    // An inclusion proof from tiles is the broker's.
    for seq in [1u64, 256, 257, 600, cp.size] {
        let proof = inclusion_proof_of(&mut src, seq - 1, cp.size).unwrap();
        let (status, _, body) = b.get(&format!("/journal/preuves/inclusion?seq={seq}&taille={}", cp.size));
        assert_eq!(status, 200, "{body}");
        let p: Value = serde_json::from_str(&body).unwrap();
        let served: Vec<Hash> = p["proof"].as_array().unwrap().iter().map(|h| parse_hash(h.as_str().unwrap()).unwrap()).collect();
        assert_eq!(proof, served, "seq {seq}");
        assert_eq!(merkle::verify_inclusion(&leaves[seq as usize - 1], seq - 1, cp.size, &proof, &cp.root), Ok(()));
    }

    // Tiles and widths the tree does not have (yet), and other spellings of existing ones.
    for path in [
        "/journal/tile/0/009.p/1".to_owned(),
        "/journal/tile/0/009".into(),
        "/journal/tile/1/000".into(),
        "/journal/tile/1/000.p/9".into(),
        "/journal/tile/2/000.p/1".into(),
        "/journal/tile/0/00".into(),
        "/journal/tile/0/0000".into(),
        "/journal/tile/00/000".into(),
        "/journal/tile/64/000".into(),
        "/journal/tile/0/x000/001".into(),
        "/journal/tile/0/000.p/0".into(),
        "/journal/tile/0/000.p/256".into(),
        "/journal/tile/0/000.p/01".into(),
        "/journal/tile/0/x999/x999/x999/x999/x999/x999/999".into(),
        "/journal/tile/entries/000".into(),
    ] {
        let (status, ct, _, body) = get_bytes(&b, &path);
        assert_eq!(status, 404, "{path}");
        assert_eq!(ct, "text/plain; charset=utf-8", "{path}");
        assert!(String::from_utf8(body).unwrap().starts_with("tuile "), "{path}");
    }
    // A partial tile is served at any width whose hashes exist.
    let (status, _, _, body) = get_bytes(&b, "/journal/tile/0/001.p/7");
    assert_eq!((status, body), (200, tile::to_bytes(&leaves[256..263])));
    let (status, _, _, body) = get_bytes(&b, "/journal/tile/1/000.p/2");
    assert_eq!((status, body), (200, tile::to_bytes(&[merkle::root(&leaves[..256]), merkle::root(&leaves[256..512])])));
    drop(b);
}
