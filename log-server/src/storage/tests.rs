//! Storage tests: proofs against in-memory trees, the leaf index's levels,
//! blocks and their runs, reopening, and refusing other layouts.

use super::*;
use bftlog_consensus::{Committed, SafetyState, genesis_qc};
use bftlog_spec::merkle::{self, HashReader};
use bftlog_spec::wire::{Block, BoundedVec, Entry};
use leaf_index::{LeafRun, SortedLevel, find_in_row};
use redb::ReadableTableMetadata;

/// A small page cache: tests hold many databases at once.
const TEST_CACHE_BYTES: usize = 16 << 20;

pub(super) fn open(path: &Path) -> StoreWriter {
    Store::open(path, 1, TEST_CACHE_BYTES).unwrap()
}

/// The database file without this module's checks, to change it behind
/// the store's back.
fn open_raw(path: &Path) -> redb::Database {
    redb::Database::create(path).unwrap()
}

impl Store {
    /// Height of the last committed block.
    fn committed_height(&self) -> Result<u64, StoreError> {
        let read = self.db.begin_read()?;
        Ok(read
            .open_table(META)?
            .get(META_HEIGHT)?
            .map_or(0, |v| v.value()))
    }
}

fn block(round: u64, parent: Hash, entries: &[&[u8]]) -> Block {
    Block {
        epoch: 1,
        round,
        author: 0,
        parent_id: parent,
        justify: genesis_qc(1),
        entries: BoundedVec::new(
            entries
                .iter()
                .map(|e| Entry::new(e.to_vec()).unwrap())
                .collect(),
        )
        .unwrap(),
    }
}

/// The commit of a block of `payloads` at `height` on `parent`,
/// appended to `tree`.
fn committed(
    tree: &mut merkle::MemoryTree,
    height: u64,
    parent: Hash,
    payloads: &[&[u8]],
) -> Committed {
    let b = block(height, parent, payloads);
    let first_index = tree.size();
    let leaves: Vec<Hash> = payloads.iter().map(|p| merkle::leaf_hash(p)).collect();
    for leaf in &leaves {
        tree.append(*leaf);
    }
    let positions: Vec<u64> =
        (merkle::stored_hash_count(first_index)..merkle::stored_hash_count(tree.size())).collect();
    let stored_hashes = tree.read_hashes(&positions).unwrap();
    Committed {
        height,
        block_id: bftlog_consensus::crypto::block_id(&b),
        block: std::sync::Arc::new(b),
        leaves,
        first_index,
        size: tree.size(),
        root: tree.root(),
        stored_hashes,
    }
}

pub(super) fn commit_blocks(
    store: &mut StoreWriter,
    tree: &mut merkle::MemoryTree,
    count: u64,
    per_block: u64,
) {
    let mut height = store.committed_height().unwrap();
    let mut parent = Hash([0; 32]);
    for _ in 0..count {
        height += 1;
        let first_index = tree.size();
        let payloads: Vec<Vec<u8>> = (0..per_block)
            .map(|i| format!("entry {}", first_index + i).into_bytes())
            .collect();
        let refs: Vec<&[u8]> = payloads.iter().map(|p| p.as_slice()).collect();
        let commit = committed(tree, height, parent, &refs);
        parent = commit.block_id;
        let batch = WriteBatch {
            commits: vec![commit],
            ..Default::default()
        };
        store.write(&batch).unwrap();
    }
}

#[test]
fn a_sorted_level_finds_every_leaf_and_no_other() {
    for n in [0u64, 1, 3, 7, 8, 9, 100, 4096, 70_000] {
        let leaf = |i: u64| merkle::leaf_hash(&i.to_be_bytes());
        let mut leaves: Vec<(Hash, u64)> = (0..n).map(|i| (leaf(i), i)).collect();
        leaves.sort_unstable();
        let level = SortedLevel::new(leaves);
        assert_eq!(level.len() as u64, n);
        assert!(n < 8 || level.bucket_bits > 0, "n = {n}");
        for i in 0..n {
            assert_eq!(level.index_of(&leaf(i)), Some(i), "n = {n}, leaf {i}");
        }
        for i in n..n + 100 {
            assert_eq!(level.index_of(&leaf(i)), None, "n = {n}, leaf {i}");
        }
        assert_eq!(level.index_of(&Hash([0; 32])), None);
        assert_eq!(level.index_of(&Hash([0xff; 32])), None);
    }
}

#[test]
fn proofs_from_storage_match_the_in_memory_tree_and_survive_reopen() {
    let dir = tempdir();
    let path = dir.join("db.redb");
    let mut tree = merkle::MemoryTree::new();
    {
        let mut store = open(&path);
        commit_blocks(&mut store, &mut tree, 13, 7);
    }
    let mut store = open(&path);
    commit_blocks(&mut store, &mut tree, 5, 3);
    let size = tree.size();
    assert_eq!(store.tree_size(), size);
    for s in [1, 2, 7, 64, 65, size] {
        assert_eq!(
            store.root_at(s).unwrap(),
            merkle::tree_root(s, &tree).unwrap()
        );
        let indexes = [0, s / 2, s - 1];
        let batch = store.inclusion_proofs(&indexes, s).unwrap();
        let mut distinct = indexes.to_vec();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(
            store.multiproof(&distinct, s).unwrap(),
            merkle::prove_multiproof(&distinct, s, &tree).unwrap()
        );
        for (i, from_batch) in indexes.into_iter().zip(batch) {
            let proof = store.inclusion_proof(i, s).unwrap();
            assert_eq!(proof, merkle::prove_inclusion(i, s, &tree).unwrap());
            assert_eq!(from_batch, proof);
        }
        let proof = store.consistency_proof(s / 3, s).unwrap();
        assert_eq!(proof, merkle::prove_consistency(s / 3, s, &tree).unwrap());
    }
    assert!(matches!(
        store.inclusion_proof(0, size + 1),
        Err(ReadError::NotFound(_))
    ));
    assert!(matches!(
        store.inclusion_proof(size, size),
        Err(ReadError::Invalid(_))
    ));
    let leaf = merkle::leaf_hash(b"entry 5");
    assert_eq!(store.index_of(&leaf).unwrap(), Some(5));
    let got = store.entries(5, 3).unwrap();
    assert_eq!(&got[0][..], b"entry 5");
    assert_eq!(got.len(), 3);
    // Blocks come back with their entries.
    let blocks = store.committed_blocks(2, 2).unwrap();
    assert_eq!(blocks.len(), 2);
    assert_eq!(&blocks[0].entries[0][..], b"entry 7");
    let recovered = store.recover(1, 4, usize::MAX).unwrap();
    assert_eq!(recovered.committed_blocks.len(), 4);
    assert_eq!(recovered.first_height, 15);
    assert_eq!(recovered.tree.root(), tree.root());
    // A byte budget: beyond the 16 newest blocks, kept whatever their
    // size, an older block is recovered only if it fits.
    let all = store.recover(1, 100, usize::MAX).unwrap();
    assert_eq!((all.committed_blocks.len(), all.first_height), (18, 1));
    // The checkpoint of each recovered height, newest first, for the
    // cluster signature's recovery: each root is the tree's at its size.
    assert_eq!(all.recent_checkpoints.len(), 18);
    assert_eq!(all.recent_checkpoints[0].1, size);
    for (i, (height, s, root)) in all.recent_checkpoints.iter().enumerate() {
        assert_eq!(*height, 18 - i as u64);
        assert_eq!(*root, merkle::tree_root(*s, &tree).unwrap());
    }
    assert!(all.recent_checkpoints.windows(2).all(|w| w[0].1 > w[1].1));
    let kept = store.recover(1, 100, 0).unwrap();
    assert_eq!(
        kept.committed_blocks.len(),
        bftlog_consensus::MIN_RETAINED_BLOCKS
    );
    assert_eq!(kept.first_height, 3);
    assert_eq!(&kept.committed_blocks[0].entries[0][..], b"entry 14");
    let newest_16: usize = all.committed_blocks[2..]
        .iter()
        .map(bftlog_consensus::entry_bytes)
        .sum();
    let one_more = bftlog_consensus::entry_bytes(&all.committed_blocks[1]);
    let budget = store.recover(1, 100, newest_16 + one_more).unwrap();
    assert_eq!(budget.committed_blocks.len(), 17);
    let short = store.recover(1, 100, newest_16 + one_more - 1).unwrap();
    assert_eq!(short.committed_blocks.len(), 16);
}

#[test]
fn upper_levels_come_from_memory_and_agree_with_storage() {
    let dir = tempdir();
    let path = dir.join("db.redb");
    let mut tree = merkle::MemoryTree::new();
    {
        let mut store = open(&path);
        commit_blocks(&mut store, &mut tree, 7, 300);
    }
    let mut store = open(&path);
    // Extended after the reopen, by commits crossing boundaries of
    // several cached levels.
    commit_blocks(&mut store, &mut tree, 3, 333);
    let size = tree.size();
    assert_eq!(size, 3099);
    {
        let upper = store.upper.read().unwrap();
        assert_eq!(
            upper.levels.len() as u32,
            12 - UPPER_LEVEL,
            "levels UPPER_LEVEL to 11"
        );
        for (row, hashes) in upper.levels.iter().enumerate() {
            let level = UPPER_LEVEL + row as u32;
            assert_eq!(hashes.len() as u64, size >> level);
            for (i, hash) in hashes.iter().enumerate() {
                let position = merkle::stored_hash_index(level, i as u64);
                assert_eq!(*hash, tree.stored()[position as usize]);
            }
        }
    }
    for s in [255, 256, 257, 511, 512, 2048, 2100, size] {
        assert_eq!(
            store.root_at(s).unwrap(),
            merkle::tree_root(s, &tree).unwrap()
        );
        let indexes: Vec<u64> = (0..s).step_by(37).chain([s - 1]).collect();
        let proofs = store.inclusion_proofs(&indexes, s).unwrap();
        for (i, proof) in indexes.into_iter().zip(proofs) {
            assert_eq!(
                proof,
                merkle::prove_inclusion(i, s, &tree).unwrap(),
                "{i} in {s}"
            );
        }
        for old in [1, 255, 256, 1000, s] {
            let old = old.min(s);
            assert_eq!(
                store.consistency_proof(old, s).unwrap(),
                merkle::prove_consistency(old, s, &tree).unwrap()
            );
        }
    }
}

#[test]
fn entries_read_back_from_their_blocks_in_any_range() {
    let dir = tempdir();
    let path = dir.join("db.redb");
    let mut tree = merkle::MemoryTree::new();
    let mut store = open(&path);
    // Blocks of 300, 100, 0 (no row in `block_starts`), 1 and 600
    // entries.
    for per_block in [300, 100, 0, 1, 600] {
        commit_blocks(&mut store, &mut tree, 1, per_block);
    }
    let size = tree.size();
    assert_eq!(size, 1001);
    for (start, count) in [
        (0, 1),
        (255, 2),
        (299, 3),
        (400, 1),
        (0, 1001),
        (990, 50),
        (1000, 1),
        (1001, 5),
    ] {
        let got = store.entries(start, count).unwrap();
        let expected: Vec<String> = (start..(start + count).min(size))
            .map(|i| format!("entry {i}"))
            .collect();
        let got: Vec<String> = got
            .iter()
            .map(|e| String::from_utf8(e.to_vec()).unwrap())
            .collect();
        assert_eq!(got, expected, "entries({start}, {count})");
    }
    let blocks = store.committed_blocks(1, 5).unwrap();
    let counts: Vec<usize> = blocks.iter().map(|b| b.entries.len()).collect();
    assert_eq!(counts, [300, 100, 0, 1, 600]);
    assert_eq!(&blocks[4].entries[599][..], b"entry 1000");
}

#[test]
fn block_runs_fit_a_page_unless_one_entry_is_larger() {
    let dir = tempdir();
    let mut store = open(&dir.join("db.redb"));
    let mut tree = merkle::MemoryTree::new();
    // 256-byte entries fill a page; a 65,535-byte entry (the largest)
    // must still get a row of its own.
    let sizes: Vec<usize> = (0..600)
        .map(|i| if i == 100 { 65_535 } else { 256 })
        .collect();
    let payloads: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let mut p = vec![(i % 251) as u8; n];
            p[..8].copy_from_slice(&(i as u64).to_be_bytes());
            p
        })
        .collect();
    let refs: Vec<&[u8]> = payloads.iter().map(|p| p.as_slice()).collect();
    let commit = committed(&mut tree, 1, Hash([0; 32]), &refs);
    store
        .write(&WriteBatch {
            commits: vec![commit],
            ..Default::default()
        })
        .unwrap();
    let read = store.db.begin_read().unwrap();
    let parts = read.open_table(BLOCK_PARTS).unwrap();
    let mut numbers = Vec::new();
    for row in parts.iter().unwrap() {
        let (key, bytes) = row.unwrap();
        let part = key.value().2;
        let len = bytes.value().len();
        assert!(
            len <= BLOCK_PART_BYTES || part == 101,
            "part {part} has {len} bytes"
        );
        numbers.push(part);
    }
    // The header; 100 entries; the big one alone; then 251 entries of
    // 260 bytes fill a page.
    assert_eq!(numbers, [0, 1, 101, 102, 353]);
    let got = store.entries(0, 600).unwrap();
    let got: Vec<Vec<u8>> = got.iter().map(|e| e.to_vec()).collect();
    assert_eq!(got, payloads);
    assert_eq!(store.entries(99, 3).unwrap()[1].len(), 65_535);
    assert_eq!(store.entries(352, 2).unwrap()[1][..8], 353u64.to_be_bytes());
    // Within a byte budget: entries stop before it is passed, and the
    // first always comes, however large.
    let sizes = |start, count, max| -> Vec<usize> {
        let got = store.entries_within(start, count, max).unwrap();
        got.iter().map(|e| e.len()).collect()
    };
    assert_eq!(sizes(98, 3, 1000), [256, 256]);
    assert_eq!(sizes(100, 5, 10), [65_535]);
    let small = payloads[0].len();
    assert_eq!(sizes(0, 600, 10 * small), vec![small; 10]);
    assert_eq!(sizes(0, 600, usize::MAX).len(), payloads.len());
    assert_eq!(sizes(590, 20, usize::MAX).len(), 10);
}

#[test]
fn an_entry_committed_twice_keeps_its_first_index() {
    let dir = tempdir();
    let mut store = open(&dir.join("db.redb"));
    let mut tree = merkle::MemoryTree::new();
    // Block 1 holds "a" at 1 and again at 3; block 2 (same step) at 0.
    let mut commits = Vec::new();
    let mut parent = Hash([0; 32]);
    for (height, payloads) in [(1u64, vec!["x", "a", "y", "a"]), (2, vec!["a"])] {
        let refs: Vec<&[u8]> = payloads.iter().map(|p| p.as_bytes()).collect();
        let commit = committed(&mut tree, height, parent, &refs);
        parent = commit.block_id;
        commits.push(commit);
    }
    store
        .write(&WriteBatch {
            commits,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(store.index_of(&merkle::leaf_hash(b"a")).unwrap(), Some(1));
    assert_eq!(store.index_of(&merkle::leaf_hash(b"y")).unwrap(), Some(2));
    assert_eq!(store.index_of(&merkle::leaf_hash(b"z")).unwrap(), None);
    assert_eq!(store.entries(4, 1).unwrap()[0][..], *b"a");
}

#[test]
fn the_leaf_index_writes_frozen_levels_as_runs_in_slices_and_rebuilds_memory_on_open() {
    let dir = tempdir();
    let path = dir.join("db.redb");
    let mut tree = merkle::MemoryTree::new();
    let small = |mut store: StoreWriter| {
        let tuned = Arc::get_mut(&mut store.store).expect("not shared yet");
        tuned.recent_limit = 50;
        tuned.merge_step_min = 4;
        tuned.leaf_row = 2;
        tuned.background_sort = false;
        store
    };
    let stored_rows = |store: &Store| {
        let read = store.db.begin_read().unwrap();
        let table = read.open_table(LEAF_RUNS).unwrap();
        table
            .iter()
            .unwrap()
            .map(|row| row.unwrap().0.value())
            .collect::<Vec<(u64, u64)>>()
    };
    let mut store = small(open(&path));
    let indexed = |store: &Store| {
        let read = store.db.begin_read().unwrap();
        let meta = read.open_table(META).unwrap();
        meta.get(META_LEAF_INDEXED).unwrap().map(|v| v.value())
    };
    let levels = |store: &Store| {
        let r = store.recent.read().unwrap();
        (r.active.len(), r.merging.len(), r.merged)
    };
    let leaves = |n: u64| -> Vec<Hash> {
        (0..n)
            .map(|i| merkle::leaf_hash(format!("entry {i}").as_bytes()))
            .collect()
    };
    let all_found = |store: &Store, n: u64| {
        let expected: Vec<Option<u64>> = (0..n).map(Some).collect();
        assert_eq!(store.indexes_of(&leaves(n)).unwrap(), expected);
        let next = merkle::leaf_hash(format!("entry {n}").as_bytes());
        assert_eq!(store.index_of(&next).unwrap(), None);
    };
    // Blocks of 9: the sixth fills the memory level (54 ≥ 50), which
    // freezes; the seventh writes 2 × 9 of its 54 leaves (9 rows of
    // run 0).
    commit_blocks(&mut store, &mut tree, 7, 9);
    assert_eq!(indexed(&store), None);
    assert_eq!(levels(&store), (9, 54, 18));
    assert_eq!(
        stored_rows(&store),
        (0..9).map(|r| (0, r)).collect::<Vec<_>>()
    );
    all_found(&store, 63);
    // Reopened mid-run: the incomplete run's rows go and everything
    // beyond `leaf_indexed_size` (0) is rebuilt into memory.
    drop(store);
    let mut store = small(open(&path));
    assert_eq!(levels(&store), (63, 0, 0));
    assert_eq!(stored_rows(&store), []);
    all_found(&store, 63);
    // The next block freezes all 72; four more merge them (18 each).
    commit_blocks(&mut store, &mut tree, 1, 9);
    assert_eq!(levels(&store), (0, 72, 0));
    for (k, merged) in [(1, 18), (2, 36), (3, 54)] {
        commit_blocks(&mut store, &mut tree, 1, 9);
        assert_eq!(levels(&store), (9 * k, 72, merged));
        assert_eq!(indexed(&store), None);
        all_found(&store, 72 + 9 * k as u64);
    }
    commit_blocks(&mut store, &mut tree, 1, 9);
    assert_eq!(indexed(&store), Some(72));
    assert_eq!(levels(&store), (36, 0, 0));
    assert_eq!(stored_rows(&store).len(), 36);
    all_found(&store, 108);
    // An entry committed again keeps its first index, whichever level
    // holds it: run 0 (5), or memory (100).
    let height = store.committed_height().unwrap() + 1;
    let again = committed(
        &mut tree,
        height,
        Hash([0; 32]),
        &[b"entry 5", b"entry 100"],
    );
    store
        .write(&WriteBatch {
            commits: vec![again],
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        store.index_of(&merkle::leaf_hash(b"entry 5")).unwrap(),
        Some(5)
    );
    assert_eq!(
        store.index_of(&merkle::leaf_hash(b"entry 100")).unwrap(),
        Some(100)
    );
    drop(store);
    let mut store = small(open(&path));
    // Indexes 72..110 hold 37 distinct leaves ("entry 100" twice).
    assert_eq!(levels(&store), (37, 0, 0));
    all_found(&store, 108);
    assert_eq!(
        store.index_of(&merkle::leaf_hash(b"entry 100")).unwrap(),
        Some(100)
    );
    // Blocks until the memory level (with the second "entry 5", at
    // 108) is written as run 1: "entry 5" is then in both runs and
    // keeps its first index, before and after a reopen.
    while indexed(&store) == Some(72) {
        commit_blocks(&mut store, &mut tree, 1, 9);
    }
    let size = tree.size();
    let probe: Vec<Hash> = [5, 100, 110, size - 1, size]
        .iter()
        .map(|i| merkle::leaf_hash(format!("entry {i}").as_bytes()))
        .collect();
    let expected = [Some(5), Some(100), Some(110), Some(size - 1), None];
    assert_eq!(store.recent.read().unwrap().runs.len(), 2);
    assert_eq!(store.indexes_of(&probe).unwrap(), expected);
    drop(store);
    let store = small(open(&path));
    assert_eq!(store.recent.read().unwrap().runs.len(), 2);
    assert_eq!(store.indexes_of(&probe).unwrap(), expected);
}

#[test]
fn a_level_sorted_in_the_background_becomes_a_run() {
    let dir = tempdir();
    let mut store = open(&dir.join("db.redb"));
    let tuned = Arc::get_mut(&mut store.store).expect("not shared yet");
    tuned.recent_limit = 500;
    tuned.merge_step_min = 4;
    tuned.leaf_row = 8;
    let mut tree = merkle::MemoryTree::new();
    let leaves = |n: u64| -> Vec<Hash> {
        (0..n)
            .map(|i| merkle::leaf_hash(format!("entry {i}").as_bytes()))
            .collect()
    };
    // Every committed leaf is found at its index, and the next is not.
    let all_found = |store: &Store, n: u64| {
        let mut expected: Vec<Option<u64>> = (0..n).map(Some).collect();
        expected.push(None);
        assert_eq!(store.indexes_of(&leaves(n + 1)).unwrap(), expected);
    };
    // Blocks of 50: the tenth freezes 500 leaves.
    commit_blocks(&mut store, &mut tree, 10, 50);
    let mut steps = 0;
    while store.recent.read().unwrap().runs.is_empty() {
        let n = tree.size();
        let expected: Vec<Option<u64>> = (0..n).map(Some).collect();
        assert_eq!(store.indexes_of(&leaves(n)).unwrap(), expected);
        commit_blocks(&mut store, &mut tree, 1, 5);
        steps += 1;
        assert!(steps < 1000, "the run was never written");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let n = tree.size();
    all_found(&store, n);
    {
        let r = store.recent.read().unwrap();
        assert!(r.sorting.is_none() && r.merging.is_empty());
        assert_eq!(r.runs[0].fences.len(), 500 / 8 + 1);
        // The frozen level's map waits, emptied, for the next level,
        // and the level after the freeze started at the frozen size.
        let spare = r.spare.as_ref().expect("the frozen level's map is kept");
        assert!(spare.is_empty() && spare.capacity() >= 500);
        assert!(r.active.capacity() >= 500);
        assert_eq!(r.active.len() as u64, n - 500);
    }
    // The next level lives in the recycled map: it holds only its own
    // leaves, and every level still answers.
    let mut steps = 0;
    while store.recent.read().unwrap().runs.len() < 2 {
        commit_blocks(&mut store, &mut tree, 1, 50);
        steps += 1;
        assert!(steps < 1000, "the second run was never written");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let n = tree.size();
    all_found(&store, n);
    let r = store.recent.read().unwrap();
    assert!(r.active.len() < 500);
    assert!(r.spare.as_ref().is_some_and(|m| m.is_empty()));
}

#[test]
fn a_run_finds_each_of_its_leaves_in_one_row_and_no_other_leaf() {
    let mut sorted: Vec<(Hash, u64)> = (0..2000u64)
        .map(|i| (merkle::leaf_hash(&i.to_be_bytes()), i))
        .collect();
    sorted.sort_unstable();
    let run = LeafRun::new(7, &sorted, LEAF_ROW);
    let rows: Vec<Vec<u8>> = sorted
        .chunks(LEAF_ROW)
        .map(|row| {
            row.iter()
                .flat_map(|(leaf, index)| leaf.0.into_iter().chain(index.to_be_bytes()))
                .collect()
        })
        .collect();
    assert_eq!(rows.len(), 2000usize.div_ceil(LEAF_ROW));
    for (leaf, index) in &sorted {
        let row = run.row_for(leaf).expect("a member passes the filter");
        assert_eq!(
            find_in_row(&rows[row as usize], leaf).unwrap(),
            Some(*index)
        );
    }
    let mut passed = 0;
    for i in 2000..12_000u64 {
        let absent = merkle::leaf_hash(&i.to_be_bytes());
        if let Some(row) = run.row_for(&absent) {
            passed += 1;
            assert_eq!(find_in_row(&rows[row as usize], &absent).unwrap(), None);
        }
    }
    // 16 bits and 8 probes in one block per leaf: about 0.1-0.2%.
    assert!(
        passed < 60,
        "{passed} of 10,000 absent leaves passed the filter"
    );
    assert!(matches!(
        find_in_row(&rows[0][..39], &sorted[0].0),
        Err(StoreError::Corrupt(_))
    ));
}

/// Writes `blocks` as voted, with the genesis safety state.
fn vote(store: &mut StoreWriter, blocks: &[&Block]) {
    store
        .write(&WriteBatch {
            safety: Some(SafetyState::genesis(1)),
            voted_blocks: blocks
                .iter()
                .map(|b| {
                    let id = bftlog_consensus::crypto::block_id(b);
                    (id, std::sync::Arc::new((*b).clone()))
                })
                .collect(),
            ..Default::default()
        })
        .unwrap();
}

/// A voted block larger than a page is stored in runs and comes back
/// whole, in round order with the blocks around it; a lost run is
/// corruption, not a shorter block.
#[test]
fn voted_blocks_are_stored_in_runs_and_reassembled() {
    let dir = tempdir();
    let path = dir.join("db.redb");
    let entry = vec![7u8; 256];
    let entries: Vec<&[u8]> = vec![entry.as_slice(); 700];
    let big = block(5, Hash([2; 32]), &entries);
    let small_before = block(4, Hash([1; 32]), &[b"a"]);
    let small_after = block(6, Hash([3; 32]), &[b"b"]);
    let id = |b: &Block| bftlog_consensus::crypto::block_id(b);
    let big_id = id(&big);
    {
        let mut store = open(&path);
        vote(&mut store, &[&small_after, &big, &small_before]);
        let read = store.db.begin_read().unwrap();
        let table = read.open_table(BLOCK_PARTS).unwrap();
        // Headers, and runs of 251 + 251 + 198 entries and of one.
        assert_eq!(table.len().unwrap(), 3 + 3 + 2);
    }
    let store = open(&path);
    let recovered = store.recover(1, 100, usize::MAX).unwrap();
    assert_eq!(
        recovered.voted_blocks,
        vec![small_before.clone(), big.clone(), small_after.clone()]
    );
    // Remove a middle run: recovery must refuse, not decode a prefix.
    let txn = store.db.begin_write().unwrap();
    txn.open_table(BLOCK_PARTS)
        .unwrap()
        .remove((5, big_id.0, 252))
        .unwrap()
        .expect("the second run starts at entry 251");
    txn.commit().unwrap();
    assert!(matches!(
        store.recover(1, 100, usize::MAX),
        Err(StoreError::Corrupt(_))
    ));
}

/// A voted block that commits keeps the rows its vote wrote (the
/// commit writes no entries); a voted block its round's commit passed
/// by goes; one of a later round stays voted.
#[test]
fn a_voted_block_is_written_once_and_read_from_its_vote_after_commit() {
    let dir = tempdir();
    let path = dir.join("db.redb");
    let mut tree = merkle::MemoryTree::new();
    let commit = committed(&mut tree, 1, Hash([0; 32]), &[b"one", b"two"]);
    let fork = block(1, Hash([9; 32]), &[b"fork"]);
    let later = block(3, commit.block_id, &[b"later"]);
    let id = |b: &Block| bftlog_consensus::crypto::block_id(b);
    let mut store = open(&path);
    vote(&mut store, &[commit.block.as_ref(), &fork, &later]);
    // Change the voted run in place: if the commit wrote the block's
    // entries again, the change would be undone.
    let txn = store.db.begin_write().unwrap();
    let mut marked = Vec::new();
    for entry in [&b"ONE"[..], b"TWO"] {
        marked.extend_from_slice(&(entry.len() as u32).to_be_bytes());
        marked.extend_from_slice(entry);
    }
    txn.open_table(BLOCK_PARTS)
        .unwrap()
        .insert((1, commit.block_id.0, 1), marked.as_slice())
        .unwrap()
        .expect("the vote wrote the run");
    txn.commit().unwrap();
    store
        .write(&WriteBatch {
            commits: vec![commit.clone()],
            ..Default::default()
        })
        .unwrap();
    drop(store);
    let store = open(&path);
    let texts =
        |entries: Vec<Entry>| -> Vec<Vec<u8>> { entries.iter().map(|e| e.to_vec()).collect() };
    assert_eq!(texts(store.entries(0, 2).unwrap()), [b"ONE", b"TWO"]);
    let recovered = store.recover(1, 100, usize::MAX).unwrap();
    assert_eq!(recovered.voted_blocks, vec![later.clone()]);
    assert_eq!(recovered.committed_blocks.len(), 1);
    let read = store.db.begin_read().unwrap();
    let parts = read.open_table(BLOCK_PARTS).unwrap();
    let fork_id = id(&fork).0;
    assert!(
        parts
            .range((1, fork_id, 0)..=(1, fork_id, u32::MAX))
            .unwrap()
            .next()
            .is_none(),
        "the settled fork's rows are gone"
    );
    let voted: Vec<_> = read
        .open_table(VOTED)
        .unwrap()
        .iter()
        .unwrap()
        .map(|row| row.unwrap().0.value())
        .collect();
    assert_eq!(voted, [(3, id(&later).0)]);
}

/// A committed block whose runs are gone is corruption, never a
/// shorter log or a shorter block.
#[test]
fn a_committed_block_without_its_runs_is_corruption() {
    let dir = tempdir();
    let mut tree = merkle::MemoryTree::new();
    let mut store = open(&dir.join("db.redb"));
    commit_blocks(&mut store, &mut tree, 2, 3);
    let second = store.committed_blocks(2, 1).unwrap().remove(0);
    let second_id = bftlog_consensus::crypto::block_id(&second);
    let txn = store.db.begin_write().unwrap();
    txn.open_table(BLOCK_PARTS)
        .unwrap()
        .remove((2, second_id.0, 1))
        .unwrap()
        .expect("the run exists");
    txn.commit().unwrap();
    assert_eq!(store.entries(0, 3).unwrap().len(), 3);
    for (start, count) in [(0, 6), (4, 1), (5, 10)] {
        assert!(
            matches!(
                store.entries(start, count),
                Err(ReadError::Store(StoreError::Corrupt(_)))
            ),
            "entries({start}, {count})"
        );
    }
    assert!(matches!(
        store.committed_blocks(1, 2),
        Err(StoreError::Corrupt(_))
    ));
}

/// Rewrites `store` as layout 4 kept it: committed entries in
/// `entry_runs` (a row per entry, a valid layout 4 run), voted blocks
/// CBOR-encoded in `voted_parts`.
/// A database of another layout (an older one, which is not migrated,
/// or none recorded) is refused with the layout it has, and left as it
/// was.
#[test]
fn a_database_of_another_layout_is_refused() {
    let dir = tempdir();
    let path = dir.join("db.redb");
    let mut tree = merkle::MemoryTree::new();
    {
        let mut store = open(&path);
        commit_blocks(&mut store, &mut tree, 1, 3);
    }
    for stored in [None, Some(2), Some(4), Some(5), Some(SCHEMA_VERSION + 1)] {
        {
            let store = open_raw(&path);
            let txn = store.begin_write().unwrap();
            {
                let mut meta = txn.open_table(META).unwrap();
                match stored {
                    Some(v) => meta.insert(META_SCHEMA, v).unwrap(),
                    None => meta.remove(META_SCHEMA).unwrap(),
                };
            }
            txn.commit().unwrap();
        }
        let refused = Store::open(&path, 1, TEST_CACHE_BYTES).err();
        assert!(
            matches!(&refused, Some(StoreError::SchemaMismatch { stored: s }) if *s == stored),
            "layout {stored:?}: {refused:?}"
        );
        let message = refused.unwrap().to_string();
        assert!(message.contains("empty data directory"), "{message}");
    }
}

/// A data directory written by the previous storage engine major is
/// refused with a message that says what to do, and left untouched.
#[test]
fn a_database_in_an_older_file_format_is_refused_with_a_clear_message() {
    let dir = tempdir();
    let path = dir.join("db.redb");
    {
        let old = redb2::Database::create(&path).unwrap();
        let txn = old.begin_write().unwrap();
        txn.open_table(redb2::TableDefinition::<&str, u64>::new("meta"))
            .unwrap()
            .insert("tree_size", 7)
            .unwrap();
        txn.commit().unwrap();
    }
    let before = std::fs::read(&path).unwrap();
    let refused = Store::open(&path, 1, TEST_CACHE_BYTES).err();
    assert!(
        matches!(refused, Some(StoreError::OldFileFormat { .. })),
        "{refused:?}"
    );
    let message = refused.unwrap().to_string();
    assert!(message.contains("older bftlog"), "{message}");
    assert!(message.contains("empty"), "{message}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "the file is left as it was"
    );
}

#[test]
fn safety_state_voted_blocks_and_checkpoints_round_trip() {
    let dir = tempdir();
    let path = dir.join("db.redb");
    let mut tree = merkle::MemoryTree::new();
    let mut store = open(&path);
    commit_blocks(&mut store, &mut tree, 2, 2);
    let mut safety = SafetyState::genesis(1);
    safety.last_voted_round = 9;
    safety.last_signed = Some((4, tree.root()));
    let voted = block(7, Hash([1; 32]), &[b"x"]);
    let stale = block(1, Hash([1; 32]), &[b"y"]);
    store
        .write(&WriteBatch {
            safety: Some(safety.clone()),
            voted_blocks: [voted.clone(), stale]
                .into_iter()
                .map(|b| {
                    (
                        bftlog_consensus::crypto::block_id(&b),
                        std::sync::Arc::new(b),
                    )
                })
                .collect(),
            checkpoints: vec![(4, "note".into())],
            ..Default::default()
        })
        .unwrap();
    // A later commit (round 3) settles the stale voted block only.
    commit_blocks(&mut store, &mut tree, 1, 1);
    drop(store);
    let store = open(&path);
    let recovered = store.recover(1, 100, usize::MAX).unwrap();
    assert_eq!(recovered.safety, safety);
    assert_eq!(recovered.voted_blocks, vec![voted]);
    assert_eq!(store.latest_checkpoint().unwrap(), Some((4, "note".into())));
    drop(store);
    assert!(matches!(
        Store::open(&path, 2, TEST_CACHE_BYTES),
        Err(StoreError::EpochMismatch { .. })
    ));
}

pub(super) fn tempdir() -> crate::test_dir::TestDir {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    crate::test_dir::TestDir::new(&format!(
        "store-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ))
}
