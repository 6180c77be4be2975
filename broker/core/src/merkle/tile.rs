//! The journal's Merkle tree laid out in tiles, as in C2SP tlog-tiles.
//!
//! A tile has height 8: the tile at level `L`, index `N` holds the hashes of tree level
//! `8·L` (level 0: the leaf hashes), nodes `N·256` to `N·256 + 255`. Its own root, the
//! hash of the 256-leaf complete subtree over them, is node `N` of tree level `8·(L+1)`,
//! that is hash `N mod 256` of tile `(L+1, N / 256)`. At the right edge of a tree whose
//! level `8·L` has `c` hashes, the last tile is partial, of width `c mod 256` (1 to 255).
//!
//! A tile's path is `tile/<L>/<N>[.p/<W>]`: `L` in decimal (0 to 63, no leading zero),
//! `N` in groups of three digits, every group but the last prefixed with `x`
//! (1234067 → `x001/x234/067`), and, for a partial tile only, `.p/<W>` with its width
//! `W` in decimal (1 to 255, no leading zero). Its body is the concatenation of its
//! hashes, 32 bytes each.

use super::{root, Hash};

/// Tree levels per tile.
pub const TILE_HEIGHT: u32 = 8;
/// Hashes in a full tile.
pub const TILE_WIDTH: u64 = 1 << TILE_HEIGHT;
/// The highest tile level a path may name.
pub const MAX_LEVEL: u8 = 63;
/// The largest tile index a path may name: the first hash of the tile must have an
/// index that fits in 64 bits.
pub const MAX_INDEX: u64 = u64::MAX >> TILE_HEIGHT;

/// One tile of a tree: level, index, and width (256 for a full tile).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TileId {
    pub level: u8,
    pub index: u64,
    /// 1 to 256.
    pub width: u16,
}

/// Why a tile path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TilePathError {
    #[error("le chemin ne commence pas par « tile/ »")]
    Prefix,
    #[error("niveau de tuile invalide (0 à 63, sans zéro initial)")]
    Level,
    #[error("numéro de tuile invalide (groupes de trois chiffres, préfixés par « x » sauf le dernier)")]
    Index,
    #[error("largeur de tuile partielle invalide (1 à 255, sans zéro initial)")]
    Width,
}

/// Number of hashes at tree level `8·level` in a tree of `size` leaves (the complete
/// subtrees of height `8·level`).
pub fn level_len(level: u8, size: u64) -> u64 {
    let shift = u32::from(level) * TILE_HEIGHT;
    if shift >= 64 {
        0
    } else {
        size >> shift
    }
}

/// Number of full tiles at `level` in a tree of `size` leaves.
pub fn full_tiles(level: u8, size: u64) -> u64 {
    level_len(level, size) / TILE_WIDTH
}

/// The root of a full tile: the hash of the complete subtree over its 256 hashes.
pub fn tile_root(hashes: &[Hash]) -> Hash {
    debug_assert_eq!(hashes.len() as u64, TILE_WIDTH);
    root(hashes)
}

impl TileId {
    pub fn full(level: u8, index: u64) -> Self {
        Self { level, index, width: TILE_WIDTH as u16 }
    }

    /// Tile `(level, index)` as it is in a tree of `size` leaves: full, partial, or
    /// `None` when the tree has no hash of it yet.
    pub fn in_tree(level: u8, index: u64, size: u64) -> Option<Self> {
        let start = u128::from(index) * u128::from(TILE_WIDTH);
        let len = u128::from(level_len(level, size));
        let width = len.checked_sub(start)?.min(u128::from(TILE_WIDTH));
        (width > 0 && level <= MAX_LEVEL).then_some(Self { level, index, width: width as u16 })
    }

    pub fn is_full(&self) -> bool {
        u64::from(self.width) == TILE_WIDTH
    }

    /// Whether the tree of `size` leaves has every hash of this tile (a partial tile is
    /// a prefix of its full tile: its hashes never change once they exist).
    pub fn exists_in(&self, size: u64) -> bool {
        let end = u128::from(self.index) * u128::from(TILE_WIDTH) + u128::from(self.width);
        self.level <= MAX_LEVEL && self.width > 0 && end <= u128::from(level_len(self.level, size))
    }

    /// Index, at tree level `8·level`, of this tile's first hash.
    pub fn first(&self) -> u64 {
        self.index * TILE_WIDTH
    }

    /// `tile/<L>/<N>[.p/<W>]`.
    pub fn path(&self) -> String {
        let mut p = format!("tile/{}/{}", self.level, index_path(self.index));
        if !self.is_full() {
            p.push_str(&format!(".p/{}", self.width));
        }
        p
    }

    /// Parses `tile/<L>/<N>[.p/<W>]`, refusing every other spelling of the same tile.
    pub fn parse(path: &str) -> Result<Self, TilePathError> {
        let rest = path.strip_prefix("tile/").ok_or(TilePathError::Prefix)?;
        let (level, rest) = rest.split_once('/').ok_or(TilePathError::Level)?;
        let level = decimal(level, u64::from(MAX_LEVEL)).ok_or(TilePathError::Level)? as u8;
        let (index, width) = match rest.split_once(".p/") {
            Some((index, w)) => {
                let w = decimal(w, TILE_WIDTH - 1).filter(|&w| w > 0).ok_or(TilePathError::Width)?;
                (index, w as u16)
            }
            None => (rest, TILE_WIDTH as u16),
        };
        let index = parse_index(index).ok_or(TilePathError::Index)?;
        Ok(Self { level, index, width })
    }
}

/// `N` as groups of three digits, all but the last prefixed with `x`.
fn index_path(mut n: u64) -> String {
    let mut groups = vec![format!("{:03}", n % 1000)];
    n /= 1000;
    while n > 0 {
        groups.push(format!("x{:03}", n % 1000));
        n /= 1000;
    }
    groups.reverse();
    groups.join("/")
}

/// A decimal number without leading zero (except `0` itself), at most `max`.
fn decimal(s: &str, max: u64) -> Option<u64> {
    let canonical = !s.is_empty() && s.len() <= 3 && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    let n: u64 = s.parse().ok().filter(|_| canonical)?;
    (n <= max).then_some(n)
}

/// Three ASCII digits.
fn group(s: &str) -> Option<u64> {
    (s.len() == 3 && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok())?
}

/// The inverse of [`index_path`]: the first group is not `x000` (no leading zero
/// group), and the value is at most [`MAX_INDEX`].
fn parse_index(s: &str) -> Option<u64> {
    let groups: Vec<&str> = s.split('/').collect();
    let (last, prefixed) = groups.split_last()?;
    if prefixed.len() > 6 || prefixed.first() == Some(&"x000") {
        return None;
    }
    let mut n: u64 = 0;
    for g in prefixed {
        n = n.checked_mul(1000)?.checked_add(group(g.strip_prefix('x')?)?)?;
    }
    n = n.checked_mul(1000)?.checked_add(group(last)?)?;
    (n <= MAX_INDEX).then_some(n)
}

/// The full tiles of one level built from that level's hashes, in order: each chunk of
/// 256 hashes is a tile, with its root. A trailing partial chunk is left out.
pub fn full_tiles_of(hashes: &[Hash]) -> impl Iterator<Item = (&[Hash], Hash)> {
    hashes.chunks_exact(TILE_WIDTH as usize).map(|c| (c, tile_root(c)))
}

/// Concatenates hashes into a tile body (32 bytes each).
pub fn to_bytes(hashes: &[Hash]) -> Vec<u8> {
    hashes.iter().flat_map(|h| h.iter().copied()).collect()
}

/// Splits a tile body into hashes; `None` unless its length is a multiple of 32.
pub fn from_bytes(bytes: &[u8]) -> Option<Vec<Hash>> {
    if !bytes.len().is_multiple_of(32) {
        return None;
    }
    bytes.chunks_exact(32).map(|c| c.try_into().ok()).collect()
}

#[cfg(test)]
#[path = "tile_tests.rs"]
mod tests;
