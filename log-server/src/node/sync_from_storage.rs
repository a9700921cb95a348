//! Sync for heights the core no longer holds in memory: committed blocks
//! read from redb (a read snapshot, beside the writer) by the task that
//! reads the requesting peer's stream, never by the core loop, so a
//! 15-byte request cannot stall consensus. Answers to each peer follow
//! the same byte rate as the core's (`sync_serve_bytes_per_s`, with its
//! own bucket), and a read that fails is counted and logged and left
//! unanswered (the peer asks another replica), never a stopped replica.

use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bftlog_consensus::SyncBudget;
use bftlog_consensus::token_bucket::TokenBucket;
use bftlog_spec::wire::{self, BoundedVec, ConsensusMessage, ReplicaId};
use tracing::warn;

use super::shared::Shared;

/// The per-peer rate of sync answers from storage.
pub(crate) struct StorageSyncRate {
    origin: Instant,
    buckets: Mutex<Vec<TokenBucket>>,
}

impl StorageSyncRate {
    pub(crate) fn new(cfg: &bftlog_consensus::Config) -> Self {
        let bucket = TokenBucket::new(
            cfg.sync_serve_bytes_per_s,
            cfg.sync_serve_burst_bytes,
            std::time::Duration::ZERO,
        );
        StorageSyncRate {
            origin: Instant::now(),
            buckets: Mutex::new(vec![bucket; cfg.n()]),
        }
    }

    fn has_credit(&self, peer: ReplicaId) -> bool {
        let now = self.origin.elapsed();
        let mut buckets = self.buckets.lock().expect("sync rate lock");
        buckets
            .get_mut(peer as usize)
            .is_some_and(|b| b.has_credit(now).is_ok())
    }

    fn charge(&self, peer: ReplicaId, bytes: usize) {
        let mut buckets = self.buckets.lock().expect("sync rate lock");
        if let Some(bucket) = buckets.get_mut(peer as usize) {
            bucket.charge(bytes as u64);
        }
    }
}

/// Whether `message` is a sync request this module serves: one starting
/// below what the core keeps in memory.
pub(crate) fn wanted(shared: &Shared, message: &ConsensusMessage) -> bool {
    matches!(message, ConsensusMessage::SyncRequest { from_height, .. }
        if *from_height < shared.oldest_retained_height.load(Ordering::Relaxed))
}

/// Answers `message` (a [`wanted`] request) from `peer`: blocks from
/// storage, plus the QC that certifies the last one (the next block's
/// justify), so the requester can verify and apply them.
pub(crate) async fn serve(
    shared: &std::sync::Arc<Shared>,
    peer: ReplicaId,
    message: ConsensusMessage,
) {
    let ConsensusMessage::SyncRequest {
        from_height,
        max_blocks,
    } = message
    else {
        return;
    };
    if !shared.storage_sync_rate.has_credit(peer) {
        shared
            .metrics
            .sync_rate_limited
            .fetch_add(1, Ordering::Relaxed);
        return;
    }
    let max = (max_blocks as u64).clamp(1, wire::MAX_SYNC_BLOCKS as u64);
    let store = shared.store.clone();
    // Blocks are read one at a time and stop at the answer's byte budget
    // (the same as the core's answers from memory), so a request for 64
    // large blocks reads about 12 MiB, not all of them.
    let read = tokio::task::spawn_blocking(move || {
        let mut budget = SyncBudget::new();
        store
            .sync_blocks(from_height.max(1), max, |b| budget.admit(b))
            .map(|answer| (answer, budget))
    })
    .await;
    let ((blocks, commit_qc), budget) = match read {
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) => {
            shared
                .metrics
                .sync_storage_errors
                .fetch_add(1, Ordering::Relaxed);
            warn!(replica = shared.cfg.id, peer, from_height, error = %e, "could not read blocks to serve sync; left unanswered");
            return;
        }
        Err(e) => {
            shared
                .metrics
                .sync_storage_errors
                .fetch_add(1, Ordering::Relaxed);
            warn!(replica = shared.cfg.id, peer, error = %e, "sync read task failed");
            return;
        }
    };
    if blocks.is_empty() {
        return;
    }
    shared.storage_sync_rate.charge(peer, budget.used());
    shared
        .metrics
        .sync_served_from_storage
        .fetch_add(1, Ordering::Relaxed);
    let message = ConsensusMessage::SyncResponse {
        blocks: BoundedVec::new(blocks).expect("≤ MAX_SYNC_BLOCKS"),
        commit_qc,
    };
    let Ok(frame) = wire::try_encode_frame(&message) else {
        shared
            .metrics
            .messages_oversized
            .fetch_add(1, Ordering::Relaxed);
        return;
    };
    if let Some(Some(outbox)) = shared.outboxes.get(peer as usize) {
        if outbox.try_send(std::sync::Arc::new(frame)).is_err() {
            shared
                .metrics
                .peer_frames_dropped
                .fetch_add(1, Ordering::Relaxed);
        }
    }
}
