//! The replica driver: feeds the sans-IO consensus core and performs its
//! actions, in order.
//!
//! - [`Node`] (this file): starts a replica and stops it.
//! - `core_loop`: one OS thread owns the core and the database writer. It
//!   waits for an input or the core's next timer, hands the input to the
//!   core, then drains the core's steps (`bftlog_consensus::Step`) until
//!   it is quiet.
//! - `client_api`: the client protocol, one task per request.
//! - `peers`: a task per peer that sends, and the accept loop.
//! - `metrics`: the Prometheus endpoint and the runtime watchdog.
//! - `witnessing`: submits quorum checkpoints to the cluster's witnesses.
//! - `shared`: what those tasks share (no module above imports another
//!   except through it, and `peers` hands client connections to
//!   `client_api`).
//!
//! A core loop step:
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
//! Queues are bounded in bytes everywhere (`queues`): a full peer queue
//! drops the message (consensus tolerates loss), a full lane of the core
//! loop's inbox drops a peer's message or answers a client `Overloaded`.
//! The inbox hands the core peers' messages before clients' appends.
//! - `connections`: which client connections are taken (caps, Retry).
//! - `sync_from_storage`: sync below the core's in-memory window, served
//!   by the requesting peer's reader task from a read snapshot.

mod client_api;
mod connections;
mod core_loop;
mod http_server;
mod metrics;
mod peers;
mod queues;
mod shared;
mod sync_from_storage;
mod tiles_http;
pub mod tiles_publish;
mod witnessing;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bftlog_consensus::Replica;
use bftlog_spec::note::Note;
use tracing::info;

use crate::config::ReplicaConfig;
use crate::net;
use crate::storage::{Store, StoreError};

pub use core_loop::{SLOW_STEP, SLOW_WRITE};
pub use metrics::report_timer_lateness;
pub use shared::{AppendOutcome, CoreStatus, DriverMetrics};
use shared::{CoreInput, Shared};

/// Why a replica could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    #[error(
        "{}: {source} (if the file is damaged, move the data directory away and start the \
         replica with an empty one: it syncs the log from its peers)",
        path.display()
    )]
    Database {
        path: std::path::PathBuf,
        source: StoreError,
    },
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
    #[error("tiles publishing: {0}")]
    Publish(#[from] object_store::Error),
    #[error("admission: {0}")]
    Admission(#[from] crate::config::ConfigError),
}

/// A running replica.
pub struct Node {
    shared: Arc<Shared>,
    metrics_addr: Option<SocketAddr>,
    tiles_addr: Option<SocketAddr>,
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
        let path = cfg.data_dir.join("bftlog.redb");
        let database = |source| StartError::Database {
            path: path.clone(),
            source,
        };
        let writer = Store::open(&path, cfg.cluster.epoch, cfg.cache_mb << 20).map_err(database)?;
        let store = writer.store().clone();
        let recovered = writer
            .recover(
                cfg.cluster.epoch,
                cfg.consensus.retain_committed_blocks,
                cfg.consensus.retain_committed_bytes,
            )
            .map_err(database)?;
        let admission = crate::admission::Admission::new(cfg.admission.clone())?;
        let started = Instant::now();
        let replica = Replica::new(
            cfg.consensus.clone(),
            cfg.id,
            cfg.key.clone(),
            crate::system_rng(),
            recovered,
            Duration::ZERO,
        )?;
        let server = net::server_config(&cfg.key, &cfg.limits)?;
        let endpoint =
            net::endpoint(cfg.listen, server, &cfg.key).map_err(|source| StartError::Listen {
                addr: cfg.listen,
                source,
            })?;
        let n = cfg.cluster.n();
        let mut outboxes = Vec::with_capacity(n);
        let mut outbox_receivers = Vec::with_capacity(n);
        for peer in 0..n as u16 {
            if peer == cfg.id {
                outboxes.push(None);
                continue;
            }
            let (outbox, receiver) = queues::peer_outbox(cfg.queues.peer_outbox_bytes);
            outboxes.push(Some(outbox));
            outbox_receivers.push((peer, receiver));
        }
        let shared = Arc::new(Shared {
            store: store.clone(),
            inbox: queues::CoreInbox::new(
                n,
                cfg.queues.peer_inbox_bytes,
                cfg.queues.client_inbox_bytes,
            ),
            outboxes,
            oldest_retained_height: AtomicU64::new(replica.oldest_retained_height()),
            served_checkpoint_size: AtomicU64::new(0),
            storage_sync_rate: sync_from_storage::StorageSyncRate::new(&cfg.consensus),
            peer_message_rate: queues::PeerMessageRate::new(n, cfg.queues.peer_messages_per_s),
            connections: connections::ConnectionTable::new(&cfg.limits, &cfg.cluster.addresses),
            request_bytes: Arc::new(tokio::sync::Semaphore::new(
                cfg.limits.max_inflight_request_bytes,
            )),
            admission: std::sync::Mutex::new(admission),
            started,
            metrics: DriverMetrics::default(),
            stopping: AtomicBool::new(false),
            stop_reason: std::sync::Mutex::new(None),
            status: std::sync::Mutex::new(CoreStatus::default()),
            cfg,
        });
        let mut tasks = tokio::task::JoinSet::new();
        for (peer, receiver) in outbox_receivers {
            tasks.spawn(peers::peer_sender(
                shared.clone(),
                endpoint.clone(),
                peer,
                receiver,
            ));
        }
        tasks.spawn(peers::accept_loop(shared.clone(), endpoint.clone()));
        tasks.spawn(metrics::runtime_watchdog(shared.clone()));
        let mut metrics_addr = None;
        if let Some(addr) = shared.cfg.metrics_listen {
            let listener = metrics::bind(addr)
                .await
                .map_err(|source| StartError::Listen { addr, source })?;
            metrics_addr = listener.local_addr().ok();
            tasks.spawn(metrics::serve(shared.clone(), listener));
        }
        if let Some(target) = &shared.cfg.tiles_publish {
            let (store, prefix) = tiles_publish::open(target)?;
            tasks.spawn(tiles_publish::run(shared.clone(), store, prefix));
        }
        let mut tiles_addr = None;
        if let Some(addr) = shared.cfg.tiles_listen {
            let listener = tiles_http::bind(addr)
                .await
                .map_err(|source| StartError::Listen { addr, source })?;
            tiles_addr = listener.local_addr().ok();
            tasks.spawn(tiles_http::serve(shared.clone(), listener));
        }
        let initial = match store.latest_checkpoint()? {
            Some((size, text)) => Note::parse(text.as_bytes())
                .ok()
                .map(|note| (size, Arc::new(note))),
            None => None,
        };
        let witness_tx = witnessing::spawn(&shared, initial, &mut tasks);
        {
            let admission = shared.admission.lock().expect("admission lock");
            info!(
                replica = shared.cfg.id,
                mode = ?admission.mode(),
                submitters = admission.listed(),
                "admission"
            );
        }
        info!(
            replica = shared.cfg.id,
            listen = %shared.cfg.listen,
            tree_size = store.tree_size(),
            height = replica.committed_height(),
            "replica started"
        );
        let core = core_loop::spawn(shared.clone(), replica, writer, started, witness_tx);
        Ok(Node {
            shared,
            metrics_addr,
            tiles_addr,
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

    /// The bound tiles endpoint address, if enabled.
    pub fn tiles_addr(&self) -> Option<SocketAddr> {
        self.tiles_addr
    }

    pub fn metrics(&self) -> &DriverMetrics {
        &self.shared.metrics
    }

    /// Reads the submitters file again (keys mode; `bftlog serve` does on
    /// SIGHUP). On error the previous list stays in force. Returns the
    /// number of keys listed.
    pub fn reload_admission(&self) -> Result<usize, crate::config::ConfigError> {
        // The file is read and parsed outside the lock, which every append
        // takes; only the swap happens under it.
        let result = crate::admission::load_submitters(&self.shared.cfg.admission).map(|listed| {
            let mut admission = self.shared.admission.lock().expect("admission lock");
            match listed {
                Some(listed) => admission.apply(listed),
                None => 0,
            }
        });
        let id = self.shared.cfg.id;
        let metrics = &self.shared.metrics;
        match &result {
            Ok(listed) => {
                metrics.admission_reloads.fetch_add(1, Ordering::Relaxed);
                info!(replica = id, listed, "admission: submitters file reloaded");
            }
            Err(e) => {
                metrics
                    .admission_reload_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    replica = id,
                    error = %e,
                    "admission: reload failed; the previous list stays in force"
                );
            }
        }
        result
    }

    /// True once the core loop stopped (storage failure or shutdown).
    pub fn is_stopped(&self) -> bool {
        self.shared.stopping.load(Ordering::SeqCst)
    }

    /// Waits until the core loop stops by itself (a storage failure, or a
    /// panic: a bug), and says why.
    pub async fn stopped(&self) -> String {
        while !self.is_stopped() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.shared
            .stop_reason
            .lock()
            .expect("stop reason lock")
            .clone()
            .unwrap_or_else(|| "the core loop ended (a bug: see the log above)".into())
    }

    /// Stops serving, lets the core loop finish its current step and
    /// closes the database.
    pub async fn shutdown(mut self) -> Result<(), StoreError> {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.endpoint.close(0u32.into(), b"shutdown");
        self.shared.inbox.push_control(CoreInput::Shutdown);
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
