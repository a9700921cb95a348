//! Receipt verification throughput: receipts with 3 replica
//! signatures + 2 witness cosignatures in a 2^24-leaf log.
//!
//! `cargo bench -p bftlog-verify --bench verify`; figures go in
//! docs/performance.md.

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::Command;

use bftlog_spec::encoding::encode_base64;
use bftlog_spec::merkle::{self, Hash};
use bftlog_spec::note::Note;
use bftlog_spec::policy::Policy;
use bftlog_spec::proof::TlogProof;
use bftlog_verify::batch::{self, BatchVerifier};
use bftlog_verify::check;
use common::{Cluster, SparseTree};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use rand::{RngExt, SeedableRng, rngs::StdRng};

const HEIGHT: u32 = 24;
const RECEIPTS: usize = 1000;
const DISTINCT: usize = 50;

struct Fixture {
    policy: Policy,
    /// (entry, receipt text) under one shared checkpoint.
    shared: Vec<(Vec<u8>, String)>,
    /// (entry, receipt text), each under its own checkpoint note.
    distinct: Vec<(Vec<u8>, String)>,
    dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let mut rng = StdRng::seed_from_u64(24);
    let cluster = Cluster::new(4, 2, 9);
    let policy = Policy::parse(cluster.policy(2).as_bytes()).unwrap();
    let mut tree = SparseTree::new(HEIGHT, b"filler");
    let mut items = Vec::new();
    while items.len() < RECEIPTS {
        let index = rng.random_range(0..tree.size());
        let mut entry = vec![0u8; 256];
        rng.fill(&mut entry[..]);
        tree.set(index, merkle::leaf_hash(&entry));
        items.push((index, entry));
    }
    let root = tree.root();
    let note = cluster.sign(tree.size(), root, &[0, 1, 2], &[0, 1], 1_700_000_000);
    let receipt = |index: u64, note: &Note| {
        TlogProof {
            extra: None,
            index,
            inclusion: tree.prove(index),
            checkpoint: note.clone(),
        }
        .format()
    };
    let shared: Vec<(Vec<u8>, String)> = items
        .iter()
        .map(|(index, entry)| (entry.clone(), receipt(*index, &note)))
        .collect();
    // Same tree, but each receipt's witnesses cosigned at another second,
    // so every checkpoint note is distinct.
    let distinct = items[..DISTINCT]
        .iter()
        .enumerate()
        .map(|(i, (index, entry))| {
            let note = cluster.sign(
                tree.size(),
                root,
                &[0, 1, 2],
                &[0, 1],
                1_700_000_001 + i as u64,
            );
            (entry.clone(), receipt(*index, &note))
        })
        .collect();
    let dir = common::tempdir();
    let (entry, proof) = &shared[0];
    common::write(&dir, "policy", cluster.policy(2));
    common::write(&dir, "entry", entry);
    common::write(&dir, "entry.tlog-proof", proof);
    Fixture {
        policy,
        shared,
        distinct,
        dir,
    }
}

fn bench(c: &mut Criterion) {
    let f = fixture();
    for (entry, proof) in f.shared.iter().chain(&f.distinct) {
        check::check_receipt(&f.policy, proof.as_bytes(), &merkle::leaf_hash(entry))
            .expect("fixture receipts verify");
    }

    let mut group = c.benchmark_group("receipts (3 replica sigs + 2 cosigs, 2^24 tree)");
    group.throughput(Throughput::Elements(RECEIPTS as u64));
    group.bench_function("batch: 1000 receipts, one shared checkpoint", |b| {
        b.iter_batched(
            || BatchVerifier::new(&f.policy),
            |mut verifier| {
                for (entry, proof) in &f.shared {
                    verifier
                        .check_receipt(proof.as_bytes(), &merkle::leaf_hash(entry))
                        .unwrap();
                }
            },
            BatchSize::SmallInput,
        )
    });
    let stream: Vec<u8> = f
        .shared
        .iter()
        .map(|(entry, proof)| {
            let line = serde_json::json!({ "entry": encode_base64(entry), "proof": proof });
            format!("{line}\n")
        })
        .collect::<String>()
        .into_bytes();
    // For the Go comparison (verifier/benches/go/receipts.go).
    if let Some(dir) = std::env::var_os("BFTLOG_BENCH_EXPORT") {
        let dir = std::path::PathBuf::from(dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("stream.jsonl"), &stream).unwrap();
        std::fs::copy(f.dir.path().join("policy"), dir.join("policy")).unwrap();
    }
    group.bench_function("batch: 1000 receipts as a JSON-lines stream", |b| {
        b.iter_batched(
            || BatchVerifier::new(&f.policy),
            |mut verifier| {
                let summary = batch::check_stream(&mut verifier, &stream[..], |_| {}).unwrap();
                assert_eq!(summary.valid, RECEIPTS as u64);
            },
            BatchSize::SmallInput,
        )
    });
    group.throughput(Throughput::Elements(DISTINCT as u64));
    group.bench_function("batch: 50 receipts, each its own checkpoint", |b| {
        b.iter_batched(
            || BatchVerifier::new(&f.policy),
            |mut verifier| {
                for (entry, proof) in &f.distinct {
                    verifier
                        .check_receipt(proof.as_bytes(), &merkle::leaf_hash(entry))
                        .unwrap();
                }
            },
            BatchSize::SmallInput,
        )
    });
    group.throughput(Throughput::Elements(1));
    let (entry, proof) = &f.shared[0];
    let leaf: Hash = merkle::leaf_hash(entry);
    group.bench_function("one receipt, uncached (library)", |b| {
        b.iter(|| check::check_receipt(&f.policy, proof.as_bytes(), &leaf).unwrap())
    });
    group.finish();

    let exe = env!("CARGO_BIN_EXE_bftlog-verify");
    let dir = f.dir.path();
    let mut group = c.benchmark_group("cli process");
    group.sample_size(30);
    group.bench_function("bftlog-verify --version", |b| {
        b.iter(|| {
            let out = Command::new(exe).arg("--version").output().unwrap();
            assert!(out.status.success());
        })
    });
    group.bench_function("bftlog-verify inclusion (one receipt)", |b| {
        b.iter(|| {
            let out = Command::new(exe)
                .current_dir(dir)
                .args([
                    "inclusion",
                    "--policy",
                    "policy",
                    "--proof",
                    "entry.tlog-proof",
                    "entry",
                ])
                .output()
                .unwrap();
            assert!(out.status.success());
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
