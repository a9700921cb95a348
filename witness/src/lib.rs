//! # bftlog-witness
//!
//! An independent cosigner speaking C2SP tlog-witness over HTTP. It
//! cosigns a checkpoint (C2SP tlog-cosignature, `cosignature/v1`) only
//! after checking that it is signed by the log's trusted keys (for a bftlog
//! origin: a replica quorum) and consistent with the last checkpoint it
//! cosigned for that origin. It refuses rollbacks and forks, stores its new
//! state durably before it answers, and keeps every inconsistent
//! submission as split-view evidence (`spec/evidence.md`).
//!
//! - [`request`]: the strict `add-checkpoint` body parser.
//! - [`log_config`]: trusted logs: keys and signature threshold.
//! - [`store`]: the redb database (logs, latest checkpoints, evidence).
//! - [`witness`]: the HTTP-free core: stateless checks, then batched,
//!   atomic check-and-store.
//! - [`server`]: the hyper HTTP server with group commit and load shedding.
//! - [`client`]: the client a log uses to obtain cosignatures.
//! - [`dir`]: a witness directory (key files and database).
//!
//! Normative description of the protocol as implemented: `spec/witness.md`.
#![forbid(unsafe_code)]

pub mod client;
pub mod dir;
pub mod http_guard;
pub mod key_file;
pub mod log_config;
pub mod request;
pub mod server;
pub mod store;
pub mod witness;
