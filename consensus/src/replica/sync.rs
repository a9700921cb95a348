//! State sync: asking peers for committed blocks and certificates when
//! this replica is behind, and answering such requests from memory.

use super::*;

/// Encoded block bytes one sync response carries at most (past its first
/// block): room under [`wire::MAX_MESSAGE_BYTES`] for the commit QC and
/// framing. A block alone (at most 8 MiB of entries) always fits.
pub const SYNC_RESPONSE_BYTES: usize = 12 << 20;

/// Counts a sync response's block bytes against [`SYNC_RESPONSE_BYTES`].
#[derive(Default)]
pub struct SyncBudget {
    used: usize,
}

impl SyncBudget {
    pub fn new() -> Self {
        Self::default()
    }

    /// Encoded block bytes admitted so far.
    pub fn used(&self) -> usize {
        self.used
    }

    /// Whether `block` joins the response: the first always does (an
    /// encoded block is never empty, so `used > 0` once one joined).
    pub fn admit(&mut self, block: &Block) -> bool {
        let len = wire::encoded_len(block);
        if self.used > 0 && self.used + len > SYNC_RESPONSE_BYTES {
            return false;
        }
        self.used += len;
        true
    }
}

/// Where this replica's own sync stands: whom it asked, until when, and
/// from which height it asks next.
pub(super) struct SyncProgress {
    /// When the outstanding request counts as lost (none outstanding).
    pub(super) deadline: Option<Duration>,
    /// The replica asked last.
    pub(super) peer: ReplicaId,
    /// Next height to ask for: past blocks already fetched but not yet
    /// committable (their commit evidence lies further ahead).
    pub(super) cursor: u64,
}

impl SyncProgress {
    pub(super) fn new(id: ReplicaId) -> Self {
        SyncProgress {
            deadline: None,
            peer: id,
            cursor: 0,
        }
    }
}

impl<R: CryptoRng> Replica<R> {
    pub(super) fn request_sync(&mut self, peer: ReplicaId) {
        if self.cfg.n() == 1 || self.sync.deadline.is_some_and(|d| d > self.now) {
            return;
        }
        // Never ourselves: the next replica after the last one asked.
        let peer = if peer == self.id {
            ((self.sync.peer as usize + 1) % self.cfg.n()) as ReplicaId
        } else {
            peer
        };
        let peer = if peer == self.id {
            ((peer as usize + 1) % self.cfg.n()) as ReplicaId
        } else {
            peer
        };
        self.sync.peer = peer;
        self.sync.deadline = Some(self.now + Duration::from_millis(self.cfg.sync_timeout_ms));
        self.metrics.sync_requests_sent += 1;
        self.send(
            Target::One(peer),
            ConsensusMessage::SyncRequest {
                from_height: self.sync.cursor.max(self.committed_height + 1),
                max_blocks: self.cfg.sync_batch_blocks,
            },
        );
    }

    pub(super) fn on_sync_request(&mut self, from: ReplicaId, from_height: u64, max_blocks: u16) {
        if self.sync_serve[from as usize].has_credit(self.now).is_err() {
            self.reject(Rejection::RateLimited);
            return;
        }
        let max = (max_blocks as usize).min(wire::MAX_SYNC_BLOCKS);
        let mut blocks: Vec<Block> = Vec::new();
        // Blocks also stop at a byte budget: 32 full blocks of 256-byte
        // entries are 33 MB, past the frame limit (it once stopped every
        // peer of a replica that fell behind after a bulk fill).
        let mut budget = SyncBudget::new();
        if from_height >= self.window_first_height {
            let start = (from_height - self.window_first_height) as usize;
            blocks.extend(
                self.committed_window
                    .iter()
                    .skip(start)
                    .take(max)
                    .take_while(|(_, b)| budget.admit(b))
                    .map(|(_, b)| Block::clone(b)),
            );
        }
        // Then what makes the tip committed for the requester: the chain up
        // to our highest QC's block if it starts with the tip's committing
        // child, else that child with the QC that committed the tip.
        // A batch that stops inside the committed chain carries the QC that
        // certifies its last block: the next block's justify.
        let mut commit_qc = None;
        let reached_tip = from_height + blocks.len() as u64 > self.committed_height;
        if !blocks.is_empty() && !reached_tip {
            let next = from_height + blocks.len() as u64;
            if let Some((_, b)) = self
                .committed_window
                .get((next - self.window_first_height) as usize)
            {
                commit_qc = Some(b.justify.clone());
            }
        }
        if blocks.len() < max && reached_tip {
            let mut chain = Vec::new();
            let mut cursor = self.safety.high_qc.block_id;
            while let Some(b) = self.blocks.get(&cursor) {
                chain.push(Arc::clone(&b.block));
                cursor = b.block.parent_id;
            }
            chain.reverse();
            let chain_ok = cursor == self.committed_id && !chain.is_empty();
            // A requester that has not committed our tip needs the child
            // that committed it; one that has needs our chain.
            let lagging = from_height <= self.committed_height;
            let evidence_on_chain = match (&self.commit_evidence, chain.first()) {
                _ if !lagging => true,
                (Some((child, _)), Some(first)) => child == first,
                (None, _) => true,
                _ => false,
            };
            if chain_ok && evidence_on_chain {
                let skip = from_height.saturating_sub(self.committed_height + 1) as usize;
                let room = max - blocks.len();
                let part: Vec<Block> = chain
                    .into_iter()
                    .skip(skip)
                    .take(room)
                    .take_while(|b| budget.admit(b))
                    .map(|b| Block::clone(&b))
                    .collect();
                if part
                    .last()
                    .is_some_and(|b| crypto::block_id(b) == self.safety.high_qc.block_id)
                {
                    commit_qc = Some(self.safety.high_qc.clone());
                }
                blocks.extend(part);
            } else if let Some((child, qc)) = &self.commit_evidence {
                if from_height <= self.committed_height + 1 && budget.admit(child) {
                    blocks.push(Block::clone(child));
                    commit_qc = Some(qc.clone());
                }
            }
        }
        if blocks.is_empty() {
            return;
        }
        self.sync_serve[from as usize].charge(budget.used() as u64);
        self.send(
            Target::One(from),
            ConsensusMessage::SyncResponse {
                blocks: BoundedVec::new(blocks).expect("≤ MAX_SYNC_BLOCKS"),
                commit_qc,
            },
        );
    }

    pub(super) fn on_sync_response(
        &mut self,
        from: ReplicaId,
        blocks: Vec<Block>,
        commit_qc: Option<QuorumCert>,
    ) {
        if from == self.sync.peer {
            self.sync.deadline = None;
        }
        let full = blocks.len() >= self.cfg.sync_batch_blocks as usize;
        let ids: Vec<Hash> = blocks.iter().map(crypto::block_id).collect();
        // Each block is certified by its successor's justify (or the final
        // QC); uncertified blocks are ignored.
        let mut qcs: Vec<QuorumCert> = blocks.iter().map(|b| b.justify.clone()).collect();
        if let Some(qc) = commit_qc {
            qcs.push(qc);
        }
        // Only the QCs verified here count: a copy of a known QC with its
        // signatures stripped must not pass for it.
        qcs.retain(|qc| qc.round > 0 && self.check_qc(qc));
        let certified_ids: HashSet<Hash> = qcs.iter().map(|qc| qc.block_id).collect();
        let mut progressed = false;
        for (block, &id) in blocks.into_iter().zip(&ids) {
            if block.epoch != self.cfg.epoch {
                self.reject(Rejection::Malformed);
                return;
            }
            if self.blocks.contains_key(&id) || self.is_committed(&id) {
                continue;
            }
            if !certified_ids.contains(&id) {
                continue;
            }
            let parent_height = self.height_of(&block.parent_id);
            let Some(parent_height) = parent_height else {
                continue;
            };
            let leaves: Vec<Hash> = block.entries.iter().map(|e| merkle::leaf_hash(e)).collect();
            self.store_block(id, block, parent_height, leaves);
            progressed = true;
        }
        for qc in qcs {
            self.process_qc(&qc, from);
        }
        self.try_commit();
        self.retry_waiting_proposals();
        // After a full batch, move the cursor up to the highest of its
        // blocks we now hold, so the next request asks for the blocks after
        // them even if none of these could commit yet. Not past it: a peer
        // sends the commit evidence for its committed tip (which may be off
        // its highest-QC chain) only to a request starting at or below that
        // tip, and the block we stop at may be that tip.
        let before = self.sync.cursor;
        if let Some(height) = ids
            .iter()
            .filter(|_| full)
            .filter_map(|id| self.blocks.get(id).map(|b| b.height))
            .max()
        {
            self.sync.cursor = self.sync.cursor.max(height);
        }
        self.sync.cursor = self.sync.cursor.max(self.committed_height + 1);
        if !full || (!progressed && self.sync.cursor == before) {
            // A short batch reached the peer's tip: nothing further to page
            // through. Or nothing new and nothing passed: what we skipped
            // over may have been a fork that lost. Start again from the
            // committed tip.
            self.sync.cursor = self.committed_height + 1;
        }
        if full && (progressed || self.sync.cursor > before) {
            self.sync.deadline = None;
            self.request_sync(from);
        }
        self.arm_timer();
        self.maybe_propose();
    }
}
