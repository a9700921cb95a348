//! The BFT consensus core: a deterministic, sans-IO state machine.
//!
//! Like quinn-proto, it performs no IO and reads no clock. The driver (or
//! the simulator, or the fuzz harness) feeds it inputs —
//! [`Replica::handle_message`], [`Replica::handle_timeout`],
//! [`Replica::handle_persisted`], [`Replica::submit`] — and then drains
//! everything they produced with [`Replica::poll_step`], by the one
//! contract documented on [`Step`]; [`Replica::poll_timeout`] says when
//! the next timer is due. Time comes in as a [`Duration`] since an
//! arbitrary origin; randomness (for batch verification) comes from the
//! RNG given at construction.
//!
//! The normative protocol is spec/consensus.md; this crate implements it.
//!
//! # Protocol (2-chain HotStuff / Jolteon)
//!
//! - Leaders rotate among active replicas: the leader of round `r` is the
//!   first replica from `r mod n` on that the parent block shows active
//!   (its author or a signer of its QC) when the parent is from round
//!   `r − 1`; after a failed round, `r mod n` ([`Config::leader_after`],
//!   docs/adr/0003-active-leaders.md).
//! - The leader of round `r` proposes a block that extends the block
//!   certified by its highest QC, carrying a batch of entries. If it entered
//!   `r` through a timeout certificate for `r − 1`, the proposal carries it.
//! - Entries reach every replica when submitted (`Forward`), so a proposal
//!   names them by leaf hash (`ProposalLeaves`, same block id and
//!   signature as the full block). A replica that lacks some asks the
//!   leader (`EntryRequest`) and votes only once it holds them all.
//! - A replica votes for at most one block per round (durable
//!   `last_voted_round`). It votes only if `block.round = qc.round + 1`, or if
//!   the proposal carries a TC for `block.round − 1` and `qc.round` is at
//!   least the highest QC round in that TC. Votes are broadcast, and every
//!   replica forms a QC from 2f+1 of them.
//! - **Commit:** when a block `B` is certified and its parent `P` has
//!   `P.round + 1 = B.round`, then `P` and its ancestors commit.
//! - **Pacemaker:** while a replica has work pending (entries or uncommitted
//!   blocks with entries), each round has a timer. On expiry it broadcasts a
//!   timeout carrying its highest QC and stops voting in that round. 2f+1
//!   timeouts form a TC. f+1 timeouts for a round make a replica join them.
//!   The timer doubles after each consecutive timeout, up to a cap.
//! - A valid QC or TC for round `r` moves a replica to round `r + 1`.
//!
//! **Persist before speak.** Every change to [`SafetyState`] is written
//! through a [`PersistRequest`]. Messages produced by the same or a later
//! input are released by [`Replica::poll_send`] only after
//! [`Replica::handle_persisted`] acknowledges that write. Two kinds wait
//! only for the writes issued before their input: forwarded entries, and
//! a leader's proposal for the round right after the last-voted round of
//! those writes (its own vote still waits for its write; a restarted
//! replica never proposes in that round again). The highest QC is written
//! with the next write rather than one of its own (see `process_qc`).
//!
//! **After commit**, the core appends the committed entries' leaf hashes to
//! its RFC 6962 compact range and computes (size, root). It signs the C2SP
//! checkpoint for that size only if the size is above the highest size it
//! ever signed (a durable record). So it never signs two roots for one size.
//! Replicas exchange checkpoint signatures, and any replica assembles a
//! quorum checkpoint (≥ 2f+1 signatures).
//!
//! Peer misbehaviour is counted in [`Metrics`] and never panics.

mod config;
mod footprint;
mod replica;
mod safety;
mod step;
pub mod threshold;

pub mod bugs;
pub mod crypto;
pub mod dedup_window;
pub mod digest_hash;
pub mod mempool;
pub mod sim;
pub mod token_bucket;

use bftlog_spec::wire::Block;

pub use config::{Config, max_faulty, quorum_size};
pub use footprint::Footprint;
pub use mempool::ClientId;
pub use replica::CHECKPOINT_ROWS_PER_SIGNER;
pub use replica::sync::{SYNC_RESPONSE_BYTES, SyncBudget};
pub use replica::{Replica, SetupError};
pub use safety::{Recovered, SafetyState, SentShare, genesis_qc};
pub use step::{
    CheckpointEvent, Committed, Event, Metrics, Outgoing, PersistRequest, Rejection, Step,
    SubmitResult, Target,
};

/// Most replicas in a cluster: a quorum checkpoint note must fit C2SP's
/// signature-line limit with room for witness cosignatures.
pub const MAX_CLUSTER_REPLICAS: usize = 64;

/// Committed blocks kept in memory whatever their size (and the least
/// `retain_committed_blocks` may be).
pub const MIN_RETAINED_BLOCKS: usize = 16;

/// The most entry bytes `max_block_bytes` may allow (a proposal must fit a
/// 16 MiB frame). No honest leader proposes more, whatever its own
/// setting, so replicas reject larger blocks: that bounds what a faulty
/// leader's proposal by leaf hash can make a replica assemble from its
/// mempool and keep while it waits.
pub const MAX_BLOCK_BYTES: usize = 12 << 20;

/// Highest round a message may carry. Honest replicas never come near it
/// (a round per microsecond would take 146,000 years); rejecting rounds
/// beyond it on input keeps every `round + 1` in the core from
/// overflowing, whatever a peer sends or a quorum of peers signs.
pub const MAX_ROUND: u64 = 1 << 62;

/// Furthest a vote or timeout may be ahead of a replica's round and still
/// be kept: one from further ahead cannot help it form a certificate
/// before it catches up through the certificates themselves.
pub const MAX_ROUNDS_AHEAD: u64 = 1024;

/// Rounds ahead of a replica's round for which one peer's votes, and
/// separately its timeouts, are kept. An honest peer votes and times out
/// once per round and is rarely more than a round or two ahead; the cap
/// keeps what a faulty peer can store at this many small messages (each
/// of a timeout carries a QC) instead of [`MAX_ROUNDS_AHEAD`].
pub const MAX_ROUNDS_AHEAD_PER_PEER: usize = 8;

/// Entry bytes a block holds (what keeping it in memory costs).
pub fn entry_bytes(block: &Block) -> usize {
    block.entries.iter().map(|e| e.len()).sum()
}
