//! The invariants checked after every simulation step.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bftlog_spec::merkle::{self, Hash, MemoryTree};
use bftlog_spec::note::{KeyRing, KeyType, Note, VerifierKey};
use bftlog_spec::wire::{
    ConsensusMessage, Element32, NonceCommitment, ReplicaId, SignerCommitment,
};

use crate::{CheckpointEvent, Committed, Config};

/// A broken invariant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    /// An honest replica committed a different entry at an index.
    Fork { replica: ReplicaId, index: u64 },
    /// An honest replica committed a different block at a height (even
    /// one with the same entries).
    BlockFork { replica: ReplicaId, height: u64 },
    /// An honest replica's commits skipped or repeated indexes.
    Gap {
        replica: ReplicaId,
        expected_index: u64,
        got_index: u64,
    },
    /// A quorum checkpoint disagrees with the committed log.
    BadQuorumCheckpoint { size: u64, reason: String },
    /// An honest replica signed two roots for one size.
    TwoRoots { replica: ReplicaId, size: u64 },
    /// An honest replica voted for two blocks in one round.
    DoubleVote { replica: ReplicaId, round: u64 },
    /// An honest replica voted in a round it had timed out in (a QC and a
    /// TC for one round could then both form).
    VoteAfterTimeout { replica: ReplicaId, round: u64 },
    /// An honest leader proposed two blocks in one round.
    DoubleProposal { replica: ReplicaId, round: u64 },
    /// An honest replica refused to sign: its own commits contradicted
    /// what it signed before.
    SigningRefused { replica: ReplicaId, size: u64 },
    /// After the heal, entries submitted to honest replicas did not all
    /// commit in time.
    NotLive { missing: usize, committed: u64 },
    /// An honest replica held more than a stated bound allows (see
    /// [`crate::Footprint::check`]), or served sync beyond its rate.
    OverBound { replica: ReplicaId, what: String },
    /// An honest replica sent two different cluster-key shares made with
    /// one nonce (the commitment it names for itself): that nonce signed
    /// twice.
    NonceReuse { replica: ReplicaId, height: u64 },
    /// A quorum note carries a cluster signature that does not verify.
    BadClusterSignature { size: u64 },
    /// After the heal, a quorum checkpoint never carried the cluster
    /// signature.
    NoClusterSignature { size: u64 },
    /// After the heal, an honest replica did not catch up.
    Lagging {
        replica: ReplicaId,
        size: u64,
        log: u64,
    },
}

pub struct Checker {
    honest: BTreeSet<ReplicaId>,
    quorum: usize,
    keys: KeyRing,
    /// The reference log (leaf hashes) and its tree.
    log: Vec<Hash>,
    /// Committed block ids by height - 1.
    chain: Vec<Hash>,
    committed_set: BTreeSet<Hash>,
    tree: MemoryTree,
    /// Committed size per honest replica (back to its durable size on a
    /// restart).
    sizes: BTreeMap<ReplicaId, u64>,
    signed: BTreeMap<(ReplicaId, u64), Hash>,
    votes: BTreeMap<(ReplicaId, u64), Hash>,
    proposals: BTreeMap<(ReplicaId, u64), Hash>,
    timed_out: BTreeSet<(ReplicaId, u64)>,
    quorums: BTreeMap<u64, Hash>,
    /// Leaf hashes submitted, and whether an honest replica got them.
    submitted: BTreeMap<Hash, bool>,
    healed_at: Option<Duration>,
    violation: Option<Violation>,
    /// The cluster key, when the cluster has one.
    cluster_key: Option<(KeyRing, u32)>,
    /// Sizes whose quorum note carried a valid cluster signature.
    cluster_signed: BTreeSet<u64>,
    /// Whether every quorum checkpoint must end up carrying the cluster
    /// signature.
    expect_cluster_signature: bool,
    /// Each honest replica's cluster-key share per nonce it used (named
    /// by its commitment).
    shares: BTreeMap<(ReplicaId, NonceCommitment), SentShare>,
}

/// A share as an honest replica sent it: size, root, signing set, share.
type SentShare = (u64, Hash, Vec<SignerCommitment>, Element32);

impl Checker {
    pub fn new(cfg: &Config, honest: Vec<ReplicaId>) -> Self {
        let keys = KeyRing::from_keys(
            cfg.replicas
                .iter()
                .map(|k| VerifierKey::new(&cfg.origin, KeyType::Ed25519, *k).expect("valid")),
        )
        .expect("distinct keys");
        Checker {
            sizes: honest.iter().map(|id| (*id, 0)).collect(),
            honest: honest.into_iter().collect(),
            quorum: cfg.quorum(),
            keys,
            log: Vec::new(),
            chain: Vec::new(),
            committed_set: BTreeSet::new(),
            tree: MemoryTree::new(),
            signed: BTreeMap::new(),
            votes: BTreeMap::new(),
            proposals: BTreeMap::new(),
            timed_out: BTreeSet::new(),
            quorums: BTreeMap::new(),
            submitted: BTreeMap::new(),
            healed_at: None,
            violation: None,
            cluster_key: None,
            cluster_signed: BTreeSet::new(),
            expect_cluster_signature: false,
            shares: BTreeMap::new(),
        }
    }

    /// Checks cluster signatures against `key`; with `expect`, every
    /// quorum checkpoint must end up carrying one.
    pub fn with_cluster_key(mut self, key: VerifierKey, expect: bool) -> Self {
        let key_id = key.key_id();
        self.cluster_key = Some((KeyRing::from_keys([key]).expect("one key"), key_id));
        self.expect_cluster_signature = expect;
        self
    }

    /// Sizes whose quorum note carried the cluster signature.
    pub fn cluster_signed(&self) -> usize {
        self.cluster_signed.len()
    }

    /// Whether nothing more is owed: every quorum checkpoint, the whole
    /// log's among them, carries the cluster signature, if expected.
    pub fn cluster_done(&self) -> bool {
        self.unsigned_quorum().is_none()
    }

    /// A quorum checkpoint's size still without the cluster signature.
    fn unsigned_quorum(&self) -> Option<u64> {
        if !self.expect_cluster_signature || self.log.is_empty() {
            return None;
        }
        let whole = self.log.len() as u64;
        std::iter::once(whole)
            .chain(self.quorums.keys().copied())
            .find(|size| !self.cluster_signed.contains(size))
    }

    fn fail(&mut self, v: Violation) {
        if self.violation.is_none() {
            self.violation = Some(v);
        }
    }

    pub fn take_violation(&mut self) -> Option<Violation> {
        self.violation.take()
    }

    pub fn log_len(&self) -> u64 {
        self.log.len() as u64
    }

    pub fn submitted(&mut self, entry: &[u8], to_honest: bool) {
        let e = self
            .submitted
            .entry(merkle::leaf_hash(entry))
            .or_insert(false);
        *e |= to_honest;
    }

    /// Whether `entry` is in the committed log.
    pub fn is_committed(&self, entry: &[u8]) -> bool {
        self.committed_set.contains(&merkle::leaf_hash(entry))
    }

    /// An honest replica restarted with `size` entries committed durably:
    /// commits it lost in the crash come again and are checked again.
    pub fn restarted(&mut self, replica: ReplicaId, size: u64) {
        if let Some(s) = self.sizes.get_mut(&replica) {
            assert!(size <= *s, "a restart cannot add commits");
            *s = size;
        }
    }

    pub fn healed(&mut self, at: Duration) {
        self.healed_at.get_or_insert(at);
    }

    /// Invariant 1 (and acknowledged entries keep their index).
    pub fn committed(&mut self, replica: ReplicaId, c: &Committed) {
        let size = self.sizes.get(&replica).copied().unwrap_or(0);
        if c.first_index != size {
            return self.fail(Violation::Gap {
                replica,
                expected_index: size,
                got_index: c.first_index,
            });
        }
        match self.chain.get(c.height as usize - 1) {
            Some(id) if *id != c.block_id => {
                return self.fail(Violation::BlockFork {
                    replica,
                    height: c.height,
                });
            }
            Some(_) => {}
            None if c.height as usize == self.chain.len() + 1 => self.chain.push(c.block_id),
            None => {
                return self.fail(Violation::Gap {
                    replica,
                    expected_index: self.chain.len() as u64 + 1,
                    got_index: c.height,
                });
            }
        }
        for (i, entry) in c.block.entries.iter().enumerate() {
            let index = c.first_index + i as u64;
            let leaf = merkle::leaf_hash(entry);
            match self.log.get(index as usize) {
                Some(existing) if *existing != leaf => {
                    return self.fail(Violation::Fork { replica, index });
                }
                Some(_) => {}
                None => {
                    assert_eq!(index as usize, self.log.len());
                    self.log.push(leaf);
                    self.committed_set.insert(leaf);
                    self.tree.append(leaf);
                }
            }
        }
        self.sizes.insert(replica, c.size);
        let root = merkle::tree_root(c.size, &self.tree).expect("size within the log");
        if root != c.root {
            return self.fail(Violation::Fork {
                replica,
                index: c.size,
            });
        }
        // The stored hashes storage writes as they are: exactly the
        // reference tree's for these leaves.
        let positions: Vec<u64> =
            (merkle::stored_hash_count(c.first_index)..merkle::stored_hash_count(c.size)).collect();
        let expected = merkle::HashReader::read_hashes(&self.tree, &positions)
            .expect("positions within the log");
        if c.stored_hashes != expected {
            return self.fail(Violation::Fork {
                replica,
                index: c.first_index,
            });
        }
        self.check_quorums();
    }

    /// Invariant 3, checkpoints: never two roots for one size.
    pub fn over_bound(&mut self, replica: ReplicaId, what: String) {
        self.fail(Violation::OverBound { replica, what });
    }

    pub fn signed(&mut self, replica: ReplicaId, size: u64, root: Hash) {
        match self.signed.insert((replica, size), root) {
            Some(previous) if previous != root => self.fail(Violation::TwoRoots { replica, size }),
            _ => {}
        }
    }

    pub fn refused(&mut self, replica: ReplicaId, event: &CheckpointEvent) {
        if let CheckpointEvent::Refused { size, .. } = event {
            self.fail(Violation::SigningRefused {
                replica,
                size: *size,
            });
        }
    }

    /// Invariant 2: every quorum checkpoint carries ≥ quorum valid replica
    /// signatures and matches the committed log at its size.
    pub fn quorum(&mut self, size: u64, note: &Note) {
        let root = match bftlog_spec::checkpoint::Checkpoint::parse(note.text()) {
            Ok(cp) if cp.size == size => cp.root,
            _ => {
                return self.fail(Violation::BadQuorumCheckpoint {
                    size,
                    reason: "body does not parse or size differs".into(),
                });
            }
        };
        if let Some((ring, key_id)) = &self.cluster_key {
            if note.signatures().iter().any(|s| s.key_id == *key_id) {
                match note.verify(ring) {
                    Ok(v) if !v.signatures().is_empty() => {
                        self.cluster_signed.insert(size);
                    }
                    _ => return self.fail(Violation::BadClusterSignature { size }),
                }
            }
        }
        if let Some(known) = self.quorums.get(&size) {
            if *known != root {
                return self.fail(Violation::BadQuorumCheckpoint {
                    size,
                    reason: "two quorum checkpoints for one size".into(),
                });
            }
            return;
        }
        match note.verify(&self.keys) {
            Ok(v) if v.signatures().len() >= self.quorum => {}
            Ok(v) => {
                return self.fail(Violation::BadQuorumCheckpoint {
                    size,
                    reason: format!(
                        "{} signatures, quorum {}",
                        v.signatures().len(),
                        self.quorum
                    ),
                });
            }
            Err(e) => {
                return self.fail(Violation::BadQuorumCheckpoint {
                    size,
                    reason: e.to_string(),
                });
            }
        }
        self.quorums.insert(size, root);
        self.check_quorums();
    }

    fn check_quorums(&mut self) {
        let len = self.log.len() as u64;
        let mut bad = None;
        for (size, root) in self.quorums.range(..=len) {
            let expected = merkle::tree_root(*size, &self.tree).expect("within the log");
            if expected != *root {
                bad = Some(*size);
                break;
            }
        }
        if let Some(size) = bad {
            self.fail(Violation::BadQuorumCheckpoint {
                size,
                reason: "root differs from the committed log's".into(),
            });
        }
    }

    /// Invariant 3, votes: an honest replica votes for one block per round
    /// (and, as leader, proposes one block per round).
    pub fn sent(&mut self, replica: ReplicaId, message: &ConsensusMessage) {
        if !self.honest.contains(&replica) {
            return;
        }
        match message {
            ConsensusMessage::Timeout { timeout } => {
                self.timed_out.insert((replica, timeout.round));
            }
            ConsensusMessage::Vote { vote } => {
                if self.timed_out.contains(&(replica, vote.round)) {
                    return self.fail(Violation::VoteAfterTimeout {
                        replica,
                        round: vote.round,
                    });
                }
                match self.votes.insert((replica, vote.round), vote.block_id) {
                    Some(previous) if previous != vote.block_id => {
                        self.fail(Violation::DoubleVote {
                            replica,
                            round: vote.round,
                        })
                    }
                    _ => {}
                }
            }
            ConsensusMessage::Proposal { block, .. } => {
                let id = crate::crypto::block_id(block);
                self.proposed(replica, block.round, id);
            }
            ConsensusMessage::ProposalLeaves { header, leaves, .. } => {
                let id = crate::crypto::block_id_from_header(header, leaves);
                self.proposed(replica, header.round, id);
            }
            ConsensusMessage::ThresholdShare {
                height,
                size,
                root,
                signers,
                share,
                ..
            } => {
                let Some(own) = signers.iter().find(|s| s.replica == replica) else {
                    return;
                };
                let sent = (*size, *root, signers.to_vec(), *share);
                match self.shares.insert((replica, own.commitment), sent.clone()) {
                    Some(previous) if previous != sent => self.fail(Violation::NonceReuse {
                        replica,
                        height: *height,
                    }),
                    _ => {}
                }
            }
            _ => {}
        }
    }

    /// An honest replica proposes at most one block per round.
    fn proposed(&mut self, replica: ReplicaId, round: u64, id: Hash) {
        match self.proposals.insert((replica, round), id) {
            Some(previous) if previous != id => {
                self.fail(Violation::DoubleProposal { replica, round })
            }
            _ => {}
        }
    }

    fn missing(&self) -> usize {
        self.submitted
            .iter()
            .filter(|(h, honest)| **honest && !self.committed_set.contains(*h))
            .count()
    }

    /// Everything submitted to an honest replica is committed everywhere.
    pub fn all_done(&self, _entries: usize) -> bool {
        self.missing() == 0 && self.sizes.values().all(|s| *s == self.log.len() as u64)
    }

    /// Invariant 4, at the end of the liveness window.
    pub fn check_liveness(&self, _entries: usize) -> Result<(), Violation> {
        let missing = self.missing();
        if missing > 0 {
            return Err(Violation::NotLive {
                missing,
                committed: self.log.len() as u64,
            });
        }
        for (replica, size) in &self.sizes {
            if *size != self.log.len() as u64 {
                return Err(Violation::Lagging {
                    replica: *replica,
                    size: *size,
                    log: self.log.len() as u64,
                });
            }
        }
        if let Some(size) = self.unsigned_quorum() {
            return Err(Violation::NoClusterSignature { size });
        }
        Ok(())
    }
}
