//! `bftlog monitor`: the verified state kept between runs, and the split
//! view evidence it writes.
//!
//! The state directory holds `state` (the last verified checkpoint and the
//! tree's right edge, written in one atomic rename), `checkpoint` (a copy
//! of that checkpoint for people and scripts) and `evidence/`, one file per
//! split view found, in the evidence format of `spec/evidence.md`.

use std::path::{Path, PathBuf};

use bftlog_spec::evidence::Evidence;
use bftlog_spec::note::{MAX_NOTE_BYTES, Note};
use bftlog_spec::policy::Policy;
use bftlog_verify::tiles::TileTree;

use super::{FollowError, Verified};

const STATE_FILE: &str = "state";
const STATE_MAGIC: &[u8] = b"bftlog monitor state v1\n";
/// Largest state file: the checkpoint and an edge of at most 8 x 255
/// hashes.
const MAX_STATE_BYTES: usize = STATE_MAGIC.len() + 4 + MAX_NOTE_BYTES + 128 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("{path}: not a monitor state file ({reason}); move it away to start afresh")]
    Malformed { path: String, reason: String },
}

/// Reads the verified state from `dir`, if it holds one. The checkpoint is
/// verified again under `policy`, so a changed policy applies to it too.
pub fn load_state(dir: &Path, policy: &Policy) -> Result<Option<Verified>, StateError> {
    let path = dir.join(STATE_FILE);
    let name = path.display().to_string();
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(StateError::Io { path: name, error }),
    };
    let malformed = |reason: String| StateError::Malformed {
        path: name.clone(),
        reason,
    };
    if bytes.len() > MAX_STATE_BYTES {
        return Err(malformed("too large".into()));
    }
    let rest = bytes
        .strip_prefix(STATE_MAGIC)
        .ok_or_else(|| malformed("bad header".into()))?;
    let (len, rest) = rest
        .split_first_chunk::<4>()
        .ok_or_else(|| malformed("truncated".into()))?;
    let (note_bytes, edge) = rest
        .split_at_checked(u32::from_be_bytes(*len) as usize)
        .ok_or_else(|| malformed("truncated checkpoint".into()))?;
    let note = Note::parse(note_bytes).map_err(|e| malformed(e.to_string()))?;
    let verified = policy
        .verify_checkpoint(&note)
        .map_err(|e| malformed(format!("its checkpoint does not verify: {e}")))?;
    let tree = TileTree::decode_edge(edge, &verified.checkpoint().root)
        .map_err(|e| malformed(e.to_string()))?;
    if tree.size() != verified.checkpoint().size {
        return Err(malformed(format!(
            "its tree edge is for size {}, its checkpoint for {}",
            tree.size(),
            verified.checkpoint().size
        )));
    }
    Ok(Some(Verified { note, tree }))
}

/// Writes the verified state to `dir` atomically.
pub fn save_state(dir: &Path, verified: &Verified) -> Result<(), StateError> {
    let note = verified.note.format();
    let mut bytes = STATE_MAGIC.to_vec();
    bytes.extend_from_slice(&(note.len() as u32).to_be_bytes());
    bytes.extend_from_slice(note.as_bytes());
    bytes.extend_from_slice(&verified.tree.encode_edge());
    write_atomically(&dir.join(STATE_FILE), &bytes)?;
    write_atomically(&dir.join("checkpoint"), note.as_bytes())
}

/// Writes split-view evidence under `dir/evidence/`; returns its path.
pub fn save_evidence(dir: &Path, evidence: &Evidence) -> Result<PathBuf, StateError> {
    let sizes = [&evidence.note_a, &evidence.note_b].map(|n| {
        bftlog_spec::checkpoint::Checkpoint::parse(n.text())
            .map(|c| c.size)
            .unwrap_or_default()
    });
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let path = dir
        .join("evidence")
        .join(format!("split-view-{now}-{}-{}.txt", sizes[0], sizes[1]));
    write_atomically(&path, evidence.format().as_bytes())?;
    Ok(path)
}

/// Writes `bytes` to a temporary file beside `path`, then renames it over
/// `path`: readers see the old file or the new one, never a torn one.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let io = |error| StateError::Io {
        path: path.display().to_string(),
        error,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let temporary = path.with_file_name(format!(".{file_name}.{}.tmp", std::process::id()));
    std::fs::write(&temporary, bytes).map_err(io)?;
    std::fs::rename(&temporary, path).map_err(io)
}

impl From<StateError> for FollowError {
    fn from(e: StateError) -> Self {
        match e {
            StateError::Io { path, error } => FollowError::Write { path, error },
            StateError::Malformed { path, reason } => FollowError::Write {
                path,
                error: std::io::Error::other(reason),
            },
        }
    }
}
