//! `bftlog bench --attack KIND`: honest clients' throughput and latency
//! with and without one attack, and each replica's peak memory.
//!
//! It starts a local cluster of `bftlog serve` processes. For a peer
//! attack the bench plays the last replica itself, with its key, so that
//! replica's process is not started: the clean figure is then the same
//! cluster with that replica down, and the difference is what its
//! messages cost the others. The attacker is paced (`--attack-mib-per-s`
//! per replica) so that on one machine it measures what its messages do,
//! not the cores it takes.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bftlog_server::attack::{Attack, Attacker};
use bftlog_server::client::{Client, ClientOptions};
use bftlog_spec::note::SignerKey;
use serde_json::json;

use super::{BenchArgs, TempDir, init_bench_cluster, percentile, spawn_replica, status_kib};

/// A replica process, killed when dropped.
struct Process(std::process::Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Honest appends over one phase.
struct Phase {
    entries_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
}

/// `clients` closed-loop appenders for `seconds`; every receipt is
/// verified by the client library before it counts.
async fn measure(client: &Client, args: &BenchArgs, tag: &str) -> Phase {
    let until = Instant::now() + Duration::from_secs(args.seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..args.clients {
        let client = client.clone();
        let (batch, entry_bytes) = (args.batch, args.entry_bytes);
        let prefix = format!("bench {} {tag} client {c} append ", std::process::id());
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            let mut n = 0u64;
            while Instant::now() < until {
                n += 1;
                let entries: Vec<Vec<u8>> = (0..batch)
                    .map(|i| {
                        let mut e = format!("{prefix}{n} entry {i} ").into_bytes();
                        e.resize(entry_bytes.max(e.len()), b'.');
                        e.truncate(entry_bytes.max(1));
                        e
                    })
                    .collect();
                let started = Instant::now();
                let left = until.saturating_duration_since(started) + Duration::from_secs(30);
                match tokio::time::timeout(left, client.append(&entries)).await {
                    Ok(Ok(_)) => latencies.push(started.elapsed()),
                    _ => errors += 1,
                }
            }
            (latencies, errors)
        });
    }
    let started = Instant::now();
    let mut latencies = Vec::new();
    let mut errors = 0;
    while let Some(Ok((l, e))) = tasks.join_next().await {
        latencies.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    Phase {
        entries_per_s: (latencies.len() * args.batch) as f64 / elapsed,
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
        errors,
    }
}

pub async fn run(args: &BenchArgs, attack: Attack, json_output: bool) -> Result<()> {
    if args.cluster.is_some() {
        bail!("--attack starts its own cluster (it plays one of its replicas or clients)");
    }
    let n = args.replicas;
    if attack.is_peer_attack() && n < 4 {
        bail!("a peer attack needs at least 4 replicas (f ≥ 1)");
    }
    let dir = std::env::temp_dir().join(format!("bftlog-bench-attack-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let _cleanup = TempDir(dir.clone(), !args.keep);
    let (cluster, keys) = init_bench_cluster(&dir, n)?;
    let attacker_id = attack.is_peer_attack().then_some(n - 1);
    let started: Vec<usize> = (0..n).filter(|i| Some(*i) != attacker_id).collect();
    let exe = std::env::current_exe().context("locating the bftlog binary")?;
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let workers = (cores / started.len()).max(1).to_string();
    let mut replicas = Vec::new();
    for &i in &started {
        replicas.push(Process(spawn_replica(&exe, &dir, i, &workers)?));
    }
    let replica = match attacker_id {
        Some(id) => {
            let path = dir.join(format!("replica-{id}.key"));
            let text = bftlog_witness::key_file::read_key_file(&path)?;
            let key = SignerKey::parse(text.trim_end())
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            Some((id as u16, key.signing_key().clone()))
        }
        None => None,
    };
    let options = ClientOptions {
        submitter_key: Some(keys.load),
        ..ClientOptions::default()
    };
    let client = Client::new(cluster.clone(), options)?;
    tokio::time::timeout(
        Duration::from_secs(60),
        client.append(&[b"bench warm-up".to_vec()]),
    )
    .await
    .context("the cluster did not commit within 60 s")??;
    let clean = measure(&client, args, "clean").await;
    let attacker = Attacker {
        cluster: cluster.clone(),
        replica,
        bytes_per_s_per_target: (args.attack_mib_per_s * (1 << 20) as f64) as u64,
        submitter_key: Some(keys.flooder),
    };
    let until = Instant::now() + Duration::from_secs(args.seconds);
    let attacking = tokio::spawn(async move { attacker.run(attack, until).await });
    let attacked = measure(&client, args, "attacked").await;
    let counts = attacking.await.context("the attack task")?;
    let sent = counts.sent.load(std::sync::atomic::Ordering::Relaxed);
    let failed = counts.failed.load(std::sync::atomic::Ordering::Relaxed);
    let peaks: Vec<(usize, Option<u64>)> = started
        .iter()
        .zip(&replicas)
        .map(|(i, r)| (*i, status_kib(r.0.id(), "VmHWM").map(|k| k >> 10)))
        .collect();
    let share = attacked.entries_per_s / clean.entries_per_s.max(f64::MIN_POSITIVE);
    if json_output {
        let phase = |p: &Phase| json!({"entries_per_s": p.entries_per_s, "p50_ms": p.p50_ms, "p99_ms": p.p99_ms, "errors": p.errors});
        println!(
            "{}",
            json!({
                "attack": format!("{attack:?}"),
                "replicas": n,
                "attacker_replica": attacker_id,
                "clients": args.clients,
                "batch": args.batch,
                "seconds": args.seconds,
                "clean": phase(&clean),
                "attacked": phase(&attacked),
                "attacked_share_of_clean": share,
                "attacker_sent": sent,
                "attacker_failed": failed,
                "peak_rss_mib": peaks.iter().map(|(i, p)| json!({"replica": i, "mib": p})).collect::<Vec<_>>(),
            })
        );
    } else {
        let who = match attacker_id {
            Some(id) => format!("replica {id} (clean: that replica down)"),
            None => "one client".into(),
        };
        println!(
            "attack {attack:?} by {who}, {} clients x {} entries, {} s each",
            args.clients, args.batch, args.seconds
        );
        println!(
            "clean:    {:.0} entries/s, p50 {:.1} ms, p99 {:.1} ms ({} errors)",
            clean.entries_per_s, clean.p50_ms, clean.p99_ms, clean.errors
        );
        println!(
            "attacked: {:.0} entries/s, p50 {:.1} ms, p99 {:.1} ms ({} errors): {:.0}% of clean",
            attacked.entries_per_s,
            attacked.p50_ms,
            attacked.p99_ms,
            attacked.errors,
            share * 100.0
        );
        println!("attacker: sent {sent} ({failed} failed)");
        for (i, peak) in &peaks {
            match peak {
                Some(mib) => println!("replica {i}: peak RSS {mib} MiB"),
                None => println!("replica {i}: peak RSS unknown (no /proc)"),
            }
        }
    }
    Ok(())
}
