//! A quick append load against an in-process local cluster (durable redb,
//! QUIC on 127.0.0.1), until `bftlog bench` (issue 6) replaces it.
//!
//! `cargo run --release -p bftlog-server --example load -- [replicas] [clients] [batch] [seconds]`
//! (defaults 4 16 256 10; entries are 256 bytes). Prints verified entries/s
//! and per-append latency percentiles (submit → verified receipts).

use std::time::{Duration, Instant};

use bftlog_server::client::{Client, ClientOptions};
use bftlog_server::config::{ReplicaConfig, init_cluster};
use bftlog_server::node::Node;

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let get = |i: usize, d: u64| args.get(i).copied().unwrap_or(d);
    let (replicas, clients, batch, seconds) =
        (get(0, 4) as usize, get(1, 16), get(2, 256), get(3, 10));
    let dir = std::env::temp_dir().join(format!("bftlog-load-{}", std::process::id()));
    let cluster = init_cluster(
        &dir,
        "load.example/log",
        replicas,
        [127, 0, 0, 1].into(),
        7900,
    )?;
    let mut nodes = Vec::new();
    for i in 0..replicas {
        nodes
            .push(Node::start(ReplicaConfig::load(&dir.join(format!("replica-{i}.toml")))?).await?);
    }
    let client = Client::new(cluster, ClientOptions::default())?;
    client.append(&[b"warm-up".to_vec()]).await?;
    let start = Instant::now();
    let deadline = start + Duration::from_secs(seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        let client = client.clone();
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            let mut entries = 0u64;
            let mut n = 0u64;
            while Instant::now() < deadline {
                let items: Vec<Vec<u8>> = (0..batch)
                    .map(|i| {
                        let mut e = format!("client {c} append {n} entry {i} ").into_bytes();
                        e.resize(256, b'.');
                        e
                    })
                    .collect();
                n += 1;
                let t = Instant::now();
                let receipts = client.append(&items).await.expect("append");
                latencies.push(t.elapsed());
                entries += receipts.len() as u64;
            }
            (entries, latencies)
        });
    }
    let mut total = 0;
    let mut latencies = Vec::new();
    while let Some(r) = tasks.join_next().await {
        let (e, l) = r?;
        total += e;
        latencies.extend(l);
    }
    let elapsed = start.elapsed().as_secs_f64();
    latencies.sort();
    let pct =
        |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize].as_secs_f64() * 1000.0;
    println!(
        "replicas {replicas} clients {clients} batch {batch} x 256 B: {total} entries in {elapsed:.1} s = {:.0} entries/s; append latency p50 {:.1} ms p90 {:.1} ms p99 {:.1} ms max {:.1} ms",
        total as f64 / elapsed,
        pct(0.5),
        pct(0.9),
        pct(0.99),
        pct(1.0)
    );
    for node in nodes {
        node.shutdown().await?;
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
