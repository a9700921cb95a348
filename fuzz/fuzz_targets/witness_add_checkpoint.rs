//! The witness's add-checkpoint path: the strict body parser and the
//! check-and-store core (in-memory redb, so no fsync per iteration).
//!
//! The input's first byte picks a mode:
//! - raw: the rest is one request body. It never panics; a body that
//!   parses re-formats to exactly the input bytes; a 200 is only ever given
//!   to a correctly signed checkpoint.
//! - sequence: the rest chooses a run of submissions from two forks of one
//!   log (sizes, old sizes, signer sets, proofs intact or corrupted). After
//!   every step: no size was ever cosigned with two roots, the stored size
//!   never decreases, and only checkpoints extending the stored one (or
//!   equal to it) are cosigned.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| bftlog_fuzz::targets::witness_add_checkpoint(data));
