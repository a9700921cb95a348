//! The witness database (redb).
//!
//! | table | key | value |
//! |---|---|---|
//! | `logs` | origin | [`LogConfig`] text: keys and threshold |
//! | `latest` | origin | the latest cosigned checkpoint note, verbatim |
//! | `evidence` | id | proven split-view evidence (`spec/evidence.md`) |
//! | `evidence_seen` | SHA-256 of the two checkpoint texts | id (so replays are kept once) |
//! | `rejected` | id | an inconsistent submission that proves nothing alone |
//! | `rejected_seen` | SHA-256 of the record | id (so replays are kept once) |
//!
//! Every write is one transaction with immediate durability: the witness
//! answers only after the state that its answer depends on is on disk.

use crate::log_config::LogConfig;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use std::path::Path;

const LOGS: TableDefinition<&str, &[u8]> = TableDefinition::new("logs");
const LATEST: TableDefinition<&str, &[u8]> = TableDefinition::new("latest");
const EVIDENCE: TableDefinition<u64, &[u8]> = TableDefinition::new("evidence");
const REJECTED: TableDefinition<u64, &[u8]> = TableDefinition::new("rejected");
const REJECTED_SEEN: TableDefinition<&[u8; 32], u64> = TableDefinition::new("rejected_seen");
const EVIDENCE_SEEN: TableDefinition<&[u8; 32], u64> = TableDefinition::new("evidence_seen");

/// At most this many unproven rejected submissions are kept. Anyone can
/// replay a log's genuine checkpoint with a garbage proof, so these are
/// bounded; proven split views need a log key and are always kept.
pub const MAX_REJECTED_RECORDS: u64 = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(#[from] Box<redb::Error>),
    #[error("log {0:?} is already configured (logs are never replaced or removed)")]
    LogExists(String),
    #[error("stored log configuration for {origin:?} is corrupt: {reason}")]
    Corrupt { origin: String, reason: String },
    #[error(
        "{path}: written by an older bftlog-witness (storage file format {version}), which this \
         version cannot read. Keep the file: it is what stops this witness key from cosigning a \
         rollback. Run the version that wrote it, or start a new witness with a new key."
    )]
    OldFileFormat { path: String, version: u8 },
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
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// A change to apply in one durable transaction.
#[derive(Default)]
pub struct WriteBatch {
    /// (origin, cosigned note) pairs.
    pub latest: Vec<(String, Vec<u8>)>,
    /// (SHA-256 of the two checkpoint texts it shows, evidence): a fork
    /// replayed (with other signature lines, even) is kept once.
    pub evidence: Vec<([u8; 32], Vec<u8>)>,
    /// (SHA-256 of the record, record).
    pub rejected: Vec<([u8; 32], Vec<u8>)>,
}

impl WriteBatch {
    pub fn is_empty(&self) -> bool {
        self.latest.is_empty() && self.evidence.is_empty() && self.rejected.is_empty()
    }
}

/// Appends `items` to the id-keyed `table`, each at most once: `seen` maps
/// an item's digest to its id. Stops adding once `table` holds `cap` rows.
fn append_once(
    txn: &redb::WriteTransaction,
    table: TableDefinition<u64, &[u8]>,
    seen: TableDefinition<&[u8; 32], u64>,
    items: &[([u8; 32], Vec<u8>)],
    cap: u64,
) -> Result<(), StoreError> {
    let mut table = txn.open_table(table)?;
    let mut seen = txn.open_table(seen)?;
    let mut next = table.last()?.map_or(1, |(k, _)| k.value() + 1);
    for (digest, item) in items {
        if table.len()? >= cap || seen.get(digest)?.is_some() {
            continue;
        }
        table.insert(next, item.as_slice())?;
        seen.insert(digest, next)?;
        next += 1;
    }
    Ok(())
}

pub struct Store {
    db: Database,
}

impl Store {
    /// Opens (or creates) the database file.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Database::create(path).map_err(|e| match e {
            redb::DatabaseError::UpgradeRequired(version) => StoreError::OldFileFormat {
                path: path.display().to_string(),
                version,
            },
            e => e.into(),
        })?;
        Self::init(db)
    }

    /// A database that lives in memory only (fuzzing and benchmarks of the
    /// core; never for a real witness).
    pub fn in_memory() -> Result<Self, StoreError> {
        let db = Database::builder()
            .set_cache_size(1 << 20)
            .create_with_backend(redb::backends::InMemoryBackend::new())?;
        Self::init(db)
    }

    fn init(db: Database) -> Result<Self, StoreError> {
        let txn = db.begin_write()?;
        txn.open_table(LOGS)?;
        txn.open_table(LATEST)?;
        txn.open_table(EVIDENCE)?;
        txn.open_table(REJECTED)?;
        txn.open_table(REJECTED_SEEN)?;
        txn.open_table(EVIDENCE_SEEN)?;
        txn.commit()?;
        Ok(Store { db })
    }

    pub fn add_log(&self, config: &LogConfig) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        {
            let mut logs = txn.open_table(LOGS)?;
            if logs.get(config.origin())?.is_some() {
                return Err(StoreError::LogExists(config.origin().to_owned()));
            }
            logs.insert(config.origin(), config.to_text().as_bytes())?;
        }
        txn.commit()?;
        Ok(())
    }

    pub fn logs(&self) -> Result<Vec<LogConfig>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(LOGS)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (origin, value) = row?;
            let config = LogConfig::parse(value.value()).map_err(|e| StoreError::Corrupt {
                origin: origin.value().to_owned(),
                reason: e.to_string(),
            })?;
            out.push(config);
        }
        Ok(out)
    }

    /// Every origin's latest cosigned note.
    pub fn latest(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(LATEST)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (origin, note) = row?;
            out.push((origin.value().to_owned(), note.value().to_vec()));
        }
        Ok(out)
    }

    pub fn write(&self, batch: &WriteBatch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let txn = self.db.begin_write()?;
        {
            let mut latest = txn.open_table(LATEST)?;
            for (origin, note) in &batch.latest {
                latest.insert(origin.as_str(), note.as_slice())?;
            }
            append_once(&txn, EVIDENCE, EVIDENCE_SEEN, &batch.evidence, u64::MAX)?;
            append_once(
                &txn,
                REJECTED,
                REJECTED_SEEN,
                &batch.rejected,
                MAX_REJECTED_RECORDS,
            )?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Empties every table but `logs`. Only in fuzz builds (`--cfg
    /// fuzzing`): creating a database costs milliseconds, far more than a
    /// fuzz iteration, so fuzz targets reuse one and reset it.
    #[cfg(fuzzing)]
    pub fn reset_for_fuzzing(&self) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        txn.delete_table(LATEST)?;
        txn.delete_table(EVIDENCE)?;
        txn.delete_table(REJECTED)?;
        txn.delete_table(REJECTED_SEEN)?;
        txn.delete_table(EVIDENCE_SEEN)?;
        txn.commit()?;
        let txn = self.db.begin_write()?;
        txn.open_table(LATEST)?;
        txn.open_table(EVIDENCE)?;
        txn.open_table(REJECTED)?;
        txn.open_table(REJECTED_SEEN)?;
        txn.open_table(EVIDENCE_SEEN)?;
        txn.commit()?;
        Ok(())
    }

    /// Calls `f` with each evidence item in id order, one at a time (the
    /// listing must not hold every item in memory at once).
    pub fn for_each_evidence(&self, f: impl FnMut(u64, &[u8])) -> Result<(), StoreError> {
        self.for_each(EVIDENCE, f)
    }

    /// As [`Store::for_each_evidence`], for rejected records.
    pub fn for_each_rejected(&self, f: impl FnMut(u64, &[u8])) -> Result<(), StoreError> {
        self.for_each(REJECTED, f)
    }

    pub fn evidence_item(&self, id: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.one(EVIDENCE, id)
    }

    pub fn rejected_item(&self, id: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.one(REJECTED, id)
    }

    fn for_each(
        &self,
        def: TableDefinition<u64, &[u8]>,
        mut f: impl FnMut(u64, &[u8]),
    ) -> Result<(), StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(def)?;
        for row in table.iter()? {
            let (id, value) = row?;
            f(id.value(), value.value());
        }
        Ok(())
    }

    fn one(
        &self,
        def: TableDefinition<u64, &[u8]>,
        id: u64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(def)?;
        Ok(table.get(id)?.map(|v| v.value().to_vec()))
    }
}
