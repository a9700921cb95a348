//! Split-view evidence: whatever parses formats back to exactly the input;
//! checking it under the fixed policy never panics; evidence that checks
//! is also what `evidence::compare` concludes from its two notes and path.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| bftlog_fuzz::targets::evidence_check(data));
