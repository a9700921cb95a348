//! C2SP tlog-tiles paths and entry bundles: a path that parses prints
//! back to exactly the same text (one path per tile), and its tile's
//! needed tree size holds it; a bundle that parses re-encodes to the same
//! bytes. The reading side (`bftlog_verify::tiles`): a bundle appended to
//! a tree either is refused, leaving the tree as it was, or gives the tree
//! its entries give from scratch; a saved tree edge reads back only as
//! itself.

use bftlog_spec::merkle::Hash;
use bftlog_spec::tiles::{self, Tile, TileKind};
use bftlog_verify::tiles::{TileTree, tiles_of_entries};

pub fn tiles_parse(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(tile) = Tile::parse_path(text)
    {
        let printed = tile.path();
        assert_eq!(printed, text.strip_prefix('/').unwrap_or(text));
        assert_eq!(Tile::parse_path(&printed), Ok(tile));
        if let Some(size) = tile.tree_size_needed() {
            assert!(tile.is_in_tree(size));
            assert!(!tile.is_in_tree(size - 1));
        }
    }
    // The first byte says how many entries the bundle must hold.
    if let Some((&count, bundle)) = data.split_first()
        && let Ok(entries) = tiles::parse_bundle(bundle, usize::from(count))
    {
        assert_eq!(entries.len(), usize::from(count));
        let again = tiles::encode_bundle(entries.iter().copied()).expect("entries parsed fit");
        assert_eq!(again, bundle);
    }
    // Two bytes choose the bundle's width (1 to 256) and how many of its
    // entries the tree holds already (fewer than the width).
    if let Some((&[width, held], bundle)) = data.split_first_chunk::<2>() {
        let width = u16::from(width) + 1;
        let held = u64::from(held) % u64::from(width);
        let known: Vec<Vec<u8>> = (0..held).map(|i| vec![i as u8]).collect();
        let (mut tree, _) =
            tiles_of_entries(known.iter().map(|e| e.as_slice())).expect("small entries");
        let before = tree.clone();
        let tile = Tile {
            kind: TileKind::Entries,
            index: 0,
            width,
        };
        match tree.append_bundle(&tile, bundle) {
            Ok(completed) => {
                let entries = tiles::parse_bundle(bundle, usize::from(width)).expect("appended");
                let (fresh, files) = tiles_of_entries(entries).expect("parsed entries fit");
                assert_eq!(tree, fresh);
                assert_eq!(tree.size(), u64::from(width));
                assert_eq!(completed.len(), usize::from(width == 256));
                assert!(completed.iter().all(|c| files.contains(c)));
                let saved = tree.encode_edge();
                assert_eq!(TileTree::decode_edge(&saved, &tree.root()), Ok(tree));
            }
            Err(_) => assert_eq!(tree, before),
        }
    }
    // Any bytes as a saved edge: refused without a panic unless they are
    // an edge whose root is the one given.
    if let Ok(tree) = TileTree::decode_edge(data, &Hash::default()) {
        assert_eq!(tree.encode_edge(), data);
    }
}
