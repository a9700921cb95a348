//! The cluster key: one Ed25519 verifier key for the whole log, held as
//! FROST(Ed25519, SHA-512) shares (RFC 9591, through the Zcash
//! Foundation's `frost-ed25519`), so that any t = 2f+1 replicas together
//! make one ordinary Ed25519 signature that every C2SP client verifies,
//! and no f of them can.
//!
//! This module deals the key with a trusted dealer (`bftlog init` and
//! `bftlog dev`, where one operator holds every replica's files anyway),
//! writes and reads the share files, and names the key as a C2SP vkey
//! (`log.vkey`). The share file holds the replica's key package and the
//! cluster's public key package (every replica's verifying share, which a
//! combiner needs to find a bad share), each in the crate's own
//! serialisation, which carries the ciphersuite's identifier.

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bftlog_spec::note::{KeyType, VerifierKey};
use frost_ed25519 as frost;
use zeroize::Zeroizing;

/// First line of a share file.
pub const SHARE_FILE_LABEL: &str = "bftlog cluster key share v1";

/// Largest share file read: two small packages in base64.
const MAX_SHARE_FILE_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ClusterKeyError {
    #[error("FROST: {0}")]
    Frost(#[from] frost::Error),
    #[error(transparent)]
    KeyFile(#[from] bftlog_witness::key_file::KeyFileError),
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("the cluster key is not a usable Ed25519 key: {0}")]
    Key(String),
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One replica's share of the cluster key, with the public package (the
/// consensus core signs with it).
pub use bftlog_consensus::threshold::ClusterShare;

/// Deals a fresh cluster key from the operating system's randomness into
/// `n` shares, any `threshold` of which sign: share `i` (0-based, replica
/// `i`) has FROST identifier `i + 1`.
pub fn deal(n: u16, threshold: u16) -> Result<Vec<ClusterShare>, ClusterKeyError> {
    Ok(bftlog_consensus::threshold::deal(
        n,
        threshold,
        &mut crate::system_rng(),
    )?)
}

/// The cluster key as a C2SP vkey named after the log's origin.
pub fn verifier_key(
    origin: &str,
    public: &frost::keys::PublicKeyPackage,
) -> Result<VerifierKey, ClusterKeyError> {
    let key = bftlog_consensus::threshold::cluster_key_of(public)
        .map_err(|e| ClusterKeyError::Key(e.to_string()))?;
    VerifierKey::new(origin, KeyType::Ed25519, key).map_err(|e| ClusterKeyError::Key(e.to_string()))
}

/// Writes a share file readable by its owner only; refuses to replace one.
pub fn write_share(path: &Path, origin: &str, share: &ClusterShare) -> Result<(), ClusterKeyError> {
    let key_package = Zeroizing::new(B64.encode(share.key_package.serialize()?));
    let public = B64.encode(share.public.serialize()?);
    let text = Zeroizing::new(format!(
        "{SHARE_FILE_LABEL}\n{origin}\n{}\n{public}\n",
        *key_package
    ));
    crate::config::write_secret(path, &text).map_err(|source| ClusterKeyError::Write {
        path: path.to_owned(),
        source,
    })
}

/// Reads a share file of the log `origin`, strictly: its label, the
/// origin, the key package and the public package, each on its line, the
/// key package's share among the public package's, and nothing else.
pub fn load_share(path: &Path, origin: &str) -> Result<ClusterShare, ClusterKeyError> {
    let text = bftlog_witness::key_file::read_key_file(path)?;
    let invalid = |reason: String| ClusterKeyError::Invalid {
        path: path.to_owned(),
        reason,
    };
    if text.len() > MAX_SHARE_FILE_BYTES {
        return Err(invalid(format!("larger than {MAX_SHARE_FILE_BYTES} bytes")));
    }
    let Some(body) = text.strip_suffix('\n') else {
        return Err(invalid("does not end in a newline".into()));
    };
    let lines: Vec<&str> = body.split('\n').collect();
    let [label, file_origin, key_package, public] = lines[..] else {
        return Err(invalid(format!(
            "{} lines, a share file has 4 (label, origin, key package, public package)",
            lines.len()
        )));
    };
    if label != SHARE_FILE_LABEL {
        return Err(invalid(format!(
            "not a cluster key share (its first line must be {SHARE_FILE_LABEL:?})"
        )));
    }
    if file_origin != origin {
        return Err(invalid(format!(
            "a share of the log {file_origin:?}, not of {origin:?}"
        )));
    }
    let decode = |what: &str, text: &str| {
        B64.decode(text)
            .map(Zeroizing::new)
            .map_err(|e| invalid(format!("the {what} is not base64: {e}")))
    };
    let key_package = frost::keys::KeyPackage::deserialize(&decode("key package", key_package)?)
        .map_err(|e| invalid(format!("the key package: {e}")))?;
    let public = frost::keys::PublicKeyPackage::deserialize(&decode("public package", public)?)
        .map_err(|e| invalid(format!("the public package: {e}")))?;
    if key_package.verifying_key() != public.verifying_key()
        || public.verifying_shares().get(key_package.identifier())
            != Some(key_package.verifying_share())
        || public.min_signers() != Some(*key_package.min_signers())
    {
        return Err(invalid(
            "the key package does not belong to the public package".into(),
        ));
    }
    Ok(ClusterShare {
        key_package,
        public,
    })
}

#[cfg(test)]
mod tests;
