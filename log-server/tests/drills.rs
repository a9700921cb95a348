//! Fault drills on real `bftlog serve` processes behind fault-injecting
//! UDP proxies on 127.0.0.1, while clients append continuously.
//!
//! After every fault: each receipt a client received still holds in the
//! latest quorum checkpoint (same index, same entry, and the served log
//! hashes to that checkpoint's root), checkpoints stay consistent, and the
//! cluster commits again once the fault ends (the time is printed).
//!
//! `drills_in_ci` runs each fault once. The long randomized drill:
//!
//! ```sh
//! BFTLOG_DRILL_ROUNDS=100 BFTLOG_DRILL_SEED=7 \
//!   cargo test --release -p bftlog-server --test drills -- --ignored --nocapture randomized_drill
//! ```

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bftlog_server::client::{Client, ClientOptions};
use bftlog_server::config::Cluster;
use bftlog_spec::checkpoint::Checkpoint;
use bftlog_spec::merkle;
use support::proxy::{Faults, Proxies};

const BIN: &str = env!("CARGO_BIN_EXE_bftlog");
const N: usize = 4;

/// One drill cluster: proxies, replica processes, a client load.
struct Drill {
    dir: PathBuf,
    proxies: Proxies,
    replicas: Vec<Option<Child>>,
    metrics_ports: Vec<u16>,
    client: Client,
    /// index → entry, for every verified receipt.
    acked: Arc<Mutex<BTreeMap<u64, Vec<u8>>>>,
    acked_count: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    load: Vec<tokio::task::JoinHandle<u64>>,
    first_checkpoint: Option<Checkpoint>,
    recoveries: Vec<(String, Duration)>,
}

/// A failed drill still stops its replica processes.
impl Drop for Drill {
    fn drop(&mut self) {
        for child in self.replicas.iter_mut().filter_map(Option::take) {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drill {
    async fn start(tag: &str, seed: u64) -> Drill {
        Self::start_some(tag, seed, &[0, 1, 2, 3]).await
    }

    /// Like [`Drill::start`], starting only the `running` replicas.
    async fn start_some(tag: &str, seed: u64, running: &[usize]) -> Drill {
        let dir = std::env::temp_dir().join(format!("bftlog-drill-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let public = support::ports::free_ports(N as u16);
        let private = support::ports::free_ports(2 * N as u16);
        let out = Command::new(BIN)
            .args(["init", "--dir"])
            .arg(&dir)
            .args([
                "--replicas",
                "4",
                "--origin",
                "drill.example/log",
                "--admission",
                "open",
                "--base-port",
            ])
            .arg(public.to_string())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut metrics_ports = Vec::new();
        for i in 0..N {
            let path = dir.join(format!("replica-{i}.toml"));
            let text = std::fs::read_to_string(&path).unwrap();
            let metrics = private + N as u16 + i as u16;
            metrics_ports.push(metrics);
            // Top-level keys go before the first table.
            let head = format!(
                "listen = \"127.0.0.1:{}\"\nmetrics_listen = \"127.0.0.1:{metrics}\"\n",
                private + i as u16
            );
            let (before, after) = match text.find("\n[") {
                Some(at) => text.split_at(at + 1),
                None => (text.as_str(), ""),
            };
            let mut patched = format!("{before}{head}{after}");
            if patched.contains("[consensus]\n") {
                patched = patched.replace("[consensus]\n", "[consensus]\nround_timeout_ms = 400\n");
            } else {
                patched.push_str("\n[consensus]\nround_timeout_ms = 400\n");
            }
            std::fs::write(&path, patched).unwrap();
        }
        let public_addrs: Vec<_> = (0..N)
            .map(|i| format!("127.0.0.1:{}", public + i as u16).parse().unwrap())
            .collect();
        let private_addrs: Vec<_> = (0..N)
            .map(|i| format!("127.0.0.1:{}", private + i as u16).parse().unwrap())
            .collect();
        let proxies = Proxies::start(&public_addrs, &private_addrs, seed);
        let cluster = Cluster::load(&dir.join("cluster.toml")).unwrap();
        let client = Client::new(
            cluster,
            ClientOptions {
                request_timeout_ms: 5_000,
                ..ClientOptions::default()
            },
        )
        .unwrap();
        let mut drill = Drill {
            replicas: (0..N).map(|_| None).collect(),
            dir,
            proxies,
            metrics_ports,
            client,
            acked: Arc::new(Mutex::new(BTreeMap::new())),
            acked_count: Arc::new(AtomicU64::new(0)),
            stop: Arc::new(AtomicBool::new(false)),
            load: Vec::new(),
            first_checkpoint: None,
            recoveries: Vec::new(),
        };
        for &i in running {
            drill.start_replica(i);
        }
        drill
    }

    fn private_addr(&self, i: usize) -> std::net::SocketAddr {
        let text = std::fs::read_to_string(self.dir.join(format!("replica-{i}.toml"))).unwrap();
        let line = text.lines().find(|l| l.starts_with("listen = ")).unwrap();
        line.trim_start_matches("listen = ")
            .trim_matches('"')
            .parse()
            .unwrap()
    }

    fn start_replica(&mut self, i: usize) {
        // A second process would fail to bind the port while the first,
        // no longer tracked, outlived the test.
        assert!(self.replicas[i].is_none(), "replica {i} is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("replica-{i}.log")))
            .unwrap();
        let child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(self.dir.join(format!("replica-{i}.toml")))
            .env("RUST_LOG", "bftlog_server=info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.replicas[i] = Some(child);
    }

    /// Whether replica `i`'s log has a line containing `text`.
    fn log_contains(&self, i: usize, text: &str) -> bool {
        std::fs::read_to_string(self.dir.join(format!("replica-{i}.log")))
            .is_ok_and(|log| log.contains(text))
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.replicas[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn signal(&self, i: usize, signal: &str) {
        let pid = self.replicas[i].as_ref().unwrap().id();
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Clients appending continuously; every receipt is verified by the
    /// client library and recorded.
    fn start_load(&mut self, tasks: usize) {
        for t in 0..tasks {
            let client = self.client.clone();
            let acked = self.acked.clone();
            let count = self.acked_count.clone();
            let stop = self.stop.clone();
            self.load.push(tokio::spawn(async move {
                let mut seq = 0u64;
                let mut errors = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let entries: Vec<Vec<u8>> = (0..8)
                        .map(|k| format!("drill task {t} batch {seq} entry {k}").into_bytes())
                        .collect();
                    seq += 1;
                    match client.append(&entries).await {
                        Ok(receipts) => {
                            let mut acked = acked.lock().unwrap();
                            for (r, e) in receipts.iter().zip(entries) {
                                if let Some(previous) = acked.insert(r.index, e.clone()) {
                                    assert_eq!(
                                        previous, e,
                                        "two entries acknowledged at index {}",
                                        r.index
                                    );
                                }
                            }
                            count.fetch_add(receipts.len() as u64, Ordering::SeqCst);
                        }
                        Err(_) => {
                            errors += 1;
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
                errors
            }));
        }
    }

    /// Waits until new receipts arrive; records and returns how long that
    /// took from `since`.
    async fn recovered(&mut self, what: &str, since: Instant) -> Duration {
        let start = self.acked_count.load(Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.acked_count.load(Ordering::SeqCst) < start + 8 {
            assert!(
                Instant::now() < deadline,
                "no commits within 60 s after: {what}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let took = since.elapsed();
        println!("drill: {what}: committing again after {took:?}");
        self.recoveries.push((what.to_owned(), took));
        took
    }

    async fn metric(&self, i: usize, name: &str) -> Option<u64> {
        let port = self.metrics_ports[i];
        let name = name.to_owned();
        tokio::task::spawn_blocking(move || {
            use std::io::{Read, Write};
            let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
            stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
            write!(
                stream,
                "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            .ok()?;
            let mut text = String::new();
            stream.read_to_string(&mut text).ok()?;
            text.lines()
                .find_map(|l| l.strip_prefix(&name)?.strip_prefix(' ')?.parse().ok())
        })
        .await
        .unwrap()
    }

    /// The replica currently leading, as the replica in the highest round
    /// sees it.
    async fn leader(&self) -> usize {
        let (mut round, mut leader) = (0, 0);
        for i in 0..N {
            if self.replicas[i].is_some() {
                let r = self.metric(i, "bftlog_round").await.unwrap_or(0);
                if r >= round {
                    round = r;
                    leader = self
                        .metric(i, "bftlog_leader")
                        .await
                        .unwrap_or(r % N as u64);
                }
            }
        }
        leader as usize
    }

    /// Every acknowledged entry is in the latest quorum checkpoint at its
    /// index, the served log hashes to that checkpoint, and the first
    /// checkpoint seen is consistent with it.
    async fn check(&mut self) {
        // A replica that was just restarted or isolated may serve an older
        // checkpoint: wait for one that covers everything acknowledged so
        // far, so every receipt is checked against it.
        let needed = self
            .acked
            .lock()
            .unwrap()
            .keys()
            .next_back()
            .map_or(0, |i| i + 1);
        let deadline = Instant::now() + Duration::from_secs(60);
        let c = loop {
            if let Ok(checkpoint) = self.client.checkpoint().await {
                if checkpoint.checkpoint().size >= needed {
                    break checkpoint.checkpoint().clone();
                }
            }
            assert!(
                Instant::now() < deadline,
                "no checkpoint covers the acknowledged entries"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let mut log = Vec::with_capacity(c.size as usize);
        while (log.len() as u64) < c.size {
            let want = (c.size - log.len() as u64).min(1000) as u32;
            let got = self.client.entries(log.len() as u64, want).await.unwrap();
            assert!(!got.is_empty());
            log.extend(got);
        }
        log.truncate(c.size as usize);
        let leaves: Vec<_> = log.iter().map(|e| merkle::leaf_hash(e)).collect();
        assert_eq!(
            merkle::root_from_leaf_hashes(&leaves),
            c.root,
            "the served log is the checkpointed one"
        );
        let acked = self.acked.lock().unwrap().clone();
        let mut covered = 0;
        for (index, entry) in &acked {
            if *index < c.size {
                assert_eq!(
                    &log[*index as usize], entry,
                    "acknowledged entry {index} changed"
                );
                covered += 1;
            }
        }
        match &self.first_checkpoint {
            None => self.first_checkpoint = Some(c.clone()),
            Some(first) => {
                self.client.prove_consistency(first, &c).await.unwrap();
            }
        }
        println!(
            "drill: check passed at size {} ({covered} acknowledged entries verified)",
            c.size
        );
    }

    async fn finish(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::SeqCst);
        let mut errors = 0;
        for t in self.load.drain(..) {
            errors += t.await.unwrap();
        }
        self.check().await;
        let acked = self.acked.lock().unwrap().len() as u64;
        for i in 0..N {
            self.kill(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        (acked, errors)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drills_in_ci() {
    let mut d = Drill::start("ci", 1).await;
    d.start_load(4);
    d.recovered("start", Instant::now()).await;
    d.check().await;

    // kill -9 a follower, then the leader; restart both.
    let leader = d.leader().await;
    let follower = (leader + 1) % N;
    d.kill(follower);
    let t = Instant::now();
    d.recovered("follower killed", t).await;
    // The round's leader may be the dead follower (its round times out):
    // wait for a live one.
    let mut leader = d.leader().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while leader == follower && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        leader = d.leader().await;
    }
    assert_ne!(leader, follower, "no live leader within 30 s");
    d.kill(leader);
    tokio::time::sleep(Duration::from_secs(2)).await;
    d.start_replica(leader);
    let t = Instant::now();
    d.recovered("leader killed and restarted", t).await;
    d.start_replica(follower);
    d.check().await;

    // A slow (stopped, not dead) replica.
    d.signal(2, "-STOP");
    tokio::time::sleep(Duration::from_secs(3)).await;
    d.signal(2, "-CONT");
    let t = Instant::now();
    d.recovered("SIGSTOP/SIGCONT", t).await;
    d.check().await;

    // Partition the leader from the rest, then heal.
    let leader = d.leader().await as u16;
    d.proxies.set(Faults {
        partition: vec![
            [leader].into(),
            (0..N as u16).filter(|r| *r != leader).collect(),
        ],
        ..Faults::none()
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    d.proxies.set(Faults::none());
    let t = Instant::now();
    d.recovered("leader partition healed", t).await;
    d.check().await;
    // The others gave up on the cut-off leader's round, and said so.
    let others: Vec<usize> = (0..N).filter(|r| *r != leader as usize).collect();
    for line in [
        "round timed out",
        "entered a round by a timeout certificate",
    ] {
        assert!(
            others.iter().any(|r| d.log_contains(*r, line)),
            "no replica logged `{line}` after the leader was cut off"
        );
    }

    // A lossy, slow, duplicating network.
    d.proxies.set(Faults {
        drop: 0.05,
        delay: Duration::from_millis(5),
        jitter: Duration::from_millis(10),
        duplicate: 0.05,
        ..Faults::none()
    });
    let t = Instant::now();
    d.recovered("lossy network (5% drop, 5-15 ms delay, 5% duplicates)", t)
        .await;
    d.proxies.set(Faults::none());
    d.check().await;

    // Isolate one replica for a long time, heal, and it catches up.
    d.proxies.set(Faults {
        isolated: [1].into(),
        ..Faults::none()
    });
    tokio::time::sleep(Duration::from_secs(8)).await;
    d.proxies.set(Faults::none());
    let t = Instant::now();
    let target = d.metric(0, "bftlog_tree_size").await.unwrap();
    while d.metric(1, "bftlog_tree_size").await.unwrap_or(0) < target {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "isolated replica did not catch up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "drill: isolated replica caught up to {target} after {:?}",
        t.elapsed()
    );
    d.check().await;

    // Empty data directory: state sync from peers, then it is needed for
    // the quorum (another replica is killed).
    d.kill(3);
    std::fs::remove_dir_all(d.dir.join("replica-3")).unwrap();
    d.start_replica(3);
    let t = Instant::now();
    let target = d.metric(0, "bftlog_tree_size").await.unwrap();
    while d.metric(3, "bftlog_tree_size").await.unwrap_or(0) < target {
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "empty replica did not sync"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "drill: empty replica synced to {target} in {:?}",
        t.elapsed()
    );
    d.kill(0);
    let t = Instant::now();
    d.recovered(
        "replica 0 killed after replica 3 resynced (3 needed for quorum)",
        t,
    )
    .await;
    d.start_replica(0);
    d.check().await;

    let (acked, errors) = d.finish().await;
    println!("drill: {acked} entries acknowledged, 0 lost, {errors} append errors retried");
}

/// Many rounds of random faults (see the module docs for the command). Each
/// round picks a fault, holds it for 1 to 5 s, heals, waits for commits and
/// checks every receipt. Prints acknowledged entries, lost entries (always
/// 0, or the check fails) and recovery times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: run with --ignored"]
async fn randomized_drill() {
    let rounds: u64 = std::env::var("BFTLOG_DRILL_ROUNDS").map_or(100, |v| v.parse().unwrap());
    let seed: u64 = std::env::var("BFTLOG_DRILL_SEED").map_or(1, |v| v.parse().unwrap());
    println!("drill: {rounds} rounds, seed {seed} (rerun with BFTLOG_DRILL_SEED={seed})");
    let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let mut d = Drill::start("random", seed).await;
    d.start_load(4);
    d.recovered("start", Instant::now()).await;
    for round in 0..rounds {
        let hold = Duration::from_millis(1000 + next(4000));
        let victim = next(N as u64) as usize;
        let what = match next(6) {
            0 => {
                d.kill(victim);
                tokio::time::sleep(hold).await;
                d.start_replica(victim);
                format!("kill -9 replica {victim} for {hold:?}")
            }
            1 => {
                let leader = d.leader().await;
                d.kill(leader);
                tokio::time::sleep(hold).await;
                d.start_replica(leader);
                format!("kill -9 leader {leader} for {hold:?}")
            }
            2 => {
                d.signal(victim, "-STOP");
                tokio::time::sleep(hold).await;
                d.signal(victim, "-CONT");
                format!("SIGSTOP replica {victim} for {hold:?}")
            }
            3 => {
                let leader = d.leader().await as u16;
                d.proxies.set(Faults {
                    partition: vec![
                        [leader].into(),
                        (0..N as u16).filter(|r| *r != leader).collect(),
                    ],
                    ..Faults::none()
                });
                tokio::time::sleep(hold).await;
                d.proxies.set(Faults::none());
                format!("partition leader {leader} for {hold:?}")
            }
            4 => {
                d.proxies.set(Faults {
                    drop: 0.1,
                    delay: Duration::from_millis(10),
                    jitter: Duration::from_millis(20),
                    duplicate: 0.1,
                    ..Faults::none()
                });
                tokio::time::sleep(hold).await;
                d.proxies.set(Faults::none());
                format!("lossy network for {hold:?}")
            }
            _ => {
                d.proxies.set(Faults {
                    isolated: [victim as u16].into(),
                    ..Faults::none()
                });
                tokio::time::sleep(hold).await;
                d.proxies.set(Faults::none());
                format!("isolate replica {victim} for {hold:?}")
            }
        };
        let t = Instant::now();
        d.recovered(&format!("round {round}: {what}"), t).await;
        d.check().await;
    }
    let mut times: Vec<Duration> = d.recoveries.iter().map(|(_, t)| *t).collect();
    times.sort();
    let (acked, errors) = d.finish().await;
    println!(
        "drill: {rounds} rounds: {acked} entries acknowledged, 0 lost, {errors} append errors retried; recovery p50 {:?}, p90 {:?}, max {:?}",
        times[times.len() / 2],
        times[times.len() * 9 / 10],
        times.last().unwrap()
    );
}

/// A replica that holds a valid key and misbehaves: for every proposal it
/// sees it votes for the block and, in the same round, for a block that
/// does not exist (equivocation), sends a vote with a corrupted signature,
/// and sends an undecodable frame. It replaces replica 3's process.
async fn run_byzantine(
    key: ed25519_dalek::SigningKey,
    listen: std::net::SocketAddr,
    peers: Vec<(u16, std::net::SocketAddr, ed25519_dalek::VerifyingKey)>,
    epoch: u64,
    stop: Arc<AtomicBool>,
) -> u64 {
    use bftlog_consensus::crypto::{self, Signer};
    use bftlog_server::net;
    use bftlog_spec::wire::{self, ConsensusMessage, Vote};
    let limits = net::Limits::default();
    let endpoint = net::endpoint(listen, net::server_config(&key, &limits).unwrap(), &key).unwrap();
    let mut connections = Vec::new();
    for (_, addr, peer_key) in &peers {
        let config = net::client_config(&key, &[*peer_key], net::ALPN_PEER, &limits).unwrap();
        let connection = loop {
            match endpoint
                .connect_with(config.clone(), *addr, net::SERVER_NAME)
                .unwrap()
                .await
            {
                Ok(c) => break c,
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        connections.push(connection);
    }
    let signer = Signer::new(key.clone());
    // (round, parent round, block id) of each proposal seen.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(u64, u64, merkle::Hash)>(1024);
    let accept = {
        let endpoint = endpoint.clone();
        tokio::spawn(async move {
            while let Some(incoming) = endpoint.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let Ok(connection) = incoming.await else {
                        return;
                    };
                    while let Ok(mut stream) = connection.accept_uni().await {
                        let tx = tx.clone();
                        tokio::spawn(async move {
                            while let Ok(Some(frame)) = net::read_frame(&mut stream, 16 << 20).await
                            {
                                let seen = match wire::decode(&frame) {
                                    Ok(ConsensusMessage::Proposal { block, .. }) => Some((
                                        block.round,
                                        block.justify.round,
                                        crypto::block_id(&block),
                                    )),
                                    Ok(ConsensusMessage::ProposalLeaves {
                                        header, leaves, ..
                                    }) => Some((
                                        header.round,
                                        header.justify.round,
                                        crypto::block_id_from_header(&header, &leaves),
                                    )),
                                    _ => None,
                                };
                                if let Some(seen) = seen {
                                    let _ = tx.try_send(seen);
                                }
                            }
                        });
                    }
                });
            }
        })
    };
    let mut sent = 0u64;
    let mut streams = Vec::new();
    for c in &connections {
        streams.push(c.open_uni().await.unwrap());
    }
    while !stop.load(Ordering::SeqCst) {
        let Ok(Some((round, parent_round, real))) =
            tokio::time::timeout(Duration::from_millis(200), rx.recv()).await
        else {
            continue;
        };
        let fake = merkle::leaf_hash(format!("no such block {round}").as_bytes());
        let vote = |id: merkle::Hash| Vote {
            epoch,
            round,
            block_id: id,
            parent_round,
            voter: 3,
            signature: signer.sign(&crypto::vote_message(epoch, round, &id, parent_round)),
        };
        // A vote whose signature does not verify goes first, so it is not
        // set aside as a duplicate of the valid one.
        let mut bad = vote(real);
        bad.signature.0[7] ^= 0x40;
        let messages = [
            ConsensusMessage::Vote { vote: bad },
            ConsensusMessage::Vote { vote: vote(real) },
            ConsensusMessage::Vote { vote: vote(fake) },
        ];
        for stream in &mut streams {
            for m in &messages {
                let _ = stream.write_all(&wire::frame(&wire::encode(m))).await;
            }
        }
        // Garbage on a fresh stream, so the receiver's reaction to it does
        // not cut the stream the votes use.
        for c in &connections {
            if let Ok(mut garbage) = c.open_uni().await {
                let _ = garbage.write_all(&wire::frame(b"\xff\x00not cbor")).await;
                let _ = garbage.finish();
            }
        }
        sent += 1;
    }
    accept.abort();
    endpoint.close(0u32.into(), b"done");
    sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_byzantine_replica_does_not_stop_the_honest_three() {
    let mut d = Drill::start_some("byzantine", 3, &[0, 1, 2]).await;
    let cluster = Cluster::load(&d.dir.join("cluster.toml")).unwrap();
    let key_text = std::fs::read_to_string(d.dir.join("replica-3.key")).unwrap();
    let key = bftlog_spec::note::SignerKey::parse(key_text.trim_end())
        .unwrap()
        .signing_key()
        .clone();
    let peers = (0..3)
        .map(|i| (i as u16, d.private_addr(i), *cluster.keys[i].public_key()))
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let byzantine = tokio::spawn(run_byzantine(
        key,
        d.private_addr(3),
        peers,
        cluster.epoch,
        stop.clone(),
    ));
    d.start_load(4);
    d.recovered("honest three with a Byzantine replica 3", Instant::now())
        .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let t = Instant::now();
    d.recovered("still committing after 5 s of Byzantine traffic", t)
        .await;
    d.check().await;
    stop.store(true, Ordering::SeqCst);
    let rounds = byzantine.await.unwrap();
    assert!(rounds > 0, "the Byzantine replica saw no proposals");
    let mut totals = BTreeMap::new();
    for i in 0..3 {
        for reason in ["equivocation", "invalid_signature", "undecodable"] {
            let name = format!("bftlog_rejected_messages_total{{reason=\"{reason}\"}}");
            *totals.entry(reason).or_insert(0) += d.metric(i, &name).await.unwrap();
        }
    }
    println!(
        "drill: Byzantine replica answered {rounds} proposals; honest replicas rejected {totals:?}"
    );
    for (reason, total) in &totals {
        assert!(*total > 0, "no {reason} counted");
    }
    let logs: String = (0..3)
        .map(|i| std::fs::read_to_string(d.dir.join(format!("replica-{i}.log"))).unwrap())
        .collect();
    assert!(logs.contains("rejected a peer's consensus message"));
    let (acked, _) = d.finish().await;
    println!("drill: {acked} entries acknowledged with a Byzantine replica, 0 lost");
}
