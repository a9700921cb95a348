//! `cargo bench -p bftlog-witness --bench witness [-- LOGS STEPS]`
//!
//! Throughput of add-checkpoint for 4-replica logs (three replica
//! signatures per checkpoint, a consistency proof per request), over HTTP
//! on 127.0.0.1 with a durable database in a temporary directory.
//!
//! LOGS origins (default 64) each get STEPS (default 200) successive
//! checkpoints; one keep-alive connection per origin submits them in order,
//! so the server sees LOGS concurrent requests. Checkpoints are signed
//! before the clock starts. Prints wall-clock requests/s, latency
//! percentiles, and requests per CPU-second of this process; the process
//! also runs the load generator, so that last figure is a lower bound for
//! the witness alone. A second section times the HTTP-free core.

use bftlog_spec::checkpoint::Checkpoint;
use bftlog_spec::merkle::{self, MemoryTree};
use bftlog_spec::note::{KeyType, Note, SignerKey};
use bftlog_witness::log_config::LogConfig;
use bftlog_witness::request::format_add_checkpoint;
use bftlog_witness::server::{Server, ServerConfig};
use bftlog_witness::store::Store;
use bftlog_witness::witness::Witness;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// CPU time (user + system) of this process, from /proc/self/stat.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("Linux /proc");
    // Fields after the parenthesised command name; utime and stime are
    // fields 14 and 15 overall, in clock ticks (USER_HZ = 100 on Linux).
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// Bodies for `steps` successive checkpoints of one origin.
fn workload(origin: &str, steps: usize) -> (LogConfig, Vec<String>) {
    let keys: Vec<SignerKey> = (0..4u8)
        .map(|i| {
            let mut seed = [i + 1; 32];
            seed[..origin.len().min(32)]
                .copy_from_slice(&origin.as_bytes()[..origin.len().min(32)]);
            SignerKey::new(
                origin,
                KeyType::Ed25519,
                ed25519_dalek::SigningKey::from_bytes(&seed),
            )
            .unwrap()
        })
        .collect();
    let config = LogConfig::new(origin, keys.iter().map(|k| k.verifier()).collect(), None).unwrap();
    let mut tree = MemoryTree::new();
    let mut old = 0u64;
    let mut bodies = Vec::with_capacity(steps);
    for step in 0..steps {
        // Grow by 1..=64 leaves per checkpoint, like a log committing
        // batches; proofs are then ~log2(size) hashes.
        let grow = 1 + (step * 37 % 64) as u64;
        for _ in 0..grow {
            let n = tree.size();
            tree.append(merkle::leaf_hash(format!("{origin} {n}").as_bytes()));
        }
        let size = tree.size();
        let checkpoint = Checkpoint::new(origin, size, tree.root());
        let mut note = Note::new(&checkpoint.format()).unwrap();
        for key in &keys[..3] {
            note.sign(key).unwrap();
        }
        let proof = merkle::prove_consistency(old, size, &tree).unwrap();
        bodies.push(format_add_checkpoint(old, &proof, &note.format()));
        old = size;
    }
    (config, bodies)
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let logs: usize = args.first().map_or(64, |a| a.parse().expect("LOGS"));
    let steps: usize = args.get(1).map_or(200, |a| a.parse().expect("STEPS"));
    println!(
        "witness add-checkpoint benchmark: {logs} logs x {steps} checkpoints, 4 replicas, 3 signatures each"
    );
    let workloads: Vec<(LogConfig, Vec<String>)> = (0..logs)
        .map(|i| workload(&format!("bench.example/log-{i}"), steps))
        .collect();

    let dir = tempfile::tempdir().unwrap();
    let key = SignerKey::new(
        "bench.example/witness",
        KeyType::CosignatureV1,
        ed25519_dalek::SigningKey::from_bytes(&[9; 32]),
    )
    .unwrap();
    let store = Store::open(&dir.path().join("witness.redb")).unwrap();
    for (config, _) in &workloads {
        store.add_log(config).unwrap();
    }
    let witness = Arc::new(Witness::new(key.clone(), store).unwrap());

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (elapsed, cpu, mut latencies, batches) = runtime.block_on(async {
        let server = Server::start(
            witness,
            "127.0.0.1:0".parse().unwrap(),
            ServerConfig::default(),
        )
        .await
        .unwrap();
        let addr = server.local_addr();
        let cpu_start = cpu_time();
        let start = Instant::now();
        let mut tasks = Vec::new();
        for (_, bodies) in workloads {
            tasks.push(tokio::spawn(async move {
                let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
                stream.set_nodelay(true).unwrap();
                let (mut sender, conn) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream))
                        .await
                        .unwrap();
                tokio::spawn(conn);
                let mut latencies = Vec::with_capacity(bodies.len());
                for body in bodies {
                    let t = Instant::now();
                    let request = hyper::Request::post("/add-checkpoint")
                        .header("host", addr.to_string())
                        .body(Full::new(Bytes::from(body)))
                        .unwrap();
                    let response = sender.send_request(request).await.unwrap();
                    let status = response.status().as_u16();
                    let _ = response.into_body().collect().await.unwrap();
                    assert_eq!(status, 200, "every checkpoint extends the last");
                    latencies.push(t.elapsed());
                }
                latencies
            }));
        }
        let mut latencies = Vec::new();
        for t in tasks {
            latencies.extend(t.await.unwrap());
        }
        let elapsed = start.elapsed();
        let cpu = cpu_time() - cpu_start;
        let batches = server
            .metrics()
            .batches
            .load(std::sync::atomic::Ordering::Relaxed);
        server.shutdown().await;
        (elapsed, cpu, latencies, batches)
    });
    latencies.sort();
    let n = latencies.len() as f64;
    println!(
        "http: {} requests in {:.2} s = {:.0} requests/s; latency p50 {:.2} ms p90 {:.2} ms p99 {:.2} ms max {:.2} ms",
        latencies.len(),
        elapsed.as_secs_f64(),
        n / elapsed.as_secs_f64(),
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.9).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().unwrap().as_secs_f64() * 1e3,
    );
    println!(
        "http: process CPU {:.2} s over {:.2} s wall ({:.2} cores busy) = {:.0} requests per CPU-second (witness + load generator); {} durable transactions ({:.1} requests each)",
        cpu.as_secs_f64(),
        elapsed.as_secs_f64(),
        cpu.as_secs_f64() / elapsed.as_secs_f64(),
        n / cpu.as_secs_f64(),
        batches,
        n / batches.max(1) as f64,
    );

    // The core alone, one thread: check (parse + 3 Ed25519 verifications)
    // and commit in batches, in memory and on disk.
    for durable in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let store = if durable {
            Store::open(&dir.path().join("witness.redb")).unwrap()
        } else {
            Store::in_memory().unwrap()
        };
        let logs = 16;
        let workloads: Vec<_> = (0..logs)
            .map(|i| workload(&format!("core.example/log-{i}"), 100))
            .collect();
        for (config, _) in &workloads {
            store.add_log(config).unwrap();
        }
        let witness = Witness::new(key.clone(), store).unwrap();
        let start = Instant::now();
        let mut count = 0;
        for step in 0..100 {
            let batch: Vec<_> = workloads
                .iter()
                .map(|(_, bodies)| witness.check(bodies[step].as_bytes()).unwrap())
                .collect();
            for outcome in witness.commit(&batch, 1_700_000_000) {
                assert!(matches!(
                    outcome,
                    bftlog_witness::witness::Outcome::Cosigned(_)
                ));
                count += 1;
            }
        }
        let elapsed = start.elapsed();
        println!(
            "core ({}): {count} checkpoints in batches of {logs} in {:.2} s = {:.0} per second on one thread",
            if durable {
                "redb, durable"
            } else {
                "in-memory redb"
            },
            elapsed.as_secs_f64(),
            count as f64 / elapsed.as_secs_f64()
        );
    }
}
