//! `bftlog mirror`: a verified copy of a tiles log that is itself a tiles
//! log. Bundles and hash tiles are written before the checkpoint that needs
//! them, each by an atomic rename, so a static server in front of the
//! directory never serves a checkpoint whose tiles are missing or a torn
//! file. The mirror's state is its own directory: on start it reads its
//! checkpoint back, verifies it under the policy and rebuilds the tree's
//! edge from its partial tiles.

use std::path::{Path, PathBuf};

use bftlog_spec::note::{MAX_NOTE_BYTES, Note};
use bftlog_spec::policy::Policy;
use bftlog_spec::tiles::{FULL_TILE_BYTES, Tile};
use bftlog_verify::tiles::TileTree;

use super::monitor::{StateError, write_atomically};
use super::{FollowError, Sink, Verified};

/// Writes verified tiles and checkpoints under a directory.
pub struct MirrorDir {
    root: PathBuf,
    /// Files written, for reports.
    pub files_written: u64,
}

impl MirrorDir {
    pub fn new(root: &Path) -> Self {
        MirrorDir {
            root: root.to_owned(),
            files_written: 0,
        }
    }

    /// The verified state of an existing mirror, `None` for an empty
    /// directory.
    pub fn load(&self, policy: &Policy) -> Result<Option<Verified>, StateError> {
        let path = self.root.join("checkpoint");
        let malformed = |reason: String| StateError::Malformed {
            path: path.display().to_string(),
            reason,
        };
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => {
                return Err(StateError::Io {
                    path: path.display().to_string(),
                    error,
                });
            }
        };
        if bytes.len() > MAX_NOTE_BYTES {
            return Err(malformed("larger than a checkpoint may be".into()));
        }
        let note = Note::parse(&bytes).map_err(|e| malformed(e.to_string()))?;
        let verified = policy
            .verify_checkpoint(&note)
            .map_err(|e| malformed(format!("does not verify under the policy: {e}")))?;
        let (size, root) = (verified.checkpoint().size, verified.checkpoint().root);
        let tree = TileTree::from_partial_tiles(size, &root, |tile: &Tile| {
            let tile_path = self.root.join(tile.path());
            std::fs::read(&tile_path)
                .ok()
                .filter(|b| b.len() <= FULL_TILE_BYTES)
                .ok_or_else(|| {
                    malformed(format!(
                        "its partial tile {} is missing or too large",
                        tile.path()
                    ))
                })
        })?
        .map_err(|e| malformed(e.to_string()))?;
        Ok(Some(Verified { note, tree }))
    }
}

impl Sink for MirrorDir {
    fn tile(&mut self, tile: &Tile, bytes: &[u8]) -> Result<(), FollowError> {
        write_atomically(&self.root.join(tile.path()), bytes)?;
        self.files_written += 1;
        Ok(())
    }

    fn checkpoint(&mut self, bytes: &[u8]) -> Result<(), FollowError> {
        write_atomically(&self.root.join("checkpoint"), bytes)?;
        self.files_written += 1;
        Ok(())
    }
}
