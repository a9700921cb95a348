//! C2SP tlog-tiles paths and entry bundles: what parses prints back to the
//! same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| bftlog_fuzz::targets::tiles_parse(data));
