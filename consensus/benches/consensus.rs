//! Consensus throughput in simulation: four replicas with real
//! Ed25519 on one core, a perfect in-memory network and instant durable
//! writes, so the figures are the core's own cost.
//!
//! `cargo bench -p bftlog-consensus --bench consensus`; figures go in
//! docs/performance.md.

use std::collections::VecDeque;
use std::time::Duration;

use bftlog_consensus::{ClientId, Config, Recovered, Replica, Target};
use bftlog_spec::wire::{ConsensusMessage, ReplicaId};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use rand::SeedableRng;
use rand::rngs::StdRng;

const N: usize = 4;

fn cluster(max_block_entries: usize) -> Vec<Replica<StdRng>> {
    let mut rng = StdRng::seed_from_u64(7);
    let keys: Vec<ed25519_dalek::SigningKey> = (0..N)
        .map(|_| ed25519_dalek::SigningKey::generate(&mut rng))
        .collect();
    let mut cfg = Config::new(
        1,
        "bench.bftlog.test/log",
        keys.iter().map(|k| k.verifying_key()).collect(),
    );
    cfg.max_block_entries = max_block_entries;
    cfg.mempool_max_entries = 1 << 20;
    cfg.mempool_max_bytes = 1 << 30;
    (0..N)
        .map(|i| {
            Replica::new(
                cfg.clone(),
                i as ReplicaId,
                keys[i].clone(),
                StdRng::seed_from_u64(i as u64),
                Recovered::fresh(1),
                Duration::ZERO,
            )
            .unwrap()
        })
        .collect()
}

/// Submits `entries` to replica 0 in chunks and runs the cluster until
/// every replica committed them all. Returns the number of blocks.
fn run(replicas: &mut [Replica<StdRng>], entries: Vec<Vec<u8>>) -> u64 {
    let total = entries.len() as u64;
    let mut now = Duration::ZERO;
    let mut queue: VecDeque<(usize, ReplicaId, ConsensusMessage)> = VecDeque::new();
    let mut pending = entries.into_iter();
    let mut blocks = 0u64;
    loop {
        // Feed the client side while replica 0's mempool has room.
        if replicas[0].pending_entries() < 8192 {
            let chunk: Vec<Vec<u8>> = pending.by_ref().take(4096).collect();
            if !chunk.is_empty() {
                replicas[0].submit(now, ClientId([0; 16]), chunk);
            }
        }
        for (i, r) in replicas.iter_mut().enumerate() {
            // Writes are durable at once: acknowledge them and route what
            // they release.
            loop {
                let step = r.poll_step();
                if step.is_empty() {
                    break;
                }
                for p in &step.persist {
                    r.handle_persisted(p.token);
                }
                if i == 0 {
                    blocks += step.commits.len() as u64;
                }
                for out in step.sends {
                    match out.to {
                        Target::All => {
                            for t in (0..N).filter(|t| *t != i) {
                                queue.push_back((t, i as ReplicaId, out.message.clone()));
                            }
                        }
                        Target::One(t) => {
                            queue.push_back((t as usize, i as ReplicaId, out.message))
                        }
                    }
                }
            }
        }
        if replicas.iter().all(|r| r.tree_size() == total) {
            return blocks;
        }
        let Some((to, from, message)) = queue.pop_front() else {
            // Nothing in flight: let timers run.
            now += Duration::from_millis(10);
            for r in replicas.iter_mut() {
                if r.poll_timeout().is_some_and(|t| t <= now) {
                    r.handle_timeout(now);
                }
            }
            continue;
        };
        now += Duration::from_micros(10);
        replicas[to].handle_message(now, from, message);
    }
}

fn entries(count: usize) -> Vec<Vec<u8>> {
    (0..count)
        .map(|i| {
            let mut e = vec![0u8; 256];
            e[..8].copy_from_slice(&(i as u64).to_be_bytes());
            e
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("consensus n=4, one core, real Ed25519");
    group.sample_size(10);
    let count = 32_768;
    group.throughput(Throughput::Elements(count as u64));
    group.bench_function("32768 entries of 256 B, blocks of 4096", |b| {
        b.iter_batched(
            || (cluster(4096), entries(count)),
            |(mut replicas, e)| run(&mut replicas, e),
            BatchSize::LargeInput,
        )
    });
    let blocks = 200;
    group.throughput(Throughput::Elements(blocks as u64));
    group.bench_function("200 blocks of 1 entry (per-block overhead)", |b| {
        b.iter_batched(
            || (cluster(1), entries(blocks)),
            |(mut replicas, e)| run(&mut replicas, e),
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
