//! [`StoreWriter`]: the one writer of a replica's database, owned by the
//! core loop. Each [`StoreWriter::write`] is one transaction made of a
//! stage per group of tables: voted blocks, commits (blocks, hashes, the
//! leaf index), safety state, quorum checkpoints.

use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bftlog_consensus::threshold::NonceSecret;
use bftlog_consensus::{Committed, Recovered, SafetyState, SentShare};
use bftlog_spec::merkle::{CompactRange, Hash, stored_hash_count};

use super::hashes::TxnHashes;
use bftlog_spec::wire::{self, Block};
use redb::Durability;

use super::blocks::{BlockRecord, put_block, put_voted, read_blocks, read_voted};
use super::hashes::{UPPER_LEVEL, write_hashes};
use super::leaf_index::{LEAF_PAIR, LeafRun, SortedLevel, push_pair};
use super::*;

/// What one driver step makes durable, in one transaction.
#[derive(Default)]
pub struct WriteBatch {
    pub commits: Vec<Committed>,
    pub safety: Option<SafetyState>,
    /// Voted blocks with their ids (as the core computed them).
    pub voted_blocks: Vec<(Hash, std::sync::Arc<Block>)>,
    /// Quorum checkpoints: (size, note text).
    pub checkpoints: Vec<(u64, String)>,
    /// Fresh cluster-key nonces by height (secret: only this replica
    /// reads them back, after a restart).
    pub nonces: Vec<(u64, NonceSecret)>,
}

impl WriteBatch {
    pub fn is_empty(&self) -> bool {
        self.commits.is_empty()
            && self.safety.is_none()
            && self.voted_blocks.is_empty()
            && self.checkpoints.is_empty()
            && self.nonces.is_empty()
    }

    /// Whether the write must be flushed before the step's messages leave:
    /// it holds the consensus safety state or blocks this replica voted
    /// for. Commits and quorum checkpoints alone need not be (see
    /// [`Store::write`]).
    pub fn needs_flush(&self) -> bool {
        self.safety.is_some() || !self.voted_blocks.is_empty() || !self.nonces.is_empty()
    }
}

/// Buffers one [`Store::write`] fills and the next reuses: fresh ones per
/// write faulted in new pages every time (the kernel zeroing them was
/// about 3% of a follower's CPU in a DWARF profile). They keep
/// the size of the largest write: a few MB for a sync step of 100,000
/// entries.
#[derive(Default)]
struct WriteScratch {
    /// One `block_parts` row being built.
    row: Vec<u8>,
    /// Stored hashes the step's commits append, in stored-hash order.
    hashes: Vec<Hash>,
    /// (leaf hash, index) of each entry the step commits.
    leaves: Vec<(Hash, u64)>,
    /// (level, index, hash) of the stored hashes of levels ≥
    /// [`UPPER_LEVEL`] the step adds, for [`UpperHashes`].
    upper: Vec<(u32, u64, Hash)>,
}

impl WriteScratch {
    fn clear(&mut self) {
        self.hashes.clear();
        self.leaves.clear();
        self.upper.clear();
    }
}

/// What a write did to the leaf index, applied to memory once its
/// transaction commits.
#[derive(Default)]
struct LeafIndexStep {
    /// Set when this step wrote a frozen level's last row: the run it
    /// becomes.
    completed: Option<LeafRun>,
    /// The tree size at which the memory level freezes after this step.
    freeze: Option<u64>,
    /// How much of the frozen level is written after this step.
    merged_to: usize,
}

/// The database's one writer. It owns the committed size and the write
/// buffers, so writing takes no lock but the leaf index's and the hash
/// cache's, which readers share; reads go through [`Deref`] to the
/// [`Store`].
pub struct StoreWriter {
    pub(super) store: Arc<Store>,
    /// Entries committed (the tree size written last).
    size: u64,
    scratch: WriteScratch,
}

impl Deref for StoreWriter {
    type Target = Store;

    fn deref(&self) -> &Store {
        &self.store
    }
}

impl StoreWriter {
    pub(super) fn new(store: Arc<Store>, size: u64) -> Self {
        StoreWriter {
            store,
            size,
            scratch: WriteScratch::default(),
        }
    }

    /// The read side, for the tasks that answer reads.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// What the consensus core needs to restart: its safety state, the
    /// committed tree, the newest committed blocks (at most `retain`, and
    /// beyond 16 of them at most `retain_bytes` of entries) and the voted
    /// blocks not yet committed.
    pub fn recover(
        &self,
        epoch: u64,
        retain: usize,
        retain_bytes: usize,
    ) -> Result<Recovered, StoreError> {
        let read = self.store.db.begin_read()?;
        let mut recovered = Recovered::fresh(epoch);
        if let Some(bytes) = read.open_table(SAFETY)?.get(0u8)? {
            let record: SafetyRecord = decode(bytes.value(), "safety state")?;
            recovered.safety = SafetyState {
                last_voted_round: record.last_voted_round,
                last_vote_round: record.last_vote_round,
                high_qc: record.high_qc,
                high_tc: record.high_tc,
                last_signed: record.last_signed,
                last_share: record.last_share.map(SentShare::from),
            };
        }
        recovered.tree = CompactRange::from_storage(self.size, &TxnHashes::new(&read)?)?;
        let height = read
            .open_table(META)?
            .get(META_HEIGHT)?
            .map_or(0, |v| v.value());
        if height > 0 {
            // Newest first, one block at a time, so a restart never holds
            // more than the window it keeps.
            let mut newest_first = Vec::new();
            let mut bytes = 0;
            let mut next = height;
            while next >= 1 && newest_first.len() < retain {
                let block = read_blocks(&read, next, 1)?
                    .pop()
                    .ok_or_else(|| StoreError::Corrupt(format!("block {next} missing")))?;
                let size = bftlog_consensus::entry_bytes(&block);
                if newest_first.len() >= bftlog_consensus::MIN_RETAINED_BLOCKS
                    && bytes + size > retain_bytes
                {
                    break;
                }
                bytes += size;
                newest_first.push(block);
                next -= 1;
            }
            // The checkpoints of the last heights with entries, for the
            // cluster signature's recovery.
            let hashes = TxnHashes::new(&read)?;
            let mut size = self.size;
            let lag_floor =
                height.saturating_sub(bftlog_consensus::threshold::RECOVERY_WINDOW_HEIGHTS);
            for (i, block) in newest_first.iter().enumerate() {
                let block_height = height - i as u64;
                if block_height <= lag_floor {
                    break;
                }
                if !block.entries.is_empty() {
                    let root = CompactRange::from_storage(size, &hashes)?.root();
                    recovered
                        .recent_checkpoints
                        .push((block_height, size, root));
                    size -= block.entries.len() as u64;
                }
            }
            newest_first.reverse();
            recovered.first_height = next + 1;
            recovered.committed_blocks = newest_first;
        }
        recovered.voted_blocks = read_voted(&read)?;
        recovered.nonces = read_nonces(&read)?;
        Ok(recovered)
    }

    /// Makes every earlier write durable (an empty durable commit): for a
    /// clean shutdown after a checkpoints-only write.
    pub fn sync(&mut self) -> Result<(), StoreError> {
        let mut txn = self.store.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        txn.commit()?;
        Ok(())
    }

    /// Writes one driver step in one transaction. It is flushed when it
    /// holds safety state or voted blocks ([`WriteBatch::needs_flush`]).
    /// A step of commits and quorum checkpoints only is committed (readers
    /// see it at once) and becomes durable with the next flushed write,
    /// saving a flush: at light load, the commit of a round that certified
    /// no entries. Losing it in a crash loses nothing that matters:
    /// - a commit follows from certificates the replica and its peers
    ///   hold; after a restart the replica commits those blocks again
    ///   (their voted copies are deleted in the same transaction as the
    ///   commit, so they come back with it) or fetches them by sync;
    /// - a checkpoint signature is safety state, so the commits it covers
    ///   are flushed with it, before it is sent;
    /// - a quorum checkpoint's 2f+1 signers each made its entries and
    ///   their signature durable before signing, and the note is only a
    ///   cache of their signatures (it verifies wherever it was sent).
    pub fn write(&mut self, batch: &WriteBatch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut size = self.size;
        let mut txn = self.store.db.begin_write()?;
        txn.set_durability(if batch.needs_flush() {
            Durability::Immediate
        } else {
            Durability::None
        })?;
        self.scratch.clear();
        let mut leaf_index = LeafIndexStep::default();
        // Voted blocks before the commits: a block voted and committed in
        // one step is then written once, by its vote.
        self.write_voted(&txn, &batch.voted_blocks)?;
        if !batch.commits.is_empty() {
            size = self.write_commits(&txn, &batch.commits)?;
            leaf_index = self.write_leaf_index(&txn, size)?;
        }
        let committed_height = batch.commits.last().map(|c| c.height);
        write_nonces(&txn, &batch.nonces, batch.safety.as_ref(), committed_height)?;
        if let Some(state) = &batch.safety {
            write_safety(&txn, state)?;
        }
        write_checkpoints(&txn, &batch.checkpoints, size)?;
        txn.commit()?;
        self.size = size;
        self.store.committed_size.store(size, Ordering::Release);
        if !batch.commits.is_empty() {
            self.remember_committed(leaf_index);
        }
        Ok(())
    }

    fn write_voted(
        &mut self,
        txn: &redb::WriteTransaction,
        voted_blocks: &[(Hash, Arc<Block>)],
    ) -> Result<(), StoreError> {
        if voted_blocks.is_empty() {
            return Ok(());
        }
        let mut parts = txn.open_table(BLOCK_PARTS)?;
        let mut voted = txn.open_table(VOTED)?;
        for (id, block) in voted_blocks {
            put_voted(&mut parts, &mut voted, id, block, &mut self.scratch.row)?;
        }
        Ok(())
    }

    /// The committed blocks' rows, their stored hashes and the tree size
    /// and height; the voted blocks the commits settle go. Returns the
    /// tree size after them.
    ///
    /// The tree is computed once, by the consensus core, which signs its
    /// root: the stored hashes are written as the core computed them, and
    /// only their shape is checked here (the count each leaf adds, and
    /// that each leaf's own hash comes first).
    fn write_commits(
        &mut self,
        txn: &redb::WriteTransaction,
        commits: &[Committed],
    ) -> Result<u64, StoreError> {
        let scratch = &mut self.scratch;
        let mut meta = txn.open_table(META)?;
        let mut parts = txn.open_table(BLOCK_PARTS)?;
        let mut voted = txn.open_table(VOTED)?;
        let mut starts = txn.open_table(BLOCK_STARTS)?;
        let mut chunks = txn.open_table(HASH_CHUNKS)?;
        let mut blocks = txn.open_table(BLOCKS)?;
        let first_stored = stored_hash_count(self.size);
        let mut size = self.size;
        let mut max_round = 0;
        for commit in commits {
            assert_eq!(
                commit.first_index, size,
                "commits must extend the stored tree"
            );
            assert_eq!(
                commit.leaves.len(),
                commit.block.entries.len(),
                "one leaf hash per entry"
            );
            assert_eq!(
                commit.size,
                size + commit.leaves.len() as u64,
                "committed size mismatch"
            );
            assert_eq!(
                commit.stored_hashes.len() as u64,
                stored_hash_count(commit.size) - stored_hash_count(size),
                "stored hashes of a commit"
            );
            let mut stored = commit.stored_hashes.as_slice();
            for &leaf in &commit.leaves {
                // A leaf stores its own hash and one per subtree it
                // completes: one per trailing one bit of its index.
                let count = 1 + size.trailing_ones() as usize;
                let (own, rest) = stored.split_at(count);
                assert_eq!(own[0], leaf, "a leaf's stored hashes start with its hash");
                for (level, hash) in own.iter().enumerate().skip(UPPER_LEVEL as usize) {
                    let level = level as u32;
                    scratch.upper.push((level, size >> level, *hash));
                }
                scratch.leaves.push((leaf, size));
                stored = rest;
                size += 1;
            }
            scratch.hashes.extend_from_slice(&commit.stored_hashes);
            // The entries stay where this replica's vote wrote them; a
            // block it did not vote for (a sync, a proposal it was too
            // late for) is written now.
            let round = commit.block.round;
            if voted.remove((round, commit.block_id.0))?.is_none() {
                put_block(
                    &mut parts,
                    &commit.block_id,
                    &commit.block,
                    &mut scratch.row,
                )?;
            }
            let count = commit.block.entries.len() as u64;
            if count > 0 {
                starts.insert(commit.first_index, (round, commit.block_id.0, count))?;
            }
            let record = BlockRecord {
                header: bftlog_consensus::crypto::header_of(&commit.block),
                first_index: commit.first_index,
                entry_count: count,
            };
            blocks.insert(commit.height, wire::encode(&record).as_slice())?;
            meta.insert(META_HEIGHT, commit.height)?;
            max_round = max_round.max(commit.block.round);
        }
        write_hashes(&mut chunks, first_stored, &scratch.hashes)?;
        meta.insert(META_TREE_SIZE, size)?;
        // Voted blocks at or below the committed round that did not commit
        // never will (they conflict with the committed chain): their rows
        // go. Committed ones left `voted` above, and none comes back: a
        // replica votes only in its current round, which is past a block's
        // round once a certificate commits it.
        let mut settled = Vec::new();
        voted.retain_in(..=(max_round, [0xff; 32]), |key, _| {
            settled.push(key);
            false
        })?;
        for (round, id) in settled {
            parts.retain_in((round, id, 0)..=(round, id, u32::MAX), |_, _| false)?;
        }
        Ok(size)
    }

    /// The leaf index's share of a commit. The memory level takes the new
    /// leaves; when they would overflow it, it is frozen, sorted off this
    /// thread, and written out as a run a slice per commit, at least twice
    /// as fast as leaves arrive, so neither sorting nor writing a run
    /// stalls a commit.
    fn write_leaf_index(
        &mut self,
        txn: &redb::WriteTransaction,
        tree_size: u64,
    ) -> Result<LeafIndexStep, StoreError> {
        let store = &*self.store;
        let new_leaves = self.scratch.leaves.len();
        let (freezing, sorting) = {
            let recent = store.recent.read().expect("leaf lock");
            (
                recent.active.len() + new_leaves >= store.recent_limit,
                recent.sorting.is_some(),
            )
        };
        if sorting {
            store
                .recent
                .write()
                .expect("leaf lock")
                .adopt_sorted(freezing);
        }
        let recent = store.recent.read().expect("leaf lock");
        let mut step = LeafIndexStep {
            merged_to: recent.merged,
            ..LeafIndexStep::default()
        };
        if !recent.merging.is_empty() {
            let slice = (2 * new_leaves).max(store.merge_step_min);
            // Slices end on row boundaries (but for the last).
            step.merged_to = (recent.merged + slice)
                .next_multiple_of(store.leaf_row)
                .min(recent.merging.len());
        }
        if freezing {
            // The previous frozen level, if still being written, goes in
            // whole; the memory level plus these leaves freeze once this
            // transaction commits.
            step.merged_to = recent.merging.len();
            step.freeze = Some(tree_size);
        }
        if !recent.merging.is_empty() {
            let mut meta = txn.open_table(META)?;
            let mut leaf_runs = txn.open_table(LEAF_RUNS)?;
            let run = recent.runs.len() as u64;
            let rows = recent.merging[recent.merged..step.merged_to].chunks(store.leaf_row);
            let mut bytes = Vec::with_capacity(store.leaf_row * LEAF_PAIR);
            for (k, row) in rows.enumerate() {
                bytes.clear();
                for (leaf, index) in row {
                    push_pair(&mut bytes, leaf, *index);
                }
                let row_number = (recent.merged / store.leaf_row + k) as u64;
                leaf_runs.insert((run, row_number), bytes.as_slice())?;
            }
            if step.merged_to == recent.merging.len() {
                meta.insert(META_LEAF_RUNS, run + 1)?;
                meta.insert(META_LEAF_INDEXED, recent.merging_end)?;
                step.completed = Some(LeafRun::new(run, &recent.merging, store.leaf_row));
            }
        }
        Ok(step)
    }

    /// After a commit's transaction: the leaf index's levels and the hash
    /// cache take what it wrote.
    fn remember_committed(&mut self, step: LeafIndexStep) {
        let mut recent = self.store.recent.write().expect("leaf lock");
        recent.merged = step.merged_to;
        if let Some(run) = step.completed {
            recent.runs.push(run);
            recent.merging = SortedLevel::default();
            recent.merged = 0;
        }
        for &(leaf, index) in &self.scratch.leaves {
            recent.active.entry(leaf).or_insert(index);
        }
        if let Some(end) = step.freeze {
            assert!(
                recent.merging.is_empty() && recent.sorting.is_none(),
                "the previous frozen level was written first"
            );
            recent.freeze(end, self.store.background_sort);
        }
        drop(recent);
        let mut upper = self.store.upper.write().expect("upper lock");
        for &(level, index, hash) in &self.scratch.upper {
            upper.push(level, index, hash);
        }
    }

    /// Replaces the stored quorum checkpoint of `size` with `note` (the
    /// same checkpoint with witness cosignatures added) and, if `witnessed`,
    /// records it as the latest witnessed checkpoint. One durable
    /// transaction; the caller verified the cosignatures.
    pub fn add_cosignatures(
        &mut self,
        size: u64,
        note: &str,
        witnessed: bool,
    ) -> Result<(), StoreError> {
        let mut txn = self.store.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        {
            let mut checkpoints = txn.open_table(CHECKPOINTS)?;
            let stored = checkpoints
                .get(size)?
                .map(|v| v.value().to_vec())
                .ok_or_else(|| StoreError::Corrupt(format!("no checkpoint of size {size}")))?;
            let same_text = |a: &[u8], b: &[u8]| {
                let body = |n: &[u8]| {
                    n.windows(2)
                        .position(|w| w == b"\n\n")
                        .map(|i| n[..i].to_vec())
                };
                body(a).is_some() && body(a) == body(b)
            };
            assert!(
                same_text(&stored, note.as_bytes()),
                "cosignatures must be added to the same checkpoint text"
            );
            checkpoints.insert(size, note.as_bytes())?;
            if witnessed {
                let mut meta = txn.open_table(META)?;
                let current = meta.get(META_WITNESSED)?.map_or(0, |v| v.value());
                if size >= current {
                    meta.insert(META_WITNESSED, size)?;
                }
            }
        }
        txn.commit()?;
        Ok(())
    }
}

fn write_safety(txn: &redb::WriteTransaction, state: &SafetyState) -> Result<(), StoreError> {
    let record = SafetyRecord {
        last_voted_round: state.last_voted_round,
        last_vote_round: state.last_vote_round,
        high_qc: state.high_qc.clone(),
        high_tc: state.high_tc.clone(),
        last_signed: state.last_signed,
        last_share: state.last_share.clone().map(ShareRecord::from),
    };
    txn.open_table(SAFETY)?
        .insert(0u8, wire::encode(&record).as_slice())?;
    Ok(())
}

/// Stores fresh nonces, and deletes those the last share retired (at or
/// below its height: never to be used again) and those too far below the
/// committed height to be used (the core drops them too).
fn write_nonces(
    txn: &redb::WriteTransaction,
    nonces: &[(u64, NonceSecret)],
    state: Option<&SafetyState>,
    committed_height: Option<u64>,
) -> Result<(), StoreError> {
    let mut table = txn.open_table(NONCES)?;
    for (height, secret) in nonces {
        table.insert(*height, secret.as_bytes())?;
    }
    if let Some(share) = state.and_then(|s| s.last_share.as_ref()) {
        table.retain_in(..=share.height, |_, _| false)?;
    }
    if let Some(height) = committed_height {
        let floor = height.saturating_sub(bftlog_consensus::threshold::THRESHOLD_LAG_HEIGHTS);
        table.retain_in(..=floor, |_, _| false)?;
    }
    Ok(())
}

/// This replica's stored nonces, by height.
fn read_nonces(read: &redb::ReadTransaction) -> Result<Vec<(u64, NonceSecret)>, StoreError> {
    let table = match read.open_table(NONCES) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut nonces = Vec::new();
    for row in table.iter()? {
        let (height, secret) = row?;
        nonces.push((
            height.value(),
            NonceSecret::from_bytes(secret.value().to_vec()),
        ));
    }
    Ok(nonces)
}

fn write_checkpoints(
    txn: &redb::WriteTransaction,
    checkpoints: &[(u64, String)],
    tree_size: u64,
) -> Result<(), StoreError> {
    if checkpoints.is_empty() {
        return Ok(());
    }
    let mut table = txn.open_table(CHECKPOINTS)?;
    for (size, note) in checkpoints {
        assert!(*size <= tree_size, "checkpoint beyond the tree");
        table.insert(*size, note.as_bytes())?;
    }
    Ok(())
}
