//! C2SP tlog-proof receipts: whatever parses formats back to exactly the
//! input; verification under the fixed policy never panics; a receipt that
//! verifies for its entry (`bftlog_fuzz::receipt_entry(index)`) agrees with
//! a direct inclusion check and fails for any other entry.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| bftlog_fuzz::targets::tlog_proof_verify(data));
