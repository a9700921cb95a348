//! RFC 6962 / RFC 9162 Merkle trees: hashing, an incremental compact range,
//! proof generation over stored hashes, and proof verification.
//!
//! Normative description: `spec/merkle.md`.
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

use sha2::{Digest, Sha256};
use std::fmt;

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
fn peak_subtrees(start: u64, end: u64) -> impl Iterator<Item = (u32, u64)> {
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

fn read_exact<R: HashReader + ?Sized>(
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

// ---------------------------------------------------------------------------
// Proof generation
// ---------------------------------------------------------------------------

#[derive(Debug, thiserror::Error)]
pub enum ProveError {
    #[error("leaf index {index} is not below tree size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error("old size {old_size} is larger than new size {new_size}")]
    OldSizeTooLarge { old_size: u64, new_size: u64 },
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Multiproof(#[from] MultiproofError),
}

/// A subtree `[start, end)` whose MTH appears in a proof.
#[derive(Clone, Copy, Debug)]
struct Span {
    start: u64,
    end: u64,
}

/// Largest power of two strictly less than `n` (n ≥ 2).
fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// Reads the MTH of every span with one storage call.
fn span_hashes<R: HashReader + ?Sized>(
    reader: &R,
    spans: &[Span],
) -> Result<Vec<Hash>, ProveError> {
    let mut out = Vec::with_capacity(spans.len());
    span_hashes_into(reader, spans, &mut Scratch::default(), &mut out)?;
    Ok(out)
}

/// Buffers [`span_hashes_into`] reuses across calls: proving many indexes
/// allocated about fifteen times per proof without them.
#[derive(Default)]
struct Scratch {
    indexes: Vec<u64>,
    counts: Vec<usize>,
}

/// [`span_hashes`], appending to `out`.
fn span_hashes_into<R: HashReader + ?Sized>(
    reader: &R,
    spans: &[Span],
    scratch: &mut Scratch,
    out: &mut Vec<Hash>,
) -> Result<(), ProveError> {
    scratch.indexes.clear();
    scratch.counts.clear();
    for span in spans {
        let before = scratch.indexes.len();
        scratch
            .indexes
            .extend(peak_subtrees(span.start, span.end).map(|(l, i)| stored_hash_index(l, i)));
        scratch.counts.push(scratch.indexes.len() - before);
    }
    let hashes = read_exact(reader, &scratch.indexes)?;
    let mut offset = 0;
    for &count in &scratch.counts {
        let part = &hashes[offset..offset + count];
        offset += count;
        let (last, rest) = part.split_last().expect("a span is never empty");
        out.push(
            rest.iter()
                .rev()
                .fold(*last, |acc, left| node_hash(left, &acc)),
        );
    }
    Ok(())
}

/// Root of the tree of `size` leaves, from stored hashes.
pub fn tree_root<R: HashReader + ?Sized>(size: u64, reader: &R) -> Result<Hash, ProveError> {
    if size == 0 {
        return Ok(empty_root());
    }
    Ok(span_hashes(
        reader,
        &[Span {
            start: 0,
            end: size,
        }],
    )?[0])
}

/// RFC 6962 `PATH(index, D[0:size])`: the inclusion proof for a leaf, ordered
/// from the leaf's sibling up to the root's child.
pub fn prove_inclusion<R: HashReader + ?Sized>(
    index: u64,
    size: u64,
    reader: &R,
) -> Result<Vec<Hash>, ProveError> {
    if index >= size {
        return Err(ProveError::IndexOutOfRange { index, size });
    }
    let mut spans = Vec::with_capacity(64);
    inclusion_spans(index, size, &mut spans);
    span_hashes(reader, &spans)
}

/// [`prove_inclusion`] for each of `indexes` in one tree: the subtrees
/// ending at the tree's right edge (the only ones that may be incomplete,
/// and so need hashing) are computed once for all the proofs. Same
/// results and errors as proving each index alone.
pub fn prove_inclusions<R: HashReader + ?Sized>(
    indexes: &[u64],
    size: u64,
    reader: &R,
) -> Result<Vec<Vec<Hash>>, ProveError> {
    // (start, hash) of subtrees [start, size) already computed.
    let mut right_edge: Vec<(u64, Hash)> = Vec::new();
    // Buffers reused for every index (see `Scratch`).
    let mut spans = Vec::with_capacity(64);
    let mut known: Vec<Option<Hash>> = Vec::with_capacity(64);
    let mut todo = Vec::with_capacity(64);
    let mut computed = Vec::with_capacity(64);
    let mut scratch = Scratch::default();
    let mut proofs = Vec::with_capacity(indexes.len());
    for &index in indexes {
        if index >= size {
            return Err(ProveError::IndexOutOfRange { index, size });
        }
        inclusion_spans(index, size, &mut spans);
        known.clear();
        known.extend(spans.iter().map(|span| {
            (span.end == size)
                .then(|| right_edge.iter().find(|(s, _)| *s == span.start))
                .flatten()
                .map(|(_, hash)| *hash)
        }));
        todo.clear();
        todo.extend(
            spans
                .iter()
                .zip(&known)
                .filter(|(_, known)| known.is_none())
                .map(|(span, _)| *span),
        );
        computed.clear();
        span_hashes_into(reader, &todo, &mut scratch, &mut computed)?;
        let mut computed = computed.iter();
        let mut todo_spans = todo.iter();
        let proof: Vec<Hash> = known
            .iter()
            .map(|slot| match slot {
                Some(hash) => *hash,
                None => {
                    let span = todo_spans.next().expect("one span per unknown hash");
                    let hash = *computed.next().expect("one hash per span");
                    if span.end == size {
                        right_edge.push((span.start, hash));
                    }
                    hash
                }
            })
            .collect();
        proofs.push(proof);
    }
    Ok(proofs)
}

/// The subtrees whose hashes make up `PATH(index, D[0:size])`, from the
/// leaf's sibling up. Requires `index < size`.
fn inclusion_spans(index: u64, size: u64, spans: &mut Vec<Span>) {
    // Walk down from the root; each level contributes the sibling span.
    spans.clear();
    let (mut start, mut end) = (0u64, size);
    while end - start > 1 {
        let k = split_point(end - start);
        if index - start < k {
            spans.push(Span {
                start: start + k,
                end,
            });
            end = start + k;
        } else {
            spans.push(Span {
                start,
                end: start + k,
            });
            start += k;
        }
    }
    spans.reverse();
}

/// RFC 6962 `PROOF(old_size, D[0:new_size])`. Empty when `old_size` is 0 or
/// equal to `new_size` (see `spec/merkle.md`).
pub fn prove_consistency<R: HashReader + ?Sized>(
    old_size: u64,
    new_size: u64,
    reader: &R,
) -> Result<Vec<Hash>, ProveError> {
    if old_size > new_size {
        return Err(ProveError::OldSizeTooLarge { old_size, new_size });
    }
    if old_size == 0 || old_size == new_size {
        return Ok(Vec::new());
    }
    // SUBPROOF(m, D[start:end], b), unrolled.
    let mut spans = Vec::new();
    let (mut start, mut end, mut m, mut whole) = (0u64, new_size, old_size, true);
    loop {
        let n = end - start;
        if m == n {
            if !whole {
                spans.push(Span { start, end });
            }
            break;
        }
        let k = split_point(n);
        if m <= k {
            spans.push(Span {
                start: start + k,
                end,
            });
            end = start + k;
        } else {
            spans.push(Span {
                start,
                end: start + k,
            });
            start += k;
            m -= k;
            whole = false;
        }
    }
    spans.reverse();
    span_hashes(reader, &spans)
}

// ---------------------------------------------------------------------------
// Proof verification (RFC 9162 §2.1.3.2 and §2.1.4.2)
// ---------------------------------------------------------------------------

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
fn consistency_start(old_size: u64, new_size: u64) -> (u64, u64) {
    let (mut fn_, mut sn) = (old_size - 1, new_size - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    (fn_, sn)
}

/// One step of the RFC 9162 walk: whether the path element is a left
/// sibling, with `(fn, sn)` advanced.
fn walk_step(fn_: &mut u64, sn: &mut u64) -> bool {
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

fn walk_len(mut fn_: u64, mut sn: u64) -> usize {
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
fn check_inclusion_shape(index: u64, size: u64, proof_len: usize) -> Result<(), InclusionError> {
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
    path: Vec<Option<(Hash, Hash, Hash)>>,
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
fn fold_consistency_path(old_size: u64, new_size: u64, seed: Hash, rest: &[Hash]) -> (Hash, Hash) {
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

// ---------------------------------------------------------------------------
// Multiproofs: the inclusion of several leaves of one tree at once
// ---------------------------------------------------------------------------

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
fn check_multiproof_indexes(indexes: &[u64], size: u64) -> Result<(), MultiproofError> {
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
fn multiproof_spans(start: u64, end: u64, indexes: &[u64], out: &mut Vec<Span>) {
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
fn checked_multiproof_spans(indexes: &[u64], size: u64) -> Result<Vec<Span>, MultiproofError> {
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
struct MultiproofWalk<'a> {
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

#[cfg(test)]
mod tests {
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
                                    verify_inclusion(i, n, &flip(&leaf, bit), &proof, &root)
                                        .is_err()
                                );
                                assert!(
                                    verify_inclusion(i, n, &leaf, &proof, &flip(&root, bit))
                                        .is_err()
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
                                    verify_consistency(m, n, &flip(&old, bit), &root, &proof)
                                        .is_err(),
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
                                    verify_consistency(
                                        m,
                                        n - 1,
                                        &old,
                                        &roots[n as usize - 1],
                                        &proof
                                    )
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
            let pairs: Vec<(u64, Hash)> =
                indexes.iter().map(|&i| (i, leaves[i as usize])).collect();
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
}
