use super::*;

fn hashes(level: u8, index: u64, width: u16) -> Tile {
    Tile {
        kind: TileKind::Hashes { level },
        index,
        width,
    }
}

#[test]
fn paths_round_trip_in_the_spec_encoding() {
    let cases = [
        (hashes(0, 0, 256), "tile/0/000"),
        (hashes(0, 1234067, 256), "tile/0/x001/x234/067"),
        (hashes(2, 1000, 17), "tile/2/x001/000.p/17"),
        (hashes(63, 5, 255), "tile/63/005.p/255"),
        (
            Tile {
                kind: TileKind::Entries,
                index: 999,
                width: 1,
            },
            "tile/entries/999.p/1",
        ),
        (
            hashes(0, u64::MAX, 256),
            "tile/0/x018/x446/x744/x073/x709/x551/615",
        ),
    ];
    for (tile, path) in cases {
        assert_eq!(tile.path(), path);
        assert_eq!(Tile::parse_path(path), Ok(tile), "{path}");
        assert_eq!(Tile::parse_path(&format!("/{path}")), Ok(tile));
    }
}

#[test]
fn non_canonical_paths_are_refused() {
    for path in [
        "tile/01/000",
        "tile/64/000",
        "tile/-1/000",
        "tile/0/1",
        "tile/0/0001",
        "tile/0/x000/001",
        "tile/0/x1/000",
        "tile/0/001/002",
        "tile/0/x001",
        "tile/0/000/",
        "tile/0/000.p/0",
        "tile/0/000.p/256",
        "tile/0/000.p/05",
        "tile/0/000.p/",
        "tile/0/000.p/1/2",
        "tile/0/x018/x446/x744/x073/x709/x551/616",
        "tile/0/x001/x018/x446/x744/x073/x709/x551/615",
        "tile/entries",
        "tile/entries/",
        "tile/Entries/000",
        "tiles/0/000",
        "checkpoint",
        "",
    ] {
        assert!(Tile::parse_path(path).is_err(), "{path} parsed");
    }
}

#[test]
fn the_spec_examples_of_partial_tiles() {
    // "a tree of size 70,000 will be represented by 273 full level 0
    // tiles, one partial level 0 tile of width 112, one full level 1 tile,
    // one partial level 1 tile of width 17, and one partial level 2 tile
    // of width 1."
    assert_eq!(
        partial_tiles(70_000),
        vec![hashes(0, 273, 112), hashes(1, 1, 17), hashes(2, 0, 1)]
    );
    assert!(hashes(0, 272, 256).is_in_tree(70_000));
    assert!(!hashes(0, 273, 256).is_in_tree(70_000));
    assert!(hashes(1, 0, 256).is_in_tree(70_000));
    // "a tree of size 256 will be represented by a full level 0 tile and a
    // partial level 1 tile of width 1."
    assert_eq!(partial_tiles(256), vec![hashes(1, 0, 1)]);
    assert!(hashes(0, 0, 256).is_in_tree(256));
    assert!(partial_tiles(0).is_empty());
    for tile in partial_tiles(70_000) {
        assert!(tile.is_in_tree(70_000));
        let wider = Tile {
            width: tile.width + 1,
            ..tile
        };
        assert!(!wider.is_in_tree(70_000), "{wider}");
    }
    // Beyond u64: never in a tree.
    assert!(!hashes(63, 1, 1).is_in_tree(u64::MAX));
    assert!(!hashes(7, u64::MAX, 256).is_in_tree(u64::MAX));
}

#[test]
fn bundles_round_trip_and_bad_ones_are_refused() {
    let entries: Vec<Vec<u8>> = vec![b"a".to_vec(), Vec::new(), vec![7; 65_535]];
    let bundle = encode_bundle(entries.iter().map(|e| e.as_slice())).unwrap();
    assert_eq!(&bundle[..5], &[0, 1, b'a', 0, 0]);
    let parsed = parse_bundle(&bundle, 3).unwrap();
    assert_eq!(
        parsed,
        entries.iter().map(|e| e.as_slice()).collect::<Vec<_>>()
    );
    assert_eq!(
        parse_bundle(&bundle, 2),
        Err(BundleError::Count {
            found: 3,
            expected: 2
        })
    );
    assert_eq!(
        parse_bundle(&bundle[..bundle.len() - 1], 3),
        Err(BundleError::Truncated(2))
    );
    assert_eq!(parse_bundle(&[0], 1), Err(BundleError::Truncated(0)));
    let big = vec![0u8; 65_536];
    assert_eq!(
        encode_bundle([big.as_slice()]),
        Err(BundleError::EntryTooLarge {
            index: 0,
            len: 65_536
        })
    );
}
