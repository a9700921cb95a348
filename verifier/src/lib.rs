//! # bftlog-verify
//!
//! The offline verifier: everything a user, auditor or monitor needs to
//! check bftlog artefacts with nothing but a trust policy — no network, no
//! async runtime, no clock. The `bftlog-verify` binary is a thin CLI over
//! this library; every format is defined in `bftlog-spec` (`spec/*.md`).
//!
//! - [`check`]: checkpoints under a policy, receipts (C2SP tlog-proof),
//!   consistency between checkpoints, comparing two checkpoints into
//!   split-view evidence, checking evidence, and plain signed notes.
//! - [`batch`]: many receipts at once, verifying each distinct checkpoint
//!   once.
//! - [`audit`]: recompute a tree from an exported entries file (streaming,
//!   O(log n) memory) and compare it with a checkpoint.
//! - [`tiles`]: rebuild a tree from C2SP tlog-tiles entry bundles, check
//!   hash tiles against it, and read consistency paths out of hash tiles.
//! - [`tiles_audit`]: check a tiles directory (a mirror, a publishing
//!   target) offline: the checkpoint under a policy, every bundle and tile.
//! - [`input`]: bounded reads and the "one base64 hash per line" proof
//!   format.
//! - [`report`]: verdicts ([`Status`], which fixes the exit codes) and the
//!   `--json` result shapes.
//!
//! ```
//! use bftlog_spec::{checkpoint::Checkpoint, merkle, note::{KeyType, SignerKey}, policy::Policy, proof::TlogProof};
//! use bftlog_verify::{check, Status};
//!
//! let key = SignerKey::new("example.com/log", KeyType::Ed25519, bftlog_spec::ed25519_dalek::SigningKey::from_bytes(&[7; 32])).unwrap();
//! let mut tree = merkle::MemoryTree::new();
//! for entry in [b"a".as_slice(), b"b"] {
//!     tree.append(merkle::leaf_hash(entry));
//! }
//! let receipt = TlogProof {
//!     extra: None,
//!     index: 0,
//!     inclusion: merkle::prove_inclusion(0, 2, &tree).unwrap(),
//!     checkpoint: Checkpoint::new("example.com/log", 2, tree.root()).sign(&key).unwrap(),
//! }
//! .format();
//!
//! let policy = Policy::parse(format!("log {}\nquorum none\n", key.verifier()).as_bytes()).unwrap();
//! let report = check::check_receipt(&policy, receipt.as_bytes(), &merkle::leaf_hash(b"a")).unwrap();
//! assert_eq!(report.index, 0);
//! let wrong = check::check_receipt(&policy, receipt.as_bytes(), &merkle::leaf_hash(b"b")).unwrap_err();
//! assert_eq!(wrong.status(), Status::Invalid);
//! ```
#![forbid(unsafe_code)]

pub mod audit;
pub mod batch;
pub mod check;
pub mod input;
pub mod report;
pub mod tiles;
pub mod tiles_audit;

pub use report::Status;

use std::path::Path;

use bftlog_spec::policy::{MAX_POLICY_BYTES, Policy, PolicyError};

/// A policy file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PolicyLoadError {
    #[error(transparent)]
    Input(#[from] input::InputError),
    #[error("{name}: {error}")]
    Parse { name: String, error: PolicyError },
}

/// Reads and parses a policy file (`-` for stdin).
pub fn load_policy(path: &Path) -> Result<Policy, PolicyLoadError> {
    let bytes = input::read_bounded(path, MAX_POLICY_BYTES)?;
    Policy::parse(&bytes).map_err(|error| PolicyLoadError::Parse {
        name: input::display_name(path),
        error,
    })
}
