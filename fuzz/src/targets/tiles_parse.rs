//! C2SP tlog-tiles paths and entry bundles: a path that parses prints
//! back to exactly the same text (one path per tile), and its tile's
//! needed tree size holds it; a bundle that parses re-encodes to the same
//! bytes.

use bftlog_spec::tiles::{self, Tile};

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
}
