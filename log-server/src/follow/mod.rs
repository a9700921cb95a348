//! Following a C2SP tlog-tiles log over HTTP: the engine of `bftlog
//! monitor` and `bftlog mirror`.
//!
//! One [`Follower::step`] reads the log's checkpoint and verifies it under
//! the policy; proves, from the log's own hash tiles, that it extends the
//! last verified checkpoint (or produces split-view evidence); downloads
//! every new entry bundle, recomputes the leaf hashes and every hash tile
//! they imply, compares those with the tiles the log serves, and checks
//! the recomputed root against the checkpoint. Only then does the verified
//! state move, so a failed step leaves it as it was. The checks themselves
//! are the offline verifier's ([`bftlog_verify::tiles`]).

pub mod fetch;
pub mod mirror;
pub mod monitor;

use std::collections::{HashMap, VecDeque};

use bftlog_spec::evidence::{self, Comparison, Evidence};
use bftlog_spec::merkle::MAX_STORED_TREE_SIZE;
use bftlog_spec::note::{MAX_NOTE_BYTES, Note};
use bftlog_spec::policy::Policy;
use bftlog_spec::tiles::{self, FULL_TILE_BYTES, MAX_BUNDLE_BYTES, Tile, TileKind};
use bftlog_verify::Status;
use bftlog_verify::check::{CheckpointCheckError, check_checkpoint_note};
use bftlog_verify::report::CheckpointReport;
use bftlog_verify::tiles::{
    TileError, TileTree, bundles_between, check_tile, consistency_path, consistency_tiles,
};
use bytes::Bytes;
use serde::Serialize;

pub use fetch::{FetchError, TilesSource};

/// A bundle, its bytes and the bytes of the level-0 tile of the same index
/// and width.
type FetchedBundle = Result<(Tile, Bytes, Bytes), FollowError>;

/// Entry bundles (with their level-0 tiles) fetched at once.
pub const BUNDLES_IN_FLIGHT: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("{0} is missing (404)")]
    Missing(String),
    #[error("the served checkpoint: {0}")]
    Note(bftlog_spec::note::NoteError),
    #[error("the served checkpoint: {0}")]
    Checkpoint(CheckpointCheckError),
    #[error("the served checkpoint is for {served:?}, the verified one for {verified:?}")]
    Origin { served: String, verified: String },
    #[error("split view: {0}")]
    SplitView(String, Box<Evidence>),
    #[error(
        "the log's hash tiles do not prove that size {new_size} extends size {old_size}: {reason}"
    )]
    NoConsistency {
        old_size: u64,
        new_size: u64,
        reason: String,
    },
    #[error("{0}")]
    Tile(#[from] TileError),
    #[error("the checkpoint claims {0} entries, beyond the 2^62 any tree here can hold")]
    SizeBeyondLayout(u64),
    #[error("writing {path}: {error}")]
    Write { path: String, error: std::io::Error },
}

impl FollowError {
    /// The verdict, for exit codes and `--json`.
    pub fn status(&self) -> Status {
        match self {
            FollowError::Fetch(_) | FollowError::Missing(_) | FollowError::Write { .. } => {
                Status::Malformed
            }
            FollowError::Note(_) => Status::Malformed,
            FollowError::Checkpoint(e) => e.status(),
            FollowError::SplitView(..) => Status::Equivocation,
            FollowError::Origin { .. }
            | FollowError::NoConsistency { .. }
            | FollowError::SizeBeyondLayout(_)
            | FollowError::Tile(_) => Status::Invalid,
        }
    }

    /// Whether trying again later may succeed (a network error) rather
    /// than the log having misbehaved.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            FollowError::Fetch(_) | FollowError::Missing(_) | FollowError::Write { .. }
        )
    }
}

/// Where bundles, tiles and checkpoints go: nowhere for the monitor,
/// files for the mirror. A step hands over each bundle and tile as it
/// checks it, and the checkpoint only once the recomputed root matched:
/// until then what it was given is not verified, and a failed step ends
/// with [`Sink::abandon`].
pub trait Sink {
    fn tile(&mut self, tile: &Tile, bytes: &[u8]) -> Result<(), FollowError>;
    /// Everything given since the last checkpoint is verified by this one.
    fn checkpoint(&mut self, bytes: &[u8]) -> Result<(), FollowError>;
    /// The step failed: drop what was given since the last checkpoint.
    fn abandon(&mut self) {}
}

/// A sink that keeps nothing.
pub struct Discard;

impl Sink for Discard {
    fn tile(&mut self, _: &Tile, _: &[u8]) -> Result<(), FollowError> {
        Ok(())
    }
    fn checkpoint(&mut self, _: &[u8]) -> Result<(), FollowError> {
        Ok(())
    }
}

/// What one step found.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum StepReport {
    /// A larger checkpoint verified, with every entry up to it.
    Advanced {
        from_size: u64,
        checkpoint: CheckpointReport,
        entries_verified: u64,
        bundles: u64,
        hash_tiles: u64,
        bytes_fetched: u64,
    },
    /// The checkpoint is the one verified last.
    Unchanged { size: u64 },
    /// The log serves a smaller checkpoint than one verified before, e.g.
    /// from a lagging cache; the verified state stays.
    Behind {
        served_size: u64,
        verified_size: u64,
    },
}

/// The verified state of a followed log: its last checkpoint and the tree
/// up to it.
#[derive(Clone, Debug)]
pub struct Verified {
    pub note: Note,
    pub tree: TileTree,
}

/// Follows one log under one policy.
pub struct Follower {
    policy: Policy,
    verified: Option<Verified>,
}

impl Follower {
    pub fn new(policy: Policy, verified: Option<Verified>) -> Self {
        Follower { policy, verified }
    }

    pub fn verified(&self) -> Option<&Verified> {
        self.verified.as_ref()
    }

    /// Reads the log's checkpoint and, if it is newer, verifies and takes
    /// in everything up to it. `progress(entries_done, entries_total)`
    /// runs after each bundle.
    pub async fn step(
        &mut self,
        source: &TilesSource,
        sink: &mut dyn Sink,
        progress: impl FnMut(u64, u64),
    ) -> Result<StepReport, FollowError> {
        let result = self.try_step(source, sink, progress).await;
        if result.is_err() {
            sink.abandon();
        }
        result
    }

    async fn try_step(
        &mut self,
        source: &TilesSource,
        sink: &mut dyn Sink,
        mut progress: impl FnMut(u64, u64),
    ) -> Result<StepReport, FollowError> {
        let bytes = source
            .get("checkpoint", MAX_NOTE_BYTES)
            .await?
            .ok_or_else(|| FollowError::Missing(format!("{}checkpoint", source.base())))?;
        let note = Note::parse(&bytes).map_err(FollowError::Note)?;
        let (verified_cp, report) =
            check_checkpoint_note(&self.policy, &note).map_err(FollowError::Checkpoint)?;
        let new = verified_cp.checkpoint().clone();
        if new.size > MAX_STORED_TREE_SIZE {
            return Err(FollowError::SizeBeyondLayout(new.size));
        }
        let (old_size, tree) = match &self.verified {
            None => (0, TileTree::new()),
            Some(v) => {
                let old = bftlog_spec::checkpoint::Checkpoint::parse(v.note.text())
                    .expect("a verified note holds a checkpoint");
                if old.origin != new.origin {
                    return Err(FollowError::Origin {
                        served: new.origin,
                        verified: old.origin,
                    });
                }
                if new.size < old.size {
                    return Ok(StepReport::Behind {
                        served_size: new.size,
                        verified_size: old.size,
                    });
                }
                // From an empty tree nothing needs proving (compare checks
                // the empty root).
                let path = if new.size > old.size && old.size > 0 {
                    Some(self.consistency_path(source, old.size, new.size).await?)
                } else {
                    None
                };
                match evidence::compare(&self.policy, &v.note, &note, path.as_deref()) {
                    Ok(Comparison::Consistent) => {}
                    Ok(Comparison::SplitView(evidence, verified)) => {
                        let culprits = verified
                            .signed_both
                            .iter()
                            .map(|k| k.to_string())
                            .collect::<Vec<_>>()
                            .join(", ");
                        return Err(FollowError::SplitView(
                            format!(
                                "checkpoints of sizes {} and {} cannot both be honest; signed both: {culprits}",
                                old.size, new.size
                            ),
                            evidence,
                        ));
                    }
                    Ok(Comparison::Undetermined(reason)) => {
                        return Err(FollowError::NoConsistency {
                            old_size: old.size,
                            new_size: new.size,
                            reason,
                        });
                    }
                    Err(e) => {
                        return Err(FollowError::NoConsistency {
                            old_size: old.size,
                            new_size: new.size,
                            reason: e.to_string(),
                        });
                    }
                }
                if new.size == old.size {
                    return Ok(StepReport::Unchanged { size: new.size });
                }
                (old.size, v.tree.clone())
            }
        };
        let mut tree = tree;
        let mut fetched = 0u64;
        let (mut bundles, mut hash_tiles) = (0u64, 0u64);
        let mut queue = InFlight::default();
        let mut pending = bundles_between(old_size, new.size);
        loop {
            while queue.0.len() < BUNDLES_IN_FLIGHT {
                let Some(bundle) = pending.next() else { break };
                let source = source.clone();
                queue.0.push_back(tokio::spawn(async move {
                    let tile = Tile {
                        kind: TileKind::Hashes { level: 0 },
                        ..bundle
                    };
                    let (b, t) = tokio::join!(
                        fetch_required(&source, &bundle, MAX_BUNDLE_BYTES),
                        fetch_required(&source, &tile, FULL_TILE_BYTES)
                    );
                    Ok((bundle, b?, t?))
                }));
            }
            let Some(next) = queue.0.pop_front() else {
                break;
            };
            let (bundle, bundle_bytes, level0) = next
                .await
                .map_err(|e| FollowError::Fetch(FetchError::Task(e.to_string())))??;
            fetched += (bundle_bytes.len() + level0.len()) as u64;
            let completed = tree.append_bundle(&bundle, &bundle_bytes)?;
            sink.tile(&bundle, &bundle_bytes)?;
            bundles += 1;
            let mut emitted = completed;
            if !bundle.is_full() {
                // The last bundle: the partial tiles of the new size.
                emitted.extend(tree.partial_tiles());
            }
            for (tile, expected) in emitted {
                let served = if tile.level() == 0 {
                    level0.clone()
                } else {
                    let served = fetch_required(source, &tile, FULL_TILE_BYTES).await?;
                    fetched += served.len() as u64;
                    served
                };
                check_tile(&tile, &served, &expected)?;
                sink.tile(&tile, &expected)?;
                hash_tiles += 1;
            }
            progress(tree.size() - old_size, new.size - old_size);
        }
        if new.size % 256 == 0 {
            // No partial bundle: the higher levels' partial tiles.
            for (tile, expected) in tree.partial_tiles() {
                let served = fetch_required(source, &tile, FULL_TILE_BYTES).await?;
                fetched += served.len() as u64;
                check_tile(&tile, &served, &expected)?;
                sink.tile(&tile, &expected)?;
                hash_tiles += 1;
            }
        }
        tree.check_root(&new.root)?;
        sink.checkpoint(&bytes)?;
        self.verified = Some(Verified { note, tree });
        Ok(StepReport::Advanced {
            from_size: old_size,
            checkpoint: report,
            entries_verified: new.size - old_size,
            bundles,
            hash_tiles,
            bytes_fetched: fetched + bytes.len() as u64,
        })
    }

    /// The full consistency path from `old_size` to `new_size`, read from
    /// the log's hash tiles at `new_size`.
    async fn consistency_path(
        &self,
        source: &TilesSource,
        old_size: u64,
        new_size: u64,
    ) -> Result<Vec<bftlog_spec::merkle::Hash>, FollowError> {
        let mut tiles = HashMap::new();
        for tile in consistency_tiles(old_size, new_size) {
            let bytes = fetch_required(source, &tile, FULL_TILE_BYTES).await?;
            tiles.insert(tile, bytes.to_vec());
        }
        consistency_path(old_size, new_size, &tiles).map_err(|e| FollowError::NoConsistency {
            old_size,
            new_size,
            reason: e.to_string(),
        })
    }
}

/// Fetches still running; dropping them (a step that failed) cancels them,
/// so a server that fails one request cannot keep the others' bodies
/// arriving into memory across steps.
#[derive(Default)]
struct InFlight(VecDeque<tokio::task::JoinHandle<FetchedBundle>>);

impl Drop for InFlight {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// Fetches a tile or bundle. A partial one the log no longer has (C2SP
/// lets a log delete partial tiles once the full tile exists) is cut from
/// the full one.
async fn fetch_required(
    source: &TilesSource,
    tile: &Tile,
    max_bytes: usize,
) -> Result<Bytes, FollowError> {
    if let Some(bytes) = source.get(&tile.path(), max_bytes).await? {
        return Ok(bytes);
    }
    let missing = || FollowError::Missing(format!("{}{}", source.base(), tile.path()));
    if tile.is_full() {
        return Err(missing());
    }
    let full = Tile::full(tile.kind, tile.index);
    let bytes = source
        .get(&full.path(), max_bytes)
        .await?
        .ok_or_else(missing)?;
    let width = usize::from(tile.width);
    let prefix_len = match tile.kind {
        TileKind::Hashes { .. } => (bytes.len() == FULL_TILE_BYTES).then_some(width * 32),
        TileKind::Entries => tiles::parse_bundle(&bytes, 256)
            .ok()
            .map(|entries| entries[..width].iter().map(|e| 2 + e.len()).sum()),
    };
    // A malformed full tile is passed on whole, to be refused as such.
    Ok(prefix_len.map_or(bytes.clone(), |len| bytes.slice(..len)))
}
