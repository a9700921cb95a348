//! The witness core, free of HTTP: check a submission, then decide and
//! store a batch of them atomically.
//!
//! Processing is split in two so the expensive, stateless part runs in
//! parallel and the stateful part is a single writer:
//!
//! 1. [`Witness::check`] parses the body, looks up the origin (404),
//!    verifies the log signatures against the trusted keys and threshold
//!    (403), and checks `old <= size` (400). It needs no lock.
//! 2. [`Witness::commit`] takes a batch of checked submissions in order and,
//!    inside one redb write transaction, compares each with the latest
//!    cosigned state (as updated by earlier ones of the batch): the old
//!    size must equal the stored size (409), the proof must verify (422),
//!    an equal size must have an equal root (409). Accepted checkpoints are
//!    cosigned and stored; rejected inconsistent ones are kept as evidence.
//!    The transaction commits durably before any answer is returned, so
//!    check-and-store is a compare-and-swap on the stored size and a
//!    cosignature never outlives a crash that forgot it.

use crate::log_config::LogConfig;
use crate::request::{AddCheckpoint, RequestError, parse_add_checkpoint};
use crate::store::{Store, StoreError, WriteBatch};
use bftlog_spec::checkpoint::Checkpoint;
use bftlog_spec::evidence::{Comparison, Evidence, Kind, compare};
use bftlog_spec::merkle::{self, Hash};
use bftlog_spec::note::{KeyRing, KeyType, Note, NoteError, SignerKey, VerifierKey};
use bftlog_spec::policy::Policy;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Content type of a 409 body (C2SP tlog-witness).
pub const SIZE_CONTENT_TYPE: &str = "text/x.tlog.size";
pub const TEXT_CONTENT_TYPE: &str = "text/plain; charset=utf-8";

/// Header line of a rejected-submission record.
pub const REJECTED_HEADER: &str = "bftlog.org/witness-rejected@v1";

/// An HTTP-shaped answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Response {
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        let mut body = body.into();
        if !body.ends_with('\n') {
            body.push('\n');
        }
        Response {
            status,
            content_type: TEXT_CONTENT_TYPE,
            body: body.into_bytes(),
        }
    }

    fn conflict(size: u64) -> Self {
        Response {
            status: 409,
            content_type: SIZE_CONTENT_TYPE,
            body: format!("{size}\n").into_bytes(),
        }
    }
}

/// A submission that passed the stateless checks.
#[derive(Clone, Debug)]
pub struct Checked {
    request: AddCheckpoint,
    body: Vec<u8>,
}

impl Checked {
    pub fn origin(&self) -> &str {
        &self.request.checkpoint.origin
    }
}

/// Why a submission failed before reaching the state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("malformed request: {0}")]
    Malformed(#[from] RequestError),
    #[error("unknown origin {0:?}")]
    UnknownOrigin(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("old size {old} is larger than the checkpoint size {size}")]
    OldTooLarge { old: u64, size: u64 },
}

impl Rejection {
    pub fn response(&self) -> Response {
        let status = match self {
            Rejection::Malformed(RequestError::TooLarge) => 413,
            Rejection::Malformed(_) | Rejection::OldTooLarge { .. } => 400,
            Rejection::UnknownOrigin(_) => 404,
            Rejection::Forbidden(_) => 403,
        };
        Response::text(status, self.to_string())
    }

    /// A short label for metrics and rate-limited logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::Malformed(RequestError::TooLarge) => "too_large",
            Rejection::Malformed(_) => "malformed",
            Rejection::OldTooLarge { .. } => "old_too_large",
            Rejection::UnknownOrigin(_) => "unknown_origin",
            Rejection::Forbidden(_) => "forbidden",
        }
    }
}

/// The state-dependent result of one submission.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// 200: the cosignature line(s).
    Cosigned(String),
    /// 409: the old size is not the stored size.
    StaleOldSize(u64),
    /// 409: same size as stored, different root (split view, kept).
    SameSizeFork(u64),
    /// 422: the consistency proof does not verify.
    Inconsistent(String),
    /// 500: the state could not be stored; nothing was cosigned.
    Internal(String),
}

impl Outcome {
    pub fn response(&self) -> Response {
        match self {
            Outcome::Cosigned(lines) => Response {
                status: 200,
                content_type: TEXT_CONTENT_TYPE,
                body: lines.clone().into_bytes(),
            },
            Outcome::StaleOldSize(size) | Outcome::SameSizeFork(size) => Response::conflict(*size),
            Outcome::Inconsistent(why) => Response::text(422, why.clone()),
            Outcome::Internal(why) => Response::text(500, why.clone()),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Latest {
    pub size: u64,
    pub root: Hash,
    /// The cosigned note, verbatim as served by the monitoring endpoint.
    pub note: Arc<String>,
}

struct KnownLog {
    config: LogConfig,
    keys: KeyRing,
    policy: Policy,
}

/// A log as listed by [`Witness::logs`].
#[derive(Clone, Debug)]
pub struct LogStatus {
    pub config: LogConfig,
    pub latest: Option<Latest>,
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("witness key must be a cosignature/v1 (type 0x04) key")]
    KeyType,
    #[error("stored checkpoint of {origin:?} is corrupt: {reason}")]
    Corrupt { origin: String, reason: String },
}

pub struct Witness {
    key: SignerKey,
    store: Store,
    logs: HashMap<String, KnownLog>,
    /// Lower-case hex SHA-256 of each origin → origin.
    by_origin_hash: HashMap<String, String>,
    /// Mirrors the `latest` table; only [`Witness::commit`] changes it,
    /// after the transaction commits.
    latest: Mutex<HashMap<String, Latest>>,
    /// Serialises commits, so check-and-store stays atomic even if callers
    /// run several writers.
    commit_lock: Mutex<()>,
    /// The latest timestamp this witness put in a cosignature (found in
    /// the stored notes at start). Cosignatures never go back in time even
    /// if the clock does: a cosignature says the largest tree seen *as of*
    /// its time, so an older time on a larger tree would contradict one
    /// already given.
    last_timestamp: std::sync::atomic::AtomicU64,
}

pub fn origin_hash_hex(origin: &str) -> String {
    Sha256::digest(origin.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The timestamp of this witness's own cosignature on a stored note.
fn own_timestamp(key: &SignerKey, note: &str) -> Option<u64> {
    let note = Note::parse(note.as_bytes()).ok()?;
    note.signatures()
        .iter()
        .filter(|s| s.key_id == key.key_id() && s.name == key.name())
        .find_map(|s| bftlog_spec::cosignature::split_signature(&s.signature).ok())
        .map(|(timestamp, _)| timestamp)
}

fn parse_latest(origin: &str, note: &[u8]) -> Result<Latest, OpenError> {
    let corrupt = |reason: String| OpenError::Corrupt {
        origin: origin.to_owned(),
        reason,
    };
    let parsed = Note::parse(note).map_err(|e| corrupt(e.to_string()))?;
    let checkpoint = Checkpoint::parse(parsed.text()).map_err(|e| corrupt(e.to_string()))?;
    let text = String::from_utf8(note.to_vec()).map_err(|e| corrupt(e.to_string()))?;
    Ok(Latest {
        size: checkpoint.size,
        root: checkpoint.root,
        note: Arc::new(text),
    })
}

impl Witness {
    pub fn new(key: SignerKey, store: Store) -> Result<Self, OpenError> {
        if key.key_type() != KeyType::CosignatureV1 {
            return Err(OpenError::KeyType);
        }
        let mut logs = HashMap::new();
        let mut by_origin_hash = HashMap::new();
        for config in store.logs()? {
            by_origin_hash.insert(origin_hash_hex(config.origin()), config.origin().to_owned());
            logs.insert(
                config.origin().to_owned(),
                KnownLog {
                    keys: config.key_ring(),
                    policy: config.policy(),
                    config,
                },
            );
        }
        let mut latest = HashMap::new();
        let mut last_timestamp = 0;
        for (origin, note) in store.latest()? {
            let parsed = parse_latest(&origin, &note)?;
            last_timestamp = last_timestamp.max(own_timestamp(&key, &parsed.note).unwrap_or(0));
            latest.insert(origin.clone(), parsed);
        }
        Ok(Witness {
            key,
            store,
            logs,
            by_origin_hash,
            latest: Mutex::new(latest),
            commit_lock: Mutex::new(()),
            last_timestamp: std::sync::atomic::AtomicU64::new(last_timestamp),
        })
    }

    pub fn verifier_key(&self) -> VerifierKey {
        self.key.verifier()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn logs(&self) -> Vec<LogStatus> {
        let latest = self.latest.lock().expect("latest lock");
        let mut out: Vec<_> = self
            .logs
            .values()
            .map(|log| LogStatus {
                config: log.config.clone(),
                latest: latest.get(log.config.origin()).cloned(),
            })
            .collect();
        out.sort_by(|a, b| a.config.origin().cmp(b.config.origin()));
        out
    }

    /// The latest cosigned checkpoint of the origin whose SHA-256 is
    /// `origin_hash_hex` (the monitoring endpoint).
    pub fn latest_by_hash(&self, origin_hash_hex: &str) -> Option<Latest> {
        let origin = self.by_origin_hash.get(origin_hash_hex)?;
        self.latest
            .lock()
            .expect("latest lock")
            .get(origin)
            .cloned()
    }

    pub fn latest(&self, origin: &str) -> Option<Latest> {
        self.latest
            .lock()
            .expect("latest lock")
            .get(origin)
            .cloned()
    }

    /// Forgets every cosigned state and kept item (fuzz builds only; see
    /// [`Store::reset_for_fuzzing`]).
    #[cfg(fuzzing)]
    pub fn reset_for_fuzzing(&self) {
        self.store.reset_for_fuzzing().expect("in-memory reset");
        self.latest.lock().expect("latest lock").clear();
        self.last_timestamp
            .store(0, std::sync::atomic::Ordering::SeqCst);
    }

    /// The stateless checks: parse, origin, signatures, `old <= size`.
    pub fn check(&self, body: &[u8]) -> Result<Checked, Rejection> {
        let request = parse_add_checkpoint(body)?;
        let origin = &request.checkpoint.origin;
        let log = self
            .logs
            .get(origin)
            .ok_or_else(|| Rejection::UnknownOrigin(origin.clone()))?;
        let verified = request.note.verify(&log.keys).map_err(|e| match e {
            NoteError::NoKnownSignature => {
                Rejection::Forbidden("no signature from a trusted log key".into())
            }
            other => Rejection::Forbidden(other.to_string()),
        })?;
        // The key ring holds only this origin's Ed25519 keys, each once.
        let signed = verified.signatures().len();
        if signed < log.config.threshold() {
            return Err(Rejection::Forbidden(format!(
                "{signed} valid log signatures, this witness needs {}",
                log.config.threshold()
            )));
        }
        if request.old_size > request.checkpoint.size {
            return Err(Rejection::OldTooLarge {
                old: request.old_size,
                size: request.checkpoint.size,
            });
        }
        Ok(Checked {
            request,
            body: body.to_vec(),
        })
    }

    /// Decides a batch of checked submissions in order, stores the result
    /// durably in one transaction, and only then returns the outcomes.
    pub fn commit(&self, batch: &[Checked], now_unix_s: u64) -> Vec<Outcome> {
        let _writer = self.commit_lock.lock().expect("commit lock");
        // Under the commit lock: no other commit moves it meanwhile.
        let now_unix_s = self
            .last_timestamp
            .fetch_max(now_unix_s, std::sync::atomic::Ordering::SeqCst)
            .max(now_unix_s);
        let mut staged: HashMap<&str, Latest> = HashMap::new();
        let mut write = WriteBatch::default();
        let mut outcomes = Vec::with_capacity(batch.len());
        {
            let latest = self.latest.lock().expect("latest lock");
            for checked in batch {
                let origin = checked.origin();
                let current = staged.get(origin).or_else(|| latest.get(origin)).cloned();
                outcomes.push(self.decide(checked, current, now_unix_s, &mut staged, &mut write));
            }
        }
        if let Err(e) = self.store.write(&write) {
            let why = format!("storing the witness state failed: {e}");
            return batch
                .iter()
                .map(|_| Outcome::Internal(why.clone()))
                .collect();
        }
        let mut latest = self.latest.lock().expect("latest lock");
        for (origin, state) in staged {
            latest.insert(origin.to_owned(), state);
        }
        outcomes
    }

    fn decide<'b>(
        &self,
        checked: &'b Checked,
        current: Option<Latest>,
        now_unix_s: u64,
        staged: &mut HashMap<&'b str, Latest>,
        write: &mut WriteBatch,
    ) -> Outcome {
        let request = &checked.request;
        let checkpoint = &request.checkpoint;
        let log = &self.logs[&checkpoint.origin];
        let stored_size = current.as_ref().map_or(0, |c| c.size);
        if request.old_size != stored_size {
            return Outcome::StaleOldSize(stored_size);
        }
        if let Some(current) = &current {
            if checkpoint.size == current.size {
                if checkpoint.root != current.root {
                    self.record_split_view(log, current, checked, write);
                    return Outcome::SameSizeFork(current.size);
                }
                // Same tree again. The proof from a size to itself is
                // empty.
                if !request.proof.is_empty() {
                    return Outcome::Inconsistent(format!(
                        "a proof from size {} to itself is empty, not {} hashes",
                        checkpoint.size,
                        request.proof.len()
                    ));
                }
                // The same text: cosign, and keep the stored note (a copy
                // cut down to fewer log signatures must not replace it:
                // split-view evidence names who signed both). A different
                // text (other extension lines) is cosigned and stored
                // below, as the monitoring endpoint serves what was last
                // cosigned.
                let stored =
                    Note::parse(current.note.as_bytes()).expect("stored notes were checked");
                if stored.text() == request.note.text() {
                    return self.cosign(&request.note, now_unix_s).0;
                }
            }
        }
        let old_root = current.as_ref().map_or_else(merkle::empty_root, |c| c.root);
        if let Err(e) = merkle::verify_consistency(
            stored_size,
            checkpoint.size,
            &old_root,
            &checkpoint.root,
            &request.proof,
        ) {
            if let Some(current) = &current {
                self.record_split_view(log, current, checked, write);
            }
            return Outcome::Inconsistent(format!("consistency proof does not verify: {e}"));
        }
        let (outcome, note) = self.cosign(&request.note, now_unix_s);
        if let Some(note) = note {
            write
                .latest
                .push((checkpoint.origin.clone(), note.clone().into_bytes()));
            staged.insert(
                checkpoint.origin.as_str(),
                Latest {
                    size: checkpoint.size,
                    root: checkpoint.root,
                    note: Arc::new(note),
                },
            );
        }
        outcome
    }

    /// Cosigns the checkpoint; returns the outcome and the note to store
    /// (the submitted log signatures plus this witness's cosignature).
    fn cosign(&self, note: &Note, now_unix_s: u64) -> (Outcome, Option<String>) {
        let signature = match self.key.cosign_text(note.text(), now_unix_s) {
            Ok(s) => s,
            Err(e) => return (Outcome::Internal(format!("cosigning failed: {e}")), None),
        };
        let line = signature.line();
        let mut stored = Note::new(note.text()).expect("the text of a parsed note is valid");
        for existing in note.signatures() {
            // Keep log signatures only: an old cosignature of ours (or any
            // witness's) does not belong to this state.
            if existing.key_id != self.key.key_id() || existing.name != self.key.name() {
                let _ = stored.add_signature(existing.clone());
            }
        }
        if stored.add_signature(signature).is_err() {
            return (
                Outcome::Internal("the cosigned note would exceed the note size limit".into()),
                None,
            );
        }
        (Outcome::Cosigned(line), Some(stored.format()))
    }

    /// Keeps a submission inconsistent with the stored checkpoint: as
    /// transferable split-view evidence when the two notes prove a fork,
    /// else as a bounded "rejected" record.
    fn record_split_view(
        &self,
        log: &KnownLog,
        current: &Latest,
        checked: &Checked,
        write: &mut WriteBatch,
    ) {
        let stored = Note::parse(current.note.as_bytes()).expect("stored notes were checked");
        let submitted = &checked.request.note;
        let proof = &checked.request.proof;
        let proven = match compare(&log.policy, &stored, submitted, Some(proof)) {
            Ok(Comparison::SplitView(evidence, _)) => Some(*evidence),
            _ => None,
        };
        if let Some(evidence) = proven {
            // Replays of one fork (with other signature lines, even) are
            // one item: anyone can replay it once a log has signed a fork.
            let mut texts = Sha256::new();
            texts.update(stored.text().as_bytes());
            texts.update([0]);
            texts.update(submitted.text().as_bytes());
            write
                .evidence
                .push((texts.finalize().into(), evidence.format().into_bytes()));
            return;
        }
        let mut record = format!(
            "{REJECTED_HEADER}\norigin {}\nstored {}\n",
            checked.origin(),
            current.note.len()
        )
        .into_bytes();
        record.extend_from_slice(current.note.as_bytes());
        record.extend_from_slice(format!("submitted {}\n", checked.body.len()).as_bytes());
        record.extend_from_slice(&checked.body);
        write
            .rejected
            .push((Sha256::digest(&checked.body).into(), record));
    }

    /// Checks and commits one submission (tests, tools and fuzzing; the
    /// server batches).
    pub fn add_checkpoint(&self, body: &[u8], now_unix_s: u64) -> Response {
        match self.check(body) {
            Ok(checked) => self
                .commit(std::slice::from_ref(&checked), now_unix_s)
                .remove(0)
                .response(),
            Err(rejection) => rejection.response(),
        }
    }
}

/// One stored split-view evidence item, summarised.
#[derive(Clone, Debug)]
pub struct EvidenceSummary {
    pub id: u64,
    pub kind: Kind,
    pub origin: String,
    pub size_a: u64,
    pub size_b: u64,
    pub signed_both: usize,
}

pub fn summarize_evidence(id: u64, bytes: &[u8]) -> Option<EvidenceSummary> {
    let evidence = Evidence::parse(bytes).ok()?;
    let a = Checkpoint::parse(evidence.note_a.text()).ok()?;
    let b = Checkpoint::parse(evidence.note_b.text()).ok()?;
    Some(EvidenceSummary {
        id,
        kind: evidence.kind,
        origin: a.origin,
        size_a: a.size,
        size_b: b.size,
        signed_both: evidence.signers.len(),
    })
}

/// The `GET <prefix>/evidence` listing: one line per item,
/// `split-view <id> <kind> <origin> <size a> <size b> <signers>` or
/// `rejected <id> <origin>`.
pub fn evidence_listing(store: &Store) -> Result<String, StoreError> {
    let mut out = String::new();
    store.for_each_evidence(|id, bytes| match summarize_evidence(id, bytes) {
        Some(s) => out.push_str(&format!(
            "split-view {id} {} {} {} {} {}\n",
            match s.kind {
                Kind::SameSize => "same-size",
                Kind::Inconsistent => "inconsistent",
            },
            s.origin,
            s.size_a,
            s.size_b,
            s.signed_both
        )),
        None => out.push_str(&format!("split-view {id} unreadable\n")),
    })?;
    store.for_each_rejected(|id, bytes| {
        // The origin line comes right after the header; only the record's
        // head is read.
        // (Header 31 bytes, "origin " and an origin of at most 512.)
        let head = &bytes[..bytes.len().min(1024)];
        let origin = head
            .split(|&b| b == b'\n')
            .nth(1)
            .and_then(|l| l.strip_prefix(b"origin "))
            .and_then(|o| std::str::from_utf8(o).ok())
            .unwrap_or("?");
        out.push_str(&format!("rejected {id} {origin}\n"));
    })?;
    Ok(out)
}
