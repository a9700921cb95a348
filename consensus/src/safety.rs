//! What a replica must hold durable (its safety state), and what it
//! recovers from storage after a restart.

use bftlog_spec::merkle::{CompactRange, Hash};
use bftlog_spec::wire::{Block, BoundedVec, Element32, QuorumCert, SignerCommitment, TimeoutCert};

use crate::crypto;
use crate::threshold::NonceSecret;

/// What must be durable before dependent messages leave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SafetyState {
    /// Highest round this replica voted or timed out in.
    pub last_voted_round: u64,
    /// Highest round this replica voted in (votes only; timeouts are in
    /// `last_voted_round`). Diagnostics and the known-bug switch use it.
    pub last_vote_round: u64,
    pub high_qc: QuorumCert,
    pub high_tc: Option<TimeoutCert>,
    /// Highest checkpoint this replica signed: (size, root).
    pub last_signed: Option<(u64, Hash)>,
    /// The last cluster-key share this replica sent. Its height is the
    /// highest whose nonce it used: nonces of that height and below are
    /// never used again, so none signs two messages across restarts. It
    /// is sent again after a restart, for combiners that missed it.
    pub last_share: Option<SentShare>,
}

/// A cluster-key signature share as sent (`ConsensusMessage::ThresholdShare`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SentShare {
    pub height: u64,
    pub size: u64,
    pub root: Hash,
    pub signers: Vec<SignerCommitment>,
    pub share: Element32,
}

impl SafetyState {
    /// The state of a replica that never ran.
    pub fn genesis(epoch: u64) -> Self {
        SafetyState {
            last_voted_round: 0,
            last_vote_round: 0,
            high_qc: genesis_qc(epoch),
            high_tc: None,
            last_signed: None,
            last_share: None,
        }
    }
}

/// The certificate of the implicit genesis block (round 0, no signatures).
pub fn genesis_qc(epoch: u64) -> QuorumCert {
    QuorumCert {
        epoch,
        round: 0,
        block_id: crypto::genesis_id(epoch),
        parent_round: 0,
        signatures: BoundedVec::new(Vec::new()).expect("empty"),
    }
}

/// What the core recovers after a restart.
#[derive(Clone, Debug)]
pub struct Recovered {
    pub safety: SafetyState,
    /// The committed tree (its size is the number of committed entries).
    pub tree: CompactRange,
    /// The most recent committed blocks, oldest first, with the height of
    /// the first; the last is the committed tip. Empty for a fresh replica.
    pub committed_blocks: Vec<Block>,
    pub first_height: u64,
    /// Blocks from earlier [`PersistRequest`]s that were not committed
    /// yet (any order; those that no longer matter are dropped).
    pub voted_blocks: Vec<Block>,
    /// This replica's cluster-key nonces from earlier
    /// [`PersistRequest`]s, by height (those at or below
    /// `safety.last_share`'s height are ignored).
    pub nonces: Vec<(u64, NonceSecret)>,
    /// The committed checkpoints of the last
    /// [`crate::threshold::RECOVERY_WINDOW_HEIGHTS`] heights with entries, as
    /// (height, size, root), so a restarted replica can still help
    /// recover their cluster signatures (only read with a cluster key).
    pub recent_checkpoints: Vec<(u64, u64, Hash)>,
}

impl Recovered {
    pub fn fresh(epoch: u64) -> Self {
        Recovered {
            safety: SafetyState::genesis(epoch),
            tree: CompactRange::new(),
            committed_blocks: Vec::new(),
            first_height: 1,
            voted_blocks: Vec::new(),
            nonces: Vec::new(),
            recent_checkpoints: Vec::new(),
        }
    }
}
