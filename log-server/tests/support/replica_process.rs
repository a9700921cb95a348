//! A `bftlog serve` process of a test cluster, killed when dropped.

use std::path::Path;
use std::process::{Child, Command, Stdio};

pub struct ReplicaProcess(pub Child);

impl Drop for ReplicaProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `bin serve` for replica `i` of the cluster in `dir`, logging at
/// info to `replica-<i>.log` there.
pub fn serve(bin: &str, dir: &Path, i: usize) -> ReplicaProcess {
    let log = std::fs::File::create(dir.join(format!("replica-{i}.log"))).unwrap();
    ReplicaProcess(
        Command::new(bin)
            .args(["serve", "--config"])
            .arg(dir.join(format!("replica-{i}.toml")))
            .env("RUST_LOG", "bftlog_server=info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}
