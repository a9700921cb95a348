//! The deterministic simulator with a fuzzer-chosen seed and fault plan
//! (delays, loss, duplication, partitions, crashes, Byzantine replicas
//! within f): every run keeps the simulator's safety and liveness
//! invariants. See `fuzz/src/consensus.rs`.

/// Runs one `consensus_sim` input; panics if a property
/// in this file's header fails.
pub fn consensus_sim(data: &[u8]) {
    crate::consensus::simulate(data);
}
