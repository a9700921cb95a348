//! # bftlog-server
//!
//! A bftlog replica. n = 3f+1 replicas agree on batches of appended entries
//! by BFT consensus, extend an RFC 6962 tree, and sign C2SP checkpoints
//! only after commit.
//!
//! - [`consensus`]: the sans-IO consensus state machine (no tokio, quinn,
//!   redb or clock; a test checks its imports).
//! - [`sim`]: a deterministic single-threaded simulator of whole clusters,
//!   with a lossy network, crashes and Byzantine replicas, and the
//!   invariant checker that runs after every step.
#![forbid(unsafe_code)]

pub mod consensus;
pub mod sim;
