//! The consensus harnesses: replicas of the sans-IO core driven by fuzz
//! input. `consensus_core` runs the first two modes (its first input byte
//! picks one); `consensus_sim` runs the third, which is a thousand times
//! slower per input and would otherwise starve the other two.
//!
//! - [`adversary`]: one honest replica whose peers are all controlled by
//!   the input. They send arbitrary wire bytes, replays, and messages that
//!   are validly signed with the peers' keys (proposals, votes, timeouts,
//!   quorum and timeout certificates, checkpoint signatures, sync
//!   responses), interleaved with timers, write acknowledgements, client
//!   submissions and crash-restarts. The peers never have the replica's
//!   own key. The replica must never panic, and its own conduct must stay
//!   safe whatever the others do: votes, timeouts and checkpoint signatures
//!   leave only once durable, one vote per round (across restarts), no vote
//!   in a round it timed out in, never two roots for one size, commits that
//!   extend each other, and quorum checkpoints that really carry a quorum
//!   of valid signatures.
//! - [`cluster`]: four honest replicas with a cluster key (nonce batches
//!   of 2, so starting costs little); the input is the schedule (which
//!   message is delivered, dropped or duplicated, whose timer fires, whose
//!   write completes, who crashes). Besides the checks above, the
//!   simulator's [`Checker`] must see no safety violation: committed logs
//!   are prefixes of one another, quorum checkpoints match them, no
//!   replica proposes twice in a round, no nonce signs two messages, and
//!   every cluster signature verifies; a leader's proposal leaves only
//!   once its vote in the round before is durable (its own vote for it, in
//!   round 1). Liveness is not checked: the schedule may be unfair.
//! - [`simulate`]: the simulator itself, with its seed and fault plan (delays,
//!   loss, duplication, partitions, crashes, Byzantine replicas within f)
//!   taken from the input, each within the ranges `Scenario::from_seed`
//!   draws from; the run, liveness included, must pass.

mod adversary;
mod cluster;
mod simulate;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::LazyLock;
use std::time::Duration;

use bftlog_consensus::crypto::{self, Signer};
use bftlog_consensus::sim::{ALL_BEHAVIOURS, Checker, Scenario, Sim};
use bftlog_consensus::threshold::{ClusterShare, NonceSecret};
use bftlog_consensus::{
    CheckpointEvent, ClientId, Config, Outgoing, PersistRequest, Recovered, Replica, SafetyState,
    Target,
};
use bftlog_spec::checkpoint::Checkpoint;
use bftlog_spec::merkle::{self, CompactRange, Hash};
use bftlog_spec::note::{KeyRing, KeyType, SignerKey, VerifierKey};
use bftlog_spec::wire::{
    self, Block, BoundedVec, ConsensusMessage, Entry, QuorumCert, ReplicaId, ReplicaSignature,
    Signature64, Timeout, TimeoutCert, TimeoutSignature, Vote,
};
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::{Input, ORIGIN, REPLICAS, replica_note_key, replica_signing_key};

/// How far a run got (the corpus generator keeps the inputs that get
/// furthest).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Progress {
    pub quorum_checkpoints: u64,
    pub commits: u64,
    pub max_round: u64,
}

/// Runs one `consensus_core` input: the first byte picks the mode.
pub fn run(data: &[u8]) -> Progress {
    let mut input = Input::new(data);
    if input.u8().is_multiple_of(2) {
        adversary(&mut input)
    } else {
        cluster(&mut input)
    }
}

static CONFIG: LazyLock<Config> = LazyLock::new(make_config);
/// The cluster key of mode 1, dealt once.
static CLUSTER_SHARES: LazyLock<Vec<ClusterShare>> = LazyLock::new(|| {
    bftlog_consensus::threshold::deal(
        REPLICAS as u16,
        CONFIG.quorum() as u16,
        &mut StdRng::seed_from_u64(0xc1a5),
    )
    .expect("a valid threshold")
});
static KEYS: LazyLock<KeyRing> = LazyLock::new(|| replica_keyring(&CONFIG));

/// The cluster the core runs in: small limits, so pruning, windows,
/// backoff caps and full mempools are reached by short inputs.
pub fn config() -> Config {
    CONFIG.clone()
}

pub(super) fn make_config() -> Config {
    let mut cfg = Config::new(
        1,
        ORIGIN,
        (0..REPLICAS)
            .map(|i| replica_signing_key(i).verifying_key())
            .collect(),
    );
    cfg.round_timeout_ms = 100;
    cfg.max_round_timeout_ms = 800;
    cfg.max_block_entries = 4;
    cfg.max_block_bytes = 1024;
    cfg.max_entry_bytes = 256;
    cfg.mempool_max_entries = 16;
    cfg.mempool_max_bytes = 4096;
    cfg.retain_committed_blocks = 6;
    cfg.dedup_window_entries = 16;
    cfg.sync_batch_blocks = 3;
    cfg.status_interval_ms = 500;
    cfg.sync_timeout_ms = 300;
    cfg
}

/// Replica `id`'s configuration in mode 1: [`config`] with its share of
/// the cluster key.
pub(super) fn cluster_config(id: ReplicaId) -> Config {
    let mut cfg = config();
    cfg.cluster_share = Some(CLUSTER_SHARES[id as usize].clone());
    cfg.cluster_nonce_batch_heights = 2;
    cfg.cluster_recovery_ms = 200;
    cfg
}

/// The cluster key of mode 1.
pub(super) fn cluster_verifier() -> VerifierKey {
    let key = CLUSTER_SHARES[0].verifying_key().expect("a valid key");
    VerifierKey::new(ORIGIN, KeyType::Ed25519, key).expect("a valid origin")
}

pub(super) fn replica_keyring(cfg: &Config) -> KeyRing {
    KeyRing::from_keys(
        cfg.replicas
            .iter()
            .map(|k| VerifierKey::new(ORIGIN, KeyType::Ed25519, *k).expect("valid key")),
    )
    .expect("distinct keys")
}

/// One simulated process: a replica plus what its disk holds.
struct Process {
    id: ReplicaId,
    cfg: Config,
    replica: Replica<StdRng>,
    /// Writes requested and not yet durable, oldest first.
    unacked: VecDeque<PersistRequest>,
    durable_safety: SafetyState,
    durable_voted: BTreeMap<u64, Vec<Block>>,
    /// Cluster-key nonces that are durable, by height.
    durable_nonces: BTreeMap<u64, NonceSecret>,
    /// Committed blocks that are durable.
    committed: Vec<Block>,
    /// Commits not durable yet, each with the token of the write that
    /// makes it durable: the write of its own step, or else the next one.
    /// The driver stores a step's commits in that step's transaction and
    /// flushes it only if it holds safety state or voted blocks, so a
    /// crash loses commits no flushed write has covered (as in the
    /// simulator). Lost in a crash. Mode 1 only; see [`Process::drain`].
    pending_commits: Vec<(u64, Block)>,
    /// The token of this incarnation's latest write request.
    last_token: u64,
    restarts: u64,
    quorums: u64,
}

impl Process {
    pub(super) fn new(cfg: &Config, id: ReplicaId, now: Duration) -> Self {
        let durable_safety = SafetyState::genesis(cfg.epoch);
        let replica = start(
            cfg,
            id,
            Disk {
                safety: &durable_safety,
                voted: &BTreeMap::new(),
                nonces: &BTreeMap::new(),
                committed: &[],
            },
            0,
            now,
        );
        Process {
            id,
            cfg: cfg.clone(),
            replica,
            unacked: VecDeque::new(),
            durable_safety,
            durable_voted: BTreeMap::new(),
            durable_nonces: BTreeMap::new(),
            committed: Vec::new(),
            pending_commits: Vec::new(),
            last_token: 0,
            restarts: 0,
            quorums: 0,
        }
    }

    /// Crash (unacknowledged writes and the commits they would have made
    /// durable are lost) and restart from disk. The checker learns the
    /// durable log's size: lost commits come again and are checked again.
    pub(super) fn restart(&mut self, now: Duration, checker: &mut Checker) {
        self.unacked.clear();
        self.pending_commits.clear();
        self.last_token = 0;
        self.restarts += 1;
        let durable_size: usize = self.committed.iter().map(|b| b.entries.len()).sum();
        checker.restarted(self.id, durable_size as u64);
        self.replica = start(
            &self.cfg,
            self.id,
            Disk {
                safety: &self.durable_safety,
                voted: &self.durable_voted,
                nonces: &self.durable_nonces,
                committed: &self.committed,
            },
            self.restarts,
            now,
        );
    }

    /// The oldest outstanding write completes.
    pub(super) fn ack_one(&mut self) {
        if let Some(p) = self.unacked.pop_front() {
            self.durable_nonces.extend(p.nonces);
            // The store drops nonces its last share retired.
            let used_through = p.state.last_share.as_ref().map_or(0, |s| s.height);
            self.durable_nonces = self.durable_nonces.split_off(&(used_through + 1));
            self.durable_safety = p.state;
            for (_, b) in p.blocks {
                self.durable_voted
                    .entry(b.round)
                    .or_default()
                    .push(Block::clone(&b));
            }
            let durable = self
                .pending_commits
                .iter()
                .take_while(|(token, _)| *token <= p.token)
                .count();
            for (_, block) in self.pending_commits.drain(..durable) {
                // The store drops the voted blocks its commits settle.
                self.durable_voted = self.durable_voted.split_off(&(block.round + 1));
                self.committed.push(block);
            }
            self.replica.handle_persisted(p.token);
        }
    }

    pub(super) fn progress(&self) -> Progress {
        Progress {
            quorum_checkpoints: self.quorums,
            commits: self.committed.len() as u64,
            max_round: self.replica.round(),
        }
    }

    pub(super) fn ack_all(&mut self) {
        while !self.unacked.is_empty() {
            self.ack_one();
        }
    }

    /// Drains the replica's outputs, checking its conduct, and returns what
    /// it sends. With `honest_peers` false (mode 0), the checks are only
    /// those no set of peers can defeat: see [`Process::check_durable`].
    pub(super) fn drain(
        &mut self,
        checker: &mut Checker,
        keys: &KeyRing,
        quorum: usize,
        honest_peers: bool,
    ) -> Vec<Outgoing> {
        // Writes are acknowledged later (`ack_one`), so one step holds
        // everything this input produced.
        let step = self.replica.poll_step();
        // This step's write request, if it made one: its commits share
        // that transaction.
        let mut step_write = None;
        for p in step.persist {
            step_write = Some(p.token);
            self.last_token = p.token;
            self.unacked.push_back(p);
        }
        for c in step.commits {
            if honest_peers {
                let durable_with = step_write.unwrap_or(self.last_token + 1);
                self.pending_commits
                    .push((durable_with, Block::clone(&c.block)));
            } else {
                // Hostile peers holding a quorum of keys could certify
                // a different block at the height of a commit lost in
                // a crash; the replica signed nothing for the lost one
                // (a checkpoint signature is flushed, and the flush
                // covers the commits before it), so that would be the
                // peers' doing, not a fault of its own. Commits are
                // durable at once here, and the checker can keep
                // holding the replica to a single chain.
                self.committed.push(Block::clone(&c.block));
                self.durable_voted = self.durable_voted.split_off(&(c.block.round + 1));
            }
            checker.committed(self.id, &c);
        }
        for event in step.checkpoints {
            match &event {
                CheckpointEvent::Signed { size, root } => checker.signed(self.id, *size, *root),
                CheckpointEvent::Refused { .. } => checker.refused(self.id, &event),
                CheckpointEvent::Quorum { size, note } => {
                    let cp = Checkpoint::parse(note.text()).expect("quorum note is a checkpoint");
                    assert_eq!(cp.size, *size, "quorum note for another size");
                    assert_eq!(cp.origin, ORIGIN, "quorum note for another origin");
                    let verified = note.verify(keys).expect("quorum note verifies");
                    assert!(
                        verified.signatures().len() >= quorum,
                        "quorum note with {} valid signatures",
                        verified.signatures().len()
                    );
                    // Peers holding a quorum of keys can sign any root;
                    // with honest peers it must match the committed log.
                    if honest_peers {
                        checker.quorum(*size, note);
                    }
                    self.quorums += 1;
                }
                CheckpointEvent::ClusterSigned { size, root, line } => {
                    let share = self
                        .cfg
                        .cluster_share
                        .as_ref()
                        .expect("only a replica with a share signs");
                    let key = share.verifying_key().expect("a valid key");
                    let text = Checkpoint::new(ORIGIN, *size, *root).format();
                    let signature = ed25519_dalek::Signature::from_bytes(
                        &line.signature.clone().try_into().expect("64 bytes"),
                    );
                    // Peers holding a quorum of keys (mode 0 has no
                    // cluster key) cannot make one; honest ones must not
                    // make a bad one.
                    key.verify_strict(text.as_bytes(), &signature)
                        .expect("a cluster signature verifies strictly");
                }
            }
        }
        let mut sent = Vec::with_capacity(step.sends.len());
        for out in step.sends {
            self.check_durable(&out.message, honest_peers);
            let own_conduct = matches!(
                out.message,
                ConsensusMessage::Vote { .. } | ConsensusMessage::Timeout { .. }
            );
            if honest_peers || own_conduct {
                checker.sent(self.id, &out.message);
            }
            sent.push(out);
        }
        sent
    }

    /// Persist before speak: what a message commits the sender to is on
    /// disk before the message leaves.
    ///
    /// A leader's proposal may leave before its own vote for it is durable,
    /// but not before its last-voted round is the round before (round 1:
    /// its own vote); with the restart rule that keeps a restarted leader
    /// from proposing twice in a round. Peers that
    /// hold a quorum of keys can forge a certificate the leader builds on
    /// and then refuses to vote for (a QC whose round is not its block's),
    /// so that check, and the single-proposal check, need honest peers.
    pub(super) fn check_durable(&self, message: &ConsensusMessage, honest_peers: bool) {
        let safety = &self.durable_safety;
        match message {
            ConsensusMessage::Vote { vote } => assert!(
                safety.last_voted_round >= vote.round && safety.last_vote_round >= vote.round,
                "vote for round {} left before it was durable ({:?})",
                vote.round,
                safety.last_voted_round
            ),
            ConsensusMessage::Timeout { timeout } => assert!(
                safety.last_voted_round >= timeout.round,
                "timeout for round {} left before it was durable",
                timeout.round
            ),
            ConsensusMessage::ProposalLeaves { header, .. } if honest_peers => assert!(
                safety.last_voted_round + 1 >= header.round
                    && (header.round > 1 || safety.last_voted_round >= 1),
                "proposal for round {} left with last-voted round {} durable",
                header.round,
                safety.last_voted_round
            ),
            ConsensusMessage::CheckpointSignature { size, .. } => assert!(
                safety.last_signed.is_some_and(|(s, _)| s >= *size),
                "checkpoint signature for size {size} left before it was durable"
            ),
            _ => {}
        }
    }
}

/// What a process's disk holds when it starts.
pub(super) struct Disk<'a> {
    safety: &'a SafetyState,
    voted: &'a BTreeMap<u64, Vec<Block>>,
    nonces: &'a BTreeMap<u64, NonceSecret>,
    committed: &'a [Block],
}

pub(super) fn start(
    cfg: &Config,
    id: ReplicaId,
    disk: Disk,
    incarnation: u64,
    now: Duration,
) -> Replica<StdRng> {
    let Disk {
        safety,
        voted,
        nonces,
        committed,
    } = disk;
    let mut tree = CompactRange::new();
    let mut recent_checkpoints = Vec::new();
    for (i, b) in committed.iter().enumerate() {
        for e in b.entries.iter() {
            tree.append(merkle::leaf_hash(e));
        }
        if !b.entries.is_empty() {
            recent_checkpoints.push((i as u64 + 1, tree.size(), tree.root()));
        }
    }
    let recovered = Recovered {
        safety: safety.clone(),
        tree,
        committed_blocks: committed.to_vec(),
        first_height: 1,
        voted_blocks: voted.values().flatten().cloned().collect(),
        nonces: nonces.iter().map(|(h, n)| (*h, n.clone())).collect(),
        recent_checkpoints,
    };
    Replica::new(
        cfg.clone(),
        id,
        replica_signing_key(id as usize),
        StdRng::seed_from_u64(incarnation * 64 + id as u64),
        recovered,
        now,
    )
    .expect("valid configuration and recovered state")
}

pub(super) fn entries_from(input: &mut Input, max: usize) -> Vec<Vec<u8>> {
    let count = input.below(max + 1);
    (0..count)
        .map(|_| {
            // Mostly from a small alphabet, so entries repeat (dedup paths).
            if input.bool() {
                format!("entry {}", input.u8() % 24).into_bytes()
            } else {
                input.bytes(40).to_vec()
            }
        })
        .collect()
}

pub(super) fn bounded_entries<const N: usize>(entries: Vec<Vec<u8>>) -> BoundedVec<Entry, N> {
    BoundedVec::new(
        entries
            .into_iter()
            .map(|e| Entry::new(e).expect("short entry"))
            .collect(),
    )
    .expect("few entries")
}

pub(super) fn push_bounded<T>(list: &mut Vec<T>, item: T, keep_first: usize, cap: usize) {
    if list.len() >= cap {
        list.remove(keep_first);
    }
    list.push(item);
}

pub use adversary::adversary;
pub use cluster::cluster;
pub use simulate::simulate;
