//! The replica driver: feeds the sans-IO consensus core and performs its
//! actions, in order.
//!
//! One OS thread owns the core and the database writer (the *core loop*).
//! It waits for an input or the core's next timer, hands the input to the
//! core, then drains the core until it is quiet:
//!
//! 0. messages the core has already released (they depend only on writes
//!    already durable: forwarded entries, a leader's early proposal) go
//!    to the per-peer sender tasks first, so they overlap the write;
//! 1. commits, checkpoint events and persist requests are written to redb
//!    in **one transaction**, flushed when it holds safety state or voted
//!    blocks (commits alone are flushed with the next such write);
//! 2. only then are the persist tokens acknowledged, which releases the
//!    votes, timeouts and checkpoint signatures that depended on them
//!    (persist before speak);
//! 3. outgoing messages go to the per-peer sender tasks;
//! 4. clients waiting for receipts are answered once a stored quorum
//!    checkpoint covers their entries.
//!
//! The network runs on tokio: one task per peer connection direction and
//! one per client request. Reads (proofs, entries, checkpoints) go straight
//! to redb from the request tasks; they never wait for the core loop.
//! Queues are bounded everywhere: a full peer queue drops the message
//! (consensus tolerates loss), a full core queue answers `Overloaded`.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bftlog_spec::checkpoint::Checkpoint;
use bftlog_spec::merkle::{self, Hash};
use bftlog_spec::note::{Note, NoteSignature};
use bftlog_spec::wire::{self, BoundedVec, ConsensusMessage, Entry, ErrorCode, ReplicaId};
use tokio::sync::{mpsc as tmpsc, oneshot};
use tracing::{debug, error, info, warn};

use crate::config::ReplicaConfig;
use crate::metrics::{self, CoreStatus};
use crate::net;
use crate::storage::{Store, StoreError, WriteBatch};
use crate::witnessing;
use bftlog_consensus::digest_hash::DigestMap;
use bftlog_consensus::{
    CheckpointEvent, Event, Rejection, Replica, SubmitResult, SyncBudget, Target,
};

/// Frames queued per peer before new ones are dropped.
const PEER_QUEUE_FRAMES: usize = 4096;
/// Inputs queued for the core loop before appends are refused.
const CORE_QUEUE: usize = 16_384;

/// Why a replica could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    #[error("consensus setup: {0}")]
    Setup(#[from] bftlog_consensus::SetupError),
    #[error("TLS: {0}")]
    Tls(#[from] net::TlsSetupError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("data directory {path}: {source}")]
    DataDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// What the core loop answers an append with.
#[derive(Debug)]
pub enum AppendOutcome {
    /// Every entry's index; a stored quorum checkpoint covers them all.
    Committed(Vec<u64>),
    Rejected(ErrorCode, String),
}

pub(crate) enum CoreInput {
    Peer {
        from: ReplicaId,
        message: Box<ConsensusMessage>,
    },
    Append {
        entries: Vec<Entry>,
        reply: oneshot::Sender<AppendOutcome>,
    },
    /// Verified witness cosignatures on the stored checkpoint of `size`.
    Cosigned {
        size: u64,
        signatures: Vec<bftlog_spec::note::NoteSignature>,
    },
    Shutdown,
}

/// Marks the node stopped when dropped (the core loop's end or unwind).
struct StopOnExit(Arc<Shared>);

impl Drop for StopOnExit {
    fn drop(&mut self) {
        self.0.stopping.store(true, Ordering::SeqCst);
    }
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
    /// Times the network runtime woke a 10 ms timer [`SLOW_STEP`] late.
    pub runtime_stalls: AtomicU64,
    /// Outgoing peer connections established (reconnections included),
    /// and how many are up now.
    pub peer_connects: AtomicU64,
    pub peers_connected: AtomicU64,
}

/// State shared by the network tasks.
pub(crate) struct Shared {
    pub cfg: ReplicaConfig,
    pub store: Arc<Store>,
    pub core_tx: mpsc::SyncSender<CoreInput>,
    pub metrics: DriverMetrics,
    pub stopping: AtomicBool,
    /// The core loop's latest published status (for `/metrics`).
    pub status: std::sync::Mutex<CoreStatus>,
}

const REJECTION_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// A durable write this slow is logged and counted: a round cannot go
/// faster than its leader's and its voters' writes.
pub const SLOW_WRITE: Duration = Duration::from_millis(100);
/// A core loop step this slow is logged and counted: every peer message,
/// append and timer of the replica waited for it.
pub const SLOW_STEP: Duration = Duration::from_millis(100);

/// A running replica.
pub struct Node {
    shared: Arc<Shared>,
    metrics_addr: Option<SocketAddr>,
    endpoint: quinn::Endpoint,
    core: Option<std::thread::JoinHandle<Result<(), StoreError>>>,
    tasks: tokio::task::JoinSet<()>,
}

impl Node {
    /// Opens storage, recovers the core and starts serving. Must run inside
    /// a tokio runtime.
    pub async fn start(cfg: ReplicaConfig) -> Result<Node, StartError> {
        std::fs::create_dir_all(&cfg.data_dir).map_err(|source| StartError::DataDir {
            path: cfg.data_dir.clone(),
            source,
        })?;
        let store = Arc::new(Store::open_with_cache(
            &cfg.data_dir.join("bftlog.redb"),
            cfg.cluster.epoch,
            cfg.cache_mb << 20,
        )?);
        let recovered = store.recover(
            cfg.cluster.epoch,
            cfg.consensus.retain_committed_blocks,
            cfg.consensus.retain_committed_bytes,
        )?;
        let started = Instant::now();
        let replica = Replica::new(
            cfg.consensus.clone(),
            cfg.id,
            cfg.key.clone(),
            rand::rngs::OsRng,
            recovered,
            Duration::ZERO,
        )?;
        let server = net::server_config(&cfg.key, &cfg.limits)?;
        let endpoint =
            net::endpoint(cfg.listen, server, &cfg.key).map_err(|source| StartError::Listen {
                addr: cfg.listen,
                source,
            })?;
        let (core_tx, core_rx) = mpsc::sync_channel(CORE_QUEUE);
        let shared = Arc::new(Shared {
            cfg,
            store: store.clone(),
            core_tx,
            metrics: DriverMetrics::default(),
            stopping: AtomicBool::new(false),
            status: std::sync::Mutex::new(CoreStatus::default()),
        });
        let mut tasks = tokio::task::JoinSet::new();
        let mut peers: Vec<Option<tmpsc::Sender<Arc<Vec<u8>>>>> = Vec::new();
        for peer in 0..shared.cfg.cluster.n() as u16 {
            if peer == shared.cfg.id {
                peers.push(None);
                continue;
            }
            let (tx, rx) = tmpsc::channel(PEER_QUEUE_FRAMES);
            peers.push(Some(tx));
            tasks.spawn(peer_sender(shared.clone(), endpoint.clone(), peer, rx));
        }
        tasks.spawn(accept_loop(shared.clone(), endpoint.clone()));
        tasks.spawn(runtime_watchdog(shared.clone()));
        let mut metrics_addr = None;
        if let Some(addr) = shared.cfg.metrics_listen {
            let listener = metrics::bind(addr)
                .await
                .map_err(|source| StartError::Listen { addr, source })?;
            metrics_addr = listener.local_addr().ok();
            tasks.spawn(metrics::serve(shared.clone(), listener));
        }
        let initial = match store.latest_checkpoint()? {
            Some((size, text)) => Note::parse(text.as_bytes())
                .ok()
                .map(|note| (size, Arc::new(note))),
            None => None,
        };
        let witness_tx = witnessing::spawn(&shared, initial, &mut tasks);
        info!(
            replica = shared.cfg.id,
            listen = %shared.cfg.listen,
            tree_size = store.tree_size(),
            height = replica.committed_height(),
            "replica started"
        );
        let loop_shared = shared.clone();
        let core = std::thread::Builder::new()
            .name(format!("bftlog-core-{}", shared.cfg.id))
            .spawn(move || {
                // Set `stopping` however the loop ends, a panic included:
                // `bftlog serve` then exits instead of answering as a
                // replica whose consensus has stopped.
                let _stop_on_exit = StopOnExit(loop_shared.clone());
                let mut core = CoreLoop {
                    shared: loop_shared.clone(),
                    replica,
                    store,
                    started,
                    peers,
                    waiters: Waiters::default(),
                    pending_quorum: BTreeMap::new(),
                    latest_checkpoint: 0,
                    latest_witnessed: 0,
                    rejection_logged: HashMap::new(),
                    witness_tx,
                };
                let result = core.run(core_rx);
                if let Err(e) = &result {
                    error!(replica = loop_shared.cfg.id, error = %e, "storage failed; the replica stops");
                }
                loop_shared.stopping.store(true, Ordering::SeqCst);
                result
            })
            .expect("spawn core thread");
        Ok(Node {
            shared,
            metrics_addr,
            endpoint,
            core: Some(core),
            tasks,
        })
    }

    /// The bound QUIC address.
    pub fn local_addr(&self) -> SocketAddr {
        self.endpoint.local_addr().expect("bound endpoint")
    }

    /// The bound Prometheus endpoint address, if enabled.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    pub fn metrics(&self) -> &DriverMetrics {
        &self.shared.metrics
    }

    /// True once the core loop stopped (storage failure or shutdown).
    pub fn is_stopped(&self) -> bool {
        self.shared.stopping.load(Ordering::SeqCst)
    }

    /// Waits until the core loop stops by itself (a storage failure, or a
    /// panic: a bug).
    pub async fn stopped(&self) {
        while !self.is_stopped() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops serving, lets the core loop finish its current step and
    /// closes the database.
    pub async fn shutdown(mut self) -> Result<(), StoreError> {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.endpoint.close(0u32.into(), b"shutdown");
        let _ = self.shared.core_tx.try_send(CoreInput::Shutdown);
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        let core = self.core.take().expect("joined once");
        let result = tokio::task::spawn_blocking(move || core.join())
            .await
            .expect("join task");
        self.endpoint.wait_idle().await;
        result.unwrap_or(Ok(()))
    }
}

// ---------------------------------------------------------------------------
// The core loop
// ---------------------------------------------------------------------------

#[derive(Default)]
struct Waiters {
    next_id: u64,
    requests: HashMap<u64, Waiter>,
    /// Leaf hash → (request, position) for entries not yet committed.
    by_leaf: DigestMap<Hash, Vec<(u64, usize)>>,
    /// Requests whose entries all have indexes, by the highest index.
    by_index: BTreeMap<u64, Vec<u64>>,
    /// Entries waiting in all requests.
    entries: usize,
}

struct Waiter {
    indexes: Vec<Option<u64>>,
    leaves: Vec<Hash>,
    missing: usize,
    deadline: Duration,
    reply: oneshot::Sender<AppendOutcome>,
}

struct CoreLoop {
    shared: Arc<Shared>,
    replica: Replica<rand::rngs::OsRng>,
    store: Arc<Store>,
    started: Instant,
    peers: Vec<Option<tmpsc::Sender<Arc<Vec<u8>>>>>,
    waiters: Waiters,
    /// Quorum checkpoints beyond the stored tree, stored once it reaches them.
    pending_quorum: BTreeMap<u64, Note>,
    latest_checkpoint: u64,
    /// Latest stored checkpoint whose cosignatures meet the witness quorum.
    latest_witnessed: u64,
    /// When each (peer, reason) rejection was last logged.
    rejection_logged: HashMap<(ReplicaId, Rejection), Instant>,
    /// Publishes each new stored quorum checkpoint to the witness tasks.
    witness_tx: Option<tokio::sync::watch::Sender<crate::witnessing::Latest>>,
}

impl CoreLoop {
    fn now(&self) -> Duration {
        self.started.elapsed()
    }

    fn run(&mut self, rx: mpsc::Receiver<CoreInput>) -> Result<(), StoreError> {
        self.latest_checkpoint = self.store.latest_checkpoint()?.map_or(0, |(s, _)| s);
        self.latest_witnessed = self
            .store
            .latest_witnessed_checkpoint()?
            .map_or(0, |(s, _)| s);
        self.drive()?;
        loop {
            let now = self.now();
            // Waiter deadlines are checked at least once a second.
            let wait = self
                .replica
                .poll_timeout()
                .map_or(Duration::from_secs(1), |t| t.saturating_sub(now))
                .min(Duration::from_secs(1));
            match rx.recv_timeout(wait) {
                Ok(CoreInput::Shutdown) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return self.store.sync();
                }
                Ok(input) => {
                    self.handle(input)?;
                    // Take what else is queued before draining: it batches
                    // votes and appends into one durable write.
                    for _ in 0..1024 {
                        match rx.try_recv() {
                            Ok(CoreInput::Shutdown) => return self.store.sync(),
                            Ok(input) => self.handle(input)?,
                            Err(_) => break,
                        }
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            let step = Instant::now();
            let now = self.now();
            if self.replica.poll_timeout().is_some_and(|t| t <= now) {
                self.replica.handle_timeout(now);
            }
            self.expire_waiters(now);
            self.drive()?;
            let took = step.elapsed();
            if took >= SLOW_STEP {
                self.shared
                    .metrics
                    .core_steps_slow
                    .fetch_add(1, Ordering::Relaxed);
                warn!(
                    replica = self.shared.cfg.id,
                    round = self.replica.round(),
                    took_ms = took.as_millis() as u64,
                    "slow core loop step: inputs and messages waited for it"
                );
            }
        }
    }

    fn handle(&mut self, input: CoreInput) -> Result<(), StoreError> {
        let now = self.now();
        match input {
            CoreInput::Peer { from, message } => {
                if let ConsensusMessage::SyncRequest {
                    from_height,
                    max_blocks,
                } = &*message
                {
                    if *from_height < self.replica.oldest_retained_height() {
                        self.serve_sync_from_storage(from, *from_height, *max_blocks)?;
                        return Ok(());
                    }
                }
                self.replica.handle_message(now, from, *message);
            }
            CoreInput::Append { entries, reply } => self.append(now, entries, reply)?,
            CoreInput::Cosigned { size, signatures } => self.cosigned(size, signatures)?,
            CoreInput::Shutdown => {}
        }
        Ok(())
    }

    /// Sync for heights the core no longer holds in memory: blocks from
    /// redb, plus the QC that certifies the last one (the next block's
    /// justify), so the requester can verify and apply them.
    fn serve_sync_from_storage(
        &mut self,
        to: ReplicaId,
        from_height: u64,
        max_blocks: u16,
    ) -> Result<(), StoreError> {
        let max = (max_blocks as u64).clamp(1, wire::MAX_SYNC_BLOCKS as u64);
        let mut blocks = self.store.committed_blocks(from_height.max(1), max + 1)?;
        if blocks.len() < 2 {
            return Ok(());
        }
        // Keep the response under the frame limit, by the same budget as
        // the core's answers from memory.
        let mut budget = SyncBudget::new();
        let keep = blocks[..blocks.len() - 1]
            .iter()
            .take_while(|b| budget.admit(b))
            .count();
        let commit_qc = Some(blocks[keep].justify.clone());
        blocks.truncate(keep);
        self.shared
            .metrics
            .sync_served_from_storage
            .fetch_add(1, Ordering::Relaxed);
        let message = ConsensusMessage::SyncResponse {
            blocks: BoundedVec::new(blocks).expect("≤ MAX_SYNC_BLOCKS"),
            commit_qc,
        };
        self.send(Target::One(to), &message);
        Ok(())
    }

    fn append(
        &mut self,
        now: Duration,
        entries: Vec<Entry>,
        reply: oneshot::Sender<AppendOutcome>,
    ) -> Result<(), StoreError> {
        let max = self.shared.cfg.consensus.max_entry_bytes;
        if let Some(i) = entries.iter().position(|e| e.len() > max) {
            let _ = reply.send(AppendOutcome::Rejected(
                ErrorCode::TooLarge,
                format!(
                    "entry {i} has {} bytes; the limit is {max}",
                    entries[i].len()
                ),
            ));
            return Ok(());
        }
        if self.waiters.entries + entries.len() > self.shared.cfg.max_waiting_entries {
            self.shared
                .metrics
                .appends_overloaded
                .fetch_add(1, Ordering::Relaxed);
            let _ = reply.send(AppendOutcome::Rejected(
                ErrorCode::Overloaded {
                    retry_after_ms: 1000,
                },
                "too many appends waiting for receipts".into(),
            ));
            return Ok(());
        }
        let leaves: Vec<Hash> = entries.iter().map(|e| merkle::leaf_hash(e)).collect();
        let mut indexes = self.store.indexes_of(&leaves)?;
        let mut submit = Vec::new();
        let mut submit_pos = Vec::new();
        for (pos, entry) in entries.into_iter().enumerate() {
            if indexes[pos].is_none() {
                submit.push((leaves[pos], entry.into_inner()));
                submit_pos.push(pos);
            }
        }
        let results = if submit.is_empty() {
            Vec::new()
        } else {
            self.replica.submit_hashed(now, submit)
        };
        let mut overloaded = None;
        for (pos, result) in submit_pos.iter().zip(results) {
            match result {
                SubmitResult::Accepted | SubmitResult::AlreadyPending => {}
                SubmitResult::AlreadyCommitted => {
                    indexes[*pos] = self.store.index_of(&leaves[*pos])?;
                }
                SubmitResult::TooLarge => {
                    let _ = reply.send(AppendOutcome::Rejected(
                        ErrorCode::TooLarge,
                        format!("entry {pos} is too large"),
                    ));
                    return Ok(());
                }
                SubmitResult::Overloaded { retry_after_ms } => {
                    overloaded = Some(retry_after_ms);
                }
            }
        }
        if let Some(retry_after_ms) = overloaded {
            self.shared
                .metrics
                .appends_overloaded
                .fetch_add(1, Ordering::Relaxed);
            let _ = reply.send(AppendOutcome::Rejected(
                ErrorCode::Overloaded { retry_after_ms },
                "the mempool is full; entries it accepted will still commit, and resubmitting is idempotent".into(),
            ));
            return Ok(());
        }
        let id = self.waiters.next_id;
        self.waiters.next_id += 1;
        let missing = indexes.iter().filter(|i| i.is_none()).count();
        for (pos, index) in indexes.iter().enumerate() {
            if index.is_none() {
                self.waiters
                    .by_leaf
                    .entry(leaves[pos])
                    .or_default()
                    .push((id, pos));
            }
        }
        self.waiters.entries += indexes.len();
        let deadline = now + Duration::from_millis(self.shared.cfg.append_timeout_ms);
        self.waiters.requests.insert(
            id,
            Waiter {
                indexes,
                leaves,
                missing,
                deadline,
                reply,
            },
        );
        if missing == 0 {
            self.indexed(id);
        }
        Ok(())
    }

    /// A request whose entries all have indexes waits for a checkpoint.
    fn indexed(&mut self, id: u64) {
        let waiter = &self.waiters.requests[&id];
        let highest = waiter.indexes.iter().map(|i| i.expect("indexed")).max();
        match highest {
            Some(h) if h >= self.receipt_size() => {
                self.waiters.by_index.entry(h).or_default().push(id);
            }
            _ => self.answer(id),
        }
    }

    fn answer(&mut self, id: u64) {
        if let Some(waiter) = self.waiters.requests.remove(&id) {
            self.waiters.entries -= waiter.indexes.len();
            let indexes = waiter
                .indexes
                .into_iter()
                .map(|i| i.expect("indexed"))
                .collect();
            let _ = waiter.reply.send(AppendOutcome::Committed(indexes));
        }
    }

    fn expire_waiters(&mut self, now: Duration) {
        let expired: Vec<u64> = self
            .waiters
            .requests
            .iter()
            .filter(|(_, w)| w.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(waiter) = self.waiters.requests.remove(&id) {
                self.waiters.entries -= waiter.indexes.len();
                for (pos, leaf) in waiter.leaves.iter().enumerate() {
                    if waiter.indexes[pos].is_some() {
                        continue;
                    }
                    if let Some(list) = self.waiters.by_leaf.get_mut(leaf) {
                        list.retain(|(w, _)| *w != id);
                        if list.is_empty() {
                            self.waiters.by_leaf.remove(leaf);
                        }
                    }
                }
                let _ = waiter.reply.send(AppendOutcome::Rejected(
                    ErrorCode::Overloaded {
                        retry_after_ms: 1000,
                    },
                    format!(
                        "not committed within {} ms; resubmitting is idempotent",
                        self.shared.cfg.append_timeout_ms
                    ),
                ));
            }
        }
        // Stale `by_index` registrations are skipped when they fire.
    }

    /// Drains the core until it is quiet, by the contract on
    /// [`bftlog_consensus::Step`] (see the module docs for the order).
    fn drive(&mut self) -> Result<(), StoreError> {
        loop {
            let step = self.replica.poll_step();
            if step.is_empty() {
                self.publish_status();
                return Ok(());
            }
            // What the core released depends only on writes already
            // durable, so it goes before this step's write: a leader's
            // proposal that relies on earlier writes only (not on its own
            // vote) then reaches the followers while the leader's write
            // runs, and their writes overlap it.
            for out in &step.sends {
                self.send(out.to, &out.message);
            }
            for event in &step.events {
                self.log_event(*event);
            }
            let mut batch = WriteBatch {
                commits: step.commits,
                ..WriteBatch::default()
            };
            for event in step.checkpoints {
                match event {
                    CheckpointEvent::Quorum { size, note } => {
                        self.pending_quorum.insert(size, note);
                    }
                    CheckpointEvent::Signed { size, root } => {
                        debug!(replica = self.shared.cfg.id, size, %root, "signed checkpoint");
                    }
                    CheckpointEvent::Refused {
                        size,
                        root,
                        last_signed,
                    } => {
                        error!(
                            replica = self.shared.cfg.id,
                            size,
                            %root,
                            last_size = last_signed.0,
                            last_root = %last_signed.1,
                            "SAFETY ALARM: refused to sign a checkpoint that contradicts one signed before"
                        );
                    }
                }
            }
            let mut tokens = Vec::with_capacity(step.persist.len());
            for request in step.persist {
                batch.safety = Some(request.state);
                batch.voted_blocks.extend(request.blocks);
                tokens.push(request.token);
            }
            self.store_ready_checkpoints(&mut batch);
            if !batch.is_empty() {
                self.timed_write(&batch)?;
            }
            for token in tokens {
                self.replica.handle_persisted(token);
            }
            self.after_commit(&batch);
        }
    }

    /// Moves the quorum checkpoints that the tree reaches with `batch`
    /// into it, each checked against the committed root of its size.
    fn store_ready_checkpoints(&mut self, batch: &mut WriteBatch) {
        let tree_size = batch
            .commits
            .last()
            .map_or(self.store.tree_size(), |c| c.size);
        let ready: Vec<u64> = self
            .pending_quorum
            .range(..=tree_size)
            .map(|(s, _)| *s)
            .collect();
        for size in ready {
            let note = self.pending_quorum.remove(&size).expect("listed");
            if size <= self.latest_checkpoint {
                continue;
            }
            let root = match batch.commits.iter().find(|c| c.size == size) {
                Some(c) => c.root,
                None => match self.store.root_at(size) {
                    Ok(root) => root,
                    Err(e) => {
                        warn!(size, error = %e, "cannot check a quorum checkpoint's root");
                        continue;
                    }
                },
            };
            let claimed = Checkpoint::parse(note.text()).map(|c| c.root);
            if claimed.as_ref() != Ok(&root) {
                error!(
                    replica = self.shared.cfg.id,
                    size,
                    "SAFETY ALARM: a quorum checkpoint disagrees with the committed tree; not stored"
                );
                continue;
            }
            batch.checkpoints.push((size, note.format()));
            self.latest_checkpoint = size;
        }
    }

    /// Logs what the core reports (rejections rate-limited per peer).
    fn log_event(&mut self, event: Event) {
        let id = self.shared.cfg.id;
        match event {
            Event::TimeoutSent { round } => info!(
                replica = id,
                round,
                leader = self.replica.leader(),
                height = self.replica.committed_height(),
                "round timed out; asking the others to move on"
            ),
            Event::ViewChange { round } => info!(
                replica = id,
                round,
                height = self.replica.committed_height(),
                "entered a round by a timeout certificate"
            ),
            Event::TcFormed { round } => {
                debug!(replica = id, round, "formed a timeout certificate")
            }
            // Old messages are normal after a restart or a slow link.
            Event::Rejected {
                reason: Rejection::Stale,
                ..
            } => {}
            Event::Rejected { from, reason } => self.log_rejection(from, reason),
        }
    }

    /// One write, counted (and whether it was flushed) and timed for
    /// `/metrics`; a slow one is logged, since every vote and proposal of
    /// the step waits for it.
    fn timed_write(&mut self, batch: &WriteBatch) -> Result<(), StoreError> {
        let started = Instant::now();
        self.store.write(batch)?;
        let took = started.elapsed();
        let m = &self.shared.metrics;
        m.store_writes.fetch_add(1, Ordering::Relaxed);
        if batch.needs_flush() {
            m.store_flushes.fetch_add(1, Ordering::Relaxed);
        }
        m.store_write_micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        if took >= SLOW_WRITE {
            m.store_writes_slow.fetch_add(1, Ordering::Relaxed);
            warn!(
                replica = self.shared.cfg.id,
                round = self.replica.round(),
                took_ms = took.as_millis() as u64,
                commits = batch.commits.len(),
                // redb doubles its file when it runs out of space and drops
                // its read cache when it does: a size that just doubled
                // points at that.
                file_bytes = self.store.file_bytes(),
                "slow durable write: this replica's votes and proposals waited for it"
            );
        }
        Ok(())
    }

    /// Logs a peer's rejected message at most once per reason and peer
    /// every [`REJECTION_LOG_INTERVAL`] (a Byzantine peer must not be able
    /// to flood the log); the counters in `/metrics` count every one.
    fn log_rejection(&mut self, from: ReplicaId, reason: Rejection) {
        let now = Instant::now();
        let last = self.rejection_logged.get(&(from, reason));
        if last.is_some_and(|t| now.duration_since(*t) < REJECTION_LOG_INTERVAL) {
            return;
        }
        self.rejection_logged.insert((from, reason), now);
        warn!(
            replica = self.shared.cfg.id,
            peer = from,
            round = self.replica.round(),
            reason = reason.as_str(),
            "rejected a peer's consensus message"
        );
    }

    fn publish_status(&self) {
        let status = CoreStatus {
            consensus: self.replica.metrics.clone(),
            round: self.replica.round(),
            leader: self.replica.leader() as u64,
            committed_height: self.replica.committed_height(),
            tree_size: self.replica.tree_size(),
            mempool_entries: self.replica.pending_entries(),
            waiting_entries: self.waiters.entries,
            latest_checkpoint_size: self.latest_checkpoint,
            latest_witnessed_size: self.latest_witnessed,
        };
        *self.shared.status.lock().expect("status lock") = status;
    }

    fn after_commit(&mut self, batch: &WriteBatch) {
        for commit in &batch.commits {
            for (offset, leaf) in commit.leaves.iter().enumerate() {
                if self.waiters.by_leaf.is_empty() {
                    break;
                }
                let Some(list) = self.waiters.by_leaf.remove(leaf) else {
                    continue;
                };
                for (id, pos) in list {
                    let Some(waiter) = self.waiters.requests.get_mut(&id) else {
                        continue;
                    };
                    if waiter.indexes[pos].is_none() {
                        waiter.indexes[pos] = Some(commit.first_index + offset as u64);
                        waiter.missing -= 1;
                        if waiter.missing == 0 {
                            self.indexed(id);
                        }
                    }
                }
            }
        }
        if let Some((size, note)) = batch.checkpoints.last() {
            self.answer_covered();
            if let (Some(tx), Ok(note)) = (&self.witness_tx, Note::parse(note.as_bytes())) {
                tx.send_replace(Some((*size, Arc::new(note))));
            }
        }
    }

    /// Whether receipts wait for witness cosignatures.
    fn waits_for_witnesses(&self) -> bool {
        let cluster = &self.shared.cfg.cluster;
        !cluster.witnesses.is_empty() && cluster.wait_for_witnesses
    }

    /// Receipts are built on the checkpoint of this size (see
    /// `api::served_checkpoint`), so it must cover an entry before the
    /// entry's request is answered.
    fn receipt_size(&self) -> u64 {
        if self.waits_for_witnesses() {
            self.latest_witnessed
        } else {
            self.latest_checkpoint
        }
    }

    fn answer_covered(&mut self) {
        let covered: Vec<u64> = self
            .waiters
            .by_index
            .range(..self.receipt_size())
            .map(|(i, _)| *i)
            .collect();
        for index in covered {
            for id in self.waiters.by_index.remove(&index).unwrap_or_default() {
                self.answer(id);
            }
        }
    }

    /// Merges verified witness cosignatures into the stored checkpoint of
    /// `size` (replacing older ones by the same witness key) and records
    /// whether the witness quorum is now met.
    fn cosigned(&mut self, size: u64, signatures: Vec<NoteSignature>) -> Result<(), StoreError> {
        let Some(text) = self.store.checkpoint_at(size)? else {
            return Ok(());
        };
        let Ok(stored) = Note::parse(text.as_bytes()) else {
            return Ok(());
        };
        let mut note = Note::new(stored.text()).expect("a stored note's text is valid");
        for existing in stored.signatures() {
            if !signatures
                .iter()
                .any(|s| s.name == existing.name && s.key_id == existing.key_id)
            {
                let _ = note.add_signature(existing.clone());
            }
        }
        for signature in signatures {
            if note.add_signature(signature).is_err() {
                warn!(
                    size,
                    "cosignature dropped: the note would exceed its size limit"
                );
            }
        }
        let witnessed = self
            .shared
            .cfg
            .cluster
            .policy()
            .verify_checkpoint(&note)
            .is_ok();
        self.store
            .add_cosignatures(size, &note.format(), witnessed)?;
        if witnessed && size > self.latest_witnessed {
            self.latest_witnessed = size;
            debug!(replica = self.shared.cfg.id, size, "witness quorum met");
            self.answer_covered();
        }
        Ok(())
    }

    fn send(&mut self, to: Target, message: &ConsensusMessage) {
        // The core bounds what it sends; should a message still exceed the
        // frame limit, it is dropped and counted, never a dead core loop.
        let frame = match wire::try_encode_frame(message) {
            Ok(frame) => Arc::new(frame),
            Err(len) => {
                self.shared
                    .metrics
                    .messages_oversized
                    .fetch_add(1, Ordering::Relaxed);
                error!(
                    replica = self.shared.cfg.id,
                    bytes = len,
                    kind = message.kind(),
                    "dropped an outgoing message over the frame limit"
                );
                return;
            }
        };
        let mut push = |peer: usize| {
            if let Some(Some(tx)) = self.peers.get(peer) {
                if tx.try_send(frame.clone()).is_err() {
                    self.shared
                        .metrics
                        .peer_frames_dropped
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
        };
        match to {
            Target::All => (0..self.peers.len()).for_each(&mut push),
            Target::One(peer) => push(peer as usize),
        }
    }
}

// ---------------------------------------------------------------------------
// Network tasks
// ---------------------------------------------------------------------------

/// Sleeps 10 ms at a time, forever, and reports how late each wake-up
/// was: a late timer means every other task of the runtime waited too.
pub async fn report_timer_lateness(mut report: impl FnMut(Duration)) {
    let tick = Duration::from_millis(10);
    loop {
        let asleep = Instant::now();
        tokio::time::sleep(tick).await;
        report(asleep.elapsed().saturating_sub(tick));
    }
}

/// Logs and counts when the network runtime falls behind by [`SLOW_STEP`]
/// or more: every peer message and client request of this replica waited.
async fn runtime_watchdog(shared: Arc<Shared>) {
    report_timer_lateness(|late| {
        if late >= SLOW_STEP {
            shared
                .metrics
                .runtime_stalls
                .fetch_add(1, Ordering::Relaxed);
            warn!(
                replica = shared.cfg.id,
                late_ms = late.as_millis() as u64,
                "network runtime stalled: peer messages and client requests waited"
            );
        }
    })
    .await
}

/// How long a link to a peer must have lasted for a redial after it breaks
/// to start without a backoff.
const PEER_LINK_STABLE: Duration = Duration::from_secs(1);

/// Keeps a connection to one peer and writes its queued frames on a
/// long-lived unidirectional stream, reconnecting with backoff.
async fn peer_sender(
    shared: Arc<Shared>,
    endpoint: quinn::Endpoint,
    peer: u16,
    mut rx: tmpsc::Receiver<Arc<Vec<u8>>>,
) {
    let cluster = &shared.cfg.cluster;
    let addr = cluster.addresses[peer as usize];
    let config = match net::client_config(
        &shared.cfg.key,
        &[*cluster.keys[peer as usize].public_key()],
        net::ALPN_PEER,
        &shared.cfg.limits,
    ) {
        Ok(c) => c,
        Err(e) => {
            error!(peer, error = %e, "cannot build the peer TLS configuration");
            return;
        }
    };
    let mut backoff = Duration::from_millis(50);
    let mut logged = false;
    loop {
        let connecting = match endpoint.connect_with(config.clone(), addr, net::SERVER_NAME) {
            Ok(connecting) => connecting,
            Err(e) => {
                error!(peer, error = %e, "cannot dial peer");
                return;
            }
        };
        // An attempt whose first packet found no listener (the peer not
        // started yet, or restarting) waits for the handshake's
        // retransmissions, which back off; a fresh attempt every
        // PEER_CONNECT_ATTEMPT brings the link up soon after the peer is.
        let failure = match tokio::time::timeout(net::PEER_CONNECT_ATTEMPT, connecting).await {
            Ok(Ok(connection)) => {
                let connected_at = tokio::time::Instant::now();
                logged = false;
                debug!(replica = shared.cfg.id, peer, "connected to peer");
                shared.metrics.peer_connects.fetch_add(1, Ordering::Relaxed);
                shared
                    .metrics
                    .peers_connected
                    .fetch_add(1, Ordering::Relaxed);
                if let Ok(mut stream) = connection.open_uni().await {
                    while let Some(frame) = rx.recv().await {
                        if stream.write_all(&frame).await.is_err() {
                            break;
                        }
                    }
                }
                shared
                    .metrics
                    .peers_connected
                    .fetch_sub(1, Ordering::Relaxed);
                if rx.is_closed() && rx.is_empty() {
                    return;
                }
                // A link that worked for a while is dialled again at once;
                // one that broke right after its handshake (a peer that
                // closes what it accepted) is retried with the backoff, not
                // at the handshake's pace.
                if connected_at.elapsed() >= PEER_LINK_STABLE {
                    backoff = Duration::from_millis(50);
                    continue;
                }
                Some("the link broke right after its handshake".to_owned())
            }
            Ok(Err(e)) => Some(e.to_string()),
            // The attempt itself took its time: dial again at once.
            Err(_) => None,
        };
        if !logged {
            debug!(
                replica = shared.cfg.id,
                peer,
                error = failure.as_deref().unwrap_or("no answer"),
                "peer unreachable; retrying"
            );
            logged = true;
        }
        // Drop what piles up while the peer is away: sync repairs it.
        while rx.try_recv().is_ok() {}
        if rx.is_closed() {
            return; // the replica is stopping
        }
        if failure.is_some() {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }
}

async fn accept_loop(shared: Arc<Shared>, endpoint: quinn::Endpoint) {
    while let Some(incoming) = endpoint.accept().await {
        let shared = shared.clone();
        tokio::spawn(async move {
            let Ok(connection) = incoming.await else {
                return;
            };
            match net::alpn(&connection).as_deref() {
                Some(net::ALPN_PEER) => {
                    let replicas = shared.cfg.cluster.public_keys();
                    match net::peer_replica(&connection, &replicas, shared.cfg.id) {
                        Some(peer) => serve_peer(shared, connection, peer).await,
                        None => {
                            shared
                                .metrics
                                .peers_rejected
                                .fetch_add(1, Ordering::Relaxed);
                            warn!(
                                replica = shared.cfg.id,
                                remote = %connection.remote_address(),
                                "rejected a peer connection with an unknown key"
                            );
                            connection.close(1u32.into(), b"unknown replica key");
                        }
                    }
                }
                Some(net::ALPN_CLIENT) => crate::api::serve_client(shared, connection).await,
                _ => connection.close(1u32.into(), b"unknown protocol"),
            }
        });
    }
}

/// Reads consensus messages from one authenticated peer.
async fn serve_peer(shared: Arc<Shared>, connection: quinn::Connection, peer: u16) {
    while let Ok(mut stream) = connection.accept_uni().await {
        let shared = shared.clone();
        let connection = connection.clone();
        tokio::spawn(async move {
            loop {
                match net::read_frame(&mut stream, shared.cfg.limits.max_frame_bytes).await {
                    Ok(Some(frame)) => match wire::decode::<ConsensusMessage>(&frame) {
                        Ok(message) => {
                            let input = CoreInput::Peer {
                                from: peer,
                                message: Box::new(message),
                            };
                            if shared.core_tx.try_send(input).is_err() {
                                shared
                                    .metrics
                                    .peer_frames_dropped
                                    .fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Err(e) => {
                            shared
                                .metrics
                                .peer_messages_malformed
                                .fetch_add(1, Ordering::Relaxed);
                            debug!(replica = shared.cfg.id, peer, error = %e, "malformed peer message");
                        }
                    },
                    Ok(None) => return,
                    Err(e) => {
                        // A framing error desynchronises the stream: close it.
                        shared
                            .metrics
                            .peer_messages_malformed
                            .fetch_add(1, Ordering::Relaxed);
                        debug!(replica = shared.cfg.id, peer, error = %e, "peer stream failed");
                        connection.close(2u32.into(), b"bad frame");
                        return;
                    }
                }
            }
        });
    }
}
