//! Durable replica state in redb.
//!
//! Tables:
//!
//! | table          | key                      | value                                   |
//! |----------------|--------------------------|-----------------------------------------|
//! | `block_parts`  | (round, block id, part)  | part 0: the block without its entries; part 1 + k: a run of its entries from offset k |
//! | `voted_blocks` | (round, block id)        | entry count of a voted block no commit has settled |
//! | `block_starts` | first index `u64`        | (round, block id, entry count) of a committed block with entries |
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
//! **Each entry is written once** (since layout 5, docs/adr/0004). A replica
//! must make a block durable before it votes for it (a block a quorum
//! certified has to survive all replicas crashing at once), so the vote
//! writes the block into `block_parts`: its header, then its entries in
//! *runs*, each entry a 4-byte big-endian length and the bytes, a run at
//! most [`BLOCK_PART_BYTES`] (one 64 KiB page with its key) unless a
//! single entry is larger. When the block commits, those rows stay where
//! they are: the commit adds only a `block_starts` row (its first index →
//! the block) and takes the block off `voted_blocks` (copying every entry
//! at commit was about a third of what a replica wrote under load). A block committed without this replica's
//! vote (by sync, or a proposal it was too late for) is written at
//! commit. Voted blocks at or below a commit's round that did not commit
//! never will (they conflict with the committed chain), and that commit
//! deletes them. Entry `i` is in the block of the last `block_starts` row
//! at or below `i`, in its last run whose part is at most `i - first + 1`;
//! a missing run is corruption, never a shorter log.
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
//! Files: this one opens and recovers the database ([`Store`] is its
//! shared, read side); `write` holds [`StoreWriter`], which the core loop
//! owns and which alone writes; `reads` answers proofs, entries and
//! checkpoints; `blocks` lays out blocks and their entries; `leaf_index`
//! and `hashes` are the two indexes described above.
//!
//! Every [`StoreWriter::write`] is one redb transaction: all the commits, the
//! safety state and the quorum checkpoints of one driver step become
//! durable together or not at all, so a crash at any point restarts from
//! a consistent state. A step with safety state or voted blocks is flushed
//! before it returns; one of commits and quorum checkpoints only becomes
//! durable with the next flushed step (see [`StoreWriter::write`]).
//!
//! No release exists yet, so a database of another layout is refused with
//! a clear message rather than migrated: the replica starts again with an
//! empty data directory and syncs from its peers.

mod blocks;
mod hashes;
mod leaf_index;
mod reads;
#[cfg(test)]
mod tests;
mod tiles;
mod write;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bftlog_spec::merkle::{Hash, ProveError};
use bftlog_spec::wire::{self, QuorumCert, TimeoutCert};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use hashes::{ProofHashes, TxnHashes, UpperHashes};
use leaf_index::{RecentLeaves, load_runs, recent_leaves};

pub use hashes::UPPER_LEVEL;
pub use leaf_index::MERGE_STEP_MIN;
pub use write::{StoreWriter, WriteBatch};

const LEAF_RUNS: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("leaf_runs");

const HASH_CHUNKS: TableDefinition<u64, &[u8]> = TableDefinition::new("hash_chunks");

const BLOCKS: TableDefinition<u64, &[u8]> = TableDefinition::new("blocks");

const BLOCK_PARTS: TableDefinition<(u64, [u8; 32], u32), &[u8]> =
    TableDefinition::new("block_parts");

const VOTED: TableDefinition<(u64, [u8; 32]), u64> = TableDefinition::new("voted_blocks");

const BLOCK_STARTS: TableDefinition<u64, (u64, [u8; 32], u64)> =
    TableDefinition::new("block_starts");

const CHECKPOINTS: TableDefinition<u64, &[u8]> = TableDefinition::new("checkpoints");

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

const SAFETY: TableDefinition<u8, &[u8]> = TableDefinition::new("safety");
/// This replica's cluster-key nonces not used yet, by the height whose
/// checkpoint each is for (frost-ed25519's encoding of `SigningNonces`).
const NONCES: TableDefinition<u64, &[u8]> = TableDefinition::new("cluster_key_nonces");

/// Most bytes of one `block_parts` row unless it is a single entry: the
/// row, its 44-byte key and its leaf header fit one 64 KiB redb page. A
/// block stored whole took the next power of two (a 150 KB block a
/// 256 KiB page), and blocks are most of what a replica writes.
pub const BLOCK_PART_BYTES: usize = 65_536 - 128;

/// The layout version in `meta`; a database of another layout is refused.
/// Layout 6: entries are at most 65,535 bytes (a tiles entry bundle's
/// limit); a layout-5 database may hold one of 65,536.
const SCHEMA_VERSION: u64 = 6;

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
    #[error(
        "{path}: written by an older bftlog (storage file format {version}), which this version \
         does not read or migrate; move the data directory away and start the replica with an \
         empty one: it syncs the log from its peers"
    )]
    OldFileFormat { path: String, version: u8 },
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
    redb::CommitError,
    redb::SetDurabilityError
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
    /// The last cluster-key share sent (its height retires its nonce).
    #[serde(default)]
    last_share: Option<ShareRecord>,
}

/// [`bftlog_consensus::SentShare`] as stored.
#[derive(Serialize, Deserialize)]
struct ShareRecord {
    height: u64,
    size: u64,
    root: Hash,
    signers: Vec<bftlog_spec::wire::SignerCommitment>,
    share: bftlog_spec::wire::Element32,
}

impl From<bftlog_consensus::SentShare> for ShareRecord {
    fn from(s: bftlog_consensus::SentShare) -> Self {
        ShareRecord {
            height: s.height,
            size: s.size,
            root: s.root,
            signers: s.signers,
            share: s.share,
        }
    }
}

impl From<ShareRecord> for bftlog_consensus::SentShare {
    fn from(s: ShareRecord) -> Self {
        bftlog_consensus::SentShare {
            height: s.height,
            size: s.size,
            root: s.root,
            signers: s.signers,
            share: s.share,
        }
    }
}

/// A replica's database, read side: shared by every task that answers
/// reads. Only the [`StoreWriter`] the core loop owns writes.
pub struct Store {
    db: Database,
    /// The database file, for [`Store::file_bytes`].
    path: std::path::PathBuf,
    /// Entries committed, as of the last write (readers need not open a
    /// transaction for it).
    committed_size: AtomicU64,
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
    /// with a page cache of `cache_bytes`, and returns its writer (the
    /// read side is [`StoreWriter::store`]).
    pub fn open(path: &Path, epoch: u64, cache_bytes: usize) -> Result<StoreWriter, StoreError> {
        let db = Database::builder()
            .set_cache_size(cache_bytes)
            .create(path)
            .map_err(|e| match e {
                redb::DatabaseError::UpgradeRequired(version) => StoreError::OldFileFormat {
                    path: path.display().to_string(),
                    version,
                },
                e => e.into(),
            })?;
        let txn = db.begin_write()?;
        let size;
        {
            // Create every table so readers never see a missing one.
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
                stored => return Err(StoreError::SchemaMismatch { stored }),
            }
        }
        txn.commit()?;
        let store = Store {
            db,
            path: path.to_path_buf(),
            committed_size: AtomicU64::new(size),
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
        let (recent, runs, upper) = {
            let read = store.db.begin_read()?;
            let reader = TxnHashes::new(&read)?;
            let indexed = read
                .open_table(META)?
                .get(META_LEAF_INDEXED)?
                .map_or(0, |v| v.value());
            (
                recent_leaves(&read, indexed, size)?,
                load_runs(&read, run_count)?,
                UpperHashes::load(size, &reader)?,
            )
        };
        {
            let mut leaves = store.recent.write().expect("leaf lock");
            leaves.active = recent;
            leaves.runs = runs;
        }
        *store.upper.write().expect("upper lock") = upper;
        Ok(StoreWriter::new(Arc::new(store), size))
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
        self.committed_size.load(Ordering::Acquire)
    }
}

fn decode<T: Serialize + serde::de::DeserializeOwned>(
    bytes: &[u8],
    what: &str,
) -> Result<T, StoreError> {
    wire::decode(bytes).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}
