//! C2SP signed notes: whatever parses formats back to exactly the input,
//! rebuilding it signature by signature gives the same note, and verifying
//! it against a fixed key ring never panics and only ever credits keys of
//! that ring whose signature lines are in the note.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| bftlog_fuzz::targets::note_parse_verify(data));
