//! The journal's Merkle tree kept as stored tiles (C2SP tlog-tiles, see
//! [`broker_core::merkle::tile`] and docs/journal.md), so that a root or a proof reads
//! O(log n) rows instead of every leaf hash.
//!
//! `journal_tiles` holds full tiles only: level, index, the 256 hashes (32 raw bytes
//! each, concatenated) and the tile's own root. Tiles of one level are stored from index
//! 0 without gap: [`extend`] adds the tiles that became full in the numbering
//! transaction, [`catch_up`] builds a backlog (a journal numbered before tiles existed)
//! in pages. Partial tiles at the right edge are computed when asked: from at most 255
//! leaves, or from the roots of at most 255 full tiles of the level below.

use crate::checkpoints::{for_each_leaf_between, leaf_range};
use crate::schema::journal_tiles;
use crate::tx::write_tx;
use crate::{AnyConnection, StoreError};
use broker_core::merkle::sourced::{self, SourcedError, TileReader, Tiled};
use broker_core::merkle::tile::{self, full_tiles, TileId, MAX_LEVEL, TILE_WIDTH};
use broker_core::merkle::{Hash, RootBuilder};
use diesel::prelude::*;
use std::collections::HashMap;

/// Full tiles [`extend`] builds per level in the numbering transaction, at most. More
/// missing tiles are a backlog, left to [`catch_up`] (16,384 leaves: a numbering batch
/// and the tile it started in fit easily).
const EXTEND_TILES: u64 = 64;
/// Full tiles built per [`catch_up`] transaction (51,200 leaves at level 0).
const CATCH_UP_TILES: u64 = 200;

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = journal_tiles)]
struct Row {
    level: i32,
    idx: i64,
    hashes: Vec<u8>,
    root: Vec<u8>,
}

fn inconsistent(m: String) -> StoreError {
    StoreError::Conflict(format!("tuiles du journal incohérentes : {m}"))
}

/// Index of the first full tile of `level` not stored yet (tiles are stored from 0 on).
fn next_index(conn: &mut AnyConnection, level: u8) -> Result<u64, StoreError> {
    let max: Option<i64> = journal_tiles::table
        .filter(journal_tiles::level.eq(i32::from(level)))
        .select(diesel::dsl::max(journal_tiles::idx))
        .first(conn)?;
    Ok(max.map_or(0, |m| m as u64 + 1))
}

fn hash_of(bytes: &[u8], what: impl FnOnce() -> String) -> Result<Hash, StoreError> {
    bytes.try_into().map_err(|_| inconsistent(what()))
}

/// Roots of the stored full tiles `(level, first..first + count)`, or `None` unless
/// every one of them is stored.
fn tile_roots(conn: &mut AnyConnection, level: u8, first: u64, count: u64) -> Result<Option<Vec<Hash>>, StoreError> {
    let rows: Vec<Vec<u8>> = journal_tiles::table
        .filter(journal_tiles::level.eq(i32::from(level)))
        .filter(journal_tiles::idx.ge(first as i64))
        .filter(journal_tiles::idx.lt((first + count) as i64))
        .order(journal_tiles::idx.asc())
        .select(journal_tiles::root)
        .load(conn)?;
    if rows.len() as u64 != count {
        return Ok(None);
    }
    let roots = rows.iter().map(|r| hash_of(r, || format!("racine illisible au niveau {level}")));
    Ok(Some(roots.collect::<Result<_, _>>()?))
}

/// Hashes `first..first + count` of tree level `8·level`: leaf hashes at level 0, roots
/// of the full tiles of the level below otherwise (`None` when some are not stored).
fn level_hashes(conn: &mut AnyConnection, level: u8, first: u64, count: u64) -> Result<Option<Vec<Hash>>, StoreError> {
    match level {
        0 => Ok(Some(leaf_range(conn, first as i64, (first + count) as i64)?)),
        _ => tile_roots(conn, level - 1, first, count),
    }
}

/// The stored full tile `(level, index)`, if any.
fn stored(conn: &mut AnyConnection, level: u8, index: u64) -> Result<Option<Vec<Hash>>, StoreError> {
    let bytes: Option<Vec<u8>> = journal_tiles::table
        .find((i32::from(level), index as i64))
        .select(journal_tiles::hashes)
        .first(conn)
        .optional()?;
    let decode = |b: Vec<u8>| {
        tile::from_bytes(&b)
            .filter(|h| h.len() as u64 == TILE_WIDTH)
            .ok_or_else(|| inconsistent(format!("tuile {} illisible", TileId::full(level, index).path())))
    };
    bytes.map(decode).transpose()
}

/// Stores the full tiles made of `hashes` (a multiple of 256 hashes of tree level
/// `8·level`), the first being tile `first_index`. A tile already stored (by a
/// concurrent [`catch_up`]) is left as it is. Returns how many tiles were stored.
fn insert(conn: &mut AnyConnection, level: u8, first_index: u64, hashes: &[Hash]) -> Result<usize, StoreError> {
    let rows: Vec<Row> = tile::full_tiles_of(hashes)
        .enumerate()
        .map(|(i, (h, root))| Row {
            level: i32::from(level),
            idx: (first_index + i as u64) as i64,
            hashes: tile::to_bytes(h),
            root: root.to_vec(),
        })
        .collect();
    let mut stored = 0;
    for row in &rows {
        stored += match conn {
            AnyConnection::Postgresql(c) => {
                diesel::insert_into(journal_tiles::table).values(row).on_conflict_do_nothing().execute(c)?
            }
            AnyConnection::Sqlite(c) => diesel::insert_into(journal_tiles::table).values(row).on_conflict_do_nothing().execute(c)?,
        };
    }
    Ok(stored)
}

/// Builds and stores full tiles `first..first + count` of `level` from the level below.
/// `Ok(None)` when the level below is missing some of the tiles they are made of.
fn build(conn: &mut AnyConnection, level: u8, first: u64, count: u64) -> Result<Option<usize>, StoreError> {
    let Some(hashes) = level_hashes(conn, level, first * TILE_WIDTH, count * TILE_WIDTH)? else { return Ok(None) };
    insert(conn, level, first, &hashes).map(Some)
}

/// Whether numbering entries `first..=last` fills a level-0 tile (the only way a tile of
/// any level becomes full).
pub fn completes_a_tile(first: i64, last: i64) -> bool {
    let width = TILE_WIDTH as i64;
    first <= last && (first - 1).div_euclid(width) != last.div_euclid(width)
}

/// Stores every tile that became full now that entries are numbered up to `head_seq`,
/// level after level. Called inside the numbering transaction, after the head moved.
/// When more than a few tiles of a level are missing (a journal numbered before tiles
/// existed), nothing is read: that backlog is [`catch_up`]'s.
pub fn extend(conn: &mut AnyConnection, head_seq: i64) -> Result<(), StoreError> {
    let size = head_seq.max(0) as u64;
    for level in 0..=MAX_LEVEL {
        let target = full_tiles(level, size);
        let next = next_index(conn, level)?;
        if next >= target || target - next > EXTEND_TILES {
            return Ok(());
        }
        if build(conn, level, next, target - next)?.is_none() {
            return Ok(());
        }
    }
    Ok(())
}

/// Builds every missing full tile of the numbered tree, level after level, reading the
/// level below in pages, [`CATCH_UP_TILES`] tiles per transaction. Run outside any
/// transaction (by `broker migrate`, and before a checkpoint is made). Returns the
/// number of tiles stored.
pub fn catch_up(conn: &mut AnyConnection) -> Result<usize, StoreError> {
    let size = crate::journal::head(conn)?.0.max(0) as u64;
    let mut built = 0;
    for level in 0..=MAX_LEVEL {
        let target = full_tiles(level, size);
        if target == 0 {
            break;
        }
        loop {
            let next = next_index(conn, level)?;
            if next >= target {
                break;
            }
            let count = (target - next).min(CATCH_UP_TILES);
            let made = write_tx(conn, |c| build(c, level, next, count))?;
            let Some(made) = made else {
                return Err(inconsistent(format!("tuiles du niveau {} manquantes", level.saturating_sub(1))));
            };
            built += made;
        }
    }
    Ok(built)
}

/// Reads tiles from the database for one computation, keeping those it read: a full
/// tile from `journal_tiles`, a partial one from at most 255 leaves or tile roots (one
/// query), and when tiles are missing, a node from its leaves.
pub struct DbTiles<'c> {
    conn: &'c mut AnyConnection,
    cache: HashMap<TileId, Option<Vec<Hash>>>,
    /// Queries made so far.
    pub queries: usize,
}

impl<'c> DbTiles<'c> {
    pub fn new(conn: &'c mut AnyConnection) -> Self {
        Self { conn, cache: HashMap::new(), queries: 0 }
    }

    /// A full tile from `journal_tiles`; otherwise (partial, or not stored) from the
    /// level below.
    fn fetch(&mut self, t: TileId) -> Result<Option<Vec<Hash>>, StoreError> {
        if t.is_full() {
            self.queries += 1;
            if let Some(h) = stored(self.conn, t.level, t.index)? {
                return Ok(Some(h));
            }
        }
        self.queries += 1;
        level_hashes(self.conn, t.level, t.first(), u64::from(t.width))
    }
}

impl TileReader for DbTiles<'_> {
    type Error = StoreError;

    fn tile(&mut self, t: TileId) -> Result<Option<&[Hash]>, StoreError> {
        if !self.cache.contains_key(&t) {
            let got = self.fetch(t)?;
            self.cache.insert(t, got);
        }
        Ok(self.cache.get(&t).and_then(|h| h.as_deref()))
    }

    fn leaves_root(&mut self, height: u32, index: u64) -> Result<Hash, StoreError> {
        self.queries += 1;
        let (lo, hi) = (index << height, (index + 1) << height);
        let mut b = RootBuilder::new();
        for_each_leaf_between(self.conn, lo as i64, hi as i64, |_, h| b.push(&h))?;
        Ok(b.root())
    }
}

fn source_error(e: SourcedError<StoreError>) -> StoreError {
    match e {
        SourcedError::Proof(p) => StoreError::Invalid(p.to_string()),
        SourcedError::Source(s) => s,
    }
}

/// Root of the tree of entries 1 to `size`, from the tiles.
pub fn root(conn: &mut AnyConnection, size: i64) -> Result<Hash, StoreError> {
    let size = size.max(0) as u64;
    sourced::root_of(&mut Tiled::new(DbTiles::new(conn), size), size)
}

/// Audit path of leaf `index` (entry `index + 1`) in the tree of `size` entries, from
/// the tiles.
pub fn inclusion_proof(conn: &mut AnyConnection, index: u64, size: u64) -> Result<Vec<Hash>, StoreError> {
    sourced::inclusion_proof_of(&mut Tiled::new(DbTiles::new(conn), size), index, size).map_err(source_error)
}

/// Consistency proof from the tree of `old_size` entries to the tree of `size`, from
/// the tiles.
pub fn consistency_proof(conn: &mut AnyConnection, old_size: u64, size: u64) -> Result<Vec<Hash>, StoreError> {
    sourced::consistency_proof_of(&mut Tiled::new(DbTiles::new(conn), size), old_size, size).map_err(source_error)
}

/// The body of `tile` (its hashes, 32 bytes each) as published: a full tile once stored,
/// a partial tile whose hashes all exist in the current numbered tree. `None` otherwise.
pub fn body(conn: &mut AnyConnection, t: TileId) -> Result<Option<Vec<u8>>, StoreError> {
    let size = crate::journal::head(conn)?.0.max(0) as u64;
    if !t.exists_in(size) {
        return Ok(None);
    }
    if let Some(full) = stored(conn, t.level, t.index)? {
        return Ok(Some(tile::to_bytes(&full[..usize::from(t.width)])));
    }
    if t.is_full() {
        return Ok(None);
    }
    Ok(level_hashes(conn, t.level, t.first(), u64::from(t.width))?.map(|h| tile::to_bytes(&h)))
}

/// A stored tile that does not match the entries it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TileFault {
    pub tile: TileId,
    /// The first entry the tile covers.
    pub first_seq: i64,
}

impl std::fmt::Display for TileFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "tuile {} différente des entrées qu'elle couvre (à partir du numéro {})",
            self.tile.path(),
            self.first_seq
        )
    }
}

fn fault(level: u8, index: u64) -> TileFault {
    let shift = 8 * u32::from(level);
    let first_leaf = if shift >= 64 { u128::MAX } else { (u128::from(index) * u128::from(TILE_WIDTH)) << shift };
    TileFault { tile: TileId::full(level, index), first_seq: i64::try_from(first_leaf.saturating_add(1)).unwrap_or(i64::MAX) }
}

/// Stored tiles of `level` with index in `first..first + count`, in order.
fn stored_range(conn: &mut AnyConnection, level: u8, first: u64, count: u64) -> Result<Vec<Row>, StoreError> {
    Ok(journal_tiles::table
        .filter(journal_tiles::level.eq(i32::from(level)))
        .filter(journal_tiles::idx.ge(first as i64))
        .filter(journal_tiles::idx.lt((first + count) as i64))
        .order(journal_tiles::idx.asc())
        .select(Row::as_select())
        .load(conn)?)
}

/// Compares the stored tiles of `level`, from index `first`, with the tiles made of
/// `hashes` (that level's hashes from `first·256`); returns the roots of the tiles made.
fn compare(conn: &mut AnyConnection, level: u8, first: u64, hashes: &[Hash]) -> Result<Result<Vec<Hash>, TileFault>, StoreError> {
    let made: Vec<(&[Hash], Hash)> = tile::full_tiles_of(hashes).collect();
    for row in stored_range(conn, level, first, made.len() as u64)? {
        let i = row.idx as u64 - first;
        let (h, r) = made[i as usize];
        if row.hashes != tile::to_bytes(h) || row.root != r {
            return Ok(Err(fault(level, row.idx as u64)));
        }
    }
    Ok(Ok(made.into_iter().map(|(_, r)| r).collect()))
}

/// Compares the stored full tiles of level 0 with the leaf hashes of entries 1 to
/// `size`, read in pages; returns the roots of the tiles made.
fn verify_leaf_tiles(conn: &mut AnyConnection, size: u64) -> Result<Result<Vec<Hash>, TileFault>, StoreError> {
    let target = full_tiles(0, size);
    let mut roots = Vec::with_capacity(target as usize);
    let mut first = 0;
    while first < target {
        let count = (target - first).min(CATCH_UP_TILES);
        let leaves = leaf_range(conn, (first * TILE_WIDTH) as i64, ((first + count) * TILE_WIDTH) as i64)?;
        match compare(conn, 0, first, &leaves)? {
            Ok(r) => roots.extend(r),
            Err(f) => return Ok(Err(f)),
        }
        first += count;
    }
    Ok(Ok(roots))
}

/// A stored tile above `level`, if any.
fn any_above(conn: &mut AnyConnection, level: u8) -> Result<Option<TileFault>, StoreError> {
    let row: Option<(i32, i64)> = journal_tiles::table
        .filter(journal_tiles::level.gt(i32::from(level)))
        .select((journal_tiles::level, journal_tiles::idx))
        .first(conn)
        .optional()?;
    Ok(row.map(|(l, i)| fault(l.clamp(0, i32::from(MAX_LEVEL)) as u8, i.max(0) as u64)))
}

/// Checks every stored tile against the tree of the entries 1 to `size` (their stored
/// leaf hashes, read in pages): same hashes, same root, and no tile beyond the tree.
/// Missing tiles are no fault (proofs then read leaves). Run it on one snapshot.
pub fn verify(conn: &mut AnyConnection, size: i64) -> Result<Option<TileFault>, StoreError> {
    let size = size.max(0) as u64;
    let mut roots = match verify_leaf_tiles(conn, size)? {
        Ok(r) => r,
        Err(f) => return Ok(Some(f)),
    };
    for level in 0..=MAX_LEVEL {
        if level > 0 {
            roots = match compare(conn, level, 0, &roots)? {
                Ok(r) => r,
                Err(f) => return Ok(Some(f)),
            };
        }
        let target = full_tiles(level, size);
        if next_index(conn, level)? > target {
            return Ok(Some(fault(level, target)));
        }
        if target == 0 {
            return any_above(conn, level);
        }
    }
    Ok(None)
}
