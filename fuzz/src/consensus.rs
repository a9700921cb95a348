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
//! - [`cluster`]: four honest replicas; the input is the schedule (which
//!   message is delivered, dropped or duplicated, whose timer fires, whose
//!   write completes, who crashes). Besides the checks above, the
//!   simulator's [`Checker`] must see no safety violation: committed logs
//!   are prefixes of one another, quorum checkpoints match them, and no
//!   replica proposes twice in a round; a leader's proposal leaves only once
//!   its vote in the round before is durable (its own vote for it, in
//!   round 1). Liveness is not checked: the schedule may be unfair.
//! - [`simulate`]: the simulator itself, with its seed and fault plan (delays,
//!   loss, duplication, partitions, crashes, Byzantine replicas within f)
//!   taken from the input, each within the ranges `Scenario::from_seed`
//!   draws from; the run, liveness included, must pass.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::LazyLock;
use std::time::Duration;

use bftlog_consensus::crypto::{self, Signer};
use bftlog_consensus::sim::{ALL_BEHAVIOURS, Checker, Scenario, Sim};
use bftlog_consensus::{
    CheckpointEvent, Config, Outgoing, PersistRequest, Recovered, Replica, SafetyState, Target,
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
static KEYS: LazyLock<KeyRing> = LazyLock::new(|| replica_keyring(&CONFIG));

/// The cluster the core runs in: small limits, so pruning, windows,
/// backoff caps and full mempools are reached by short inputs.
pub fn config() -> Config {
    CONFIG.clone()
}

fn make_config() -> Config {
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

fn replica_keyring(cfg: &Config) -> KeyRing {
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
    replica: Replica<StdRng>,
    /// Writes requested and not yet durable, oldest first.
    unacked: VecDeque<PersistRequest>,
    durable_safety: SafetyState,
    durable_voted: BTreeMap<u64, Vec<Block>>,
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
    fn new(cfg: &Config, id: ReplicaId, now: Duration) -> Self {
        let durable_safety = SafetyState::genesis(cfg.epoch);
        let replica = start(cfg, id, &durable_safety, &BTreeMap::new(), &[], 0, now);
        Process {
            id,
            replica,
            unacked: VecDeque::new(),
            durable_safety,
            durable_voted: BTreeMap::new(),
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
    fn restart(&mut self, cfg: &Config, now: Duration, checker: &mut Checker) {
        self.unacked.clear();
        self.pending_commits.clear();
        self.last_token = 0;
        self.restarts += 1;
        let durable_size: usize = self.committed.iter().map(|b| b.entries.len()).sum();
        checker.restarted(self.id, durable_size as u64);
        self.replica = start(
            cfg,
            self.id,
            &self.durable_safety,
            &self.durable_voted,
            &self.committed,
            self.restarts,
            now,
        );
    }

    /// The oldest outstanding write completes.
    fn ack_one(&mut self) {
        if let Some(p) = self.unacked.pop_front() {
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

    fn progress(&self) -> Progress {
        Progress {
            quorum_checkpoints: self.quorums,
            commits: self.committed.len() as u64,
            max_round: self.replica.round(),
        }
    }

    fn ack_all(&mut self) {
        while !self.unacked.is_empty() {
            self.ack_one();
        }
    }

    /// Drains the replica's outputs, checking its conduct, and returns what
    /// it sends. With `honest_peers` false (mode 0), the checks are only
    /// those no set of peers can defeat: see [`Process::check_durable`].
    fn drain(
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
    fn check_durable(&self, message: &ConsensusMessage, honest_peers: bool) {
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

fn start(
    cfg: &Config,
    id: ReplicaId,
    safety: &SafetyState,
    voted: &BTreeMap<u64, Vec<Block>>,
    committed: &[Block],
    incarnation: u64,
    now: Duration,
) -> Replica<StdRng> {
    let mut tree = CompactRange::new();
    for b in committed {
        for e in b.entries.iter() {
            tree.append(merkle::leaf_hash(e));
        }
    }
    let recovered = Recovered {
        safety: safety.clone(),
        tree,
        committed_blocks: committed.to_vec(),
        first_height: 1,
        voted_blocks: voted.values().flatten().cloned().collect(),
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

fn entries_from(input: &mut Input, max: usize) -> Vec<Vec<u8>> {
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

fn bounded_entries<const N: usize>(entries: Vec<Vec<u8>>) -> BoundedVec<Entry, N> {
    BoundedVec::new(
        entries
            .into_iter()
            .map(|e| Entry::new(e).expect("short entry"))
            .collect(),
    )
    .expect("few entries")
}

fn push_bounded<T>(list: &mut Vec<T>, item: T, keep_first: usize, cap: usize) {
    if list.len() >= cap {
        list.remove(keep_first);
    }
    list.push(item);
}

// ---------------------------------------------------------------------------
// Mode 0: one honest replica, every peer hostile
// ---------------------------------------------------------------------------

struct Adversary {
    cfg: Config,
    me: ReplicaId,
    node: Process,
    now: Duration,
    signers: Vec<Signer>,
    note_keys: Vec<SignerKey>,
    keys: KeyRing,
    checker: Checker,
    /// Blocks seen or made, by id.
    blocks: Vec<Block>,
    by_id: HashMap<Hash, Block>,
    /// Certificates seen or made; the genesis QC stays first.
    qcs: Vec<QuorumCert>,
    tcs: Vec<TimeoutCert>,
    /// Messages the replica sent, to replay.
    seen: Vec<ConsensusMessage>,
    /// Checkpoints the replica computed.
    checkpoints: Vec<(u64, Hash)>,
}

/// Mode 0 (see the module docs).
pub fn adversary(input: &mut Input) -> Progress {
    let cfg = config();
    let me = input.below(REPLICAS) as ReplicaId;
    let now = Duration::from_millis(1);
    let node = Process::new(&cfg, me, now);
    let genesis = bftlog_consensus::genesis_qc(cfg.epoch);
    let mut a = Adversary {
        signers: (0..REPLICAS)
            .map(|i| Signer::new(replica_signing_key(i)))
            .collect(),
        note_keys: (0..REPLICAS).map(replica_note_key).collect(),
        keys: KEYS.clone(),
        checker: Checker::new(&cfg, vec![me]),
        cfg,
        me,
        node,
        now,
        blocks: Vec::new(),
        by_id: HashMap::new(),
        qcs: vec![genesis],
        tcs: Vec::new(),
        seen: Vec::new(),
        checkpoints: Vec::new(),
    };
    a.drain();
    let mut ops = 0;
    while !input.is_empty() && ops < 256 {
        ops += 1;
        a.step(input);
        a.drain();
        if let Some(v) = a.checker.take_violation() {
            panic!("replica {} broke an invariant: {v:?}", a.me);
        }
    }
    a.node.progress()
}

impl Adversary {
    fn n(&self) -> usize {
        self.cfg.n()
    }

    fn other(&self, input: &mut Input) -> ReplicaId {
        let k = 1 + input.below(self.n() - 1);
        ((self.me as usize + k) % self.n()) as ReplicaId
    }

    /// A round near the replica's, or anywhere.
    fn round(&self, input: &mut Input) -> u64 {
        let base = self.node.replica.round();
        match input.u8() % 16 {
            15 => input.size(),
            d => (base + d as u64 % 6).saturating_sub(2).max(1),
        }
    }

    fn pick<T: Clone>(input: &mut Input, list: &[T]) -> Option<T> {
        if list.is_empty() {
            return None;
        }
        // Biased to recent items.
        let back = if input.bool() {
            input.below(2)
        } else {
            input.below(list.len())
        };
        Some(list[list.len() - 1 - back.min(list.len() - 1)].clone())
    }

    fn learn_block(&mut self, block: &Block) {
        let id = crypto::block_id(block);
        if self.by_id.insert(id, block.clone()).is_none() {
            push_bounded(&mut self.blocks, block.clone(), 0, 48);
        }
        self.learn_qc(&block.justify);
    }

    fn learn_qc(&mut self, qc: &QuorumCert) {
        if qc.round > 0 && !self.qcs.contains(qc) {
            push_bounded(&mut self.qcs, qc.clone(), 1, 32);
        }
    }

    fn learn_tc(&mut self, tc: &TimeoutCert) {
        if !self.tcs.contains(tc) {
            push_bounded(&mut self.tcs, tc.clone(), 0, 16);
        }
        self.learn_qc(&tc.high_qc);
    }

    fn drain(&mut self) {
        let quorum = self.cfg.quorum();
        let sent = self
            .node
            .drain(&mut self.checker, &self.keys, quorum, false);
        for out in sent {
            match &out.message {
                ConsensusMessage::Proposal {
                    block,
                    timeout_cert,
                    ..
                } => {
                    self.learn_block(block);
                    if let Some(tc) = timeout_cert {
                        self.learn_tc(tc);
                    }
                }
                ConsensusMessage::Timeout { timeout } => self.learn_qc(&timeout.high_qc),
                ConsensusMessage::Certificates {
                    high_qc, high_tc, ..
                } => {
                    self.learn_qc(high_qc);
                    if let Some(tc) = high_tc {
                        self.learn_tc(tc);
                    }
                }
                ConsensusMessage::SyncResponse { blocks, commit_qc } => {
                    for b in blocks.iter() {
                        self.learn_block(b);
                    }
                    if let Some(qc) = commit_qc {
                        self.learn_qc(qc);
                    }
                }
                ConsensusMessage::CheckpointSignature { size, root, .. }
                    if !self.checkpoints.contains(&(*size, *root)) =>
                {
                    push_bounded(&mut self.checkpoints, (*size, *root), 0, 16);
                }
                _ => {}
            }
            push_bounded(&mut self.seen, out.message, 0, 32);
        }
    }

    fn deliver(&mut self, from: ReplicaId, message: ConsensusMessage) {
        self.node.replica.handle_message(self.now, from, message);
    }

    fn sign_vote(
        &self,
        signer: usize,
        round: u64,
        block_id: &Hash,
        parent_round: u64,
    ) -> Signature64 {
        self.signers[signer].sign(&crypto::vote_message(
            self.cfg.epoch,
            round,
            block_id,
            parent_round,
        ))
    }

    /// A certificate for `block`, signed by the replicas in `mask`.
    fn make_qc(&self, input: &mut Input, block: &Block) -> QuorumCert {
        let id = crypto::block_id(block);
        let mut round = block.round;
        let mut parent_round = block.justify.round;
        if input.u8() == 0xff {
            // Lie about what is certified (signatures still match).
            round = input.size();
            parent_round = input.size();
        }
        let mask = self.signer_mask(input);
        let signatures = (0..self.n())
            .filter(|i| mask & (1 << i) != 0)
            .map(|i| ReplicaSignature {
                replica: i as ReplicaId,
                signature: self.sign_vote(i, round, &id, parent_round),
            })
            .collect();
        let mut qc = QuorumCert {
            epoch: self.cfg.epoch,
            round,
            block_id: id,
            parent_round,
            signatures: BoundedVec::new(signatures).expect("≤ n"),
        };
        self.maybe_corrupt_qc(input, &mut qc);
        qc
    }

    /// Which peers sign: usually all of them (a quorum without us), never
    /// the replica under test, whose key the peers do not have.
    fn signer_mask(&self, input: &mut Input) -> u8 {
        let all = (1u8 << self.n()) - 1;
        let peers = all & !(1 << self.me);
        match input.u8() % 8 {
            0 => input.u8() & peers,
            _ => peers,
        }
    }

    fn maybe_corrupt_qc(&self, input: &mut Input, qc: &mut QuorumCert) {
        match input.u8() % 16 {
            0 if !qc.signatures.is_empty() => {
                let mut sigs = qc.signatures.clone().into_inner();
                let i = input.below(sigs.len());
                sigs[i].signature.0[input.below(64)] ^= 1 << (input.u8() % 8);
                qc.signatures = BoundedVec::new(sigs).expect("same length");
            }
            1 if !qc.signatures.is_empty() => {
                let mut sigs = qc.signatures.clone().into_inner();
                sigs.push(sigs[0].clone());
                qc.signatures = BoundedVec::new(sigs).expect("few");
            }
            2 => qc.epoch = qc.epoch.wrapping_add(1),
            _ => {}
        }
    }

    fn make_timeout(&self, sender: ReplicaId, round: u64, high_qc: QuorumCert) -> Timeout {
        let signature = self.signers[sender as usize].sign(&crypto::timeout_message(
            self.cfg.epoch,
            round,
            high_qc.round,
        ));
        Timeout {
            epoch: self.cfg.epoch,
            round,
            high_qc,
            sender,
            signature,
        }
    }

    fn make_tc(&self, input: &mut Input, round: u64) -> TimeoutCert {
        let mask = self.signer_mask(input);
        let mut high: Option<QuorumCert> = None;
        let mut signatures = Vec::new();
        for i in (0..self.n()).filter(|i| mask & (1 << i) != 0) {
            let qc = Self::pick(input, &self.qcs).expect("genesis at least");
            let signature =
                self.signers[i].sign(&crypto::timeout_message(self.cfg.epoch, round, qc.round));
            signatures.push(TimeoutSignature {
                replica: i as ReplicaId,
                high_qc_round: qc.round,
                signature,
            });
            if high.as_ref().is_none_or(|h| qc.round > h.round) {
                high = Some(qc);
            }
        }
        let mut high_qc = high.unwrap_or_else(|| self.qcs[0].clone());
        if input.u8() == 0xff {
            // A high QC that is not the highest the signers named.
            high_qc = Self::pick(input, &self.qcs).expect("genesis at least");
        }
        TimeoutCert {
            epoch: self.cfg.epoch,
            round,
            high_qc,
            signatures: BoundedVec::new(signatures).expect("≤ n"),
        }
    }

    fn make_proposal(&mut self, input: &mut Input) -> (ReplicaId, ConsensusMessage) {
        let round = self.round(input);
        let mut author = self.cfg.leader(round);
        if input.u8() == 0xff {
            author = input.below(self.n()) as ReplicaId;
        }
        let justify = Self::pick(input, &self.qcs).expect("genesis at least");
        let parent_id = if input.u8() == 0xff {
            Self::pick(input, &self.blocks).map_or(Hash(input.hash()), |b| crypto::block_id(&b))
        } else {
            justify.block_id
        };
        let entries = entries_from(input, 4);
        let block = Block {
            epoch: self.cfg.epoch,
            round,
            author,
            parent_id,
            justify,
            entries: bounded_entries(entries),
        };
        let timeout_cert = if input.bool() {
            match self
                .tcs
                .iter()
                .rev()
                .find(|tc| tc.round.checked_add(1) == Some(round))
            {
                Some(tc) if input.bool() => Some(tc.clone()),
                _ => Self::pick(input, &self.tcs),
            }
        } else {
            None
        };
        let mut signature = self.signers[author as usize].sign(&crypto::proposal_message(
            self.cfg.epoch,
            &crypto::block_id(&block),
        ));
        if input.u8() == 0xff || author == self.me {
            // Peers cannot sign as the replica under test.
            signature.0[0] ^= 1;
        }
        self.learn_block(&block);
        let from = if author == self.me {
            self.other(input)
        } else {
            author
        };
        (
            from,
            ConsensusMessage::Proposal {
                block,
                timeout_cert,
                signature,
            },
        )
    }

    /// A chain of known blocks ending at a chosen one, oldest first.
    fn chain(&self, input: &mut Input) -> Vec<Block> {
        let Some(tip) = Self::pick(input, &self.blocks) else {
            return Vec::new();
        };
        let max = 1 + input.below(8);
        let mut chain = vec![tip];
        while chain.len() < max {
            let parent = chain.last().expect("non-empty").parent_id;
            match self.by_id.get(&parent) {
                Some(b) => chain.push(b.clone()),
                None => break,
            }
        }
        chain.reverse();
        if input.u8() == 0xff {
            chain.reverse();
        }
        chain
    }

    fn step(&mut self, input: &mut Input) {
        match input.u8() % 20 {
            // Arbitrary bytes through the wire decoder.
            0 => {
                let from = input.below(self.n() + 1) as ReplicaId;
                let bytes = input.bytes(600);
                if let Ok(message) = wire::decode::<ConsensusMessage>(bytes) {
                    self.deliver(from, message);
                }
            }
            // Replay something the replica sent, as if from a peer.
            1 => {
                if let Some(message) = Self::pick(input, &self.seen) {
                    let from = input.below(self.n()) as ReplicaId;
                    self.deliver(from, message);
                }
            }
            2 | 3 => {
                let (from, message) = self.make_proposal(input);
                self.deliver(from, message);
            }
            4 | 5 => {
                // Votes from peers for a known block.
                let Some(block) = Self::pick(input, &self.blocks) else {
                    return;
                };
                let id = crypto::block_id(&block);
                let mask = self.signer_mask(input);
                for voter in (0..self.n()).filter(|i| mask & (1 << i) != 0) {
                    let (round, parent_round) = if input.u8() == 0xff {
                        (input.size(), input.size())
                    } else {
                        (block.round, block.justify.round)
                    };
                    let vote = Vote {
                        epoch: self.cfg.epoch,
                        round,
                        block_id: id,
                        parent_round,
                        voter: voter as ReplicaId,
                        signature: self.sign_vote(voter, round, &id, parent_round),
                    };
                    self.deliver(voter as ReplicaId, ConsensusMessage::Vote { vote });
                }
            }
            6 => {
                // A certificate for a known block.
                let Some(block) = Self::pick(input, &self.blocks) else {
                    return;
                };
                let qc = self.make_qc(input, &block);
                self.learn_qc(&qc);
                let high_tc = if input.bool() {
                    Self::pick(input, &self.tcs)
                } else {
                    None
                };
                let from = self.other(input);
                let committed_height = input.size();
                self.deliver(
                    from,
                    ConsensusMessage::Certificates {
                        high_qc: qc,
                        high_tc,
                        committed_height,
                    },
                );
            }
            7 => {
                let sender = self.other(input);
                let round = self.round(input);
                let high_qc = Self::pick(input, &self.qcs).expect("genesis at least");
                let timeout = self.make_timeout(sender, round, high_qc);
                self.deliver(sender, ConsensusMessage::Timeout { timeout });
            }
            8 => {
                // Timeouts for one round from several peers.
                let round = self.round(input);
                let mask = self.signer_mask(input);
                for sender in (0..self.n() as ReplicaId).filter(|i| mask & (1 << i) != 0) {
                    if sender == self.me {
                        continue;
                    }
                    let high_qc = Self::pick(input, &self.qcs).expect("genesis at least");
                    let timeout = self.make_timeout(sender, round, high_qc);
                    self.deliver(sender, ConsensusMessage::Timeout { timeout });
                }
            }
            9 => {
                let round = self.round(input);
                let tc = self.make_tc(input, round);
                self.learn_tc(&tc);
                let from = self.other(input);
                let high_qc = Self::pick(input, &self.qcs).expect("genesis at least");
                let committed_height = input.size();
                self.deliver(
                    from,
                    ConsensusMessage::Certificates {
                        high_qc,
                        high_tc: Some(tc),
                        committed_height,
                    },
                );
            }
            10 => {
                let from = self.other(input);
                let (size, root) = match Self::pick(input, &self.checkpoints) {
                    Some(c) if input.bool() => c,
                    _ => (input.size(), Hash(input.hash())),
                };
                let replica = if input.u8() == 0xff {
                    input.below(self.n()) as ReplicaId
                } else {
                    from
                };
                let note_signature = match Checkpoint::new(ORIGIN, size, root).format() {
                    text if input.u8() != 0xff && replica != self.me => {
                        let sig = self.note_keys[replica as usize]
                            .sign_text(&text)
                            .expect("checkpoint text");
                        Signature64(sig.signature.try_into().expect("64 bytes"))
                    }
                    _ => Signature64([input.u8(); 64]),
                };
                self.deliver(
                    from,
                    ConsensusMessage::CheckpointSignature {
                        size,
                        root,
                        replica,
                        note_signature,
                    },
                );
            }
            11 => {
                let from = self.other(input);
                let from_height = if input.bool() {
                    input.size()
                } else {
                    self.node
                        .replica
                        .committed_height()
                        .saturating_sub(input.u8() as u64 % 8)
                };
                let max_blocks = input.u16();
                self.deliver(
                    from,
                    ConsensusMessage::SyncRequest {
                        from_height,
                        max_blocks,
                    },
                );
            }
            12 => {
                let from = self.other(input);
                let blocks = self.chain(input);
                let commit_qc = match input.u8() % 4 {
                    0 => None,
                    1 => Self::pick(input, &self.qcs),
                    _ => blocks.last().map(|b| self.make_qc(input, &b.clone())),
                };
                self.deliver(
                    from,
                    ConsensusMessage::SyncResponse {
                        blocks: BoundedVec::new(blocks).expect("≤ 8 blocks"),
                        commit_qc,
                    },
                );
            }
            13 => {
                let from = self.other(input);
                let entries = bounded_entries(entries_from(input, 6));
                self.deliver(from, ConsensusMessage::Forward { entries });
            }
            14 => {
                let entries = entries_from(input, 6);
                let now = self.now;
                self.node.replica.submit(now, entries);
            }
            15 => {
                // The replica's timer fires (or a spurious early call).
                if let Some(t) = self.node.replica.poll_timeout()
                    && input.u8() != 0xff
                {
                    self.now = self.now.max(t);
                }
                let now = self.now;
                self.node.replica.handle_timeout(now);
            }
            16 | 17 => {
                if input.bool() {
                    self.node.ack_all();
                } else {
                    self.node.ack_one();
                }
            }
            18 => {
                if input.u8().is_multiple_of(4) {
                    self.node.restart(&self.cfg, self.now, &mut self.checker);
                }
            }
            _ => {
                self.now += Duration::from_millis(input.u16() as u64);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Mode 1: honest cluster, fuzzer-chosen schedule
// ---------------------------------------------------------------------------

struct InFlight {
    to: usize,
    from: ReplicaId,
    message: ConsensusMessage,
}

/// Mode 1 (see the module docs).
pub fn cluster(input: &mut Input) -> Progress {
    let cfg = config();
    let keys: &KeyRing = &KEYS;
    let quorum = cfg.quorum();
    let mut now = Duration::from_millis(1);
    let mut nodes: Vec<Process> = (0..REPLICAS)
        .map(|i| Process::new(&cfg, i as ReplicaId, now))
        .collect();
    let mut checker = Checker::new(&cfg, (0..REPLICAS as ReplicaId).collect());
    let mut net: Vec<InFlight> = Vec::new();
    let flush =
        |nodes: &mut Vec<Process>, i: usize, checker: &mut Checker, net: &mut Vec<InFlight>| {
            for out in nodes[i].drain(checker, keys, quorum, true) {
                let from = nodes[i].id;
                let targets: Vec<usize> = match out.to {
                    Target::All => (0..REPLICAS).filter(|t| *t != i).collect(),
                    Target::One(t) => vec![t as usize],
                };
                for to in targets {
                    // A bounded network: beyond this, messages are lost.
                    if net.len() < 256 {
                        net.push(InFlight {
                            to,
                            from,
                            message: out.message.clone(),
                        });
                    }
                }
            }
        };
    for i in 0..REPLICAS {
        flush(&mut nodes, i, &mut checker, &mut net);
    }
    let mut ops = 0;
    while !input.is_empty() && ops < 512 {
        ops += 1;
        match input.u8() % 16 {
            0..=4 => {
                if !net.is_empty() {
                    let m = net.remove(input.below(net.len()));
                    nodes[m.to].replica.handle_message(now, m.from, m.message);
                    flush(&mut nodes, m.to, &mut checker, &mut net);
                }
            }
            5 => {
                if !net.is_empty() {
                    net.remove(input.below(net.len()));
                }
            }
            6 => {
                if !net.is_empty() && net.len() < 256 {
                    let m = &net[input.below(net.len())];
                    let copy = InFlight {
                        to: m.to,
                        from: m.from,
                        message: m.message.clone(),
                    };
                    net.push(copy);
                }
            }
            7 => {
                // Deliver everything in flight, in order.
                let batch: Vec<InFlight> = std::mem::take(&mut net);
                for m in batch {
                    nodes[m.to].replica.handle_message(now, m.from, m.message);
                    flush(&mut nodes, m.to, &mut checker, &mut net);
                }
            }
            8 | 9 => {
                let i = input.below(REPLICAS);
                if let Some(t) = nodes[i].replica.poll_timeout() {
                    now = now.max(t);
                }
                nodes[i].replica.handle_timeout(now);
                flush(&mut nodes, i, &mut checker, &mut net);
            }
            10 | 11 => {
                let i = input.below(REPLICAS);
                if input.bool() {
                    nodes[i].ack_all();
                } else {
                    nodes[i].ack_one();
                }
                flush(&mut nodes, i, &mut checker, &mut net);
            }
            12 => {
                for i in 0..REPLICAS {
                    nodes[i].ack_all();
                    flush(&mut nodes, i, &mut checker, &mut net);
                }
            }
            13 => {
                let i = input.below(REPLICAS);
                if input.u8().is_multiple_of(4) {
                    nodes[i].restart(&cfg, now, &mut checker);
                    net.retain(|m| m.to != i || input.bool());
                    flush(&mut nodes, i, &mut checker, &mut net);
                }
            }
            14 => {
                let entry = format!("entry {}", input.u8() % 32).into_bytes();
                checker.submitted(&entry, true);
                let i = input.below(REPLICAS);
                nodes[i].replica.submit(now, vec![entry]);
                flush(&mut nodes, i, &mut checker, &mut net);
            }
            _ => now += Duration::from_millis(input.u16() as u64 % 2000),
        }
        if let Some(v) = checker.take_violation() {
            panic!("honest cluster broke an invariant: {v:?}");
        }
    }
    nodes.iter().map(Process::progress).max().unwrap_or_default()
}

// ---------------------------------------------------------------------------
// Mode 2: the simulator with a fuzzer-chosen seed and fault plan
// ---------------------------------------------------------------------------

/// Mode 2, the `consensus_sim` target (see the module docs).
pub fn simulate(data: &[u8]) {
    let input = &mut Input::new(data);
    let seed = input.u64();
    let n = if input.u8().is_multiple_of(4) { 7 } else { 4 };
    let mut s = Scenario::from_seed(seed, n);
    let f = (n - 1) / 3;
    // Each knob within the range from_seed draws it from, so any failure
    // is one a random seed could hit.
    let byzantine = input.below(f + 1);
    s.byzantine = (0..byzantine)
        .map(|_| {
            (
                input.below(n) as ReplicaId,
                ALL_BEHAVIOURS[input.below(ALL_BEHAVIOURS.len())],
            )
        })
        .collect();
    s.byzantine.sort_by_key(|(id, _)| *id);
    s.byzantine.dedup_by_key(|(id, _)| *id);
    s.min_delay_ms = 1 + input.below(5) as u64;
    s.max_delay_ms = 10 + input.below(391) as u64;
    s.loss = (input.u8() % 16) as f64 / 100.0;
    s.duplicate = (input.u8() % 11) as f64 / 100.0;
    s.partitions = input.bool();
    s.crashes = input.bool();
    s.entries = 1 + input.below(12);
    s.heal_at_ms = 2_000 + input.below(2001) as u64;
    if let Err(failure) = Sim::new(s.clone()).run() {
        panic!("{failure}\nscenario: {s:?}");
    }
}
