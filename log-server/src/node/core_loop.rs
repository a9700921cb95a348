//! The core loop: one OS thread that owns the consensus core and the
//! database writer. It waits for an input or the core's next timer, hands
//! the input to the core, then drains the core's steps until it is quiet
//! (see the module docs of `node` for the order of a step).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bftlog_consensus::digest_hash::DigestMap;
use bftlog_consensus::{
    CheckpointEvent, ClientId, Event, Rejection, Replica, SubmitResult, Target,
};
use bftlog_spec::checkpoint::Checkpoint;
use bftlog_spec::merkle::{self, Hash};
use bftlog_spec::note::{Note, NoteSignature};
use bftlog_spec::wire::{self, ConsensusMessage, Entry, ErrorCode, ReplicaId};
use tokio::sync::oneshot;
use tracing::{debug, error, info, warn};

use super::shared::{AppendOutcome, CoreInput, CoreStatus, ServedCheckpoint, Shared};
use super::witnessing;
use crate::SystemRng;
use crate::storage::{StoreError, StoreWriter, WriteBatch};

const REJECTION_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// A durable write this slow is logged and counted: a round cannot go
/// faster than its leader's and its voters' writes.
pub const SLOW_WRITE: Duration = Duration::from_millis(100);
/// A core loop step this slow is logged and counted: every peer message,
/// append and timer of the replica waited for it.
pub const SLOW_STEP: Duration = Duration::from_millis(100);

/// How long receipts wait for the cluster signature on the checkpoint
/// that covers their entries before they are answered with that
/// checkpoint's replica signatures alone (a cluster signature normally
/// forms within a round trip of the quorum; without a quorum of honest
/// signers it never does).
pub const CLUSTER_SIGNATURE_WAIT: Duration = Duration::from_millis(2000);

/// Commit times kept for [`CoreLoop::commit_times`].
const COMMIT_TIMES_KEPT: usize = 4096;

/// Marks the node stopped when dropped (the core loop's end or unwind).
struct StopOnExit(Arc<Shared>);

impl Drop for StopOnExit {
    fn drop(&mut self) {
        self.0.stopping.store(true, Ordering::SeqCst);
    }
}

/// Starts the core loop on its own thread. It sets `stopping` however it
/// ends, a panic included: `bftlog serve` then exits instead of answering
/// as a replica whose consensus has stopped.
pub(super) fn spawn(
    shared: Arc<Shared>,
    replica: Replica<SystemRng>,
    writer: StoreWriter,
    started: Instant,
    witness_tx: Option<tokio::sync::watch::Sender<witnessing::Latest>>,
) -> std::thread::JoinHandle<Result<(), StoreError>> {
    std::thread::Builder::new()
        .name(format!("bftlog-core-{}", shared.cfg.id))
        .spawn(move || {
            let _stop_on_exit = StopOnExit(shared.clone());
            let mut core = CoreLoop {
                shared: shared.clone(),
                replica,
                writer,
                started,
                waiters: Waiters::default(),
                pending_quorum: BTreeMap::new(),
                latest_checkpoint: None,
                latest_witnessed: None,
                latest_cluster_signed: None,
                awaiting_cluster: VecDeque::new(),
                witness_notified: (0, false),
                commit_times: std::collections::VecDeque::new(),
                rejection_logged: HashMap::new(),
                witness_tx,
            };
            let result = core.run();
            if let Err(e) = &result {
                *shared.stop_reason.lock().expect("stop reason lock") =
                    Some(format!("storage failed: {e}"));
            }
            shared.stopping.store(true, Ordering::SeqCst);
            result
        })
        .expect("spawn core thread")
}

#[derive(Default)]
struct Waiters {
    next_id: u64,
    requests: HashMap<u64, Waiter>,
    /// Leaf hash → (request, position) for entries not yet committed.
    by_leaf: DigestMap<Hash, Vec<(u64, usize)>>,
    /// Requests whose entries all have indexes, by the highest index.
    by_index: BTreeMap<u64, Vec<u64>>,
    /// Entries waiting in all requests, and per client.
    entries: usize,
    by_client: HashMap<ClientId, usize>,
}

impl Waiters {
    /// Removes a request, releasing its entries from the counts.
    fn take(&mut self, id: u64) -> Option<Waiter> {
        let waiter = self.requests.remove(&id)?;
        self.entries -= waiter.indexes.len();
        let held = self
            .by_client
            .get_mut(&waiter.client)
            .expect("a waiting request's client is counted");
        *held -= waiter.indexes.len();
        if *held == 0 {
            self.by_client.remove(&waiter.client);
        }
        Some(waiter)
    }
}

struct Waiter {
    client: ClientId,
    indexes: Vec<Option<u64>>,
    leaves: Vec<Hash>,
    missing: usize,
    deadline: Duration,
    reply: oneshot::Sender<AppendOutcome>,
}

struct CoreLoop {
    shared: Arc<Shared>,
    replica: Replica<SystemRng>,
    writer: StoreWriter,
    started: Instant,
    waiters: Waiters,
    /// Quorum checkpoints beyond the stored tree, stored once it reaches them.
    pending_quorum: BTreeMap<u64, Note>,
    /// Latest stored quorum checkpoint, as served.
    latest_checkpoint: Option<ServedCheckpoint>,
    /// Latest stored checkpoint whose cosignatures meet the witness quorum.
    latest_witnessed: Option<ServedCheckpoint>,
    /// Latest stored checkpoint carrying the cluster signature.
    latest_cluster_signed: Option<ServedCheckpoint>,
    /// With a cluster key: the stored checkpoints newer than
    /// `latest_cluster_signed`, by increasing size, with when each was
    /// stored. An entry's receipt waits [`CLUSTER_SIGNATURE_WAIT`] from
    /// the storing of the first checkpoint covering it. Only the newest
    /// one stored that long ago matters, so older ones are dropped.
    awaiting_cluster: VecDeque<(u64, Duration)>,
    /// The largest size sent to the witness tasks, and whether that note
    /// carried the cluster signature (a witness that knows the log by its
    /// cluster key alone needs the note again once it does).
    witness_notified: (u64, bool),
    /// When this replica committed each recent size (the newest
    /// [`COMMIT_TIMES_KEPT`]), to time checkpoints against.
    commit_times: std::collections::VecDeque<(u64, Duration)>,
    /// When each (peer, reason) rejection was last logged.
    rejection_logged: HashMap<(ReplicaId, Rejection), Instant>,
    /// Publishes each new stored quorum checkpoint to the witness tasks.
    witness_tx: Option<tokio::sync::watch::Sender<witnessing::Latest>>,
}

impl CoreLoop {
    fn now(&self) -> Duration {
        self.started.elapsed()
    }

    fn run(&mut self) -> Result<(), StoreError> {
        let served = |c: Option<(u64, String)>| {
            c.map(|(size, note)| ServedCheckpoint {
                size,
                note: note.into(),
            })
        };
        self.latest_checkpoint = served(self.writer.latest_checkpoint()?);
        self.latest_witnessed = served(self.writer.latest_witnessed_checkpoint()?);
        self.latest_cluster_signed = self
            .latest_checkpoint
            .clone()
            .filter(|c| self.is_cluster_signed(&c.note));
        if let Some(latest) = &self.latest_checkpoint {
            if self.shared.cfg.cluster.cluster_key.is_some() && self.latest_cluster_signed.is_none()
            {
                // Its entries' receipts wait from now.
                self.awaiting_cluster.push_back((latest.size, self.now()));
            }
        }
        self.publish_served();
        self.drive()?;
        loop {
            let now = self.now();
            // Waiter deadlines are checked at least once a second.
            let wait = self
                .replica
                .poll_timeout()
                .map_or(Duration::from_secs(1), |t| t.saturating_sub(now))
                .min(Duration::from_secs(1));
            let shared = self.shared.clone();
            match shared.inbox.recv_timeout(wait) {
                Some(CoreInput::Shutdown) => return self.writer.sync(),
                Some(input) => {
                    self.handle(input)?;
                    // Take what else is queued before draining: it batches
                    // votes and appends into one durable write.
                    for _ in 0..1024 {
                        match shared.inbox.try_recv() {
                            Some(CoreInput::Shutdown) => return self.writer.sync(),
                            Some(input) => self.handle(input)?,
                            None => break,
                        }
                    }
                }
                None => {}
            }
            let step = Instant::now();
            let now = self.now();
            if self.replica.poll_timeout().is_some_and(|t| t <= now) {
                self.replica.handle_timeout(now);
            }
            self.expire_waiters(now);
            if !self.awaiting_cluster.is_empty() {
                // Receipts held for the cluster signature go at its wait,
                // and so does the served checkpoint.
                self.answer_covered();
                self.publish_served();
            }
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
                self.replica.handle_message(now, from, *message);
            }
            CoreInput::Append {
                client,
                entries,
                reply,
            } => self.append(now, client, entries, reply)?,
            CoreInput::Cosigned { size, signatures } => self.cosigned(size, signatures)?,
            CoreInput::Shutdown => {}
        }
        Ok(())
    }

    fn append(
        &mut self,
        now: Duration,
        client: ClientId,
        entries: Vec<Entry>,
        reply: oneshot::Sender<AppendOutcome>,
    ) -> Result<(), StoreError> {
        let max = self.shared.cfg.consensus.max_entry_bytes;
        if let Some(i) = entries.iter().position(|e| e.len() > max) {
            let _ = reply.send(AppendOutcome::Refused(
                ErrorCode::TooLarge,
                format!(
                    "entry {i} has {} bytes; the limit is {max}",
                    entries[i].len()
                ),
            ));
            return Ok(());
        }
        let metrics = &self.shared.metrics;
        if self.waiters.entries + entries.len() > self.shared.cfg.max_waiting_entries {
            let message = "too many appends waiting for receipts";
            overloaded(reply, &metrics.appends_overloaded, 1000, message);
            return Ok(());
        }
        let waiting = self.waiters.by_client.get(&client).copied().unwrap_or(0);
        if waiting + entries.len() > self.shared.cfg.max_waiting_entries_per_client {
            let message =
                "this client has its share of entries waiting for receipts; wait for them";
            overloaded(reply, &metrics.appends_over_share, 1000, message);
            return Ok(());
        }
        let leaves: Vec<Hash> = entries.iter().map(|e| merkle::leaf_hash(e)).collect();
        let mut indexes = self.writer.indexes_of(&leaves)?;
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
            self.replica.submit_hashed(now, client, submit)
        };
        let mut mempool_full = None;
        let mut over_share = None;
        for (pos, result) in submit_pos.iter().zip(results) {
            match result {
                SubmitResult::Accepted | SubmitResult::AlreadyPending => {}
                SubmitResult::AlreadyCommitted => {
                    indexes[*pos] = self.writer.index_of(&leaves[*pos])?;
                }
                SubmitResult::TooLarge => {
                    let _ = reply.send(AppendOutcome::Refused(
                        ErrorCode::TooLarge,
                        format!("entry {pos} is too large"),
                    ));
                    return Ok(());
                }
                SubmitResult::Overloaded { retry_after_ms } => {
                    mempool_full = Some(retry_after_ms);
                }
                SubmitResult::OverShare { retry_after_ms } => {
                    over_share = Some(retry_after_ms);
                }
            }
        }
        let metrics = &self.shared.metrics;
        if let Some(retry_after_ms) = mempool_full {
            let message = "the mempool is full; entries it accepted will still commit, and resubmitting is idempotent";
            overloaded(reply, &metrics.appends_overloaded, retry_after_ms, message);
            return Ok(());
        }
        if let Some(retry_after_ms) = over_share {
            let message = "this client holds its share of the mempool; entries it accepted will still commit, and resubmitting is idempotent";
            overloaded(reply, &metrics.appends_over_share, retry_after_ms, message);
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
        *self.waiters.by_client.entry(client).or_default() += indexes.len();
        let deadline = now + Duration::from_millis(self.shared.cfg.append_timeout_ms);
        self.waiters.requests.insert(
            id,
            Waiter {
                client,
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
        let covered_below = self.covered_below();
        match highest {
            Some(h) if h < covered_below => self.answer(id),
            // Answered by `answer_covered` once a checkpoint covers it (an
            // append always has an entry; none would wait for the first).
            _ => {
                let h = highest.unwrap_or(0);
                self.waiters.by_index.entry(h).or_default().push(id);
            }
        }
    }

    /// Answers a request whose entries the receipt checkpoint covers.
    fn answer(&mut self, id: u64) {
        let Some(highest) = self.waiters.requests.get(&id).map(|w| {
            w.indexes
                .iter()
                .map(|i| i.expect("indexed"))
                .max()
                .unwrap_or(0)
        }) else {
            return;
        };
        let Some(checkpoint) = self.receipt_checkpoint(highest).cloned() else {
            return;
        };
        if let Some(waiter) = self.waiters.take(id) {
            let indexes = waiter
                .indexes
                .into_iter()
                .map(|i| i.expect("indexed"))
                .collect();
            let _ = waiter.reply.send(AppendOutcome::Committed {
                indexes,
                checkpoint,
            });
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
            if let Some(waiter) = self.waiters.take(id) {
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
            let now = self.now();
            for commit in &batch.commits {
                self.commit_times.push_back((commit.size, now));
            }
            while self.commit_times.len() > COMMIT_TIMES_KEPT {
                self.commit_times.pop_front();
            }
            for event in step.checkpoints {
                match event {
                    CheckpointEvent::Quorum { size, note } => {
                        if size > self.latest_checkpoint_size()
                            && !self.pending_quorum.contains_key(&size)
                        {
                            self.pending_quorum.insert(size, note);
                        } else {
                            // Formed again (after a restart): whatever
                            // it has that the held note lacks.
                            self.merge_signatures(&mut batch, size, &note);
                        }
                    }
                    CheckpointEvent::ClusterSigned { size, root, line } => {
                        let text =
                            Checkpoint::new(&self.shared.cfg.cluster.origin, size, root).format();
                        let Ok(mut note) = Note::new(&text) else {
                            continue;
                        };
                        if note.add_signature(line).is_ok() {
                            self.merge_signatures(&mut batch, size, &note);
                        }
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
                batch.nonces.extend(request.nonces);
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
            .map_or(self.writer.tree_size(), |c| c.size);
        let ready: Vec<u64> = self
            .pending_quorum
            .range(..=tree_size)
            .map(|(s, _)| *s)
            .collect();
        for size in ready {
            let note = self.pending_quorum.remove(&size).expect("listed");
            if size <= self.latest_checkpoint_size() {
                continue;
            }
            let root = match batch.commits.iter().find(|c| c.size == size) {
                Some(c) => c.root,
                None => match self.writer.root_at(size) {
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
            let note = note.format();
            self.set_latest(ServedCheckpoint {
                size,
                note: note.as_str().into(),
            });
            batch.checkpoints.push((size, note));
        }
    }

    /// Whether `note` carries the cluster signature (it was verified by
    /// the core before it reached a note).
    fn is_cluster_signed(&self, note: &str) -> bool {
        let Some(key) = &self.shared.cfg.cluster.cluster_key else {
            return false;
        };
        Note::parse(note.as_bytes()).is_ok_and(|n| {
            n.signatures()
                .iter()
                .any(|s| s.key_id == key.key_id() && s.name == key.name())
        })
    }

    /// Microseconds from the commit that made a tree of `size` to now,
    /// if that commit is among those remembered.
    fn since_commit_micros(&self, size: u64) -> Option<u64> {
        self.commit_times
            .binary_search_by_key(&size, |(s, _)| *s)
            .ok()
            .map(|i| {
                self.now()
                    .saturating_sub(self.commit_times[i].1)
                    .as_micros() as u64
            })
    }

    /// Records a stored quorum checkpoint as the latest, and whether it
    /// carries the cluster signature.
    fn set_latest(&mut self, checkpoint: ServedCheckpoint) {
        if checkpoint.size > self.latest_checkpoint_size() {
            if let Some(micros) = self.since_commit_micros(checkpoint.size) {
                let metrics = &self.shared.metrics;
                metrics.quorum_checkpoints.fetch_add(1, Ordering::Relaxed);
                metrics
                    .quorum_checkpoint_lag_micros
                    .fetch_add(micros, Ordering::Relaxed);
            }
        }
        if self.is_cluster_signed(&checkpoint.note) {
            self.cluster_signed_stored(&checkpoint);
        } else if self.shared.cfg.cluster.cluster_key.is_some()
            && self
                .awaiting_cluster
                .back()
                .is_none_or(|(size, _)| *size < checkpoint.size)
        {
            let now = self.now();
            self.awaiting_cluster.push_back((checkpoint.size, now));
        }
        if self
            .latest_witnessed
            .as_ref()
            .is_some_and(|w| w.size == checkpoint.size)
        {
            self.latest_witnessed = Some(checkpoint.clone());
        }
        self.latest_checkpoint = Some(checkpoint);
    }

    /// A stored checkpoint now carries the cluster signature (when it was
    /// stored, or later): counted with its lag from commit, and if it is
    /// the newest such, what receipts take.
    fn cluster_signed_stored(&mut self, checkpoint: &ServedCheckpoint) {
        if self
            .latest_cluster_signed
            .as_ref()
            .is_some_and(|c| c.size >= checkpoint.size)
        {
            return;
        }
        if let Some(micros) = self.since_commit_micros(checkpoint.size) {
            let metrics = &self.shared.metrics;
            metrics
                .cluster_signed_checkpoints
                .fetch_add(1, Ordering::Relaxed);
            metrics
                .cluster_signature_lag_micros
                .fetch_add(micros, Ordering::Relaxed);
        }
        while self
            .awaiting_cluster
            .front()
            .is_some_and(|(size, _)| *size <= checkpoint.size)
        {
            self.awaiting_cluster.pop_front();
        }
        self.latest_cluster_signed = Some(checkpoint.clone());
    }

    /// Adds the signatures of `note` that this replica's quorum note of
    /// the same size lacks (a cluster signature that formed after it) to
    /// that note, wherever it is: waiting for the tree, in this step's
    /// write, or stored (its witness cosignatures kept). Without a quorum
    /// note of that size here there is nothing to add to.
    fn merge_signatures(&mut self, batch: &mut WriteBatch, size: u64, note: &Note) {
        let add_missing = |held: &mut Note| {
            let mut added = false;
            for signature in note.signatures() {
                let known = held
                    .signatures()
                    .iter()
                    .any(|s| s.name == signature.name && s.key_id == signature.key_id);
                if !known && held.add_signature(signature.clone()).is_ok() {
                    added = true;
                }
            }
            added
        };
        let alarm = |id| {
            error!(
                replica = id,
                size, "SAFETY ALARM: two quorum checkpoint texts for one size; not merged"
            )
        };
        if let Some(pending) = self.pending_quorum.get_mut(&size) {
            if pending.text() == note.text() {
                add_missing(pending);
            } else {
                alarm(self.shared.cfg.id);
            }
            return;
        }
        let held = match batch.checkpoints.iter().find(|(s, _)| *s == size) {
            Some((_, text)) => Some(text.clone()),
            None if size == self.latest_checkpoint_size() => {
                self.latest_checkpoint.as_ref().map(|c| c.note.to_string())
            }
            None => match self.writer.checkpoint_at(size) {
                Ok(stored) => stored,
                Err(e) => {
                    warn!(size, error = %e, "cannot read a quorum checkpoint to add a signature to");
                    None
                }
            },
        };
        let Some(Ok(mut merged)) = held.map(|t| Note::parse(t.as_bytes())) else {
            return;
        };
        if merged.text() != note.text() {
            alarm(self.shared.cfg.id);
            return;
        }
        if !add_missing(&mut merged) {
            return;
        }
        let text = merged.format();
        batch.checkpoints.retain(|(s, _)| *s != size);
        batch.checkpoints.push((size, text.clone()));
        let checkpoint = ServedCheckpoint {
            size,
            note: text.into(),
        };
        if size == self.latest_checkpoint_size() {
            self.set_latest(checkpoint);
        } else if self.is_cluster_signed(&checkpoint.note) {
            // An older checkpoint: receipts of the entries it covers need
            // not wait for the latest's cluster signature.
            self.cluster_signed_stored(&checkpoint);
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
        self.writer.write(batch)?;
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
                file_bytes = self.writer.file_bytes(),
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
            latest_checkpoint_size: self.latest_checkpoint_size(),
            latest_witnessed_size: self.latest_witnessed.as_ref().map_or(0, |c| c.size),
        };
        *self.shared.status.lock().expect("status lock") = status;
        self.shared
            .oldest_retained_height
            .store(self.replica.oldest_retained_height(), Ordering::Relaxed);
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
        if let Some((size, note)) = batch.checkpoints.iter().max_by_key(|(size, _)| *size) {
            self.answer_covered();
            self.publish_served();
            let signed = self.is_cluster_signed(note);
            let (notified_size, notified_signed) = self.witness_notified;
            if *size > notified_size || (*size == notified_size && signed && !notified_signed) {
                self.witness_notified = (*size, signed);
                if let (Some(tx), Ok(note)) = (&self.witness_tx, Note::parse(note.as_bytes())) {
                    tx.send_replace(Some((*size, Arc::new(note))));
                }
            }
        }
    }

    fn latest_checkpoint_size(&self) -> u64 {
        self.latest_checkpoint.as_ref().map_or(0, |c| c.size)
    }

    /// Entries below this size can be answered now: those the latest
    /// checkpoint whose witness cosignatures meet the policy covers, when
    /// the cluster waits for witnesses; else those the latest quorum
    /// checkpoint covers. With a cluster key, only those the latest
    /// checkpoint carrying the cluster signature covers, and those whose
    /// first covering checkpoint was stored [`CLUSTER_SIGNATURE_WAIT`] ago
    /// or more.
    fn covered_below(&self) -> u64 {
        let size = |c: &Option<ServedCheckpoint>| c.as_ref().map_or(0, |c| c.size);
        if self.shared.cfg.cluster.receipts_wait_for_witnesses() {
            return size(&self.latest_witnessed);
        }
        if self.shared.cfg.cluster.cluster_key.is_none() {
            return self.latest_checkpoint_size();
        }
        size(&self.latest_cluster_signed).max(self.waited_below())
    }

    /// The checkpoint a receipt whose highest entry is `highest` is built
    /// on, once [`Self::covered_below`] covers it: the latest carrying the
    /// cluster signature if that covers it, else the latest.
    fn receipt_checkpoint(&self, highest: u64) -> Option<&ServedCheckpoint> {
        if self.shared.cfg.cluster.receipts_wait_for_witnesses() {
            return self.latest_witnessed.as_ref();
        }
        self.latest_cluster_signed
            .as_ref()
            .filter(|c| highest < c.size)
            .or(self.latest_checkpoint.as_ref())
    }

    /// Publishes which stored checkpoint is served as the latest: with a
    /// cluster key, the latest carrying the cluster signature, so that a
    /// client knowing the log by that key alone can check it, unless a
    /// newer one has waited [`CLUSTER_SIGNATURE_WAIT`] for it (then the
    /// latest, as for receipts). Called once what it names is durable.
    fn publish_served(&self) {
        let size = match &self.latest_cluster_signed {
            Some(signed)
                if self.shared.cfg.cluster.cluster_key.is_some() && self.waited_below() == 0 =>
            {
                signed.size
            }
            _ => self.latest_checkpoint_size(),
        };
        self.shared
            .served_checkpoint_size
            .store(size, Ordering::Release);
    }

    /// With a cluster key: entries below this size have waited
    /// [`CLUSTER_SIGNATURE_WAIT`] since a checkpoint covering them was
    /// stored (0 if none has).
    fn waited_below(&self) -> u64 {
        let due = self.now().saturating_sub(CLUSTER_SIGNATURE_WAIT);
        self.awaiting_cluster
            .iter()
            .take_while(|(_, stored)| *stored <= due)
            .last()
            .map_or(0, |(size, _)| *size)
    }

    fn answer_covered(&mut self) {
        let due = self.now().saturating_sub(CLUSTER_SIGNATURE_WAIT);
        while self.awaiting_cluster.len() >= 2 && self.awaiting_cluster[1].1 <= due {
            self.awaiting_cluster.pop_front();
        }
        let covered: Vec<u64> = self
            .waiters
            .by_index
            .range(..self.covered_below())
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
        let Some(text) = self.writer.checkpoint_at(size)? else {
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
        let note: Arc<str> = note.format().into();
        self.writer.add_cosignatures(size, &note, witnessed)?;
        // Receipts carry the cosignatures a checkpoint has when they are
        // built: keep the served copies current.
        let updated = ServedCheckpoint { size, note };
        if self.latest_checkpoint_size() == size {
            self.set_latest(updated.clone());
        }
        let witnessed_size = self.latest_witnessed.as_ref().map_or(0, |c| c.size);
        if witnessed && size >= witnessed_size {
            self.latest_witnessed = Some(updated);
            if size > witnessed_size {
                debug!(replica = self.shared.cfg.id, size, "witness quorum met");
                self.answer_covered();
            }
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
        let outboxes = &self.shared.outboxes;
        let mut push = |peer: usize| {
            if let Some(Some(outbox)) = outboxes.get(peer) {
                if outbox.try_send(frame.clone()).is_err() {
                    self.shared
                        .metrics
                        .peer_frames_dropped
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
        };
        match to {
            Target::All => (0..outboxes.len()).for_each(&mut push),
            Target::One(peer) => push(peer as usize),
        }
    }
}

/// Refuses an append `Overloaded` and counts it.
fn overloaded(
    reply: oneshot::Sender<AppendOutcome>,
    counter: &std::sync::atomic::AtomicU64,
    retry_after_ms: u64,
    message: &str,
) {
    counter.fetch_add(1, Ordering::Relaxed);
    let _ = reply.send(AppendOutcome::Refused(
        ErrorCode::Overloaded { retry_after_ms },
        message.into(),
    ));
}
