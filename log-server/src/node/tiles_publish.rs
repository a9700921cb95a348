//! Publishing the tiles (`[tiles] publish`): every new hash tile and entry
//! bundle, then the checkpoint, written to a directory (`file:///…`) or
//! S3-compatible object storage (`s3://bucket/prefix`) through
//! `object_store`, so that a static web server or a CDN serves reads at
//! any scale.
//!
//! - **Order.** A checkpoint is written only after every tile and bundle
//!   a tree of its size needs, so a reader never sees a checkpoint whose
//!   tiles are missing.
//! - **Never backwards.** Before writing the checkpoint the publisher
//!   reads the one there and writes only if it is smaller: several
//!   replicas may publish to one bucket (they write identical tiles). Two
//!   replicas racing between the read and the write can leave the smaller
//!   of their two checkpoints, never one older than what was there before
//!   either read, and never one whose tiles are missing; each publisher
//!   checks every 5 s that the target's checkpoint is not smaller than
//!   the last one it wrote, and writes a newer one if it is.
//! - **Where it starts.** At start the publisher reads the checkpoint
//!   already published: the tiles below its size are there (by the order
//!   above), so it resumes from it.
//! - **Failures** are logged and counted (`bftlog_tiles_publish_errors_total`)
//!   and retried with a backoff up to 30 s; publishing never stops the
//!   replica.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bftlog_spec::checkpoint;
use bftlog_spec::tiles::{TILE_WIDTH, Tile, TileKind, partial_tiles};
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, PutPayload};
use tracing::{info, warn};

use super::client_api::served_checkpoint;
use super::shared::Shared;
use crate::config::PublishTarget;

/// How often the publisher looks for a newer checkpoint.
const POLL: Duration = Duration::from_millis(100);
/// Uploads in flight at once.
const UPLOADS_AT_ONCE: usize = 16;
/// Longest wait between retries after a failure.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How often a publisher checks that the target's checkpoint is not
/// smaller than the last one it wrote.
const RECHECK: Duration = Duration::from_secs(5);

/// Why a publishing round failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    #[error("storage: {0}")]
    Read(#[from] crate::storage::StoreError),
    #[error("tile {0} is not in the committed tree")]
    Missing(Tile),
}

/// Opens the publish target.
pub fn open(
    target: &PublishTarget,
) -> Result<(Arc<dyn ObjectStore>, StorePath), object_store::Error> {
    match target {
        PublishTarget::Directory(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| object_store::Error::Generic {
                store: "LocalFileSystem",
                source: Box::new(e),
            })?;
            let store = object_store::local::LocalFileSystem::new_with_prefix(dir)?;
            Ok((Arc::new(store), StorePath::default()))
        }
        PublishTarget::S3 {
            bucket,
            prefix,
            endpoint,
            region,
            allow_http,
        } => {
            // Credentials from the standard AWS environment variables
            // (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN).
            let mut builder = object_store::aws::AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .with_region(region)
                .with_allow_http(*allow_http);
            if let Some(endpoint) = endpoint {
                builder = builder.with_endpoint(endpoint);
            }
            Ok((Arc::new(builder.build()?), StorePath::from(prefix.as_str())))
        }
    }
}

/// Publishes until the task is aborted.
pub(crate) async fn run(shared: Arc<Shared>, store: Arc<dyn ObjectStore>, prefix: StorePath) {
    let checkpoint_path = child(&prefix, "checkpoint");
    // Where to resume: a read that fails is retried (publishing from 0
    // would upload the whole log again), a missing checkpoint is 0.
    let mut backoff = Duration::from_secs(1);
    let mut published = loop {
        match remote_size(&*store, &checkpoint_path, &shared).await {
            Ok(size) => break size,
            Err(e) => {
                shared
                    .metrics
                    .tiles_publish_errors
                    .fetch_add(1, Ordering::Relaxed);
                warn!(error = %e, retry_in_s = backoff.as_secs(), "tiles: cannot read the published checkpoint");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    };
    shared
        .metrics
        .tiles_published_size
        .store(published, Ordering::Relaxed);
    let mut backoff = Duration::from_secs(1);
    let mut last_recheck = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(POLL).await;
        // Another publisher to the same target may have written a smaller
        // checkpoint over ours between its size check and its write: put
        // ours back (its tiles are there).
        if published > 0 && last_recheck.elapsed() >= RECHECK {
            last_recheck = tokio::time::Instant::now();
            if let Ok(remote) = remote_size(&*store, &checkpoint_path, &shared).await
                && remote < published
                && let Ok(Some((size, note))) = served_checkpoint(&shared)
                && size >= published
            {
                let _ = publish(&shared, &store, &prefix, published, size, note).await;
                published = size;
            }
        }
        let latest = match served_checkpoint(&shared) {
            Ok(Some(latest)) => latest,
            Ok(None) => continue,
            Err(e) => {
                warn!(error = %e, "tiles: reading the latest checkpoint failed");
                continue;
            }
        };
        if latest.0 <= published {
            continue;
        }
        match publish(&shared, &store, &prefix, published, latest.0, latest.1).await {
            Ok(()) => {
                published = latest.0;
                shared
                    .metrics
                    .tiles_published_size
                    .store(published, Ordering::Relaxed);
                backoff = Duration::from_secs(1);
            }
            Err(e) => {
                shared
                    .metrics
                    .tiles_publish_errors
                    .fetch_add(1, Ordering::Relaxed);
                warn!(error = %e, from = published, to = latest.0, retry_in_s = backoff.as_secs(), "tiles: publishing failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

fn child(prefix: &StorePath, path: &str) -> StorePath {
    let mut out = prefix.clone();
    for part in path.split('/') {
        out = out.child(part);
    }
    out
}

/// The size of the checkpoint at `path`, 0 if there is none.
async fn remote_size(
    store: &dyn ObjectStore,
    path: &StorePath,
    shared: &Shared,
) -> Result<u64, PublishError> {
    let bytes = match store.get(path).await {
        Ok(got) => got.bytes().await?,
        Err(object_store::Error::NotFound { .. }) => return Ok(0),
        Err(e) => return Err(e.into()),
    };
    // Anything else there (not a checkpoint of this log) counts as none.
    let size = checkpoint::parse_signed(&bytes)
        .ok()
        .filter(|(_, c)| c.origin == shared.cfg.cluster.origin)
        .map_or(0, |(_, c)| c.size);
    Ok(size)
}

/// The tiles a tree of `new` leaves has that one of `old` lacked: full
/// tiles completed in between and the partial tiles of `new`, hash tiles
/// and entry bundles both.
pub fn new_tiles(old: u64, new: u64) -> Vec<Tile> {
    let mut out = Vec::new();
    let mut level = 0u8;
    let mut per_hash = 1u64; // leaves per tile hash at this level
    while new / per_hash >= 1 {
        let full_before = old / per_hash / TILE_WIDTH;
        let full_now = new / per_hash / TILE_WIDTH;
        for index in full_before..full_now {
            out.push(Tile::full(TileKind::Hashes { level }, index));
            if level == 0 {
                out.push(Tile::full(TileKind::Entries, index));
            }
        }
        match per_hash.checked_mul(TILE_WIDTH) {
            Some(next) => per_hash = next,
            None => break,
        }
        level += 1;
    }
    for tile in partial_tiles(new) {
        out.push(tile);
        if tile.level() == 0 {
            out.push(Tile {
                kind: TileKind::Entries,
                ..tile
            });
        }
    }
    out
}

async fn publish(
    shared: &Arc<Shared>,
    store: &Arc<dyn ObjectStore>,
    prefix: &StorePath,
    old: u64,
    new: u64,
    note: String,
) -> Result<(), PublishError> {
    let tiles = new_tiles(old, new);
    let mut uploads = tokio::task::JoinSet::new();
    for tile in tiles {
        while uploads.len() >= UPLOADS_AT_ONCE {
            uploads
                .join_next()
                .await
                .expect("nonempty")
                .expect("upload task panicked")?;
        }
        let (shared, store) = (shared.clone(), store.clone());
        let path = child(prefix, &tile.path());
        uploads.spawn(async move {
            let reader = shared.store.clone();
            let bytes = tokio::task::spawn_blocking(move || reader.tile(&tile))
                .await
                .expect("tile read panicked")?
                .ok_or(PublishError::Missing(tile))?;
            store.put(&path, PutPayload::from(bytes)).await?;
            shared
                .metrics
                .tiles_uploaded
                .fetch_add(1, Ordering::Relaxed);
            Ok::<(), PublishError>(())
        });
    }
    while let Some(done) = uploads.join_next().await {
        done.expect("upload task panicked")?;
    }
    // Every tile of `new` is there: now the checkpoint, unless a larger
    // one is already.
    let checkpoint_path = child(prefix, "checkpoint");
    if remote_size(&**store, &checkpoint_path, shared).await? >= new {
        return Ok(());
    }
    store
        .put(&checkpoint_path, PutPayload::from(note.into_bytes()))
        .await?;
    if old == 0 {
        info!(size = new, "tiles: first checkpoint published");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hashes(level: u8, index: u64, width: u16) -> Tile {
        Tile {
            kind: TileKind::Hashes { level },
            index,
            width,
        }
    }

    fn bundle(index: u64, width: u16) -> Tile {
        Tile {
            kind: TileKind::Entries,
            index,
            width,
        }
    }

    #[test]
    fn new_tiles_are_the_completed_full_ones_and_the_partial_ones() {
        assert_eq!(new_tiles(0, 0), vec![]);
        assert_eq!(new_tiles(0, 3), vec![hashes(0, 0, 3), bundle(0, 3)]);
        // 300 → 600: level-0 tile 1 completes (tile 0 was full already),
        // and the partial tiles of 600.
        assert_eq!(
            new_tiles(300, 600),
            vec![
                hashes(0, 1, 256),
                bundle(1, 256),
                hashes(0, 2, 88),
                bundle(2, 88),
                hashes(1, 0, 2),
            ]
        );
        // Every tile of a tree is new to the empty one, and the union of
        // steps covers each full tile exactly once.
        let mut stepped = Vec::new();
        let mut last = 0;
        for size in [1u64, 255, 256, 257, 65_535, 65_536, 65_537, 70_000] {
            stepped.extend(new_tiles(last, size).into_iter().filter(|t| t.is_full()));
            last = size;
        }
        let at_once: Vec<Tile> = new_tiles(0, 70_000)
            .into_iter()
            .filter(|t| t.is_full())
            .collect();
        stepped.sort_by_key(|t| (t.level(), t.kind == TileKind::Entries, t.index));
        let mut at_once_sorted = at_once.clone();
        at_once_sorted.sort_by_key(|t| (t.level(), t.kind == TileKind::Entries, t.index));
        assert_eq!(stepped, at_once_sorted);
        // 273 full level-0 tiles and bundles, one full level-1 tile.
        assert_eq!(at_once.len(), 273 * 2 + 1);
        for tile in new_tiles(0, 70_000) {
            assert!(tile.is_in_tree(70_000), "{tile}");
        }
    }
}
