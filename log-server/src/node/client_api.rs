//! Client protocol handlers (`spec/wire.md`, *Client protocol*).
//!
//! Each request is one bidirectional QUIC stream: the client writes one
//! `ClientRequest` frame, the replica answers one `ClientResponse` frame
//! and finishes the stream. Any error — oversized, truncated, garbage or
//! non-canonical input, unknown indexes — is answered with a typed
//! `Error` on that stream; the connection and the replica carry on.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bftlog_spec::wire::{
    self, BoundedBytes, BoundedVec, ClientRequest, ClientResponse, ErrorCode, LeafRef,
    MAX_GET_ENTRIES,
};
use tokio::sync::oneshot;
use tracing::debug;

use super::shared::{AppendOutcome, CoreInput, ServedCheckpoint, Shared};
use crate::admission::{Charge, Refusal};
use crate::net::{self, FrameReadError};
use crate::storage::ReadError;
use crate::storage::{Store, StoreError};

/// Entry bytes per `Entries` response, well under the frame limit.
const MAX_ENTRIES_RESPONSE_BYTES: usize = 8 << 20;

/// Application error code of a client stream the replica resets: a
/// unidirectional stream (clients send none), or a request past its
/// deadline.
const STREAM_REFUSED: u32 = 1;

pub(crate) async fn serve_client(shared: Arc<Shared>, connection: quinn::Connection) {
    // Requests come on bidirectional streams only. The handshake granted
    // a few unidirectional ones (the transport settings are shared with
    // peers, who use them); any a client opens is stopped at once, so its
    // bytes never hold the connection's receive window, and no more are
    // granted.
    connection.set_max_concurrent_uni_streams(0u32.into());
    let uni = connection.clone();
    let refuse_uni = tokio::spawn(async move {
        while let Ok(mut recv) = uni.accept_uni().await {
            let _ = recv.stop(STREAM_REFUSED.into());
        }
    });
    let caller = Caller {
        address: connection.remote_address().ip(),
        key: net::remote_key(&connection),
    };
    while let Ok((send, recv)) = connection.accept_bi().await {
        let shared = shared.clone();
        tokio::spawn(async move {
            handle_stream(shared, caller, send, recv).await;
        });
    }
    refuse_uni.abort();
}

/// Who sent a request: what admission charges appends to.
#[derive(Clone, Copy, Debug)]
struct Caller {
    address: std::net::IpAddr,
    /// The Ed25519 key the client presented in its TLS handshake.
    key: Option<[u8; 32]>,
}

fn error(code: ErrorCode, message: impl Into<String>) -> ClientResponse {
    let mut text = message.into().into_bytes();
    text.truncate(wire::MAX_ERROR_TEXT);
    ClientResponse::Error {
        code,
        message: BoundedBytes::new(text).expect("truncated to the bound"),
    }
}

/// A request read whole, with its bytes' share of the in-flight byte
/// budget (held until its answer is ready), or the answer to a request
/// that could not be read.
enum Read {
    Request(Vec<u8>, SemaphorePermit),
    Answer(ClientResponse),
    /// The stream failed: nothing to answer.
    Failed,
}

type SemaphorePermit = tokio::sync::OwnedSemaphorePermit;

/// Reads one request frame. Its bytes are reserved from the replica's
/// in-flight request budget as they arrive (and its buffer grows with
/// them), so a client that declares a large frame and sends little holds
/// only what it sent, and only until the read deadline; when the budget
/// is spent the request is answered `Overloaded`.
async fn read_request(shared: &Shared, recv: &mut quinn::RecvStream) -> Read {
    let limit = shared.cfg.limits.max_frame_bytes;
    let len = match net::read_frame_len(recv, limit).await {
        Ok(Some(len)) => len,
        Ok(None) | Err(FrameReadError::Truncated) => {
            return Read::Answer(error(
                ErrorCode::Malformed,
                "the stream ended before a whole request frame",
            ));
        }
        Err(FrameReadError::TooLarge(len, max)) => {
            return Read::Answer(error(
                ErrorCode::TooLarge,
                format!("request frame of {len} bytes exceeds the limit of {max}"),
            ));
        }
        Err(e) => {
            debug!(error = %e, "client stream failed");
            return Read::Failed;
        }
    };
    let over_budget = || {
        shared
            .metrics
            .requests_over_byte_budget
            .fetch_add(1, Ordering::Relaxed);
        Read::Answer(error(
            ErrorCode::Overloaded {
                retry_after_ms: 1000,
            },
            "too many request bytes in flight at this replica",
        ))
    };
    // The frame header's worth, so that even an empty body holds a permit.
    let Ok(mut permit) = shared
        .request_bytes
        .clone()
        .try_acquire_many_owned(wire::FRAME_HEADER_BYTES as u32)
    else {
        return over_budget();
    };
    // A piece is at most 64 KiB: far below u32::MAX permits.
    let body = net::read_frame_body_admitting(recv, len, |bytes| {
        match shared
            .request_bytes
            .clone()
            .try_acquire_many_owned(bytes as u32)
        {
            Ok(more) => {
                permit.merge(more);
                true
            }
            Err(_) => false,
        }
    })
    .await;
    match body {
        Ok(body) => Read::Request(body, permit),
        Err(FrameReadError::OverBudget) => over_budget(),
        Err(FrameReadError::Truncated) => Read::Answer(error(
            ErrorCode::Malformed,
            "the stream ended before a whole request frame",
        )),
        Err(e) => {
            debug!(error = %e, "client stream failed");
            Read::Failed
        }
    }
}

/// Serves one request stream within its deadlines: the whole request
/// frame within `request_read_timeout_ms`, the whole response taken by
/// the client within `response_write_timeout_ms` (an append's wait for
/// its commit is bounded by `append_timeout_ms` in between). Past a
/// deadline the stream is reset and counted.
async fn handle_stream(
    shared: Arc<Shared>,
    caller: Caller,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    shared
        .metrics
        .client_requests
        .fetch_add(1, Ordering::Relaxed);
    let limits = &shared.cfg.limits;
    let read_deadline = Duration::from_millis(limits.request_read_timeout_ms);
    let write_deadline = Duration::from_millis(limits.response_write_timeout_ms);
    let read = match tokio::time::timeout(read_deadline, read_request(&shared, &mut recv)).await {
        Ok(read) => read,
        Err(_) => {
            shared
                .metrics
                .client_requests_timed_out
                .fetch_add(1, Ordering::Relaxed);
            let _ = recv.stop(STREAM_REFUSED.into());
            let _ = send.reset(STREAM_REFUSED.into());
            return;
        }
    };
    // Nothing more is read from this stream.
    let _ = recv.stop(0u32.into());
    let response = match read {
        Read::Request(frame, permit) => {
            let response = match wire::decode::<ClientRequest>(&frame) {
                Ok(request) => {
                    drop(frame);
                    handle_request(&shared, caller, request).await
                }
                Err(e) => error(ErrorCode::Malformed, format!("request: {e}")),
            };
            drop(permit);
            response
        }
        Read::Answer(response) => response,
        Read::Failed => return,
    };
    if matches!(response, ClientResponse::Error { .. }) {
        shared.metrics.client_errors.fetch_add(1, Ordering::Relaxed);
    }
    let bytes = wire::encode_frame(&response);
    drop(response);
    let write = async {
        send.write_all(&bytes).await?;
        let _ = send.finish();
        // Let the response drain before the stream is dropped.
        let _ = send.stopped().await;
        Ok::<(), quinn::WriteError>(())
    };
    if tokio::time::timeout(write_deadline, write).await.is_err() {
        shared
            .metrics
            .client_requests_timed_out
            .fetch_add(1, Ordering::Relaxed);
        let _ = send.reset(STREAM_REFUSED.into());
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

async fn handle_request(
    shared: &Arc<Shared>,
    caller: Caller,
    request: ClientRequest,
) -> ClientResponse {
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
        ClientRequest::AppendMultiproof { entries } => {
            append(shared, caller, entries.into_inner()).await
        }
        ClientRequest::GetCheckpoint => match served_checkpoint(shared) {
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
                match store.entries_within(start, count, MAX_ENTRIES_RESPONSE_BYTES) {
                    Ok(entries) => ClientResponse::Entries {
                        start,
                        entries: BoundedVec::new(entries).expect("≤ MAX_GET_ENTRIES"),
                    },
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
pub(super) fn served_checkpoint(shared: &Shared) -> Result<Option<(u64, String)>, StoreError> {
    let store = &shared.store;
    if shared.cfg.cluster.receipts_wait_for_witnesses() {
        return store.latest_witnessed_checkpoint();
    }
    match shared.served_checkpoint_size.load(Ordering::Acquire) {
        0 => store.latest_checkpoint(),
        size => Ok(store.checkpoint_at(size)?.map(|note| (size, note))),
    }
}

/// `AppendMultiproof`: submits the entries to the core loop and answers
/// with their receipts once a stored quorum checkpoint covers them all.
async fn append(shared: &Arc<Shared>, caller: Caller, entries: Vec<wire::Entry>) -> ClientResponse {
    if entries.is_empty() {
        return error(ErrorCode::Malformed, "an append needs at least one entry");
    }
    let (client, charge) = match admit(shared, caller, &entries) {
        Ok(admitted) => admitted,
        Err(answer) => return answer,
    };
    let refund = || {
        shared
            .admission
            .lock()
            .expect("admission lock")
            .refund(&charge);
    };
    let (reply, outcome) = oneshot::channel();
    let bytes = entries.iter().map(|e| e.len() + 8).sum();
    let input = CoreInput::Append {
        client,
        entries,
        reply,
    };
    if shared.inbox.push_client(input, bytes).is_err() {
        refund();
        shared
            .metrics
            .appends_overloaded
            .fetch_add(1, Ordering::Relaxed);
        return error(
            ErrorCode::Overloaded {
                retry_after_ms: 200,
            },
            "the replica's queue for appends is full",
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
        Ok(AppendOutcome::Refused(code, message)) => {
            refund();
            error(code, message)
        }
        Err(_) => error(ErrorCode::Internal, "the replica is shutting down"),
    }
}

/// Charges an append to its submitter's quota, or answers why not.
fn admit(
    shared: &Shared,
    caller: Caller,
    entries: &[wire::Entry],
) -> Result<(bftlog_consensus::ClientId, Charge), ClientResponse> {
    let bytes = entries.iter().map(|e| e.len() as u64).sum();
    let now = shared.started.elapsed();
    let admitted = shared.admission.lock().expect("admission lock").admit(
        now,
        caller.address,
        caller.key,
        entries.len() as u64,
        bytes,
    );
    let metrics = &shared.metrics;
    admitted.map_err(|refusal| match refusal {
        Refusal::QuotaExceeded {
            retry_after_ms,
            what,
        } => {
            metrics.appends_over_quota.fetch_add(1, Ordering::Relaxed);
            error(
                ErrorCode::QuotaExceeded { retry_after_ms },
                format!("over this submitter's quota of {what}; nothing was submitted"),
            )
        }
        Refusal::Forbidden => {
            metrics.appends_forbidden.fetch_add(1, Ordering::Relaxed);
            error(
                ErrorCode::Forbidden,
                "this replica admits appends only from listed submitter keys (reads are open)",
            )
        }
        Refusal::LargerThanQuota(message) => {
            metrics
                .appends_larger_than_quota
                .fetch_add(1, Ordering::Relaxed);
            error(ErrorCode::TooLarge, message)
        }
    })
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
