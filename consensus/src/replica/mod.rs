//! [`Replica`]: one replica's consensus state machine. Its inputs, its
//! outputs and the persist-before-speak bookkeeping are here; the rules
//! live in the sub-modules, one topic each:
//!
//! - `voting`: proposals, the voting rule, votes and quorum certificates;
//! - `commit`: the 2-chain commit rule and the committed window;
//! - `pacemaker`: rounds, round timers, timeouts and timeout certificates;
//! - `entries`: entries forwarded between replicas and fetched by leaf hash;
//! - `checkpoints`: signing checkpoints after commit and assembling quorum notes;
//! - `sync`: state sync for replicas that fell behind.
//!
//! The protocol they implement is specified in spec/consensus.md.

mod block_store;
mod checkpoints;
mod cluster_combine;
mod cluster_recovery;
mod commit;
mod entries;
mod pacemaker;
pub(crate) mod sync;
#[cfg(test)]
mod tests;
mod threshold_signing;
mod voting;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use crate::digest_hash::{DigestMap, DigestSet};

use bftlog_spec::checkpoint::Checkpoint;
use bftlog_spec::merkle::{self, CompactRange, Hash};
use bftlog_spec::note::{KeyType, Note, NoteSignature, SignerKey, VerifierKey};
use bftlog_spec::wire::{
    self, Block, BoundedVec, ConsensusMessage, Entry, QuorumCert, ReplicaId, ReplicaSignature,
    Signature64, Timeout, TimeoutCert, TimeoutSignature, Vote,
};
use rand_core::CryptoRng;

use crate::bugs::{Bug, active as bug};
use crate::crypto::{self, Committee, Signer};
use crate::dedup_window::DedupWindow;
use crate::mempool::{self, ClientId, Mempool, Share, Submitter};
use crate::token_bucket::TokenBucket;
use crate::{
    CheckpointEvent, Committed, Config, Event, Footprint, MAX_BLOCK_BYTES, MAX_CLUSTER_REPLICAS,
    MAX_ROUND, MAX_ROUNDS_AHEAD, MAX_ROUNDS_AHEAD_PER_PEER, MIN_RETAINED_BLOCKS, Metrics, Outgoing,
    PersistRequest, Recovered, Rejection, SafetyState, Step, SubmitResult, Target, entry_bytes,
    genesis_qc,
};
use block_store::{BlockStore, StoredBlock};
pub use checkpoints::CHECKPOINT_ROWS_PER_SIGNER;
use checkpoints::CheckpointQuorum;
use pacemaker::Pacemaker;
use sync::SyncProgress;
use threshold_signing::ThresholdSigning;

/// The block with header `header` and these entries (all present).
fn with_entries(header: Block, entries: Vec<Option<Vec<u8>>>) -> Block {
    let entries = entries
        .into_iter()
        .map(|e| {
            Entry::new(e.expect("every entry present")).expect("bounded by the mempool or wire")
        })
        .collect();
    Block {
        entries: BoundedVec::new(entries).expect("as many as leaves, which are bounded"),
        ..header
    }
}

/// Whether every round (and checkpoint size) in `message` is within
/// [`MAX_ROUND`] (and the largest tree size).
fn in_range(message: &ConsensusMessage) -> bool {
    let qc_ok = |qc: &QuorumCert| qc.round <= MAX_ROUND && qc.parent_round <= MAX_ROUND;
    let tc_ok = |tc: &TimeoutCert| {
        tc.round <= MAX_ROUND
            && qc_ok(&tc.high_qc)
            && tc.signatures.iter().all(|s| s.high_qc_round <= MAX_ROUND)
    };
    let block_ok = |b: &Block| b.round <= MAX_ROUND && qc_ok(&b.justify);
    match message {
        ConsensusMessage::Proposal {
            block,
            timeout_cert,
            ..
        } => block_ok(block) && timeout_cert.as_ref().is_none_or(tc_ok),
        ConsensusMessage::ProposalLeaves {
            header,
            timeout_cert,
            ..
        } => block_ok(header) && timeout_cert.as_ref().is_none_or(tc_ok),
        ConsensusMessage::Vote { vote } => {
            vote.round <= MAX_ROUND && vote.parent_round <= MAX_ROUND
        }
        ConsensusMessage::Timeout { timeout } => {
            timeout.round <= MAX_ROUND && qc_ok(&timeout.high_qc)
        }
        ConsensusMessage::CheckpointSignature { size, .. }
        | ConsensusMessage::ThresholdShare { size, .. }
        | ConsensusMessage::RecoveryRequest { size, .. }
        | ConsensusMessage::ClusterSignature { size, .. } => *size <= merkle::MAX_STORED_TREE_SIZE,
        ConsensusMessage::NonceCommitments { .. } | ConsensusMessage::RecoveryCommitment { .. } => {
            true
        }
        ConsensusMessage::Forward { .. }
        | ConsensusMessage::SyncRequest { .. }
        | ConsensusMessage::EntryRequest { .. } => true,
        ConsensusMessage::SyncResponse { blocks, commit_qc } => {
            blocks.iter().all(block_ok) && commit_qc.as_ref().is_none_or(qc_ok)
        }
        ConsensusMessage::Certificates {
            high_qc, high_tc, ..
        } => qc_ok(high_qc) && high_tc.as_ref().is_none_or(tc_ok),
    }
}

/// Adds `item` to `slots`, replacing the one by the same author: one slot
/// per author bounds what peers can make a replica keep.
fn put_per_author<T>(slots: &mut Vec<T>, item: T, author: impl Fn(&T) -> ReplicaId) {
    let by = author(&item);
    slots.retain(|slot| author(slot) != by);
    slots.push(item);
}

/// A proposal waiting for its parent block.
struct WaitingProposal {
    block: Block,
    tc: Option<TimeoutCert>,
    signature: Signature64,
    from: ReplicaId,
}

/// A proposal by leaf hash waiting for entries this replica lacked.
struct PendingProposal {
    header: Block,
    leaves: Vec<Hash>,
    entries: Vec<Option<Vec<u8>>>,
    /// Leaf hash → position, for the entries still missing.
    missing: DigestMap<Hash, usize>,
    tc: Option<TimeoutCert>,
    signature: Signature64,
    from: ReplicaId,
}

/// Most entry bytes in one `Forward` answering an `EntryRequest` (well
/// under the message limit).
const ENTRY_ANSWER_MAX_BYTES: usize = 8 << 20;

/// A certified fact: a verified QC for it, and every vote signature on
/// it verified so far. A QC presented again is checked signature by
/// signature against them: a copy with its signatures stripped or
/// forged is refused like any invalid QC, not taken for the cached one.
struct Certified {
    qc: QuorumCert,
    verified: BTreeMap<ReplicaId, Signature64>,
}

/// A vote collection for one (round, block, parent round).
#[derive(Default)]
struct VoteSet {
    votes: BTreeMap<ReplicaId, Signature64>,
    /// Set once a certificate was formed (or failed with too few valid).
    done: bool,
}

/// One replica's consensus state machine.
pub struct Replica<R> {
    cfg: Config,
    id: ReplicaId,
    signer: Signer,
    committee: Committee,
    rng: R,
    now: Duration,

    safety: SafetyState,
    dirty: bool,
    persist_blocks: Vec<(Hash, Arc<Block>)>,
    persist_issued: u64,
    persist_done: u64,
    persist_out: Vec<PersistRequest>,
    /// `last_voted_round` in the latest state write issued: a proposal for
    /// the round after it may leave as soon as that write is durable,
    /// without waiting for the leader's own vote (see `maybe_propose`).
    issued_last_voted_round: u64,
    staging: Vec<Outgoing>,
    /// This input's messages that may leave before this input's write:
    /// forwarded entries (they depend on no state) and a proposal that
    /// relies only on earlier writes (`maybe_propose`), in that order.
    staging_early: Vec<Outgoing>,
    held: VecDeque<(u64, Outgoing)>,
    outbox: Vec<Outgoing>,
    commits: Vec<Committed>,
    checkpoint_events: Vec<CheckpointEvent>,
    events: Vec<Event>,
    /// The peer whose message is being handled: rejections name it.
    input_from: Option<ReplicaId>,

    pacemaker: Pacemaker,
    /// The highest round this replica proposed in, or may have proposed in
    /// before a restart (see `Replica::new`).
    proposed_round: u64,

    blocks: BlockStore,
    /// Proposals for the current round waiting for their parent (from
    /// sync, or a late proposal), at most one per author. Which replica
    /// leads a round depends on the parent, so until it arrives any
    /// replica's signed proposal on a valid QC may be the leader's: one
    /// slot for all would let a faulty replica's proposal push out the
    /// leader's (and two honest replicas with different high QCs may
    /// both lead the round).
    waiting_proposals: Vec<WaitingProposal>,
    /// Proposals by leaf hash whose missing entries were asked for, at
    /// most one per author (as `waiting_proposals`).
    pending_leaves: Vec<PendingProposal>,
    /// Certified (round, block id, parent round) facts already verified.
    certified: HashMap<(u64, Hash, u64), Certified>,
    votes: HashMap<(u64, Hash, u64), VoteSet>,
    /// Which block each replica voted for per round (equivocation check).
    voted_for: HashMap<(u64, ReplicaId), Hash>,

    committed_id: Hash,
    committed_round: u64,
    committed_height: u64,
    committed_window: VecDeque<(Hash, Arc<Block>)>,
    /// Entry bytes of the blocks in `committed_window`.
    committed_window_bytes: usize,
    /// Ids of the blocks in `committed_window`.
    committed_ids: DigestSet<Hash>,
    /// Height of `committed_window[0]`.
    window_first_height: u64,
    /// The highest block known to be committed but not yet applied
    /// (its ancestors are missing).
    commit_target: Option<(Hash, QuorumCert)>,
    /// The certified child and QC that committed the committed tip: what
    /// a lagging replica needs to commit the same tip after sync.
    commit_evidence: Option<(Arc<Block>, QuorumCert)>,
    tree: CompactRange,

    mempool: Mempool,
    /// Recently committed leaf hashes, to refuse an entry committed again.
    dedup: DedupWindow,
    checkpoints: CheckpointQuorum,
    /// Cluster-key signing, when the configuration has a share.
    threshold: Option<ThresholdSigning>,
    /// Nonces made since the last write, for the next one.
    persist_nonces: Vec<(u64, crate::threshold::NonceSecret)>,
    sync: SyncProgress,
    /// Per peer: the sync answer bytes it may still ask for.
    sync_serve: Vec<TokenBucket>,

    pub metrics: Metrics,
}

/// Why a configuration or recovered state was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetupError {
    #[error("a cluster needs at least one replica and at most {MAX_CLUSTER_REPLICAS} replicas")]
    Size,
    #[error("replica id {0} is not in the configuration")]
    UnknownId(ReplicaId),
    #[error("the signing key does not match replica {0}'s public key")]
    WrongKey(ReplicaId),
    #[error(transparent)]
    BadKey(#[from] crypto::BadKey),
    #[error("origin is not a valid note key name: {0}")]
    Origin(String),
    #[error("recovered committed blocks do not chain")]
    BrokenChain,
    #[error("the cluster key share: {0}")]
    ClusterKey(String),
}

impl<R: CryptoRng> Replica<R> {
    /// A replica starting (or restarting) from `recovered`.
    pub fn new(
        cfg: Config,
        id: ReplicaId,
        key: ed25519_dalek::SigningKey,
        rng: R,
        recovered: Recovered,
        now: Duration,
    ) -> Result<Self, SetupError> {
        if cfg.n() == 0 || cfg.n() > MAX_CLUSTER_REPLICAS {
            return Err(SetupError::Size);
        }
        let expected = cfg
            .replicas
            .get(id as usize)
            .ok_or(SetupError::UnknownId(id))?;
        if key.verifying_key() != *expected {
            return Err(SetupError::WrongKey(id));
        }
        let committee = Committee::new(&cfg.replicas)?;
        let checkpoints = CheckpointQuorum::new(&cfg, &key)?;
        let threshold = match &cfg.cluster_share {
            Some(share) => {
                share
                    .check_for(id, cfg.n(), cfg.quorum())
                    .map_err(|e| SetupError::ClusterKey(e.to_string()))?;
                if !(1..=crate::threshold::NONCE_BATCH_HEIGHTS)
                    .contains(&cfg.cluster_nonce_batch_heights)
                {
                    return Err(SetupError::ClusterKey(
                        "cluster_nonce_batch_heights must be 1 to 64".into(),
                    ));
                }
                Some(ThresholdSigning::new(share.clone(), cfg.n())?)
            }
            None => None,
        };
        // Chain check of the recovered committed blocks.
        let mut committed_id = crypto::genesis_id(cfg.epoch);
        let mut committed_round = 0;
        let mut window = VecDeque::new();
        for (i, b) in recovered.committed_blocks.into_iter().enumerate() {
            if (i > 0 || recovered.first_height == 1) && b.parent_id != committed_id {
                return Err(SetupError::BrokenChain);
            }
            committed_id = crypto::block_id(&b);
            committed_round = b.round;
            window.push_back((committed_id, Arc::new(b)));
        }
        let committed_height = recovered.first_height + window.len() as u64 - 1;
        let mut safety = recovered.safety;
        // What was durable, before the known-bug switch below hides part
        // of it (that switch must not also make early proposals repeat).
        let durable_last_voted_round = safety.last_voted_round;
        if bug(Bug::RecoverQcButNotTc) {
            // Known bug: the TC, and with it the round this replica timed
            // out in, is not recovered.
            safety.high_tc = None;
            safety.last_voted_round = safety.last_vote_round;
        }
        let round = safety
            .high_qc
            .round
            .max(safety.high_tc.as_ref().map_or(0, |tc| tc.round))
            + 1;
        let n = cfg.replicas.len();
        let mempool = Mempool::new(
            cfg.mempool_max_entries,
            cfg.mempool_max_bytes,
            cfg.max_entry_bytes,
            Share {
                entries: cfg.mempool_max_entries_per_client.max(1),
                bytes: cfg.mempool_max_bytes_per_client.max(cfg.max_entry_bytes),
            },
            Share {
                entries: (cfg.mempool_max_entries / n).max(1),
                bytes: (cfg.mempool_max_bytes / n).max(cfg.max_entry_bytes),
            },
        );
        // A restarted replica re-enters its round by its highest TC, so a
        // leader can still attach it to its proposal.
        let safety_tc = safety.high_tc.clone();
        let mut replica = Replica {
            id,
            signer: Signer::new(key),
            committee,
            rng,
            now,
            safety,
            dirty: false,
            persist_blocks: Vec::new(),
            persist_issued: 0,
            persist_done: 0,
            persist_out: Vec::new(),
            issued_last_voted_round: durable_last_voted_round,
            staging: Vec::new(),
            staging_early: Vec::new(),
            held: VecDeque::new(),
            outbox: Vec::new(),
            commits: Vec::new(),
            checkpoint_events: Vec::new(),
            events: Vec::new(),
            input_from: None,
            pacemaker: Pacemaker::new(&cfg, round, safety_tc, now),
            // A leader's proposal may leave before its write that records
            // the round (the proposal for `last_voted_round + 1`, see
            // `maybe_propose`), so after a restart that round may hold a
            // proposal this replica no longer knows: proposing in it again
            // would equivocate. Round 1 is never proposed early, so a
            // replica that never voted loses nothing.
            proposed_round: if durable_last_voted_round > 0 && !bug(Bug::ForgetEarlyProposal) {
                durable_last_voted_round + 1
            } else {
                0
            },
            blocks: BlockStore::default(),
            waiting_proposals: Vec::new(),
            pending_leaves: Vec::new(),
            certified: HashMap::new(),
            votes: HashMap::new(),
            voted_for: HashMap::new(),
            committed_id,
            committed_round,
            committed_height,
            committed_ids: window.iter().map(|(id, _)| *id).collect(),
            committed_window_bytes: window.iter().map(|(_, b)| entry_bytes(b)).sum(),
            committed_window: window,
            window_first_height: recovered.first_height,
            commit_target: None,
            commit_evidence: None,
            tree: recovered.tree,
            mempool,
            dedup: DedupWindow::new(cfg.dedup_window_entries),
            checkpoints,
            threshold,
            persist_nonces: Vec::new(),
            sync: SyncProgress::new(id),
            sync_serve: vec![
                TokenBucket::new(
                    cfg.sync_serve_bytes_per_s,
                    cfg.sync_serve_burst_bytes,
                    now
                );
                cfg.n()
            ],
            metrics: Metrics::default(),
            cfg,
        };
        let recovered_leaves: Vec<Hash> = replica
            .committed_window
            .iter()
            .flat_map(|(_, b)| b.entries.iter().map(|e| merkle::leaf_hash(e)))
            .collect();
        replica.remember_committed(&recovered_leaves);
        let mut voted = recovered.voted_blocks;
        voted.sort_by_key(|b| b.round);
        for block in voted {
            if block.epoch != replica.cfg.epoch || block.round <= replica.committed_round {
                continue;
            }
            let id = crypto::block_id(&block);
            if let Some(parent_height) = replica.height_of(&block.parent_id) {
                let leaves = block.entries.iter().map(|e| merkle::leaf_hash(e)).collect();
                replica.store_block(id, block, parent_height, leaves);
            }
        }
        replica.arm_timer();
        // Whether their cluster signature formed while this replica was
        // down is not known: each stays unsigned until it forms again or
        // a peer that has it answers the first recovery stage.
        let floor = replica
            .committed_height
            .saturating_sub(crate::threshold::RECOVERY_WINDOW_HEIGHTS);
        for (height, size, root) in recovered.recent_checkpoints {
            if height > floor && height <= replica.committed_height {
                replica.track_unsigned(height, size, root);
            }
        }
        replica.start_threshold_signing(recovered.nonces);
        replica.finish();
        Ok(replica)
    }

    pub fn id(&self) -> ReplicaId {
        self.id
    }

    pub fn round(&self) -> u64 {
        self.pacemaker.round()
    }

    pub fn safety(&self) -> &SafetyState {
        &self.safety
    }

    pub fn committed_height(&self) -> u64 {
        self.committed_height
    }

    /// Height of the oldest committed block held in memory to serve sync.
    /// A driver with storage answers requests for older heights itself.
    pub fn oldest_retained_height(&self) -> u64 {
        self.window_first_height
    }

    pub fn tree_size(&self) -> u64 {
        self.tree.size()
    }

    pub fn pending_entries(&self) -> usize {
        self.mempool.len()
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The sizes of what peers can make this replica hold, to check
    /// against [`Footprint::check`].
    pub fn footprint(&self) -> Footprint {
        let rounds = || self.blocks.values().map(|b| b.block.round);
        let stored_rounds = rounds().min().zip(rounds().max());
        let (mempool_most_by_one_peer, mempool_most_by_one_client) = self.mempool.most_held();
        let threshold_footprint = self
            .threshold
            .as_ref()
            .map_or((0, 0, 0), ThresholdSigning::footprint);
        Footprint {
            round: self.round(),
            committed_round: self.committed_round,
            stored_blocks: self.blocks.len(),
            stored_block_bytes: self.blocks.entry_bytes(),
            stored_rounds,
            waiting_proposals: self.waiting_proposals.len(),
            pending_proposals: self.pending_leaves.len(),
            most_vote_rounds_ahead: (0..self.cfg.n() as ReplicaId)
                .map(|peer| self.vote_rounds_ahead_kept(peer))
                .max()
                .unwrap_or(0),
            most_timeout_rounds_ahead: (0..self.cfg.n() as ReplicaId)
                .map(|peer| self.pacemaker.rounds_ahead_kept(peer))
                .max()
                .unwrap_or(0),
            most_checkpoint_rows: self.checkpoints.most_rows_of_one_signer(),
            most_commitment_heights: threshold_footprint.0,
            share_heights: threshold_footprint.1,
            unsigned_checkpoints: threshold_footprint.2,
            committed_window_blocks: self.committed_window.len(),
            committed_window_bytes: self.committed_window_bytes,
            mempool_entries: self.mempool.len(),
            mempool_bytes: self.mempool.bytes(),
            mempool_most_by_one_peer,
            mempool_most_by_one_client,
        }
    }

    /// A one-line summary of the replica's state, for diagnostics.
    pub fn describe(&self) -> String {
        format!(
            "replica {} round {} last_voted {} high_qc {} high_tc {:?} committed h{} r{} size {} mempool {} blocks {} deadline {:?} persisted {}/{} held {} target {:?} sync {:?}@{} requests {} {:?}",
            self.id,
            self.round(),
            self.safety.last_voted_round,
            self.safety.high_qc.round,
            self.safety.high_tc.as_ref().map(|t| t.round),
            self.committed_height,
            self.committed_round,
            self.tree.size(),
            self.mempool.len(),
            self.blocks.len(),
            self.pacemaker.round_deadline(),
            self.persist_done,
            self.persist_issued,
            self.held.len(),
            self.commit_target
                .as_ref()
                .map(|(_, qc)| (qc.round, qc.parent_round)),
            self.sync.deadline,
            self.sync.peer,
            self.metrics.sync_requests_sent,
            {
                let mut b: Vec<(u64, u64)> = self
                    .blocks
                    .values()
                    .map(|b| (b.block.round, b.height))
                    .collect();
                b.sort();
                b
            }
        ) + &self.describe_cluster_signing()
    }

    /// Entries from a client, charged to its share of the mempool.
    /// Accepted entries are forwarded to every replica so any future
    /// leader can propose them.
    pub fn submit(
        &mut self,
        now: Duration,
        client: ClientId,
        entries: Vec<Vec<u8>>,
    ) -> Vec<SubmitResult> {
        let hashed = entries
            .into_iter()
            .map(|e| (merkle::leaf_hash(&e), e))
            .collect();
        self.submit_hashed(now, client, hashed)
    }

    /// [`Replica::submit`] for a driver that already computed each entry's
    /// RFC 6962 leaf hash (to look it up in storage): `(leaf hash, entry)`
    /// pairs. The hashes are trusted, as the driver is.
    pub fn submit_hashed(
        &mut self,
        now: Duration,
        client: ClientId,
        entries: Vec<(Hash, Vec<u8>)>,
    ) -> Vec<SubmitResult> {
        self.now = now;
        let mut results = Vec::with_capacity(entries.len());
        let mut forward = Vec::new();
        for (leaf, entry) in entries {
            if self.dedup.contains(&leaf) {
                results.push(SubmitResult::AlreadyCommitted);
                continue;
            }
            let result = match self
                .mempool
                .insert(Submitter::Client(client), leaf, entry.clone())
            {
                Ok(true) => {
                    forward.push(entry);
                    SubmitResult::Accepted
                }
                Ok(false) => SubmitResult::AlreadyPending,
                Err(mempool::Rejected::TooLarge) => SubmitResult::TooLarge,
                Err(mempool::Rejected::Full) => SubmitResult::Overloaded {
                    retry_after_ms: self.cfg.round_timeout_ms,
                },
                Err(mempool::Rejected::ShareFull) => SubmitResult::OverShare {
                    retry_after_ms: self.cfg.round_timeout_ms,
                },
            };
            results.push(result);
        }
        // The mempool keeps one copy; the Forward messages take the other.
        let mut forward = forward.into_iter().peekable();
        while forward.peek().is_some() {
            let entries = forward
                .by_ref()
                .take(wire::MAX_APPEND_ENTRIES)
                .map(|e| Entry::new(e).expect("size checked by the mempool"))
                .collect();
            // Ahead of this input's write, and of a proposal naming these
            // entries: followers that lacked them would otherwise ask the
            // leader for them.
            self.staging_early.push(Outgoing {
                to: Target::All,
                message: ConsensusMessage::Forward {
                    entries: BoundedVec::new(entries).expect("chunked"),
                },
            });
        }
        self.arm_timer();
        self.maybe_propose();
        self.finish();
        results
    }

    /// A message from replica `from` (authenticated by the transport).
    pub fn handle_message(&mut self, now: Duration, from: ReplicaId, message: ConsensusMessage) {
        self.now = now;
        // A replica never sends to itself: its own proposals and votes are
        // handled directly.
        if (from as usize) >= self.cfg.n() || from == self.id || !in_range(&message) {
            self.reject_from(from, Rejection::Malformed);
            return;
        }
        self.input_from = Some(from);
        match message {
            ConsensusMessage::Proposal {
                block,
                timeout_cert,
                signature,
            } => self.on_proposal(from, block, timeout_cert, signature),
            ConsensusMessage::ProposalLeaves {
                header,
                leaves,
                timeout_cert,
                signature,
            } => {
                self.on_proposal_leaves(from, header, leaves.into_inner(), timeout_cert, signature)
            }
            ConsensusMessage::EntryRequest { leaves } => {
                self.on_entry_request(from, leaves.into_inner())
            }
            ConsensusMessage::Vote { vote } => self.on_vote(from, vote),
            ConsensusMessage::Timeout { timeout } => self.on_timeout_message(from, timeout),
            ConsensusMessage::CheckpointSignature {
                size,
                root,
                replica,
                note_signature,
            } => self.on_checkpoint_signature(from, size, root, replica, note_signature),
            ConsensusMessage::Forward { entries } => self.on_forward(from, entries),
            ConsensusMessage::SyncRequest {
                from_height,
                max_blocks,
            } => self.on_sync_request(from, from_height, max_blocks),
            ConsensusMessage::SyncResponse { blocks, commit_qc } => {
                self.on_sync_response(from, blocks.into_inner(), commit_qc)
            }
            ConsensusMessage::Certificates {
                high_qc,
                high_tc,
                committed_height,
            } => self.on_certificates(from, high_qc, high_tc, committed_height),
            ConsensusMessage::NonceCommitments {
                replica,
                first_height,
                commitments,
                started,
            } => self.on_nonce_commitments(
                from,
                replica,
                first_height,
                commitments.into_inner(),
                started,
            ),
            ConsensusMessage::ThresholdShare {
                height,
                size,
                root,
                replica,
                signers,
                share,
                recovery_stage,
            } => self.on_threshold_share(
                from,
                height,
                size,
                root,
                replica,
                signers.into_inner(),
                share,
                recovery_stage,
            ),
            ConsensusMessage::RecoveryCommitment {
                replica,
                height,
                stage,
                commitment,
            } => self.on_recovery_commitment(from, replica, height, stage, commitment),
            ConsensusMessage::RecoveryRequest {
                height,
                size,
                root,
                stage,
                signers,
            } => self.on_recovery_request(from, height, size, root, stage, signers.into_inner()),
            ConsensusMessage::ClusterSignature {
                height,
                size,
                root,
                signature,
            } => self.on_cluster_signature(from, height, size, root, signature),
        }
        self.input_from = None;
        self.finish();
    }

    /// Call when [`Replica::poll_timeout`]'s deadline has passed.
    pub fn handle_timeout(&mut self, now: Duration) {
        self.now = now;
        if self.pacemaker.round_expired(now) {
            self.local_timeout();
        }
        if self.pacemaker.status_due(now) {
            self.send_certificates(Target::All);
            self.resend_checkpoint_signature();
            self.resend_threshold_state();
        }
        if self.sync.deadline.is_some_and(|d| d <= now) {
            self.sync.deadline = None;
            // No answer: the cursor may point where no peer has blocks
            // (a fork that lost, or a misleading batch). Start again from
            // the committed tip, and ask the next replica round-robin.
            self.sync.cursor = self.committed_height + 1;
            let next = (self.sync.peer as usize + 1) % self.cfg.n();
            self.request_sync(next as ReplicaId);
        }
        if self.recovery_deadline().is_some_and(|d| d <= now) {
            self.advance_recovery();
        }
        self.finish();
    }

    /// The driver made the [`PersistRequest`] with this token durable.
    pub fn handle_persisted(&mut self, token: u64) {
        assert!(
            token <= self.persist_issued,
            "acknowledged a write never requested"
        );
        self.persist_done = self.persist_done.max(token);
        self.release();
    }

    /// Everything the inputs since the last call produced: see [`Step`]
    /// for what the driver must do with it, and in which order.
    pub fn poll_step(&mut self) -> Step {
        Step {
            sends: std::mem::take(&mut self.outbox),
            commits: std::mem::take(&mut self.commits),
            checkpoints: std::mem::take(&mut self.checkpoint_events),
            persist: std::mem::take(&mut self.persist_out),
            events: std::mem::take(&mut self.events),
        }
    }

    /// When [`Replica::handle_timeout`] should next run.
    pub fn poll_timeout(&self) -> Option<Duration> {
        [
            self.pacemaker.round_deadline(),
            self.sync.deadline,
            Some(self.pacemaker.status_deadline()),
            self.recovery_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Keeps `block` (its id, and its entries' leaf hashes) as the child
    /// of the held block at `parent_height`.
    fn store_block(&mut self, id: Hash, block: Block, parent_height: u64, leaves: Vec<Hash>) {
        let stored = StoredBlock {
            block: Arc::new(block),
            height: parent_height + 1,
            leaves,
        };
        self.blocks.insert(id, stored);
    }

    /// Counts a rejected message and reports it, naming the peer whose
    /// message is being handled (if any: a rejection while handling a
    /// timer or a client's entries has no sender to name).
    fn reject(&mut self, reason: Rejection) {
        match self.input_from {
            Some(from) => self.reject_from(from, reason),
            None => self.metrics.count_rejection(reason),
        }
    }

    /// [`Replica::reject`] for a message signed by `culprit` (a vote or
    /// timeout collected earlier from that replica).
    fn reject_from(&mut self, culprit: ReplicaId, reason: Rejection) {
        self.metrics.count_rejection(reason);
        self.events.push(Event::Rejected {
            from: culprit,
            reason,
        });
    }

    fn send(&mut self, to: Target, message: ConsensusMessage) {
        self.staging.push(Outgoing { to, message });
    }

    /// Ends an input: issues the state write if anything changed, and
    /// holds this input's messages until it is durable.
    fn finish(&mut self) {
        // An early proposal waits only for the writes issued before this
        // input, whose state it relies on (`maybe_propose`).
        for out in self.staging_early.drain(..) {
            self.held.push_back((self.persist_issued, out));
        }
        if self.dirty {
            self.dirty = false;
            self.persist_issued += 1;
            self.issued_last_voted_round = self.safety.last_voted_round;
            self.persist_out.push(PersistRequest {
                token: self.persist_issued,
                state: self.safety.clone(),
                blocks: std::mem::take(&mut self.persist_blocks),
                nonces: std::mem::take(&mut self.persist_nonces),
            });
        }
        let token = self.persist_issued;
        for out in self.staging.drain(..) {
            let is_vote = matches!(out.message, ConsensusMessage::Vote { .. });
            if is_vote && bug(Bug::VoteBeforePersist) {
                self.outbox.push(out);
            } else {
                self.held.push_back((token, out));
            }
        }
        self.release();
    }

    fn release(&mut self) {
        while self
            .held
            .front()
            .is_some_and(|(t, _)| *t <= self.persist_done)
        {
            let (_, out) = self.held.pop_front().expect("checked");
            self.outbox.push(out);
        }
    }
}
