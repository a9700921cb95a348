//! Checking a C2SP tlog-tiles directory offline: a mirror, a publishing
//! target or a copy of a bucket. The checkpoint must verify under the
//! policy, every entry bundle up to its size must be present and parse, and
//! every hash tile the tree has, full and partial, must equal the hashes
//! its entries imply; the entries' root must be the checkpoint's. Memory
//! stays small: one bundle and the tree's edge ([`crate::tiles::TileTree`]).

use std::path::{Path, PathBuf};

use bftlog_spec::merkle::Hash;
use bftlog_spec::note::MAX_NOTE_BYTES;
use bftlog_spec::policy::Policy;
use bftlog_spec::tiles::{FULL_TILE_BYTES, MAX_BUNDLE_BYTES, Tile};
use serde::Serialize;

use crate::check::{CheckpointCheckError, check_checkpoint};
use crate::input::{InputError, read_bounded};
use crate::report::CheckpointReport;
use crate::tiles::{TileError, TileTree, bundles_between, check_tile};

/// Bundles between progress callbacks.
pub const PROGRESS_INTERVAL_BUNDLES: u64 = 256;

/// A tiles directory that verified.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TilesAuditReport {
    pub checkpoint: CheckpointReport,
    pub entries_checked: u64,
    pub bundles_checked: u64,
    pub hash_tiles_checked: u64,
    pub bytes_read: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum TilesAuditError {
    #[error("{0}")]
    Read(InputError),
    #[error("{path} is missing; the checkpoint of size {size} needs it")]
    Missing { path: String, size: u64 },
    #[error("checkpoint: {0}")]
    Checkpoint(CheckpointCheckError),
    #[error("{0}")]
    Tile(TileError),
}

impl TilesAuditError {
    pub fn status(&self) -> crate::Status {
        match self {
            TilesAuditError::Read(_) => crate::Status::Malformed,
            TilesAuditError::Checkpoint(e) => e.status(),
            TilesAuditError::Missing { .. } | TilesAuditError::Tile(_) => crate::Status::Invalid,
        }
    }
}

/// Audits the tiles directory `dir` (holding `checkpoint` and `tile/`)
/// under `policy`. `progress(entries_checked, size)` runs every
/// [`PROGRESS_INTERVAL_BUNDLES`] bundles.
pub fn audit_tiles_dir(
    policy: &Policy,
    dir: &Path,
    mut progress: impl FnMut(u64, u64),
) -> Result<TilesAuditReport, TilesAuditError> {
    let checkpoint_bytes =
        read_bounded(&dir.join("checkpoint"), MAX_NOTE_BYTES).map_err(TilesAuditError::Read)?;
    let (verified, checkpoint) =
        check_checkpoint(policy, &checkpoint_bytes).map_err(TilesAuditError::Checkpoint)?;
    let size = verified.checkpoint().size;
    let root: Hash = verified.checkpoint().root;
    let mut bytes_read = checkpoint_bytes.len() as u64;
    let mut read = |tile: &Tile, max: usize| -> Result<Vec<u8>, TilesAuditError> {
        let path: PathBuf = dir.join(tile.path());
        if !path.exists() {
            return Err(TilesAuditError::Missing {
                path: tile.path(),
                size,
            });
        }
        let bytes = read_bounded(&path, max).map_err(TilesAuditError::Read)?;
        bytes_read += bytes.len() as u64;
        Ok(bytes)
    };
    let mut tree = TileTree::new();
    let (mut bundles_checked, mut hash_tiles_checked) = (0u64, 0u64);
    for bundle in bundles_between(0, size) {
        let bytes = read(&bundle, MAX_BUNDLE_BYTES)?;
        let completed = tree
            .append_bundle(&bundle, &bytes)
            .map_err(TilesAuditError::Tile)?;
        for (tile, expected) in completed {
            let served = read(&tile, FULL_TILE_BYTES)?;
            check_tile(&tile, &served, &expected).map_err(TilesAuditError::Tile)?;
            hash_tiles_checked += 1;
        }
        bundles_checked += 1;
        if bundles_checked % PROGRESS_INTERVAL_BUNDLES == 0 {
            progress(tree.size(), size);
        }
    }
    for (tile, expected) in tree.partial_tiles() {
        let served = read(&tile, FULL_TILE_BYTES)?;
        check_tile(&tile, &served, &expected).map_err(TilesAuditError::Tile)?;
        hash_tiles_checked += 1;
    }
    tree.check_root(&root).map_err(TilesAuditError::Tile)?;
    Ok(TilesAuditReport {
        checkpoint,
        entries_checked: size,
        bundles_checked,
        hash_tiles_checked,
        bytes_read,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tiles::tiles_of_entries;
    use bftlog_spec::checkpoint::Checkpoint;
    use bftlog_spec::merkle::{self, MemoryTree};
    use bftlog_spec::note::{KeyType, SignerKey};

    /// Writes a tiles directory for `n` entries the way a log publishes
    /// one; returns the policy that accepts its checkpoint.
    fn write_log(dir: &Path, n: u64) -> Policy {
        let key = SignerKey::new(
            "example.com/log",
            KeyType::Ed25519,
            bftlog_spec::ed25519_dalek::SigningKey::from_bytes(&[9; 32]),
        )
        .unwrap();
        let entries: Vec<Vec<u8>> = (0..n).map(|i| format!("entry {i}").into_bytes()).collect();
        let (tree, files) = tiles_of_entries(entries.iter().map(|e| e.as_slice())).unwrap();
        for (tile, bytes) in files {
            let path = dir.join(tile.path());
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, bytes).unwrap();
        }
        let mut reference = MemoryTree::new();
        for entry in &entries {
            reference.append(merkle::leaf_hash(entry));
        }
        assert_eq!(tree.root(), reference.root());
        let note = Checkpoint::new("example.com/log", n, reference.root())
            .sign(&key)
            .unwrap();
        std::fs::write(dir.join("checkpoint"), note.format()).unwrap();
        Policy::parse(format!("log {}\nquorum none\n", key.verifier()).as_bytes()).unwrap()
    }

    #[test]
    fn a_published_log_verifies_and_any_change_is_found() {
        let dir = std::env::temp_dir().join(format!("bftlog-tiles-audit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let policy = write_log(&dir, 600);
        let mut calls = 0;
        let report = audit_tiles_dir(&policy, &dir, |_, _| calls += 1).unwrap();
        assert_eq!(report.entries_checked, 600);
        assert_eq!(report.bundles_checked, 3);
        // Two full level-0 tiles, the partial level-0 tile and the partial
        // level-1 tile.
        assert_eq!(report.hash_tiles_checked, 4);

        let bundle = dir.join("tile/entries/001");
        let original = std::fs::read(&bundle).unwrap();
        let mut changed = original.clone();
        *changed.last_mut().unwrap() ^= 1;
        std::fs::write(&bundle, &changed).unwrap();
        let err = audit_tiles_dir(&policy, &dir, |_, _| {}).unwrap_err();
        assert!(
            matches!(err, TilesAuditError::Tile(TileError::TileDiffers { .. })),
            "{err}"
        );
        assert_eq!(err.status(), crate::Status::Invalid);
        std::fs::write(&bundle, &original).unwrap();

        let tile = dir.join("tile/1/000.p/2");
        let hashes = std::fs::read(&tile).unwrap();
        std::fs::write(&tile, &hashes[..32]).unwrap();
        let err = audit_tiles_dir(&policy, &dir, |_, _| {}).unwrap_err();
        assert!(
            matches!(err, TilesAuditError::Tile(TileError::TileLength { .. })),
            "{err}"
        );
        std::fs::remove_file(&tile).unwrap();
        let err = audit_tiles_dir(&policy, &dir, |_, _| {}).unwrap_err();
        assert!(matches!(err, TilesAuditError::Missing { .. }), "{err}");
        assert!(err.to_string().contains("tile/1/000.p/2"), "{err}");
        std::fs::write(&tile, &hashes).unwrap();
        audit_tiles_dir(&policy, &dir, |_, _| {}).unwrap();

        let other = Policy::parse(
            format!(
                "log {}\nquorum none\n",
                SignerKey::new(
                    "example.com/log",
                    KeyType::Ed25519,
                    bftlog_spec::ed25519_dalek::SigningKey::from_bytes(&[10; 32])
                )
                .unwrap()
                .verifier()
            )
            .as_bytes(),
        )
        .unwrap();
        let err = audit_tiles_dir(&other, &dir, |_, _| {}).unwrap_err();
        assert!(matches!(err, TilesAuditError::Checkpoint(_)), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
