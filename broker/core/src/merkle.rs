//! Merkle tree of the journal (RFC 6962 §2.1, RFC 9162 §2.1), over leaf hashes.
//!
//! Leaves are the journal's leaf hashes, `SHA-256(0x00 ‖ canonical bytes)`
//! (see [`crate::journal::leaf_hash`]); interior nodes are
//! `SHA-256(0x01 ‖ left ‖ right)`; the empty tree's hash is `SHA-256("")`.
//!
//! Proof generation walks the tree from the root down, one level per step, and
//! hashes each sibling subtree with [`root`], so a proof over `n` leaves costs
//! O(n) hashing and O(log n) memory, with no recursion. Verification follows the
//! algorithms of RFC 9162 §2.1.3.2 (inclusion) and §2.1.4.2 (consistency), after
//! checking that the proof has exactly the length the tree sizes call for.
//!
//! [`tile`] lays the tree out in tiles (C2SP tlog-tiles), and [`sourced`] computes roots
//! and proofs from the hashes of complete subtrees, read from such tiles, in O(log n)
//! lookups.

pub mod sourced;
pub mod tile;

use sha2::{Digest, Sha256};

pub type Hash = [u8; 32];

/// Why a proof was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("leaf index {index} is outside a tree of size {tree_size}")]
    IndexOutOfRange { index: u64, tree_size: u64 },
    #[error("old tree size {old_size} is larger than new tree size {new_size}")]
    OldSizeLarger { old_size: u64, new_size: u64 },
    #[error("proof too short: {got} hashes, {expected} expected for these tree sizes")]
    ProofTooShort { got: usize, expected: usize },
    #[error("proof too long: {got} hashes, {expected} expected for these tree sizes")]
    ProofTooLong { got: usize, expected: usize },
    #[error(
        "root mismatch: the proof leads to root {computed}, the tree of size {tree_size} has root {expected}"
    )]
    RootMismatch {
        tree_size: u64,
        computed: String,
        expected: String,
    },
    #[error(
        "old root mismatch: the proof leads to root {computed} for size {old_size}, the old tree has root {expected}"
    )]
    OldRootMismatch {
        old_size: u64,
        computed: String,
        expected: String,
    },
    #[error(
        "new root mismatch: the proof leads to root {computed} for size {new_size}, the new tree has root {expected}"
    )]
    NewRootMismatch {
        new_size: u64,
        computed: String,
        expected: String,
    },
    #[error("fork: two trees of size {tree_size} with different roots {old_root} and {new_root}")]
    Fork {
        tree_size: u64,
        old_root: String,
        new_root: String,
    },
}

/// Hash of the empty tree: SHA-256 of the empty string.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// Interior node: SHA-256(0x01 ‖ left ‖ right).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// Largest power of two strictly smaller than `n` (`n` ≥ 2).
fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// Merkle Tree Hash (MTH) of the leaves, in O(n) time and O(log n) memory.
pub fn root(leaves: &[Hash]) -> Hash {
    if leaves.is_empty() {
        return empty_root();
    }
    // Stack of complete subtrees (hash, leaf count), counts strictly decreasing.
    let mut stack: Vec<(Hash, u64)> = Vec::with_capacity(64);
    for leaf in leaves {
        let mut cur = (*leaf, 1u64);
        while let Some(&(top, count)) = stack.last() {
            if count != cur.1 {
                break;
            }
            stack.pop();
            cur = (node_hash(&top, &cur.0), count * 2);
        }
        stack.push(cur);
    }
    // The right edge: fold the remaining subtrees from the smallest one.
    let (mut acc, _) = stack.pop().expect("at least one leaf");
    while let Some((left, _)) = stack.pop() {
        acc = node_hash(&left, &acc);
    }
    acc
}

/// Merkle Tree Hash computed leaf by leaf, in O(log n) memory: for a tree read in
/// pages (the journal's leaf hashes), without holding every leaf at once.
#[derive(Debug, Clone, Default)]
pub struct RootBuilder {
    /// Complete subtrees (hash, leaf count), counts strictly decreasing.
    stack: Vec<(Hash, u64)>,
    size: u64,
}

impl RootBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Leaves pushed so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn push(&mut self, leaf: &Hash) {
        let mut cur = (*leaf, 1u64);
        while let Some(&(top, count)) = self.stack.last() {
            if count != cur.1 {
                break;
            }
            self.stack.pop();
            cur = (node_hash(&top, &cur.0), count * 2);
        }
        self.stack.push(cur);
        self.size += 1;
    }

    /// The root of the leaves pushed so far (the builder can go on).
    pub fn root(&self) -> Hash {
        let mut it = self.stack.iter().rev();
        let Some((mut acc, _)) = it.next().copied() else {
            return empty_root();
        };
        for (left, _) in it {
            acc = node_hash(left, &acc);
        }
        acc
    }
}

fn slice(leaves: &[Hash], lo: u64, hi: u64) -> &[Hash] {
    &leaves[lo as usize..hi as usize]
}

/// The subtrees `[lo, hi)` whose hashes form the audit path PATH(index, D[n]) of
/// RFC 6962 §2.1.1, from the leaf up. `index < n`.
pub(crate) fn inclusion_ranges(index: u64, n: u64) -> Vec<(u64, u64)> {
    debug_assert!(index < n);
    let mut ranges = Vec::new();
    let (mut lo, mut hi) = (0u64, n);
    while hi - lo > 1 {
        let k = split(hi - lo);
        if index < lo + k {
            ranges.push((lo + k, hi));
            hi = lo + k;
        } else {
            ranges.push((lo, lo + k));
            lo += k;
        }
    }
    ranges.reverse();
    ranges
}

/// The subtrees `[lo, hi)` whose hashes form the consistency proof PROOF(old_size, D[n])
/// of RFC 6962 §2.1.2 / RFC 9162 §2.1.4.1, in proof order. Empty when `old_size` is 0 or
/// `n`. `old_size <= n`.
pub(crate) fn consistency_ranges(old_size: u64, n: u64) -> Vec<(u64, u64)> {
    debug_assert!(old_size <= n);
    let mut ranges = Vec::new();
    if old_size == 0 || old_size == n {
        return ranges;
    }
    // SUBPROOF(m, D[lo:hi], b), unrolled: each level appends its sibling after
    // the deeper part, so siblings are collected top-down and reversed.
    let (mut lo, mut hi, mut m, mut b) = (0u64, n, old_size, true);
    loop {
        let size = hi - lo;
        if m == size {
            if !b {
                ranges.push((lo, hi));
            }
            break;
        }
        let k = split(size);
        if m <= k {
            ranges.push((lo + k, hi));
            hi = lo + k;
        } else {
            ranges.push((lo, lo + k));
            lo += k;
            m -= k;
            b = false;
        }
    }
    ranges.reverse();
    ranges
}

/// Audit path PATH(index, D[n]) of RFC 6962 §2.1.1, from the leaf up.
///
/// # Panics
/// If `index >= leaves.len()`.
pub fn inclusion_proof(leaves: &[Hash], index: u64) -> Vec<Hash> {
    let n = leaves.len() as u64;
    assert!(index < n, "leaf index {index} outside a tree of size {n}");
    inclusion_ranges(index, n).into_iter().map(|(lo, hi)| root(slice(leaves, lo, hi))).collect()
}

/// Consistency proof PROOF(old_size, D[n]) of RFC 6962 §2.1.2 / RFC 9162 §2.1.4.1.
/// Empty when `old_size` is 0 or the whole tree.
///
/// # Panics
/// If `old_size > leaves.len()`.
pub fn consistency_proof(leaves: &[Hash], old_size: u64) -> Vec<Hash> {
    let n = leaves.len() as u64;
    assert!(
        old_size <= n,
        "old size {old_size} larger than the tree size {n}"
    );
    consistency_ranges(old_size, n).into_iter().map(|(lo, hi)| root(slice(leaves, lo, hi))).collect()
}

/// Number of hashes in an audit path for `index` in a tree of `tree_size`.
fn inclusion_len(index: u64, tree_size: u64) -> usize {
    let (mut i, mut n, mut len) = (index, tree_size, 0);
    while n > 1 {
        let k = split(n);
        if i < k {
            n = k;
        } else {
            i -= k;
            n -= k;
        }
        len += 1;
    }
    len
}

/// Number of hashes in a consistency proof, for 0 < old_size < new_size.
fn consistency_len(old_size: u64, new_size: u64) -> usize {
    let (mut m, mut n, mut b, mut len) = (old_size, new_size, true, 0);
    loop {
        if m == n {
            return len + usize::from(!b);
        }
        let k = split(n);
        if m <= k {
            n = k;
        } else {
            m -= k;
            n -= k;
            b = false;
        }
        len += 1;
    }
}

fn check_len(got: usize, expected: usize) -> Result<(), ProofError> {
    match got.cmp(&expected) {
        std::cmp::Ordering::Less => Err(ProofError::ProofTooShort { got, expected }),
        std::cmp::Ordering::Greater => Err(ProofError::ProofTooLong { got, expected }),
        std::cmp::Ordering::Equal => Ok(()),
    }
}

/// Checks an inclusion proof (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(
    leaf_hash: &Hash,
    index: u64,
    tree_size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= tree_size {
        return Err(ProofError::IndexOutOfRange { index, tree_size });
    }
    check_len(proof.len(), inclusion_len(index, tree_size))?;
    let (mut fnode, mut snode) = (index, tree_size - 1);
    let mut r = *leaf_hash;
    for p in proof {
        if snode == 0 {
            return Err(ProofError::ProofTooLong {
                got: proof.len(),
                expected: inclusion_len(index, tree_size),
            });
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(ProofError::ProofTooShort {
            got: proof.len(),
            expected: inclusion_len(index, tree_size),
        });
    }
    if r != *root {
        return Err(ProofError::RootMismatch {
            tree_size,
            computed: hex::encode(r),
            expected: hex::encode(root),
        });
    }
    Ok(())
}

/// Checks that the tree of `new_size` with `new_root` extends the tree of
/// `old_size` with `old_root` (RFC 9162 §2.1.4.2).
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if old_size > new_size {
        return Err(ProofError::OldSizeLarger { old_size, new_size });
    }
    if old_size == 0 {
        check_len(proof.len(), 0)?;
        let empty = empty_root();
        if *old_root != empty {
            return Err(ProofError::OldRootMismatch {
                old_size,
                computed: hex::encode(empty),
                expected: hex::encode(old_root),
            });
        }
        return Ok(());
    }
    if old_size == new_size {
        check_len(proof.len(), 0)?;
        if old_root != new_root {
            return Err(ProofError::Fork {
                tree_size: old_size,
                old_root: hex::encode(old_root),
                new_root: hex::encode(new_root),
            });
        }
        return Ok(());
    }
    let expected = consistency_len(old_size, new_size);
    check_len(proof.len(), expected)?;

    // Step 2: when old_size is a power of two, the old root is the first node.
    let mut path = proof.iter();
    let first = if old_size.is_power_of_two() {
        *old_root
    } else {
        *path.next().ok_or(ProofError::ProofTooShort {
            got: proof.len(),
            expected,
        })?
    };
    let (mut fnode, mut snode) = (old_size - 1, new_size - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let (mut fr, mut sr) = (first, first);
    for c in path {
        if snode == 0 {
            return Err(ProofError::ProofTooLong {
                got: proof.len(),
                expected,
            });
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(ProofError::ProofTooShort {
            got: proof.len(),
            expected,
        });
    }
    if fr != *old_root {
        return Err(ProofError::OldRootMismatch {
            old_size,
            computed: hex::encode(fr),
            expected: hex::encode(old_root),
        });
    }
    if sr != *new_root {
        return Err(ProofError::NewRootMismatch {
            new_size,
            computed: hex::encode(sr),
            expected: hex::encode(new_root),
        });
    }
    Ok(())
}

#[cfg(test)]
#[path = "merkle_tests.rs"]
mod tests;
