//! Client library: talks to a cluster over QUIC and verifies everything it
//! is given before returning it.
//!
//! - Replicas are authenticated by the Ed25519 keys in the cluster file.
//! - [`Client::append`] sends the entries to one replica and, if no
//!   verified answer comes within a hedge delay (a few times the recent
//!   append latency) or that replica fails, to f more, so that at least one
//!   honest replica has them and forwards them to the leaders. It accepts
//!   the first answer whose receipts all verify under the cluster's policy
//!   (2f+1 replica signatures, inclusion of exactly these entries), and
//!   retries on other replicas if none does. Appends are idempotent: a
//!   retried or hedged entry keeps its first index. Sending to one replica
//!   first rather than f+1 at once halves the cluster's per-entry work
//!   (forwarding, receipts) in the common case; a faulty replica costs a
//!   hedge delay, not the entry. A replica that failed, or that a hedged
//!   replica beat, is not asked first for a while
//!   ([`ClientOptions::pass_over_ms`]): with a replica down, one append
//!   pays the hedge delay, not one in n.
//! - [`Client::checkpoint`] returns a checkpoint only after verifying its
//!   quorum; proofs are checked against verified checkpoints.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bftlog_spec::checkpoint::Checkpoint;
use bftlog_spec::merkle::{self, Hash};
use bftlog_spec::note::Note;
use bftlog_spec::policy::{Policy, VerifiedCheckpoint};
use bftlog_spec::proof::TlogProof;
use bftlog_spec::wire::{
    self, BoundedVec, ClientRequest, ClientResponse, Entry, ErrorCode, LeafRef,
};
use tokio::sync::Mutex;

use crate::config::Cluster;
use crate::net;

/// Checkpoint notes a client remembers as verified (by their bytes).
const VERIFIED_NOTES: usize = 16;

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("replica {replica}: cannot connect: {message}")]
    Connect { replica: usize, message: String },
    #[error("replica {replica}: {message}")]
    Transport { replica: usize, message: String },
    #[error("replica {replica}: malformed response: {message}")]
    Protocol { replica: usize, message: String },
    #[error("replica {replica} answered {code:?}: {message}")]
    Server {
        replica: usize,
        code: ErrorCode,
        message: String,
    },
    #[error("replica {replica} sent something that does not verify: {message}")]
    Verify { replica: usize, message: String },
    #[error("replica {replica}: no answer within {timeout_ms} ms")]
    Timeout { replica: usize, timeout_ms: u64 },
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("TLS setup: {0}")]
    Tls(#[from] net::TlsSetupError),
    #[error("socket: {0}")]
    Socket(#[from] std::io::Error),
    #[error("every replica tried failed; last error: {0}")]
    Exhausted(Box<ClientError>),
}

/// A verified receipt for one appended entry: its index, and a C2SP
/// tlog-proof (inclusion proof and a checkpoint with ≥ 2f+1 replica
/// signatures) that was checked before the append returned.
#[derive(Clone, Debug)]
pub struct AppendReceipt {
    pub index: u64,
    pub tree_size: u64,
    /// The verified checkpoint note, shared by the receipts of one append.
    note_text: Arc<str>,
    /// This entry's inclusion proof in that checkpoint.
    inclusion: Vec<Hash>,
}

impl AppendReceipt {
    /// The C2SP tlog-proof text, which `bftlog-verify` and other tools
    /// check offline. Formatted when asked for: an append of many entries
    /// whose caller keeps only some receipts (or none, as `bftlog bench`)
    /// does not pay for formatting all of them.
    pub fn tlog_proof(&self) -> String {
        TlogProof::format_with_note(self.index, &self.inclusion, &self.note_text)
    }
}

/// Client settings; every field has a default in [`ClientOptions::default`].
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// How long one request may take. Default 60 s (an append waits for
    /// commit).
    pub request_timeout_ms: u64,
    /// Rounds of f+1 replicas tried per append. Default 4.
    pub append_rounds: usize,
    /// The hedge delay (after which an append also goes to f more
    /// replicas) is `hedge_latency_multiple` × the smoothed latency of
    /// recent appends, clamped to `[hedge_after_min_ms, hedge_after_max_ms]`.
    /// Defaults 200, 5,000 and 3. Both bounds 0: every append goes to f+1
    /// replicas at once.
    pub hedge_after_min_ms: u64,
    pub hedge_after_max_ms: u64,
    pub hedge_latency_multiple: u32,
    /// How long a replica that failed an append, or answered it later than
    /// a hedged replica, is not sent appends first (it is still among the
    /// f more, after the others). It doubles each time in a row, up to 32
    /// times, and resets when the replica answers first. Default 2,000.
    pub pass_over_ms: u64,
    /// The key the client presents as its TLS identity: a replica that
    /// admits listed submitter keys only must list it, and quotas are
    /// charged to it. Default `None`: a fresh key per client (anonymous;
    /// open-mode replicas charge the source address).
    pub submitter_key: Option<ed25519_dalek::SigningKey>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            request_timeout_ms: 60_000,
            append_rounds: 4,
            hedge_after_min_ms: 200,
            hedge_after_max_ms: 5_000,
            hedge_latency_multiple: 3,
            pass_over_ms: 2_000,
            submitter_key: None,
        }
    }
}

struct Inner {
    cluster: Cluster,
    policy: Policy,
    endpoint: quinn::Endpoint,
    config: quinn::ClientConfig,
    connections: Vec<Mutex<Option<quinn::Connection>>>,
    next: AtomicUsize,
    options: ClientOptions,
    /// Exponentially smoothed latency (1/8 weight per sample) of appends
    /// answered by the replica they were first sent to, in microseconds;
    /// 0 before the first. Appends won by a hedged replica are left out so
    /// that a slow or silent replica does not stretch the hedge delay.
    append_latency_us: AtomicU64,
    hedged_appends: AtomicU64,
    /// Per replica: until when (ms since `created`) it is not asked first,
    /// and how many times in a row it was passed over.
    passed_over_until_ms: Vec<AtomicU64>,
    passed_over_streak: Vec<AtomicU64>,
    created: Instant,
    /// The last [`VERIFIED_NOTES`] checkpoint notes that passed the
    /// policy, by their exact bytes, newest last: concurrent appends mostly
    /// get one of a few latest checkpoints (each replica assembles its own
    /// set of 2f+1 signatures, so one size comes in several byte forms),
    /// whose signatures then need checking once rather than per answer.
    verified_notes: std::sync::Mutex<VecDeque<(Vec<u8>, VerifiedCheckpoint)>>,
}

/// A handle to a cluster; cheap to clone.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl Client {
    /// A client for `cluster`. Must run inside a tokio runtime.
    pub fn new(cluster: Cluster, options: ClientOptions) -> Result<Self, ClientError> {
        let key = match &options.submitter_key {
            Some(key) => key.clone(),
            None => ed25519_dalek::SigningKey::generate(&mut crate::system_rng()),
        };
        let config = net::client_config(
            &key,
            &cluster.public_keys(),
            net::ALPN_CLIENT,
            &net::Limits::default(),
        )?;
        let endpoint = net::client_endpoint(cluster.addresses[0])?;
        let policy = cluster.receipt_policy();
        let n = cluster.n();
        let connections = (0..n).map(|_| Mutex::new(None)).collect();
        let start = rand::random::<u32>() as usize % cluster.n();
        Ok(Client {
            inner: Arc::new(Inner {
                cluster,
                policy,
                endpoint,
                config,
                connections,
                next: AtomicUsize::new(start),
                options,
                append_latency_us: AtomicU64::new(0),
                hedged_appends: AtomicU64::new(0),
                passed_over_until_ms: (0..n).map(|_| AtomicU64::new(0)).collect(),
                passed_over_streak: (0..n).map(|_| AtomicU64::new(0)).collect(),
                created: Instant::now(),
                verified_notes: std::sync::Mutex::new(VecDeque::new()),
            }),
        })
    }

    pub fn cluster(&self) -> &Cluster {
        &self.inner.cluster
    }

    pub fn policy(&self) -> &Policy {
        &self.inner.policy
    }

    async fn connection(&self, replica: usize) -> Result<quinn::Connection, ClientError> {
        let mut slot = self.inner.connections[replica].lock().await;
        if let Some(c) = slot.as_ref() {
            if c.close_reason().is_none() {
                return Ok(c.clone());
            }
        }
        let addr = self.inner.cluster.addresses[replica];
        let connect_error = |e: &dyn std::fmt::Display| ClientError::Connect {
            replica,
            message: e.to_string(),
        };
        let connection = self
            .inner
            .endpoint
            .connect_with(self.inner.config.clone(), addr, net::SERVER_NAME)
            .map_err(|e| connect_error(&e))?
            .await
            .map_err(|e| connect_error(&e))?;
        // The TLS verifier accepted any cluster key; this must be the one
        // listed for this address.
        let expected = self.inner.cluster.keys[replica].public_key().to_bytes();
        if net::remote_key(&connection) != Some(expected) {
            connection.close(1u32.into(), b"wrong replica key");
            return Err(connect_error(&"the server holds another replica's key"));
        }
        *slot = Some(connection.clone());
        Ok(connection)
    }

    /// One request to one replica; the raw (unverified) response.
    pub async fn request(
        &self,
        replica: usize,
        request: &ClientRequest,
    ) -> Result<ClientResponse, ClientError> {
        let timeout_ms = self.inner.options.request_timeout_ms;
        let bytes = wire::encode_frame(request);
        match tokio::time::timeout(
            Duration::from_millis(timeout_ms),
            self.exchange(replica, bytes, true),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(ClientError::Timeout {
                replica,
                timeout_ms,
            }),
        }
    }

    /// Sends raw bytes on a fresh stream and reads one response frame: the
    /// building block of [`Client::request`], public so tests can send
    /// malformed frames.
    pub async fn exchange_raw(
        &self,
        replica: usize,
        bytes: Vec<u8>,
    ) -> Result<ClientResponse, ClientError> {
        self.exchange(replica, bytes, false).await
    }

    async fn exchange(
        &self,
        replica: usize,
        bytes: Vec<u8>,
        retry: bool,
    ) -> Result<ClientResponse, ClientError> {
        let transport = |e: &dyn std::fmt::Display| ClientError::Transport {
            replica,
            message: e.to_string(),
        };
        let connection = self.connection(replica).await?;
        let (mut send, mut recv) = match connection.open_bi().await {
            Ok(s) => s,
            Err(e) if retry => {
                // A stale connection (the replica restarted): reconnect once.
                drop(e);
                *self.inner.connections[replica].lock().await = None;
                let connection = self.connection(replica).await?;
                connection.open_bi().await.map_err(|e| transport(&e))?
            }
            Err(e) => return Err(transport(&e)),
        };
        send.write_all(&bytes).await.map_err(|e| transport(&e))?;
        let _ = send.finish();
        let frame = net::read_frame(&mut recv, wire::MAX_MESSAGE_BYTES)
            .await
            .map_err(|e| transport(&e))?
            .ok_or_else(|| transport(&"the replica closed the stream without answering"))?;
        wire::decode::<ClientResponse>(&frame).map_err(|e| ClientError::Protocol {
            replica,
            message: e.to_string(),
        })
    }

    /// Appends entries and returns one verified receipt per entry, in order.
    pub async fn append(&self, entries: &[Vec<u8>]) -> Result<Vec<AppendReceipt>, ClientError> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let bounded: Vec<Entry> = entries
            .iter()
            .map(|e| Entry::new(e.clone()).map_err(|e| ClientError::Invalid(format!("entry: {e}"))))
            .collect::<Result<_, _>>()?;
        let request = Arc::new(ClientRequest::AppendMultiproof {
            entries: BoundedVec::new(bounded)
                .map_err(|e| ClientError::Invalid(format!("too many entries: {e}")))?,
        });
        let leaves: Arc<Vec<Hash>> =
            Arc::new(entries.iter().map(|e| merkle::leaf_hash(e)).collect());
        let fanout = self.inner.cluster.f() + 1;
        let mut last_error = None;
        let started = Instant::now();
        let timeout = Duration::from_millis(self.inner.options.request_timeout_ms);
        let mut round = 0;
        // Replicas that answered each final refusal (TooLarge, Malformed,
        // Forbidden), over all rounds.
        let mut final_answers: std::collections::HashMap<
            std::mem::Discriminant<ErrorCode>,
            std::collections::HashSet<usize>,
        > = std::collections::HashMap::new();
        while round < self.inner.options.append_rounds {
            round += 1;
            let mut quota_wait: Option<Duration> = None;
            let start = self.inner.next.fetch_add(1, Ordering::Relaxed);
            let replicas = self.append_order(start, fanout);
            let sent_at = Instant::now();
            let mut tasks = tokio::task::JoinSet::new();
            let spawn = |tasks: &mut tokio::task::JoinSet<_>, replica: usize| {
                let client = self.clone();
                let request = request.clone();
                let leaves = leaves.clone();
                tasks.spawn(async move {
                    let result = match client.request(replica, &request).await {
                        Ok(response) => client.check_receipts(replica, response, &leaves),
                        Err(e) => Err(e),
                    };
                    (replica, result)
                });
            };
            let hedge_after = self.hedge_delay();
            let mut hedged = hedge_after.is_zero();
            if hedged {
                replicas.iter().for_each(|&r| spawn(&mut tasks, r));
            } else {
                spawn(&mut tasks, replicas[0]);
            }
            let hedge_timer = tokio::time::sleep(hedge_after);
            tokio::pin!(hedge_timer);
            let mut retry_after = Duration::from_millis(100);
            loop {
                let joined = tokio::select! {
                    joined = tasks.join_next() => joined,
                    () = &mut hedge_timer, if !hedged => None,
                };
                let Some(joined) = joined else {
                    if hedged {
                        break; // every replica of this round answered badly
                    }
                    // The hedge delay passed, or the first replica failed:
                    // f more replicas, so that an honest one has the entries.
                    hedged = true;
                    if replicas.len() > 1 {
                        self.inner.hedged_appends.fetch_add(1, Ordering::Relaxed);
                    }
                    replicas[1..].iter().for_each(|&r| spawn(&mut tasks, r));
                    continue;
                };
                let (replica, result) = joined.expect("append task panicked");
                match result {
                    Ok(receipts) => {
                        tasks.abort_all();
                        if replica == replicas[0] {
                            self.record_append_latency(sent_at.elapsed());
                            self.inner.passed_over_streak[replica].store(0, Ordering::Relaxed);
                        } else if !hedge_after.is_zero() {
                            // The first replica had a head start and lost.
                            // (Sent to all at once, losing a race says
                            // nothing about it.)
                            self.pass_over(replicas[0]);
                        }
                        return Ok(receipts);
                    }
                    Err(e) => {
                        match &e {
                            ClientError::Server {
                                code: ErrorCode::QuotaExceeded { retry_after_ms },
                                ..
                            } => {
                                // Over quota is not a fault: the replica
                                // is not passed over, and the wait is
                                // honoured before the next round (below).
                                // The shortest wait of the round counts:
                                // a faulty replica cannot stretch it.
                                let wait = Duration::from_millis(*retry_after_ms);
                                quota_wait =
                                    Some(quota_wait.map_or(wait, |w: Duration| w.min(wait)));
                            }
                            ClientError::Server {
                                code:
                                    code @ (ErrorCode::TooLarge
                                    | ErrorCode::Malformed
                                    | ErrorCode::Forbidden),
                                ..
                            } => {
                                // Final once f+1 replicas say so (one of
                                // them is honest); one replica's answer
                                // alone could be a fault.
                                let agreeing = final_answers
                                    .entry(std::mem::discriminant(code))
                                    .or_default();
                                agreeing.insert(replica);
                                if agreeing.len() >= fanout {
                                    return Err(e);
                                }
                            }
                            ClientError::Server {
                                code: ErrorCode::Overloaded { retry_after_ms },
                                ..
                            } => {
                                retry_after =
                                    retry_after.max(Duration::from_millis(*retry_after_ms));
                                self.pass_over(replica);
                            }
                            // If that was the first replica, the set is
                            // now empty and the next turn hedges at once.
                            _ => self.pass_over(replica),
                        }
                        last_error = Some(e);
                    }
                }
            }
            if let Some(wait) = quota_wait {
                // Not counted as a round, but bounded by the request
                // timeout: past it the quota answer is the error.
                if started.elapsed() + wait > timeout {
                    return Err(last_error.expect("a quota answer"));
                }
                tokio::time::sleep(wait.max(retry_after)).await;
                round -= 1;
                continue;
            }
            tokio::time::sleep(retry_after.min(Duration::from_secs(5))).await;
        }
        Err(ClientError::Exhausted(Box::new(
            last_error.expect("at least one attempt"),
        )))
    }

    /// How long an append waits for its first replica before also sending
    /// to f more (zero: at once).
    fn hedge_delay(&self) -> Duration {
        hedge_delay(
            &self.inner.options,
            self.inner.append_latency_us.load(Ordering::Relaxed),
        )
    }

    /// The `fanout` replicas of one append attempt, in the order they are
    /// asked: round robin from `start`, replicas currently passed over
    /// last.
    fn append_order(&self, start: usize, fanout: usize) -> Vec<usize> {
        let now_ms = self.inner.created.elapsed().as_millis() as u64;
        append_order(self.inner.cluster.n(), start, fanout, |r| {
            self.inner.passed_over_until_ms[r].load(Ordering::Relaxed) > now_ms
        })
    }

    /// Asks `replica` first again only after `pass_over_ms`, doubled for
    /// each time in a row.
    fn pass_over(&self, replica: usize) {
        let now_ms = self.inner.created.elapsed().as_millis() as u64;
        let until_ms = &self.inner.passed_over_until_ms[replica];
        let current = until_ms.load(Ordering::Relaxed);
        if current > now_ms {
            return; // already passed over: answers to appends sent before
        }
        let streak = &self.inner.passed_over_streak[replica];
        let until =
            now_ms + (self.inner.options.pass_over_ms << streak.load(Ordering::Relaxed).min(5));
        // Concurrent appends may fail on the same replica together: only
        // the one that sets the period lengthens the streak.
        if until_ms
            .compare_exchange(current, until, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            streak.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn record_append_latency(&self, latency: Duration) {
        let sample_us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        // Racing updates may lose a sample; the average stays an average.
        let old = self.inner.append_latency_us.load(Ordering::Relaxed);
        self.inner
            .append_latency_us
            .store(smoothed_latency_us(old, sample_us), Ordering::Relaxed);
    }

    /// Appends that went to f more replicas because the first was slow or
    /// failed (since this client was made).
    pub fn hedged_appends(&self) -> u64 {
        self.inner.hedged_appends.load(Ordering::Relaxed)
    }

    fn check_receipts(
        &self,
        replica: usize,
        response: ClientResponse,
        leaves: &[Hash],
    ) -> Result<Vec<AppendReceipt>, ClientError> {
        match response {
            ClientResponse::ReceiptMultiproof {
                checkpoint,
                indexes,
                proof,
            } => self.check_receipt_multiproof(replica, &checkpoint, &indexes, &proof, leaves),
            other => Err(unexpected(replica, other)),
        }
    }

    /// Receipts sent as one multiproof: the checkpoint is verified once,
    /// the multiproof of the distinct indexes is checked against its root
    /// with the entries' own leaf hashes, and each entry's inclusion proof
    /// comes out of that check.
    fn check_receipt_multiproof(
        &self,
        replica: usize,
        checkpoint: &[u8],
        indexes: &[u64],
        proof: &[Hash],
        leaves: &[Hash],
    ) -> Result<Vec<AppendReceipt>, ClientError> {
        let verify_error = |message: String| ClientError::Verify { replica, message };
        one_receipt_per_entry(replica, indexes.len(), leaves.len())?;
        let verified = self
            .verified_note(checkpoint)
            .map_err(|e| verify_error(format!("checkpoint: {e}")))?;
        let tree = verified.checkpoint();
        let (pairs, pair_of_entry) = multiproof_pairs(indexes, leaves).map_err(verify_error)?;
        let mut paths = merkle::verify_multiproof(tree.size, &tree.root, &pairs, proof)
            .map_err(|e| verify_error(format!("receipts: {e}")))?;
        let note_text: Arc<str> = verified.note().format().into();
        // Each path moves to the last entry that uses it; only an entry
        // named more than once in the append costs a copy.
        let mut uses_left = vec![0usize; paths.len()];
        for &pair in &pair_of_entry {
            uses_left[pair] += 1;
        }
        Ok(indexes
            .iter()
            .zip(pair_of_entry)
            .map(|(&index, pair)| {
                uses_left[pair] -= 1;
                let inclusion = if uses_left[pair] == 0 {
                    std::mem::take(&mut paths[pair])
                } else {
                    paths[pair].clone()
                };
                AppendReceipt {
                    index,
                    tree_size: tree.size,
                    note_text: note_text.clone(),
                    inclusion,
                }
            })
            .collect())
    }

    /// The checkpoint note `bytes` verified under the cluster's policy; the
    /// same bytes as one of the last notes verified are not checked again.
    fn verified_note(&self, bytes: &[u8]) -> Result<VerifiedCheckpoint, String> {
        let recent = self
            .inner
            .verified_notes
            .lock()
            .expect("checkpoint cache lock");
        if let Some((_, verified)) = recent.iter().rev().find(|(b, _)| b.as_slice() == bytes) {
            return Ok(verified.clone());
        }
        drop(recent);
        let note = Note::parse(bytes).map_err(|e| e.to_string())?;
        let verified = self
            .inner
            .policy
            .verify_checkpoint(&note)
            .map_err(|e| e.to_string())?;
        let mut recent = self
            .inner
            .verified_notes
            .lock()
            .expect("checkpoint cache lock");
        if recent.len() == VERIFIED_NOTES {
            recent.pop_front();
        }
        recent.push_back((bytes.to_vec(), verified.clone()));
        Ok(verified)
    }

    /// A verified checkpoint: asks replicas in turn and returns the first
    /// valid one. A lagging replica may serve an older checkpoint than the
    /// newest in the cluster.
    pub async fn checkpoint(&self) -> Result<VerifiedCheckpoint, ClientError> {
        self.any_replica(|client, replica| async move {
            match client
                .request(replica, &ClientRequest::GetCheckpoint)
                .await?
            {
                ClientResponse::Checkpoint { note } => client
                    .inner
                    .policy
                    .verify_checkpoint_bytes(&note)
                    .map_err(|e| ClientError::Verify {
                        replica,
                        message: format!("checkpoint: {e}"),
                    }),
                other => Err(unexpected(replica, other)),
            }
        })
        .await
    }

    /// An inclusion proof against a verified checkpoint, checked before it
    /// is returned: (index, proof hashes).
    pub async fn prove_inclusion(
        &self,
        leaf: Hash,
        index: Option<u64>,
        checkpoint: &VerifiedCheckpoint,
    ) -> Result<(u64, Vec<Hash>), ClientError> {
        let cp = checkpoint.checkpoint().clone();
        let leaf_ref = match index {
            Some(index) => LeafRef::Index { index },
            None => LeafRef::LeafHash { leaf_hash: leaf },
        };
        self.any_replica(|client, replica| {
            let leaf_ref = leaf_ref.clone();
            let cp = cp.clone();
            async move {
                let request = ClientRequest::GetInclusionProof {
                    leaf: leaf_ref,
                    tree_size: cp.size,
                };
                match client.request(replica, &request).await? {
                    ClientResponse::InclusionProof {
                        index,
                        tree_size,
                        hashes,
                    } if tree_size == cp.size => {
                        let hashes = hashes.into_inner();
                        merkle::verify_inclusion(index, cp.size, &leaf, &hashes, &cp.root)
                            .map_err(|e| ClientError::Verify {
                                replica,
                                message: format!("inclusion: {e}"),
                            })?;
                        Ok((index, hashes))
                    }
                    other => Err(unexpected(replica, other)),
                }
            }
        })
        .await
    }

    /// A consistency proof between two verified checkpoints, checked.
    pub async fn prove_consistency(
        &self,
        old: &Checkpoint,
        new: &Checkpoint,
    ) -> Result<Vec<Hash>, ClientError> {
        let (old, new) = (old.clone(), new.clone());
        self.any_replica(|client, replica| {
            let (old, new) = (old.clone(), new.clone());
            async move {
                let request = ClientRequest::GetConsistencyProof {
                    old_size: old.size,
                    new_size: new.size,
                };
                match client.request(replica, &request).await? {
                    ClientResponse::ConsistencyProof { hashes, .. } => {
                        let hashes = hashes.into_inner();
                        merkle::verify_consistency(
                            old.size, new.size, &old.root, &new.root, &hashes,
                        )
                        .map_err(|e| ClientError::Verify {
                            replica,
                            message: format!("consistency: {e}"),
                        })?;
                        Ok(hashes)
                    }
                    other => Err(unexpected(replica, other)),
                }
            }
        })
        .await
    }

    /// Inclusion proofs of the leaves at `indexes` in the tree of
    /// `tree_size`, in one request to one replica, as served: each has the
    /// length RFC 6962 gives its index and size, but is not verified (the
    /// caller holds the leaves and the checkpoint to check them against).
    pub async fn inclusion_proofs(
        &self,
        replica: usize,
        indexes: &[u64],
        tree_size: u64,
    ) -> Result<Vec<Vec<Hash>>, ClientError> {
        let request = ClientRequest::GetInclusionProofs {
            indexes: BoundedVec::new(indexes.to_vec())
                .map_err(|e| ClientError::Invalid(format!("too many indexes: {e}")))?,
            tree_size,
        };
        match self.request(replica, &request).await? {
            ClientResponse::InclusionProofs {
                tree_size: size,
                proofs,
            } if size == tree_size && proofs.len() == indexes.len() => {
                let proofs: Vec<Vec<Hash>> = proofs
                    .into_inner()
                    .into_iter()
                    .map(|p| p.into_inner())
                    .collect();
                for (&index, proof) in indexes.iter().zip(&proofs) {
                    if index >= tree_size
                        || proof.len() != merkle::inclusion_proof_len(index, tree_size)
                    {
                        return Err(ClientError::Verify {
                            replica,
                            message: format!(
                                "a proof of {} hashes for index {index} in a tree of {tree_size}",
                                proof.len()
                            ),
                        });
                    }
                }
                Ok(proofs)
            }
            other => Err(unexpected(replica, other)),
        }
    }

    /// A consistency proof as served (unverified: the caller holds the
    /// checkpoints to check it against).
    pub async fn consistency_hashes(
        &self,
        old_size: u64,
        new_size: u64,
    ) -> Result<Vec<Hash>, ClientError> {
        self.any_replica(|client, replica| async move {
            let request = ClientRequest::GetConsistencyProof { old_size, new_size };
            match client.request(replica, &request).await? {
                ClientResponse::ConsistencyProof {
                    old_size: o,
                    new_size: n,
                    hashes,
                } if (o, n) == (old_size, new_size) => Ok(hashes.into_inner()),
                other => Err(unexpected(replica, other)),
            }
        })
        .await
    }

    /// Entries `[start, start + count)` (possibly fewer), each checked
    /// against a verified checkpoint by an inclusion proof is up to the
    /// caller; `bftlog get` prints them as served.
    pub async fn entries(&self, start: u64, count: u32) -> Result<Vec<Vec<u8>>, ClientError> {
        self.any_replica(|client, replica| async move {
            match client
                .request(replica, &ClientRequest::GetEntries { start, count })
                .await?
            {
                ClientResponse::Entries { start: s, entries } if s == start => Ok(entries
                    .into_inner()
                    .into_iter()
                    .map(|e| e.into_inner())
                    .collect()),
                other => Err(unexpected(replica, other)),
            }
        })
        .await
    }

    async fn any_replica<T, F, Fut>(&self, attempt: F) -> Result<T, ClientError>
    where
        F: Fn(Client, usize) -> Fut,
        Fut: std::future::Future<Output = Result<T, ClientError>>,
    {
        let n = self.inner.cluster.n();
        let start = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let mut last = None;
        for k in 0..n {
            let replica = (start + k) % n;
            match attempt(self.clone(), replica).await {
                Ok(v) => return Ok(v),
                Err(
                    e @ ClientError::Server {
                        code: ErrorCode::NotFound,
                        ..
                    },
                ) if k + 1 == n => {
                    return Err(e);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(ClientError::Exhausted(Box::new(last.expect("n ≥ 1"))))
    }
}

/// An answer must carry exactly one receipt per appended entry.
fn one_receipt_per_entry(
    replica: usize,
    receipts: usize,
    entries: usize,
) -> Result<(), ClientError> {
    if receipts == entries {
        return Ok(());
    }
    Err(ClientError::Verify {
        replica,
        message: format!("{receipts} receipts for {entries} entries"),
    })
}

fn unexpected(replica: usize, response: ClientResponse) -> ClientError {
    match response {
        ClientResponse::Error { code, message } => ClientError::Server {
            replica,
            code,
            message: String::from_utf8_lossy(&message).into_owned(),
        },
        _ => ClientError::Protocol {
            replica,
            message: "unexpected response type".into(),
        },
    }
}

/// The hedge delay for a smoothed append latency (0: none measured yet).
fn hedge_delay(options: &ClientOptions, smoothed_us: u64) -> Duration {
    let wanted_ms = smoothed_us.saturating_mul(u64::from(options.hedge_latency_multiple)) / 1000;
    let ms = wanted_ms.clamp(
        options.hedge_after_min_ms,
        options.hedge_after_max_ms.max(options.hedge_after_min_ms),
    );
    Duration::from_millis(ms)
}

/// One step of the exponential average: the new sample weighs 1/8.
fn smoothed_latency_us(old_us: u64, sample_us: u64) -> u64 {
    if old_us == 0 {
        sample_us
    } else {
        old_us - old_us / 8 + sample_us / 8
    }
}

/// `fanout` of `n` replicas, round robin from `start`, those
/// `passed_over` last.
fn append_order(
    n: usize,
    start: usize,
    fanout: usize,
    passed_over: impl Fn(usize) -> bool,
) -> Vec<usize> {
    let (mut order, later): (Vec<usize>, Vec<usize>) = (0..n)
        .map(|k| (start + k) % n)
        .partition(|r| !passed_over(*r));
    order.extend(later);
    order.truncate(fanout);
    order
}

/// [`multiproof_pairs`]: the distinct pairs, and each entry's pair.
type MultiproofPairs = (Vec<(u64, Hash)>, Vec<usize>);

/// The distinct `(index, leaf hash)` pairs of an append's entries in index
/// order, as a multiproof covers them, and for each entry the position of
/// its pair. An entry appended twice has one index; one index given for
/// two different entries is a lie (an error naming the index).
fn multiproof_pairs(indexes: &[u64], leaves: &[Hash]) -> Result<MultiproofPairs, String> {
    assert_eq!(indexes.len(), leaves.len(), "one index per entry");
    let mut order: Vec<usize> = (0..indexes.len()).collect();
    order.sort_unstable_by_key(|&i| indexes[i]);
    let mut pairs: Vec<(u64, Hash)> = Vec::with_capacity(indexes.len());
    let mut pair_of_entry = vec![0usize; indexes.len()];
    for &entry in &order {
        match pairs.last() {
            Some(&(index, leaf)) if index == indexes[entry] => {
                if leaf != leaves[entry] {
                    return Err(format!("index {index} is given for two different entries"));
                }
            }
            _ => pairs.push((indexes[entry], leaves[entry])),
        }
        pair_of_entry[entry] = pairs.len() - 1;
    }
    Ok((pairs, pair_of_entry))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hedge_delay_follows_recent_latency_within_its_bounds() {
        let options = ClientOptions::default();
        // Nothing measured, or fast appends: the floor.
        assert_eq!(hedge_delay(&options, 0), Duration::from_millis(200));
        assert_eq!(hedge_delay(&options, 10_000), Duration::from_millis(200));
        // 3 × 400 ms.
        assert_eq!(hedge_delay(&options, 400_000), Duration::from_millis(1200));
        // A cluster slower than the ceiling: the ceiling.
        assert_eq!(hedge_delay(&options, u64::MAX), Duration::from_millis(5000));
        let at_once = ClientOptions {
            hedge_after_min_ms: 0,
            hedge_after_max_ms: 0,
            ..options
        };
        assert_eq!(hedge_delay(&at_once, 400_000), Duration::ZERO);
    }

    #[test]
    fn replicas_passed_over_are_asked_last() {
        assert_eq!(append_order(4, 5, 2, |_| false), vec![1, 2]);
        assert_eq!(append_order(4, 5, 2, |r| r == 1), vec![2, 3]);
        assert_eq!(append_order(4, 3, 2, |r| r == 0), vec![3, 1]);
        // All passed over: round robin.
        assert_eq!(append_order(4, 2, 2, |_| true), vec![2, 3]);
        assert_eq!(append_order(7, 6, 3, |r| r == 0 || r == 1), vec![6, 2, 3]);
    }

    #[test]
    fn the_smoothed_latency_starts_at_the_first_sample_and_moves_an_eighth() {
        assert_eq!(smoothed_latency_us(0, 8_000), 8_000);
        assert_eq!(smoothed_latency_us(8_000, 16_000), 9_000);
        // One outlier does not dominate; a run of them does.
        let mut s = 10_000;
        s = smoothed_latency_us(s, 1_000_000);
        assert!(s < 140_000, "{s}");
        for _ in 0..40 {
            s = smoothed_latency_us(s, 1_000_000);
        }
        assert!(s > 990_000, "{s}");
    }

    /// Entries map to the distinct pairs a multiproof covers, in index
    /// order; a repeated entry shares its pair; one index for two entries
    /// is refused.
    #[test]
    fn multiproof_pairs_sort_share_and_refuse_one_index_for_two_entries() {
        let leaf = |i: u8| merkle::leaf_hash(&[i]);
        let (pairs, of_entry) =
            multiproof_pairs(&[7, 3, 9, 3], &[leaf(1), leaf(2), leaf(3), leaf(2)]).unwrap();
        assert_eq!(pairs, vec![(3, leaf(2)), (7, leaf(1)), (9, leaf(3))]);
        assert_eq!(of_entry, vec![1, 0, 2, 0]);
        assert_eq!(
            multiproof_pairs(&[4, 4], &[leaf(1), leaf(2)]).unwrap_err(),
            "index 4 is given for two different entries"
        );
        assert_eq!(multiproof_pairs(&[], &[]).unwrap(), (vec![], vec![]));
    }

    /// `check_receipts` on `ReceiptMultiproof` answers made with real
    /// replica keys: an honest one gives receipts that verify offline (an
    /// entry named twice shares its index); swapped indexes, an index past
    /// the checkpoint, a missing index, one index for two entries and a
    /// tampered proof are each refused.
    #[tokio::test]
    async fn hostile_multiproof_answers_are_refused() {
        use bftlog_spec::note::SignerKey;
        let dir = crate::test_dir::TestDir::new("client-multiproof");
        let cluster = crate::config::init_cluster(
            &dir,
            "example.com/multiproof",
            4,
            std::net::Ipv4Addr::LOCALHOST.into(),
            1,
        )
        .unwrap();
        let signer = |i: usize| {
            let text = std::fs::read_to_string(dir.join(format!("replica-{i}.key"))).unwrap();
            SignerKey::parse(text.trim_end()).unwrap()
        };
        let entries: Vec<Vec<u8>> = (0..40).map(|i| format!("entry {i}").into_bytes()).collect();
        let mut tree = merkle::MemoryTree::new();
        for e in &entries {
            tree.append(merkle::leaf_hash(e));
        }
        let mut note = Checkpoint::new(&cluster.origin, 40, tree.root())
            .sign(&signer(0))
            .unwrap();
        note.sign(&signer(1)).unwrap();
        note.sign(&signer(2)).unwrap();
        let note_bytes = note.format().into_bytes();
        let client = Client::new(cluster, ClientOptions::default()).unwrap();
        let picks = [10usize, 11, 12, 11];
        let leaves: Vec<Hash> = picks
            .iter()
            .map(|&i| merkle::leaf_hash(&entries[i]))
            .collect();
        let answer = |indexes: Vec<u64>, proof: Vec<Hash>| ClientResponse::ReceiptMultiproof {
            checkpoint: wire::BoundedBytes::new(note_bytes.clone()).unwrap(),
            indexes: BoundedVec::new(indexes).unwrap(),
            proof: BoundedVec::new(proof).unwrap(),
        };
        let proof = merkle::prove_multiproof(&[10, 11, 12], 40, &tree).unwrap();
        let receipts = client
            .check_receipts(0, answer(vec![10, 11, 12, 11], proof.clone()), &leaves)
            .unwrap();
        for (receipt, &i) in receipts.iter().zip(&picks) {
            assert_eq!(receipt.index, i as u64);
            TlogProof::parse(receipt.tlog_proof().as_bytes())
                .unwrap()
                .verify_entry(client.policy(), &entries[i])
                .unwrap();
        }
        let mut tampered = proof.clone();
        tampered[0].0[7] ^= 1;
        let two_entries_one_index = merkle::prove_multiproof(&[10, 11], 40, &tree).unwrap();
        for (what, indexes, proof) in [
            ("swapped", vec![11, 10, 12, 10], proof.clone()),
            ("past the checkpoint", vec![10, 11, 40, 11], proof.clone()),
            ("one index missing", vec![10, 11, 12], proof.clone()),
            (
                "one index for two entries",
                vec![10, 11, 11, 11],
                two_entries_one_index,
            ),
            ("tampered proof", vec![10, 11, 12, 11], tampered),
        ] {
            assert!(
                matches!(
                    client.check_receipts(0, answer(indexes, proof), &leaves),
                    Err(ClientError::Verify { replica: 0, .. })
                ),
                "{what}"
            );
        }
    }
}
