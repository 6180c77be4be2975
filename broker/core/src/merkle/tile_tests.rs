use super::*;

fn parse(p: &str) -> Result<TileId, TilePathError> {
    TileId::parse(p)
}

#[test]
fn paths_follow_tlog_tiles() {
    assert_eq!(TileId::full(0, 1_234_067).path(), "tile/0/x001/x234/067");
    assert_eq!(TileId::full(0, 0).path(), "tile/0/000");
    assert_eq!(TileId::full(3, 1000).path(), "tile/3/x001/000");
    assert_eq!(TileId { level: 1, index: 5, width: 17 }.path(), "tile/1/005.p/17");
    assert_eq!(TileId::full(63, MAX_INDEX).path(), "tile/63/x072/x057/x594/x037/x927/935");
}

#[test]
fn paths_parse_back() {
    for index in [0, 1, 999, 1000, 1001, 123_456, 1_234_067, 999_999_999, MAX_INDEX] {
        for level in [0u8, 1, 9, 63] {
            for width in [1u16, 17, 255, 256] {
                let t = TileId { level, index, width };
                assert_eq!(parse(&t.path()), Ok(t), "{}", t.path());
            }
        }
    }
}

#[test]
fn other_spellings_are_refused() {
    use TilePathError::*;
    let cases = [
        ("0/000", Prefix),
        ("tiles/0/000", Prefix),
        ("tile/00/000", Level),
        ("tile/01/000", Level),
        ("tile/64/000", Level),
        ("tile/999/000", Level),
        ("tile//000", Level),
        ("tile/-1/000", Level),
        ("tile/+1/000", Level),
        ("tile/0", Level),
        ("tile/0/", Index),
        ("tile/0/0", Index),
        ("tile/0/01", Index),
        ("tile/0/0001", Index),
        ("tile/0/x000/001", Index),
        ("tile/0/x001", Index),
        ("tile/0/001/002", Index),
        ("tile/0/x1/000", Index),
        ("tile/0/x0001/000", Index),
        ("tile/0/000/", Index),
        ("tile/0//000", Index),
        ("tile/0/x001//000", Index),
        ("tile/0/+01", Index),
        ("tile/0/ 01", Index),
        ("tile/0/x999/x999/x999/x999/x999/x999/999", Index),
        ("tile/0/x072/x057/x594/x037/x927/936", Index),
        ("tile/0/x001/x000/x000/x000/x000/x000/x000/000", Index),
        ("tile/0/000.p/0", Width),
        ("tile/0/000.p/256", Width),
        ("tile/0/000.p/05", Width),
        ("tile/0/000.p/", Width),
        ("tile/0/000.p/1/", Width),
        ("tile/0/000.p/x1", Width),
        ("tile/0/000.p/5.p/5", Width),
    ];
    for (path, err) in cases {
        assert_eq!(parse(path), Err(err), "{path}");
    }
}

#[test]
fn tiles_in_a_tree() {
    assert_eq!(level_len(0, 1000), 1000);
    assert_eq!(level_len(1, 1000), 3);
    assert_eq!(level_len(2, 1 << 20), 16);
    assert_eq!(level_len(8, u64::MAX), 0);
    assert_eq!(level_len(63, u64::MAX), 0);
    assert_eq!(full_tiles(0, 1000), 3);
    assert_eq!(full_tiles(1, 1000), 0);
    assert_eq!(TileId::in_tree(0, 3, 1000), Some(TileId { level: 0, index: 3, width: 232 }));
    assert_eq!(TileId::in_tree(0, 2, 1000), Some(TileId::full(0, 2)));
    assert_eq!(TileId::in_tree(0, 4, 1000), None);
    assert_eq!(TileId::in_tree(1, 0, 1000), Some(TileId { level: 1, index: 0, width: 3 }));
    assert_eq!(TileId::in_tree(1, 0, 255), None);
    assert_eq!(TileId::in_tree(0, MAX_INDEX, u64::MAX), Some(TileId { level: 0, index: MAX_INDEX, width: 255 }));
    let partial = TileId { level: 0, index: 3, width: 200 };
    assert!(partial.exists_in(1000) && partial.exists_in(968) && !partial.exists_in(967));
    assert!(!TileId::full(0, 3).exists_in(1000) && TileId::full(0, 3).exists_in(1024));
    assert!(!TileId { level: 0, index: MAX_INDEX, width: 256 }.exists_in(u64::MAX));
}

#[test]
fn tile_roots_and_bodies() {
    let leaves: Vec<Hash> = (0..600u32).map(|i| crate::journal::leaf_hash(&i.to_be_bytes())).collect();
    let tiles: Vec<_> = full_tiles_of(&leaves).collect();
    assert_eq!(tiles.len(), 2);
    assert_eq!(tiles[1].0, &leaves[256..512]);
    assert_eq!(tiles[0].1, root(&leaves[..256]));
    assert_eq!(tiles[1].1, root(&leaves[256..512]));
    let body = to_bytes(tiles[0].0);
    assert_eq!(body.len(), 8192);
    assert_eq!(from_bytes(&body).as_deref(), Some(tiles[0].0));
    assert_eq!(from_bytes(&body[..100]), None);
}
