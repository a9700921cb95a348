//! The 2-chain commit rule and what a commit changes: the tree, the
//! committed window, the dedup window and the blocks kept.

use super::*;

impl<R: CryptoRng> Replica<R> {
    /// 2-chain commit: a certified block whose parent is one round older
    /// commits the parent.
    pub(super) fn apply_commit_rule(&mut self, qc: &QuorumCert) {
        if qc.round == 0 {
            return;
        }
        let consecutive = qc.parent_round + 1 == qc.round;
        if !consecutive && !bug(Bug::CommitWithoutConsecutiveRound) {
            return;
        }
        // The parent is the certified block's parent; find it via the block.
        let Some(parent_id) = self.blocks.get(&qc.block_id).map(|b| b.block.parent_id) else {
            // The certified block is missing; sync will bring it and its QC.
            return;
        };
        if self.is_committed(&parent_id) {
            return;
        }
        if qc.parent_round <= self.committed_round {
            return;
        }
        if self
            .commit_target
            .as_ref()
            .is_none_or(|(_, t)| qc.parent_round > t.parent_round)
        {
            self.commit_target = Some((parent_id, qc.clone()));
        }
        self.try_commit();
    }

    pub(super) fn is_committed(&self, id: &Hash) -> bool {
        *id == self.committed_id || self.committed_ids.contains(id)
    }

    /// Commits `commit_target` and its ancestors if the chain down to the
    /// committed tip is complete.
    pub(super) fn try_commit(&mut self) {
        let Some((target, qc)) = self.commit_target.clone() else {
            return;
        };
        let mut chain = Vec::new();
        let mut cursor = target;
        while cursor != self.committed_id {
            let Some(b) = self.blocks.get(&cursor) else {
                // Missing ancestor: wait for sync.
                let peer = self.sync.peer;
                self.request_sync(peer);
                return;
            };
            if b.block.round <= self.committed_round {
                // Conflicts with what is committed: a safety violation
                // only a bug (or > f faults) can cause. Refuse.
                self.reject(Rejection::Equivocation);
                self.commit_target = None;
                return;
            }
            chain.push(cursor);
            cursor = b.block.parent_id;
        }
        self.commit_target = None;
        let child = self.blocks.get(&qc.block_id).map(|b| b.block.clone());
        for id in chain.into_iter().rev() {
            self.commit_block(id);
        }
        self.commit_evidence = child.map(|c| (c, qc));
        self.sign_checkpoint();
        self.threshold_after_commit();
        self.prune();
    }

    pub(super) fn commit_block(&mut self, id: Hash) {
        let stored = self.blocks.get(&id).expect("chain checked");
        let block = Arc::clone(&stored.block);
        let leaves = stored.leaves.clone();
        let height = stored.height;
        let first_index = self.tree.size();
        let mut stored_hashes = Vec::with_capacity(2 * leaves.len() + 64);
        for leaf in &leaves {
            stored_hashes.extend_from_slice(self.tree.append(*leaf).as_slice());
        }
        self.mempool.remove(&leaves);
        self.remember_committed(&leaves);
        self.committed_height += 1;
        assert_eq!(height, self.committed_height, "heights follow the chain");
        self.committed_id = id;
        self.committed_round = block.round;
        self.committed_window_bytes += entry_bytes(&block);
        self.committed_window.push_back((id, Arc::clone(&block)));
        self.committed_ids.insert(id);
        while self.committed_window.len() > self.cfg.retain_committed_blocks
            || (self.committed_window_bytes > self.cfg.retain_committed_bytes
                && self.committed_window.len() > MIN_RETAINED_BLOCKS)
        {
            let (old, old_block) = self.committed_window.pop_front().expect("non-empty");
            self.committed_window_bytes -= entry_bytes(&old_block);
            self.committed_ids.remove(&old);
            self.window_first_height += 1;
        }
        self.threshold_committed(height, &block);
        self.metrics.blocks_committed += 1;
        self.metrics.entries_committed += leaves.len() as u64;
        self.commits.push(Committed {
            height: self.committed_height,
            block_id: id,
            block,
            leaves,
            first_index,
            size: self.tree.size(),
            root: self.tree.root(),
            stored_hashes,
        });
    }

    pub(super) fn remember_committed(&mut self, leaves: &[Hash]) {
        for leaf in leaves {
            self.dedup.insert(*leaf);
        }
    }

    /// Drops blocks that can no longer matter: committed ones (kept in the
    /// window) and those at or below the committed round.
    pub(super) fn prune(&mut self) {
        let committed_round = self.committed_round;
        self.blocks.prune_through(committed_round);
        let current = self.round();
        self.votes.retain(|(r, _, _), _| *r + 2 >= current);
        self.voted_for.retain(|(r, _), _| *r + 2 >= current);
        self.pacemaker.prune_timeouts();
        self.certified.retain(|(r, _, _), _| *r >= committed_round);
    }
}
