//! Tests of the Merkle module: every tree shape up to 128 leaves, proofs
//! against the verifier, multiproofs, and hostile input.

use super::*;

/// RFC 6962 MTH, straight from the definition.
fn reference_root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split_point(n as u64) as usize;
            node_hash(&reference_root(&leaves[..k]), &reference_root(&leaves[k..]))
        }
    }
}

fn tree(n: u64) -> (Vec<Hash>, MemoryTree) {
    let leaves: Vec<Hash> = (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect();
    let mut tree = MemoryTree::new();
    for leaf in &leaves {
        tree.append(*leaf);
    }
    (leaves, tree)
}

fn flip(hash: &Hash, bit: usize) -> Hash {
    let mut out = *hash;
    out.0[bit / 8] ^= 1 << (bit % 8);
    out
}

/// Batch proving gives each index's proof exactly as proving it alone,
/// in any order and with repeats, and the same error for an index out
/// of range.
#[test]
fn batch_proofs_equal_single_proofs() {
    for n in 1..=40u64 {
        let (_, tree) = tree(n);
        let indexes: Vec<u64> = (0..n).rev().chain(0..n).chain([n / 2, 0]).collect();
        let batch = prove_inclusions(&indexes, n, &tree).unwrap();
        for (index, proof) in indexes.iter().zip(&batch) {
            assert_eq!(
                *proof,
                prove_inclusion(*index, n, &tree).unwrap(),
                "n={n} i={index}"
            );
        }
        assert_eq!(
            prove_inclusions(&[0, n], n, &tree).unwrap_err().to_string(),
            prove_inclusion(n, n, &tree).unwrap_err().to_string()
        );
    }
}

/// The batch verifier answers exactly as `verify_inclusion` for every
/// leaf of trees up to 40 entries, forwards and backwards through one
/// shared memory, and for proofs with a flipped bit, a wrong leaf, a
/// wrong index, a missing or an extra hash; and from a fresh memory.
#[test]
fn batch_inclusion_verifier_agrees_with_verify_inclusion() {
    for n in 1..=40u64 {
        let (leaves, tree) = tree(n);
        let root = tree.root();
        let mut verifier = InclusionVerifier::new(n, root);
        let order: Vec<u64> = (0..n).chain((0..n).rev()).collect();
        for &i in &order {
            let proof = prove_inclusion(i, n, &tree).unwrap();
            let leaf = leaves[i as usize];
            let check = |v: &mut InclusionVerifier, index: u64, leaf: &Hash, proof: &[Hash]| {
                assert_eq!(
                    v.verify(index, leaf, proof),
                    verify_inclusion(index, n, leaf, proof, &root),
                    "n={n} i={i} index={index}"
                );
            };
            check(&mut verifier, i, &leaf, &proof);
            check(&mut verifier, i, &flip(&leaf, 3), &proof);
            check(&mut verifier, (i + 1) % n, &leaf, &proof);
            check(&mut verifier, n, &leaf, &proof);
            for k in 0..proof.len() {
                let mut bad = proof.clone();
                bad[k] = flip(&bad[k], 200);
                check(&mut verifier, i, &leaf, &bad);
            }
            check(
                &mut verifier,
                i,
                &leaf,
                &[proof.clone(), vec![root]].concat(),
            );
            if !proof.is_empty() {
                check(&mut verifier, i, &leaf, &proof[1..]);
            }
        }
        verifier.path = vec![None; 64];
        assert!(
            verifier
                .verify(
                    n - 1,
                    &leaves[n as usize - 1],
                    &prove_inclusion(n - 1, n, &tree).unwrap()
                )
                .is_ok()
        );
    }
}

#[test]
fn known_hashes() {
    assert_eq!(
        empty_root().to_base64(),
        "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
    );
    // RFC 6962 leaf of the empty string.
    assert_eq!(
        leaf_hash(b"").to_base64(),
        "bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0="
    );
}

#[test]
fn stored_layout_and_roots() {
    let (leaves, tree) = tree(300);
    assert_eq!(tree.stored().len() as u64, stored_hash_count(300));
    for n in 0..=300u64 {
        let want = reference_root(&leaves[..n as usize]);
        assert_eq!(tree_root(n, &tree).unwrap(), want, "size {n}");
        let range = CompactRange::from_storage(n, &tree).unwrap();
        assert_eq!(range.root(), want);
    }
    for level in 0..8u32 {
        for index in 0..(300u64 >> level) {
            let start = (index << level) as usize;
            let want = reference_root(&leaves[start..start + (1 << level)]);
            assert_eq!(
                tree.stored()[stored_hash_index(level, index) as usize],
                want
            );
        }
    }
    assert_eq!(root_from_leaf_hashes(&leaves), reference_root(&leaves));
    assert!(CompactRange::from_parts(3, vec![Hash::default()]).is_err());
    // Every stored position maps back to its subtree.
    for position in 0..stored_hash_count(300) {
        let (level, index) = stored_hash_subtree(position);
        assert_eq!(stored_hash_index(level, index), position);
    }
}

/// For every size 1..=128 and every index / old size: generated proofs
/// verify, and every single-bit flip of a proof hash, the root or the
/// leaf makes verification fail.
#[test]
fn exhaustive_proofs_and_bit_flips() {
    const MAX: u64 = 128;
    let (leaves, tree) = tree(MAX);
    let roots: Vec<Hash> = (0..=MAX).map(|n| tree_root(n, &tree).unwrap()).collect();
    let sizes: Vec<u64> = (1..=MAX).collect();
    std::thread::scope(|scope| {
        for chunk in [0usize, 1] {
            let (leaves, tree, roots, sizes) = (&leaves, &tree, &roots, &sizes);
            scope.spawn(move || {
                for &n in sizes.iter().skip(chunk).step_by(2) {
                    let root = roots[n as usize];
                    for i in 0..n {
                        let leaf = leaves[i as usize];
                        let proof = prove_inclusion(i, n, tree).unwrap();
                        assert_eq!(proof.len(), inclusion_proof_len(i, n));
                        verify_inclusion(i, n, &leaf, &proof, &root).unwrap();
                        for bit in 0..256 {
                            assert!(
                                verify_inclusion(i, n, &flip(&leaf, bit), &proof, &root).is_err()
                            );
                            assert!(
                                verify_inclusion(i, n, &leaf, &proof, &flip(&root, bit)).is_err()
                            );
                            for p in 0..proof.len() {
                                let mut bad = proof.clone();
                                bad[p] = flip(&bad[p], bit);
                                assert!(
                                    verify_inclusion(i, n, &leaf, &bad, &root).is_err(),
                                    "inclusion {i}/{n} hash {p} bit {bit}"
                                );
                            }
                        }
                        // Wrong index, wrong size, extra or missing hash.
                        for j in 0..n {
                            if j != i {
                                assert!(verify_inclusion(j, n, &leaf, &proof, &root).is_err());
                            }
                        }
                        let mut longer = proof.clone();
                        longer.push(leaf);
                        assert!(verify_inclusion(i, n, &leaf, &longer, &root).is_err());
                        if !proof.is_empty() {
                            assert!(verify_inclusion(i, n, &leaf, &proof[1..], &root).is_err());
                        }
                    }
                    for m in 0..=n {
                        let old = roots[m as usize];
                        let proof = prove_consistency(m, n, tree).unwrap();
                        verify_consistency(m, n, &old, &root, &proof).unwrap();
                        if m == 0 || m == n {
                            assert!(proof.is_empty());
                        } else {
                            assert_eq!(proof.len(), consistency_proof_len(m, n));
                            let path = prove_consistency_path(m, n, tree).unwrap();
                            assert_eq!(
                                roots_from_consistency_path(m, n, &path).unwrap(),
                                (old, root)
                            );
                        }
                        for bit in 0..256 {
                            assert!(
                                verify_consistency(m, n, &flip(&old, bit), &root, &proof).is_err(),
                                "old root {m}->{n}"
                            );
                            // From size 0 every new root is consistent (spec/merkle.md).
                            if m > 0 {
                                assert!(
                                    verify_consistency(m, n, &old, &flip(&root, bit), &proof)
                                        .is_err(),
                                    "new root {m}->{n}"
                                );
                            }
                            for p in 0..proof.len() {
                                let mut bad = proof.clone();
                                bad[p] = flip(&bad[p], bit);
                                assert!(
                                    verify_consistency(m, n, &old, &root, &bad).is_err(),
                                    "consistency {m}->{n} hash {p} bit {bit}"
                                );
                            }
                        }
                        if m > 0 && m < n {
                            // The proof is bound to its sizes.
                            assert!(
                                verify_consistency(m, n - 1, &old, &roots[n as usize - 1], &proof)
                                    .is_err()
                                    || m == n - 1
                            );
                            let mut longer = proof.clone();
                            longer.push(old);
                            assert!(verify_consistency(m, n, &old, &root, &longer).is_err());
                        }
                    }
                }
            });
        }
    });
}

#[test]
fn edge_cases() {
    let (leaves, tree) = tree(8);
    let root = tree.root();
    assert_eq!(
        verify_inclusion(8, 8, &leaves[0], &[], &root),
        Err(InclusionError::IndexOutOfRange { index: 8, size: 8 })
    );
    assert!(matches!(
        verify_inclusion(0, 0, &leaves[0], &[], &empty_root()),
        Err(InclusionError::IndexOutOfRange { .. })
    ));
    assert!(matches!(
        prove_inclusion(8, 8, &tree),
        Err(ProveError::IndexOutOfRange { .. })
    ));
    assert!(matches!(
        prove_consistency(9, 8, &tree),
        Err(ProveError::OldSizeTooLarge { .. })
    ));
    assert!(matches!(tree_root(9, &tree), Err(ProveError::Storage(_))));
    // Size 0: any tree extends the empty tree, with an empty proof and
    // the empty root; not with another root or a non-empty proof.
    verify_consistency(0, 8, &empty_root(), &root, &[]).unwrap();
    verify_consistency(0, 0, &empty_root(), &empty_root(), &[]).unwrap();
    assert!(matches!(
        verify_consistency(0, 8, &root, &root, &[]),
        Err(ConsistencyError::EmptyTreeRoot(_))
    ));
    assert!(matches!(
        verify_consistency(0, 8, &empty_root(), &root, &[root]),
        Err(ConsistencyError::WrongProofLength { .. })
    ));
    assert!(matches!(
        verify_consistency(0, 0, &empty_root(), &root, &[]),
        Err(ConsistencyError::RootsDiffer { .. })
    ));
    // Equal sizes.
    verify_consistency(8, 8, &root, &root, &[]).unwrap();
    assert!(matches!(
        verify_consistency(8, 8, &root, &leaves[0], &[]),
        Err(ConsistencyError::RootsDiffer { .. })
    ));
    assert!(matches!(
        verify_consistency(8, 8, &root, &root, &[root]),
        Err(ConsistencyError::WrongProofLength { .. })
    ));
    assert!(matches!(
        verify_consistency(9, 8, &root, &root, &[]),
        Err(ConsistencyError::OldSizeTooLarge { .. })
    ));
    // Byte-slice APIs reject every length but 32.
    assert!(matches!(
        verify_inclusion_bytes(0, 1, &[0; 31], &[], leaves[0].as_bytes()),
        Err(InclusionError::BadHashLength { length: 31, .. })
    ));
    assert!(matches!(
        verify_consistency_bytes(1, 1, &[1; 12], &[1; 12], &[]),
        Err(ConsistencyError::BadHashLength { length: 12, .. })
    ));
    // Largest sizes: lengths stay within 64 and nothing overflows.
    assert_eq!(inclusion_proof_len(0, u64::MAX), 64);
    assert_eq!(inclusion_proof_len(u64::MAX - 1, u64::MAX), 63);
    assert!(consistency_proof_len(1, u64::MAX) <= MAX_PROOF_LEN);
    assert_eq!(stored_hash_count(MAX_STORED_TREE_SIZE), (1u64 << 63) - 1);
    assert_eq!(stored_hash_index(62, 0), (1u64 << 63) - 2);
    assert_eq!(stored_hash_subtree((1u64 << 63) - 2), (62, 0));
    let last = stored_hash_index(0, MAX_STORED_TREE_SIZE - 1);
    assert_eq!(stored_hash_subtree(last), (0, MAX_STORED_TREE_SIZE - 1));
    for (level, index) in [(5, 12_345_678u64), (40, 3), (0, 1 << 61), (61, 1)] {
        assert_eq!(
            stored_hash_subtree(stored_hash_index(level, index)),
            (level, index)
        );
    }
}

#[test]
fn compact_range_returns_stored_hashes() {
    let mut range = CompactRange::new();
    let mut stored = Vec::new();
    for i in 0..100u64 {
        let new = range.append(leaf_hash(&i.to_le_bytes()));
        assert_eq!(new.as_slice().len(), 1 + i.trailing_ones() as usize);
        stored.extend_from_slice(new.as_slice());
        assert_eq!(stored.len() as u64, stored_hash_count(i + 1));
    }
    assert_eq!(tree_root(100, &stored).unwrap(), range.root());
}

/// Every multiproof verifies and yields each leaf's proof exactly as
/// `prove_inclusion` gives it: every subset of trees up to 9 leaves,
/// and runs, strides and single leaves of trees up to 70.
#[test]
fn multiproofs_verify_and_yield_single_proofs() {
    let check = |n: u64, indexes: &[u64], tree: &MemoryTree, leaves: &[Hash]| {
        let proof = prove_multiproof(indexes, n, tree).unwrap();
        assert_eq!(proof.len(), multiproof_len(indexes, n).unwrap());
        let pairs: Vec<(u64, Hash)> = indexes.iter().map(|&i| (i, leaves[i as usize])).collect();
        let paths = verify_multiproof(n, &tree.root(), &pairs, &proof).unwrap();
        for (&i, path) in indexes.iter().zip(&paths) {
            assert_eq!(
                *path,
                prove_inclusion(i, n, tree).unwrap(),
                "n={n} {indexes:?}"
            );
        }
    };
    for n in 1..=9u64 {
        let (leaves, tree) = tree(n);
        for mask in 1u32..(1 << n) {
            let indexes: Vec<u64> = (0..n).filter(|i| mask & (1 << i) != 0).collect();
            check(n, &indexes, &tree, &leaves);
        }
    }
    for n in 10..=70u64 {
        let (leaves, tree) = tree(n);
        for start in 0..n {
            for len in [1, 2, 3, 7, 16, 33] {
                let run: Vec<u64> = (start..(start + len).min(n)).collect();
                check(n, &run, &tree, &leaves);
            }
            let stride: Vec<u64> = (start..n).step_by(3).collect();
            check(n, &stride, &tree, &leaves);
        }
    }
}

/// A run of k neighbours costs about two paths, not k.
#[test]
fn multiproof_of_a_run_is_about_two_paths() {
    let n = 5_000u64;
    let (_, tree) = tree(n);
    for start in [0u64, 1, 1000, 4095, 4744] {
        let run: Vec<u64> = (start..start + 256).collect();
        let len = multiproof_len(&run, n).unwrap();
        assert!(len <= 2 * 13, "start {start}: {len} hashes");
        assert_eq!(prove_multiproof(&run, n, &tree).unwrap().len(), len);
    }
}

/// Any change to the proof, a leaf, an index or the root fails, and
/// malformed index lists are refused (with a proof of the right
/// length for the well-formed list, so the index check decides).
#[test]
fn multiproof_rejects_tampering_and_bad_indexes() {
    let n = 37u64;
    let (leaves, tree) = tree(n);
    let root = tree.root();
    let indexes = [3u64, 4, 5, 20, 36];
    let pairs: Vec<(u64, Hash)> = indexes.iter().map(|&i| (i, leaves[i as usize])).collect();
    let proof = prove_multiproof(&indexes, n, &tree).unwrap();
    for position in 0..proof.len() {
        let mut bad = proof.clone();
        bad[position] = flip(&bad[position], 5);
        assert!(matches!(
            verify_multiproof(n, &root, &pairs, &bad),
            Err(MultiproofError::RootMismatch { .. })
        ));
    }
    for which in 0..pairs.len() {
        let mut bad = pairs.clone();
        bad[which].1 = flip(&bad[which].1, 0);
        assert!(verify_multiproof(n, &root, &bad, &proof).is_err());
    }
    let mut moved = pairs.clone();
    moved[3].0 = 21;
    assert!(verify_multiproof(n, &root, &moved, &proof).is_err());
    assert!(verify_multiproof(n, &flip(&root, 9), &pairs, &proof).is_err());
    assert!(matches!(
        verify_multiproof(n, &root, &pairs, &proof[1..]),
        Err(MultiproofError::WrongProofLength { .. })
    ));
    let mut longer = proof.clone();
    longer.push(root);
    assert!(matches!(
        verify_multiproof(n, &root, &pairs, &longer),
        Err(MultiproofError::WrongProofLength { .. })
    ));
    assert_eq!(
        verify_multiproof(n, &root, &[], &proof),
        Err(MultiproofError::NoLeaves)
    );
    let mut swapped = pairs.clone();
    swapped.swap(0, 1);
    assert_eq!(
        verify_multiproof(n, &root, &swapped, &proof),
        Err(MultiproofError::NotIncreasing {
            previous: 4,
            next: 3
        })
    );
    let repeated = [pairs[0], pairs[0]];
    assert!(matches!(
        verify_multiproof(n, &root, &repeated, &proof),
        Err(MultiproofError::NotIncreasing { .. })
    ));
    assert_eq!(
        multiproof_len(&[0, 37], n),
        Err(MultiproofError::IndexOutOfRange { index: 37, size: n })
    );
    assert!(matches!(
        prove_multiproof(&[5, 5], n, &tree),
        Err(ProveError::Multiproof(
            MultiproofError::NotIncreasing { .. }
        ))
    ));
}

/// Trees too large to build: for size 2^64 − 1 a multiproof of leaves
/// at both edges and the middle has one hash per level per path not
/// shared, any proof of that length computes some root, and with that
/// root every derived path verifies as an ordinary inclusion proof,
/// while a proof one hash short is refused by length.
#[test]
fn multiproofs_of_the_largest_trees_walk_every_level() {
    let size = u64::MAX;
    for indexes in [
        vec![0u64],
        vec![size - 1],
        vec![0, 1 << 63, size - 1],
        vec![5, 6, 7, (1 << 40) + 3, size - 2],
    ] {
        let len = multiproof_len(&indexes, size).unwrap();
        let single: usize = indexes.iter().map(|&i| inclusion_proof_len(i, size)).sum();
        assert!(len <= single, "{indexes:?}: {len} > {single}");
        let proof: Vec<Hash> = (0..len as u64)
            .map(|i| leaf_hash(&i.to_be_bytes()))
            .collect();
        let pairs: Vec<(u64, Hash)> = indexes
            .iter()
            .map(|&i| (i, node_hash(&leaf_hash(&i.to_be_bytes()), &empty_root())))
            .collect();
        let Err(MultiproofError::RootMismatch { computed, .. }) =
            verify_multiproof(size, &empty_root(), &pairs, &proof)
        else {
            panic!("{indexes:?}: a made-up proof matched the empty root");
        };
        let paths = verify_multiproof(size, &computed, &pairs, &proof).unwrap();
        for ((index, leaf), path) in pairs.iter().zip(&paths) {
            assert_eq!(path.len(), inclusion_proof_len(*index, size));
            verify_inclusion(*index, size, leaf, path, &computed).unwrap();
        }
        assert_eq!(
            verify_multiproof(size, &computed, &pairs, &proof[1..]),
            Err(MultiproofError::WrongProofLength {
                size,
                expected: len,
                actual: len - 1
            })
        );
    }
    assert_eq!(multiproof_len(&[0], size).unwrap(), 64);
}
