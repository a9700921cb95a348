//! Checking a C2SP tlog-tiles log (`spec/tiles.md`) from its entry bundles
//! and hash tiles, with no network: the engine the offline tiles audit, the
//! monitor and the mirror share.
//!
//! [`TileTree`] rebuilds a tree from entry bundles, keeping only its right
//! edge: per tile level, the hashes of the tile that is not full yet (at
//! most 255 hashes a level, under 64 KiB in all). From that edge it gives
//! the root, the full hash tiles each bundle completes and the partial
//! tiles of the current size, so every tile a log serves can be compared
//! byte for byte with the one the entries imply.
//!
//! [`consistency_tiles`] and [`consistency_path`] build the full
//! consistency path between two sizes from the larger tree's hash tiles,
//! for [`bftlog_spec::evidence::compare`]: a log whose tiles prove its new
//! checkpoint extends the old one passes; one whose tiles cannot is a split
//! view with transferable evidence.

use std::collections::HashMap;

use bftlog_spec::merkle::{
    self, CompactRange, Hash, HashReader, ProveError, StorageError, stored_hash_subtree,
};
use bftlog_spec::tiles::{
    BundleError, FULL_TILE_BYTES, TILE_HEIGHT, TILE_WIDTH, Tile, TileKind, parse_bundle,
};

/// Header of [`TileTree::encode_edge`].
const EDGE_MAGIC: &[u8] = b"bftlog tile edge v1\n";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TileError {
    #[error("{tile}: {error}")]
    Bundle { tile: String, error: BundleError },
    #[error("{tile} is not the next bundle of a tree of {size} entries")]
    NotNextBundle { tile: String, size: u64 },
    #[error("{tile}: entry {index} differs from the entry already verified at that index")]
    KnownEntryDiffers { tile: String, index: u64 },
    #[error("{tile}: {len} bytes, a tile of width {width} has {expected}")]
    TileLength {
        tile: String,
        len: usize,
        width: u16,
        expected: usize,
    },
    #[error("{tile} differs from the hashes its entries imply")]
    TileDiffers { tile: String },
    #[error("the entries up to {size} hash to {computed}, the checkpoint says {expected}")]
    RootDiffers {
        size: u64,
        computed: Hash,
        expected: Hash,
    },
    #[error("saved tree edge is malformed: {0}")]
    Edge(&'static str),
    #[error(
        "the saved tree edge of size {size} has root {computed}, its checkpoint says {expected}"
    )]
    EdgeRootDiffers {
        size: u64,
        computed: Hash,
        expected: Hash,
    },
}

/// A tile or bundle and its bytes.
pub type TileFile = (Tile, Vec<u8>);

/// A tree rebuilt from entry bundles, kept as its right edge.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TileTree {
    size: u64,
    /// Per tile level, the hashes of its tile that is not full yet:
    /// `floor(size / 256^L) mod 256` of them.
    edge: Vec<Vec<Hash>>,
}

impl TileTree {
    /// The empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// The RFC 6962 root of the tree.
    pub fn root(&self) -> Hash {
        self.compact_range().root()
    }

    /// The tree's complete-subtree peaks, largest first.
    pub fn compact_range(&self) -> CompactRange {
        let mut peaks = Vec::with_capacity(self.size.count_ones() as usize);
        for level_hashes in self.edge.iter().rev() {
            let mut start = 0;
            // The edge's length decomposes, highest bit first, into the
            // perfect subtrees the tree's peaks at this level are.
            for bit in (0..TILE_HEIGHT).rev() {
                let chunk = 1usize << bit;
                if level_hashes.len() & chunk != 0 {
                    peaks.push(merkle::root_from_leaf_hashes(
                        &level_hashes[start..start + chunk],
                    ));
                    start += chunk;
                }
            }
        }
        CompactRange::from_parts(self.size, peaks).expect("one peak per set bit of the size")
    }

    /// Checks the tree's root against a checkpoint's.
    pub fn check_root(&self, expected: &Hash) -> Result<(), TileError> {
        let computed = self.root();
        if computed != *expected {
            return Err(TileError::RootDiffers {
                size: self.size,
                computed,
                expected: *expected,
            });
        }
        Ok(())
    }

    /// Appends one leaf hash; pushes the hash tiles it completes, lowest
    /// level first, onto `completed`.
    pub fn append_leaf(&mut self, leaf: Hash, completed: &mut Vec<TileFile>) {
        assert!(self.size < u64::MAX, "tree size overflow");
        self.size += 1;
        let mut carry = leaf;
        let mut level = 0usize;
        loop {
            if self.edge.len() == level {
                self.edge.push(Vec::with_capacity(TILE_WIDTH as usize));
            }
            self.edge[level].push(carry);
            if self.edge[level].len() < TILE_WIDTH as usize {
                break;
            }
            let hashes = std::mem::take(&mut self.edge[level]);
            let index = (self.size >> (TILE_HEIGHT as usize * level)) / TILE_WIDTH - 1;
            carry = merkle::root_from_leaf_hashes(&hashes);
            completed.push((
                Tile::full(TileKind::Hashes { level: level as u8 }, index),
                hashes_bytes(&hashes),
            ));
            level += 1;
        }
    }

    /// Appends the entries of the bundle `tile` that the tree does not hold
    /// yet. The bundle must be the one at the tree's right edge and reach
    /// past it; the entries it repeats must hash to the leaves already held.
    /// Returns the hash tiles the bundle completes.
    pub fn append_bundle(&mut self, tile: &Tile, bytes: &[u8]) -> Result<Vec<TileFile>, TileError> {
        let first = self.size / TILE_WIDTH * TILE_WIDTH;
        let held = (self.size - first) as usize;
        if tile.kind != TileKind::Entries
            || tile.index != self.size / TILE_WIDTH
            || usize::from(tile.width) <= held
        {
            return Err(TileError::NotNextBundle {
                tile: tile.path(),
                size: self.size,
            });
        }
        let entries =
            parse_bundle(bytes, usize::from(tile.width)).map_err(|error| TileError::Bundle {
                tile: tile.path(),
                error,
            })?;
        for (offset, entry) in entries[..held].iter().enumerate() {
            if self.edge[0][offset] != merkle::leaf_hash(entry) {
                return Err(TileError::KnownEntryDiffers {
                    tile: tile.path(),
                    index: first + offset as u64,
                });
            }
        }
        let mut completed = Vec::new();
        for entry in &entries[held..] {
            self.append_leaf(merkle::leaf_hash(entry), &mut completed);
        }
        Ok(completed)
    }

    /// The partial hash tiles of the current size, lowest level first: what
    /// a log serves at its right edge for a checkpoint of this size.
    pub fn partial_tiles(&self) -> Vec<TileFile> {
        let mut out = Vec::new();
        for (level, hashes) in self.edge.iter().enumerate() {
            if hashes.is_empty() {
                continue;
            }
            let count = self.size >> (TILE_HEIGHT as usize * level);
            out.push((
                Tile {
                    kind: TileKind::Hashes { level: level as u8 },
                    index: count / TILE_WIDTH,
                    width: hashes.len() as u16,
                },
                hashes_bytes(hashes),
            ));
        }
        out
    }

    /// The edge as bytes, to save between runs: a header line, the size as
    /// a big-endian u64, then the edge hashes level by level. The size
    /// fixes how many hashes follow, so [`TileTree::decode_edge`] is exact.
    pub fn encode_edge(&self) -> Vec<u8> {
        let mut out = EDGE_MAGIC.to_vec();
        out.extend_from_slice(&self.size.to_be_bytes());
        for hash in self.edge.iter().flatten() {
            out.extend_from_slice(hash.as_bytes());
        }
        out
    }

    /// Reads [`TileTree::encode_edge`]'s bytes back and checks them against
    /// the root of the checkpoint they were saved with.
    pub fn decode_edge(bytes: &[u8], root: &Hash) -> Result<Self, TileError> {
        let rest = bytes
            .strip_prefix(EDGE_MAGIC)
            .ok_or(TileError::Edge("not a tile edge file (bad header)"))?;
        if rest.len() < 8 {
            return Err(TileError::Edge("truncated size"));
        }
        let (size_bytes, mut hashes) = rest.split_at(8);
        let size = u64::from_be_bytes(size_bytes.try_into().expect("8 bytes"));
        let mut edge = Vec::new();
        let mut count = size;
        while count > 0 {
            let width = (count % TILE_WIDTH) as usize;
            let Some((level_bytes, after)) = hashes.split_at_checked(width * 32) else {
                return Err(TileError::Edge("fewer hashes than the size needs"));
            };
            edge.push(
                level_bytes
                    .chunks_exact(32)
                    .map(|c| Hash::from_slice(c).expect("32 bytes"))
                    .collect(),
            );
            hashes = after;
            count /= TILE_WIDTH;
        }
        if !hashes.is_empty() {
            return Err(TileError::Edge("more hashes than the size needs"));
        }
        let tree = TileTree { size, edge };
        let computed = tree.root();
        if computed != *root {
            return Err(TileError::EdgeRootDiffers {
                size,
                computed,
                expected: *root,
            });
        }
        Ok(tree)
    }

    /// Rebuilds the edge of a tree of `size` from its partial tiles (as
    /// [`TileTree::partial_tiles`] lists them), e.g. a mirror's own files,
    /// and checks it against `root`. `read` returns a tile's bytes.
    pub fn from_partial_tiles<E>(
        size: u64,
        root: &Hash,
        mut read: impl FnMut(&Tile) -> Result<Vec<u8>, E>,
    ) -> Result<Result<Self, TileError>, E> {
        let mut edge = Vec::new();
        let mut count = size;
        let mut level = 0u8;
        while count > 0 {
            let width = (count % TILE_WIDTH) as u16;
            let mut hashes = Vec::new();
            if width > 0 {
                let tile = Tile {
                    kind: TileKind::Hashes { level },
                    index: count / TILE_WIDTH,
                    width,
                };
                let bytes = read(&tile)?;
                match tile_hashes(&tile, &bytes) {
                    Ok(parsed) => hashes = parsed,
                    Err(e) => return Ok(Err(e)),
                }
            }
            edge.push(hashes);
            count /= TILE_WIDTH;
            level += 1;
        }
        let tree = TileTree { size, edge };
        let computed = tree.root();
        if computed != *root {
            return Ok(Err(TileError::EdgeRootDiffers {
                size,
                computed,
                expected: *root,
            }));
        }
        Ok(Ok(tree))
    }
}

/// Compares a tile a log served with the one its entries imply.
pub fn check_tile(tile: &Tile, served: &[u8], expected: &[u8]) -> Result<(), TileError> {
    tile_hashes(tile, served)?;
    if served != expected {
        return Err(TileError::TileDiffers { tile: tile.path() });
    }
    Ok(())
}

/// The hashes of a hash tile, whose length must match its width exactly.
pub fn tile_hashes(tile: &Tile, bytes: &[u8]) -> Result<Vec<Hash>, TileError> {
    let expected = usize::from(tile.width) * 32;
    if bytes.len() != expected {
        return Err(TileError::TileLength {
            tile: tile.path(),
            len: bytes.len(),
            width: tile.width,
            expected,
        });
    }
    Ok(bytes
        .chunks_exact(32)
        .map(|c| Hash::from_slice(c).expect("32 bytes"))
        .collect())
}

fn hashes_bytes(hashes: &[Hash]) -> Vec<u8> {
    let mut out = Vec::with_capacity(FULL_TILE_BYTES.min(hashes.len() * 32));
    for hash in hashes {
        out.extend_from_slice(hash.as_bytes());
    }
    out
}

/// Every entry bundle and hash tile of a log holding `entries`, full and
/// partial, with the tree: what a log publishes for a checkpoint of that
/// size (for tests, examples and tools that write a tiles log).
pub fn tiles_of_entries<'a>(
    entries: impl IntoIterator<Item = &'a [u8]>,
) -> Result<(TileTree, Vec<TileFile>), BundleError> {
    let mut tree = TileTree::new();
    let mut files = Vec::new();
    let mut pending: Vec<&[u8]> = Vec::with_capacity(TILE_WIDTH as usize);
    let mut entries = entries.into_iter().peekable();
    while entries.peek().is_some() {
        pending.clear();
        pending.extend(entries.by_ref().take(TILE_WIDTH as usize));
        let bundle = Tile {
            kind: TileKind::Entries,
            index: tree.size() / TILE_WIDTH,
            width: pending.len() as u16,
        };
        let bytes = bftlog_spec::tiles::encode_bundle(pending.iter().copied())?;
        let completed = tree
            .append_bundle(&bundle, &bytes)
            .expect("a bundle just encoded appends");
        files.push((bundle, bytes));
        files.extend(completed);
    }
    files.extend(tree.partial_tiles());
    Ok((tree, files))
}

/// The entry bundles that carry entries `old_size..new_size`, in order: full
/// bundles, and a partial one of width `new_size mod 256` at the end. The
/// first may repeat entries below `old_size` ([`TileTree::append_bundle`]
/// checks those).
pub fn bundles_between(old_size: u64, new_size: u64) -> impl Iterator<Item = Tile> {
    let (first, end) = if old_size >= new_size {
        (0, 0)
    } else {
        (old_size / TILE_WIDTH, new_size.div_ceil(TILE_WIDTH))
    };
    (first..end).map(move |index| Tile {
        kind: TileKind::Entries,
        index,
        width: (new_size - index * TILE_WIDTH).min(TILE_WIDTH) as u16,
    })
}

/// The hash tile holding, in a tree of `size` leaves, the complete subtree
/// at Merkle level `8·L + r`: its tile, and the range of that tile's hashes
/// the subtree spans.
fn subtree_tile(size: u64, merkle_level: u32, index: u64) -> (Tile, std::ops::Range<usize>) {
    let level = merkle_level / TILE_HEIGHT;
    let height_in_tile = merkle_level % TILE_HEIGHT;
    let first = index << height_in_tile; // at the tile level's Merkle level
    let tile_index = first / TILE_WIDTH;
    let count = size >> (TILE_HEIGHT * level);
    let width = (count - tile_index * TILE_WIDTH).min(TILE_WIDTH) as u16;
    let start = (first % TILE_WIDTH) as usize;
    (
        Tile {
            kind: TileKind::Hashes { level: level as u8 },
            index: tile_index,
            width,
        },
        start..start + (1usize << height_in_tile),
    )
}

/// Records which stored hashes a proof reads, answering with zeros: the
/// hashes a proof needs depend on the sizes alone.
struct RecordingReader(std::cell::RefCell<Vec<u64>>);

impl HashReader for RecordingReader {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, StorageError> {
        self.0.borrow_mut().extend_from_slice(indexes);
        Ok(vec![Hash::default(); indexes.len()])
    }
}

/// Reads stored hashes out of fetched hash tiles of a tree of `size`.
struct TileReader<'a> {
    size: u64,
    tiles: &'a HashMap<Tile, Vec<u8>>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0} was not fetched or is malformed")]
struct MissingTile(String);

impl HashReader for TileReader<'_> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, StorageError> {
        indexes
            .iter()
            .map(|&position| {
                let (merkle_level, index) = stored_hash_subtree(position);
                let (tile, range) = subtree_tile(self.size, merkle_level, index);
                let bytes = self
                    .tiles
                    .get(&tile)
                    .filter(|b| {
                        b.len() == usize::from(tile.width) * 32 && range.end * 32 <= b.len()
                    })
                    .ok_or_else(|| StorageError(Box::new(MissingTile(tile.path()))))?;
                let hashes: Vec<Hash> = bytes[range.start * 32..range.end * 32]
                    .chunks_exact(32)
                    .map(|c| Hash::from_slice(c).expect("32 bytes"))
                    .collect();
                Ok(merkle::root_from_leaf_hashes(&hashes))
            })
            .collect()
    }
}

/// The hash tiles of the tree of `new_size` that the full consistency path
/// from `old_size` reads (none unless `0 < old_size < new_size`).
pub fn consistency_tiles(old_size: u64, new_size: u64) -> Vec<Tile> {
    if old_size == 0 || old_size >= new_size {
        return Vec::new();
    }
    let recorder = RecordingReader(Default::default());
    merkle::prove_consistency_path(old_size, new_size, &recorder)
        .expect("the recording reader never fails");
    let mut tiles: Vec<Tile> = recorder
        .0
        .into_inner()
        .into_iter()
        .map(|position| {
            let (merkle_level, index) = stored_hash_subtree(position);
            subtree_tile(new_size, merkle_level, index).0
        })
        .collect();
    tiles.sort_by_key(|t| (t.level(), t.index));
    tiles.dedup();
    tiles
}

/// The full consistency path from `old_size` to `new_size`
/// ([`merkle::prove_consistency_path`]) read from the hash tiles
/// [`consistency_tiles`] named, fetched into `tiles`.
pub fn consistency_path(
    old_size: u64,
    new_size: u64,
    tiles: &HashMap<Tile, Vec<u8>>,
) -> Result<Vec<Hash>, ProveError> {
    merkle::prove_consistency_path(
        old_size,
        new_size,
        &TileReader {
            size: new_size,
            tiles,
        },
    )
}

#[cfg(test)]
mod tests;
