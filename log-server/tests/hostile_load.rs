//! The hostile-load suite: three real `bftlog serve` processes on
//! 127.0.0.1 (n = 4, f = 1); the test plays the fourth replica as a
//! Byzantine one, with its real key, and a hostile client, running each
//! attack of `bftlog_server::attack` in turn. During each, a well-behaved
//! client keeps appending and every receipt must verify; afterwards each
//! honest replica's peak RSS (VmHWM, from /proc) must be under the
//! documented bound, and the cluster must still serve.
//!
//! Each attack runs 3 s here; `BFTLOG_HOSTILE_SECS=60 cargo test --release
//! -p bftlog-server --test hostile_load -- --nocapture` runs the long
//! version.
//!
//! The well-behaved client connects before the attacks start and keeps
//! its connections (clients send keep-alives): on 127.0.0.1 it shares the
//! attacker's address, whose per-address connection cap a connection flood
//! fills, which a client on another address would not meet.

use std::time::{Duration, Instant};

use bftlog_server::admission::{AdmissionMode, Quota, submitters};
use bftlog_server::attack::{ALL_ATTACKS, Attacker, DEFAULT_ATTACK_BYTES_PER_S};
use bftlog_server::client::{Client, ClientOptions};
use bftlog_server::config::{FIRST_SUBMITTER_KEY_FILE, SUBMITTERS_FILE, init_cluster_admitting};
use bftlog_spec::note::SignerKey;
use bftlog_spec::wire::ClientRequest;

#[path = "support/ports.rs"]
mod ports;

#[path = "support/replica_process.rs"]
mod replica_process;
use replica_process::{ReplicaProcess, serve};

#[path = "../src/test_dir.rs"]
mod test_dir;

const BIN: &str = env!("CARGO_BIN_EXE_bftlog");

/// The peak resident memory allowed per honest replica under attack,
/// with default limits (docs/operating.md, "Limits").
const RSS_BOUND_KIB: u64 = 1536 << 10;

/// VmHWM of a process, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status")
}

#[test]
fn honest_replicas_stay_live_and_bounded_under_each_attack() {
    let secs: u64 = std::env::var("BFTLOG_HOSTILE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let dir = test_dir::TestDir::new(&format!("hostile-load-{}", std::process::id()));
    // Keys mode, as a log on the open internet runs: the well-behaved
    // client's key is listed without limits, the flooder's (`init`'s
    // first key) with the default quota. (In open mode both would share
    // 127.0.0.1's quota.)
    let cluster = init_cluster_admitting(
        &dir,
        "test.example/log",
        4,
        [127, 0, 0, 1].into(),
        ports::free_ports(4),
        AdmissionMode::Keys,
    )
    .unwrap();
    let honest_key = ed25519_dalek::SigningKey::from_bytes(&[42; 32]);
    submitters::append_row(
        &dir.join(SUBMITTERS_FILE),
        "well-behaved",
        &honest_key.verifying_key(),
        Some(Quota::UNLIMITED),
    )
    .unwrap();
    let flooder_key = submitters::load_key_file(&dir.join(FIRST_SUBMITTER_KEY_FILE)).unwrap();
    let replicas: Vec<ReplicaProcess> = (0..3).map(|i| serve(BIN, &dir, i)).collect();
    let key_text = bftlog_witness::key_file::read_key_file(&dir.join("replica-3.key")).unwrap();
    let key = SignerKey::parse(key_text.trim_end()).unwrap();
    let attacker = Attacker {
        cluster: cluster.clone(),
        replica: Some((3, key.signing_key().clone())),
        bytes_per_s_per_target: DEFAULT_ATTACK_BYTES_PER_S,
        submitter_key: Some(flooder_key),
    };
    let policy = cluster.policy();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let options = ClientOptions {
            submitter_key: Some(honest_key.clone()),
            ..ClientOptions::default()
        };
        let client = Client::new(cluster.clone(), options.clone()).unwrap();
        // Up, and connected to every honest replica before the attacks.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if client.append(&[b"warm up".to_vec()]).await.is_ok() {
                break;
            }
            assert!(Instant::now() < deadline, "the cluster did not start");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        for i in 0..3 {
            let _ = client.request(i, &ClientRequest::GetCheckpoint).await;
        }
        let mut n = 0u64;
        for attack in ALL_ATTACKS {
            let until = Instant::now() + Duration::from_secs(secs);
            let attack_task = {
                let attacker = attacker.clone();
                tokio::spawn(async move { attacker.run(attack, until).await })
            };
            let mut latencies = Vec::new();
            while Instant::now() < until {
                n += 1;
                let entry = format!("honest {n} during {attack:?}").into_bytes();
                let started = Instant::now();
                match tokio::time::timeout(
                    Duration::from_secs(20),
                    client.append(std::slice::from_ref(&entry)),
                )
                .await
                {
                    Ok(Ok(receipts)) => {
                        let proof = bftlog_spec::proof::TlogProof::parse(
                            receipts[0].tlog_proof().as_bytes(),
                        )
                        .unwrap();
                        proof
                            .verify_entry(&policy, &entry)
                            .unwrap_or_else(|e| panic!("{attack:?}: receipt: {e}"));
                        latencies.push(started.elapsed());
                    }
                    Ok(Err(e)) => eprintln!("{attack:?}: append failed: {e}"),
                    Err(_) => panic!("{attack:?}: an honest append took over 20 s"),
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let counts = attack_task.await.unwrap();
            latencies.sort();
            let p99 = latencies
                .get(latencies.len().saturating_sub(1) * 99 / 100)
                .copied()
                .unwrap_or_default();
            eprintln!(
                "{attack:?}: attacker sent {} ({} failed); honest appends {} in {secs} s, p99 {:?}",
                counts.sent.load(std::sync::atomic::Ordering::Relaxed),
                counts.failed.load(std::sync::atomic::Ordering::Relaxed),
                latencies.len(),
                p99
            );
            assert!(
                !latencies.is_empty(),
                "{attack:?}: no honest append committed"
            );
        }
        // Recovered: a fresh client is served.
        let fresh = Client::new(cluster.clone(), options).unwrap();
        fresh
            .append(&[b"after the attacks".to_vec()])
            .await
            .unwrap();
    });
    for (i, replica) in replicas.iter().enumerate() {
        let peak = peak_rss_kib(replica.0.id());
        eprintln!("replica {i}: peak RSS {} MiB", peak >> 10);
        assert!(
            peak < RSS_BOUND_KIB,
            "replica {i} peaked at {} MiB",
            peak >> 10
        );
    }
}
