//! Stored Merkle hashes: chunks of [`HASH_CHUNK`] in stored-hash order
//! on disk, the upper levels in memory, and the readers proofs use.

use bftlog_spec::merkle::{self, Hash, HashReader, MAX_PROOF_LEN, stored_hash_subtree};

use super::*;

/// Stored hashes per `hash_chunks` row.
pub const HASH_CHUNK: u64 = 64;

/// Appends `hashes` at stored-hash positions `first..`, rewriting the
/// partial chunk at the start.
pub(super) fn write_hashes(
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
pub(super) struct UpperHashes {
    pub(super) levels: Vec<Vec<Hash>>,
}

impl UpperHashes {
    /// Read from storage for a tree of `size` leaves.
    pub(super) fn load(size: u64, reader: &TxnHashes) -> Result<Self, StoreError> {
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

    pub(super) fn get(&self, level: u32, index: u64) -> Option<Hash> {
        let row = self.levels.get(level.checked_sub(UPPER_LEVEL)? as usize)?;
        row.get(usize::try_from(index).ok()?).copied()
    }

    /// Adds the next subtree of `level`; subtrees arrive in order.
    pub(super) fn push(&mut self, level: u32, index: u64, hash: Hash) {
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
pub(super) struct ProofHashes<'a> {
    pub(super) upper: &'a std::sync::RwLock<UpperHashes>,
    pub(super) txn: TxnHashes,
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
pub(super) struct TxnHashes {
    pub(super) table: redb::ReadOnlyTable<u64, &'static [u8]>,
    pub(super) chunks: std::cell::RefCell<std::collections::HashMap<u64, Vec<u8>>>,
}

/// Chunks a [`TxnHashes`] keeps (64 × 32 bytes each: 2 MiB at most).
pub(super) const TXN_CHUNK_CACHE: usize = 1024;

impl TxnHashes {
    pub(super) fn new(read: &redb::ReadTransaction) -> Result<Self, StoreError> {
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
