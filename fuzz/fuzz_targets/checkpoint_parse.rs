//! C2SP checkpoints: a body that parses formats back to exactly the input
//! and can be signed and parsed back as a signed checkpoint; a signed note
//! that parses (`checkpoint::parse_signed`) formats back to the input and
//! its body to the note text.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| bftlog_fuzz::targets::checkpoint_parse(data));
