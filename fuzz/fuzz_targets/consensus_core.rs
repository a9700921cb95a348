//! The sans-IO consensus core: one honest replica among hostile peers that
//! hold valid keys, and an honest cluster under a fuzzer-chosen schedule.
//! See `fuzz/src/consensus.rs` for both modes and the invariants checked.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| bftlog_fuzz::targets::consensus_core(data));
