//! The body of every fuzz target, one function per target with the
//! target's name: `fuzz_targets/<name>.rs` is only
//! `fuzz_target!(|data: &[u8]| bftlog_fuzz::targets::<name>(data))`.
//!
//! Living in the library, the properties also run outside cargo-fuzz:
//! `tests/corpus.rs` replays every checked-in input in `corpus/<target>/`
//! through its target on stable Rust, without libFuzzer or sanitizers
//! (`cargo test --no-default-features`, which `.ci/run` runs; see the
//! README). Each function panics when a property fails.

mod checkpoint_parse;
mod consensus_core;
mod consensus_sim;
mod evidence_check;
mod merkle_proofs;
mod note_parse_verify;
mod policy_parse;
mod tiles_parse;
mod tlog_proof_verify;
mod wire_decode;
mod witness_add_checkpoint;

pub use checkpoint_parse::checkpoint_parse;
pub use consensus_core::consensus_core;
pub use consensus_sim::consensus_sim;
pub use evidence_check::evidence_check;
pub use merkle_proofs::merkle_proofs;
pub use note_parse_verify::note_parse_verify;
pub use policy_parse::policy_parse;
pub use tiles_parse::tiles_parse;
pub use tlog_proof_verify::tlog_proof_verify;
pub use wire_decode::wire_decode;
pub use witness_add_checkpoint::witness_add_checkpoint;
