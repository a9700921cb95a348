//! A cluster's consensus settings, quorum arithmetic and leader choice.

use bftlog_spec::wire::{self, Block, ReplicaId};

use crate::MAX_CLUSTER_REPLICAS;

/// Tunables. Every field has a default in [`Config::new`].
#[derive(Clone, Debug)]
pub struct Config {
    pub epoch: u64,
    /// The log's origin: the checkpoint origin line and note key name.
    pub origin: String,
    /// Replica public keys, indexed by replica id.
    pub replicas: Vec<ed25519_dalek::VerifyingKey>,
    /// First round timeout; doubles per consecutive timeout. Default 1000 ms.
    pub round_timeout_ms: u64,
    /// Cap on the round timeout. Default 60,000 ms.
    pub max_round_timeout_ms: u64,
    /// Entries per block. Default 4096.
    pub max_block_entries: usize,
    /// Entry bytes per block. Default 8 MiB.
    pub max_block_bytes: usize,
    /// Largest single entry. Default 65,535 bytes (what a tiles entry
    /// bundle carries).
    pub max_entry_bytes: usize,
    /// Pending entries held. Default 100,000.
    pub mempool_max_entries: usize,
    /// Pending entry bytes held. Default 256 MiB.
    pub mempool_max_bytes: usize,
    /// Pending entries one client of this replica may hold in the
    /// mempool (its fair share). Default 12,500 (an eighth of the pool).
    /// A peer's forwarded entries hold at most 1/n of the pool.
    pub mempool_max_entries_per_client: usize,
    /// Pending entry bytes one client may hold. Default 32 MiB (an eighth).
    pub mempool_max_bytes_per_client: usize,
    /// Committed blocks kept in memory to serve sync. Default 4096.
    pub retain_committed_blocks: usize,
    /// Entry bytes those blocks may hold; beyond it the oldest go (down to
    /// [`MIN_RETAINED_BLOCKS`]). Default 64 MiB. Under load blocks are
    /// large, and a bound by count alone held gigabytes.
    pub retain_committed_bytes: usize,
    /// Committed leaf hashes remembered to refuse re-proposing an entry:
    /// at least the last this many, at most twice as many. Default 100,000.
    pub dedup_window_entries: usize,
    /// Blocks per sync response. Default 32.
    pub sync_batch_blocks: u16,
    /// How often a replica tells the others its highest certificates, so
    /// one that fell behind while idle catches up. Default 5000 ms.
    pub status_interval_ms: u64,
    /// How long to wait for a sync response before asking another replica.
    /// Default 2000 ms.
    pub sync_timeout_ms: u64,
    /// Encoded block bytes of sync answers per second to one peer, with a
    /// burst of two full answers; a request beyond it is dropped
    /// unanswered (the peer asks again or asks another replica). Default
    /// 32 MiB/s: well above any link's catch-up, far below what a peer
    /// flooding requests could make this replica copy.
    pub sync_serve_bytes_per_s: u64,
    /// Sync answer bytes one peer may ask for at once, before the rate
    /// applies. Default 24 MiB: two full answers.
    pub sync_serve_burst_bytes: u64,
    /// This replica's share of the cluster key: with one, it signs each
    /// committed checkpoint with the others into one Ed25519 signature
    /// under the cluster key (spec/consensus.md, "The cluster
    /// signature"). Default none.
    pub cluster_share: Option<crate::threshold::ClusterShare>,
    /// How long after its commit a checkpoint may lack its cluster
    /// signature before recovery sessions start, and the first wait
    /// between their stages (doubling up to 8 times this). Default 500
    /// ms: the signing set answers within a round trip when its members
    /// are honest and up.
    pub cluster_recovery_ms: u64,
    /// Heights of nonces made at once, kept that many to twice that many
    /// heights ahead. Default and largest
    /// [`crate::threshold::NONCE_BATCH_HEIGHTS`] (64); smaller batches
    /// cost less at start (the fuzz harness uses 2).
    pub cluster_nonce_batch_heights: u64,
}

impl Config {
    pub fn new(epoch: u64, origin: &str, replicas: Vec<ed25519_dalek::VerifyingKey>) -> Self {
        Config {
            epoch,
            origin: origin.to_owned(),
            replicas,
            round_timeout_ms: 1000,
            max_round_timeout_ms: 60_000,
            max_block_entries: 4096,
            max_block_bytes: 8 << 20,
            max_entry_bytes: wire::MAX_ENTRY_BYTES,
            mempool_max_entries: 100_000,
            mempool_max_bytes: 256 << 20,
            mempool_max_entries_per_client: 12_500,
            mempool_max_bytes_per_client: 32 << 20,
            retain_committed_blocks: 4096,
            retain_committed_bytes: 64 << 20,
            dedup_window_entries: 100_000,
            sync_batch_blocks: 32,
            sync_timeout_ms: 2000,
            sync_serve_bytes_per_s: 32 << 20,
            sync_serve_burst_bytes: 2 * crate::SYNC_RESPONSE_BYTES as u64,
            status_interval_ms: 5000,
            cluster_share: None,
            cluster_recovery_ms: 500,
            cluster_nonce_batch_heights: crate::threshold::NONCE_BATCH_HEIGHTS,
        }
    }

    pub fn n(&self) -> usize {
        self.replicas.len()
    }

    /// Byzantine replicas tolerated: see [`max_faulty`].
    pub fn f(&self) -> usize {
        max_faulty(self.n())
    }

    /// Certificate size: see [`quorum_size`].
    pub fn quorum(&self) -> usize {
        quorum_size(self.n())
    }

    /// The round-robin leader of `round`: `round mod n`. It leads a round
    /// entered after a failed one, and is where [`Config::leader_after`]
    /// starts looking.
    pub fn leader(&self, round: u64) -> ReplicaId {
        (round % self.n() as u64) as ReplicaId
    }

    /// The leader of `round` for a proposal extending `parent`, the block
    /// its certificate certifies (docs/adr/0003-active-leaders.md).
    ///
    /// When `parent` is the previous round's block, the leader is the
    /// first replica, in round-robin order from `round mod n`, that
    /// `parent` shows active: its author, or a signer of the certificate
    /// it carries. A crashed or cut-off replica drops out of those within
    /// two rounds, and its turns pass to the next active replica instead
    /// of each costing a round timeout. Every replica holding `parent`
    /// computes the same leader. After a failed round (the parent is
    /// older), or from the first block (its certificate has no
    /// signers), it is round robin.
    pub fn leader_after(&self, round: u64, parent: &Block) -> ReplicaId {
        let n = self.n();
        if parent.round + 1 != round || parent.justify.signatures.is_empty() {
            return self.leader(round);
        }
        let mut active = [false; MAX_CLUSTER_REPLICAS];
        for id in std::iter::once(parent.author)
            .chain(parent.justify.signatures.iter().map(|s| s.replica))
        {
            if let Some(slot) = active.get_mut(id as usize) {
                *slot = true;
            }
        }
        let first = self.leader(round) as usize;
        (0..n)
            .map(|k| ((first + k) % n) as ReplicaId)
            .find(|id| active[*id as usize])
            .unwrap_or(first as ReplicaId)
    }
}

/// Byzantine replicas tolerated by `n` replicas: f = ⌊(n − 1)/3⌋.
pub fn max_faulty(n: usize) -> usize {
    assert!(n >= 1, "a cluster has at least one replica");
    (n - 1) / 3
}

/// Signatures in a certificate or quorum checkpoint for `n` replicas:
/// ⌊(n + f)/2⌋ + 1, which is 2f+1 for n = 3f+1 and makes any two quorums
/// share an honest replica for every n.
pub fn quorum_size(n: usize) -> usize {
    (n + max_faulty(n)) / 2 + 1
}
