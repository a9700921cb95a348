//! RFC 6962 / RFC 9162 Merkle trees: hashing, an incremental compact range,
//! proof generation over stored hashes, and proof verification.
//!
//! Normative description: `spec/merkle.md`. Files: this one (hashing,
//! the compact range, the stored-hash layout, [`HashReader`]), `prove`
//! (proofs from stored hashes), `verify` (RFC 9162 verification) and
//! `multiproof` (several leaves at once).
//!
//! # Stored-hash layout
//!
//! A log stores, for every leaf it appends, the leaf hash followed by the
//! hash of every complete subtree that the leaf completes. Leaf `x` adds
//! `1 + trailing_ones(x)` hashes, so a tree of `n` leaves holds exactly
//! `2n - popcount(n)` hashes, appended in order and never rewritten. The hash
//! of the complete subtree at `level` covering leaves
//! `[i·2^level, (i+1)·2^level)` lives at [`stored_hash_index`]`(level, i)`.
//! Every root, inclusion proof and consistency proof then needs O(log n)
//! reads, done in one [`HashReader::read_hashes`] call.

mod multiproof;
mod prove;
mod verify;

use sha2::{Digest, Sha256};
use std::fmt;

pub use multiproof::*;
pub use prove::*;
pub use verify::*;

/// Length of every hash in this crate: SHA-256.
pub const HASH_LEN: usize = 32;

/// Longest inclusion proof any tree of at most 2^64 - 1 leaves can need, and
/// longest consistency proof for trees up to 2^63 leaves (a consistency proof
/// into a larger tree can reach 65 hashes; bftlog's storage stops at 2^62).
pub const MAX_PROOF_LEN: usize = 64;

/// A SHA-256 tree hash.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Hash(pub [u8; HASH_LEN]);

impl Hash {
    /// Parses a hash from exactly 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, HashLengthError> {
        let array: [u8; HASH_LEN] = bytes.try_into().map_err(|_| HashLengthError(bytes.len()))?;
        Ok(Hash(array))
    }

    /// Parses strict, canonical, padded standard base64 of exactly 32 bytes.
    pub fn from_base64(text: &str) -> Result<Self, crate::encoding::Base64Error> {
        crate::encoding::decode_base64_array::<HASH_LEN>(text).map(Hash)
    }

    /// Standard padded base64, as used in checkpoints and proofs.
    pub fn to_base64(&self) -> String {
        crate::encoding::encode_base64(&self.0)
    }

    pub fn as_bytes(&self) -> &[u8; HASH_LEN] {
        &self.0
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", self.to_base64())
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

/// A byte string that should have been a 32-byte hash had this length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("hash must be 32 bytes, got {0}")]
pub struct HashLengthError(pub usize);

/// Root of the empty tree: `SHA-256("")`.
pub fn empty_root() -> Hash {
    Hash(Sha256::digest([]).into())
}

/// `SHA-256(0x00 || data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0u8]);
    hasher.update(data);
    Hash(hasher.finalize().into())
}

/// `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut block = [0u8; 1 + 2 * HASH_LEN];
    block[0] = 1;
    block[1..33].copy_from_slice(&left.0);
    block[33..].copy_from_slice(&right.0);
    Hash(Sha256::digest(block).into())
}

/// Root of the tree whose leaf hashes are `leaves` (RFC 6962 MTH), computed
/// with O(log n) memory.
pub fn root_from_leaf_hashes(leaves: &[Hash]) -> Hash {
    let mut range = CompactRange::new();
    for leaf in leaves {
        range.append(*leaf);
    }
    range.root()
}

// ---------------------------------------------------------------------------
// Compact range
// ---------------------------------------------------------------------------

/// The right edge of a tree: one hash per set bit of its size, holding the
/// complete subtrees a tree of that size decomposes into. Appending a leaf
/// costs amortised O(1) hashes; memory is O(log n).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct CompactRange {
    size: u64,
    /// Complete-subtree hashes, largest (leftmost) first.
    peaks: Vec<Hash>,
}

impl CompactRange {
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds a range from its size and peaks (largest first), e.g. after
    /// reading them back from storage.
    pub fn from_parts(size: u64, peaks: Vec<Hash>) -> Result<Self, CompactRangeError> {
        if peaks.len() != size.count_ones() as usize {
            return Err(CompactRangeError::PeakCount {
                size,
                expected: size.count_ones() as usize,
                actual: peaks.len(),
            });
        }
        Ok(CompactRange { size, peaks })
    }

    /// Reads the peaks of a tree of `size` leaves from stored hashes.
    pub fn from_storage<R: HashReader + ?Sized>(size: u64, reader: &R) -> Result<Self, ProveError> {
        let indexes: Vec<u64> = peak_subtrees(0, size)
            .map(|(level, index)| stored_hash_index(level, index))
            .collect();
        let peaks = read_exact(reader, &indexes)?;
        Ok(CompactRange { size, peaks })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Complete-subtree hashes, largest (leftmost) first.
    pub fn peaks(&self) -> &[Hash] {
        &self.peaks
    }

    /// Appends a leaf hash. Returns the hashes a log must store for this leaf,
    /// in stored-hash order: the leaf hash, then each subtree it completes.
    pub fn append(&mut self, leaf: Hash) -> StoredHashes {
        assert!(self.size < u64::MAX, "tree size overflow");
        let mut stored = StoredHashes {
            hashes: [Hash::default(); MAX_PROOF_LEN + 1],
            len: 0,
        };
        stored.push(leaf);
        let mut hash = leaf;
        let mut size = self.size;
        while size & 1 == 1 {
            let left = self.peaks.pop().expect("a set bit always has a peak");
            hash = node_hash(&left, &hash);
            stored.push(hash);
            size >>= 1;
        }
        self.peaks.push(hash);
        self.size += 1;
        debug_assert_eq!(self.peaks.len(), self.size.count_ones() as usize);
        stored
    }

    /// Root of the tree of the current size.
    pub fn root(&self) -> Hash {
        let mut iter = self.peaks.iter().rev();
        let Some(last) = iter.next() else {
            return empty_root();
        };
        iter.fold(*last, |acc, left| node_hash(left, &acc))
    }
}

/// The stored hashes produced by one [`CompactRange::append`] call.
#[derive(Clone, Copy)]
pub struct StoredHashes {
    hashes: [Hash; MAX_PROOF_LEN + 1],
    len: usize,
}

impl StoredHashes {
    fn push(&mut self, hash: Hash) {
        self.hashes[self.len] = hash;
        self.len += 1;
    }

    pub fn as_slice(&self) -> &[Hash] {
        &self.hashes[..self.len]
    }
}

impl fmt::Debug for StoredHashes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompactRangeError {
    #[error("a compact range of size {size} has {expected} peaks, got {actual}")]
    PeakCount {
        size: u64,
        expected: usize,
        actual: usize,
    },
}

// ---------------------------------------------------------------------------
// Stored-hash layout
// ---------------------------------------------------------------------------

/// Largest tree the stored-hash layout addresses: 2^62 leaves, so that
/// every stored-hash index fits in a u64.
pub const MAX_STORED_TREE_SIZE: u64 = 1 << 62;

/// Number of hashes stored for a tree of `size` leaves: `2·size - popcount(size)`.
pub fn stored_hash_count(size: u64) -> u64 {
    assert!(
        size <= MAX_STORED_TREE_SIZE,
        "tree size beyond the stored-hash layout"
    );
    2 * size - u64::from(size.count_ones())
}

/// Index in stored-hash order of the complete subtree at `level` covering
/// leaves `[index·2^level, (index+1)·2^level)`.
pub fn stored_hash_index(level: u32, index: u64) -> u64 {
    assert!(level < 63, "subtree level out of range");
    assert!(
        index < (MAX_STORED_TREE_SIZE >> level),
        "subtree beyond the stored-hash layout"
    );
    // The subtree is completed by its last leaf, which stores its leaf hash
    // and then `level` more hashes; this one is the last of those.
    let last_leaf = ((index + 1) << level) - 1;
    stored_hash_count(last_leaf) + level as u64
}

/// The inverse of [`stored_hash_index`]: the `(level, index)` of the
/// complete subtree whose hash is stored at `position`. Requires `position <
/// stored_hash_count(MAX_STORED_TREE_SIZE)`.
pub fn stored_hash_subtree(position: u64) -> (u32, u64) {
    assert!(
        position < stored_hash_count(MAX_STORED_TREE_SIZE),
        "stored-hash position beyond the layout"
    );
    // Leaf x's hashes occupy [count(x), count(x + 1)). Since
    // count(x) = 2x - popcount(x) is strictly increasing and within 64 of
    // 2x, the x holding `position` is at most 32 above position / 2.
    let mut leaf = position / 2;
    while leaf < MAX_STORED_TREE_SIZE && stored_hash_count(leaf + 1) <= position {
        leaf += 1;
    }
    let level = (position - stored_hash_count(leaf)) as u32;
    assert!(
        level <= leaf.trailing_ones(),
        "stored-hash layout arithmetic"
    );
    (level, leaf >> level)
}

/// Decomposes `[start, end)` into maximal aligned complete subtrees, left to
/// right, as `(level, index)` pairs. For the ranges RFC 6962 proofs use
/// (`start` aligned to a power of two at least `end - start`), folding these
/// from the right gives `MTH(D[start:end])`.
pub(super) fn peak_subtrees(start: u64, end: u64) -> impl Iterator<Item = (u32, u64)> {
    let mut pos = start;
    std::iter::from_fn(move || {
        if pos >= end {
            return None;
        }
        let align = if pos == 0 { 63 } else { pos.trailing_zeros() };
        let fit = 63 - (end - pos).leading_zeros();
        let level = align.min(fit);
        let item = (level, pos >> level);
        pos += 1u64 << level;
        Some(item)
    })
}

/// Reads stored hashes by index: the only view of storage the Merkle code
/// needs, so a log can back it with redb and tests with a `Vec`.
pub trait HashReader {
    /// Returns the stored hashes at `indexes`, in the same order.
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, StorageError>;
}

/// An error reported by a [`HashReader`].
#[derive(Debug, thiserror::Error)]
#[error("reading stored hashes: {0}")]
pub struct StorageError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

impl HashReader for [Hash] {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, StorageError> {
        indexes
            .iter()
            .map(|&i| {
                usize::try_from(i)
                    .ok()
                    .and_then(|i| self.get(i).copied())
                    .ok_or_else(|| StorageError(format!("stored hash {i} does not exist").into()))
            })
            .collect()
    }
}

impl HashReader for Vec<Hash> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, StorageError> {
        self.as_slice().read_hashes(indexes)
    }
}

pub(super) fn read_exact<R: HashReader + ?Sized>(
    reader: &R,
    indexes: &[u64],
) -> Result<Vec<Hash>, ProveError> {
    let hashes = reader.read_hashes(indexes)?;
    if hashes.len() != indexes.len() {
        return Err(ProveError::Storage(StorageError(
            format!(
                "asked for {} stored hashes, got {}",
                indexes.len(),
                hashes.len()
            )
            .into(),
        )));
    }
    Ok(hashes)
}

/// An in-memory log of stored hashes: a reference [`HashReader`] for tests,
/// benchmarks and tools that rebuild a tree.
#[derive(Clone, Debug, Default)]
pub struct MemoryTree {
    range: CompactRange,
    stored: Vec<Hash>,
}

impl MemoryTree {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn append(&mut self, leaf: Hash) {
        let new = self.range.append(leaf);
        self.stored.extend_from_slice(new.as_slice());
    }

    pub fn size(&self) -> u64 {
        self.range.size()
    }

    pub fn root(&self) -> Hash {
        self.range.root()
    }

    pub fn stored(&self) -> &[Hash] {
        &self.stored
    }
}

impl HashReader for MemoryTree {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, StorageError> {
        self.stored.read_hashes(indexes)
    }
}

#[cfg(test)]
mod tests;
