//! Entries waiting to be proposed: de-duplicated by leaf hash, bounded by
//! count and bytes, first in first out.

use std::collections::VecDeque;

use super::digest_hash::{DigestMap, DigestSet};

use bftlog_spec::merkle::{self, Hash};

/// Why an entry was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// The pool is full; try again later.
    Full,
    /// Larger than a block may carry.
    TooLarge,
}

pub struct Mempool {
    order: VecDeque<Hash>,
    live: DigestMap<Hash, Vec<u8>>,
    bytes: usize,
    max_entries: usize,
    max_bytes: usize,
    max_entry_bytes: usize,
}

impl Mempool {
    pub fn new(max_entries: usize, max_bytes: usize, max_entry_bytes: usize) -> Self {
        assert!(max_entries > 0 && max_bytes >= max_entry_bytes);
        Mempool {
            order: VecDeque::new(),
            live: DigestMap::default(),
            bytes: 0,
            max_entries,
            max_bytes,
            max_entry_bytes,
        }
    }

    pub fn len(&self) -> usize {
        self.live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn contains(&self, leaf: &Hash) -> bool {
        self.live.contains_key(leaf)
    }

    pub fn get(&self, leaf: &Hash) -> Option<&Vec<u8>> {
        self.live.get(leaf)
    }

    /// Adds an entry. `Ok(true)` if new, `Ok(false)` if already pending.
    pub fn insert(&mut self, leaf: Hash, entry: Vec<u8>) -> Result<bool, Rejected> {
        if entry.len() > self.max_entry_bytes {
            return Err(Rejected::TooLarge);
        }
        if self.live.contains_key(&leaf) {
            return Ok(false);
        }
        if self.live.len() >= self.max_entries || self.bytes + entry.len() > self.max_bytes {
            return Err(Rejected::Full);
        }
        debug_assert_eq!(leaf, merkle::leaf_hash(&entry));
        self.bytes += entry.len();
        self.live.insert(leaf, entry);
        self.order.push_back(leaf);
        Ok(true)
    }

    /// Drops entries that were committed.
    pub fn remove<'a>(&mut self, leaves: impl IntoIterator<Item = &'a Hash>) {
        for leaf in leaves {
            if let Some(entry) = self.live.remove(leaf) {
                self.bytes -= entry.len();
            }
        }
        while self
            .order
            .front()
            .is_some_and(|h| !self.live.contains_key(h))
        {
            self.order.pop_front();
        }
        // Stale hashes in the middle are skipped lazily; compact when they
        // dominate so memory stays proportional to the live entries.
        if self.order.len() > 2 * self.live.len() + 1024 {
            let live = &self.live;
            self.order.retain(|h| live.contains_key(h));
        }
    }

    /// The oldest pending entries not in `exclude`, at most `max_count`
    /// entries and `max_bytes` bytes.
    pub fn batch(
        &self,
        exclude: &DigestSet<Hash>,
        max_count: usize,
        max_bytes: usize,
    ) -> Vec<(Hash, Vec<u8>)> {
        let mut out = Vec::new();
        let mut bytes = 0;
        for leaf in &self.order {
            if out.len() == max_count {
                break;
            }
            let Some(entry) = self.live.get(leaf) else {
                continue;
            };
            if exclude.contains(leaf) {
                continue;
            }
            if bytes + entry.len() > max_bytes {
                break;
            }
            bytes += entry.len();
            out.push((*leaf, entry.clone()));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(i: u32) -> (Hash, Vec<u8>) {
        let entry = i.to_be_bytes().to_vec();
        (merkle::leaf_hash(&entry), entry)
    }

    #[test]
    fn dedups_bounds_and_batches_in_order() {
        let mut pool = Mempool::new(3, 100, 10);
        for i in 0..3 {
            let (h, v) = e(i);
            assert_eq!(pool.insert(h, v), Ok(true));
        }
        let (h, v) = e(1);
        assert_eq!(pool.insert(h, v), Ok(false));
        let (h, v) = e(9);
        assert_eq!(pool.insert(h, v), Err(Rejected::Full));
        assert_eq!(pool.insert(h, vec![0; 11]), Err(Rejected::TooLarge));
        let exclude: DigestSet<Hash> = [e(0).0].into_iter().collect();
        let batch = pool.batch(&exclude, 10, 100);
        assert_eq!(batch, vec![e(1), e(2)]);
        assert_eq!(pool.batch(&DigestSet::default(), 1, 100), vec![e(0)]);
        assert_eq!(pool.batch(&DigestSet::default(), 10, 5), vec![e(0)]);
        pool.remove([&e(0).0, &e(2).0]);
        assert_eq!(pool.len(), 1);
        assert_eq!(pool.bytes(), 4);
        let (h, v) = e(9);
        assert_eq!(pool.insert(h, v), Ok(true));
        assert_eq!(pool.batch(&DigestSet::default(), 10, 100), vec![e(1), e(9)]);
    }
}
