//! The deterministic simulator with a fuzzer-chosen seed and fault plan
//! (delays, loss, duplication, partitions, crashes, Byzantine replicas
//! within f): every run keeps the simulator's safety and liveness
//! invariants. See `fuzz/src/consensus.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| bftlog_fuzz::targets::consensus_sim(data));
