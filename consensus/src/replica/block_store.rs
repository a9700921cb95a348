//! The uncommitted blocks a replica holds, indexed by id and by
//! (round, author), with their entry bytes counted.
//!
//! What may enter is decided by the rules in `voting` and `sync`: a
//! proposal only for a round at or below the replica's current round
//! (after its certificates are applied) and at most one per (round,
//! author); a synced block only when certified. Blocks leave once their
//! round is at or below the committed round. So the store spans the
//! rounds (committed round, current round], and [`crate::Footprint`]
//! reports what it holds.

use std::collections::HashMap;
use std::sync::Arc;

use bftlog_spec::merkle::Hash;
use bftlog_spec::wire::{Block, ReplicaId};

use crate::digest_hash::DigestMap;
use crate::entry_bytes;

pub(super) struct StoredBlock {
    pub(super) block: Arc<Block>,
    pub(super) height: u64,
    /// Leaf hashes of the block's entries.
    pub(super) leaves: Vec<Hash>,
}

#[derive(Default)]
pub(super) struct BlockStore {
    by_id: DigestMap<Hash, StoredBlock>,
    /// The block each (round, author) slot holds: a proposal for a taken
    /// slot is an equivocation, found without scanning every block.
    by_slot: HashMap<(u64, ReplicaId), Hash>,
    /// Entry bytes of all blocks held.
    entry_bytes: usize,
}

impl BlockStore {
    pub(super) fn get(&self, id: &Hash) -> Option<&StoredBlock> {
        self.by_id.get(id)
    }

    pub(super) fn contains_key(&self, id: &Hash) -> bool {
        self.by_id.contains_key(id)
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &StoredBlock> {
        self.by_id.values()
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&Hash, &StoredBlock)> {
        self.by_id.iter()
    }

    pub(super) fn len(&self) -> usize {
        self.by_id.len()
    }

    pub(super) fn entry_bytes(&self) -> usize {
        self.entry_bytes
    }

    /// Whether a block of `author` for `round` is held already.
    pub(super) fn slot_taken(&self, round: u64, author: ReplicaId) -> bool {
        self.by_slot.contains_key(&(round, author))
    }

    /// Keeps `stored` under `id` (a block already held stays as it is).
    pub(super) fn insert(&mut self, id: Hash, stored: StoredBlock) {
        if self.by_id.contains_key(&id) {
            return;
        }
        self.entry_bytes += entry_bytes(&stored.block);
        self.by_slot
            .insert((stored.block.round, stored.block.author), id);
        self.by_id.insert(id, stored);
    }

    /// Drops every block of a round at or below `round`.
    pub(super) fn prune_through(&mut self, round: u64) {
        let mut freed = 0;
        self.by_id.retain(|_, b| {
            let keep = b.block.round > round;
            if !keep {
                freed += entry_bytes(&b.block);
            }
            keep
        });
        self.entry_bytes -= freed;
        self.by_slot.retain(|(r, _), _| *r > round);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bftlog_spec::wire::{BoundedVec, Entry};

    fn block(round: u64, author: ReplicaId, entry: &[u8]) -> StoredBlock {
        let block = Block {
            epoch: 1,
            round,
            author,
            parent_id: Hash([0; 32]),
            justify: crate::genesis_qc(1),
            entries: BoundedVec::new(vec![Entry::new(entry.to_vec()).unwrap()]).unwrap(),
        };
        StoredBlock {
            block: Arc::new(block),
            height: round,
            leaves: vec![Hash([round as u8; 32])],
        }
    }

    #[test]
    fn counts_entry_bytes_and_slots_through_inserts_and_pruning() {
        let mut store = BlockStore::default();
        store.insert(Hash([1; 32]), block(1, 1, b"abc"));
        store.insert(Hash([2; 32]), block(2, 2, b"defgh"));
        // The same id again changes nothing.
        store.insert(Hash([2; 32]), block(2, 2, b"defgh"));
        assert_eq!((store.len(), store.entry_bytes()), (2, 8));
        assert!(store.slot_taken(1, 1) && store.slot_taken(2, 2));
        assert!(!store.slot_taken(1, 2));
        store.prune_through(1);
        assert_eq!((store.len(), store.entry_bytes()), (1, 5));
        assert!(!store.slot_taken(1, 1));
        assert!(store.get(&Hash([2; 32])).is_some());
    }
}
