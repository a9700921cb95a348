//! Disk faults: a replica whose disk fills up stops with one clear line,
//! no acknowledged entry is lost, and once space is freed a restart
//! resumes; a corrupted or truncated database file is refused at start
//! with an error naming it, never a panic.
//!
//! The full disk is a 64 MiB tmpfs the test mounts in a mount namespace of
//! its own (`unshare`; with a user namespace too when not run as root):
//! a sleeping process holds the namespace, and the replica runs inside it
//! (`nsenter`), so the filesystem outlives the replica's restart.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bftlog_server::client::{Client, ClientOptions};
use bftlog_server::config::{ReplicaConfig, init_cluster};
use bftlog_server::node::Node;
use bftlog_spec::proof::TlogProof;
use bftlog_spec::wire::{ClientRequest, ClientResponse};

#[path = "support/ports.rs"]
mod ports;

#[path = "support/replica_process.rs"]
mod replica_process;
use replica_process::{ReplicaProcess, serve};

#[path = "../src/test_dir.rs"]
mod test_dir;

const BIN: &str = env!("CARGO_BIN_EXE_bftlog");

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .map(|l| l.split_whitespace().next() == Some("0"))
        })
        .unwrap_or(false)
}

/// A process holding a private mount namespace with a tmpfs at `dir`.
struct SmallDisk {
    holder: Child,
    dir: PathBuf,
}

impl SmallDisk {
    fn new(dir: &Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(dir).unwrap();
        let mut unshare = Command::new("unshare");
        if !is_root() {
            unshare.args(["--user", "--map-root-user"]);
        }
        let script = format!(
            "mount -t tmpfs -o size={size} tmpfs '{}' && echo mounted && exec sleep 3600",
            dir.display()
        );
        let mut holder = unshare
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .stdout(Stdio::piped())
            .spawn()
            .expect("unshare (util-linux) runs");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(holder.stdout.as_mut().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line.trim(), "mounted", "the test could not mount a tmpfs");
        SmallDisk {
            holder,
            dir: dir.to_owned(),
        }
    }

    /// A command run inside the namespace.
    fn command(&self, program: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.args(["--target", &self.holder.id().to_string(), "--mount"]);
        if !is_root() {
            c.args(["--user", "--preserve-credentials"]);
        }
        c.arg("--").arg(program);
        c
    }

    fn run(&self, program: &str, args: &[&str]) {
        let status = self.command(program).args(args).status().unwrap();
        assert!(status.success(), "{program} {args:?} in the namespace");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The committed size replica `i` serves, if it answers.
async fn served_size(client: &Client, i: usize) -> Option<u64> {
    match client.request(i, &ClientRequest::GetCheckpoint).await {
        Ok(ClientResponse::Checkpoint { note }) => {
            let text = String::from_utf8(note.into_inner()).ok()?;
            let checkpoint_text = text.split("\n\n").next()?;
            checkpoint_text.lines().nth(1)?.parse().ok()
        }
        _ => None,
    }
}

#[test]
fn a_full_disk_stops_the_replica_with_one_clear_line_and_a_restart_resumes() {
    let dir = test_dir::TestDir::new(&format!("disk-full-{}", std::process::id()));
    let cluster = init_cluster(
        &dir,
        "test.example/log",
        4,
        [127, 0, 0, 1].into(),
        ports::free_ports(4),
    )
    .unwrap();
    // Replica 1 keeps its data on a 64 MiB tmpfs, most of it taken by a
    // filler file that is deleted later to free space.
    let disk = SmallDisk::new(&dir.join("small-disk"), "64m");
    let config = dir.join("replica-1.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let moved = text.replace(
        "data_dir = \"replica-1\"",
        &format!("data_dir = \"{}\"", disk.dir.join("replica-1").display()),
    );
    assert_ne!(moved, text, "the data_dir line of replica-1.toml");
    std::fs::write(&config, moved).unwrap();
    let filler = disk.dir.join("filler");
    disk.run("fallocate", &["-l", "40m", filler.to_str().unwrap()]);
    let start_in_disk = || {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("replica-1.log"))
            .unwrap();
        ReplicaProcess(
            disk.command(BIN)
                .args(["serve", "--config"])
                .arg(&config)
                .env("RUST_LOG", "bftlog_server=info")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        )
    };
    let _others: Vec<ReplicaProcess> = [0, 2, 3].iter().map(|&i| serve(BIN, &dir, i)).collect();
    let mut replica_1 = start_in_disk();
    let policy = cluster.policy();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = Client::new(cluster.clone(), ClientOptions::default()).unwrap();
        // Append 1 MiB at a time until replica 1's disk is full and it
        // stops; every receipt is kept.
        let mut acknowledged: Vec<(Vec<u8>, String)> = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut batch = 0u32;
        let exit = loop {
            assert!(Instant::now() < deadline, "replica 1 never stopped");
            if let Some(status) = replica_1.0.try_wait().unwrap() {
                break status;
            }
            batch += 1;
            let entries: Vec<Vec<u8>> = (0..32u32)
                .map(|i| {
                    let mut e = format!("fill {batch} {i} ").into_bytes();
                    e.resize(32 << 10, b'x');
                    e
                })
                .collect();
            if let Ok(Ok(receipts)) =
                tokio::time::timeout(Duration::from_secs(30), client.append(&entries)).await
            {
                for (entry, receipt) in entries.into_iter().zip(receipts) {
                    acknowledged.push((entry, receipt.tlog_proof()));
                }
            }
        };
        assert!(
            !exit.success(),
            "a replica that cannot write exits with an error"
        );
        let log = std::fs::read_to_string(dir.join("replica-1.log")).unwrap();
        let cause: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("No space left on device"))
            .collect();
        assert!(!cause.is_empty(), "the log names the cause:\n{log}");
        let exit_line = log
            .lines()
            .find(|l| l.starts_with("Error: "))
            .unwrap_or_else(|| panic!("an exit line:\n{log}"));
        assert!(
            exit_line.contains("replica 1 stopped")
                && exit_line.contains("No space left on device"),
            "its exit line says why it stopped: {exit_line}"
        );
        assert!(!log.contains("panicked"), "{log}");
        // The others go on; nothing acknowledged is lost.
        let receipts = client
            .append(&[b"after the disk filled".to_vec()])
            .await
            .unwrap();
        assert_eq!(receipts.len(), 1);
        for (entry, proof) in &acknowledged {
            TlogProof::parse(proof.as_bytes())
                .unwrap()
                .verify_entry(&policy, entry)
                .unwrap();
        }
        // Space freed: the restarted replica resumes and catches up.
        disk.run("rm", &[filler.to_str().unwrap()]);
        replica_1 = start_in_disk();
        let target = served_size(&client, 0).await.expect("replica 0 serves");
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if served_size(&client, 1).await.is_some_and(|s| s >= target) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "replica 1 did not catch up after its restart"
            );
            assert!(
                replica_1.0.try_wait().unwrap().is_none(),
                "replica 1 stopped again"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        eprintln!(
            "{} entries acknowledged before the disk filled; replica 1 caught up to {target}",
            acknowledged.len()
        );
    });
    drop(replica_1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_or_truncated_database_is_refused_with_its_name() {
    let dir = test_dir::TestDir::new(&format!("disk-corrupt-{}", std::process::id()));
    let cluster = init_cluster(
        &dir,
        "test.example/log",
        1,
        [127, 0, 0, 1].into(),
        ports::free_ports(1),
    )
    .unwrap();
    let load = || {
        let mut cfg = ReplicaConfig::load(&dir.join("replica-0.toml")).unwrap();
        cfg.consensus.round_timeout_ms = 300;
        cfg
    };
    let node = Node::start(load()).await.unwrap();
    let client = Client::new(cluster.clone(), ClientOptions::default()).unwrap();
    client
        .append(&[b"before the damage".to_vec()])
        .await
        .unwrap();
    node.shutdown().await.unwrap();
    let file = load().data_dir.join("bftlog.redb");
    let original = std::fs::read(&file).unwrap();
    // Its first page overwritten, then the file cut short: each refused at
    // start with an error that names the file.
    let mut garbled = original.clone();
    garbled[..4096.min(original.len())].fill(0xa5);
    let truncated = original[..original.len() / 3].to_vec();
    for (what, bytes) in [("garbled", garbled), ("truncated", truncated)] {
        std::fs::write(&file, &bytes).unwrap();
        let started = std::panic::AssertUnwindSafe(Node::start(load()));
        let result = futures_lite_catch(started).await;
        match result {
            Ok(Err(e)) => {
                let message = e.to_string();
                assert!(
                    message.contains("bftlog.redb"),
                    "{what}: the error names the file: {message}"
                );
            }
            Ok(Ok(node)) => {
                node.shutdown().await.ok();
                panic!("{what}: a damaged database was opened");
            }
            Err(_) => panic!("{what}: opening a damaged database panicked"),
        }
    }
}

/// Awaits `future`, turning a panic into `Err` (a panic is the failure
/// this test looks for).
async fn futures_lite_catch<F: std::future::Future>(
    future: std::panic::AssertUnwindSafe<F>,
) -> Result<F::Output, Box<dyn std::any::Any + Send>>
where
    F::Output: Send,
{
    use std::pin::pin;
    use std::task::Poll;
    let mut future = pin!(future.0);
    std::future::poll_fn(move |cx| {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| future.as_mut().poll(cx))) {
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(panic) => Poll::Ready(Err(panic)),
        }
    })
    .await
}
