//! Roots and proofs computed from the hashes of complete subtrees instead of every leaf.
//!
//! Every subtree of the RFC 6962 tree is a run of complete subtrees (height `h`, index
//! `i`: leaves `i·2^h` to `(i+1)·2^h - 1`), one per bit of its size, so a root, an
//! inclusion proof or a consistency proof of a tree of `n` leaves needs O(log n) of them.
//! A [`NodeSource`] gives these hashes; [`Tiled`] gives them from the tiles of
//! [`super::tile`], hashing at most 2^7 pairs within one tile per node.

use super::tile::{TileId, TILE_HEIGHT};
use super::{consistency_ranges, empty_root, inclusion_ranges, node_hash, root, Hash, ProofError};

/// Hashes of complete subtrees.
pub trait NodeSource {
    type Error;
    /// Hash of the complete subtree of height `height` at `index` (its leaves are
    /// `index·2^height` to `(index+1)·2^height - 1`). Only asked for subtrees within the
    /// tree the caller works on.
    fn node(&mut self, height: u32, index: u64) -> Result<Hash, Self::Error>;
}

/// Height of the largest complete subtree starting at leaf `at` that fits in `len` leaves.
fn largest_subtree(at: u64, len: u64) -> u32 {
    let fits = 63 - len.leading_zeros();
    fits.min(at.trailing_zeros())
}

/// Hash of the subtree over leaves `[lo, hi)`, `lo < hi`, where `lo` is a multiple of the
/// smallest power of two ≥ `hi - lo` (true of every subtree of the RFC 6962 tree): its
/// complete subtrees, largest first, folded from the right.
pub fn range_hash<S: NodeSource>(src: &mut S, lo: u64, hi: u64) -> Result<Hash, S::Error> {
    debug_assert!(lo < hi);
    let mut parts = Vec::with_capacity(64);
    let mut at = lo;
    while at < hi {
        let h = largest_subtree(at, hi - at);
        parts.push(src.node(h, at >> h)?);
        at += 1 << h;
    }
    let mut acc = parts.pop().expect("at least one subtree");
    while let Some(left) = parts.pop() {
        acc = node_hash(&left, &acc);
    }
    Ok(acc)
}

/// Merkle Tree Hash of the tree of `size` leaves.
pub fn root_of<S: NodeSource>(src: &mut S, size: u64) -> Result<Hash, S::Error> {
    if size == 0 {
        return Ok(empty_root());
    }
    range_hash(src, 0, size)
}

/// Audit path of leaf `index` in the tree of `size` leaves, from the leaf up (as
/// [`super::inclusion_proof`]).
pub fn inclusion_proof_of<S: NodeSource>(src: &mut S, index: u64, size: u64) -> Result<Vec<Hash>, SourcedError<S::Error>> {
    if index >= size {
        return Err(SourcedError::Proof(ProofError::IndexOutOfRange { index, tree_size: size }));
    }
    inclusion_ranges(index, size).into_iter().map(|(lo, hi)| range_hash(src, lo, hi).map_err(SourcedError::Source)).collect()
}

/// Consistency proof from the tree of `old_size` to the tree of `size` (as
/// [`super::consistency_proof`]).
pub fn consistency_proof_of<S: NodeSource>(src: &mut S, old_size: u64, size: u64) -> Result<Vec<Hash>, SourcedError<S::Error>> {
    if old_size > size {
        return Err(SourcedError::Proof(ProofError::OldSizeLarger { old_size, new_size: size }));
    }
    consistency_ranges(old_size, size).into_iter().map(|(lo, hi)| range_hash(src, lo, hi).map_err(SourcedError::Source)).collect()
}

/// A proof asked for sizes that do not allow it, or a source that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourcedError<E> {
    Proof(ProofError),
    Source(E),
}

/// Where [`Tiled`] reads tiles from.
pub trait TileReader {
    type Error;
    /// The hashes of `tile` (at least its first `tile.width`), or `None` when they cannot
    /// be had cheaply (tiles not built yet).
    fn tile(&mut self, tile: TileId) -> Result<Option<&[Hash]>, Self::Error>;
    /// Hash of the complete subtree `(height, index)` computed from its leaves: the slow
    /// path, when the tiles are missing.
    fn leaves_root(&mut self, height: u32, index: u64) -> Result<Hash, Self::Error>;
}

impl<T: TileReader + ?Sized> TileReader for &mut T {
    type Error = T::Error;

    fn tile(&mut self, tile: TileId) -> Result<Option<&[Hash]>, Self::Error> {
        (**self).tile(tile)
    }

    fn leaves_root(&mut self, height: u32, index: u64) -> Result<Hash, Self::Error> {
        (**self).leaves_root(height, index)
    }
}

/// A [`NodeSource`] over the tiles of the tree of `size` leaves.
#[derive(Debug)]
pub struct Tiled<R> {
    pub reader: R,
    pub size: u64,
}

impl<R: TileReader> Tiled<R> {
    pub fn new(reader: R, size: u64) -> Self {
        Self { reader, size }
    }

    /// The node from the tile that holds its hashes of level `8·L` below it, if any.
    fn node_in_tile(&mut self, height: u32, index: u64) -> Result<Option<Hash>, R::Error> {
        let level = height / TILE_HEIGHT;
        let below = height % TILE_HEIGHT;
        let Ok(level) = u8::try_from(level) else { return Ok(None) };
        let Some(first) = index.checked_mul(1 << below) else { return Ok(None) };
        let Some(tile) = TileId::in_tree(level, first >> TILE_HEIGHT, self.size) else { return Ok(None) };
        let offset = (first % (1 << TILE_HEIGHT)) as usize;
        let count = 1usize << below;
        Ok(self.reader.tile(tile)?.and_then(|hashes| hashes.get(offset..offset + count)).map(root))
    }
}

impl<R: TileReader> NodeSource for Tiled<R> {
    type Error = R::Error;

    fn node(&mut self, height: u32, index: u64) -> Result<Hash, R::Error> {
        match self.node_in_tile(height, index)? {
            Some(h) => Ok(h),
            None => self.reader.leaves_root(height, index),
        }
    }
}

#[cfg(test)]
#[path = "sourced_tests.rs"]
mod tests;
