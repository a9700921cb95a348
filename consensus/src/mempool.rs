//! Entries waiting to be proposed: de-duplicated by leaf hash, bounded by
//! count and bytes in all and per submitter, first in first out.
//!
//! Every entry is charged to whoever put it here first: a client (through
//! this replica's driver) or a peer (by forwarding it). Each holds at most
//! its share of the pool, so one client that floods appends, or one
//! Byzantine peer that forwards junk, fills its own share and gets
//! `ShareFull`, while everyone else's entries still get in; and as batches
//! are taken oldest first, a flooder's entries are at most its share of
//! what the leaders propose.

use std::collections::{HashMap, VecDeque};

use super::digest_hash::{DigestMap, DigestSet};
use crate::bugs::{Bug, active as bug};

use bftlog_spec::merkle::{self, Hash};
use bftlog_spec::wire::ReplicaId;

/// Who put an entry in the pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Submitter {
    /// A client of this replica, as its driver identifies it (by key or by
    /// address); opaque to the core.
    Client(ClientId),
    /// A peer that forwarded the entry.
    Peer(ReplicaId),
}

/// A driver's identity for a client: 16 bytes it derives from what it
/// admits clients by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(pub [u8; 16]);

/// Why an entry was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// The pool is full; try again later.
    Full,
    /// The submitter holds its whole share of the pool; try again later.
    ShareFull,
    /// Larger than a block may carry.
    TooLarge,
}

/// Most a single submitter may hold, in entries and bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share {
    pub entries: usize,
    pub bytes: usize,
}

/// What one submitter holds now.
#[derive(Debug, Clone, Copy, Default)]
struct Held {
    entries: usize,
    bytes: usize,
}

pub struct Mempool {
    order: VecDeque<Hash>,
    live: DigestMap<Hash, (Vec<u8>, Submitter)>,
    /// Submitters holding at least one entry (so at most one row per entry).
    held: HashMap<Submitter, Held>,
    bytes: usize,
    max_entries: usize,
    max_bytes: usize,
    max_entry_bytes: usize,
    client_share: Share,
    peer_share: Share,
}

impl Mempool {
    /// A pool of at most `max_entries` and `max_bytes`, where one client
    /// holds at most `client_share` and one peer at most `peer_share`.
    pub fn new(
        max_entries: usize,
        max_bytes: usize,
        max_entry_bytes: usize,
        client_share: Share,
        peer_share: Share,
    ) -> Self {
        assert!(max_entries > 0 && max_bytes >= max_entry_bytes);
        for share in [client_share, peer_share] {
            assert!(share.entries > 0 && share.bytes >= max_entry_bytes);
        }
        Mempool {
            order: VecDeque::new(),
            live: DigestMap::default(),
            held: HashMap::new(),
            bytes: 0,
            max_entries,
            max_bytes,
            max_entry_bytes,
            client_share,
            peer_share,
        }
    }

    /// Submitters holding entries now (one row each).
    pub fn submitters(&self) -> usize {
        self.held.len()
    }

    /// The most entries one peer holds, and the most one client holds.
    pub fn most_held(&self) -> (usize, usize) {
        let (mut peer, mut client) = (0, 0);
        for (by, held) in &self.held {
            match by {
                Submitter::Peer(_) => peer = peer.max(held.entries),
                Submitter::Client(_) => client = client.max(held.entries),
            }
        }
        (peer, client)
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
        self.live.get(leaf).map(|(entry, _)| entry)
    }

    /// Adds an entry charged to `by`. `Ok(true)` if new, `Ok(false)` if
    /// already pending (charged to whoever brought it first).
    pub fn insert(&mut self, by: Submitter, leaf: Hash, entry: Vec<u8>) -> Result<bool, Rejected> {
        if entry.len() > self.max_entry_bytes {
            return Err(Rejected::TooLarge);
        }
        if self.live.contains_key(&leaf) {
            return Ok(false);
        }
        if self.live.len() >= self.max_entries || self.bytes + entry.len() > self.max_bytes {
            return Err(Rejected::Full);
        }
        let share = match by {
            Submitter::Client(_) => self.client_share,
            Submitter::Peer(_) => self.peer_share,
        };
        let held = self.held.get(&by).copied().unwrap_or_default();
        let over_share = held.entries >= share.entries || held.bytes + entry.len() > share.bytes;
        if over_share && !bug(Bug::NoMempoolShares) {
            return Err(Rejected::ShareFull);
        }
        debug_assert_eq!(leaf, merkle::leaf_hash(&entry));
        self.bytes += entry.len();
        let row = self.held.entry(by).or_default();
        row.entries += 1;
        row.bytes += entry.len();
        self.live.insert(leaf, (entry, by));
        self.order.push_back(leaf);
        Ok(true)
    }

    /// Drops entries that were committed.
    pub fn remove<'a>(&mut self, leaves: impl IntoIterator<Item = &'a Hash>) {
        for leaf in leaves {
            if let Some((entry, by)) = self.live.remove(leaf) {
                self.bytes -= entry.len();
                let row = self
                    .held
                    .get_mut(&by)
                    .expect("a live entry's submitter has a row");
                row.entries -= 1;
                row.bytes -= entry.len();
                if row.entries == 0 {
                    assert_eq!(row.bytes, 0, "a submitter's bytes follow its entries");
                    self.held.remove(&by);
                }
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
            let Some((entry, _)) = self.live.get(leaf) else {
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

    const ANYONE: Share = Share {
        entries: usize::MAX,
        bytes: usize::MAX,
    };
    const CLIENT: Submitter = Submitter::Client(ClientId([7; 16]));

    #[test]
    fn dedups_bounds_and_batches_in_order() {
        let mut pool = Mempool::new(3, 100, 10, ANYONE, ANYONE);
        for i in 0..3 {
            let (h, v) = e(i);
            assert_eq!(pool.insert(CLIENT, h, v), Ok(true));
        }
        let (h, v) = e(1);
        assert_eq!(pool.insert(CLIENT, h, v), Ok(false));
        let (h, v) = e(9);
        assert_eq!(pool.insert(CLIENT, h, v), Err(Rejected::Full));
        assert_eq!(pool.insert(CLIENT, h, vec![0; 11]), Err(Rejected::TooLarge));
        let exclude: DigestSet<Hash> = [e(0).0].into_iter().collect();
        let batch = pool.batch(&exclude, 10, 100);
        assert_eq!(batch, vec![e(1), e(2)]);
        assert_eq!(pool.batch(&DigestSet::default(), 1, 100), vec![e(0)]);
        assert_eq!(pool.batch(&DigestSet::default(), 10, 5), vec![e(0)]);
        pool.remove([&e(0).0, &e(2).0]);
        assert_eq!(pool.len(), 1);
        assert_eq!(pool.bytes(), 4);
        let (h, v) = e(9);
        assert_eq!(pool.insert(CLIENT, h, v), Ok(true));
        assert_eq!(pool.batch(&DigestSet::default(), 10, 100), vec![e(1), e(9)]);
    }

    /// A client or peer that fills its share is refused while the others
    /// still get in; what it held is released as its entries commit.
    #[test]
    fn one_submitter_fills_only_its_share() {
        let client_share = Share {
            entries: 2,
            bytes: 100,
        };
        let peer_share = Share {
            entries: 3,
            bytes: 10,
        };
        let mut pool = Mempool::new(100, 1000, 4, client_share, peer_share);
        let flooder = Submitter::Client(ClientId([1; 16]));
        let other = Submitter::Client(ClientId([2; 16]));
        let peer = Submitter::Peer(3);
        assert_eq!(pool.insert(flooder, e(0).0, e(0).1), Ok(true));
        assert_eq!(pool.insert(flooder, e(1).0, e(1).1), Ok(true));
        assert_eq!(
            pool.insert(flooder, e(2).0, e(2).1),
            Err(Rejected::ShareFull)
        );
        // An entry already pending is not charged again, to anyone.
        assert_eq!(pool.insert(other, e(1).0, e(1).1), Ok(false));
        assert_eq!(pool.insert(other, e(2).0, e(2).1), Ok(true));
        // A peer's share is in bytes too: two 4-byte entries fit in 10.
        assert_eq!(pool.insert(peer, e(3).0, e(3).1), Ok(true));
        assert_eq!(pool.insert(peer, e(4).0, e(4).1), Ok(true));
        assert_eq!(pool.insert(peer, e(5).0, e(5).1), Err(Rejected::ShareFull));
        assert_eq!(pool.submitters(), 3);
        // Committing the flooder's entries frees its share, and its row.
        pool.remove([&e(0).0, &e(1).0]);
        assert_eq!(pool.submitters(), 2);
        assert_eq!(pool.insert(flooder, e(6).0, e(6).1), Ok(true));
        pool.remove([&e(2).0, &e(3).0, &e(4).0, &e(6).0]);
        assert_eq!(pool.submitters(), 0);
        assert!(pool.is_empty() && pool.bytes() == 0);
    }
}
