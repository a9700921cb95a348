//! C2SP tlog-tiles from storage: hash tiles are read from the stored
//! hashes (the subtrees at Merkle level 8·L are stored already), entry
//! bundles from the stored entries. Tiles are a function of the committed
//! tree, so every replica serves the same bytes.

use bftlog_spec::merkle;
use bftlog_spec::tiles::{self, TILE_HEIGHT, TILE_WIDTH, Tile, TileKind};

use super::blocks::read_entries;
use super::hashes::HASH_CHUNK;
use super::*;

impl Store {
    /// A tile's bytes, if the committed tree holds it: for a hash tile its
    /// `width` hashes concatenated, for an entry bundle its entries each
    /// prefixed by a big-endian uint16 length.
    pub fn tile(&self, tile: &Tile) -> Result<Option<Vec<u8>>, StoreError> {
        let read = self.db.begin_read()?;
        let size = read
            .open_table(META)?
            .get(META_TREE_SIZE)?
            .map_or(0, |v| v.value());
        if !tile.is_in_tree(size) {
            return Ok(None);
        }
        let first = tile.index * TILE_WIDTH;
        let width = u64::from(tile.width);
        match tile.kind {
            TileKind::Hashes { level } => {
                // Straight from the hash chunks: a tile's hashes are in
                // ascending stored order, so each chunk is read once (about
                // nine for a level-0 tile), and nothing else is touched.
                let merkle_level = u32::from(level) * TILE_HEIGHT;
                let table = read.open_table(HASH_CHUNKS)?;
                let positions =
                    (first..first + width).map(|i| merkle::stored_hash_index(merkle_level, i));
                let first_chunk = merkle::stored_hash_index(merkle_level, first) / HASH_CHUNK;
                let last_chunk =
                    merkle::stored_hash_index(merkle_level, first + width - 1) / HASH_CHUNK;
                let mut out = Vec::with_capacity(width as usize * 32);
                let missing = |what: String| StoreError::Corrupt(format!("tile {tile}: {what}"));
                if level == 0 {
                    // A level-0 tile's hashes lie in about nine consecutive
                    // chunks: one range scan.
                    let mut chunks = table.range(first_chunk..=last_chunk)?;
                    let mut current: Option<(u64, redb::AccessGuard<'_, &[u8]>)> = None;
                    for position in positions {
                        let chunk = position / HASH_CHUNK;
                        while current.as_ref().is_none_or(|(c, _)| *c < chunk) {
                            let (key, value) = chunks
                                .next()
                                .ok_or_else(|| missing(format!("hash chunk {chunk} missing")))??;
                            current = Some((key.value(), value));
                        }
                        copy_hash(
                            &mut out,
                            current.as_ref().expect("read").1.value(),
                            position,
                        )
                        .ok_or_else(|| missing(format!("stored hash {position} missing")))?;
                    }
                } else {
                    // Higher levels' hashes are spread out: a read per
                    // chunk.
                    let mut current: Option<(u64, redb::AccessGuard<'_, &[u8]>)> = None;
                    for position in positions {
                        let chunk = position / HASH_CHUNK;
                        if current.as_ref().is_none_or(|(c, _)| *c != chunk) {
                            let bytes = table
                                .get(chunk)?
                                .ok_or_else(|| missing(format!("hash chunk {chunk} missing")))?;
                            current = Some((chunk, bytes));
                        }
                        copy_hash(
                            &mut out,
                            current.as_ref().expect("read").1.value(),
                            position,
                        )
                        .ok_or_else(|| missing(format!("stored hash {position} missing")))?;
                    }
                }
                Ok(Some(out))
            }
            TileKind::Entries => {
                let entries = read_entries(&read, first, first + width)?;
                if entries.len() as u64 != width {
                    return Err(StoreError::Corrupt(format!(
                        "entry bundle {tile}: {} of {width} entries stored",
                        entries.len()
                    )));
                }
                tiles::encode_bundle(entries.iter().map(|e| &e[..]))
                    .map(Some)
                    .map_err(|e| StoreError::Corrupt(format!("entry bundle {tile}: {e}")))
            }
        }
    }
}

/// Appends the stored hash at `position` from its chunk's bytes; `None`
/// if the chunk is short.
fn copy_hash(out: &mut Vec<u8>, chunk: &[u8], position: u64) -> Option<()> {
    let offset = (position % HASH_CHUNK) as usize * 32;
    out.extend_from_slice(chunk.get(offset..offset + 32)?);
    Some(())
}

#[cfg(test)]
mod tests {
    use bftlog_spec::merkle::Hash;
    use bftlog_spec::tiles::partial_tiles;

    use super::super::tests::{commit_blocks, open, tempdir};
    use super::*;

    /// A hash tile computed from the leaves alone, as the spec defines it.
    fn from_scratch(leaves: &[Hash], tile: &Tile) -> Vec<u8> {
        let span = tile.leaves_per_hash().unwrap() as usize;
        (0..u64::from(tile.width))
            .flat_map(|i| {
                let start = (tile.index * TILE_WIDTH + i) as usize * span;
                merkle::root_from_leaf_hashes(&leaves[start..start + span]).0
            })
            .collect()
    }

    /// At every size around tile boundaries, each partial tile of the
    /// size and the full tiles at the right edge equal those built from
    /// scratch, entry bundles hold the entries, and nothing beyond the
    /// tree is served.
    #[test]
    fn tiles_at_every_size_around_tile_boundaries_equal_those_built_from_scratch() {
        let dir = tempdir();
        let mut store = open(&dir.join("db.redb"));
        let mut tree = merkle::MemoryTree::new();
        let entry = |i: u64| format!("entry {i}").into_bytes();
        let mut leaves = Vec::new();
        for size in [1u64, 255, 256, 257, 65_535, 65_536, 65_537] {
            let more = size - tree.size();
            commit_blocks(&mut store, &mut tree, 1, more);
            while (leaves.len() as u64) < size {
                leaves.push(merkle::leaf_hash(&entry(leaves.len() as u64)));
            }
            let reader = store.store();
            let mut expected = partial_tiles(size);
            for level in 0..3u8 {
                let full = size / (TILE_WIDTH.pow(u32::from(level) + 1));
                if full > 0 {
                    expected.push(Tile::full(TileKind::Hashes { level }, full - 1));
                }
            }
            for tile in &expected {
                assert_eq!(
                    reader.tile(tile).unwrap().as_deref(),
                    Some(from_scratch(&leaves, tile).as_slice()),
                    "{tile} at size {size}"
                );
                let wider = Tile {
                    width: tile.width + 1,
                    ..*tile
                };
                if tile.is_full() {
                    let next = Tile {
                        index: tile.index + 1,
                        ..*tile
                    };
                    assert_eq!(reader.tile(&next).unwrap(), None, "{next} at {size}");
                } else {
                    assert_eq!(reader.tile(&wider).unwrap(), None, "{wider} at {size}");
                }
            }
            // The rightmost bundle, partial or full.
            let (index, width) = match size % TILE_WIDTH {
                0 => (size / TILE_WIDTH - 1, TILE_WIDTH),
                w => (size / TILE_WIDTH, w),
            };
            let bundle_tile = Tile {
                kind: TileKind::Entries,
                index,
                width: width as u16,
            };
            let bundle = reader.tile(&bundle_tile).unwrap().unwrap();
            let got = tiles::parse_bundle(&bundle, width as usize).unwrap();
            for (i, e) in got.iter().enumerate() {
                assert_eq!(*e, entry(index * TILE_WIDTH + i as u64).as_slice());
            }
        }
    }
}
