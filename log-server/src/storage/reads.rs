//! Reads: leaf index lookups, entries, checkpoints and proofs. Each runs
//! in one read transaction, from any thread, beside the writer.

use bftlog_spec::merkle::{self, Hash};
use bftlog_spec::wire::{Block, Entry, QuorumCert};

use super::blocks::{read_blocks, read_entries, read_sync_blocks};
use super::leaf_index::find_in_row;
use super::*;

impl Store {
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
        Ok(read_entries(&read, start, start.saturating_add(count))?)
    }

    /// Up to `count` entries from `start`, as many as fit `max_bytes` of
    /// entry bytes (the first always). They are read a few at a time and
    /// the reading stops at the budget, so a request for many large
    /// entries costs about the budget, not what it asked for.
    pub fn entries_within(
        &self,
        start: u64,
        count: u64,
        max_bytes: usize,
    ) -> Result<Vec<Entry>, ReadError> {
        /// Entries per read: at most 4 MiB past the budget at 64 KiB each.
        const STEP: u64 = 64;
        let read = self.db.begin_read()?;
        let end = start.saturating_add(count);
        let mut out: Vec<Entry> = Vec::new();
        let mut bytes = 0;
        let mut next = start;
        while next < end {
            let step_end = next.saturating_add(STEP).min(end);
            let chunk = read_entries(&read, next, step_end)?;
            if chunk.is_empty() {
                break;
            }
            for entry in chunk {
                if !out.is_empty() && bytes + entry.len() > max_bytes {
                    return Ok(out);
                }
                bytes += entry.len();
                out.push(entry);
            }
            next = step_end;
        }
        Ok(out)
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
        read_blocks(&read, from_height, max)
    }

    /// A sync answer from storage: committed blocks from `from_height`,
    /// at most `max` and as many as `admit` takes, read one at a time, and
    /// the QC that certifies the last (the next block's justify; `None`
    /// when no stored block follows it, and then no block is returned
    /// either: nothing here could prove it).
    pub fn sync_blocks(
        &self,
        from_height: u64,
        max: u64,
        admit: impl FnMut(&Block) -> bool,
    ) -> Result<(Vec<Block>, Option<QuorumCert>), StoreError> {
        let read = self.db.begin_read()?;
        match read_sync_blocks(&read, from_height, max, admit)? {
            (blocks, Some(qc)) => Ok((blocks, Some(qc))),
            (_, None) => Ok((Vec::new(), None)),
        }
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
