//! # bftlog-server
//!
//! A bftlog replica. n = 3f+1 replicas agree on batches of appended entries
//! by BFT consensus, extend an RFC 6962 tree, and sign C2SP checkpoints
//! only after commit.
//!
//! The consensus state machine it drives is the sans-IO crate
//! `bftlog-consensus` (with the cluster simulator).
//!
//! - [`node`]: the driver: the core loop that runs the consensus core
//!   against storage and network, the client protocol, the peer network,
//!   the metrics endpoint and witness submission.
//! - [`storage`]: redb tables for entries, tree hashes, blocks, safety
//!   state and quorum checkpoints.
//! - [`net`]: QUIC endpoints, framing, and TLS identities bound to the
//!   replicas' Ed25519 keys.
//! - [`client`]: the client library used by the CLI, the bench and tests.
//! - [`attack`]: attacks by one Byzantine replica or one hostile client,
//!   for the hostile-load tests and `bftlog bench --attack`.
//! - [`config`]: cluster and replica configuration files.
//! - [`cluster_key`]: the cluster's FROST threshold key: dealing it, its
//!   share files and its vkey.
//! - [`follow`]: following a C2SP tlog-tiles log over HTTP, verified: the
//!   engine of `bftlog monitor` and `bftlog mirror`.
#![forbid(unsafe_code)]

/// The operating system's randomness as an infallible cryptographic RNG:
/// keys and the consensus core's batch verification draw from it (a
/// failure to read it is fatal, as it would be for any key generation).
pub type SystemRng = rand_core::UnwrapErr<rand::rngs::SysRng>;

/// A [`SystemRng`].
pub fn system_rng() -> SystemRng {
    rand_core::UnwrapErr(rand::rngs::SysRng)
}

pub mod admission;
pub mod attack;
pub mod client;
pub mod cluster_key;
pub mod config;
pub mod dkg;
pub mod follow;
pub mod net;
pub mod node;
pub mod storage;
#[cfg(test)]
mod test_dir;
