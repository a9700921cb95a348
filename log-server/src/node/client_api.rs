//! Client protocol handlers (`spec/wire.md`, *Client protocol*).
//!
//! Each request is one bidirectional QUIC stream: the client writes one
//! `ClientRequest` frame, the replica answers one `ClientResponse` frame
//! and finishes the stream. Any error — oversized, truncated, garbage or
//! non-canonical input, unknown indexes — is answered with a typed
//! `Error` on that stream; the connection and the replica carry on.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bftlog_spec::wire::{
    self, BoundedBytes, BoundedVec, ClientRequest, ClientResponse, ErrorCode, LeafRef,
    MAX_GET_ENTRIES,
};
use tokio::sync::oneshot;
use tracing::debug;

use super::shared::{AppendOutcome, CoreInput, ServedCheckpoint, Shared};
use crate::config::Cluster;
use crate::net::{self, FrameReadError};
use crate::storage::ReadError;
use crate::storage::{Store, StoreError};

/// Entry bytes per `Entries` response, well under the frame limit.
const MAX_ENTRIES_RESPONSE_BYTES: usize = 8 << 20;

pub(crate) async fn serve_client(shared: Arc<Shared>, connection: quinn::Connection) {
    while let Ok((send, recv)) = connection.accept_bi().await {
        let shared = shared.clone();
        tokio::spawn(async move {
            handle_stream(shared, send, recv).await;
        });
    }
}

fn error(code: ErrorCode, message: impl Into<String>) -> ClientResponse {
    let mut text = message.into().into_bytes();
    text.truncate(wire::MAX_ERROR_TEXT);
    ClientResponse::Error {
        code,
        message: BoundedBytes::new(text).expect("truncated to the bound"),
    }
}

async fn handle_stream(
    shared: Arc<Shared>,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    shared
        .metrics
        .client_requests
        .fetch_add(1, Ordering::Relaxed);
    let limit = shared.cfg.limits.max_frame_bytes;
    let response = match net::read_frame(&mut recv, limit).await {
        Ok(Some(frame)) => match wire::decode::<ClientRequest>(&frame) {
            Ok(request) => handle_request(&shared, request).await,
            Err(e) => error(ErrorCode::Malformed, format!("request: {e}")),
        },
        Ok(None) | Err(FrameReadError::Truncated) => error(
            ErrorCode::Malformed,
            "the stream ended before a whole request frame",
        ),
        Err(FrameReadError::TooLarge(len, max)) => {
            let _ = recv.stop(0u32.into());
            error(
                ErrorCode::TooLarge,
                format!("request frame of {len} bytes exceeds the limit of {max}"),
            )
        }
        Err(e) => {
            debug!(error = %e, "client stream failed");
            return;
        }
    };
    if matches!(response, ClientResponse::Error { .. }) {
        shared.metrics.client_errors.fetch_add(1, Ordering::Relaxed);
    }
    let _ = recv.stop(0u32.into());
    let bytes = wire::encode_frame(&response);
    if send.write_all(&bytes).await.is_ok() {
        let _ = send.finish();
        // Let the response drain before the stream is dropped.
        let _ = send.stopped().await;
    }
}

fn read_error(e: ReadError) -> ClientResponse {
    match e {
        ReadError::NotFound(m) => error(ErrorCode::NotFound, m),
        ReadError::Invalid(m) => error(ErrorCode::Malformed, m),
        ReadError::Store(e) => error(ErrorCode::Internal, format!("storage: {e}")),
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("request task panicked")
}

/// Runs a single proof's reads on the calling worker. A proof reads a
/// handful of pages, almost always from redb's cache, in microseconds;
/// handing it to the blocking pool cost two thread wake-ups and context
/// switches, which on the reference VM were most of a proof's cost
/// (`finish_task_switch` and futex calls were 68% of a replica serving
/// proofs, the proof itself 14%). Requests that read much (batches of
/// proofs, entries) still go to the blocking pool.
async fn inline<T>(f: impl FnOnce() -> T) -> T {
    f()
}

async fn handle_request(shared: &Arc<Shared>, request: ClientRequest) -> ClientResponse {
    let proofs = match &request {
        ClientRequest::GetInclusionProof { .. } | ClientRequest::GetConsistencyProof { .. } => 1,
        ClientRequest::GetInclusionProofs { indexes, .. } => indexes.len() as u64,
        _ => 0,
    };
    if proofs > 0 {
        let metrics = &shared.metrics;
        metrics.proof_requests.fetch_add(1, Ordering::Relaxed);
        metrics
            .proofs_requested
            .fetch_add(proofs, Ordering::Relaxed);
    }
    let store = shared.store.clone();
    match request {
        ClientRequest::RetiredAppend { .. } | ClientRequest::RetiredAppendBatch { .. } => error(
            ErrorCode::Unsupported,
            "this request was retired before bftlog 0.1.0: upgrade the client (appends use AppendMultiproof)",
        ),
        ClientRequest::AppendMultiproof { entries } => append(shared, entries.into_inner()).await,
        ClientRequest::GetCheckpoint => match served_checkpoint(&store, &shared.cfg.cluster) {
            Ok(Some((_, note))) => ClientResponse::Checkpoint {
                note: BoundedBytes::new(note.into_bytes()).expect("stored notes are bounded"),
            },
            Ok(None) => error(ErrorCode::NotFound, "no quorum checkpoint yet"),
            Err(e) => error(ErrorCode::Internal, format!("storage: {e}")),
        },
        ClientRequest::GetInclusionProof { leaf, tree_size } => {
            inline(move || {
                let index = match leaf {
                    LeafRef::Index { index } => index,
                    LeafRef::LeafHash { leaf_hash } => match store.index_of(&leaf_hash) {
                        Ok(Some(i)) => i,
                        Ok(None) => {
                            return error(ErrorCode::NotFound, "no entry with that leaf hash");
                        }
                        Err(e) => return error(ErrorCode::Internal, format!("storage: {e}")),
                    },
                };
                match store.inclusion_proof(index, tree_size) {
                    Ok(hashes) => ClientResponse::InclusionProof {
                        index,
                        tree_size,
                        hashes: BoundedVec::new(hashes).expect("proofs are bounded"),
                    },
                    Err(e) => read_error(e),
                }
            })
            .await
        }
        ClientRequest::GetInclusionProofs { indexes, tree_size } => {
            let indexes = indexes.into_inner();
            if indexes.is_empty() {
                return error(ErrorCode::Malformed, "no indexes");
            }
            blocking(move || match store.inclusion_proofs(&indexes, tree_size) {
                Ok(proofs) => ClientResponse::InclusionProofs {
                    tree_size,
                    proofs: BoundedVec::new(
                        proofs
                            .into_iter()
                            .map(|p| BoundedVec::new(p).expect("proofs are bounded"))
                            .collect(),
                    )
                    .expect("one proof per index"),
                },
                Err(e) => read_error(e),
            })
            .await
        }
        ClientRequest::GetConsistencyProof { old_size, new_size } => {
            inline(move || match store.consistency_proof(old_size, new_size) {
                Ok(hashes) => ClientResponse::ConsistencyProof {
                    old_size,
                    new_size,
                    hashes: BoundedVec::new(hashes).expect("proofs are bounded"),
                },
                Err(e) => read_error(e),
            })
            .await
        }
        ClientRequest::GetEntries { start, count } => {
            blocking(move || {
                let size = store.tree_size();
                if start >= size {
                    return error(
                        ErrorCode::NotFound,
                        format!("start {start} is not below the committed size {size}"),
                    );
                }
                let count = (count as u64).min(MAX_GET_ENTRIES as u64);
                match store.entries(start, count) {
                    Ok(mut entries) => {
                        let mut bytes = 0;
                        let keep = entries
                            .iter()
                            .take_while(|e| {
                                bytes += e.len();
                                bytes <= MAX_ENTRIES_RESPONSE_BYTES
                            })
                            .count()
                            .max(1);
                        entries.truncate(keep);
                        ClientResponse::Entries {
                            start,
                            entries: BoundedVec::new(entries).expect("≤ MAX_GET_ENTRIES"),
                        }
                    }
                    Err(e) => read_error(e),
                }
            })
            .await
        }
    }
}

/// The checkpoint handed to clients: the latest one whose witness
/// cosignatures meet the policy when the cluster waits for witnesses, else
/// the latest quorum checkpoint (with whatever cosignatures it has).
fn served_checkpoint(
    store: &Store,
    cluster: &Cluster,
) -> Result<Option<(u64, String)>, StoreError> {
    if cluster.receipts_wait_for_witnesses() {
        store.latest_witnessed_checkpoint()
    } else {
        store.latest_checkpoint()
    }
}

/// `AppendMultiproof`: submits the entries to the core loop and answers
/// with their receipts once a stored quorum checkpoint covers them all.
async fn append(shared: &Arc<Shared>, entries: Vec<wire::Entry>) -> ClientResponse {
    if entries.is_empty() {
        return error(ErrorCode::Malformed, "an append needs at least one entry");
    }
    let (reply, outcome) = oneshot::channel();
    let input = CoreInput::Append { entries, reply };
    if shared.core_tx.try_send(input).is_err() {
        shared
            .metrics
            .appends_overloaded
            .fetch_add(1, Ordering::Relaxed);
        return error(
            ErrorCode::Overloaded {
                retry_after_ms: 200,
            },
            "the replica's input queue is full",
        );
    }
    match outcome.await {
        Ok(AppendOutcome::Committed {
            indexes,
            checkpoint,
        }) => {
            let store = shared.store.clone();
            blocking(move || receipts(&store, checkpoint, indexes)).await
        }
        Ok(AppendOutcome::Rejected(code, message)) => error(code, message),
        Err(_) => error(ErrorCode::Internal, "the replica is shutting down"),
    }
}

/// The `ReceiptMultiproof` for committed indexes on the checkpoint the
/// core loop chose (it covers them: the core loop answers only then).
fn receipts(store: &Store, checkpoint: ServedCheckpoint, indexes: Vec<u64>) -> ClientResponse {
    let ServedCheckpoint { size, note } = checkpoint;
    let mut distinct = indexes.clone();
    distinct.sort_unstable();
    distinct.dedup();
    let proof = match store.multiproof(&distinct, size) {
        Ok(p) => p,
        Err(e) => return read_error(e),
    };
    ClientResponse::ReceiptMultiproof {
        checkpoint: BoundedBytes::new(note.as_bytes().to_vec()).expect("stored notes are bounded"),
        indexes: BoundedVec::new(indexes).expect("one per appended entry"),
        proof: BoundedVec::new(proof).expect("a multiproof of an append's entries is bounded"),
    }
}
