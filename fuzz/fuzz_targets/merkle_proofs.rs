//! RFC 6962 proofs. Mode 0: arbitrary indexes, sizes, roots and proofs
//! reach every verification function, which must not panic. Mode 1: a tree
//! of fuzzer-chosen distinct leaves; every proof built from it verifies,
//! the compact range, stored-hash reader and plain root computation agree,
//! and a proof with one bit flipped (or a wrong index, leaf or root) fails.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| bftlog_fuzz::targets::merkle_proofs(data));
