//! Every wire message type: whatever decodes re-encodes to exactly the
//! input bytes (canonical CBOR), and the frame splitter never panics and
//! returns frames that re-frame to the bytes it consumed.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| bftlog_fuzz::targets::wire_decode(data));
