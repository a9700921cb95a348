//! Real replica processes on 127.0.0.1 driven through the `bftlog` CLI;
//! receipts are checked with the offline verifier's library.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use base64::Engine;
use bftlog_server::client::{Client, ClientOptions};
use bftlog_server::config::Cluster;
use bftlog_spec::merkle;
use bftlog_spec::policy::Policy;
use bftlog_spec::wire::{ClientRequest, ClientResponse};

#[path = "support/ports.rs"]
mod ports;

#[path = "support/replica_process.rs"]
mod replica_process;
use replica_process::ReplicaProcess;

const BIN: &str = env!("CARGO_BIN_EXE_bftlog");

#[path = "../src/test_dir.rs"]
mod test_dir;

fn tempdir(tag: &str) -> test_dir::TestDir {
    test_dir::TestDir::new(&format!("proc-{tag}-{}", std::process::id()))
}

fn free_port_base(count: u16) -> u16 {
    ports::free_ports(count)
}

fn free_tcp_port_base(count: u16) -> u16 {
    loop {
        let base = free_port_base(count);
        if (0..count).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            return base;
        }
    }
}

fn bftlog(args: &[&str]) -> Output {
    let out = Command::new(BIN).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "bftlog {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn serve(dir: &Path, i: usize) -> ReplicaProcess {
    replica_process::serve(BIN, dir, i)
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn check(policy: &Policy, proof: &[u8], entry: &[u8]) -> u64 {
    bftlog_verify::check::check_receipt(policy, proof, &merkle::leaf_hash(entry))
        .unwrap_or_else(|e| panic!("receipt does not verify: {e}"))
        .index
}

#[test]
fn a_cluster_of_processes_serves_the_cli_and_survives_kill_9() {
    let dir = tempdir("cli");
    let base = free_port_base(4).to_string();
    let dir_s = dir.to_str().unwrap();
    bftlog(&[
        "init",
        "--dir",
        dir_s,
        "--replicas",
        "4",
        "--origin",
        "test.example/log",
        "--base-port",
        &base,
        "--admission",
        "keys",
    ]);
    let cluster_file = dir.join("cluster.toml");
    let cluster_s = cluster_file.to_str().unwrap();
    // `init --admission keys` lists one new key; appends present it.
    let key_file = dir.join("submitter.key");
    let key_s = key_file.to_str().unwrap();
    let policy = Policy::parse(&std::fs::read(dir.join("policy")).unwrap()).unwrap();
    let mut replicas: Vec<Option<ReplicaProcess>> = (0..4).map(|i| Some(serve(&dir, i))).collect();

    // Plain files: `index N FILE` and FILE.tlog-proof.
    let a = dir.join("a.txt");
    let b = dir.join("b.txt");
    std::fs::write(&a, b"first record").unwrap();
    std::fs::write(&b, b"second record").unwrap();
    let out = bftlog(&[
        "append",
        "--cluster",
        cluster_s,
        "--key",
        key_s,
        a.to_str().unwrap(),
        b.to_str().unwrap(),
    ]);
    let text = stdout(&out);
    let index_a: u64 = text
        .lines()
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let proof_a = std::fs::read(dir.join("a.txt.tlog-proof")).unwrap();
    assert_eq!(check(&policy, &proof_a, b"first record"), index_a);
    check(
        &policy,
        &std::fs::read(dir.join("b.txt.tlog-proof")).unwrap(),
        b"second record",
    );

    // The same entry again: the same index.
    let out = bftlog(&[
        "append",
        "--cluster",
        cluster_s,
        "--key",
        key_s,
        a.to_str().unwrap(),
    ]);
    assert_eq!(stdout(&out), format!("index {index_a} {}\n", a.display()));

    // Without the listed key: refused, every replica alike, and said so.
    let out = Command::new(BIN)
        .args(["append", "--cluster", cluster_s, a.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Forbidden"), "{stderr}");

    // A checksum file and a PEM bundle: one entry per line / certificate.
    let sums = dir.join("SHA256SUMS");
    std::fs::write(
        &sums,
        format!(
            "{}  app.tar\n{}  app.zip\n",
            "ab".repeat(32),
            "cd".repeat(32)
        ),
    )
    .unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    let pem = dir.join("chain.pem");
    std::fs::write(
        &pem,
        format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\nnoise\n-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            b64.encode(b"\x30\x03\x02\x01\x01"),
            b64.encode(b"\x30\x03\x02\x01\x02")
        ),
    )
    .unwrap();
    bftlog(&[
        "append",
        "--cluster",
        cluster_s,
        "--key",
        key_s,
        "--sha256sums",
        sums.to_str().unwrap(),
    ]);
    bftlog(&[
        "append",
        "--cluster",
        cluster_s,
        "--key",
        key_s,
        "--pem",
        pem.to_str().unwrap(),
    ]);
    for (file, count) in [
        ("SHA256SUMS.receipts.jsonl", 2),
        ("chain.pem.receipts.jsonl", 2),
    ] {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        assert_eq!(text.lines().count(), count, "{file}");
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let entry = b64.decode(v["entry"].as_str().unwrap()).unwrap();
            check(&policy, v["proof"].as_str().unwrap().as_bytes(), &entry);
        }
    }

    // kill -9 a replica, keep appending, restart it: the log continues and
    // it catches up.
    drop(replicas[1].take());
    let c = dir.join("c.txt");
    std::fs::write(&c, b"while replica 1 is down").unwrap();
    bftlog(&[
        "append",
        "--cluster",
        cluster_s,
        "--key",
        key_s,
        c.to_str().unwrap(),
    ]);
    replicas[1] = Some(serve(&dir, 1));
    let d = dir.join("d.txt");
    std::fs::write(&d, b"after the restart").unwrap();
    let out = bftlog(&[
        "append",
        "--cluster",
        cluster_s,
        "--key",
        key_s,
        d.to_str().unwrap(),
    ]);
    let index_d: u64 = stdout(&out).split(' ').nth(1).unwrap().parse().unwrap();
    assert_eq!(index_d, 7);

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = Client::new(
            Cluster::load(&cluster_file).unwrap(),
            ClientOptions::default(),
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(ClientResponse::Checkpoint { note }) =
                client.request(1, &ClientRequest::GetCheckpoint).await
            {
                if policy
                    .verify_checkpoint_bytes(&note)
                    .unwrap()
                    .checkpoint()
                    .size
                    == 8
                {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "replica 1 did not catch up");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });

    // Read commands.
    let out = bftlog(&["--json", "checkpoint", "--cluster", cluster_s]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["size"], 8);
    let out = bftlog(&[
        "prove",
        "--cluster",
        cluster_s,
        "--entry",
        a.to_str().unwrap(),
    ]);
    assert_eq!(check(&policy, &out.stdout, b"first record"), index_a);
    let out = bftlog(&["prove", "--cluster", cluster_s, "--index", "7"]);
    assert_eq!(check(&policy, &out.stdout, b"after the restart"), 7);
    let out = bftlog(&[
        "get",
        "--cluster",
        cluster_s,
        "--start",
        "7",
        "--count",
        "5",
    ]);
    assert_eq!(
        stdout(&out),
        format!("{}\n", b64.encode(b"after the restart"))
    );
    let out = bftlog(&[
        "consistency",
        "--cluster",
        cluster_s,
        "--old",
        "3",
        "--new",
        "8",
    ]);
    let proof: Vec<merkle::Hash> = stdout(&out)
        .lines()
        .map(|l| merkle::Hash::from_base64(l).unwrap())
        .collect();
    assert_eq!(proof.len(), merkle::consistency_proof_len(3, 8));

    // Misconfiguration is refused with a message naming the problem.
    let bad = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(dir.join("missing.toml"))
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("missing.toml"));
}

#[test]
fn dev_runs_a_local_cluster_and_resumes_it() {
    let dir = tempdir("dev");
    let base = free_port_base(4).to_string();
    let witness_base = free_tcp_port_base(2).to_string();
    let tiles_base = free_tcp_port_base(4).to_string();
    let dir_s = dir.to_str().unwrap();
    let run_dev = || -> serde_json::Value {
        let out = bftlog(&[
            "--json",
            "dev",
            "--dir",
            dir_s,
            "--base-port",
            &base,
            "--witness-base-port",
            &witness_base,
            "--tiles-base-port",
            &tiles_base,
            "--no-serve",
        ]);
        serde_json::from_str(&stdout(&out)).unwrap()
    };
    let first = run_dev();
    assert_eq!(first["created"], true);
    assert_eq!(first["appended"], serde_json::json!([0, 1, 2]));
    assert_eq!(first["receipt"]["valid"], true);
    for file in [
        "cluster.toml",
        "policy",
        "log.vkeys",
        "sample-record.tlog-proof",
    ] {
        assert!(dir.join(file).exists(), "{file}");
    }
    // Every replica serves tiles; their base URLs are listed one per line.
    let urls = std::fs::read_to_string(dir.join("tiles-urls")).unwrap();
    let tiles_port: u16 = tiles_base.parse().unwrap();
    let expected: String = (0..4)
        .map(|i| format!("http://127.0.0.1:{}\n", tiles_port + i))
        .collect();
    assert_eq!(urls, expected);
    assert_eq!(first["tiles"].as_array().unwrap().len(), 4);
    // And publish them to DIR/tiles: the checkpoint and its tiles.
    let published = std::fs::read(dir.join("tiles/checkpoint")).unwrap();
    let (_, checkpoint) = bftlog_spec::checkpoint::parse_signed(&published).unwrap();
    assert!(checkpoint.size >= 3);
    assert!(
        dir.join(format!("tiles/tile/0/000.p/{}", checkpoint.size))
            .is_file()
    );
    assert!(
        dir.join(format!("tiles/tile/entries/000.p/{}", checkpoint.size))
            .is_file()
    );
    let second = run_dev();
    assert_eq!(second["created"], false);
    // The fixed samples keep their indexes; the per-run record is new.
    assert_eq!(second["appended"][0], 0);
    assert_eq!(second["appended"][1], 1);
    assert!(second["appended"][2].as_u64().unwrap() >= 3);
    // The receipt carries the cosignatures of both local witnesses: the
    // dev policy's quorum is 2 of 2.
    let policy = Policy::parse(&std::fs::read(dir.join("policy")).unwrap()).unwrap();
    assert_eq!(policy.witnesses().len(), 2);
    assert_eq!(second["witnesses"].as_array().unwrap().len(), 2);
    let proof = std::fs::read(dir.join("sample-record.tlog-proof")).unwrap();
    let entry = std::fs::read(dir.join("sample-record")).unwrap();
    check(&policy, &proof, &entry);
}

/// `bftlog bench` end to end on a small load: its own cluster of
/// processes, every receipt verified, and figures that add up.
#[test]
fn bench_reports_appends_rounds_and_proofs() {
    let out = bftlog(&[
        "--json",
        "bench",
        "--seconds",
        "2",
        "--clients",
        "4",
        "--batch",
        "16",
    ]);
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["replicas"], 4);
    assert_eq!(report["append_errors"], 0, "{report}");
    let entries = report["entries"].as_u64().unwrap();
    assert!(entries > 0 && entries % 16 == 0, "{report}");
    // Every appended entry is in the tree (plus the warm-up entry).
    let size = &report["tree_size"];
    assert!(size["end"].as_u64().unwrap() >= size["start"].as_u64().unwrap() + entries);
    let latency = &report["latency_ms"];
    assert!(latency["p50"].as_f64().unwrap() > 0.0);
    assert!(latency["p50"].as_f64() <= latency["p99"].as_f64());
    let replicas = report["per_replica"].as_array().unwrap();
    assert_eq!(replicas.len(), 4);
    for r in replicas {
        assert!(r["rss_mib"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["written_bytes"].as_u64().unwrap() > 0, "{r}");
        // The core thread is part of the process (ticks are 10 ms, so
        // the two readings may differ by one).
        let core = r["core_thread_cpu_percent"].as_f64().unwrap();
        assert!(
            core > 0.0 && core <= r["cpu_percent"].as_f64().unwrap() + 1.0,
            "{r}"
        );
        // The counters come from the replica's own metrics endpoint.
        let c = &r["consensus"];
        let blocks = c["blocks_committed"].as_f64().unwrap();
        assert!(
            blocks >= 1.0 && c["rounds"].as_f64().unwrap() >= blocks,
            "{r}"
        );
        // Each round that committed wrote at least once, flushed or not.
        assert!(c["durable_writes_per_round"].as_f64().unwrap() > 0.0, "{r}");
        assert!(c["flushes_per_round"].as_f64() <= c["durable_writes_per_round"].as_f64());
    }
    // CPU per entry: the replicas' total is four times their mean.
    let per_entry = &report["cpu_per_entry"];
    let mean = per_entry["replica_mean_us"].as_f64().unwrap();
    let all = per_entry["replicas_total_us"].as_f64().unwrap();
    assert!(
        mean > 0.0 && (all - 4.0 * mean).abs() < 1e-6 * all,
        "{per_entry}"
    );
    assert!(per_entry["bench_process_us"].as_f64().unwrap() > 0.0);

    for per_request in ["1", "8"] {
        let out = bftlog(&[
            "--json",
            "bench",
            "--read",
            "--log-size",
            "3000",
            "--seconds",
            "1",
            "--clients",
            "2",
            "--proofs-per-request",
            per_request,
        ]);
        let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        assert_eq!(report["mode"], "read");
        assert!(report["tree_size"].as_u64().unwrap() >= 3000, "{report}");
        assert!(report["proofs"].as_u64().unwrap() > 0, "{report}");
    }
}
