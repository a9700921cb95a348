//! A temporary directory for one test: empty when made, removed when the
//! test passes, kept when it fails (its data and logs are the evidence).
//! Unit tests use it as `crate::test_dir`; integration tests include this
//! file by path.

use std::path::{Path, PathBuf};

pub struct TestDir(PathBuf);

impl TestDir {
    /// `bftlog-<name>` in the system's temporary directory, emptied.
    pub fn new(name: &str) -> TestDir {
        let dir = std::env::temp_dir().join(format!("bftlog-{name}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create a test directory");
        TestDir(dir)
    }
}

impl std::ops::Deref for TestDir {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
