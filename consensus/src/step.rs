//! The core's outputs: one [`Step`] drained after each input, and the
//! types in it.

use std::sync::Arc;

use bftlog_spec::merkle::Hash;
use bftlog_spec::note::{Note, NoteSignature};
use bftlog_spec::wire::{Block, ConsensusMessage, ReplicaId};

use crate::SafetyState;

/// A write the driver must make durable, then acknowledge with
/// [`Replica::handle_persisted`]`(token)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PersistRequest {
    pub token: u64,
    pub state: SafetyState,
    /// Blocks this replica voted for since the last write. A vote promises
    /// the voter can serve the block, so it is durable before the vote
    /// leaves: a certified block then survives crashes of its voters.
    /// Each with its id.
    pub blocks: Vec<(Hash, Arc<Block>)>,
    /// Fresh cluster-key nonces, by the height whose checkpoint each is
    /// for. Their commitments leave only once they are durable; the
    /// driver may delete nonces at or below `state.last_share`'s height.
    pub nonces: Vec<(u64, crate::threshold::NonceSecret)>,
}

/// Where a message goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    All,
    One(ReplicaId),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    pub to: Target,
    pub message: ConsensusMessage,
}

/// What the core asks of its driver, drained with [`Replica::poll_step`]
/// after each input (or after a batch of inputs).
///
/// **The drain contract** (persist before speak, stated once):
///
/// 1. `sends` may leave at once, before or while `persist` is written:
///    every message in it depends only on writes already acknowledged.
/// 2. `commits` are written in the same transaction as `persist` (or an
///    earlier one); `checkpoints` report what the core signed and which
///    quorum notes formed (a [`CheckpointEvent::Signed`] signature leaves
///    only after the write that records it).
/// 3. Make each `persist` request durable, in order, then acknowledge it
///    with [`Replica::handle_persisted`]`(token)`: that releases the
///    messages which waited for it (votes, timeouts, checkpoint
///    signatures), so poll again until a step is empty.
/// 4. `events` are for logs and metrics only; nothing depends on them.
///
/// The driver, the simulator and the fuzz harness all drain this way.
#[derive(Debug, Default)]
pub struct Step {
    pub sends: Vec<Outgoing>,
    pub commits: Vec<Committed>,
    pub checkpoints: Vec<CheckpointEvent>,
    pub persist: Vec<PersistRequest>,
    pub events: Vec<Event>,
}

impl Step {
    /// Nothing to do: the core is quiet until its next input.
    pub fn is_empty(&self) -> bool {
        self.sends.is_empty()
            && self.commits.is_empty()
            && self.checkpoints.is_empty()
            && self.persist.is_empty()
            && self.events.is_empty()
    }
}

/// Something worth a log line or a metric; the protocol never depends on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// This replica gave up on `round` and broadcast its timeout (again,
    /// when re-sent).
    TimeoutSent { round: u64 },
    /// This replica formed a timeout certificate for `round`.
    TcFormed { round: u64 },
    /// Entered `round` through a timeout certificate: the previous round's
    /// leader failed.
    ViewChange { round: u64 },
    /// A message from (or signed by) `from` was rejected.
    Rejected { from: ReplicaId, reason: Rejection },
}

/// Why a peer's message was rejected (each has a counter in [`Metrics`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rejection {
    /// Not well-formed for this cluster: a wrong epoch, author, round or
    /// size, or a block breaking the validity rules.
    Malformed,
    InvalidSignature,
    InvalidCertificate,
    /// Two different messages for one slot (a vote or block per round).
    Equivocation,
    /// Behind the window of rounds or sizes the replica keeps: normal
    /// for a slow link or a restarted peer.
    Stale,
    /// Ahead of any round a certificate has reached, or beyond what the
    /// replica keeps per peer: an honest peer does not send it.
    Ahead,
    /// Over a per-peer rate (sync requests): dropped unanswered.
    RateLimited,
}

impl Rejection {
    /// The label in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::Malformed => "malformed",
            Rejection::InvalidSignature => "invalid_signature",
            Rejection::InvalidCertificate => "invalid_certificate",
            Rejection::Equivocation => "equivocation",
            Rejection::Stale => "stale",
            Rejection::Ahead => "ahead",
            Rejection::RateLimited => "rate_limited",
        }
    }
}

/// A committed block, in commit order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    /// 1 for the first block after genesis.
    pub height: u64,
    pub block_id: Hash,
    /// Shared with the core's committed window: a block holds thousands of
    /// entries, and copying it per use was a large share of a replica's CPU.
    pub block: Arc<Block>,
    /// RFC 6962 leaf hashes of the block's entries, in order (hashed once
    /// by the core; storage and the driver reuse them).
    pub leaves: Vec<Hash>,
    /// Log index of the block's first entry.
    pub first_index: u64,
    /// Tree size and root after the block.
    pub size: u64,
    pub root: Hash,
    /// The hashes the block's leaves add to the tree, in stored-hash order
    /// (spec/merkle.md): each leaf's hash, then the subtrees it completes.
    /// The core computes the tree once; storage writes these as they are.
    pub stored_hashes: Vec<Hash>,
}

/// What the replica learned about checkpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckpointEvent {
    /// This replica signed (size, root); the signature is durable.
    Signed { size: u64, root: Hash },
    /// ≥ quorum replica signatures on one checkpoint: a servable note
    /// (with the cluster signature's line when that formed first).
    Quorum { size: u64, note: Note },
    /// The cluster signature of the checkpoint `(size, root)` formed here
    /// (verified): `line` is the note signature line to add to the stored
    /// quorum note of that size, if there is one. A quorum note formed
    /// later carries it already.
    ClusterSigned {
        size: u64,
        root: Hash,
        line: NoteSignature,
    },
    /// Refused to sign: it would contradict what this replica signed before.
    /// A safety alarm.
    Refused {
        size: u64,
        root: Hash,
        last_signed: (u64, Hash),
    },
}

/// Result of [`Replica::submit`] per entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubmitResult {
    Accepted,
    AlreadyPending,
    /// Committed recently (the driver's storage knows its index).
    AlreadyCommitted,
    TooLarge,
    /// The mempool is full.
    Overloaded {
        retry_after_ms: u64,
    },
    /// This client holds its whole share of the mempool.
    OverShare {
        retry_after_ms: u64,
    },
}

/// Peer misbehaviour and protocol counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Metrics {
    pub invalid_signatures: u64,
    pub invalid_certificates: u64,
    pub malformed_messages: u64,
    pub equivocations: u64,
    pub stale_messages: u64,
    pub ahead_messages: u64,
    pub rate_limited_messages: u64,
    pub proposals_sent: u64,
    pub votes_sent: u64,
    pub timeouts_sent: u64,
    pub qcs_formed: u64,
    pub tcs_formed: u64,
    pub blocks_committed: u64,
    pub entries_committed: u64,
    pub sync_requests_sent: u64,
    pub forwarded_dropped: u64,
    pub checkpoints_signed: u64,
    pub checkpoints_refused: u64,
    /// Cluster-key shares this replica sent.
    pub threshold_shares_sent: u64,
    /// Cluster signatures this replica combined from shares.
    pub cluster_signatures: u64,
    /// Shares that FROST's identifiable abort found invalid (each also
    /// counted as an invalid signature of its signer).
    pub bad_threshold_shares: u64,
    /// Cluster-key nonces generated (and made durable before use).
    pub nonces_generated: u64,
    /// Recovery sessions this replica started as a coordinator.
    pub recovery_sessions: u64,
    /// Shares this replica sent in recovery sessions.
    pub recovery_shares_sent: u64,
    /// Cluster signatures this replica received from a peer (after
    /// asking to recover one) and verified.
    pub cluster_signatures_received: u64,
    /// Committed checkpoints that left the window of heights without
    /// their cluster signature forming here.
    pub cluster_signatures_abandoned: u64,
    /// Rounds entered through a timeout certificate (the leader failed).
    pub view_changes: u64,
    /// Proposals by leaf hash that named entries this replica lacked.
    pub proposals_incomplete: u64,
    /// Entries asked of a leader because a proposal named them.
    pub entries_requested: u64,
    /// Entries sent in answer to other replicas' requests.
    pub entries_served: u64,
}

impl Metrics {
    pub(crate) fn count_rejection(&mut self, reason: Rejection) {
        let counter = match reason {
            Rejection::Malformed => &mut self.malformed_messages,
            Rejection::InvalidSignature => &mut self.invalid_signatures,
            Rejection::InvalidCertificate => &mut self.invalid_certificates,
            Rejection::Equivocation => &mut self.equivocations,
            Rejection::Stale => &mut self.stale_messages,
            Rejection::Ahead => &mut self.ahead_messages,
            Rejection::RateLimited => &mut self.rate_limited_messages,
        };
        *counter += 1;
    }
}
