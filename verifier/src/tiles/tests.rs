use super::*;
use bftlog_spec::merkle::MemoryTree;
use bftlog_spec::tiles::{encode_bundle, partial_tiles};

fn entry(i: u64) -> Vec<u8> {
    // Varied lengths, including empty entries.
    let len = (i % 7) as usize * 3;
    let mut e = i.to_be_bytes().to_vec();
    e.truncate(len.min(8));
    e.resize(len, b'x');
    e
}

fn entries(n: u64) -> Vec<Vec<u8>> {
    (0..n).map(entry).collect()
}

fn bundle(all: &[Vec<u8>], tile: &Tile) -> Vec<u8> {
    let start = (tile.index * TILE_WIDTH) as usize;
    encode_bundle(
        all[start..start + usize::from(tile.width)]
            .iter()
            .map(|e| e.as_slice()),
    )
    .unwrap()
}

/// A tile computed straight from the leaves, independently of `TileTree`:
/// hash `i` is the root of the leaves `(N·256 + i)·256^L ..` of that span.
fn reference_tile(leaves: &[Hash], tile: &Tile) -> Vec<u8> {
    let span = 1usize << (TILE_HEIGHT as usize * usize::from(tile.level()));
    let mut out = Vec::new();
    for i in 0..usize::from(tile.width) {
        let start = (tile.index as usize * TILE_WIDTH as usize + i) * span;
        out.extend_from_slice(
            merkle::root_from_leaf_hashes(&leaves[start..start + span]).as_bytes(),
        );
    }
    out
}

fn leaf_hashes(all: &[Vec<u8>]) -> Vec<Hash> {
    all.iter().map(|e| merkle::leaf_hash(e)).collect()
}

/// Builds a tree bundle by bundle from `old` to `new`, checking every tile
/// it reports against the reference.
fn extend(tree: &mut TileTree, all: &[Vec<u8>], leaves: &[Hash], new: u64) -> usize {
    let mut tiles = 0;
    for tile in bundles_between(tree.size(), new) {
        for (full, bytes) in tree.append_bundle(&tile, &bundle(all, &tile)).unwrap() {
            assert!(full.is_full());
            assert_eq!(bytes, reference_tile(leaves, &full), "{full}");
            tiles += 1;
        }
    }
    assert_eq!(tree.size(), new);
    tiles
}

#[test]
fn tiles_around_tile_boundaries_equal_those_built_from_the_leaves() {
    let all = entries(65_537);
    let leaves = leaf_hashes(&all);
    for size in [0u64, 1, 255, 256, 257, 65_535, 65_536, 65_537] {
        let mut tree = TileTree::new();
        extend(&mut tree, &all, &leaves, size);
        let mut reference = MemoryTree::new();
        for leaf in &leaves[..size as usize] {
            reference.append(*leaf);
        }
        assert_eq!(tree.root(), reference.root(), "size {size}");
        let partial = tree.partial_tiles();
        assert_eq!(
            partial.iter().map(|(t, _)| *t).collect::<Vec<_>>(),
            partial_tiles(size),
            "size {size}"
        );
        for (tile, bytes) in &partial {
            assert_eq!(*bytes, reference_tile(&leaves, tile), "size {size}: {tile}");
        }
    }
}

#[test]
fn growing_in_steps_gives_the_tree_built_at_once() {
    let all = entries(70_000);
    let leaves = leaf_hashes(&all);
    let mut at_once = TileTree::new();
    let full_tiles_at_once = extend(&mut at_once, &all, &leaves, 70_000);
    let mut stepped = TileTree::new();
    let mut full_tiles = 0;
    for size in [
        1, 2, 255, 256, 300, 511, 513, 65_535, 65_537, 65_800, 70_000,
    ] {
        full_tiles += extend(&mut stepped, &all, &leaves, size);
        // Saved and read back between steps, as a monitor does.
        let saved = stepped.encode_edge();
        stepped = TileTree::decode_edge(&saved, &stepped.root()).unwrap();
    }
    assert_eq!(stepped, at_once);
    assert_eq!(full_tiles, full_tiles_at_once);
    // 273 full level-0 tiles and one full level-1 tile.
    assert_eq!(full_tiles, 273 + 1);
}

#[test]
fn a_repeated_entry_that_differs_is_refused() {
    let all = entries(300);
    let leaves = leaf_hashes(&all);
    let mut tree = TileTree::new();
    extend(&mut tree, &all, &leaves, 260);
    let mut forked = all.clone();
    forked[257] = b"not what was verified".to_vec();
    let tile = bundles_between(260, 300).next().unwrap();
    assert_eq!(tile.index, 1);
    assert_eq!(
        tree.append_bundle(&tile, &bundle(&forked, &tile)),
        Err(TileError::KnownEntryDiffers {
            tile: "tile/entries/001.p/44".into(),
            index: 257
        })
    );
    assert_eq!(tree.size(), 260, "a refused bundle changes nothing");
}

#[test]
fn bundles_out_of_order_or_malformed_are_refused() {
    let all = entries(800);
    let leaves = leaf_hashes(&all);
    let mut tree = TileTree::new();
    extend(&mut tree, &all, &leaves, 256);
    let skip = Tile::full(TileKind::Entries, 2);
    assert!(matches!(
        tree.append_bundle(&skip, &bundle(&all, &skip)),
        Err(TileError::NotNextBundle { .. })
    ));
    let again = Tile::full(TileKind::Entries, 0);
    assert!(matches!(
        tree.append_bundle(&again, &bundle(&all, &again)),
        Err(TileError::NotNextBundle { .. })
    ));
    let next = Tile::full(TileKind::Entries, 1);
    let mut short = bundle(&all, &next);
    short.pop();
    assert!(matches!(
        tree.append_bundle(&next, &short),
        Err(TileError::Bundle { .. })
    ));
    let hashes = Tile::full(TileKind::Hashes { level: 0 }, 1);
    assert!(matches!(
        tree.append_bundle(&hashes, &bundle(&all, &next)),
        Err(TileError::NotNextBundle { .. })
    ));
}

#[test]
fn saved_edges_are_read_exactly() {
    let all = entries(70_000);
    let leaves = leaf_hashes(&all);
    let mut tree = TileTree::new();
    extend(&mut tree, &all, &leaves, 65_800);
    let root = tree.root();
    let saved = tree.encode_edge();
    assert_eq!(TileTree::decode_edge(&saved, &root).unwrap(), tree);
    let mut longer = saved.clone();
    longer.push(0);
    assert!(matches!(
        TileTree::decode_edge(&longer, &root),
        Err(TileError::Edge(_))
    ));
    assert!(matches!(
        TileTree::decode_edge(&saved[..saved.len() - 1], &root),
        Err(TileError::Edge(_))
    ));
    assert!(matches!(
        TileTree::decode_edge(&saved[1..], &root),
        Err(TileError::Edge(_))
    ));
    let mut flipped = saved.clone();
    *flipped.last_mut().unwrap() ^= 1;
    assert!(matches!(
        TileTree::decode_edge(&flipped, &root),
        Err(TileError::EdgeRootDiffers { .. })
    ));
    // The empty tree.
    let empty = TileTree::new();
    assert_eq!(
        TileTree::decode_edge(&empty.encode_edge(), &merkle::empty_root()).unwrap(),
        empty
    );
}

#[test]
fn the_edge_is_rebuilt_from_partial_tiles() {
    let all = entries(65_800);
    let leaves = leaf_hashes(&all);
    let mut tree = TileTree::new();
    extend(&mut tree, &all, &leaves, 65_800);
    let files: HashMap<Tile, Vec<u8>> = tree.partial_tiles().into_iter().collect();
    let read = |t: &Tile| files.get(t).cloned().ok_or(t.path());
    let rebuilt = TileTree::from_partial_tiles(65_800, &tree.root(), read)
        .unwrap()
        .unwrap();
    assert_eq!(rebuilt, tree);
    assert!(matches!(
        TileTree::from_partial_tiles(65_800, &merkle::empty_root(), read).unwrap(),
        Err(TileError::EdgeRootDiffers { .. })
    ));
    let missing = TileTree::from_partial_tiles(65_801, &tree.root(), read);
    assert_eq!(missing.unwrap_err(), "tile/0/257.p/9");
}

#[test]
fn consistency_paths_read_from_tiles_equal_those_from_the_tree() {
    let all = entries(70_000);
    let leaves = leaf_hashes(&all);
    let mut reference = MemoryTree::new();
    for leaf in &leaves {
        reference.append(*leaf);
    }
    let mut all_tiles: HashMap<u64, HashMap<Tile, Vec<u8>>> = HashMap::new();
    for (old, new) in [
        (1u64, 2u64),
        (1, 70_000),
        (255, 256),
        (256, 257),
        (300, 65_536),
        (65_536, 70_000),
        (4_096, 65_537),
        (12_345, 67_890),
        (69_999, 70_000),
    ] {
        let tiles = all_tiles.entry(new).or_insert_with(|| {
            // Every tile of the tree of `new` leaves, as a log serves them.
            let mut map = HashMap::new();
            for level in 0..3u8 {
                let count = new >> (8 * u32::from(level));
                for index in 0..count.div_ceil(TILE_WIDTH) {
                    let tile = Tile {
                        kind: TileKind::Hashes { level },
                        index,
                        width: (count - index * TILE_WIDTH).min(TILE_WIDTH) as u16,
                    };
                    map.insert(tile, reference_tile(&leaves, &tile));
                }
            }
            map
        });
        let needed = consistency_tiles(old, new);
        assert!(
            needed.iter().all(|t| tiles.contains_key(t)),
            "{old}->{new}: {needed:?}"
        );
        let fetched: HashMap<Tile, Vec<u8>> =
            needed.iter().map(|t| (*t, tiles[t].clone())).collect();
        let mut prefix = MemoryTree::new();
        for leaf in &leaves[..new as usize] {
            prefix.append(*leaf);
        }
        assert_eq!(
            consistency_path(old, new, &fetched).unwrap(),
            merkle::prove_consistency_path(old, new, &prefix).unwrap(),
            "{old}->{new}"
        );
        // A missing tile is an error, not a wrong path.
        if let Some(first) = needed.first() {
            let mut less = fetched.clone();
            less.remove(first);
            assert!(consistency_path(old, new, &less).is_err());
        }
    }
    assert!(consistency_tiles(0, 10).is_empty());
    assert!(consistency_tiles(10, 10).is_empty());
}

#[test]
fn bundles_between_sizes() {
    let paths = |old, new| {
        bundles_between(old, new)
            .map(|t| t.path())
            .collect::<Vec<_>>()
    };
    assert!(paths(0, 0).is_empty());
    assert!(paths(300, 300).is_empty());
    assert!(paths(301, 300).is_empty());
    assert_eq!(paths(0, 1), ["tile/entries/000.p/1"]);
    assert_eq!(paths(0, 256), ["tile/entries/000"]);
    assert_eq!(paths(256, 300), ["tile/entries/001.p/44"]);
    assert_eq!(
        paths(255, 513),
        [
            "tile/entries/000",
            "tile/entries/001",
            "tile/entries/002.p/1"
        ]
    );
}

#[test]
fn served_tiles_are_checked_for_length_and_bytes() {
    let tile = Tile {
        kind: TileKind::Hashes { level: 0 },
        index: 0,
        width: 2,
    };
    let expected = vec![7u8; 64];
    assert!(check_tile(&tile, &expected, &expected).is_ok());
    assert!(matches!(
        check_tile(&tile, &expected[..63], &expected),
        Err(TileError::TileLength { .. })
    ));
    let mut other = expected.clone();
    other[5] = 0;
    assert_eq!(
        check_tile(&tile, &other, &expected),
        Err(TileError::TileDiffers {
            tile: "tile/0/000.p/2".into()
        })
    );
}
