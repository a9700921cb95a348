//! C2SP tlog-policy with the replica-quorum extension: whatever parses
//! prints (`to_text`) as a policy that parses to the same logs, witnesses,
//! groups, quorum and replica quorums, and prints identically; the parsed
//! policy judges a fixed set of signed checkpoints without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| bftlog_fuzz::targets::policy_parse(data));
