use super::super::tile::{full_tiles_of, TileId, TILE_WIDTH};
use super::super::{consistency_proof, inclusion_proof, root, verify_consistency, verify_inclusion};
use super::*;
use crate::journal::leaf_hash;
use std::collections::HashMap;
use std::convert::Infallible;

fn leaves(n: usize) -> Vec<Hash> {
    (0..n).map(|i| leaf_hash(format!("entry {i}").as_bytes())).collect()
}

/// Tiles in memory, built from the leaves as the store builds them, counting lookups.
struct Memory<'a> {
    leaves: &'a [Hash],
    /// Full tiles: (level, index) → 256 hashes and the tile's root.
    full: HashMap<(u8, u64), (Vec<Hash>, Hash)>,
    scratch: Vec<Hash>,
    tile_reads: usize,
    leaf_reads: usize,
}

impl<'a> Memory<'a> {
    /// Every full tile of the tree of `leaves`, or none at all.
    fn new(leaves: &'a [Hash], with_tiles: bool) -> Self {
        let mut full = HashMap::new();
        let mut level_hashes = leaves.to_vec();
        let mut level = 0u8;
        while with_tiles && level_hashes.len() as u64 >= TILE_WIDTH {
            let mut roots = Vec::new();
            for (i, (hashes, r)) in full_tiles_of(&level_hashes).enumerate() {
                full.insert((level, i as u64), (hashes.to_vec(), r));
                roots.push(r);
            }
            level_hashes = roots;
            level += 1;
        }
        Self { leaves, full, scratch: Vec::new(), tile_reads: 0, leaf_reads: 0 }
    }

    /// Hashes of tree level 8·level from `first`, `width` of them, from the level below.
    fn below(&self, level: u8, first: u64, width: u64) -> Option<Vec<Hash>> {
        if level == 0 {
            return Some(self.leaves[first as usize..(first + width) as usize].to_vec());
        }
        (first..first + width).map(|i| self.full.get(&(level - 1, i)).map(|(_, r)| *r)).collect()
    }
}

impl TileReader for Memory<'_> {
    type Error = Infallible;

    fn tile(&mut self, t: TileId) -> Result<Option<&[Hash]>, Infallible> {
        self.tile_reads += 1;
        if let Some((hashes, _)) = self.full.get(&(t.level, t.index)) {
            return Ok(Some(hashes));
        }
        match self.below(t.level, t.first(), u64::from(t.width)) {
            Some(h) => {
                self.scratch = h;
                Ok(Some(&self.scratch))
            }
            None => Ok(None),
        }
    }

    fn leaves_root(&mut self, height: u32, index: u64) -> Result<Hash, Infallible> {
        self.leaf_reads += 1;
        let (lo, hi) = (index << height, (index + 1) << height);
        Ok(root(&self.leaves[lo as usize..hi as usize]))
    }
}

fn ok<T>(r: Result<T, SourcedError<Infallible>>) -> T {
    match r {
        Ok(v) => v,
        Err(SourcedError::Proof(e)) => panic!("{e}"),
        Err(SourcedError::Source(e)) => match e {},
    }
}

fn check_size(all: &[Hash], n: usize, with_tiles: bool) {
    let d = &all[..n];
    let mut t = Tiled::new(Memory::new(d, with_tiles), n as u64);
    let r = root_of(&mut t, n as u64).unwrap();
    assert_eq!(r, root(d), "root {n}");
    for i in 0..n as u64 {
        assert_eq!(ok(inclusion_proof_of(&mut t, i, n as u64)), inclusion_proof(d, i), "inclusion {i} in {n}");
    }
    for m in 0..=n {
        assert_eq!(ok(consistency_proof_of(&mut t, m as u64, n as u64)), consistency_proof(d, m as u64), "consistency {m} -> {n}");
    }
    if with_tiles {
        assert_eq!(t.reader.leaf_reads, 0, "{n}: every node from tiles");
    }
}

// Every size from 1 to 300, every index and old size; in four tests that run side by
// side (the leaf-based proofs cost O(n) each).
fn sizes(range: std::ops::RangeInclusive<usize>) {
    let all = leaves(300);
    for n in range {
        check_size(&all, n, true);
    }
}

#[test]
fn tiles_give_the_leaf_based_root_and_proofs_for_sizes_1_to_150() {
    sizes(1..=150);
}

#[test]
fn tiles_give_the_leaf_based_root_and_proofs_for_sizes_151_to_220() {
    sizes(151..=220);
}

#[test]
fn tiles_give_the_leaf_based_root_and_proofs_for_sizes_221_to_265() {
    sizes(221..=265);
}

#[test]
fn tiles_give_the_leaf_based_root_and_proofs_for_sizes_266_to_300() {
    sizes(266..=300);
}

#[test]
fn without_tiles_the_leaves_give_the_same() {
    let all = leaves(300);
    for n in (1..=300).step_by(7).chain([255, 256, 257, 300]) {
        check_size(&all, n, false);
    }
}

#[test]
fn empty_tree_and_bad_sizes() {
    let mut t = Tiled::new(Memory::new(&[], true), 0);
    assert_eq!(root_of(&mut t, 0).unwrap(), empty_root());
    assert_eq!(
        inclusion_proof_of(&mut t, 0, 0),
        Err(SourcedError::Proof(ProofError::IndexOutOfRange { index: 0, tree_size: 0 }))
    );
    assert_eq!(
        consistency_proof_of(&mut t, 2, 1),
        Err(SourcedError::Proof(ProofError::OldSizeLarger { old_size: 2, new_size: 1 }))
    );
}

/// A fixed-seed generator (xorshift), so that failures can be replayed.
struct Points(u64);

impl Points {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn random_points_of_a_large_tree() {
    const N: u64 = 100_000;
    let all = leaves(N as usize);
    let mut mem = Memory::new(&all, true);
    let mut p = Points(0x5eed_1e55_ca11_ab1e);
    let sizes = [N, 65_536, 65_537, 99_999, 65_535, 256];
    for k in 0..60 {
        let n = sizes.get(k).copied().unwrap_or_else(|| 1 + p.below(N));
        let d = &all[..n as usize];
        let mut t = Tiled::new(&mut mem, n);
        assert_eq!(root_of(&mut t, n).unwrap(), root(d), "root {n}");
        let i = p.below(n);
        let proof = ok(inclusion_proof_of(&mut t, i, n));
        assert_eq!(proof, inclusion_proof(d, i), "inclusion {i} in {n}");
        let m = p.below(n + 1);
        let cons = ok(consistency_proof_of(&mut t, m, n));
        assert_eq!(cons, consistency_proof(d, m), "consistency {m} -> {n}");
        assert_eq!(verify_inclusion(&all[i as usize], i, n, &proof, &root(d)), Ok(()));
        assert_eq!(verify_consistency(m, n, &root(&all[..m as usize]), &root(d), &cons), Ok(()));
    }
    assert_eq!(mem.leaf_reads, 0);
}

#[test]
fn a_proof_reads_a_few_tiles() {
    const N: u64 = 100_000;
    let all = leaves(N as usize);
    let mut mem = Memory::new(&all, true);
    let mut p = Points(7);
    for _ in 0..50 {
        let n = 1 + p.below(N);
        let i = p.below(n);
        mem.tile_reads = 0;
        let mut t = Tiled::new(&mut mem, n);
        ok(inclusion_proof_of(&mut t, i, n));
        // At most one complete subtree per proof hash, plus the right edge's pieces.
        assert!(mem.tile_reads <= 2 * 17 + 17, "{} tile reads for {i} in {n}", mem.tile_reads);
    }
}
