//! `bftlog monitor` and `bftlog mirror` as processes: following a running
//! cluster's tiles, keeping state between runs, a mirror that any static
//! server serves as a tiles log, and a split view reported as evidence
//! that the offline verifier accepts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use bftlog_server::admission::Quota;
use bftlog_server::client::{Client, ClientOptions};
use bftlog_server::config::{ReplicaConfig, init_cluster};
use bftlog_server::node::Node;
use bftlog_spec::checkpoint::Checkpoint;
use bftlog_spec::evidence::{Evidence, Kind};
use bftlog_spec::note::{KeyType, SignerKey};
use bftlog_spec::policy::Policy;
use bftlog_verify::tiles::tiles_of_entries;
use serde_json::Value;

#[path = "support/ports.rs"]
mod ports;

#[path = "../src/test_dir.rs"]
mod test_dir;

fn bftlog(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bftlog"))
        .args(args)
        .output()
        .unwrap()
}

/// Runs a command that prints one JSON object per line; returns the exit
/// code and the objects.
fn bftlog_json(args: &[&str]) -> (i32, Vec<Value>) {
    let out = bftlog(args);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let events = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    (out.status.code().unwrap(), events)
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Python's static file server on `dir`: "any static server".
struct StaticServer {
    child: Child,
    url: String,
}

impl StaticServer {
    fn start(dir: &Path) -> Self {
        let port = ports::free_ports(1);
        let child = Command::new("python3")
            .args(["-m", "http.server", "--bind", "127.0.0.1", "--directory"])
            .arg(dir)
            .arg(port.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3 runs (the tests' static file server)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "python3 -m http.server did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        StaticServer {
            child,
            url: format!("http://127.0.0.1:{port}/"),
        }
    }
}

impl Drop for StaticServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn wait_for_size(addr: SocketAddr, policy: &Policy, size: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let url = format!("http://{addr}/checkpoint");
    loop {
        if let Ok(response) = reqwest::get(&url).await
            && response.status() == 200
            && let Ok(body) = response.bytes().await
            && let Ok(verified) = policy.verify_checkpoint_bytes(&body)
            && verified.checkpoint().size >= size
        {
            return;
        }
        assert!(Instant::now() < deadline, "{url} did not reach {size}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_and_mirror_follow_a_cluster_through_its_tiles() {
    let dir = test_dir::TestDir::new(&format!("follow-cluster-{}", std::process::id()));
    let cluster = init_cluster(
        &dir,
        "test.example/log",
        4,
        [127, 0, 0, 1].into(),
        ports::free_ports(4),
    )
    .unwrap();
    let mut nodes = Vec::new();
    for i in 0..4 {
        let mut cfg = ReplicaConfig::load(&dir.join(format!("replica-{i}.toml"))).unwrap();
        cfg.consensus.round_timeout_ms = 300;
        cfg.tiles_listen = Some(([127, 0, 0, 1], 0).into());
        cfg.admission.quota = Quota::UNLIMITED;
        nodes.push(Node::start(cfg).await.unwrap());
    }
    let tiles = nodes[1].tiles_addr().unwrap();
    let url = format!("http://{tiles}");
    let policy = cluster.policy();
    let policy_file = dir.join("policy.txt");
    std::fs::write(&policy_file, cluster.policy_text()).unwrap();
    let (state, mirror) = (dir.join("monitor-state"), dir.join("mirror"));
    let monitor_args = [
        "monitor",
        "--tiles",
        &url,
        "--policy",
        s(&policy_file),
        "--state",
        s(&state),
        "--json",
    ];
    let mirror_args = [
        "mirror",
        "--tiles",
        &url,
        "--policy",
        s(&policy_file),
        "--out",
        s(&mirror),
        "--json",
    ];

    let client = Client::new(cluster.clone(), ClientOptions::default()).unwrap();
    let entries: Vec<Vec<u8>> = (0..1000)
        .map(|i| format!("followed {i}").into_bytes())
        .collect();
    client.append(&entries[..300]).await.unwrap();
    wait_for_size(tiles, &policy, 300).await;

    let (code, events) = bftlog_json(&monitor_args);
    assert_eq!(code, 0, "{events:?}");
    let first = &events[0];
    assert_eq!(first["event"], "advanced", "{first}");
    assert_eq!(first["from_size"], 0);
    let first_size = first["checkpoint"]["size"].as_u64().unwrap();
    assert!(first_size >= 300);
    assert_eq!(first["entries_verified"], first_size);
    let (code, events) = bftlog_json(&mirror_args);
    assert_eq!((code, &events[0]["event"]), (0, &"advanced".into()));

    // Across tile boundaries; the second runs start from their state.
    client.append(&entries[300..]).await.unwrap();
    wait_for_size(tiles, &policy, 1000).await;
    let (code, events) = bftlog_json(&monitor_args);
    assert_eq!(code, 0, "{events:?}");
    assert_eq!(events[0]["event"], "advanced");
    assert_eq!(events[0]["from_size"], first_size);
    assert_eq!(events[0]["checkpoint"]["size"], 1000);
    assert_eq!(events[0]["entries_verified"], 1000 - first_size);
    let (code, events) = bftlog_json(&monitor_args);
    assert_eq!(code, 0);
    assert_eq!(
        events[0],
        serde_json::json!({"event": "unchanged", "size": 1000})
    );
    let (code, events) = bftlog_json(&mirror_args);
    assert_eq!(code, 0, "{events:?}");
    assert_eq!(events[0]["from_size"], first_size);

    // The mirror is a tiles log: the offline audit passes, and a monitor
    // reads it through a plain static file server.
    assert!(!mirror.join(".staging").exists(), "staging is cleared");
    let report = bftlog_verify::tiles_audit::audit_tiles_dir(&policy, &mirror, |_, _| {}).unwrap();
    assert_eq!(report.entries_checked, 1000);
    let server = StaticServer::start(&mirror);
    let (code, events) = bftlog_json(&[
        "monitor",
        "--tiles",
        &server.url,
        "--policy",
        s(&policy_file),
        "--json",
    ]);
    assert_eq!(code, 0, "{events:?}");
    assert_eq!(events[0]["checkpoint"]["size"], 1000);
    drop(server);

    // Human output.
    let out = bftlog(&["monitor", "--tiles", &url, "--policy", s(&policy_file)]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with("verified test.example/log from 0 to 1000: 1000 entries, 4 bundles"),
        "{text}"
    );

    // A client that knows the log by its cluster key alone (`log.vkey`):
    // the served checkpoint carries the cluster signature.
    let out = bftlog(&[
        "monitor",
        "--tiles",
        &url,
        "--log-key",
        s(&dir.join("log.vkey")),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with("verified test.example/log from 0 to 1000"),
        "{text}"
    );
    let out = bftlog(&["monitor", "--tiles", &url]);
    assert!(!out.status.success(), "a policy or a log key is required");

    for node in nodes {
        node.shutdown().await.unwrap();
    }
}

/// A log we sign ourselves, to fork it.
struct FakeLog {
    key: SignerKey,
}

impl FakeLog {
    fn policy_text(&self) -> String {
        format!("log {}\nquorum none\n", self.key.verifier())
    }

    /// Publishes `entries` as a tiles log in `dir` (replacing what was
    /// there).
    fn publish(&self, dir: &Path, entries: &[Vec<u8>]) {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).unwrap();
        self.add_tiles(dir, entries);
        self.sign_checkpoint(dir, entries);
    }

    /// Writes every tile and bundle of a log of `entries` into `dir`.
    fn add_tiles(&self, dir: &Path, entries: &[Vec<u8>]) {
        let (_, files) = tiles_of_entries(entries.iter().map(|e| e.as_slice())).unwrap();
        for (tile, bytes) in files {
            let path = dir.join(tile.path());
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, bytes).unwrap();
        }
    }

    /// Writes the signed checkpoint of a log of `entries` into `dir`.
    fn sign_checkpoint(&self, dir: &Path, entries: &[Vec<u8>]) {
        let (tree, _) = tiles_of_entries(entries.iter().map(|e| e.as_slice())).unwrap();
        let note = Checkpoint::new("fake.example/log", tree.size(), tree.root())
            .sign(&self.key)
            .unwrap();
        std::fs::write(dir.join("checkpoint"), note.format()).unwrap();
    }
}

#[test]
fn monitor_reports_a_split_view_with_evidence_and_keeps_its_state() {
    let dir = test_dir::TestDir::new(&format!("follow-fork-{}", std::process::id()));
    let log = FakeLog {
        key: SignerKey::new(
            "fake.example/log",
            KeyType::Ed25519,
            bftlog_spec::ed25519_dalek::SigningKey::from_bytes(&[3; 32]),
        )
        .unwrap(),
    };
    let policy_file = dir.join("policy.txt");
    std::fs::write(&policy_file, log.policy_text()).unwrap();
    let policy = Policy::parse(log.policy_text().as_bytes()).unwrap();
    let served: PathBuf = dir.join("served");
    let state = dir.join("state");
    let entries = |n: u64, fork: &str| -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| {
                if i == 5 {
                    format!("entry {i}{fork}").into_bytes()
                } else {
                    format!("entry {i}").into_bytes()
                }
            })
            .collect()
    };
    // An empty log first: its checkpoint is verified, and growing from it
    // needs no proof.
    log.publish(&served, &[]);
    let server = StaticServer::start(&served);
    let args = [
        "monitor",
        "--tiles",
        &server.url,
        "--policy",
        s(&policy_file),
        "--state",
        s(&state),
        "--json",
    ];
    let (code, events) = bftlog_json(&args);
    assert_eq!(code, 0, "{events:?}");
    assert_eq!(events[0]["checkpoint"]["size"], 0);
    log.publish(&served, &entries(300, ""));
    let (code, events) = bftlog_json(&args);
    assert_eq!(code, 0, "{events:?}");
    assert_eq!(events[0]["from_size"], 0);
    assert_eq!(events[0]["checkpoint"]["size"], 300);

    // The log grows honestly: accepted.
    log.publish(&served, &entries(600, ""));
    assert_eq!(bftlog_json(&args).0, 0);

    // A larger tree that rewrote entry 5: inconsistent, with evidence.
    log.publish(&served, &entries(900, " rewritten"));
    let (code, events) = bftlog_json(&args);
    assert_eq!(code, 3, "{events:?}");
    assert_eq!(events[0]["event"], "split-view");
    let file = PathBuf::from(events[0]["evidence_file"].as_str().unwrap());
    assert!(file.starts_with(state.join("evidence")));
    let evidence = Evidence::parse(&std::fs::read(&file).unwrap()).unwrap();
    let verified = evidence.check(&policy).unwrap();
    assert_eq!(verified.kind, Kind::Inconsistent);
    assert_eq!(
        (verified.checkpoint_a.size, verified.checkpoint_b.size),
        (600, 900)
    );
    assert_eq!(verified.signed_both, vec![log.key.verifier()]);

    // The state stayed at 600: the same fork at size 600 is a same-size
    // split view.
    log.publish(&served, &entries(600, " rewritten"));
    let (code, events) = bftlog_json(&args);
    assert_eq!(code, 3, "{events:?}");
    let file = PathBuf::from(events[0]["evidence_file"].as_str().unwrap());
    let evidence = Evidence::parse(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(evidence.check(&policy).unwrap().kind, Kind::SameSize);

    // An honest checkpoint whose bundle was tampered with after signing:
    // invalid (exit 1), not a split view, and the state does not move.
    log.publish(&served, &entries(700, ""));
    let bundle = served.join("tile/entries/002.p/188");
    let mut bytes = std::fs::read(&bundle).unwrap();
    *bytes.last_mut().unwrap() ^= 1;
    std::fs::write(&bundle, &bytes).unwrap();
    let (code, events) = bftlog_json(&args);
    assert_eq!(code, 1, "{events:?}");
    assert_eq!(events[0]["event"], "error");
    assert!(
        events[0]["message"]
            .as_str()
            .unwrap()
            .contains("tile/0/002.p/188"),
        "{events:?}"
    );
    log.publish(&served, &entries(700, ""));
    let (code, events) = bftlog_json(&args);
    assert_eq!(code, 0, "{events:?}");
    assert_eq!(events[0]["from_size"], 600);

    // A smaller checkpoint (a stale cache) is reported, not an error.
    log.publish(&served, &entries(650, ""));
    let (code, events) = bftlog_json(&args);
    assert_eq!(code, 0);
    assert_eq!(events[0]["event"], "behind");

    // A log that has grown past its served checkpoint and deleted that
    // checkpoint's partial level-0 tile and bundle, as C2SP allows once
    // the full ones exist: the monitor cuts them from the full ones.
    log.publish(&served, &entries(1100, ""));
    log.add_tiles(&served, &entries(800, ""));
    for partial in ["tile/0/003.p/32", "tile/entries/003.p/32"] {
        std::fs::remove_file(served.join(partial)).unwrap();
    }
    log.sign_checkpoint(&served, &entries(800, ""));
    let (code, events) = bftlog_json(&args);
    assert_eq!(code, 0, "{events:?}");
    assert_eq!(events[0]["from_size"], 700);
    assert_eq!(events[0]["checkpoint"]["size"], 800);

    // A state whose edge does not match its checkpoint is refused with a
    // clear message, not blamed on the log.
    let state_file = state.join("state");
    let mut bytes = std::fs::read(&state_file).unwrap();
    bytes.truncate(bytes.len() - 32);
    std::fs::write(&state_file, &bytes).unwrap();
    let out = bftlog(&args);
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("not a monitor state file"), "{stderr}");
}
