use super::*;
use crate::journal::leaf_hash;

/// Naive implementation, transcribed from the definitions of RFC 6962 §2.1.
mod naive {
    use super::super::Hash;
    use sha2::{Digest, Sha256};

    fn k(n: usize) -> usize {
        let mut k = 1;
        while k * 2 < n {
            k *= 2;
        }
        k
    }

    fn node(l: &Hash, r: &Hash) -> Hash {
        let mut v = vec![1u8];
        v.extend_from_slice(l);
        v.extend_from_slice(r);
        Sha256::digest(&v).into()
    }

    pub fn mth(d: &[Hash]) -> Hash {
        match d.len() {
            0 => Sha256::digest(b"").into(),
            1 => d[0],
            n => node(&mth(&d[..k(n)]), &mth(&d[k(n)..])),
        }
    }

    pub fn path(m: usize, d: &[Hash]) -> Vec<Hash> {
        let n = d.len();
        if n == 1 {
            return vec![];
        }
        let k = k(n);
        if m < k {
            let mut p = path(m, &d[..k]);
            p.push(mth(&d[k..]));
            p
        } else {
            let mut p = path(m - k, &d[k..]);
            p.push(mth(&d[..k]));
            p
        }
    }

    pub fn proof(m: usize, d: &[Hash]) -> Vec<Hash> {
        subproof(m, d, true)
    }

    fn subproof(m: usize, d: &[Hash], b: bool) -> Vec<Hash> {
        let n = d.len();
        if m == n {
            return if b { vec![] } else { vec![mth(d)] };
        }
        let k = k(n);
        if m <= k {
            let mut p = subproof(m, &d[..k], b);
            p.push(mth(&d[k..]));
            p
        } else {
            let mut p = subproof(m - k, &d[k..], false);
            p.push(mth(&d[..k]));
            p
        }
    }
}

fn leaves(n: usize) -> Vec<Hash> {
    (0..n)
        .map(|i| leaf_hash(format!("entry {i}").as_bytes()))
        .collect()
}

fn hx(s: &str) -> Hash {
    hex::decode(s).unwrap().try_into().unwrap()
}

fn flip(h: &Hash, byte: usize) -> Hash {
    let mut h = *h;
    h[byte] ^= 0x01;
    h
}

#[test]
fn empty_tree() {
    assert_eq!(
        root(&[]),
        hx("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    );
    assert_eq!(root(&[]), naive::mth(&[]));
    let l = leaf_hash(b"x");
    assert_eq!(
        verify_inclusion(&l, 0, 0, &[], &empty_root()),
        Err(ProofError::IndexOutOfRange {
            index: 0,
            tree_size: 0
        })
    );
    assert!(consistency_proof(&[], 0).is_empty());
    assert_eq!(
        verify_consistency(0, 0, &empty_root(), &empty_root(), &[]),
        Ok(())
    );
    let d = leaves(5);
    assert!(consistency_proof(&d, 0).is_empty());
    assert_eq!(
        verify_consistency(0, 5, &empty_root(), &root(&d), &[]),
        Ok(())
    );
    assert!(matches!(
        verify_consistency(0, 5, &root(&d[..1]), &root(&d), &[]),
        Err(ProofError::OldRootMismatch { .. })
    ));
    assert!(matches!(
        verify_consistency(0, 5, &empty_root(), &root(&d), &[d[0]]),
        Err(ProofError::ProofTooLong {
            got: 1,
            expected: 0
        })
    ));
}

#[test]
fn roots_match_naive_for_sizes_1_to_64() {
    let d = leaves(64);
    for n in 1..=64 {
        assert_eq!(root(&d[..n]), naive::mth(&d[..n]), "size {n}");
    }
}

#[test]
fn root_builder_matches_root_at_every_size() {
    let d = leaves(70);
    let mut b = RootBuilder::new();
    assert_eq!(b.root(), empty_root());
    for n in 1..=70usize {
        b.push(&d[n - 1]);
        assert_eq!((b.size(), b.root()), (n as u64, naive::mth(&d[..n])), "size {n}");
    }
}

#[test]
fn inclusion_proofs_match_naive_and_verify() {
    let all = leaves(64);
    for n in 1..=64usize {
        let d = &all[..n];
        let r = root(d);
        for m in 0..n {
            let p = inclusion_proof(d, m as u64);
            assert_eq!(p, naive::path(m, d), "size {n} index {m}");
            assert_eq!(
                verify_inclusion(&d[m], m as u64, n as u64, &p, &r),
                Ok(()),
                "size {n} index {m}"
            );
        }
    }
}

#[test]
fn tampered_inclusion_proofs_are_refused() {
    let all = leaves(65);
    let roots: Vec<Hash> = (0..=65).map(|k| root(&all[..k])).collect();
    for n in 1..=64usize {
        let d = &all[..n];
        let r = root(d);
        for m in 0..n {
            let (mu, nu) = (m as u64, n as u64);
            let p = inclusion_proof(d, mu);
            let ctx = format!("size {n} index {m}");
            for i in 0..p.len() {
                for byte in [0, 17, 31] {
                    let mut q = p.clone();
                    q[i] = flip(&q[i], byte);
                    assert!(
                        matches!(
                            verify_inclusion(&d[m], mu, nu, &q, &r),
                            Err(ProofError::RootMismatch { .. })
                        ),
                        "{ctx} flipped element {i}"
                    );
                }
                let mut q = p.clone();
                q.remove(i);
                assert!(
                    matches!(
                        verify_inclusion(&d[m], mu, nu, &q, &r),
                        Err(ProofError::ProofTooShort { .. })
                    ),
                    "{ctx} dropped {i}"
                );
            }
            for at in [0, p.len()] {
                let mut q = p.clone();
                q.insert(at, all[64]);
                assert!(
                    matches!(
                        verify_inclusion(&d[m], mu, nu, &q, &r),
                        Err(ProofError::ProofTooLong { .. })
                    ),
                    "{ctx} added at {at}"
                );
            }
            assert!(
                verify_inclusion(&flip(&d[m], 5), mu, nu, &p, &r).is_err(),
                "{ctx} wrong leaf"
            );
            assert!(
                verify_inclusion(&d[m], mu, nu, &p, &flip(&r, 0)).is_err(),
                "{ctx} wrong root"
            );
            for wrong in 0..n {
                if wrong != m {
                    assert!(
                        verify_inclusion(&d[m], wrong as u64, nu, &p, &r).is_err(),
                        "{ctx} claimed index {wrong}"
                    );
                }
            }
            assert_eq!(
                verify_inclusion(&d[m], nu, nu, &p, &r),
                Err(ProofError::IndexOutOfRange {
                    index: nu,
                    tree_size: nu
                })
            );
            // Wrong tree size, checked against that size's own root.
            for (other, other_root) in roots.iter().enumerate().skip(m + 1) {
                if other != n {
                    assert!(
                        verify_inclusion(&d[m], mu, other as u64, &p, other_root).is_err(),
                        "{ctx} claimed size {other}"
                    );
                }
            }
        }
    }
}

#[test]
fn consistency_proofs_match_naive_and_verify() {
    let all = leaves(64);
    for n in 1..=64usize {
        let d = &all[..n];
        let r = root(d);
        for m in 0..=n {
            let p = consistency_proof(d, m as u64);
            let expected = if m == 0 || m == n {
                vec![]
            } else {
                naive::proof(m, d)
            };
            assert_eq!(p, expected, "old {m} new {n}");
            assert_eq!(
                verify_consistency(m as u64, n as u64, &root(&d[..m]), &r, &p),
                Ok(()),
                "old {m} new {n}"
            );
        }
    }
}

#[test]
fn tampered_consistency_proofs_are_refused() {
    let all = leaves(65);
    let roots: Vec<Hash> = (0..=65).map(|k| root(&all[..k])).collect();
    for n in 1..=64usize {
        let d = &all[..n];
        let r = root(d);
        for m in 1..=n {
            let (mu, nu) = (m as u64, n as u64);
            let old = root(&d[..m]);
            let p = consistency_proof(d, mu);
            let ctx = format!("old {m} new {n}");
            for i in 0..p.len() {
                for byte in [0, 17, 31] {
                    let mut q = p.clone();
                    q[i] = flip(&q[i], byte);
                    assert!(
                        matches!(
                            verify_consistency(mu, nu, &old, &r, &q),
                            Err(ProofError::OldRootMismatch { .. }
                                | ProofError::NewRootMismatch { .. })
                        ),
                        "{ctx} flipped element {i}"
                    );
                }
                let mut q = p.clone();
                q.remove(i);
                assert!(
                    matches!(
                        verify_consistency(mu, nu, &old, &r, &q),
                        Err(ProofError::ProofTooShort { .. })
                    ),
                    "{ctx} dropped {i}"
                );
            }
            for at in [0, p.len()] {
                let mut q = p.clone();
                q.insert(at, all[64]);
                assert!(
                    matches!(
                        verify_consistency(mu, nu, &old, &r, &q),
                        Err(ProofError::ProofTooLong { .. })
                    ),
                    "{ctx} added at {at}"
                );
            }
            // A forked old tree: same size, one entry different.
            let mut forked = d[..m].to_vec();
            forked[m - 1] = flip(&forked[m - 1], 3);
            let forked_root = root(&forked);
            assert!(
                verify_consistency(mu, nu, &forked_root, &r, &p).is_err(),
                "{ctx} forked old tree"
            );
            assert!(
                verify_consistency(mu, nu, &old, &flip(&r, 9), &p).is_err(),
                "{ctx} wrong new root"
            );
            if m < n {
                assert!(
                    verify_consistency(mu, nu, &r, &old, &p).is_err(),
                    "{ctx} roots swapped"
                );
                assert_eq!(
                    verify_consistency(nu, mu, &r, &old, &p),
                    Err(ProofError::OldSizeLarger {
                        old_size: nu,
                        new_size: mu
                    })
                );
            } else {
                assert!(matches!(
                    verify_consistency(mu, nu, &forked_root, &r, &p),
                    Err(ProofError::Fork { .. })
                ));
            }
            // Wrong sizes, each checked against the roots of the claimed sizes.
            let claimed_old = [0, m.saturating_sub(2), m - 1, m, m + 1, m + 2, n];
            for m2 in claimed_old {
                for n2 in [n - 1, n, n + 1] {
                    if (m2, n2) == (m, n) || m2 > n2 || n2 == 0 {
                        continue;
                    }
                    let honest = consistency_proof(&all[..n2], m2 as u64);
                    let outcome =
                        verify_consistency(m2 as u64, n2 as u64, &roots[m2], &roots[n2], &p);
                    if honest == p {
                        assert_eq!(outcome, Ok(()), "{ctx} as old {m2} new {n2}");
                    } else {
                        assert!(outcome.is_err(), "{ctx} claimed old {m2} new {n2}");
                    }
                }
            }
        }
    }
}

/// Leaf inputs, node and root hashes published with the RFC 6962 test
/// data of the Certificate Transparency project
/// (transparency-dev/merkle, testonly/constants.go).
mod vectors {
    pub const LEAF_INPUTS: [&str; 8] = [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ];
    pub const ROOTS: [&str; 9] = [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];
    /// Complete subtrees, by level then position.
    pub const NODES: [&[&str]; 4] = [
        &[
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
            "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
        ],
        &[
            "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        ],
        &[
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
        &["5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"],
    ];
}

#[test]
fn published_vectors() {
    let d: Vec<Hash> = vectors::LEAF_INPUTS
        .iter()
        .map(|s| leaf_hash(&hex::decode(s).unwrap()))
        .collect();
    for (n, expected) in vectors::ROOTS.iter().enumerate() {
        assert_eq!(root(&d[..n]), hx(expected), "root of size {n}");
    }
    let node = |level: usize, i: usize| hx(vectors::NODES[level][i]);
    for (i, leaf) in d.iter().enumerate() {
        assert_eq!(*leaf, node(0, i), "leaf {i}");
    }
    for level in 1..4 {
        let width = 1usize << level;
        for i in 0..(8 / width) {
            assert_eq!(
                root(&d[i * width..(i + 1) * width]),
                node(level, i),
                "level {level} node {i}"
            );
        }
    }
    assert_eq!(
        inclusion_proof(&d, 0),
        vec![node(0, 1), node(1, 1), node(2, 1)]
    );
    assert_eq!(
        inclusion_proof(&d, 5),
        vec![node(0, 4), node(1, 3), node(2, 0)]
    );
    assert_eq!(inclusion_proof(&d[..3], 2), vec![node(1, 0)]);
    assert_eq!(
        consistency_proof(&d, 1),
        vec![node(0, 1), node(1, 1), node(2, 1)]
    );
    assert_eq!(
        consistency_proof(&d, 6),
        vec![node(1, 2), node(1, 3), node(2, 0)]
    );
    assert_eq!(consistency_proof(&d[..5], 2), vec![node(1, 1), node(0, 4)]);
    for n in 1..=8usize {
        for m in 0..n {
            let p = inclusion_proof(&d[..n], m as u64);
            assert_eq!(
                verify_inclusion(&d[m], m as u64, n as u64, &p, &hx(vectors::ROOTS[n])),
                Ok(())
            );
        }
        for m in 0..=n {
            let p = consistency_proof(&d[..n], m as u64);
            assert_eq!(
                verify_consistency(
                    m as u64,
                    n as u64,
                    &hx(vectors::ROOTS[m]),
                    &hx(vectors::ROOTS[n]),
                    &p
                ),
                Ok(())
            );
        }
    }
}

#[test]
fn error_messages_are_plain() {
    let d = leaves(8);
    let p = inclusion_proof(&d, 3);
    let e = verify_inclusion(&d[3], 3, 8, &p[..2], &root(&d)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "proof too short: 2 hashes, 3 expected for these tree sizes"
    );
    let e = verify_consistency(5, 3, &root(&d), &root(&d), &[]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "old tree size 5 is larger than new tree size 3"
    );
    let e = verify_consistency(8, 8, &root(&d[..7]), &root(&d), &[]).unwrap_err();
    assert!(e.to_string().starts_with("fork: two trees of size 8"));
}

#[test]
fn large_tree_is_linear() {
    let d: Vec<Hash> = (0u32..1_000_000)
        .map(|i| leaf_hash(&i.to_be_bytes()))
        .collect();
    let r = root(&d);
    for index in [0u64, 524_288, 999_999] {
        let p = inclusion_proof(&d, index);
        assert!(p.len() <= 20);
        assert_eq!(
            verify_inclusion(&d[index as usize], index, 1_000_000, &p, &r),
            Ok(())
        );
    }
    let old = 777_777u64;
    let p = consistency_proof(&d, old);
    assert_eq!(
        verify_consistency(old, 1_000_000, &root(&d[..old as usize]), &r, &p),
        Ok(())
    );
}
