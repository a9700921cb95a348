//! # bftlog-server
//!
//! A bftlog replica. n = 3f+1 replicas agree on batches of appended entries
//! by BFT consensus, extend an RFC 6962 tree, and sign C2SP checkpoints
//! only after commit.
//!
//! The consensus state machine it drives is the sans-IO crate
//! `bftlog-consensus` (with the cluster simulator).
//! - [`storage`]: redb tables for entries, tree hashes, blocks, safety
//!   state and quorum checkpoints.
//! - [`net`]: QUIC with TLS identities bound to the replicas' Ed25519 keys.
//! - [`node`]: the driver that runs the core against storage and network;
//!   [`api`] serves the client protocol.
//! - [`client`]: the client library used by the CLI and tests.
//! - [`config`]: cluster and replica configuration files.
//! - [`metrics`]: the opt-in Prometheus endpoint.
//! - `witnessing`: submits quorum checkpoints to the cluster's C2SP
//!   witnesses and merges their verified cosignatures.
#![forbid(unsafe_code)]

pub mod api;
pub mod client;
pub mod config;
pub mod metrics;
pub mod net;
pub mod node;
pub mod storage;
#[cfg(test)]
mod test_dir;
mod witnessing;
