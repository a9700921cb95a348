//! What a replica holds that its peers can make it grow, and the bounds
//! it must stay within whatever they send. The simulator checks
//! [`Footprint::check`] on every honest replica after every step.

use crate::{CHECKPOINT_ROWS_PER_SIGNER, Config, MAX_ROUNDS_AHEAD_PER_PEER, MIN_RETAINED_BLOCKS};

/// A replica's state sizes at one moment ([`crate::Replica::footprint`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Footprint {
    pub round: u64,
    pub committed_round: u64,
    /// Uncommitted blocks held, their entry bytes, and the lowest and
    /// highest of their rounds.
    pub stored_blocks: usize,
    pub stored_block_bytes: usize,
    pub stored_rounds: Option<(u64, u64)>,
    /// Proposals waiting for their parent, and for missing entries.
    pub waiting_proposals: usize,
    pub pending_proposals: usize,
    /// The most rounds ahead of `round` for which one peer's votes, and
    /// one peer's timeouts, are kept.
    pub most_vote_rounds_ahead: usize,
    pub most_timeout_rounds_ahead: usize,
    /// The most checkpoint-signature rows one signer has.
    pub most_checkpoint_rows: usize,
    /// The most heights of cluster-key commitments kept for one replica,
    /// and the heights of shares kept.
    pub most_commitment_heights: usize,
    pub share_heights: usize,
    /// Committed checkpoints kept without their cluster signature.
    pub unsigned_checkpoints: usize,
    /// Committed blocks kept in memory, and their entry bytes.
    pub committed_window_blocks: usize,
    pub committed_window_bytes: usize,
    /// Pending entries, and their bytes.
    pub mempool_entries: usize,
    pub mempool_bytes: usize,
    /// The most pending entries one peer's forwards hold, and one client's.
    pub mempool_most_by_one_peer: usize,
    pub mempool_most_by_one_client: usize,
}

impl Footprint {
    /// Checks every bound; the error names the first one broken.
    ///
    /// Uncommitted blocks lie in the rounds (committed round, round]: a
    /// proposal is kept only once its certificates brought the replica to
    /// its round, and blocks at or below the committed round go. Each
    /// round holds at most one proposal per author plus one certified
    /// block (a certificate needs a quorum, so at most one block per
    /// round has one): together `(n + 1) · (round − committed round)`
    /// blocks, each within the block byte limit. How far the round runs
    /// ahead of the committed round is liveness, checked elsewhere.
    pub fn check(&self, cfg: &Config) -> Result<(), String> {
        let n = cfg.n();
        let fail = |what: String| Err(what);
        if let Some((low, high)) = self.stored_rounds {
            if low <= self.committed_round || high > self.round {
                return fail(format!(
                    "stored block rounds {low}..={high} outside ({}, {}]",
                    self.committed_round, self.round
                ));
            }
        }
        let open_rounds = self.round.saturating_sub(self.committed_round) as usize;
        if self.stored_blocks > (n + 1) * open_rounds {
            return fail(format!(
                "{} stored blocks for {open_rounds} open rounds of {n} replicas",
                self.stored_blocks
            ));
        }
        if self.stored_block_bytes > self.stored_blocks * cfg.max_block_bytes.max(1) {
            return fail(format!(
                "{} stored block bytes in {} blocks",
                self.stored_block_bytes, self.stored_blocks
            ));
        }
        if self.waiting_proposals > n || self.pending_proposals > n {
            return fail(format!(
                "{} waiting and {} pending proposals for {n} replicas",
                self.waiting_proposals, self.pending_proposals
            ));
        }
        if self.most_vote_rounds_ahead > MAX_ROUNDS_AHEAD_PER_PEER
            || self.most_timeout_rounds_ahead > MAX_ROUNDS_AHEAD_PER_PEER
        {
            return fail(format!(
                "a peer has votes for {} and timeouts for {} rounds ahead",
                self.most_vote_rounds_ahead, self.most_timeout_rounds_ahead
            ));
        }
        if self.most_checkpoint_rows > CHECKPOINT_ROWS_PER_SIGNER {
            return fail(format!(
                "a signer has {} checkpoint rows",
                self.most_checkpoint_rows
            ));
        }
        let threshold_window = (crate::threshold::THRESHOLD_LAG_HEIGHTS
            + crate::threshold::COMMITMENTS_AHEAD_HEIGHTS) as usize;
        let recovery_window = crate::threshold::RECOVERY_WINDOW_HEIGHTS as usize;
        if self.most_commitment_heights > threshold_window
            || self.share_heights > threshold_window + recovery_window
            || self.unsigned_checkpoints > recovery_window
        {
            return fail(format!(
                "cluster-key commitments for {} heights of one replica, shares for {} heights, {} unsigned checkpoints",
                self.most_commitment_heights, self.share_heights, self.unsigned_checkpoints
            ));
        }
        let window_over_bytes = self.committed_window_bytes > cfg.retain_committed_bytes
            && self.committed_window_blocks > MIN_RETAINED_BLOCKS;
        if self.committed_window_blocks > cfg.retain_committed_blocks.max(MIN_RETAINED_BLOCKS)
            || window_over_bytes
        {
            return fail(format!(
                "committed window of {} blocks, {} bytes",
                self.committed_window_blocks, self.committed_window_bytes
            ));
        }
        if self.mempool_entries > cfg.mempool_max_entries
            || self.mempool_bytes > cfg.mempool_max_bytes
        {
            return fail(format!(
                "mempool of {} entries, {} bytes",
                self.mempool_entries, self.mempool_bytes
            ));
        }
        let peer_share = (cfg.mempool_max_entries / n).max(1);
        if self.mempool_most_by_one_peer > peer_share
            || self.mempool_most_by_one_client > cfg.mempool_max_entries_per_client.max(1)
        {
            return fail(format!(
                "one peer holds {} and one client {} mempool entries (shares {peer_share} and {})",
                self.mempool_most_by_one_peer,
                self.mempool_most_by_one_client,
                cfg.mempool_max_entries_per_client
            ));
        }
        Ok(())
    }
}
