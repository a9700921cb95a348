//! Obtaining witness cosignatures for quorum checkpoints.
//!
//! Every replica submits its latest stored quorum checkpoint to every
//! witness in `cluster.toml` (C2SP tlog-witness), one task per witness so a
//! slow or dead witness never delays the others. Only the latest
//! checkpoint matters: if several are stored while a submission is in
//! flight, the next submission takes the newest.
//!
//! A witness that answers 409 has a different latest size (another replica
//! submitted first, or it restarted); the task resubmits with a proof from
//! that size. Cosignatures are verified against the witness key before they
//! reach the core loop, which merges them into the stored checkpoint and,
//! once the policy's witness quorum is met, releases the receipts that
//! wait for it.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bftlog_spec::note::{Note, NoteSignature};
use bftlog_witness::client::{AddOutcome, WitnessClient};
use tokio::sync::watch;
use tracing::{debug, warn};

use super::shared::{CoreInput, Shared};
use crate::config::Witness;

/// The latest stored quorum checkpoint, as the core loop publishes it.
pub(crate) type Latest = Option<(u64, Arc<Note>)>;

const MIN_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// A failing witness is logged at most once per this interval.
const WARN_INTERVAL: Duration = Duration::from_secs(10);

/// Starts one submission task per witness; returns the sender the core
/// loop publishes new quorum checkpoints on, or `None` without witnesses.
pub(crate) fn spawn(
    shared: &Arc<Shared>,
    initial: Latest,
    tasks: &mut tokio::task::JoinSet<()>,
) -> Option<watch::Sender<Latest>> {
    let cluster = &shared.cfg.cluster;
    if cluster.witnesses.is_empty() {
        return None;
    }
    let (tx, rx) = watch::channel(initial);
    for witness in &cluster.witnesses {
        let client = WitnessClient::new(
            &witness.url,
            witness.key.clone(),
            cluster.witness_timeout_ms,
        )
        .expect("witness URLs are checked when the cluster is loaded");
        tasks.spawn(submit_loop(
            shared.clone(),
            witness.clone(),
            client,
            rx.clone(),
        ));
    }
    Some(tx)
}

async fn submit_loop(
    shared: Arc<Shared>,
    witness: Witness,
    client: WitnessClient,
    mut latest: watch::Receiver<Latest>,
) {
    // The witness's latest cosigned size as last learned; 0 until its
    // first answer (a 409 then tells the truth).
    let mut known = 0u64;
    // The size this witness last cosigned here: the same checkpoint again
    // (now with the cluster signature) is not submitted twice.
    let mut cosigned = 0u64;
    let mut backoff = MIN_BACKOFF;
    let mut last_warning: Option<Instant> = None;
    loop {
        let current = latest.borrow_and_update().clone();
        let Some((size, note)) = current.filter(|(size, _)| *size > cosigned) else {
            if latest.changed().await.is_err() {
                return;
            }
            continue;
        };
        match submit(&shared, &client, &mut known, size, &note).await {
            Ok(()) => {
                cosigned = size;
                backoff = MIN_BACKOFF;
                if latest.changed().await.is_err() {
                    return;
                }
            }
            Err(why) => {
                shared
                    .metrics
                    .witness_failures
                    .fetch_add(1, Ordering::Relaxed);
                if last_warning.is_none_or(|t| t.elapsed() >= WARN_INTERVAL) {
                    last_warning = Some(Instant::now());
                    warn!(
                        replica = shared.cfg.id,
                        witness = %witness.name,
                        size,
                        error = %why,
                        "witness submission failed; retrying with backoff"
                    );
                }
                tokio::select! {
                    changed = latest.changed() => if changed.is_err() { return },
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Submits one checkpoint; `Ok` once cosigned, or once the witness is known
/// to be past it (nothing left to do for this size).
async fn submit(
    shared: &Arc<Shared>,
    client: &WitnessClient,
    known: &mut u64,
    size: u64,
    note: &Note,
) -> Result<(), String> {
    // Two 409s in a row mean the witness moved between our requests; more
    // rounds would race the other replicas for nothing.
    for _ in 0..3 {
        if *known > size {
            debug!(
                replica = shared.cfg.id,
                size,
                witness_size = *known,
                "witness is ahead"
            );
            return Ok(());
        }
        let proof = if *known == 0 || *known == size {
            Vec::new()
        } else {
            let store = shared.store.clone();
            let old = *known;
            tokio::task::spawn_blocking(move || store.consistency_proof(old, size))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("consistency proof {old} -> {size}: {e}"))?
        };
        match client.add_checkpoint(*known, &proof, note).await {
            Ok(AddOutcome::Cosigned(signatures)) => {
                *known = size;
                deliver(shared, size, signatures).await;
                return Ok(());
            }
            Ok(AddOutcome::Conflict(witness_size)) => *known = witness_size,
            Ok(AddOutcome::Refused { status, body }) => {
                return Err(format!("witness answered {status}: {body}"));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    Err("the witness's size kept changing".into())
}

async fn deliver(shared: &Arc<Shared>, size: u64, signatures: Vec<NoteSignature>) {
    shared
        .metrics
        .witness_cosignatures
        .fetch_add(1, Ordering::Relaxed);
    // Receipts may wait for exactly these cosignatures, so they are never
    // dropped: the replica's own lane of the inbox has no byte bound (one
    // input per witness and checkpoint).
    shared
        .inbox
        .push_control(CoreInput::Cosigned { size, signatures });
}
