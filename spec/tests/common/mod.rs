//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// The shared test vectors: `$BFTLOG_SHARED/testdata`, else `../shared`
/// beside the repository root. Missing vectors fail the test: they are the
/// point of it.
pub fn testdata() -> PathBuf {
    let base = match std::env::var_os("BFTLOG_SHARED") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"),
    };
    let dir = base.join("testdata");
    assert!(
        dir.is_dir(),
        "shared test vectors not found at {} (set BFTLOG_SHARED)",
        dir.display()
    );
    dir
}

pub fn json_files(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "json") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}
