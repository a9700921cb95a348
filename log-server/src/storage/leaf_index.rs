//! The leaf index: leaf hash → first index, for idempotent appends and
//! proofs by leaf hash. A memory level, frozen levels sorted off the core
//! thread, and immutable runs on disk with fences and Bloom filters (see
//! the module docs of `storage`).

use std::sync::Arc;

use bftlog_consensus::digest_hash::DigestMap;
use bftlog_spec::merkle::{self, Hash, HashReader, ProveError};

use super::hashes::TxnHashes;
use super::*;

/// Bytes of one (leaf, index) pair in a run's row.
pub(super) const LEAF_PAIR: usize = 40;

/// Leaves of a frozen level a commit writes into its run at least (more
/// when a step commits many entries).
pub const MERGE_STEP_MIN: usize = 4096;

/// The leaves of entries `start..end` from the stored hashes, each mapped
/// to its first index: the memory level of the leaf index after a restart.
pub(super) fn recent_leaves(
    read: &redb::ReadTransaction,
    start: u64,
    end: u64,
) -> Result<DigestMap<Hash, u64>, StoreError> {
    let reader = TxnHashes::new(read)?;
    let mut out = DigestMap::with_capacity_and_hasher((end - start) as usize, Default::default());
    for index in start..end {
        let position = merkle::stored_hash_index(0, index);
        let leaf = reader.read_hashes(&[position]).map_err(ProveError::from)?[0];
        out.entry(leaf).or_insert(index);
    }
    Ok(out)
}

/// The leaf index's levels: its complete runs (on disk, with fences and
/// Bloom filters here) and, for the entries they do not cover yet, leaf
/// hash → first index in memory.
#[derive(Default)]
pub(super) struct RecentLeaves {
    /// Complete runs, oldest first.
    pub(super) runs: Vec<LeafRun>,
    /// Leaves committed since the last freeze.
    pub(super) active: DigestMap<Hash, u64>,
    /// The last frozen level while a thread sorts it: sorting 2^18 leaves
    /// in the commit that froze them stalled it for tens of milliseconds
    /// (and a memory level kept in key order instead, a `BTreeMap`, cost
    /// every append's lookup and insert: p50 20 ms against 14 at 25,000
    /// entries/s). Lookups use the map meanwhile.
    pub(super) sorting: Option<Sorting>,
    /// A frozen level, sorted by leaf hash (one first index per leaf),
    /// being written out as run `runs.len()`; its first `merged` are.
    pub(super) merging: SortedLevel,
    pub(super) merged: usize,
    /// The tree size at which `merging` was frozen: `leaf_indexed_size`
    /// once its run is complete.
    pub(super) merging_end: u64,
    /// The map of the level frozen before, emptied, for the next memory
    /// level: a fresh map grew by doubling to [`RECENT_LEAVES`], and its
    /// rehashes into newly faulted pages were 8% of a follower's core
    /// thread (n = 4 closed loop). Held from the first freeze on, so a log
    /// smaller than one level never pays its memory (about 21 MiB).
    pub(super) spare: Option<DigestMap<Hash, u64>>,
}

/// What a [`Store`] keeps in memory of one complete run of the leaf index.
pub(super) struct LeafRun {
    pub(super) id: u64,
    /// The first leaf of each row.
    pub(super) fences: Vec<Hash>,
    pub(super) bloom: Bloom,
}

impl LeafRun {
    /// The run `id` holding `sorted` in rows of `row_len`.
    pub(super) fn new(id: u64, sorted: &[(Hash, u64)], row_len: usize) -> Self {
        LeafRun {
            id,
            fences: sorted.chunks(row_len).map(|row| row[0].0).collect(),
            bloom: Bloom::of(sorted.iter().map(|(leaf, _)| leaf)),
        }
    }

    /// The row that holds `leaf` if the run does.
    pub(super) fn row_for(&self, leaf: &Hash) -> Option<u64> {
        if !self.bloom.may_contain(leaf) {
            return None;
        }
        // The last row whose first leaf is at most `leaf`.
        let after = self.fences.partition_point(|fence| fence <= leaf);
        after.checked_sub(1).map(|row| row as u64)
    }
}

/// A blocked Bloom filter over leaf hashes: 16 bits per leaf, and a
/// leaf's 8 probes all fall in one 512-bit block (one cache line), so a
/// lookup costs one cache miss per run rather than one per probe (with 40
/// runs at 10M entries, separate probes were 6% of a replica's CPU). About
/// 0.1% false positives. Leaf hashes are SHA-256 outputs, so their bytes
/// serve as the filter's hashes: bytes 0..8 pick the block, bytes 8..17 the
/// bits. A client grinding entries can raise the false positives only for
/// the cost of its own lookups, never change an answer.
pub(super) struct Bloom {
    pub(super) blocks: Vec<[u64; 8]>,
}

impl Bloom {
    const BITS_PER_LEAF: usize = 16;
    const PROBES: usize = 8;

    /// The filter of `leaves`.
    pub(super) fn of<'a>(leaves: impl ExactSizeIterator<Item = &'a Hash>) -> Self {
        let blocks = (leaves.len() * Self::BITS_PER_LEAF).div_ceil(512).max(1);
        let mut bloom = Bloom {
            blocks: vec![[0; 8]; blocks],
        };
        for leaf in leaves {
            bloom.insert(leaf);
        }
        bloom
    }

    /// The block for `leaf` and its 8 bit positions (9 bits each) in it.
    pub(super) fn probes(&self, leaf: &Hash) -> (usize, [u16; Self::PROBES]) {
        let pick = u64::from_le_bytes(leaf.0[0..8].try_into().expect("8 bytes"));
        // Multiply-shift: a uniform block without a division.
        let block = ((u128::from(pick) * self.blocks.len() as u128) >> 64) as usize;
        let mut bits_source = [0u8; 16];
        bits_source[..9].copy_from_slice(&leaf.0[8..17]);
        let source = u128::from_le_bytes(bits_source);
        let bits = std::array::from_fn(|i| ((source >> (9 * i)) & 511) as u16);
        (block, bits)
    }

    pub(super) fn insert(&mut self, leaf: &Hash) {
        let (block, bits) = self.probes(leaf);
        let block = &mut self.blocks[block];
        for bit in bits {
            block[usize::from(bit / 64)] |= 1 << (bit % 64);
        }
    }

    pub(super) fn may_contain(&self, leaf: &Hash) -> bool {
        let (block, bits) = self.probes(leaf);
        let block = &self.blocks[block];
        bits.iter()
            .all(|&bit| block[usize::from(bit / 64)] & (1 << (bit % 64)) != 0)
    }
}

/// Appends one (leaf, index) pair to a run row.
pub(super) fn push_pair(row: &mut Vec<u8>, leaf: &Hash, index: u64) {
    row.extend_from_slice(&leaf.0);
    row.extend_from_slice(&index.to_be_bytes());
}

/// The index paired with `leaf` in a run row, if the row holds it.
pub(super) fn find_in_row(row: &[u8], leaf: &Hash) -> Result<Option<u64>, StoreError> {
    if row.is_empty() || row.len() % LEAF_PAIR != 0 {
        return Err(StoreError::Corrupt(format!(
            "a leaf run row of {} bytes",
            row.len()
        )));
    }
    let pairs = row.len() / LEAF_PAIR;
    let key = |i: usize| &row[i * LEAF_PAIR..i * LEAF_PAIR + 32];
    let (mut low, mut high) = (0, pairs);
    while low < high {
        let mid = (low + high) / 2;
        match key(mid).cmp(&leaf.0[..]) {
            std::cmp::Ordering::Less => low = mid + 1,
            std::cmp::Ordering::Greater => high = mid,
            std::cmp::Ordering::Equal => {
                let at = mid * LEAF_PAIR + 32;
                let index = u64::from_be_bytes(row[at..at + 8].try_into().expect("8 bytes"));
                return Ok(Some(index));
            }
        }
    }
    Ok(None)
}

/// The complete runs `0..count` of the leaf index, read back for their
/// fences and Bloom filters.
pub(super) fn load_runs(
    read: &redb::ReadTransaction,
    count: u64,
) -> Result<Vec<LeafRun>, StoreError> {
    let table = read.open_table(LEAF_RUNS)?;
    let mut runs = Vec::with_capacity(count as usize);
    for id in 0..count {
        let mut leaves: Vec<Hash> = Vec::new();
        let mut fences = Vec::new();
        for (n, row) in table.range((id, 0)..(id + 1, 0))?.enumerate() {
            let (key, bytes) = row?;
            let bytes = bytes.value();
            if key.value().1 != n as u64 || bytes.is_empty() || bytes.len() % LEAF_PAIR != 0 {
                return Err(StoreError::Corrupt(format!("leaf run {id} row {n}")));
            }
            fences.push(Hash(bytes[..32].try_into().expect("32 bytes")));
            for pair in bytes.chunks_exact(LEAF_PAIR) {
                let leaf = Hash(pair[..32].try_into().expect("32 bytes"));
                if leaves.last().is_some_and(|last| *last >= leaf) {
                    return Err(StoreError::Corrupt(format!("leaf run {id} is not sorted")));
                }
                leaves.push(leaf);
            }
        }
        if leaves.is_empty() {
            return Err(StoreError::Corrupt(format!("leaf run {id} is missing")));
        }
        runs.push(LeafRun {
            id,
            fences,
            bloom: Bloom::of(leaves.iter()),
        });
    }
    Ok(runs)
}

/// A frozen level being sorted.
pub(super) struct Sorting {
    pub(super) leaves: Arc<DigestMap<Hash, u64>>,
    /// The tree size it ends at.
    pub(super) end: u64,
    pub(super) sorted: std::thread::JoinHandle<SortedLevel>,
}

/// `leaves` sorted by leaf hash (one index per leaf already).
pub(super) fn sort_level(leaves: &DigestMap<Hash, u64>) -> SortedLevel {
    let mut sorted: Vec<(Hash, u64)> = leaves.iter().map(|(l, i)| (*l, *i)).collect();
    sorted.sort_unstable();
    SortedLevel::new(sorted)
}

/// Leaves sorted by hash, with where each bucket of leading hash bits
/// starts. Leaf hashes are uniform, so a bucket holds about
/// [`SortedLevel::LEAVES_PER_BUCKET`] leaves and a lookup touches a cache
/// line or two. A plain binary search over a frozen level of 2^18 leaves
/// took 18 steps, most of them cache misses, for every submitted entry:
/// 8% of a replica's core thread at 55,000 entries/s (a profile).
#[derive(Default)]
pub(super) struct SortedLevel {
    pub(super) leaves: Vec<(Hash, u64)>,
    /// `leaves[starts[b]..starts[b + 1]]` are the leaves whose first
    /// `bucket_bits` bits are `b`.
    pub(super) starts: Vec<u32>,
    pub(super) bucket_bits: u32,
}

impl SortedLevel {
    const LEAVES_PER_BUCKET: usize = 4;

    pub(super) fn new(leaves: Vec<(Hash, u64)>) -> Self {
        assert!(
            leaves.windows(2).all(|w| w[0].0 < w[1].0),
            "a sorted level holds each leaf once, in order"
        );
        assert!(
            u32::try_from(leaves.len()).is_ok(),
            "a level fits u32 indexes"
        );
        let bucket_bits = (leaves.len() / Self::LEAVES_PER_BUCKET)
            .max(1)
            .ilog2()
            .min(24);
        let mut starts = vec![0u32; (1 << bucket_bits) + 1];
        for (leaf, _) in &leaves {
            starts[Self::bucket(leaf, bucket_bits) + 1] += 1;
        }
        for b in 1..starts.len() {
            starts[b] += starts[b - 1];
        }
        SortedLevel {
            leaves,
            starts,
            bucket_bits,
        }
    }

    pub(super) fn bucket(leaf: &Hash, bucket_bits: u32) -> usize {
        let top = u32::from_be_bytes(leaf.0[..4].try_into().expect("4 bytes"));
        // `checked_shr` because a shift by 32 (no bucket bits) overflows.
        top.checked_shr(32 - bucket_bits).unwrap_or(0) as usize
    }

    pub(super) fn index_of(&self, leaf: &Hash) -> Option<u64> {
        if self.leaves.is_empty() {
            return None;
        }
        let b = Self::bucket(leaf, self.bucket_bits);
        let bucket = &self.leaves[self.starts[b] as usize..self.starts[b + 1] as usize];
        let i = bucket.binary_search_by(|(h, _)| h.cmp(leaf)).ok()?;
        Some(bucket[i].1)
    }
}

impl std::ops::Deref for SortedLevel {
    type Target = [(Hash, u64)];

    fn deref(&self) -> &[(Hash, u64)] {
        &self.leaves
    }
}

impl RecentLeaves {
    /// The first index of `leaf` in memory (`merging` and `sorting` hold
    /// older entries than `active`; at most one of them is set).
    pub(super) fn get(&self, leaf: &Hash) -> Option<u64> {
        if let Some(index) = self.merging.index_of(leaf) {
            return Some(index);
        }
        if let Some(index) = self.sorting.as_ref().and_then(|s| s.leaves.get(leaf)) {
            return Some(*index);
        }
        self.active.get(leaf).copied()
    }

    /// Freezes the memory level, which ends at tree size `end`.
    pub(super) fn freeze(&mut self, end: u64, background: bool) {
        // The next level starts at the frozen one's size: levels fill to
        // the same limit.
        let next = self.spare.take().unwrap_or_else(|| {
            DigestMap::with_capacity_and_hasher(self.active.len(), Default::default())
        });
        let leaves = Arc::new(std::mem::replace(&mut self.active, next));
        let for_thread = Arc::clone(&leaves);
        let spawned = background
            .then(|| {
                std::thread::Builder::new()
                    .name("bftlog-leaf-sort".into())
                    .spawn(move || sort_level(&for_thread))
                    .ok()
            })
            .flatten();
        match spawned {
            Some(sorted) => {
                self.sorting = Some(Sorting {
                    leaves,
                    end,
                    sorted,
                })
            }
            None => {
                self.merging = sort_level(&leaves);
                self.merged = 0;
                self.merging_end = end;
                self.keep_spare(leaves);
            }
        }
    }

    /// Keeps a frozen level's map, emptied, for the next memory level.
    pub(super) fn keep_spare(&mut self, leaves: Arc<DigestMap<Hash, u64>>) {
        // The sorting thread's reference is gone once it was joined.
        if let Ok(mut map) = Arc::try_unwrap(leaves) {
            map.clear();
            self.spare = Some(map);
        }
    }

    /// Makes a sorted frozen level the one being written: when its thread
    /// is done, or now (waiting for it) if `must` (a new freeze is due).
    pub(super) fn adopt_sorted(&mut self, must: bool) {
        let ready = self
            .sorting
            .as_ref()
            .is_some_and(|s| must || s.sorted.is_finished());
        if !ready {
            return;
        }
        let sorting = self.sorting.take().expect("checked");
        assert!(self.merging.is_empty(), "one frozen level at a time");
        self.merging = match sorting.sorted.join() {
            Ok(sorted) => sorted,
            // Sorting cannot fail; should its thread have died, sort here.
            Err(_) => sort_level(&sorting.leaves),
        };
        self.merged = 0;
        self.merging_end = sorting.end;
        self.keep_spare(sorting.leaves);
    }
}
