//! `bftlog mirror`: a verified copy of a tiles log that is itself a tiles
//! log. A step's bundles and hash tiles are written under `.staging/` as
//! they are checked and moved into place once the step's root matched,
//! then the checkpoint is written: a static server in front of the
//! directory never serves a checkpoint whose tiles are missing, a torn
//! file, or a tile no checkpoint has verified. The mirror's state is its own directory: on start it reads its
//! checkpoint back, verifies it under the policy and rebuilds the tree's
//! edge from its partial tiles.

use std::path::{Path, PathBuf};

use bftlog_spec::note::{MAX_NOTE_BYTES, Note};
use bftlog_spec::policy::Policy;
use bftlog_spec::tiles::{FULL_TILE_BYTES, Tile};
use bftlog_verify::tiles::TileTree;

use super::monitor::{StateError, write_atomically};
use super::{FollowError, Sink, Verified};

/// Where a step's files wait for its root to match.
const STAGING: &str = ".staging";

/// Writes verified tiles and checkpoints under a directory.
pub struct MirrorDir {
    root: PathBuf,
    /// Tiles staged since the last checkpoint.
    staged: Vec<Tile>,
    /// Files written, for reports.
    pub files_written: u64,
}

impl MirrorDir {
    pub fn new(root: &Path) -> Self {
        MirrorDir {
            root: root.to_owned(),
            staged: Vec::new(),
            files_written: 0,
        }
    }

    /// The verified state of an existing mirror, `None` for an empty
    /// directory.
    pub fn load(&self, policy: &Policy) -> Result<Option<Verified>, StateError> {
        // What an interrupted step staged was never verified.
        let _ = std::fs::remove_dir_all(self.root.join(STAGING));
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
        write_atomically(&self.root.join(STAGING).join(tile.path()), bytes)?;
        self.staged.push(*tile);
        Ok(())
    }

    fn checkpoint(&mut self, bytes: &[u8]) -> Result<(), FollowError> {
        for tile in std::mem::take(&mut self.staged) {
            let (from, to) = (
                self.root.join(STAGING).join(tile.path()),
                self.root.join(tile.path()),
            );
            let io = |error| FollowError::Write {
                path: to.display().to_string(),
                error,
            };
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent).map_err(io)?;
            }
            std::fs::rename(&from, &to).map_err(io)?;
            self.files_written += 1;
        }
        let _ = std::fs::remove_dir_all(self.root.join(STAGING));
        write_atomically(&self.root.join("checkpoint"), bytes)?;
        self.files_written += 1;
        Ok(())
    }

    fn abandon(&mut self) {
        self.staged.clear();
        let _ = std::fs::remove_dir_all(self.root.join(STAGING));
    }
}
