//! The sans-IO consensus core: one honest replica among hostile peers that
//! hold valid keys, and an honest cluster under a fuzzer-chosen schedule.
//! See `fuzz/src/consensus.rs` for both modes and the invariants checked.

/// Runs one `consensus_core` input; panics if a property
/// in this file's header fails.
pub fn consensus_core(data: &[u8]) {
    let _ = crate::consensus::run(data);
}
