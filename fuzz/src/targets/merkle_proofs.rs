//! RFC 6962 proofs. Mode 0: arbitrary indexes, sizes, roots and proofs
//! reach every verification function, which must not panic. Mode 1: a tree
//! of fuzzer-chosen distinct leaves; every proof built from it verifies,
//! the compact range, stored-hash reader and plain root computation agree,
//! and a proof with one bit flipped (or a wrong index, leaf or root) fails.
//! Multiproofs too: arbitrary ones never panic; built ones verify, yield
//! each leaf's own inclusion proof, and fail with any hash flipped.

use crate::Input;
use bftlog_spec::merkle::{self, CompactRange, Hash, MemoryTree};

fn hashes(input: &mut Input, max: usize) -> Vec<Hash> {
    let count = input.below(max + 1);
    (0..count).map(|_| Hash(input.hash())).collect()
}

fn arbitrary(input: &mut Input) {
    let index = input.size();
    let size = input.size();
    let old_size = input.size();
    let leaf = Hash(input.hash());
    let root = Hash(input.hash());
    let other_root = Hash(input.hash());
    let proof = hashes(input, 70);
    // The length helpers document (and assert) their preconditions.
    if index < size {
        let _ = merkle::inclusion_proof_len(index, size);
    }
    if 0 < old_size && old_size < size {
        assert_eq!(
            merkle::consistency_path_len(old_size, size),
            merkle::consistency_proof_len(old_size, size) + old_size.is_power_of_two() as usize
        );
    }
    let _ = merkle::verify_inclusion(index, size, &leaf, &proof, &root);
    let _ = merkle::root_from_inclusion_proof(index, size, &leaf, &proof);
    let _ = merkle::verify_consistency(old_size, size, &root, &other_root, &proof);
    let _ = merkle::roots_from_consistency_proof(old_size, size, &root, &proof);
    let _ = merkle::roots_from_consistency_path(old_size, size, &proof);
    let raw: Vec<Vec<u8>> = (0..input.below(8))
        .map(|_| input.bytes(40).to_vec())
        .collect();
    let _ = merkle::verify_inclusion_bytes(index, size, input.bytes(40), &raw, input.bytes(40));
    let _ =
        merkle::verify_consistency_bytes(old_size, size, input.bytes(40), input.bytes(40), &raw);
    let peaks = hashes(input, 70);
    if let Ok(range) = CompactRange::from_parts(size, peaks.clone()) {
        assert_eq!(range.size(), size);
        assert_eq!(range.peaks(), &peaks[..]);
        let _ = range.root();
    }
    if size <= merkle::MAX_STORED_TREE_SIZE {
        assert!(merkle::stored_hash_count(size) >= size);
    }
    // Multiproofs over any indexes (sorted or not, in range or not) and
    // any hashes, in trees of any size (the walk is about k·64 steps).
    let mut leaves: Vec<(u64, Hash)> = (0..input.below(12))
        .map(|_| (input.size(), Hash(input.hash())))
        .collect();
    let mut multi = hashes(input, 70);
    let indexes: Vec<u64> = leaves.iter().map(|(i, _)| *i).collect();
    let _ = merkle::multiproof_len(&indexes, size);
    let _ = merkle::verify_multiproof(size, &root, &leaves, &multi);
    // The same leaves made well-formed (sorted, distinct, below the size)
    // with a proof of exactly the right length reach the whole walk: some
    // root comes out, and with it every derived path verifies alone.
    if size > 0 {
        for leaf in &mut leaves {
            leaf.0 %= size;
        }
        leaves.sort_by_key(|(i, _)| *i);
        leaves.dedup_by_key(|(i, _)| *i);
        let indexes: Vec<u64> = leaves.iter().map(|(i, _)| *i).collect();
        if let Ok(len) = merkle::multiproof_len(&indexes, size) {
            multi.resize_with(len, || Hash(input.hash()));
            let computed = match merkle::verify_multiproof(size, &root, &leaves, &multi) {
                Ok(_) => root,
                Err(merkle::MultiproofError::RootMismatch { computed, .. }) => computed,
                Err(e) => panic!("well-formed multiproof refused: {e}"),
            };
            let paths = merkle::verify_multiproof(size, &computed, &leaves, &multi)
                .expect("the root it computes");
            for ((index, leaf), path) in leaves.iter().zip(&paths) {
                merkle::verify_inclusion(*index, size, leaf, path, &computed)
                    .expect("a derived path verifies alone");
            }
        }
    }
}

fn flip(input: &mut Input, h: &mut Hash) {
    h.0[input.below(32)] ^= 1 << (input.u8() % 8);
}

fn valid(input: &mut Input) {
    // Mostly small trees (every shape up to 128 leaves); now and then up
    // to 2048.
    let n = 1 + match input.u8() {
        0xff => input.u16() % 2048,
        b => b as u16 % 128,
    } as u64;
    let salt = input.bytes(16).to_vec();
    let mut tree = MemoryTree::new();
    let mut leaves = Vec::new();
    for i in 0..n {
        let mut data = salt.clone();
        data.extend_from_slice(&i.to_be_bytes());
        let leaf = merkle::leaf_hash(&data);
        tree.append(leaf);
        leaves.push(leaf);
    }
    let root = tree.root();
    assert_eq!(root, merkle::root_from_leaf_hashes(&leaves));
    assert_eq!(merkle::tree_root(n, &tree).expect("stored"), root);

    // Inclusion.
    let index = input.below(n as usize) as u64;
    let leaf = leaves[index as usize];
    let proof = merkle::prove_inclusion(index, n, &tree).expect("index < size");
    assert_eq!(proof.len(), merkle::inclusion_proof_len(index, n));
    merkle::verify_inclusion(index, n, &leaf, &proof, &root).expect("valid inclusion proof");
    match input.u8() % 6 {
        0 if !proof.is_empty() => {
            let mut bad = proof.clone();
            let i = input.below(bad.len());
            flip(input, &mut bad[i]);
            assert!(merkle::verify_inclusion(index, n, &leaf, &bad, &root).is_err());
        }
        1 => {
            let mut bad = leaf;
            flip(input, &mut bad);
            assert!(merkle::verify_inclusion(index, n, &bad, &proof, &root).is_err());
        }
        2 => {
            let mut bad = root;
            flip(input, &mut bad);
            assert!(merkle::verify_inclusion(index, n, &leaf, &proof, &bad).is_err());
        }
        3 if n > 1 => {
            let other = (index + 1 + input.below(n as usize - 1) as u64) % n;
            assert!(
                merkle::verify_inclusion(other, n, &leaf, &proof, &root).is_err(),
                "proof for index {index} verified at {other} in size {n}"
            );
        }
        4 => {
            let mut longer = proof.clone();
            longer.push(Hash(input.hash()));
            assert!(merkle::verify_inclusion(index, n, &leaf, &longer, &root).is_err());
        }
        _ if !proof.is_empty() => {
            let shorter = &proof[..proof.len() - 1];
            assert!(merkle::verify_inclusion(index, n, &leaf, shorter, &root).is_err());
        }
        _ => {}
    }

    // A multiproof of a fuzzer-chosen set of leaves.
    let mut chosen: Vec<u64> = (0..1 + input.below(16))
        .map(|_| input.below(n as usize) as u64)
        .collect();
    chosen.sort_unstable();
    chosen.dedup();
    let pairs: Vec<(u64, Hash)> = chosen.iter().map(|&i| (i, leaves[i as usize])).collect();
    let multi = merkle::prove_multiproof(&chosen, n, &tree).expect("valid indexes");
    assert_eq!(
        multi.len(),
        merkle::multiproof_len(&chosen, n).expect("valid")
    );
    let paths = merkle::verify_multiproof(n, &root, &pairs, &multi).expect("valid multiproof");
    for (&i, path) in chosen.iter().zip(&paths) {
        assert_eq!(*path, merkle::prove_inclusion(i, n, &tree).expect("i < n"));
    }
    if !multi.is_empty() {
        let mut bad = multi.clone();
        let i = input.below(bad.len());
        flip(input, &mut bad[i]);
        assert!(merkle::verify_multiproof(n, &root, &pairs, &bad).is_err());
    }
    let mut bad_pairs = pairs.clone();
    let i = input.below(bad_pairs.len());
    flip(input, &mut bad_pairs[i].1);
    assert!(merkle::verify_multiproof(n, &root, &bad_pairs, &multi).is_err());
    // One leaf claimed at another index (the list kept increasing): its
    // hash is not there, since the tree's leaves are distinct.
    let mut moved = pairs.clone();
    let i = input.below(moved.len());
    let low = if i == 0 { 0 } else { moved[i - 1].0 + 1 };
    let high = moved.get(i + 1).map_or(n, |p| p.0);
    if high - low > 1 {
        let to = low + input.below((high - low) as usize) as u64;
        if to != moved[i].0 {
            moved[i].0 = to;
            assert!(
                merkle::verify_multiproof(n, &root, &moved, &multi).is_err(),
                "leaf {} verified at {to} in size {n}",
                chosen[i]
            );
        }
    }

    // Consistency from an older size m (0 ≤ m ≤ n).
    let m = input.below(n as usize + 1) as u64;
    let old_root = merkle::tree_root(m, &tree).expect("stored");
    assert_eq!(
        old_root,
        merkle::root_from_leaf_hashes(&leaves[..m as usize])
    );
    let prefix = CompactRange::from_storage(m, &tree).expect("stored");
    assert_eq!(prefix.root(), old_root);
    let proof = merkle::prove_consistency(m, n, &tree).expect("m ≤ n");
    assert_eq!(
        proof.len(),
        if m == 0 || m == n {
            0
        } else {
            merkle::consistency_proof_len(m, n)
        }
    );
    merkle::verify_consistency(m, n, &old_root, &root, &proof).expect("valid consistency proof");
    if 0 < m && m < n {
        let path = merkle::prove_consistency_path(m, n, &tree).expect("0 < m < n");
        assert_eq!(path.len(), merkle::consistency_path_len(m, n));
        assert_eq!(
            merkle::roots_from_consistency_path(m, n, &path).expect("full path"),
            (old_root, root)
        );
        match input.u8() % 4 {
            0 if !proof.is_empty() => {
                let mut bad = proof.clone();
                let i = input.below(bad.len());
                flip(input, &mut bad[i]);
                assert!(merkle::verify_consistency(m, n, &old_root, &root, &bad).is_err());
            }
            1 => {
                let mut bad = old_root;
                flip(input, &mut bad);
                assert!(merkle::verify_consistency(m, n, &bad, &root, &proof).is_err());
            }
            2 => {
                let mut bad = root;
                flip(input, &mut bad);
                assert!(merkle::verify_consistency(m, n, &old_root, &bad, &proof).is_err());
            }
            _ => {
                let mut bad = path.clone();
                let i = input.below(bad.len());
                flip(input, &mut bad[i]);
                assert_ne!(
                    merkle::roots_from_consistency_path(m, n, &bad).expect("same length"),
                    (old_root, root)
                );
            }
        }
    }
}

/// Runs one `merkle_proofs` input; panics if a property
/// in this file's header fails.
pub fn merkle_proofs(data: &[u8]) {
    let mut input = Input::new(data);
    if input.u8().is_multiple_of(2) {
        arbitrary(&mut input);
    } else {
        valid(&mut input);
    }
}
