//! Verifying many receipts in one process.
//!
//! Receipts issued together share a checkpoint, so the expensive part of a
//! receipt — the checkpoint's replica signatures and witness cosignatures —
//! is verified once per distinct checkpoint and remembered in a bounded
//! cache ([`BatchVerifier`]); each receipt then costs a parse, a leaf hash
//! and an inclusion proof. Signatures are always verified one by one with
//! the normative strict rule (docs/adr/0001-single-signature-verification.md):
//! Ed25519 batch equations accept some signatures the strict rule rejects,
//! and two honest verifiers must never disagree about a checkpoint.
//!
//! Inputs (`spec/entries.md`, *Receipt batches*):
//! - a directory: every `NAME.tlog-proof` is the receipt for the entry in the
//!   file `NAME` beside it, checked in byte order of the names;
//! - a stream of JSON lines, one object per receipt:
//!   `{"name": "...", "entry": "<base64>", "proof": "<tlog-proof text>"}`,
//!   with `leaf_hash` (base64) instead of `entry` when only the hash is known.

use std::collections::HashMap;
use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};

use bftlog_spec::encoding::decode_base64;
use bftlog_spec::merkle::{self, Hash};
use bftlog_spec::policy::{Policy, VerifiedCheckpoint};
use bftlog_spec::proof::TlogProof;
use serde::{Deserialize, Serialize};

use crate::check::{self, CheckpointCheckError, ReceiptError};
use crate::input::{self, MAX_ENTRY_FILE_BYTES};
use crate::report::{CheckpointReport, Status};

/// Distinct checkpoints remembered; the cache is emptied when it is full.
pub const CHECKPOINT_CACHE_CAPACITY: usize = 4096;
/// Longest line of a JSON-lines stream.
pub const MAX_STREAM_LINE_BYTES: usize = 16 << 20;
/// Proof files suffix in directory mode.
pub const PROOF_SUFFIX: &str = ".tlog-proof";

/// Verifies receipts, verifying each distinct checkpoint once.
pub struct BatchVerifier<'p> {
    policy: &'p Policy,
    cache: HashMap<String, Result<(VerifiedCheckpoint, CheckpointReport), CheckpointCheckError>>,
    /// Checkpoint verifications actually performed (cache misses).
    pub checkpoints_verified: u64,
}

impl<'p> BatchVerifier<'p> {
    pub fn new(policy: &'p Policy) -> Self {
        BatchVerifier {
            policy,
            cache: HashMap::new(),
            checkpoints_verified: 0,
        }
    }

    /// Checks one receipt for the entry whose leaf hash is `leaf`; the same
    /// verdict as [`check::check_receipt`].
    pub fn check_receipt(
        &mut self,
        proof_bytes: &[u8],
        leaf: &Hash,
    ) -> Result<check::ReceiptReport, ReceiptError> {
        let proof = TlogProof::parse(proof_bytes)?;
        // The note's canonical bytes name it exactly: same bytes, same
        // signatures, same verdict.
        let key = proof.checkpoint.format();
        if !self.cache.contains_key(&key) {
            if self.cache.len() == CHECKPOINT_CACHE_CAPACITY {
                self.cache.clear();
            }
            self.checkpoints_verified += 1;
            let verdict = check::check_checkpoint_note(self.policy, &proof.checkpoint);
            self.cache.insert(key.clone(), verdict);
        }
        match &self.cache[&key] {
            Ok((verified, report)) => {
                check::check_inclusion(&proof, verified.clone(), report.clone(), leaf)
            }
            Err(e) => Err(ReceiptError::Checkpoint(e.clone())),
        }
    }
}

/// The verdict on one receipt of a batch.
#[derive(Clone, Debug, Serialize)]
pub struct ItemReport {
    pub name: String,
    pub status: Status,
    pub index: Option<u64>,
    pub origin: Option<String>,
    pub size: Option<u64>,
    pub error: Option<String>,
}

impl ItemReport {
    fn malformed(name: String, error: String) -> Self {
        ItemReport {
            name,
            status: Status::Malformed,
            index: None,
            origin: None,
            size: None,
            error: Some(error),
        }
    }

    fn from_result(name: String, result: Result<check::ReceiptReport, ReceiptError>) -> Self {
        match result {
            Ok(r) => ItemReport {
                name,
                status: Status::Valid,
                index: Some(r.index),
                origin: Some(r.checkpoint.origin),
                size: Some(r.checkpoint.size),
                error: None,
            },
            Err(e) => ItemReport {
                name,
                status: e.status(),
                index: None,
                origin: None,
                size: None,
                error: Some(e.to_string()),
            },
        }
    }

    pub fn human(&self) -> String {
        match (&self.error, &self.origin) {
            (None, Some(origin)) => format!(
                "valid      {}: index {} in {} at size {}",
                self.name,
                self.index.unwrap_or_default(),
                origin,
                self.size.unwrap_or_default()
            ),
            _ => format!(
                "{:<10} {}: {}",
                match self.status {
                    Status::Malformed => "malformed",
                    _ => "invalid",
                },
                self.name,
                self.error.as_deref().unwrap_or_default()
            ),
        }
    }
}

/// Counts per verdict, and the batch's overall status.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    pub valid: u64,
    pub invalid: u64,
    pub malformed: u64,
    pub checkpoints_verified: u64,
}

impl Summary {
    pub fn add(&mut self, item: &ItemReport) {
        match item.status {
            Status::Valid => self.valid += 1,
            Status::Malformed => self.malformed += 1,
            _ => self.invalid += 1,
        }
    }

    /// 0 if every receipt verified; 2 if any item was malformed; else 1 if
    /// any failed.
    pub fn status(&self) -> Status {
        if self.malformed > 0 {
            Status::Malformed
        } else if self.invalid > 0 {
            Status::Invalid
        } else {
            Status::Valid
        }
    }
}

/// A batch input that could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum BatchInputError {
    #[error("{path}: cannot list directory: {error}")]
    ListDir { path: String, error: std::io::Error },
    #[error("reading the stream after line {line}: {error}")]
    Read { line: u64, error: std::io::Error },
}

/// Verifies every `NAME.tlog-proof` + `NAME` pair in `dir`, calling
/// `emit` for each in order of name.
pub fn check_directory(
    verifier: &mut BatchVerifier<'_>,
    dir: &Path,
    mut emit: impl FnMut(&ItemReport),
) -> Result<Summary, BatchInputError> {
    let list_err = |error| BatchInputError::ListDir {
        path: dir.display().to_string(),
        error,
    };
    let mut proofs: Vec<PathBuf> = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(list_err)? {
        let path = entry.map_err(list_err)?.path();
        if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.ends_with(PROOF_SUFFIX) && n.len() > PROOF_SUFFIX.len())
        {
            proofs.push(path);
        }
    }
    proofs.sort();
    let mut summary = Summary::default();
    for proof_path in proofs {
        let name = proof_path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(PROOF_SUFFIX))
            .expect("filtered above")
            .to_owned();
        let entry_path = proof_path.with_file_name(&name);
        let item = match (
            input::read_bounded(&proof_path, bftlog_spec::proof::MAX_PROOF_BYTES),
            input::read_bounded(&entry_path, MAX_ENTRY_FILE_BYTES),
        ) {
            (Ok(proof), Ok(entry)) => ItemReport::from_result(
                name,
                verifier.check_receipt(&proof, &merkle::leaf_hash(&entry)),
            ),
            (Err(e), _) | (_, Err(e)) => ItemReport::malformed(name, e.to_string()),
        };
        summary.add(&item);
        emit(&item);
    }
    summary.checkpoints_verified = verifier.checkpoints_verified;
    Ok(summary)
}

/// One line of the JSON-lines stream.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamItem {
    name: Option<String>,
    entry: Option<String>,
    leaf_hash: Option<String>,
    proof: String,
}

/// Verifies a JSON-lines stream of receipts, calling `emit` per line.
pub fn check_stream<R: BufRead>(
    verifier: &mut BatchVerifier<'_>,
    mut reader: R,
    mut emit: impl FnMut(&ItemReport),
) -> Result<Summary, BatchInputError> {
    let mut summary = Summary::default();
    let mut line = Vec::new();
    let mut line_no = 0u64;
    loop {
        line.clear();
        let n = reader
            .by_ref()
            .take(MAX_STREAM_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(|error| BatchInputError::Read {
                line: line_no,
                error,
            })?;
        if n == 0 {
            break;
        }
        line_no += 1;
        let item = if line.last() != Some(&b'\n') && n > MAX_STREAM_LINE_BYTES {
            // Skip the rest of the oversized line so the next one parses.
            skip_line(&mut reader).map_err(|error| BatchInputError::Read {
                line: line_no,
                error,
            })?;
            ItemReport::malformed(
                format!("line {line_no}"),
                format!("line longer than {MAX_STREAM_LINE_BYTES} bytes"),
            )
        } else {
            if line.last() == Some(&b'\n') {
                line.pop();
            }
            stream_item(verifier, &line, line_no)
        };
        summary.add(&item);
        emit(&item);
    }
    summary.checkpoints_verified = verifier.checkpoints_verified;
    Ok(summary)
}

fn skip_line<R: BufRead>(reader: &mut R) -> std::io::Result<()> {
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Ok(());
        }
        if let Some(i) = buf.iter().position(|&b| b == b'\n') {
            reader.consume(i + 1);
            return Ok(());
        }
        let len = buf.len();
        reader.consume(len);
    }
}

fn stream_item(verifier: &mut BatchVerifier<'_>, line: &[u8], line_no: u64) -> ItemReport {
    let fallback = format!("line {line_no}");
    let item: StreamItem = match serde_json::from_slice(line) {
        Ok(item) => item,
        Err(e) => return ItemReport::malformed(fallback, format!("line {line_no}: {e}")),
    };
    let name = item.name.unwrap_or(fallback);
    let leaf = match (&item.entry, &item.leaf_hash) {
        (Some(entry), None) => match decode_base64(entry) {
            Ok(bytes) => merkle::leaf_hash(&bytes),
            Err(_) => {
                return ItemReport::malformed(
                    name,
                    format!("line {line_no}: \"entry\" is not canonical padded base64"),
                );
            }
        },
        (None, Some(hash)) => match Hash::from_base64(hash) {
            Ok(hash) => hash,
            Err(_) => {
                return ItemReport::malformed(
                    name,
                    format!("line {line_no}: \"leaf_hash\" is not canonical base64 of 32 bytes"),
                );
            }
        },
        _ => {
            return ItemReport::malformed(
                name,
                format!("line {line_no}: give exactly one of \"entry\" and \"leaf_hash\""),
            );
        }
    };
    let result = verifier.check_receipt(item.proof.as_bytes(), &leaf);
    ItemReport::from_result(name, result)
}
