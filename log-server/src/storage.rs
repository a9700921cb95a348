//! Durable replica state in redb.
//!
//! Tables:
//!
//! | table          | key                      | value                                   |
//! |----------------|--------------------------|-----------------------------------------|
//! | `block_parts`  | (round, block id, part)  | part 0: the block without its entries; part 1 + k: a run of its entries from offset k |
//! | `voted_blocks` | (round, block id)        | entry count of a voted block no commit has settled |
//! | `block_starts` | first index `u64`        | (round, block id, entry count) of a committed block with entries |
//! | `entry_runs`   | first index `u64`        | layout 4's runs of committed entries, below `meta.legacy_entries_end` |
//! | `leaf_runs`    | (run `u64`, row `u64`)   | up to [`LEAF_ROW`] sorted (leaf hash, index) pairs |
//! | `hash_chunks`  | chunk `u64`              | up to 64 stored hashes (32 bytes each)  |
//! | `blocks`       | height `u64`             | committed block without its entries, and its index range |
//! | `checkpoints`  | size `u64`               | quorum checkpoint note text             |
//! | `meta`         | name `&str`              | `u64` (tree size, committed height, …)  |
//! | `safety`       | `0u8`                    | consensus safety state (canonical CBOR) |
//!
//! Merkle hashes use the spec crate's stored-hash order (Go sumdb's
//! layout): the hashes a leaf completes are stored right after it, so an
//! append writes one contiguous run and an RFC 6962 proof reads O(log n)
//! hashes. Hashes are grouped in chunks of [`HASH_CHUNK`] so a proof's
//! lower levels, which lie close together, share a read.
//!
//! **Each entry is written once** (layout 5, docs/adr/0004). A replica
//! must make a block durable before it votes for it (a block a quorum
//! certified has to survive all replicas crashing at once), so the vote
//! writes the block into `block_parts`: its header, then its entries in
//! *runs*, each entry a 4-byte big-endian length and the bytes, a run at
//! most [`BLOCK_PART_BYTES`] (one 64 KiB page with its key) unless a
//! single entry is larger. When the block commits, those rows stay where
//! they are: the commit adds only a `block_starts` row (its first index →
//! the block) and takes the block off `voted_blocks`. Until layout 4 the
//! commit copied every entry into index-keyed runs, about a third of what
//! a replica wrote under load. A block committed without this replica's
//! vote (by sync, or a proposal it was too late for) is written at
//! commit. Voted blocks at or below a commit's round that did not commit
//! never will (they conflict with the committed chain), and that commit
//! deletes them. Entry `i` is in the block of the last `block_starts` row
//! at or below `i`, in its last run whose part is at most `i - first + 1`;
//! a missing run is corruption, never a shorter log. A database upgraded
//! from layout 4 keeps its committed entries in `entry_runs`, read for
//! indexes below `meta.legacy_entries_end`: no rewrite of a large log.
//!
//! The leaf index (leaf hash → first index, for idempotent appends and
//! proofs by leaf hash) is a small log-structured index. Leaf hashes are
//! random, so a B-tree keyed by them rewrites a page per insert; merging
//! batches into one (an earlier layout) still rewrote the whole tree once
//! per batch, a cost that grew with the log until it was the p99 commit
//! latency at a few hundred thousand entries. Instead:
//!
//! - the newest entries' leaves are held in memory ([`RECENT_LEAVES`] at
//!   most);
//! - when that fills, it is frozen, sorted on a thread of its own (its map
//!   answers lookups meanwhile), and written out as an immutable *run*:
//!   rows of [`LEAF_ROW`] sorted (leaf, index) pairs, keyed by (run, row),
//!   so writing it only appends at the B-tree's right edge. It is written
//!   a slice per commit (twice the commit's new leaves, at least
//!   [`MERGE_STEP_MIN`]) while a fresh memory level takes new leaves; the
//!   sorted list answers lookups until its last row is written;
//! - each complete run keeps in memory the first leaf of every row (a
//!   fence, 32 bytes per [`LEAF_ROW`] entries) and a blocked Bloom filter
//!   of its leaves (16 bits per entry, one cache line per lookup), so a
//!   lookup reads at most one row of a run that may hold the leaf, and
//!   almost never one of a run that does not.
//!
//! Runs are searched oldest first, so an entry committed twice keeps its
//! first index. `meta.leaf_runs` counts the complete runs and
//! `meta.leaf_indexed_size` is the tree size they cover. The memory level
//! needs no log of its own: on open it is rebuilt from the stored leaf
//! hashes beyond that size, and the rows of a run a crash left incomplete
//! are deleted. Runs are never merged with each other yet: a lookup of an
//! absent leaf probes one Bloom filter per run (40 at 10M entries).
//!
//! Proofs read the stored hashes of levels [`UPPER_LEVEL`] and up from
//! memory ([`UpperHashes`], 4 bytes per entry: 40 MB at 10M entries),
//! because those levels lie one per chunk: a proof in a 10M tree needs
//! about 20 of them and otherwise read a chunk of 64 hashes for each. The
//! lower levels of a leaf's proof lie within its 16-leaf subtree and come
//! from one or two chunks. The cache is filled from
//! the stored hashes on open and extended after every commit; a complete
//! subtree's hash never changes, so it needs no invalidation.
//!
//! A committed block's record in `blocks` keeps its header and index
//! range; [`Store::committed_blocks`] adds its entries for sync.
//!
//! Every [`Store::write`] is one redb transaction: all the commits, the
//! safety state and the quorum checkpoints of one driver step become
//! durable together or not at all, so a crash at any point restarts from
//! a consistent state. A step with safety state or voted blocks is flushed
//! before it returns; one of commits and quorum checkpoints only becomes
//! durable with the next flushed step (see [`Store::write`]).

use std::path::Path;
use std::sync::Mutex;

use bftlog_spec::merkle::{
    self, CompactRange, Hash, HashReader, MAX_PROOF_LEN, ProveError, stored_hash_count,
    stored_hash_subtree,
};
use bftlog_spec::wire::{self, Block, BoundedVec, Entry, QuorumCert, TimeoutCert};
use redb::{Database, Durability, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

use bftlog_consensus::digest_hash::DigestMap;

use bftlog_consensus::{Committed, Recovered, SafetyState};

const ENTRY_RUNS: TableDefinition<u64, &[u8]> = TableDefinition::new("entry_runs");
const LEAF_RUNS: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("leaf_runs");
const HASH_CHUNKS: TableDefinition<u64, &[u8]> = TableDefinition::new("hash_chunks");
const BLOCKS: TableDefinition<u64, &[u8]> = TableDefinition::new("blocks");
/// Layout 4's voted blocks (CBOR in parts); read only to migrate.
const VOTED_PARTS_V4: TableDefinition<(u64, [u8; 32], u32), &[u8]> =
    TableDefinition::new("voted_parts");
const BLOCK_PARTS: TableDefinition<(u64, [u8; 32], u32), &[u8]> =
    TableDefinition::new("block_parts");
const VOTED: TableDefinition<(u64, [u8; 32]), u64> = TableDefinition::new("voted_blocks");
const BLOCK_STARTS: TableDefinition<u64, (u64, [u8; 32], u64)> =
    TableDefinition::new("block_starts");
const CHECKPOINTS: TableDefinition<u64, &[u8]> = TableDefinition::new("checkpoints");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const SAFETY: TableDefinition<u8, &[u8]> = TableDefinition::new("safety");

/// Stored hashes per `hash_chunks` row.
pub const HASH_CHUNK: u64 = 64;
/// Most bytes of one `block_parts` row unless it is a single entry: the
/// row, its 44-byte key and its leaf header fit one 64 KiB redb page. A
/// block stored whole took the next power of two (a 150 KB block a
/// 256 KiB page), and blocks are most of what a replica writes.
pub const BLOCK_PART_BYTES: usize = 65_536 - 128;
/// The layout version in `meta`; a database of another layout is refused.
const SCHEMA_VERSION: u64 = 5;
/// Entries below this index are in `entry_runs` (a database migrated from
/// layout 4 or earlier); the rest are in their blocks' runs.
const META_LEGACY_END: &str = "legacy_entries_end";

const META_TREE_SIZE: &str = "tree_size";
const META_HEIGHT: &str = "committed_height";
const META_EPOCH: &str = "epoch";
const META_SCHEMA: &str = "schema";
/// Entries below this index have their leaf in a complete run.
const META_LEAF_INDEXED: &str = "leaf_indexed_size";
/// Complete runs of the leaf index (runs `0..count`).
const META_LEAF_RUNS: &str = "leaf_runs";
/// (leaf, index) pairs per `leaf_runs` row: 40 bytes each, so a row and
/// its key fit one 4 KiB page.
pub const LEAF_ROW: usize = 96;
/// Bytes of one (leaf, index) pair in a run row.
const LEAF_PAIR: usize = 40;
/// Leaves held in memory before they freeze into a run (about 12 MiB).
pub const RECENT_LEAVES: usize = 1 << 18;
/// Size of the latest checkpoint whose witness cosignatures meet the policy.
const META_WITNESSED: &str = "witnessed_size";

/// A storage failure. The driver treats any of these as fatal: a replica
/// that cannot write must stop speaking.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(Box<redb::Error>),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("the database belongs to epoch {stored}, the configuration says {configured}")]
    EpochMismatch { stored: u64, configured: u64 },
    #[error(
        "the database has storage layout {stored:?}, this build uses {SCHEMA_VERSION}; \
         start the replica with an empty data directory and it will sync from its peers"
    )]
    SchemaMismatch { stored: Option<u64> },
    #[error(transparent)]
    Prove(#[from] ProveError),
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Database(Box::new(e.into()))
            }
        }
    )*};
}
from_redb!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// Why a proof or read request could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("not found: {0}")]
    NotFound(String),
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<redb::StorageError> for ReadError {
    fn from(e: redb::StorageError) -> Self {
        ReadError::Store(e.into())
    }
}
impl From<redb::TransactionError> for ReadError {
    fn from(e: redb::TransactionError) -> Self {
        ReadError::Store(e.into())
    }
}
impl From<redb::TableError> for ReadError {
    fn from(e: redb::TableError) -> Self {
        ReadError::Store(e.into())
    }
}

/// The safety state as stored.
#[derive(Serialize, Deserialize)]
struct SafetyRecord {
    last_voted_round: u64,
    last_vote_round: u64,
    high_qc: QuorumCert,
    high_tc: Option<TimeoutCert>,
    last_signed: Option<(u64, Hash)>,
}

/// A committed block without its entries, which are in `entries`.
#[derive(Serialize, Deserialize)]
struct BlockRecord {
    header: Block,
    first_index: u64,
    entry_count: u64,
}

/// What one driver step makes durable, in one transaction.
#[derive(Default)]
pub struct WriteBatch {
    pub commits: Vec<Committed>,
    pub safety: Option<SafetyState>,
    /// Voted blocks with their ids (as the core computed them).
    pub voted_blocks: Vec<(Hash, std::sync::Arc<Block>)>,
    /// Quorum checkpoints: (size, note text).
    pub checkpoints: Vec<(u64, String)>,
}

impl WriteBatch {
    pub fn is_empty(&self) -> bool {
        self.commits.is_empty()
            && self.safety.is_none()
            && self.voted_blocks.is_empty()
            && self.checkpoints.is_empty()
    }

    /// Whether the write must be flushed before the step's messages leave:
    /// it holds the consensus safety state or blocks this replica voted
    /// for. Commits and quorum checkpoints alone need not be (see
    /// [`Store::write`]).
    pub fn needs_flush(&self) -> bool {
        self.safety.is_some() || !self.voted_blocks.is_empty()
    }
}

/// Buffers one [`Store::write`] fills and the next reuses: fresh ones per
/// write faulted in new pages every time (the kernel zeroing them was
/// about 3% of a follower's CPU in a DWARF profile). They keep
/// the size of the largest write: a few MB for a sync step of 100,000
/// entries.
#[derive(Default)]
struct WriteScratch {
    /// One `block_parts` row being built.
    row: Vec<u8>,
    /// Stored hashes the step's commits append, in stored-hash order.
    hashes: Vec<Hash>,
    /// (leaf hash, index) of each entry the step commits.
    leaves: Vec<(Hash, u64)>,
    /// (level, index, hash) of the stored hashes of levels ≥
    /// [`UPPER_LEVEL`] the step adds, for [`UpperHashes`].
    upper: Vec<(u32, u64, Hash)>,
}

/// A replica's database. Reads may run from any thread while the driver
/// writes; writes come from the driver only.
pub struct Store {
    db: Database,
    /// The database file, for [`Store::file_bytes`].
    path: std::path::PathBuf,
    /// [`META_LEGACY_END`]: entries below it are read from `entry_runs`.
    legacy_end: u64,
    /// The committed tree's right edge, kept to compute the hashes each
    /// append stores.
    writer: Mutex<CompactRange>,
    /// Buffers [`Store::write`] reuses.
    scratch: Mutex<WriteScratch>,
    /// Leaf hash → first index, for entries at or beyond `leaf_indexed_size`.
    recent: std::sync::RwLock<RecentLeaves>,
    /// [`RECENT_LEAVES`], smaller in tests.
    recent_limit: usize,
    /// [`MERGE_STEP_MIN`], smaller in tests.
    merge_step_min: usize,
    /// [`LEAF_ROW`], smaller in tests.
    leaf_row: usize,
    /// Whether a frozen level is sorted on a thread of its own (tests that
    /// check each step's levels sort in place).
    background_sort: bool,
    /// Stored hashes of levels ≥ [`UPPER_LEVEL`], up to the committed size.
    upper: std::sync::RwLock<UpperHashes>,
}

impl Store {
    /// Opens (or creates) the database at `path` for a cluster `epoch`,
    /// with the default page cache.
    pub fn open(path: &Path, epoch: u64) -> Result<Self, StoreError> {
        Self::open_with_cache(path, epoch, crate::config::DEFAULT_CACHE_MB << 20)
    }

    /// [`Store::open`] with a page cache of `cache_bytes`.
    pub fn open_with_cache(
        path: &Path,
        epoch: u64,
        cache_bytes: usize,
    ) -> Result<Self, StoreError> {
        let db = Database::builder()
            .set_cache_size(cache_bytes)
            .create(path)?;
        let txn = db.begin_write()?;
        let size;
        {
            // Create every table so readers never see a missing one.
            txn.open_table(ENTRY_RUNS)?;
            txn.open_table(LEAF_RUNS)?;
            txn.open_table(HASH_CHUNKS)?;
            txn.open_table(BLOCKS)?;
            txn.open_table(BLOCK_PARTS)?;
            txn.open_table(VOTED)?;
            txn.open_table(BLOCK_STARTS)?;
            txn.open_table(CHECKPOINTS)?;
            txn.open_table(SAFETY)?;
            let mut meta = txn.open_table(META)?;
            let stored_epoch = meta.get(META_EPOCH)?.map(|v| v.value());
            match stored_epoch {
                Some(stored) if stored != epoch => {
                    return Err(StoreError::EpochMismatch {
                        stored,
                        configured: epoch,
                    });
                }
                Some(_) => {}
                None => {
                    meta.insert(META_EPOCH, epoch)?;
                }
            }
            size = meta.get(META_TREE_SIZE)?.map_or(0, |v| v.value());
            let schema = meta.get(META_SCHEMA)?.map(|v| v.value());
            match schema {
                Some(SCHEMA_VERSION) => {}
                None if size == 0 => {
                    meta.insert(META_SCHEMA, SCHEMA_VERSION)?;
                }
                Some(stored @ 2..=4) => {
                    if stored == 2 {
                        let runs = migrate_leaf_index_v2(&txn)?;
                        meta.insert(META_LEAF_RUNS, runs)?;
                    }
                    if stored <= 3 {
                        migrate_voted_v3(&txn)?;
                    }
                    migrate_voted_v4(&txn)?;
                    // Committed entries stay where they are; no rewrite
                    // of a large log on upgrade.
                    meta.insert(META_LEGACY_END, size)?;
                    meta.insert(META_SCHEMA, SCHEMA_VERSION)?;
                }
                stored => return Err(StoreError::SchemaMismatch { stored }),
            }
        }
        let legacy_end = txn
            .open_table(META)?
            .get(META_LEGACY_END)?
            .map_or(0, |v| v.value());
        txn.commit()?;
        let store = Store {
            db,
            path: path.to_path_buf(),
            legacy_end,
            writer: Mutex::new(CompactRange::new()),
            scratch: Default::default(),
            recent: Default::default(),
            recent_limit: RECENT_LEAVES,
            merge_step_min: MERGE_STEP_MIN,
            leaf_row: LEAF_ROW,
            background_sort: true,
            upper: Default::default(),
        };
        // The rows of a run that a crash left half written go; the frozen
        // level they came from is rebuilt into memory below.
        let txn = store.db.begin_write()?;
        let run_count = {
            let meta = txn.open_table(META)?;
            let count = meta.get(META_LEAF_RUNS)?.map_or(0, |v| v.value());
            txn.open_table(LEAF_RUNS)?
                .retain_in((count, 0)..=(u64::MAX, u64::MAX), |_, _| false)?;
            count
        };
        txn.commit()?;
        let (tree, recent, runs, upper) = {
            let read = store.db.begin_read()?;
            let reader = TxnHashes::new(&read)?;
            let indexed = read
                .open_table(META)?
                .get(META_LEAF_INDEXED)?
                .map_or(0, |v| v.value());
            (
                CompactRange::from_storage(size, &reader)?,
                recent_leaves(&read, indexed, size)?,
                load_runs(&read, run_count)?,
                UpperHashes::load(size, &reader)?,
            )
        };
        *store.writer.lock().expect("store lock") = tree;
        {
            let mut leaves = store.recent.write().expect("leaf lock");
            leaves.active = recent;
            leaves.runs = runs;
        }
        *store.upper.write().expect("upper lock") = upper;
        Ok(store)
    }

    /// Stored hashes for proofs within `read`'s snapshot: upper levels
    /// from memory, the rest from the transaction.
    fn hashes<'a>(&'a self, read: &redb::ReadTransaction) -> Result<ProofHashes<'a>, StoreError> {
        Ok(ProofHashes {
            upper: &self.upper,
            txn: TxnHashes::new(read)?,
        })
    }

    /// The database file's length in bytes (0 if it cannot be read).
    pub fn file_bytes(&self) -> u64 {
        std::fs::metadata(&self.path).map_or(0, |m| m.len())
    }

    /// Number of committed entries.
    pub fn tree_size(&self) -> u64 {
        self.writer.lock().expect("store lock").size()
    }

    /// What the consensus core needs to restart: its safety state, the
    /// committed tree, the newest committed blocks (at most `retain`, and
    /// beyond 16 of them at most `retain_bytes` of entries) and the voted
    /// blocks not yet committed.
    pub fn recover(
        &self,
        epoch: u64,
        retain: usize,
        retain_bytes: usize,
    ) -> Result<Recovered, StoreError> {
        let read = self.db.begin_read()?;
        let mut recovered = Recovered::fresh(epoch);
        if let Some(bytes) = read.open_table(SAFETY)?.get(0u8)? {
            let record: SafetyRecord = decode(bytes.value(), "safety state")?;
            recovered.safety = SafetyState {
                last_voted_round: record.last_voted_round,
                last_vote_round: record.last_vote_round,
                high_qc: record.high_qc,
                high_tc: record.high_tc,
                last_signed: record.last_signed,
            };
        }
        recovered.tree = self.writer.lock().expect("store lock").clone();
        let height = read
            .open_table(META)?
            .get(META_HEIGHT)?
            .map_or(0, |v| v.value());
        if height > 0 {
            // Newest first, one block at a time, so a restart never holds
            // more than the window it keeps.
            let mut newest_first = Vec::new();
            let mut bytes = 0;
            let mut next = height;
            while next >= 1 && newest_first.len() < retain {
                let block = read_blocks(&read, self.legacy_end, next, 1)?
                    .pop()
                    .ok_or_else(|| StoreError::Corrupt(format!("block {next} missing")))?;
                let size = bftlog_consensus::entry_bytes(&block);
                if newest_first.len() >= bftlog_consensus::MIN_RETAINED_BLOCKS
                    && bytes + size > retain_bytes
                {
                    break;
                }
                bytes += size;
                newest_first.push(block);
                next -= 1;
            }
            newest_first.reverse();
            recovered.first_height = next + 1;
            recovered.committed_blocks = newest_first;
        }
        recovered.voted_blocks = read_voted(&read)?;
        Ok(recovered)
    }

    /// Makes every earlier write durable (an empty durable commit): for a
    /// clean shutdown after a checkpoints-only write.
    pub fn sync(&self) -> Result<(), StoreError> {
        let _tree = self.writer.lock().expect("store lock");
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate);
        txn.commit()?;
        Ok(())
    }

    /// Writes one driver step in one transaction. It is flushed when it
    /// holds safety state or voted blocks ([`WriteBatch::needs_flush`]).
    /// A step of commits and quorum checkpoints only is committed (readers
    /// see it at once) and becomes durable with the next flushed write,
    /// saving a flush: at light load, the commit of a round that certified
    /// no entries. Losing it in a crash loses nothing that matters:
    /// - a commit follows from certificates the replica and its peers
    ///   hold; after a restart the replica commits those blocks again
    ///   (their voted copies are deleted in the same transaction as the
    ///   commit, so they come back with it) or fetches them by sync;
    /// - a checkpoint signature is safety state, so the commits it covers
    ///   are flushed with it, before it is sent;
    /// - a quorum checkpoint's 2f+1 signers each made its entries and
    ///   their signature durable before signing, and the note is only a
    ///   cache of their signatures (it verifies wherever it was sent).
    pub fn write(&self, batch: &WriteBatch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut tree = self.writer.lock().expect("store lock");
        let mut next_tree = tree.clone();
        let mut txn = self.db.begin_write()?;
        txn.set_durability(if batch.needs_flush() {
            Durability::Immediate
        } else {
            Durability::None
        });
        // Set when this step writes a frozen level's last row: the run
        // it becomes (added to memory once the transaction commits).
        let mut completed: Option<LeafRun> = None;
        // The tree size at which the memory level freezes after this step.
        let mut freeze: Option<u64> = None;
        // How much of the frozen level is written after this step.
        let mut merge_progress = 0;
        let mut scratch_guard = self.scratch.lock().expect("scratch lock");
        let scratch = &mut *scratch_guard;
        scratch.hashes.clear();
        scratch.leaves.clear();
        scratch.upper.clear();
        {
            let mut meta = txn.open_table(META)?;
            if !batch.voted_blocks.is_empty() {
                // Before the commits: a block voted and committed in one
                // step is then written once, by its vote.
                let mut parts = txn.open_table(BLOCK_PARTS)?;
                let mut voted = txn.open_table(VOTED)?;
                for (id, block) in &batch.voted_blocks {
                    put_voted(&mut parts, &mut voted, id, block, &mut scratch.row)?;
                }
            }
            if !batch.commits.is_empty() {
                let mut parts = txn.open_table(BLOCK_PARTS)?;
                let mut voted = txn.open_table(VOTED)?;
                let mut starts = txn.open_table(BLOCK_STARTS)?;
                let mut leaf_runs = txn.open_table(LEAF_RUNS)?;
                let mut chunks = txn.open_table(HASH_CHUNKS)?;
                let mut blocks = txn.open_table(BLOCKS)?;
                let first_stored = stored_hash_count(next_tree.size());
                let mut max_round = 0;
                for commit in &batch.commits {
                    assert_eq!(
                        commit.first_index,
                        next_tree.size(),
                        "commits must extend the stored tree"
                    );
                    assert_eq!(
                        commit.leaves.len(),
                        commit.block.entries.len(),
                        "one leaf hash per entry"
                    );
                    for &leaf in &commit.leaves {
                        let index = next_tree.size();
                        scratch.leaves.push((leaf, index));
                        let stored = next_tree.append(leaf);
                        for (level, hash) in stored
                            .as_slice()
                            .iter()
                            .enumerate()
                            .skip(UPPER_LEVEL as usize)
                        {
                            let level = level as u32;
                            scratch.upper.push((level, index >> level, *hash));
                        }
                        scratch.hashes.extend_from_slice(stored.as_slice());
                    }
                    // The entries stay where this replica's vote wrote
                    // them; a block it did not vote for (a sync, a
                    // proposal it was too late for) is written now.
                    let round = commit.block.round;
                    if voted.remove((round, commit.block_id.0))?.is_none() {
                        put_block(
                            &mut parts,
                            &commit.block_id,
                            &commit.block,
                            &mut scratch.row,
                        )?;
                    }
                    let count = commit.block.entries.len() as u64;
                    if count > 0 {
                        starts.insert(commit.first_index, (round, commit.block_id.0, count))?;
                    }
                    assert_eq!(next_tree.size(), commit.size, "committed size mismatch");
                    assert_eq!(next_tree.root(), commit.root, "committed root mismatch");
                    let record = BlockRecord {
                        header: bftlog_consensus::crypto::header_of(&commit.block),
                        first_index: commit.first_index,
                        entry_count: count,
                    };
                    blocks.insert(commit.height, wire::encode(&record).as_slice())?;
                    meta.insert(META_HEIGHT, commit.height)?;
                    max_round = max_round.max(commit.block.round);
                }
                // The memory level takes the new leaves. When they would
                // overflow it, it is frozen, sorted off this thread, and
                // written out as a run a slice per commit, at least twice
                // as fast as leaves arrive, so neither sorting nor writing
                // a run stalls a commit.
                let (freezing, sorting) = {
                    let recent = self.recent.read().expect("leaf lock");
                    (
                        recent.active.len() + scratch.leaves.len() >= self.recent_limit,
                        recent.sorting.is_some(),
                    )
                };
                if sorting {
                    self.recent
                        .write()
                        .expect("leaf lock")
                        .adopt_sorted(freezing);
                }
                let recent = self.recent.read().expect("leaf lock");
                let mut merged_to = recent.merged;
                if !recent.merging.is_empty() {
                    let step = (2 * scratch.leaves.len()).max(self.merge_step_min);
                    // Slices end on row boundaries (but for the last).
                    merged_to = (recent.merged + step)
                        .next_multiple_of(self.leaf_row)
                        .min(recent.merging.len());
                }
                if freezing {
                    // The previous frozen level, if still being written,
                    // goes in whole; the memory level plus these leaves
                    // freeze once this transaction commits.
                    merged_to = recent.merging.len();
                    freeze = Some(next_tree.size());
                }
                if !recent.merging.is_empty() {
                    let run = recent.runs.len() as u64;
                    let rows = recent.merging[recent.merged..merged_to].chunks(self.leaf_row);
                    let mut bytes = Vec::with_capacity(self.leaf_row * LEAF_PAIR);
                    for (k, row) in rows.enumerate() {
                        bytes.clear();
                        for (leaf, index) in row {
                            push_pair(&mut bytes, leaf, *index);
                        }
                        let row_number = (recent.merged / self.leaf_row + k) as u64;
                        leaf_runs.insert((run, row_number), bytes.as_slice())?;
                    }
                    if merged_to == recent.merging.len() {
                        meta.insert(META_LEAF_RUNS, run + 1)?;
                        meta.insert(META_LEAF_INDEXED, recent.merging_end)?;
                        completed = Some(LeafRun::new(run, &recent.merging, self.leaf_row));
                    }
                }
                merge_progress = merged_to;
                drop(recent);
                write_hashes(&mut chunks, first_stored, &scratch.hashes)?;
                meta.insert(META_TREE_SIZE, next_tree.size())?;
                // Voted blocks at or below the committed round that did
                // not commit never will (they conflict with the committed
                // chain): their rows go. Committed ones left `voted` above,
                // and none comes back: a replica votes only in its current
                // round, which is past a block's round once a certificate
                // commits it.
                let mut settled = Vec::new();
                voted.retain_in(..=(max_round, [0xff; 32]), |key, _| {
                    settled.push(key);
                    false
                })?;
                for (round, id) in settled {
                    parts.retain_in((round, id, 0)..=(round, id, u32::MAX), |_, _| false)?;
                }
            }
            if let Some(state) = &batch.safety {
                let record = SafetyRecord {
                    last_voted_round: state.last_voted_round,
                    last_vote_round: state.last_vote_round,
                    high_qc: state.high_qc.clone(),
                    high_tc: state.high_tc.clone(),
                    last_signed: state.last_signed,
                };
                txn.open_table(SAFETY)?
                    .insert(0u8, wire::encode(&record).as_slice())?;
            }
            if !batch.checkpoints.is_empty() {
                let mut checkpoints = txn.open_table(CHECKPOINTS)?;
                for (size, note) in &batch.checkpoints {
                    assert!(*size <= next_tree.size(), "checkpoint beyond the tree");
                    checkpoints.insert(*size, note.as_bytes())?;
                }
            }
        }
        txn.commit()?;
        *tree = next_tree;
        let mut recent = self.recent.write().expect("leaf lock");
        if !batch.commits.is_empty() {
            recent.merged = merge_progress;
            if let Some(run) = completed {
                recent.runs.push(run);
                recent.merging = SortedLevel::default();
                recent.merged = 0;
            }
            for &(leaf, index) in &scratch.leaves {
                recent.active.entry(leaf).or_insert(index);
            }
            if let Some(end) = freeze {
                assert!(
                    recent.merging.is_empty() && recent.sorting.is_none(),
                    "the previous frozen level was written first"
                );
                recent.freeze(end, self.background_sort);
            }
        }
        drop(recent);
        let mut upper = self.upper.write().expect("upper lock");
        for &(level, index, hash) in &scratch.upper {
            upper.push(level, index, hash);
        }
        Ok(())
    }

    /// The index of an entry with this leaf hash, if committed.
    pub fn index_of(&self, leaf: &Hash) -> Result<Option<u64>, StoreError> {
        Ok(self.indexes_of(std::slice::from_ref(leaf))?[0])
    }

    /// The indexes of entries with these leaf hashes, where committed.
    pub fn indexes_of(&self, leaves: &[Hash]) -> Result<Vec<Option<u64>>, StoreError> {
        // The lock before the snapshot: a run joins `runs` only after the
        // transaction that wrote its last row committed, so every run
        // seen here is whole in the snapshot, and a frozen level not yet
        // in `runs` is still in memory.
        let recent = self.recent.read().expect("leaf lock");
        let read = self.db.begin_read()?;
        let table = read.open_table(LEAF_RUNS)?;
        leaves
            .iter()
            .map(|leaf| {
                // Older runs hold older entries, and all runs older ones
                // than memory: the first index found is the first one.
                for run in &recent.runs {
                    let Some(row) = run.row_for(leaf) else {
                        continue;
                    };
                    let bytes = table.get((run.id, row))?.ok_or_else(|| {
                        StoreError::Corrupt(format!("leaf run {} lacks row {row}", run.id))
                    })?;
                    if let Some(index) = find_in_row(bytes.value(), leaf)? {
                        return Ok(Some(index));
                    }
                }
                Ok(recent.get(leaf))
            })
            .collect()
    }

    /// Up to `count` entries from `start`.
    pub fn entries(&self, start: u64, count: u64) -> Result<Vec<Entry>, ReadError> {
        let read = self.db.begin_read()?;
        Ok(read_entries(
            &read,
            self.legacy_end,
            start,
            start.saturating_add(count),
        )?)
    }

    /// The latest quorum checkpoint: (size, note text).
    pub fn latest_checkpoint(&self) -> Result<Option<(u64, String)>, StoreError> {
        let read = self.db.begin_read()?;
        let table = read.open_table(CHECKPOINTS)?;
        let Some((size, note)) = table.last()? else {
            return Ok(None);
        };
        let text = String::from_utf8(note.value().to_vec())
            .map_err(|_| StoreError::Corrupt("checkpoint is not UTF-8".into()))?;
        Ok(Some((size.value(), text)))
    }

    /// The quorum checkpoint of exactly `size`, if one is stored.
    pub fn checkpoint_at(&self, size: u64) -> Result<Option<String>, StoreError> {
        let read = self.db.begin_read()?;
        let table = read.open_table(CHECKPOINTS)?;
        let Some(note) = table.get(size)? else {
            return Ok(None);
        };
        String::from_utf8(note.value().to_vec())
            .map(Some)
            .map_err(|_| StoreError::Corrupt("checkpoint is not UTF-8".into()))
    }

    /// The latest checkpoint whose witness cosignatures met the policy
    /// (see [`Store::add_cosignatures`]).
    pub fn latest_witnessed_checkpoint(&self) -> Result<Option<(u64, String)>, StoreError> {
        let size = {
            let read = self.db.begin_read()?;
            match read.open_table(META)?.get(META_WITNESSED)? {
                Some(v) => v.value(),
                None => return Ok(None),
            }
        };
        Ok(self.checkpoint_at(size)?.map(|note| (size, note)))
    }

    /// Replaces the stored quorum checkpoint of `size` with `note` (the
    /// same checkpoint with witness cosignatures added) and, if `witnessed`,
    /// records it as the latest witnessed checkpoint. One durable
    /// transaction; the caller verified the cosignatures.
    pub fn add_cosignatures(
        &self,
        size: u64,
        note: &str,
        witnessed: bool,
    ) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate);
        {
            let mut checkpoints = txn.open_table(CHECKPOINTS)?;
            let stored = checkpoints
                .get(size)?
                .map(|v| v.value().to_vec())
                .ok_or_else(|| StoreError::Corrupt(format!("no checkpoint of size {size}")))?;
            let same_text = |a: &[u8], b: &[u8]| {
                let body = |n: &[u8]| {
                    n.windows(2)
                        .position(|w| w == b"\n\n")
                        .map(|i| n[..i].to_vec())
                };
                body(a).is_some() && body(a) == body(b)
            };
            assert!(
                same_text(&stored, note.as_bytes()),
                "cosignatures must be added to the same checkpoint text"
            );
            checkpoints.insert(size, note.as_bytes())?;
            if witnessed {
                let mut meta = txn.open_table(META)?;
                let current = meta.get(META_WITNESSED)?.map_or(0, |v| v.value());
                if size >= current {
                    meta.insert(META_WITNESSED, size)?;
                }
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Number of quorum checkpoints stored.
    pub fn checkpoint_count(&self) -> Result<u64, StoreError> {
        let read = self.db.begin_read()?;
        Ok(read.open_table(CHECKPOINTS)?.len()?)
    }

    /// The inclusion proof of leaf `index` in the tree of `size` leaves.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, ReadError> {
        let read = self.db.begin_read()?;
        within_committed(&read, size)?;
        if index >= size {
            return Err(ReadError::Invalid(format!(
                "index {index} is not below tree size {size}"
            )));
        }
        let reader = self.hashes(&read)?;
        merkle::prove_inclusion(index, size, &reader).map_err(|e| StoreError::from(e).into())
    }

    /// Inclusion proofs of several leaves in the tree of `size` leaves,
    /// read through one transaction (a receipt batch).
    pub fn inclusion_proofs(
        &self,
        indexes: &[u64],
        size: u64,
    ) -> Result<Vec<Vec<Hash>>, ReadError> {
        let read = self.db.begin_read()?;
        within_committed(&read, size)?;
        let reader = self.hashes(&read)?;
        if let Some(index) = indexes.iter().find(|&&index| index >= size) {
            return Err(ReadError::Invalid(format!(
                "index {index} is not below tree size {size}"
            )));
        }
        merkle::prove_inclusions(indexes, size, &reader).map_err(|e| StoreError::from(e).into())
    }

    /// The multiproof of `indexes` (strictly increasing) in the tree of
    /// `size` leaves (spec/merkle.md, "Multiproofs").
    pub fn multiproof(&self, indexes: &[u64], size: u64) -> Result<Vec<Hash>, ReadError> {
        let read = self.db.begin_read()?;
        within_committed(&read, size)?;
        let reader = self.hashes(&read)?;
        merkle::prove_multiproof(indexes, size, &reader).map_err(|e| match e {
            merkle::ProveError::Multiproof(e) => ReadError::Invalid(e.to_string()),
            e => StoreError::from(e).into(),
        })
    }

    /// The consistency proof from `old_size` to `new_size`.
    pub fn consistency_proof(&self, old_size: u64, new_size: u64) -> Result<Vec<Hash>, ReadError> {
        let read = self.db.begin_read()?;
        within_committed(&read, new_size)?;
        if old_size > new_size {
            return Err(ReadError::Invalid(format!(
                "old size {old_size} is above new size {new_size}"
            )));
        }
        let reader = self.hashes(&read)?;
        merkle::prove_consistency(old_size, new_size, &reader)
            .map_err(|e| StoreError::from(e).into())
    }

    /// The root of the tree of `size` leaves (`size` ≤ the committed size).
    pub fn root_at(&self, size: u64) -> Result<Hash, ReadError> {
        let read = self.db.begin_read()?;
        within_committed(&read, size)?;
        let reader = self.hashes(&read)?;
        merkle::tree_root(size, &reader).map_err(|e| StoreError::from(e).into())
    }

    /// Up to `max` committed blocks from `from_height`, entries included.
    pub fn committed_blocks(&self, from_height: u64, max: u64) -> Result<Vec<Block>, StoreError> {
        let read = self.db.begin_read()?;
        read_blocks(&read, self.legacy_end, from_height, max)
    }

    /// Height of the last committed block.
    pub fn committed_height(&self) -> Result<u64, StoreError> {
        let read = self.db.begin_read()?;
        Ok(read
            .open_table(META)?
            .get(META_HEIGHT)?
            .map_or(0, |v| v.value()))
    }
}

/// Refuses a tree size beyond what is committed.
fn within_committed(read: &redb::ReadTransaction, size: u64) -> Result<(), ReadError> {
    let stored = stored_size(read)?;
    if size > stored {
        return Err(ReadError::NotFound(format!(
            "tree size {size} is beyond the committed size {stored}"
        )));
    }
    Ok(())
}

fn stored_size(read: &redb::ReadTransaction) -> Result<u64, StoreError> {
    Ok(read
        .open_table(META)?
        .get(META_TREE_SIZE)?
        .map_or(0, |v| v.value()))
}

fn decode<T: Serialize + serde::de::DeserializeOwned>(
    bytes: &[u8],
    what: &str,
) -> Result<T, StoreError> {
    wire::decode(bytes).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

fn read_blocks(
    read: &redb::ReadTransaction,
    legacy_end: u64,
    from_height: u64,
    max: u64,
) -> Result<Vec<Block>, StoreError> {
    let blocks = read.open_table(BLOCKS)?;
    let mut out = Vec::new();
    for row in blocks.range(from_height..from_height.saturating_add(max))? {
        let (_, bytes) = row?;
        let record: BlockRecord = decode(bytes.value(), "block")?;
        let end = record.first_index + record.entry_count;
        let items = read_entries(read, legacy_end, record.first_index, end)?;
        if items.len() as u64 != record.entry_count {
            return Err(StoreError::Corrupt("block entries missing".into()));
        }
        let mut block = record.header;
        block.entries =
            BoundedVec::new(items).map_err(|e| StoreError::Corrupt(format!("block: {e}")))?;
        out.push(block);
    }
    Ok(out)
}

/// The leaves of entries `start..end` from the stored hashes, each mapped
/// to its first index: the memory level of the leaf index after a restart.
fn recent_leaves(
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

/// The stored entries `start..end` (fewer if the log ends first): below
/// `legacy_end` from `entry_runs`, the rest from their blocks' runs.
fn read_entries(
    read: &redb::ReadTransaction,
    legacy_end: u64,
    start: u64,
    end: u64,
) -> Result<Vec<Entry>, StoreError> {
    let mut out = Vec::new();
    if start >= end {
        return Ok(out);
    }
    if start < legacy_end {
        let runs = read.open_table(ENTRY_RUNS)?;
        read_legacy_entries(&runs, start, end.min(legacy_end), &mut out)?;
    }
    let from = start.max(legacy_end);
    if from >= end || (start < legacy_end && out.len() as u64 != legacy_end - start) {
        return Ok(out);
    }
    let starts = read.open_table(BLOCK_STARTS)?;
    let parts = read.open_table(BLOCK_PARTS)?;
    // The block holding `from` is the last one that starts at or before it.
    let first = match starts.range(..=from)?.next_back() {
        Some(row) => row?.0.value(),
        None => return Ok(out),
    };
    let mut expected = first;
    for row in starts.range(first..end)? {
        let (key, value) = row?;
        let block_start = key.value();
        let (round, id, count) = value.value();
        if block_start != expected {
            return Err(StoreError::Corrupt(format!(
                "blocks' entries jump from {expected} to {block_start}"
            )));
        }
        read_block_entries(
            &parts,
            (round, id),
            count,
            from.saturating_sub(block_start),
            end - block_start,
            &mut out,
        )?;
        expected = block_start + count;
    }
    Ok(out)
}

/// Entries `start..end` of `entry_runs` (fewer if they end first) into
/// `out`.
fn read_legacy_entries(
    runs: &redb::ReadOnlyTable<u64, &'static [u8]>,
    start: u64,
    end: u64,
    out: &mut Vec<Entry>,
) -> Result<(), StoreError> {
    if start >= end {
        return Ok(());
    }
    // The run holding `start` is the last one that begins at or before it.
    let first = match runs.range(..=start)?.next_back() {
        Some(row) => row?.0.value(),
        None => return Ok(()),
    };
    let corrupt = |index: u64| StoreError::Corrupt(format!("entry run at {index}"));
    let mut expected = first;
    for row in runs.range(first..end)? {
        let (key, bytes) = row?;
        let index = key.value();
        if index != expected {
            return Err(corrupt(index));
        }
        expected = push_run_entries(bytes.value(), index, start..end, out)?;
    }
    Ok(())
}

/// Pushes the entries of one run (each a 4-byte big-endian length, then
/// the bytes) numbered `first..` that lie in `wanted` onto `out`; returns
/// the number after the run's last entry.
fn push_run_entries(
    run: &[u8],
    first: u64,
    wanted: std::ops::Range<u64>,
    out: &mut Vec<Entry>,
) -> Result<u64, StoreError> {
    let mut rest = run;
    let mut index = first;
    let corrupt =
        |index: u64| StoreError::Corrupt(format!("run of entries at {first}, entry {index}"));
    while !rest.is_empty() {
        let (len, tail) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| corrupt(index))?;
        let len = u32::from_be_bytes(*len) as usize;
        let body = tail.get(..len).ok_or_else(|| corrupt(index))?;
        if wanted.contains(&index) {
            out.push(
                Entry::new(body.to_vec())
                    .map_err(|e| StoreError::Corrupt(format!("entry {index}: {e}")))?,
            );
        }
        rest = &tail[len..];
        index += 1;
    }
    Ok(index)
}

/// Appends `hashes` at stored-hash positions `first..`, rewriting the
/// partial chunk at the start.
fn write_hashes(
    chunks: &mut redb::Table<u64, &[u8]>,
    first: u64,
    hashes: &[Hash],
) -> Result<(), StoreError> {
    let mut position = first;
    let mut rest = hashes;
    while !rest.is_empty() {
        let chunk = position / HASH_CHUNK;
        let offset = (position % HASH_CHUNK) as usize;
        let take = rest.len().min(HASH_CHUNK as usize - offset);
        let mut bytes = match chunks.get(chunk)? {
            Some(existing) => existing.value().to_vec(),
            None => Vec::new(),
        };
        if bytes.len() != offset * 32 {
            return Err(StoreError::Corrupt(format!(
                "hash chunk {chunk} holds {} bytes, expected {}",
                bytes.len(),
                offset * 32
            )));
        }
        for hash in &rest[..take] {
            bytes.extend_from_slice(&hash.0);
        }
        chunks.insert(chunk, bytes.as_slice())?;
        position += take as u64;
        rest = &rest[take..];
    }
    Ok(())
}

/// Leaves of a frozen level a commit writes into its run at least (more
/// when a step commits many entries).
pub const MERGE_STEP_MIN: usize = 4096;

/// The leaf index's levels: its complete runs (on disk, with fences and
/// Bloom filters here) and, for the entries they do not cover yet, leaf
/// hash → first index in memory.
#[derive(Default)]
struct RecentLeaves {
    /// Complete runs, oldest first.
    runs: Vec<LeafRun>,
    /// Leaves committed since the last freeze.
    active: DigestMap<Hash, u64>,
    /// The last frozen level while a thread sorts it: sorting 2^18 leaves
    /// in the commit that froze them stalled it for tens of milliseconds
    /// (and a memory level kept in key order instead, a `BTreeMap`, cost
    /// every append's lookup and insert: p50 20 ms against 14 at 25,000
    /// entries/s). Lookups use the map meanwhile.
    sorting: Option<Sorting>,
    /// A frozen level, sorted by leaf hash (one first index per leaf),
    /// being written out as run `runs.len()`; its first `merged` are.
    merging: SortedLevel,
    merged: usize,
    /// The tree size at which `merging` was frozen: `leaf_indexed_size`
    /// once its run is complete.
    merging_end: u64,
    /// The map of the level frozen before, emptied, for the next memory
    /// level: a fresh map grew by doubling to [`RECENT_LEAVES`], and its
    /// rehashes into newly faulted pages were 8% of a follower's core
    /// thread (n = 4 closed loop). Held from the first freeze on, so a log
    /// smaller than one level never pays its memory (about 21 MiB).
    spare: Option<DigestMap<Hash, u64>>,
}

/// What a [`Store`] keeps in memory of one complete run of the leaf index.
struct LeafRun {
    id: u64,
    /// The first leaf of each row.
    fences: Vec<Hash>,
    bloom: Bloom,
}

impl LeafRun {
    /// The run `id` holding `sorted` in rows of `row_len`.
    fn new(id: u64, sorted: &[(Hash, u64)], row_len: usize) -> Self {
        LeafRun {
            id,
            fences: sorted.chunks(row_len).map(|row| row[0].0).collect(),
            bloom: Bloom::of(sorted.iter().map(|(leaf, _)| leaf)),
        }
    }

    /// The row that holds `leaf` if the run does.
    fn row_for(&self, leaf: &Hash) -> Option<u64> {
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
struct Bloom {
    blocks: Vec<[u64; 8]>,
}

impl Bloom {
    const BITS_PER_LEAF: usize = 16;
    const PROBES: usize = 8;

    /// The filter of `leaves`.
    fn of<'a>(leaves: impl ExactSizeIterator<Item = &'a Hash>) -> Self {
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
    fn probes(&self, leaf: &Hash) -> (usize, [u16; Self::PROBES]) {
        let pick = u64::from_le_bytes(leaf.0[0..8].try_into().expect("8 bytes"));
        // Multiply-shift: a uniform block without a division.
        let block = ((u128::from(pick) * self.blocks.len() as u128) >> 64) as usize;
        let mut bits_source = [0u8; 16];
        bits_source[..9].copy_from_slice(&leaf.0[8..17]);
        let source = u128::from_le_bytes(bits_source);
        let bits = std::array::from_fn(|i| ((source >> (9 * i)) & 511) as u16);
        (block, bits)
    }

    fn insert(&mut self, leaf: &Hash) {
        let (block, bits) = self.probes(leaf);
        let block = &mut self.blocks[block];
        for bit in bits {
            block[usize::from(bit / 64)] |= 1 << (bit % 64);
        }
    }

    fn may_contain(&self, leaf: &Hash) -> bool {
        let (block, bits) = self.probes(leaf);
        let block = &self.blocks[block];
        bits.iter()
            .all(|&bit| block[usize::from(bit / 64)] & (1 << (bit % 64)) != 0)
    }
}

/// Appends one (leaf, index) pair to a run row.
fn push_pair(row: &mut Vec<u8>, leaf: &Hash, index: u64) {
    row.extend_from_slice(&leaf.0);
    row.extend_from_slice(&index.to_be_bytes());
}

/// The index paired with `leaf` in a run row, if the row holds it.
fn find_in_row(row: &[u8], leaf: &Hash) -> Result<Option<u64>, StoreError> {
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

/// The `block_parts` part number of the run whose first entry is at
/// `offset` in its block (part 0 is the header).
fn run_part(offset: u64) -> u32 {
    u32::try_from(offset + 1).expect("a block holds far fewer than 2^32 entries")
}

/// Writes `block` into `block_parts`: its header as part 0, then its
/// entries in runs (a 4-byte big-endian length, then the bytes, each),
/// a run of at most [`BLOCK_PART_BYTES`] unless it is one larger entry.
fn put_block(
    parts: &mut redb::Table<(u64, [u8; 32], u32), &[u8]>,
    id: &Hash,
    block: &Block,
    scratch: &mut Vec<u8>,
) -> Result<(), StoreError> {
    let key = |part| (block.round, id.0, part);
    scratch.clear();
    wire::encode_into(&bftlog_consensus::crypto::header_of(block), scratch);
    parts.insert(key(0), scratch.as_slice())?;
    scratch.clear();
    let mut run_first = 0;
    for (offset, entry) in block.entries.iter().enumerate() {
        if offset != run_first && scratch.len() + 4 + entry.len() > BLOCK_PART_BYTES {
            parts.insert(key(run_part(run_first as u64)), scratch.as_slice())?;
            scratch.clear();
            run_first = offset;
        }
        scratch.extend_from_slice(&(entry.len() as u32).to_be_bytes());
        scratch.extend_from_slice(entry);
    }
    if !block.entries.is_empty() {
        parts.insert(key(run_part(run_first as u64)), scratch.as_slice())?;
    }
    Ok(())
}

/// Records `block` as voted (with its entry count) and writes it, unless
/// it is listed already (its rows are then written).
fn put_voted(
    parts: &mut redb::Table<(u64, [u8; 32], u32), &[u8]>,
    voted: &mut redb::Table<(u64, [u8; 32]), u64>,
    id: &Hash,
    block: &Block,
    scratch: &mut Vec<u8>,
) -> Result<(), StoreError> {
    let count = block.entries.len() as u64;
    if voted.insert((block.round, id.0), count)?.is_none() {
        put_block(parts, id, block, scratch)?;
    }
    Ok(())
}

/// Reads the entries at offsets `from..end` of the block (`round`, `id`)
/// of `count` entries into `out`. A missing or misplaced run is
/// corruption: runs are written in the transaction that refers to them.
fn read_block_entries(
    parts: &impl ReadableTable<(u64, [u8; 32], u32), &'static [u8]>,
    (round, id): (u64, [u8; 32]),
    count: u64,
    from: u64,
    end: u64,
    out: &mut Vec<Entry>,
) -> Result<(), StoreError> {
    let corrupt = |offset: u64| {
        StoreError::Corrupt(format!(
            "block of round {round} lacks its run at entry {offset}"
        ))
    };
    let end = end.min(count);
    if from >= end {
        return Ok(());
    }
    // The run holding `from` is the last one that begins at or before it.
    let from_part = u32::try_from(from + 1).map_err(|_| corrupt(from))?;
    let first = match parts
        .range((round, id, 1)..=(round, id, from_part))?
        .next_back()
    {
        Some(row) => row?.0.value().2,
        None => return Err(corrupt(from)),
    };
    let mut offset = u64::from(first) - 1;
    for row in parts.range((round, id, first)..=(round, id, u32::MAX))? {
        if offset >= end {
            break;
        }
        let (key, bytes) = row?;
        if u64::from(key.value().2) != offset + 1 {
            return Err(corrupt(offset));
        }
        offset = push_run_entries(bytes.value(), offset, from..end, out)?;
    }
    if offset < end || (end == count && offset != count) {
        return Err(corrupt(offset));
    }
    Ok(())
}

/// The block (`round`, `id`) of `count` entries read back from
/// `block_parts`.
fn read_block(
    parts: &impl ReadableTable<(u64, [u8; 32], u32), &'static [u8]>,
    (round, id): (u64, [u8; 32]),
    count: u64,
) -> Result<Block, StoreError> {
    let header = parts
        .get((round, id, 0))?
        .ok_or_else(|| StoreError::Corrupt(format!("block of round {round} lacks its header")))?;
    let mut block: Block = decode(header.value(), "block header")?;
    let mut entries = Vec::with_capacity(count as usize);
    read_block_entries(parts, (round, id), count, 0, count, &mut entries)?;
    block.entries =
        BoundedVec::new(entries).map_err(|e| StoreError::Corrupt(format!("block: {e}")))?;
    Ok(block)
}

/// The voted blocks not settled by a commit yet, oldest round first.
fn read_voted(read: &redb::ReadTransaction) -> Result<Vec<Block>, StoreError> {
    let parts = read.open_table(BLOCK_PARTS)?;
    let mut blocks = Vec::new();
    for row in read.open_table(VOTED)?.iter()? {
        let (key, count) = row?;
        blocks.push(read_block(&parts, key.value(), count.value())?);
    }
    Ok(blocks)
}

/// Stores one voted block's encoding as layout 4 did: parts `0..` of at
/// most [`BLOCK_PART_BYTES`] (for the layout 3 migration, which layout 4's
/// then completes).
fn put_voted_v4(
    table: &mut redb::Table<(u64, [u8; 32], u32), &[u8]>,
    round: u64,
    id: &Hash,
    encoded: &[u8],
) -> Result<(), StoreError> {
    for (part, bytes) in encoded.chunks(BLOCK_PART_BYTES).enumerate() {
        let part = u32::try_from(part).expect("a block is far below 2^32 parts");
        table.insert((round, id.0, part), bytes)?;
    }
    Ok(())
}

/// Layout 4's voted blocks with their ids, each reassembled from its
/// parts. Parts were written in one transaction, so a gap is corruption,
/// not a torn write.
fn read_voted_v4(
    table: &impl ReadableTable<(u64, [u8; 32], u32), &'static [u8]>,
) -> Result<Vec<(Hash, Block)>, StoreError> {
    /// The block being reassembled.
    struct Partial {
        round: u64,
        id: [u8; 32],
        next_part: u32,
        encoded: Vec<u8>,
    }
    let finish = |p: Partial| -> Result<(Hash, Block), StoreError> {
        Ok((Hash(p.id), decode(&p.encoded, "voted block")?))
    };
    let mut blocks = Vec::new();
    let mut current: Option<Partial> = None;
    for row in table.iter()? {
        let (key, bytes) = row?;
        let (round, id, part) = key.value();
        if let Some(p) = &mut current {
            if (p.round, p.id) == (round, id) {
                if part != p.next_part {
                    return Err(StoreError::Corrupt(format!(
                        "voted block of round {round} lacks part {}",
                        p.next_part
                    )));
                }
                p.next_part += 1;
                p.encoded.extend_from_slice(bytes.value());
                continue;
            }
        }
        if part != 0 {
            return Err(StoreError::Corrupt(format!(
                "voted block of round {round} lacks part 0"
            )));
        }
        let next = Partial {
            round,
            id,
            next_part: 1,
            encoded: bytes.value().to_vec(),
        };
        if let Some(done) = current.replace(next) {
            blocks.push(finish(done)?);
        }
    }
    if let Some(done) = current {
        blocks.push(finish(done)?);
    }
    Ok(blocks)
}

/// Layout 4 kept voted blocks CBOR-encoded in `voted_parts`; they move
/// into `block_parts` (listed in `voted`) and the old table goes.
fn migrate_voted_v4(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    let blocks = read_voted_v4(&txn.open_table(VOTED_PARTS_V4)?)?;
    {
        let mut parts = txn.open_table(BLOCK_PARTS)?;
        let mut voted = txn.open_table(VOTED)?;
        let mut scratch = Vec::new();
        for (id, block) in &blocks {
            put_voted(&mut parts, &mut voted, id, block, &mut scratch)?;
        }
    }
    txn.delete_table(VOTED_PARTS_V4)?;
    Ok(())
}

/// Layouts 2 and 3 kept each voted block as one value in `voted`; they
/// are moved into layout 4's `voted_parts` and the old table goes, before
/// [`migrate_voted_v4`] runs.
fn migrate_voted_v3(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    const VOTED_V3: TableDefinition<(u64, [u8; 32]), &[u8]> = TableDefinition::new("voted");
    {
        let old = txn.open_table(VOTED_V3)?;
        let mut parts = txn.open_table(VOTED_PARTS_V4)?;
        for row in old.iter()? {
            let (key, bytes) = row?;
            let (round, id) = key.value();
            put_voted_v4(&mut parts, round, &Hash(id), bytes.value())?;
        }
    }
    txn.delete_table(VOTED_V3)?;
    Ok(())
}

/// Layout 2 kept the leaf index as a B-tree keyed by leaf hash; its rows,
/// read in key order, are a sorted run as they stand. They become run 0
/// (covering the same `leaf_indexed_size`) and the old table goes.
/// Returns the number of runs written (0 for an empty index).
fn migrate_leaf_index_v2(txn: &redb::WriteTransaction) -> Result<u64, StoreError> {
    const LEAF_INDEX_V2: TableDefinition<[u8; 32], u64> = TableDefinition::new("leaf_index");
    let mut written = 0u64;
    {
        let old = txn.open_table(LEAF_INDEX_V2)?;
        let mut runs = txn.open_table(LEAF_RUNS)?;
        let mut row = Vec::with_capacity(LEAF_ROW * LEAF_PAIR);
        for pair in old.iter()? {
            let (leaf, index) = pair?;
            push_pair(&mut row, &Hash(leaf.value()), index.value());
            if row.len() == LEAF_ROW * LEAF_PAIR {
                runs.insert((0, written), row.as_slice())?;
                row.clear();
                written += 1;
            }
        }
        if !row.is_empty() {
            runs.insert((0, written), row.as_slice())?;
            written += 1;
        }
    }
    txn.delete_table(LEAF_INDEX_V2)?;
    Ok(u64::from(written > 0))
}

/// The complete runs `0..count` of the leaf index, read back for their
/// fences and Bloom filters.
fn load_runs(read: &redb::ReadTransaction, count: u64) -> Result<Vec<LeafRun>, StoreError> {
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
struct Sorting {
    leaves: Arc<DigestMap<Hash, u64>>,
    /// The tree size it ends at.
    end: u64,
    sorted: std::thread::JoinHandle<SortedLevel>,
}

/// `leaves` sorted by leaf hash (one index per leaf already).
fn sort_level(leaves: &DigestMap<Hash, u64>) -> SortedLevel {
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
struct SortedLevel {
    leaves: Vec<(Hash, u64)>,
    /// `leaves[starts[b]..starts[b + 1]]` are the leaves whose first
    /// `bucket_bits` bits are `b`.
    starts: Vec<u32>,
    bucket_bits: u32,
}

impl SortedLevel {
    const LEAVES_PER_BUCKET: usize = 4;

    fn new(leaves: Vec<(Hash, u64)>) -> Self {
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

    fn bucket(leaf: &Hash, bucket_bits: u32) -> usize {
        let top = u32::from_be_bytes(leaf.0[..4].try_into().expect("4 bytes"));
        // `checked_shr` because a shift by 32 (no bucket bits) overflows.
        top.checked_shr(32 - bucket_bits).unwrap_or(0) as usize
    }

    fn index_of(&self, leaf: &Hash) -> Option<u64> {
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
    fn get(&self, leaf: &Hash) -> Option<u64> {
        if let Some(index) = self.merging.index_of(leaf) {
            return Some(index);
        }
        if let Some(index) = self.sorting.as_ref().and_then(|s| s.leaves.get(leaf)) {
            return Some(*index);
        }
        self.active.get(leaf).copied()
    }

    /// Freezes the memory level, which ends at tree size `end`.
    fn freeze(&mut self, end: u64, background: bool) {
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
    fn keep_spare(&mut self, leaves: Arc<DigestMap<Hash, u64>>) {
        // The sorting thread's reference is gone once it was joined.
        if let Ok(mut map) = Arc::try_unwrap(leaves) {
            map.clear();
            self.spare = Some(map);
        }
    }

    /// Makes a sorted frozen level the one being written: when its thread
    /// is done, or now (waiting for it) if `must` (a new freeze is due).
    fn adopt_sorted(&mut self, must: bool) {
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

/// Lowest level of the stored hashes a [`Store`] keeps in memory: about
/// 2^(2-UPPER_LEVEL) hashes per entry, 4 bytes per entry at 4 (40 MB at
/// 10M entries). Below it a proof's siblings lie within one 16-leaf
/// subtree, whose 31 stored hashes span one or two 64-hash chunks: one or
/// two reads per proof. At 8 (a quarter byte per entry) it took about
/// five, and 1M-entry proof reads went from 67-73k to 102-112k proofs/s.
pub const UPPER_LEVEL: u32 = 4;

/// The hashes of the complete subtrees at levels ≥ [`UPPER_LEVEL`]:
/// `levels[l - UPPER_LEVEL][i]` covers leaves `[i·2^l, (i+1)·2^l)`.
#[derive(Default)]
struct UpperHashes {
    levels: Vec<Vec<Hash>>,
}

impl UpperHashes {
    /// Read from storage for a tree of `size` leaves.
    fn load(size: u64, reader: &TxnHashes) -> Result<Self, StoreError> {
        let mut upper = UpperHashes::default();
        for level in UPPER_LEVEL..63 {
            let count = size >> level;
            if count == 0 {
                break;
            }
            let mut hashes = Vec::with_capacity(count as usize);
            let mut start = 0;
            while start < count {
                let end = count.min(start + 256);
                let positions: Vec<u64> = (start..end)
                    .map(|i| merkle::stored_hash_index(level, i))
                    .collect();
                hashes.extend(reader.read_hashes(&positions).map_err(ProveError::from)?);
                start = end;
            }
            upper.levels.push(hashes);
        }
        Ok(upper)
    }

    fn get(&self, level: u32, index: u64) -> Option<Hash> {
        let row = self.levels.get(level.checked_sub(UPPER_LEVEL)? as usize)?;
        row.get(usize::try_from(index).ok()?).copied()
    }

    /// Adds the next subtree of `level`; subtrees arrive in order.
    fn push(&mut self, level: u32, index: u64, hash: Hash) {
        assert!(level >= UPPER_LEVEL, "only upper levels are cached");
        let row = (level - UPPER_LEVEL) as usize;
        if self.levels.len() <= row {
            self.levels.resize_with(row + 1, Vec::new);
        }
        assert_eq!(
            self.levels[row].len() as u64,
            index,
            "upper-level hashes arrive in order"
        );
        self.levels[row].push(hash);
    }
}

/// The stored hashes a proof reads: levels ≥ [`UPPER_LEVEL`] from the
/// store's memory, the others (and any upper one committed after the cache
/// was read) from the read transaction.
struct ProofHashes<'a> {
    upper: &'a std::sync::RwLock<UpperHashes>,
    txn: TxnHashes,
}

impl HashReader for ProofHashes<'_> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, merkle::StorageError> {
        let mut found: Vec<Option<Hash>> = {
            let upper = self.upper.read().expect("upper lock");
            indexes
                .iter()
                .map(|&position| {
                    let (level, index) = stored_hash_subtree(position);
                    upper.get(level, index)
                })
                .collect()
        };
        let missing: Vec<u64> = indexes
            .iter()
            .zip(&found)
            .filter(|(_, hash)| hash.is_none())
            .map(|(position, _)| *position)
            .collect();
        if !missing.is_empty() {
            let mut read = self.txn.read_hashes(&missing)?.into_iter();
            for slot in found.iter_mut().filter(|hash| hash.is_none()) {
                *slot = read.next();
            }
        }
        Ok(found
            .into_iter()
            .map(|hash| hash.expect("every hash found or read"))
            .collect())
    }
}

/// Stored hashes read through one read transaction. Chunks read once are
/// kept for the transaction's life (bounded), because a receipt batch asks
/// for many proofs whose upper levels are the same hashes.
struct TxnHashes {
    table: redb::ReadOnlyTable<u64, &'static [u8]>,
    chunks: std::cell::RefCell<std::collections::HashMap<u64, Vec<u8>>>,
}

/// Chunks a [`TxnHashes`] keeps (64 × 32 bytes each: 2 MiB at most).
const TXN_CHUNK_CACHE: usize = 1024;

impl TxnHashes {
    fn new(read: &redb::ReadTransaction) -> Result<Self, StoreError> {
        Ok(TxnHashes {
            table: read.open_table(HASH_CHUNKS)?,
            chunks: Default::default(),
        })
    }
}

impl HashReader for TxnHashes {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, merkle::StorageError> {
        assert!(indexes.len() <= 4 * (MAX_PROOF_LEN + 1), "bounded reads");
        let mut out = Vec::with_capacity(indexes.len());
        let mut chunks = self.chunks.borrow_mut();
        for &index in indexes {
            let chunk = index / HASH_CHUNK;
            if !chunks.contains_key(&chunk) {
                let bytes = self
                    .table
                    .get(chunk)
                    .map_err(|e| merkle::StorageError(Box::new(e)))?
                    .map(|v| v.value().to_vec())
                    .unwrap_or_default();
                if chunks.len() >= TXN_CHUNK_CACHE {
                    chunks.clear();
                }
                chunks.insert(chunk, bytes);
            }
            let bytes = &chunks[&chunk];
            let offset = (index % HASH_CHUNK) as usize * 32;
            let hash = bytes.get(offset..offset + 32).ok_or_else(|| {
                merkle::StorageError(format!("stored hash {index} missing").into())
            })?;
            out.push(Hash(hash.try_into().expect("32 bytes")));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bftlog_consensus::genesis_qc;

    fn block(round: u64, parent: Hash, entries: &[&[u8]]) -> Block {
        Block {
            epoch: 1,
            round,
            author: 0,
            parent_id: parent,
            justify: genesis_qc(1),
            entries: BoundedVec::new(
                entries
                    .iter()
                    .map(|e| Entry::new(e.to_vec()).unwrap())
                    .collect(),
            )
            .unwrap(),
        }
    }

    /// The commit of a block of `payloads` at `height` on `parent`,
    /// appended to `tree`.
    fn committed(
        tree: &mut merkle::MemoryTree,
        height: u64,
        parent: Hash,
        payloads: &[&[u8]],
    ) -> Committed {
        let b = block(height, parent, payloads);
        let first_index = tree.size();
        let leaves: Vec<Hash> = payloads.iter().map(|p| merkle::leaf_hash(p)).collect();
        for leaf in &leaves {
            tree.append(*leaf);
        }
        Committed {
            height,
            block_id: bftlog_consensus::crypto::block_id(&b),
            block: std::sync::Arc::new(b),
            leaves,
            first_index,
            size: tree.size(),
            root: tree.root(),
        }
    }

    fn commit_blocks(store: &Store, tree: &mut merkle::MemoryTree, count: u64, per_block: u64) {
        let mut height = store.committed_height().unwrap();
        let mut parent = Hash([0; 32]);
        for _ in 0..count {
            height += 1;
            let first_index = tree.size();
            let payloads: Vec<Vec<u8>> = (0..per_block)
                .map(|i| format!("entry {}", first_index + i).into_bytes())
                .collect();
            let refs: Vec<&[u8]> = payloads.iter().map(|p| p.as_slice()).collect();
            let commit = committed(tree, height, parent, &refs);
            parent = commit.block_id;
            let batch = WriteBatch {
                commits: vec![commit],
                ..Default::default()
            };
            store.write(&batch).unwrap();
        }
    }

    #[test]
    fn a_sorted_level_finds_every_leaf_and_no_other() {
        for n in [0u64, 1, 3, 7, 8, 9, 100, 4096, 70_000] {
            let leaf = |i: u64| merkle::leaf_hash(&i.to_be_bytes());
            let mut leaves: Vec<(Hash, u64)> = (0..n).map(|i| (leaf(i), i)).collect();
            leaves.sort_unstable();
            let level = SortedLevel::new(leaves);
            assert_eq!(level.len() as u64, n);
            assert!(n < 8 || level.bucket_bits > 0, "n = {n}");
            for i in 0..n {
                assert_eq!(level.index_of(&leaf(i)), Some(i), "n = {n}, leaf {i}");
            }
            for i in n..n + 100 {
                assert_eq!(level.index_of(&leaf(i)), None, "n = {n}, leaf {i}");
            }
            assert_eq!(level.index_of(&Hash([0; 32])), None);
            assert_eq!(level.index_of(&Hash([0xff; 32])), None);
        }
    }

    #[test]
    fn proofs_from_storage_match_the_in_memory_tree_and_survive_reopen() {
        let dir = tempdir();
        let path = dir.join("db.redb");
        let mut tree = merkle::MemoryTree::new();
        {
            let store = Store::open(&path, 1).unwrap();
            commit_blocks(&store, &mut tree, 13, 7);
        }
        let store = Store::open(&path, 1).unwrap();
        commit_blocks(&store, &mut tree, 5, 3);
        let size = tree.size();
        assert_eq!(store.tree_size(), size);
        for s in [1, 2, 7, 64, 65, size] {
            assert_eq!(
                store.root_at(s).unwrap(),
                merkle::tree_root(s, &tree).unwrap()
            );
            let indexes = [0, s / 2, s - 1];
            let batch = store.inclusion_proofs(&indexes, s).unwrap();
            let mut distinct = indexes.to_vec();
            distinct.sort_unstable();
            distinct.dedup();
            assert_eq!(
                store.multiproof(&distinct, s).unwrap(),
                merkle::prove_multiproof(&distinct, s, &tree).unwrap()
            );
            for (i, from_batch) in indexes.into_iter().zip(batch) {
                let proof = store.inclusion_proof(i, s).unwrap();
                assert_eq!(proof, merkle::prove_inclusion(i, s, &tree).unwrap());
                assert_eq!(from_batch, proof);
            }
            let proof = store.consistency_proof(s / 3, s).unwrap();
            assert_eq!(proof, merkle::prove_consistency(s / 3, s, &tree).unwrap());
        }
        assert!(matches!(
            store.inclusion_proof(0, size + 1),
            Err(ReadError::NotFound(_))
        ));
        assert!(matches!(
            store.inclusion_proof(size, size),
            Err(ReadError::Invalid(_))
        ));
        let leaf = merkle::leaf_hash(b"entry 5");
        assert_eq!(store.index_of(&leaf).unwrap(), Some(5));
        let got = store.entries(5, 3).unwrap();
        assert_eq!(&got[0][..], b"entry 5");
        assert_eq!(got.len(), 3);
        // Blocks come back with their entries.
        let blocks = store.committed_blocks(2, 2).unwrap();
        assert_eq!(blocks.len(), 2);
        assert_eq!(&blocks[0].entries[0][..], b"entry 7");
        let recovered = store.recover(1, 4, usize::MAX).unwrap();
        assert_eq!(recovered.committed_blocks.len(), 4);
        assert_eq!(recovered.first_height, 15);
        assert_eq!(recovered.tree.root(), tree.root());
        // A byte budget: beyond the 16 newest blocks, kept whatever their
        // size, an older block is recovered only if it fits.
        let all = store.recover(1, 100, usize::MAX).unwrap();
        assert_eq!((all.committed_blocks.len(), all.first_height), (18, 1));
        let kept = store.recover(1, 100, 0).unwrap();
        assert_eq!(
            kept.committed_blocks.len(),
            bftlog_consensus::MIN_RETAINED_BLOCKS
        );
        assert_eq!(kept.first_height, 3);
        assert_eq!(&kept.committed_blocks[0].entries[0][..], b"entry 14");
        let newest_16: usize = all.committed_blocks[2..]
            .iter()
            .map(bftlog_consensus::entry_bytes)
            .sum();
        let one_more = bftlog_consensus::entry_bytes(&all.committed_blocks[1]);
        let budget = store.recover(1, 100, newest_16 + one_more).unwrap();
        assert_eq!(budget.committed_blocks.len(), 17);
        let short = store.recover(1, 100, newest_16 + one_more - 1).unwrap();
        assert_eq!(short.committed_blocks.len(), 16);
    }

    #[test]
    fn upper_levels_come_from_memory_and_agree_with_storage() {
        let dir = tempdir();
        let path = dir.join("db.redb");
        let mut tree = merkle::MemoryTree::new();
        {
            let store = Store::open(&path, 1).unwrap();
            commit_blocks(&store, &mut tree, 7, 300);
        }
        let store = Store::open(&path, 1).unwrap();
        // Extended after the reopen, by commits crossing boundaries of
        // several cached levels.
        commit_blocks(&store, &mut tree, 3, 333);
        let size = tree.size();
        assert_eq!(size, 3099);
        {
            let upper = store.upper.read().unwrap();
            assert_eq!(
                upper.levels.len() as u32,
                12 - UPPER_LEVEL,
                "levels UPPER_LEVEL to 11"
            );
            for (row, hashes) in upper.levels.iter().enumerate() {
                let level = UPPER_LEVEL + row as u32;
                assert_eq!(hashes.len() as u64, size >> level);
                for (i, hash) in hashes.iter().enumerate() {
                    let position = merkle::stored_hash_index(level, i as u64);
                    assert_eq!(*hash, tree.stored()[position as usize]);
                }
            }
        }
        for s in [255, 256, 257, 511, 512, 2048, 2100, size] {
            assert_eq!(
                store.root_at(s).unwrap(),
                merkle::tree_root(s, &tree).unwrap()
            );
            let indexes: Vec<u64> = (0..s).step_by(37).chain([s - 1]).collect();
            let proofs = store.inclusion_proofs(&indexes, s).unwrap();
            for (i, proof) in indexes.into_iter().zip(proofs) {
                assert_eq!(
                    proof,
                    merkle::prove_inclusion(i, s, &tree).unwrap(),
                    "{i} in {s}"
                );
            }
            for old in [1, 255, 256, 1000, s] {
                let old = old.min(s);
                assert_eq!(
                    store.consistency_proof(old, s).unwrap(),
                    merkle::prove_consistency(old, s, &tree).unwrap()
                );
            }
        }
    }

    #[test]
    fn entries_read_back_from_their_blocks_in_any_range() {
        let dir = tempdir();
        let path = dir.join("db.redb");
        let mut tree = merkle::MemoryTree::new();
        let store = Store::open(&path, 1).unwrap();
        // Blocks of 300, 100, 0 (no row in `block_starts`), 1 and 600
        // entries.
        for per_block in [300, 100, 0, 1, 600] {
            commit_blocks(&store, &mut tree, 1, per_block);
        }
        let size = tree.size();
        assert_eq!(size, 1001);
        for (start, count) in [
            (0, 1),
            (255, 2),
            (299, 3),
            (400, 1),
            (0, 1001),
            (990, 50),
            (1000, 1),
            (1001, 5),
        ] {
            let got = store.entries(start, count).unwrap();
            let expected: Vec<String> = (start..(start + count).min(size))
                .map(|i| format!("entry {i}"))
                .collect();
            let got: Vec<String> = got
                .iter()
                .map(|e| String::from_utf8(e.to_vec()).unwrap())
                .collect();
            assert_eq!(got, expected, "entries({start}, {count})");
        }
        let blocks = store.committed_blocks(1, 5).unwrap();
        let counts: Vec<usize> = blocks.iter().map(|b| b.entries.len()).collect();
        assert_eq!(counts, [300, 100, 0, 1, 600]);
        assert_eq!(&blocks[4].entries[599][..], b"entry 1000");
    }

    #[test]
    fn block_runs_fit_a_page_unless_one_entry_is_larger() {
        let dir = tempdir();
        let store = Store::open(&dir.join("db.redb"), 1).unwrap();
        let mut tree = merkle::MemoryTree::new();
        // 256-byte entries fill a page; a 65,536-byte entry (the largest)
        // must still get a row of its own.
        let sizes: Vec<usize> = (0..600)
            .map(|i| if i == 100 { 65_536 } else { 256 })
            .collect();
        let payloads: Vec<Vec<u8>> = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                let mut p = vec![(i % 251) as u8; n];
                p[..8].copy_from_slice(&(i as u64).to_be_bytes());
                p
            })
            .collect();
        let refs: Vec<&[u8]> = payloads.iter().map(|p| p.as_slice()).collect();
        let commit = committed(&mut tree, 1, Hash([0; 32]), &refs);
        store
            .write(&WriteBatch {
                commits: vec![commit],
                ..Default::default()
            })
            .unwrap();
        let read = store.db.begin_read().unwrap();
        let parts = read.open_table(BLOCK_PARTS).unwrap();
        let mut numbers = Vec::new();
        for row in parts.iter().unwrap() {
            let (key, bytes) = row.unwrap();
            let part = key.value().2;
            let len = bytes.value().len();
            assert!(
                len <= BLOCK_PART_BYTES || part == 101,
                "part {part} has {len} bytes"
            );
            numbers.push(part);
        }
        // The header; 100 entries; the big one alone; then 251 entries of
        // 260 bytes fill a page.
        assert_eq!(numbers, [0, 1, 101, 102, 353]);
        let got = store.entries(0, 600).unwrap();
        let got: Vec<Vec<u8>> = got.iter().map(|e| e.to_vec()).collect();
        assert_eq!(got, payloads);
        assert_eq!(store.entries(99, 3).unwrap()[1].len(), 65_536);
        assert_eq!(store.entries(352, 2).unwrap()[1][..8], 353u64.to_be_bytes());
    }

    #[test]
    fn an_entry_committed_twice_keeps_its_first_index() {
        let dir = tempdir();
        let store = Store::open(&dir.join("db.redb"), 1).unwrap();
        let mut tree = merkle::MemoryTree::new();
        // Block 1 holds "a" at 1 and again at 3; block 2 (same step) at 0.
        let mut commits = Vec::new();
        let mut parent = Hash([0; 32]);
        for (height, payloads) in [(1u64, vec!["x", "a", "y", "a"]), (2, vec!["a"])] {
            let refs: Vec<&[u8]> = payloads.iter().map(|p| p.as_bytes()).collect();
            let commit = committed(&mut tree, height, parent, &refs);
            parent = commit.block_id;
            commits.push(commit);
        }
        store
            .write(&WriteBatch {
                commits,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(store.index_of(&merkle::leaf_hash(b"a")).unwrap(), Some(1));
        assert_eq!(store.index_of(&merkle::leaf_hash(b"y")).unwrap(), Some(2));
        assert_eq!(store.index_of(&merkle::leaf_hash(b"z")).unwrap(), None);
        assert_eq!(store.entries(4, 1).unwrap()[0][..], *b"a");
    }

    #[test]
    fn the_leaf_index_writes_frozen_levels_as_runs_in_slices_and_rebuilds_memory_on_open() {
        let dir = tempdir();
        let path = dir.join("db.redb");
        let mut tree = merkle::MemoryTree::new();
        let small = |mut store: Store| {
            store.recent_limit = 50;
            store.merge_step_min = 4;
            store.leaf_row = 2;
            store.background_sort = false;
            store
        };
        let stored_rows = |store: &Store| {
            let read = store.db.begin_read().unwrap();
            let table = read.open_table(LEAF_RUNS).unwrap();
            table
                .iter()
                .unwrap()
                .map(|row| row.unwrap().0.value())
                .collect::<Vec<(u64, u64)>>()
        };
        let store = small(Store::open(&path, 1).unwrap());
        let indexed = |store: &Store| {
            let read = store.db.begin_read().unwrap();
            let meta = read.open_table(META).unwrap();
            meta.get(META_LEAF_INDEXED).unwrap().map(|v| v.value())
        };
        let levels = |store: &Store| {
            let r = store.recent.read().unwrap();
            (r.active.len(), r.merging.len(), r.merged)
        };
        let leaves = |n: u64| -> Vec<Hash> {
            (0..n)
                .map(|i| merkle::leaf_hash(format!("entry {i}").as_bytes()))
                .collect()
        };
        let all_found = |store: &Store, n: u64| {
            let expected: Vec<Option<u64>> = (0..n).map(Some).collect();
            assert_eq!(store.indexes_of(&leaves(n)).unwrap(), expected);
            let next = merkle::leaf_hash(format!("entry {n}").as_bytes());
            assert_eq!(store.index_of(&next).unwrap(), None);
        };
        // Blocks of 9: the sixth fills the memory level (54 ≥ 50), which
        // freezes; the seventh writes 2 × 9 of its 54 leaves (9 rows of
        // run 0).
        commit_blocks(&store, &mut tree, 7, 9);
        assert_eq!(indexed(&store), None);
        assert_eq!(levels(&store), (9, 54, 18));
        assert_eq!(
            stored_rows(&store),
            (0..9).map(|r| (0, r)).collect::<Vec<_>>()
        );
        all_found(&store, 63);
        // Reopened mid-run: the incomplete run's rows go and everything
        // beyond `leaf_indexed_size` (0) is rebuilt into memory.
        drop(store);
        let store = small(Store::open(&path, 1).unwrap());
        assert_eq!(levels(&store), (63, 0, 0));
        assert_eq!(stored_rows(&store), []);
        all_found(&store, 63);
        // The next block freezes all 72; four more merge them (18 each).
        commit_blocks(&store, &mut tree, 1, 9);
        assert_eq!(levels(&store), (0, 72, 0));
        for (k, merged) in [(1, 18), (2, 36), (3, 54)] {
            commit_blocks(&store, &mut tree, 1, 9);
            assert_eq!(levels(&store), (9 * k, 72, merged));
            assert_eq!(indexed(&store), None);
            all_found(&store, 72 + 9 * k as u64);
        }
        commit_blocks(&store, &mut tree, 1, 9);
        assert_eq!(indexed(&store), Some(72));
        assert_eq!(levels(&store), (36, 0, 0));
        assert_eq!(stored_rows(&store).len(), 36);
        all_found(&store, 108);
        // An entry committed again keeps its first index, whichever level
        // holds it: run 0 (5), or memory (100).
        let height = store.committed_height().unwrap() + 1;
        let again = committed(
            &mut tree,
            height,
            Hash([0; 32]),
            &[b"entry 5", b"entry 100"],
        );
        store
            .write(&WriteBatch {
                commits: vec![again],
                ..Default::default()
            })
            .unwrap();
        assert_eq!(
            store.index_of(&merkle::leaf_hash(b"entry 5")).unwrap(),
            Some(5)
        );
        assert_eq!(
            store.index_of(&merkle::leaf_hash(b"entry 100")).unwrap(),
            Some(100)
        );
        drop(store);
        let store = small(Store::open(&path, 1).unwrap());
        // Indexes 72..110 hold 37 distinct leaves ("entry 100" twice).
        assert_eq!(levels(&store), (37, 0, 0));
        all_found(&store, 108);
        assert_eq!(
            store.index_of(&merkle::leaf_hash(b"entry 100")).unwrap(),
            Some(100)
        );
        // Blocks until the memory level (with the second "entry 5", at
        // 108) is written as run 1: "entry 5" is then in both runs and
        // keeps its first index, before and after a reopen.
        while indexed(&store) == Some(72) {
            commit_blocks(&store, &mut tree, 1, 9);
        }
        let size = tree.size();
        let probe: Vec<Hash> = [5, 100, 110, size - 1, size]
            .iter()
            .map(|i| merkle::leaf_hash(format!("entry {i}").as_bytes()))
            .collect();
        let expected = [Some(5), Some(100), Some(110), Some(size - 1), None];
        assert_eq!(store.recent.read().unwrap().runs.len(), 2);
        assert_eq!(store.indexes_of(&probe).unwrap(), expected);
        drop(store);
        let store = small(Store::open(&path, 1).unwrap());
        assert_eq!(store.recent.read().unwrap().runs.len(), 2);
        assert_eq!(store.indexes_of(&probe).unwrap(), expected);
    }

    #[test]
    fn a_layout_2_leaf_index_becomes_run_0() {
        let dir = tempdir();
        let path = dir.join("db.redb");
        let mut tree = merkle::MemoryTree::new();
        let store = Store::open(&path, 1).unwrap();
        commit_blocks(&store, &mut tree, 3, 100);
        // Rewrite it as layout 2 would have left it after merging a
        // frozen level of the first 250 entries into `leaf_index`.
        let txn = store.db.begin_write().unwrap();
        {
            let old: TableDefinition<[u8; 32], u64> = TableDefinition::new("leaf_index");
            let mut old = txn.open_table(old).unwrap();
            for i in 0..250u64 {
                let leaf = merkle::leaf_hash(format!("entry {i}").as_bytes());
                old.insert(leaf.0, i).unwrap();
            }
            let mut meta = txn.open_table(META).unwrap();
            meta.insert(META_SCHEMA, 2).unwrap();
            meta.insert(META_LEAF_INDEXED, 250).unwrap();
        }
        txn.delete_table(LEAF_RUNS).unwrap();
        txn.commit().unwrap();
        drop(store);
        let store = Store::open(&path, 1).unwrap();
        {
            let leaves = store.recent.read().unwrap();
            assert_eq!(leaves.runs.len(), 1);
            assert_eq!(leaves.runs[0].fences.len(), 250usize.div_ceil(LEAF_ROW));
            assert_eq!(leaves.active.len(), 50);
        }
        let all: Vec<Hash> = (0..301u64)
            .map(|i| merkle::leaf_hash(format!("entry {i}").as_bytes()))
            .collect();
        let mut expected: Vec<Option<u64>> = (0..300).map(Some).collect();
        expected.push(None);
        assert_eq!(store.indexes_of(&all).unwrap(), expected);
        let read = store.db.begin_read().unwrap();
        let meta = read.open_table(META).unwrap();
        assert_eq!(
            meta.get(META_SCHEMA).unwrap().unwrap().value(),
            SCHEMA_VERSION
        );
        assert_eq!(meta.get(META_LEAF_RUNS).unwrap().unwrap().value(), 1);
    }

    /// A frozen level sorted on its own thread answers lookups from its
    /// map meanwhile, and is written as a run once the sort is done.
    #[test]
    fn a_level_sorted_in_the_background_becomes_a_run() {
        let dir = tempdir();
        let mut store = Store::open(&dir.join("db.redb"), 1).unwrap();
        store.recent_limit = 500;
        store.merge_step_min = 4;
        store.leaf_row = 8;
        let mut tree = merkle::MemoryTree::new();
        let leaves = |n: u64| -> Vec<Hash> {
            (0..n)
                .map(|i| merkle::leaf_hash(format!("entry {i}").as_bytes()))
                .collect()
        };
        // Every committed leaf is found at its index, and the next is not.
        let all_found = |store: &Store, n: u64| {
            let mut expected: Vec<Option<u64>> = (0..n).map(Some).collect();
            expected.push(None);
            assert_eq!(store.indexes_of(&leaves(n + 1)).unwrap(), expected);
        };
        // Blocks of 50: the tenth freezes 500 leaves.
        commit_blocks(&store, &mut tree, 10, 50);
        let mut steps = 0;
        while store.recent.read().unwrap().runs.is_empty() {
            let n = tree.size();
            let expected: Vec<Option<u64>> = (0..n).map(Some).collect();
            assert_eq!(store.indexes_of(&leaves(n)).unwrap(), expected);
            commit_blocks(&store, &mut tree, 1, 5);
            steps += 1;
            assert!(steps < 1000, "the run was never written");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let n = tree.size();
        all_found(&store, n);
        {
            let r = store.recent.read().unwrap();
            assert!(r.sorting.is_none() && r.merging.is_empty());
            assert_eq!(r.runs[0].fences.len(), 500 / 8 + 1);
            // The frozen level's map waits, emptied, for the next level,
            // and the level after the freeze started at the frozen size.
            let spare = r.spare.as_ref().expect("the frozen level's map is kept");
            assert!(spare.is_empty() && spare.capacity() >= 500);
            assert!(r.active.capacity() >= 500);
            assert_eq!(r.active.len() as u64, n - 500);
        }
        // The next level lives in the recycled map: it holds only its own
        // leaves, and every level still answers.
        let mut steps = 0;
        while store.recent.read().unwrap().runs.len() < 2 {
            commit_blocks(&store, &mut tree, 1, 50);
            steps += 1;
            assert!(steps < 1000, "the second run was never written");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let n = tree.size();
        all_found(&store, n);
        let r = store.recent.read().unwrap();
        assert!(r.active.len() < 500);
        assert!(r.spare.as_ref().is_some_and(|m| m.is_empty()));
    }

    #[test]
    fn a_run_finds_each_of_its_leaves_in_one_row_and_no_other_leaf() {
        let mut sorted: Vec<(Hash, u64)> = (0..2000u64)
            .map(|i| (merkle::leaf_hash(&i.to_be_bytes()), i))
            .collect();
        sorted.sort_unstable();
        let run = LeafRun::new(7, &sorted, LEAF_ROW);
        let rows: Vec<Vec<u8>> = sorted
            .chunks(LEAF_ROW)
            .map(|row| {
                row.iter()
                    .flat_map(|(leaf, index)| leaf.0.into_iter().chain(index.to_be_bytes()))
                    .collect()
            })
            .collect();
        assert_eq!(rows.len(), 2000usize.div_ceil(LEAF_ROW));
        for (leaf, index) in &sorted {
            let row = run.row_for(leaf).expect("a member passes the filter");
            assert_eq!(
                find_in_row(&rows[row as usize], leaf).unwrap(),
                Some(*index)
            );
        }
        let mut passed = 0;
        for i in 2000..12_000u64 {
            let absent = merkle::leaf_hash(&i.to_be_bytes());
            if let Some(row) = run.row_for(&absent) {
                passed += 1;
                assert_eq!(find_in_row(&rows[row as usize], &absent).unwrap(), None);
            }
        }
        // 16 bits and 8 probes in one block per leaf: about 0.1-0.2%.
        assert!(
            passed < 60,
            "{passed} of 10,000 absent leaves passed the filter"
        );
        assert!(matches!(
            find_in_row(&rows[0][..39], &sorted[0].0),
            Err(StoreError::Corrupt(_))
        ));
    }

    fn stored_schema(read: &redb::ReadTransaction) -> Option<u64> {
        let meta = read.open_table(META).unwrap();
        meta.get(META_SCHEMA).unwrap().map(|v| v.value())
    }

    /// Writes `blocks` as voted, with the genesis safety state.
    fn vote(store: &Store, blocks: &[&Block]) {
        store
            .write(&WriteBatch {
                safety: Some(SafetyState::genesis(1)),
                voted_blocks: blocks
                    .iter()
                    .map(|b| {
                        let id = bftlog_consensus::crypto::block_id(b);
                        (id, std::sync::Arc::new((*b).clone()))
                    })
                    .collect(),
                ..Default::default()
            })
            .unwrap();
    }

    /// A voted block larger than a page is stored in runs and comes back
    /// whole, in round order with the blocks around it; a lost run is
    /// corruption, not a shorter block.
    #[test]
    fn voted_blocks_are_stored_in_runs_and_reassembled() {
        let dir = tempdir();
        let path = dir.join("db.redb");
        let entry = vec![7u8; 256];
        let entries: Vec<&[u8]> = vec![entry.as_slice(); 700];
        let big = block(5, Hash([2; 32]), &entries);
        let small_before = block(4, Hash([1; 32]), &[b"a"]);
        let small_after = block(6, Hash([3; 32]), &[b"b"]);
        let id = |b: &Block| bftlog_consensus::crypto::block_id(b);
        let big_id = id(&big);
        {
            let store = Store::open(&path, 1).unwrap();
            vote(&store, &[&small_after, &big, &small_before]);
            let read = store.db.begin_read().unwrap();
            let table = read.open_table(BLOCK_PARTS).unwrap();
            // Headers, and runs of 251 + 251 + 198 entries and of one.
            assert_eq!(table.len().unwrap(), 3 + 3 + 2);
        }
        let store = Store::open(&path, 1).unwrap();
        let recovered = store.recover(1, 100, usize::MAX).unwrap();
        assert_eq!(
            recovered.voted_blocks,
            vec![small_before.clone(), big.clone(), small_after.clone()]
        );
        // Remove a middle run: recovery must refuse, not decode a prefix.
        let txn = store.db.begin_write().unwrap();
        txn.open_table(BLOCK_PARTS)
            .unwrap()
            .remove((5, big_id.0, 252))
            .unwrap()
            .expect("the second run starts at entry 251");
        txn.commit().unwrap();
        assert!(matches!(
            store.recover(1, 100, usize::MAX),
            Err(StoreError::Corrupt(_))
        ));
    }

    /// A voted block that commits keeps the rows its vote wrote (the
    /// commit writes no entries); a voted block its round's commit passed
    /// by goes; one of a later round stays voted.
    #[test]
    fn a_voted_block_is_written_once_and_read_from_its_vote_after_commit() {
        let dir = tempdir();
        let path = dir.join("db.redb");
        let mut tree = merkle::MemoryTree::new();
        let commit = committed(&mut tree, 1, Hash([0; 32]), &[b"one", b"two"]);
        let fork = block(1, Hash([9; 32]), &[b"fork"]);
        let later = block(3, commit.block_id, &[b"later"]);
        let id = |b: &Block| bftlog_consensus::crypto::block_id(b);
        let store = Store::open(&path, 1).unwrap();
        vote(&store, &[commit.block.as_ref(), &fork, &later]);
        // Change the voted run in place: if the commit wrote the block's
        // entries again, the change would be undone.
        let txn = store.db.begin_write().unwrap();
        let mut marked = Vec::new();
        for entry in [&b"ONE"[..], b"TWO"] {
            marked.extend_from_slice(&(entry.len() as u32).to_be_bytes());
            marked.extend_from_slice(entry);
        }
        txn.open_table(BLOCK_PARTS)
            .unwrap()
            .insert((1, commit.block_id.0, 1), marked.as_slice())
            .unwrap()
            .expect("the vote wrote the run");
        txn.commit().unwrap();
        store
            .write(&WriteBatch {
                commits: vec![commit.clone()],
                ..Default::default()
            })
            .unwrap();
        drop(store);
        let store = Store::open(&path, 1).unwrap();
        let texts =
            |entries: Vec<Entry>| -> Vec<Vec<u8>> { entries.iter().map(|e| e.to_vec()).collect() };
        assert_eq!(texts(store.entries(0, 2).unwrap()), [b"ONE", b"TWO"]);
        let recovered = store.recover(1, 100, usize::MAX).unwrap();
        assert_eq!(recovered.voted_blocks, vec![later.clone()]);
        assert_eq!(recovered.committed_blocks.len(), 1);
        let read = store.db.begin_read().unwrap();
        let parts = read.open_table(BLOCK_PARTS).unwrap();
        let fork_id = id(&fork).0;
        assert!(
            parts
                .range((1, fork_id, 0)..=(1, fork_id, u32::MAX))
                .unwrap()
                .next()
                .is_none(),
            "the settled fork's rows are gone"
        );
        let voted: Vec<_> = read
            .open_table(VOTED)
            .unwrap()
            .iter()
            .unwrap()
            .map(|row| row.unwrap().0.value())
            .collect();
        assert_eq!(voted, [(3, id(&later).0)]);
    }

    /// A committed block whose runs are gone is corruption, never a
    /// shorter log or a shorter block.
    #[test]
    fn a_committed_block_without_its_runs_is_corruption() {
        let dir = tempdir();
        let mut tree = merkle::MemoryTree::new();
        let store = Store::open(&dir.join("db.redb"), 1).unwrap();
        commit_blocks(&store, &mut tree, 2, 3);
        let second = store.committed_blocks(2, 1).unwrap().remove(0);
        let second_id = bftlog_consensus::crypto::block_id(&second);
        let txn = store.db.begin_write().unwrap();
        txn.open_table(BLOCK_PARTS)
            .unwrap()
            .remove((2, second_id.0, 1))
            .unwrap()
            .expect("the run exists");
        txn.commit().unwrap();
        assert_eq!(store.entries(0, 3).unwrap().len(), 3);
        for (start, count) in [(0, 6), (4, 1), (5, 10)] {
            assert!(
                matches!(
                    store.entries(start, count),
                    Err(ReadError::Store(StoreError::Corrupt(_)))
                ),
                "entries({start}, {count})"
            );
        }
        assert!(matches!(
            store.committed_blocks(1, 2),
            Err(StoreError::Corrupt(_))
        ));
    }

    /// Rewrites `store` as layout 4 kept it: committed entries in
    /// `entry_runs` (a row per entry, a valid layout 4 run), voted blocks
    /// CBOR-encoded in `voted_parts`.
    fn downgrade_to_layout_4(store: Store) {
        let entries = store.entries(0, store.tree_size()).unwrap();
        let voted = store.recover(1, 0, 0).unwrap().voted_blocks;
        let txn = store.db.begin_write().unwrap();
        {
            let mut runs = txn.open_table(ENTRY_RUNS).unwrap();
            for (index, entry) in entries.iter().enumerate() {
                let mut row = (entry.len() as u32).to_be_bytes().to_vec();
                row.extend_from_slice(entry);
                runs.insert(index as u64, row.as_slice()).unwrap();
            }
            let mut old = txn.open_table(VOTED_PARTS_V4).unwrap();
            for b in &voted {
                let id = bftlog_consensus::crypto::block_id(b);
                put_voted_v4(&mut old, b.round, &id, &wire::encode(b)).unwrap();
            }
            let mut meta = txn.open_table(META).unwrap();
            meta.insert(META_SCHEMA, 4).unwrap();
            meta.remove(META_LEGACY_END).unwrap();
        }
        txn.delete_table(BLOCK_PARTS).unwrap();
        txn.delete_table(VOTED).unwrap();
        txn.delete_table(BLOCK_STARTS).unwrap();
        txn.commit().unwrap();
    }

    /// Layout 4 copied committed entries into `entry_runs`: they stay
    /// there and are read from there, new commits' entries stay in their
    /// blocks, and reads across the boundary see one log.
    #[test]
    fn a_layout_4_database_keeps_its_entries_and_grows_in_layout_5() {
        let dir = tempdir();
        let path = dir.join("db.redb");
        let mut tree = merkle::MemoryTree::new();
        let voted = block(50, Hash([6; 32]), &[b"voted"]);
        {
            let store = Store::open(&path, 1).unwrap();
            commit_blocks(&store, &mut tree, 3, 5);
            vote(&store, &[&voted]);
            downgrade_to_layout_4(store);
        }
        let check = |store: &Store, size: u64| {
            let got: Vec<String> = store
                .entries(0, 100)
                .unwrap()
                .iter()
                .map(|e| String::from_utf8(e.to_vec()).unwrap())
                .collect();
            let expected: Vec<String> = (0..size).map(|i| format!("entry {i}")).collect();
            assert_eq!(got, expected);
            let across: Vec<_> = store.entries(13, 4).unwrap();
            assert_eq!(across.len() as u64, 4.min(size - 13));
            let blocks = store.committed_blocks(1, 10).unwrap();
            assert_eq!(blocks.len() as u64, size / 5);
            assert!(blocks.iter().all(|b| b.entries.len() == 5));
            assert_eq!(
                store.recover(1, 100, usize::MAX).unwrap().voted_blocks,
                vec![voted.clone()]
            );
        };
        {
            let store = Store::open(&path, 1).unwrap();
            assert_eq!(store.legacy_end, 15);
            check(&store, 15);
            commit_blocks(&store, &mut tree, 2, 5);
            check(&store, 25);
            let read = store.db.begin_read().unwrap();
            assert!(
                read.open_table(VOTED_PARTS_V4).is_err(),
                "the old table is gone"
            );
            assert_eq!(stored_schema(&read), Some(SCHEMA_VERSION));
        }
        let store = Store::open(&path, 1).unwrap();
        assert_eq!(store.legacy_end, 15);
        check(&store, 25);
    }

    /// Layout 3 kept each voted block whole in `voted`: opening moves them
    /// into block runs, drops the old table and records layout 5.
    #[test]
    fn a_layout_3_database_has_its_voted_blocks_moved_into_block_runs() {
        let dir = tempdir();
        let path = dir.join("db.redb");
        let mut tree = merkle::MemoryTree::new();
        let big_entry = vec![9u8; 50_000];
        let big = block(
            8,
            Hash([4; 32]),
            &[big_entry.as_slice(), big_entry.as_slice()],
        );
        let small = block(9, Hash([5; 32]), &[b"c"]);
        let v3: TableDefinition<(u64, [u8; 32]), &[u8]> = TableDefinition::new("voted");
        {
            let store = Store::open(&path, 1).unwrap();
            commit_blocks(&store, &mut tree, 2, 3);
            downgrade_to_layout_4(store);
        }
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut old = txn.open_table(v3).unwrap();
                for b in [&big, &small] {
                    let id = bftlog_consensus::crypto::block_id(b);
                    old.insert((b.round, id.0), wire::encode(b).as_slice())
                        .unwrap();
                }
                txn.open_table(META)
                    .unwrap()
                    .insert(META_SCHEMA, 3)
                    .unwrap();
            }
            txn.delete_table(VOTED_PARTS_V4).unwrap();
            txn.commit().unwrap();
        }
        let store = Store::open(&path, 1).unwrap();
        let recovered = store.recover(1, 100, usize::MAX).unwrap();
        assert_eq!(recovered.voted_blocks, vec![big, small]);
        assert_eq!(store.tree_size(), 6);
        assert_eq!(&store.entries(5, 1).unwrap()[0][..], b"entry 5");
        let read = store.db.begin_read().unwrap();
        assert_eq!(stored_schema(&read), Some(SCHEMA_VERSION));
        assert!(read.open_table(v3).is_err(), "the layout 3 table is gone");
    }

    #[test]
    fn a_database_of_another_layout_is_refused() {
        let dir = tempdir();
        let path = dir.join("db.redb");
        let mut tree = merkle::MemoryTree::new();
        {
            let store = Store::open(&path, 1).unwrap();
            commit_blocks(&store, &mut tree, 1, 3);
            let txn = store.db.begin_write().unwrap();
            txn.open_table(META).unwrap().remove(META_SCHEMA).unwrap();
            txn.commit().unwrap();
        }
        assert!(matches!(
            Store::open(&path, 1),
            Err(StoreError::SchemaMismatch { stored: None })
        ));
    }

    #[test]
    fn safety_state_voted_blocks_and_checkpoints_round_trip() {
        let dir = tempdir();
        let path = dir.join("db.redb");
        let mut tree = merkle::MemoryTree::new();
        let store = Store::open(&path, 1).unwrap();
        commit_blocks(&store, &mut tree, 2, 2);
        let mut safety = SafetyState::genesis(1);
        safety.last_voted_round = 9;
        safety.last_signed = Some((4, tree.root()));
        let voted = block(7, Hash([1; 32]), &[b"x"]);
        let stale = block(1, Hash([1; 32]), &[b"y"]);
        store
            .write(&WriteBatch {
                safety: Some(safety.clone()),
                voted_blocks: [voted.clone(), stale]
                    .into_iter()
                    .map(|b| {
                        (
                            bftlog_consensus::crypto::block_id(&b),
                            std::sync::Arc::new(b),
                        )
                    })
                    .collect(),
                checkpoints: vec![(4, "note".into())],
                ..Default::default()
            })
            .unwrap();
        // A later commit (round 3) settles the stale voted block only.
        commit_blocks(&store, &mut tree, 1, 1);
        drop(store);
        let store = Store::open(&path, 1).unwrap();
        let recovered = store.recover(1, 100, usize::MAX).unwrap();
        assert_eq!(recovered.safety, safety);
        assert_eq!(recovered.voted_blocks, vec![voted]);
        assert_eq!(store.latest_checkpoint().unwrap(), Some((4, "note".into())));
        drop(store);
        assert!(matches!(
            Store::open(&path, 2),
            Err(StoreError::EpochMismatch { .. })
        ));
    }

    fn tempdir() -> crate::test_dir::TestDir {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        crate::test_dir::TestDir::new(&format!(
            "store-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ))
    }
}
