//! What a replica must hold durable (its safety state), and what it
//! recovers from storage after a restart.

use bftlog_spec::merkle::{CompactRange, Hash};
use bftlog_spec::wire::{Block, BoundedVec, QuorumCert, TimeoutCert};

use crate::crypto;

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
}

impl Recovered {
    pub fn fresh(epoch: u64) -> Self {
        Recovered {
            safety: SafetyState::genesis(epoch),
            tree: CompactRange::new(),
            committed_blocks: Vec::new(),
            first_height: 1,
            voted_blocks: Vec::new(),
        }
    }
}
