//! Proof verification (RFC 9162 §2.1.3.2 and §2.1.4.2).

use super::*;

/// Why an inclusion proof did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InclusionError {
    #[error("leaf index {index} is not below tree size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error(
        "proof has {actual} hashes, a leaf at index {index} of a tree of size {size} needs {expected}"
    )]
    WrongProofLength {
        index: u64,
        size: u64,
        expected: usize,
        actual: usize,
    },
    #[error("proof hash {position} is {length} bytes, not 32")]
    BadHashLength { position: usize, length: usize },
    #[error("computed root {computed} does not match the expected root {expected}")]
    RootMismatch { computed: Hash, expected: Hash },
}

/// Why a consistency proof did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConsistencyError {
    #[error("old size {old_size} is larger than new size {new_size}")]
    OldSizeTooLarge { old_size: u64, new_size: u64 },
    #[error("proof has {actual} hashes, sizes {old_size} -> {new_size} need {expected}")]
    WrongProofLength {
        old_size: u64,
        new_size: u64,
        expected: usize,
        actual: usize,
    },
    #[error("proof hash {position} is {length} bytes, not 32")]
    BadHashLength { position: usize, length: usize },
    #[error("old root of the empty tree must be SHA-256(\"\"), got {0}")]
    EmptyTreeRoot(Hash),
    #[error("equal sizes but different roots {old_root} and {new_root}")]
    RootsDiffer { old_root: Hash, new_root: Hash },
    #[error("proof computes old root {computed}, expected {expected}")]
    OldRootMismatch { computed: Hash, expected: Hash },
    #[error("proof computes new root {computed}, expected {expected}")]
    NewRootMismatch { computed: Hash, expected: Hash },
}

/// Number of hashes in an inclusion proof for `index < size`: the number of
/// steps the RFC 9162 walk takes before `sn` reaches 0.
pub fn inclusion_proof_len(index: u64, size: u64) -> usize {
    assert!(index < size, "inclusion_proof_len needs index < size");
    walk_len(index, size - 1)
}

/// Number of hashes a consistency proof between `0 < old_size < new_size`
/// carries (RFC 9162 §2.1.4.1; the old root is not sent for a power-of-two
/// old size).
pub fn consistency_proof_len(old_size: u64, new_size: u64) -> usize {
    let full = consistency_path_len(old_size, new_size);
    if old_size.is_power_of_two() {
        full - 1
    } else {
        full
    }
}

/// Length of the path RFC 9162 §2.1.4.2 walks after step 2 (with the old
/// root prepended for a power-of-two old size).
pub fn consistency_path_len(old_size: u64, new_size: u64) -> usize {
    assert!(
        0 < old_size && old_size < new_size,
        "consistency lengths need 0 < old < new"
    );
    let (fn_, sn) = consistency_start(old_size, new_size);
    1 + walk_len(fn_, sn)
}

/// Steps 3–4 of RFC 9162 §2.1.4.2.
pub(super) fn consistency_start(old_size: u64, new_size: u64) -> (u64, u64) {
    let (mut fn_, mut sn) = (old_size - 1, new_size - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    (fn_, sn)
}

/// One step of the RFC 9162 walk: whether the path element is a left
/// sibling, with `(fn, sn)` advanced.
pub(super) fn walk_step(fn_: &mut u64, sn: &mut u64) -> bool {
    let left = *fn_ & 1 == 1 || *fn_ == *sn;
    if left && *fn_ & 1 == 0 {
        while *fn_ & 1 == 0 && *fn_ != 0 {
            *fn_ >>= 1;
            *sn >>= 1;
        }
    }
    *fn_ >>= 1;
    *sn >>= 1;
    left
}

pub(super) fn walk_len(mut fn_: u64, mut sn: u64) -> usize {
    let mut steps = 0;
    while sn != 0 {
        walk_step(&mut fn_, &mut sn);
        steps += 1;
    }
    steps
}

/// Verifies that `leaf` is at `index` in the tree of `size` leaves with root
/// `root` (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), InclusionError> {
    let computed = root_from_inclusion_proof(index, size, leaf, proof)?;
    if computed != *root {
        return Err(InclusionError::RootMismatch {
            computed,
            expected: *root,
        });
    }
    Ok(())
}

/// Like [`verify_inclusion`] with hashes given as byte strings of any length,
/// for callers holding unparsed input: any length other than 32 is an error
/// (position `usize::MAX` names the leaf or root rather than a proof hash).
pub fn verify_inclusion_bytes(
    index: u64,
    size: u64,
    leaf: &[u8],
    proof: &[Vec<u8>],
    root: &[u8],
) -> Result<(), InclusionError> {
    let bad = |position, length| InclusionError::BadHashLength { position, length };
    let leaf = Hash::from_slice(leaf).map_err(|e| bad(usize::MAX, e.0))?;
    let root = Hash::from_slice(root).map_err(|e| bad(usize::MAX, e.0))?;
    let proof = proof
        .iter()
        .enumerate()
        .map(|(i, h)| Hash::from_slice(h).map_err(|e| bad(i, e.0)))
        .collect::<Result<Vec<_>, _>>()?;
    verify_inclusion(index, size, &leaf, &proof, &root)
}

/// An index inside the tree and a proof of the length its path needs.
pub(super) fn check_inclusion_shape(
    index: u64,
    size: u64,
    proof_len: usize,
) -> Result<(), InclusionError> {
    if index >= size {
        return Err(InclusionError::IndexOutOfRange { index, size });
    }
    let expected = inclusion_proof_len(index, size);
    if proof_len != expected {
        return Err(InclusionError::WrongProofLength {
            index,
            size,
            expected,
            actual: proof_len,
        });
    }
    Ok(())
}

/// Computes the root implied by an inclusion proof.
pub fn root_from_inclusion_proof(
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
) -> Result<Hash, InclusionError> {
    check_inclusion_shape(index, size, proof.len())?;
    let (mut fn_, mut sn) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        assert!(sn != 0, "inclusion length check admitted a long proof");
        r = if walk_step(&mut fn_, &mut sn) {
            node_hash(p, &r)
        } else {
            node_hash(&r, p)
        };
    }
    assert!(sn == 0, "inclusion length check admitted a short proof");
    Ok(r)
}

/// Verifies many inclusion proofs against one tree head, remembering the
/// interior nodes of the last path it walked: proofs of neighbouring
/// leaves share every node above their common ancestor, so a batch of
/// consecutive leaves (in any direction) costs about two node hashes per
/// proof instead of one per level.
///
/// The memory holds, per level, one `(left, right)` pair and
/// `node_hash(left, right)`; a node is reused only when both children are
/// byte for byte the remembered ones. So every answer is exactly
/// [`verify_inclusion`]'s: same accepted proofs, same errors, whatever a
/// server sends.
pub struct InclusionVerifier {
    size: u64,
    root: Hash,
    /// Per level: (left child, right child, their node hash).
    pub(super) path: Vec<Option<(Hash, Hash, Hash)>>,
}

impl InclusionVerifier {
    pub fn new(size: u64, root: Hash) -> Self {
        InclusionVerifier {
            size,
            root,
            path: vec![None; 64],
        }
    }

    /// [`verify_inclusion`] of `leaf` at `index` in this tree.
    pub fn verify(
        &mut self,
        index: u64,
        leaf: &Hash,
        proof: &[Hash],
    ) -> Result<(), InclusionError> {
        let size = self.size;
        check_inclusion_shape(index, size, proof.len())?;
        // `walk_step`, counting the levels climbed.
        let (mut fn_, mut sn) = (index, size - 1);
        let mut level = 0;
        let mut r = *leaf;
        for p in proof {
            assert!(sn != 0, "inclusion length check admitted a long proof");
            let left = fn_ & 1 == 1 || fn_ == sn;
            if left && fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                    level += 1;
                }
            }
            let (l, rr) = if left { (*p, r) } else { (r, *p) };
            let slot = &mut self.path[level];
            r = match slot {
                Some((sl, sr, value)) if *sl == l && *sr == rr => *value,
                _ => {
                    let value = node_hash(&l, &rr);
                    *slot = Some((l, rr, value));
                    value
                }
            };
            fn_ >>= 1;
            sn >>= 1;
            level += 1;
        }
        assert!(sn == 0, "inclusion length check admitted a short proof");
        if r != self.root {
            return Err(InclusionError::RootMismatch {
                computed: r,
                expected: self.root,
            });
        }
        Ok(())
    }
}

/// Verifies that the tree `(new_size, new_root)` extends `(old_size,
/// old_root)`: RFC 9162 §2.1.4.2 for `0 < old_size < new_size`, plus the
/// size-0 and equal-size rules of `spec/merkle.md`.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), ConsistencyError> {
    if old_size > new_size {
        return Err(ConsistencyError::OldSizeTooLarge { old_size, new_size });
    }
    if old_size == 0 || old_size == new_size {
        if !proof.is_empty() {
            return Err(ConsistencyError::WrongProofLength {
                old_size,
                new_size,
                expected: 0,
                actual: proof.len(),
            });
        }
        if old_size == 0 && *old_root != empty_root() {
            return Err(ConsistencyError::EmptyTreeRoot(*old_root));
        }
        if old_size == new_size && old_root != new_root {
            return Err(ConsistencyError::RootsDiffer {
                old_root: *old_root,
                new_root: *new_root,
            });
        }
        return Ok(());
    }
    let (old_computed, new_computed) =
        roots_from_consistency_proof(old_size, new_size, old_root, proof)?;
    if old_computed != *old_root {
        return Err(ConsistencyError::OldRootMismatch {
            computed: old_computed,
            expected: *old_root,
        });
    }
    if new_computed != *new_root {
        return Err(ConsistencyError::NewRootMismatch {
            computed: new_computed,
            expected: *new_root,
        });
    }
    Ok(())
}

/// Like [`verify_consistency`] with hashes given as byte strings of any
/// length: any length other than 32 is an error.
pub fn verify_consistency_bytes(
    old_size: u64,
    new_size: u64,
    old_root: &[u8],
    new_root: &[u8],
    proof: &[Vec<u8>],
) -> Result<(), ConsistencyError> {
    let bad = |position, length| ConsistencyError::BadHashLength { position, length };
    let old_root = Hash::from_slice(old_root).map_err(|e| bad(usize::MAX, e.0))?;
    let new_root = Hash::from_slice(new_root).map_err(|e| bad(usize::MAX, e.0))?;
    let proof = proof
        .iter()
        .enumerate()
        .map(|(i, h)| Hash::from_slice(h).map_err(|e| bad(i, e.0)))
        .collect::<Result<Vec<_>, _>>()?;
    verify_consistency(old_size, new_size, &old_root, &new_root, &proof)
}

/// Computes `(old root, new root)` from a consistency proof for
/// `0 < old_size < new_size`. The claimed `old_root` is used only where RFC
/// 9162 prepends it to the path (power-of-two old size).
pub fn roots_from_consistency_proof(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    proof: &[Hash],
) -> Result<(Hash, Hash), ConsistencyError> {
    if old_size == 0 || old_size >= new_size {
        return Err(ConsistencyError::OldSizeTooLarge { old_size, new_size });
    }
    let expected = consistency_proof_len(old_size, new_size);
    if proof.len() != expected {
        return Err(ConsistencyError::WrongProofLength {
            old_size,
            new_size,
            expected,
            actual: proof.len(),
        });
    }
    // Step 2 prepends the old root for a power-of-two old size; folding from
    // a separate seed avoids copying the proof.
    Ok(if old_size.is_power_of_two() {
        fold_consistency_path(old_size, new_size, *old_root, proof)
    } else {
        fold_consistency_path(old_size, new_size, proof[0], &proof[1..])
    })
}

/// Steps 3–6 of RFC 9162 §2.1.4.2 on a full path (step 2 already applied:
/// for a power-of-two old size, the path starts with the hash of the first
/// `old_size` leaves). Returns `(fr, sr)`.
///
/// Used directly by split-view evidence, where the first hash is the one the
/// larger tree actually holds rather than the claimed old root.
pub fn roots_from_consistency_path(
    old_size: u64,
    new_size: u64,
    path: &[Hash],
) -> Result<(Hash, Hash), ConsistencyError> {
    if old_size == 0 || old_size >= new_size {
        return Err(ConsistencyError::OldSizeTooLarge { old_size, new_size });
    }
    let expected = consistency_path_len(old_size, new_size);
    if path.len() != expected {
        return Err(ConsistencyError::WrongProofLength {
            old_size,
            new_size,
            expected,
            actual: path.len(),
        });
    }
    Ok(fold_consistency_path(
        old_size,
        new_size,
        path[0],
        &path[1..],
    ))
}

/// Steps 3–6 of RFC 9162 §2.1.4.2 from the path's first hash `seed` over the
/// `rest`, whose length the caller has checked.
pub(super) fn fold_consistency_path(
    old_size: u64,
    new_size: u64,
    seed: Hash,
    rest: &[Hash],
) -> (Hash, Hash) {
    let (mut fn_, mut sn) = consistency_start(old_size, new_size);
    let (mut fr, mut sr) = (seed, seed);
    for c in rest {
        assert!(sn != 0, "consistency length check admitted a long path");
        if walk_step(&mut fn_, &mut sn) {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
        } else {
            sr = node_hash(&sr, c);
        }
    }
    assert!(sn == 0, "consistency length check admitted a short path");
    (fr, sr)
}

/// The full consistency path for `0 < old_size < new_size` as RFC 9162
/// step 2 would build it, but with the first element taken from the new
/// tree: for a power-of-two old size, `MTH(D[0:old_size])` is prepended.
/// Given the new root, this path proves what the first `old_size` leaves of
/// the new tree hash to — the basis of split-view evidence.
pub fn prove_consistency_path<R: HashReader + ?Sized>(
    old_size: u64,
    new_size: u64,
    reader: &R,
) -> Result<Vec<Hash>, ProveError> {
    if old_size == 0 || old_size >= new_size {
        return Err(ProveError::OldSizeTooLarge { old_size, new_size });
    }
    let proof = prove_consistency(old_size, new_size, reader)?;
    if !old_size.is_power_of_two() {
        return Ok(proof);
    }
    let mut path = Vec::with_capacity(proof.len() + 1);
    path.push(tree_root(old_size, reader)?);
    path.extend(proof);
    Ok(path)
}
