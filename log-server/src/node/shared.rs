//! What the replica's tasks share: its configuration and storage, the
//! core loop's input queue, the driver's counters and the status the core
//! loop publishes. Every other node module depends on this one, and it on
//! none of them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};

use bftlog_spec::note::NoteSignature;
use bftlog_spec::wire::{ConsensusMessage, Entry, ErrorCode, ReplicaId};
use tokio::sync::oneshot;

use super::connections::ConnectionTable;
use super::queues::{CoreInbox, PeerMessageRate, PeerOutbox};
use super::sync_from_storage::StorageSyncRate;
use crate::config::ReplicaConfig;
use crate::storage::Store;

/// A stored checkpoint as clients are served it: its size and its note
/// (replica signatures and whatever witness cosignatures it has).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServedCheckpoint {
    pub size: u64,
    pub note: Arc<str>,
}

/// What the core loop answers an append with.
#[derive(Debug)]
pub enum AppendOutcome {
    /// Every entry's index, and the checkpoint the receipts are built on,
    /// which covers them all.
    Committed {
        indexes: Vec<u64>,
        checkpoint: ServedCheckpoint,
    },
    /// Not answered with receipts (e.g. no commit within the append
    /// timeout); its entries may have been submitted.
    Rejected(ErrorCode, String),
    /// Refused before the entries were (all) taken: too large, or the
    /// replica over a limit. Its admission charge is given back.
    Refused(ErrorCode, String),
}

pub(crate) enum CoreInput {
    Peer {
        from: ReplicaId,
        message: Box<ConsensusMessage>,
    },
    Append {
        /// Who the entries are charged to (mempool and waiting shares).
        client: bftlog_consensus::ClientId,
        entries: Vec<Entry>,
        reply: oneshot::Sender<AppendOutcome>,
    },
    /// Verified witness cosignatures on the stored checkpoint of `size`.
    Cosigned {
        size: u64,
        signatures: Vec<NoteSignature>,
    },
    Shutdown,
}

/// Counters the driver keeps besides the core's own.
#[derive(Debug, Default)]
pub struct DriverMetrics {
    pub peer_frames_dropped: AtomicU64,
    /// Outgoing peer messages dropped because they exceeded the frame
    /// limit (a bug if ever non-zero).
    pub messages_oversized: AtomicU64,
    pub peer_messages_malformed: AtomicU64,
    pub peers_rejected: AtomicU64,
    pub client_requests: AtomicU64,
    pub client_errors: AtomicU64,
    pub appends_overloaded: AtomicU64,
    pub sync_served_from_storage: AtomicU64,
    /// Inclusion and consistency proof requests from clients.
    pub proof_requests: AtomicU64,
    /// Proofs those requests asked for (a batched request asks for many).
    pub proofs_requested: AtomicU64,
    /// Verified cosignatures received from witnesses.
    pub witness_cosignatures: AtomicU64,
    /// Witness submissions that failed (refused, unreachable, bad answer).
    pub witness_failures: AtomicU64,
    /// Writes of the core loop (one transaction each), and the
    /// microseconds they took: votes wait for them.
    pub store_writes: AtomicU64,
    /// Those of them flushed to disk (safety state or voted blocks).
    pub store_flushes: AtomicU64,
    pub store_write_micros: AtomicU64,
    /// Writes that took [`SLOW_WRITE`] or longer.
    pub store_writes_slow: AtomicU64,
    /// Core loop steps (an input batch handled and the core drained,
    /// writes included) that took [`SLOW_STEP`] or longer.
    pub core_steps_slow: AtomicU64,
    /// Quorum checkpoints stored, and the microseconds from this
    /// replica's commit of their size to storing them, summed.
    pub quorum_checkpoints: AtomicU64,
    pub quorum_checkpoint_lag_micros: AtomicU64,
    /// Checkpoints that got the cluster signature, and the microseconds
    /// from this replica's commit of their size to it, summed.
    pub cluster_signed_checkpoints: AtomicU64,
    pub cluster_signature_lag_micros: AtomicU64,
    /// Times the network runtime woke a 10 ms timer [`SLOW_STEP`] late.
    pub runtime_stalls: AtomicU64,
    /// Outgoing peer connections established (reconnections included),
    /// and how many are up now.
    pub peer_connects: AtomicU64,
    pub peers_connected: AtomicU64,
    /// Peer messages dropped because the peer's inbox lane was full.
    pub peer_inputs_dropped: AtomicU64,
    /// Client connection attempts refused (over the total or per-address
    /// cap), and those asked to prove their address first (QUIC Retry).
    pub connections_refused: AtomicU64,
    pub connections_retried: AtomicU64,
    /// Client requests reset for missing their read or write deadline.
    pub client_requests_timed_out: AtomicU64,
    /// Client requests answered `Overloaded` for the in-flight byte budget.
    pub requests_over_byte_budget: AtomicU64,
    /// Sync requests below the in-memory window served from storage
    /// that failed to read (answered with nothing; the replica goes on).
    pub sync_storage_errors: AtomicU64,
    /// Sync requests from storage dropped over the per-peer rate.
    pub sync_rate_limited: AtomicU64,
    /// Appends answered `QuotaExceeded`, `Forbidden`, and `TooLarge` for
    /// exceeding a whole quota (admission).
    pub appends_over_quota: AtomicU64,
    pub appends_forbidden: AtomicU64,
    pub appends_larger_than_quota: AtomicU64,
    /// Appends refused because their client held its share of the
    /// mempool or of the entries waiting for receipts.
    pub appends_over_share: AtomicU64,
    /// Submitters-file reloads (SIGHUP) that took, and that failed (the
    /// previous list stayed in force).
    pub admission_reloads: AtomicU64,
    pub admission_reload_failures: AtomicU64,
    /// Tiles HTTP requests, those answered with an error status, and
    /// connections refused over the per-address cap.
    pub tile_requests: AtomicU64,
    pub tile_requests_failed: AtomicU64,
    pub tiles_connections_refused: AtomicU64,
    /// Publishing: tiles and bundles uploaded, failed rounds, and the
    /// size of the latest checkpoint published (a gauge).
    pub tiles_uploaded: AtomicU64,
    pub tiles_publish_errors: AtomicU64,
    pub tiles_published_size: AtomicU64,
}

/// State shared by the network tasks.
pub(crate) struct Shared {
    pub cfg: ReplicaConfig,
    pub store: Arc<Store>,
    pub inbox: CoreInbox,
    /// Where each peer's frames wait for its sender task (`None`: this
    /// replica).
    pub outboxes: Vec<Option<PeerOutbox>>,
    /// The lowest committed height the core holds in memory, as of its
    /// last step: sync below it is served from storage.
    pub oldest_retained_height: AtomicU64,
    /// The size of the stored checkpoint served as the latest
    /// (`/checkpoint`, `GetCheckpoint`, published tiles), set by the core
    /// loop once durable; 0 until its first step (the latest stored).
    pub served_checkpoint_size: AtomicU64,
    pub storage_sync_rate: StorageSyncRate,
    pub peer_message_rate: PeerMessageRate,
    /// Client connections open, in all and per address.
    pub connections: ConnectionTable,
    /// Bytes of client requests being read or handled, reserved per
    /// request (`limits.max_inflight_request_bytes`).
    pub request_bytes: Arc<tokio::sync::Semaphore>,
    /// Who may append, and their quota use (`crate::admission`).
    pub admission: std::sync::Mutex<crate::admission::Admission>,
    /// The origin of the core's and admission's clocks.
    pub started: std::time::Instant,
    pub metrics: DriverMetrics,
    pub stopping: AtomicBool,
    /// Why the core loop stopped by itself, once it has.
    pub stop_reason: std::sync::Mutex<Option<String>>,
    /// The core loop's latest published status (for `/metrics`).
    pub status: std::sync::Mutex<CoreStatus>,
}

/// What the core loop knows, as of its last step.
#[derive(Clone, Debug, Default)]
pub struct CoreStatus {
    pub consensus: bftlog_consensus::Metrics,
    pub round: u64,
    /// The current round's leader, as this replica sees it.
    pub leader: u64,
    pub committed_height: u64,
    pub tree_size: u64,
    /// Entries in the mempool, not yet in a block.
    pub mempool_entries: usize,
    /// Entries of client appends waiting for their receipts.
    pub waiting_entries: usize,
    pub latest_checkpoint_size: u64,
    pub latest_witnessed_size: u64,
}
