//! Multiproofs: the inclusion of several leaves of one tree at once
//! (spec/merkle.md, "Multiproofs").

use super::prove::*;
use super::*;

/// Why leaf indexes cannot have a multiproof, or a multiproof did not
/// verify (spec/merkle.md, "Multiproofs").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MultiproofError {
    #[error("a multiproof needs at least one leaf")]
    NoLeaves,
    #[error("leaf indexes must strictly increase: {next} follows {previous}")]
    NotIncreasing { previous: u64, next: u64 },
    #[error("leaf index {index} is not below tree size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error(
        "multiproof has {actual} hashes, these leaves of a tree of size {size} need {expected}"
    )]
    WrongProofLength {
        size: u64,
        expected: usize,
        actual: usize,
    },
    #[error("computed root {computed} does not match the expected root {expected}")]
    RootMismatch { computed: Hash, expected: Hash },
}

/// Checks that `indexes` is a non-empty, strictly increasing list of
/// leaves of a tree of `size`.
pub(super) fn check_multiproof_indexes(indexes: &[u64], size: u64) -> Result<(), MultiproofError> {
    let (&last, _) = indexes.split_last().ok_or(MultiproofError::NoLeaves)?;
    for pair in indexes.windows(2) {
        if pair[0] >= pair[1] {
            return Err(MultiproofError::NotIncreasing {
                previous: pair[0],
                next: pair[1],
            });
        }
    }
    if last >= size {
        return Err(MultiproofError::IndexOutOfRange { index: last, size });
    }
    Ok(())
}

/// The subtrees of `[start, end)` whose MTHs make up the multiproof of
/// `indexes` (all within the range), left to right: each maximal subtree
/// holding none of them. Recursion depth is the tree's height (≤ 64).
pub(super) fn multiproof_spans(start: u64, end: u64, indexes: &[u64], out: &mut Vec<Span>) {
    if indexes.is_empty() {
        out.push(Span { start, end });
        return;
    }
    if end - start == 1 {
        return;
    }
    let mid = start + split_point(end - start);
    let split = indexes.partition_point(|&i| i < mid);
    multiproof_spans(start, mid, &indexes[..split], out);
    multiproof_spans(mid, end, &indexes[split..], out);
}

/// [`multiproof_spans`] of the whole tree, once `indexes` are checked.
pub(super) fn checked_multiproof_spans(
    indexes: &[u64],
    size: u64,
) -> Result<Vec<Span>, MultiproofError> {
    check_multiproof_indexes(indexes, size)?;
    let mut spans = Vec::new();
    multiproof_spans(0, size, indexes, &mut spans);
    Ok(spans)
}

/// Number of hashes in the multiproof of `indexes` (non-empty, strictly
/// increasing, each below `size`) in the tree of `size` leaves.
pub fn multiproof_len(indexes: &[u64], size: u64) -> Result<usize, MultiproofError> {
    Ok(checked_multiproof_spans(indexes, size)?.len())
}

/// The multiproof of the leaves at `indexes` (non-empty, strictly
/// increasing) in the tree of `size` leaves: the MTH of every maximal
/// subtree that holds none of them, left to right. With the leaves'
/// hashes it gives the root, and every leaf's own inclusion proof
/// ([`verify_multiproof`]); for a run of k neighbouring leaves it is about
/// 2·log2(size) hashes instead of k·log2(size).
pub fn prove_multiproof<R: HashReader + ?Sized>(
    indexes: &[u64],
    size: u64,
    reader: &R,
) -> Result<Vec<Hash>, ProveError> {
    span_hashes(reader, &checked_multiproof_spans(indexes, size)?)
}

/// Verifies that every `(index, leaf hash)` of `leaves` (indexes strictly
/// increasing) is in the tree of `size` leaves with root `root`, given
/// their multiproof ([`prove_multiproof`]). Returns each leaf's RFC 6962
/// inclusion proof (`PATH(index, D[0:size])`, in the order of `leaves`),
/// derived from the multiproof and the other leaves while verifying: a
/// caller can keep them as ordinary single-leaf proofs.
pub fn verify_multiproof(
    size: u64,
    root: &Hash,
    leaves: &[(u64, Hash)],
    proof: &[Hash],
) -> Result<Vec<Vec<Hash>>, MultiproofError> {
    let indexes: Vec<u64> = leaves.iter().map(|(index, _)| *index).collect();
    let expected = multiproof_len(&indexes, size)?;
    if proof.len() != expected {
        return Err(MultiproofError::WrongProofLength {
            size,
            expected,
            actual: proof.len(),
        });
    }
    let mut walk = MultiproofWalk {
        proof: proof.iter(),
        paths: indexes
            .iter()
            .map(|&index| Vec::with_capacity(inclusion_proof_len(index, size)))
            .collect(),
    };
    let computed = walk.node(0, size, leaves, 0);
    assert!(
        walk.proof.next().is_none(),
        "the walk consumes exactly multiproof_len hashes"
    );
    if computed != *root {
        return Err(MultiproofError::RootMismatch {
            computed,
            expected: *root,
        });
    }
    Ok(walk.paths)
}

/// The state of [`verify_multiproof`]'s walk: the proof hashes not yet
/// used and each leaf's inclusion proof so far.
pub(super) struct MultiproofWalk<'a> {
    proof: std::slice::Iter<'a, Hash>,
    paths: Vec<Vec<Hash>>,
}

impl MultiproofWalk<'_> {
    /// MTH of `[start, end)`, which holds `leaves` (the first at
    /// `paths[first]`). Children finish before their parent, so each
    /// leaf's path grows from its sibling up, as RFC 6962 orders it.
    fn node(&mut self, start: u64, end: u64, leaves: &[(u64, Hash)], first: usize) -> Hash {
        if leaves.is_empty() {
            return *self
                .proof
                .next()
                .expect("the proof length was checked against the walk");
        }
        if end - start == 1 {
            return leaves[0].1;
        }
        let mid = start + split_point(end - start);
        let split = leaves.partition_point(|(i, _)| *i < mid);
        let left = self.node(start, mid, &leaves[..split], first);
        let right = self.node(mid, end, &leaves[split..], first + split);
        for path in &mut self.paths[first..first + split] {
            path.push(right);
        }
        for path in &mut self.paths[first + split..first + leaves.len()] {
            path.push(left);
        }
        node_hash(&left, &right)
    }
}
