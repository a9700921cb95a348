//! Criterion benchmarks for the formats' hot paths. Figures and the
//! command that produced them are recorded in docs/performance.md.

use bftlog_spec::checkpoint::Checkpoint;
use bftlog_spec::merkle::{self, Hash, MemoryTree};
use bftlog_spec::note::{KeyType, Note, SignerKey};
use bftlog_spec::policy::Policy;
use bftlog_spec::proof::TlogProof;
use bftlog_spec::wire;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use rand::{RngExt, SeedableRng};
use std::hint::black_box;

const TREE_SIZE: u64 = 1 << 20;

fn leaves(n: u64) -> Vec<Hash> {
    (0..n)
        .map(|i| merkle::leaf_hash(&i.to_le_bytes()))
        .collect()
}

fn merkle_benches(c: &mut Criterion) {
    let million = leaves(1_000_000);
    let mut group = c.benchmark_group("merkle");
    group.sample_size(10);
    group.throughput(Throughput::Elements(1_000_000));
    group.bench_function("root_of_1M_leaf_hashes", |b| {
        b.iter(|| merkle::root_from_leaf_hashes(black_box(&million)))
    });
    group.finish();

    let mut group = c.benchmark_group("merkle");
    let entry = [0x5au8; 256];
    group.throughput(Throughput::Bytes(256));
    group.bench_function("leaf_hash_256B", |b| {
        b.iter(|| merkle::leaf_hash(black_box(&entry)))
    });

    let mut tree = MemoryTree::new();
    for leaf in leaves(TREE_SIZE) {
        tree.append(leaf);
    }
    let root = tree.root();
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let inclusion: Vec<(u64, Hash, Vec<Hash>)> = (0..1024)
        .map(|_| {
            let i = rng.random_range(0..TREE_SIZE);
            (
                i,
                merkle::leaf_hash(&i.to_le_bytes()),
                merkle::prove_inclusion(i, TREE_SIZE, &tree).unwrap(),
            )
        })
        .collect();
    group.throughput(Throughput::Elements(1));
    let mut k = 0;
    group.bench_function("verify_inclusion_2^20", |b| {
        b.iter(|| {
            let (i, leaf, proof) = &inclusion[k % inclusion.len()];
            k += 1;
            merkle::verify_inclusion(*i, TREE_SIZE, leaf, proof, &root).unwrap()
        })
    });
    // A receipt batch: 256 consecutive entries, one after another, each
    // proof checked alone and with the batch verifier.
    let batch: Vec<(u64, Hash, Vec<Hash>)> = (5000..5256u64)
        .map(|i| {
            (
                i,
                merkle::leaf_hash(&i.to_le_bytes()),
                merkle::prove_inclusion(i, TREE_SIZE, &tree).unwrap(),
            )
        })
        .collect();
    group.throughput(Throughput::Elements(batch.len() as u64));
    group.bench_function("verify_256_consecutive_one_by_one_2^20", |b| {
        b.iter(|| {
            for (i, leaf, proof) in &batch {
                merkle::verify_inclusion(*i, TREE_SIZE, leaf, proof, &root).unwrap()
            }
        })
    });
    group.bench_function("verify_256_consecutive_batch_verifier_2^20", |b| {
        b.iter(|| {
            let mut verifier = merkle::InclusionVerifier::new(TREE_SIZE, root);
            for (i, leaf, proof) in &batch {
                verifier.verify(*i, leaf, proof).unwrap()
            }
        })
    });
    group.throughput(Throughput::Elements(1));
    let consistency: Vec<(u64, Hash, Vec<Hash>)> = (0..1024)
        .map(|_| {
            let m = rng.random_range(1..TREE_SIZE);
            (
                m,
                merkle::tree_root(m, &tree).unwrap(),
                merkle::prove_consistency(m, TREE_SIZE, &tree).unwrap(),
            )
        })
        .collect();
    let mut k = 0;
    group.bench_function("verify_consistency_2^20", |b| {
        b.iter(|| {
            let (m, old, proof) = &consistency[k % consistency.len()];
            k += 1;
            merkle::verify_consistency(*m, TREE_SIZE, old, &root, proof).unwrap()
        })
    });
    let mut k = 0u64;
    group.bench_function("prove_inclusion_2^20_in_memory", |b| {
        b.iter(|| {
            k = (k + 7919) % TREE_SIZE;
            merkle::prove_inclusion(k, TREE_SIZE, &tree).unwrap()
        })
    });
    group.finish();
}

fn note_benches(c: &mut Criterion) {
    let origin = "bftlog.example/bench";
    let replicas: Vec<SignerKey> = (1..=4)
        .map(|i| {
            SignerKey::new(
                origin,
                KeyType::Ed25519,
                ed25519_dalek::SigningKey::from_bytes(&[i; 32]),
            )
            .unwrap()
        })
        .collect();
    let witnesses: Vec<SignerKey> = (1..=2)
        .map(|i| {
            SignerKey::new(
                &format!("w{i}.example"),
                KeyType::CosignatureV1,
                ed25519_dalek::SigningKey::from_bytes(&[100 + i; 32]),
            )
            .unwrap()
        })
        .collect();
    let mut policy = String::new();
    for r in &replicas {
        policy += &format!("log {}\n", r.verifier());
    }
    policy += &format!("replica-quorum {origin}\n");
    for (i, w) in witnesses.iter().enumerate() {
        policy += &format!("witness w{i} {}\n", w.verifier());
    }
    policy += "group all-w all w0 w1\nquorum all-w\n";
    let policy = Policy::parse(policy.as_bytes()).unwrap();
    let cp = Checkpoint::new(origin, 1 << 24, merkle::leaf_hash(b"root"));
    let mut note = Note::new(&cp.format()).unwrap();
    for r in &replicas[..3] {
        note.sign(r).unwrap();
    }
    for w in &witnesses {
        note.add_signature(w.cosign_text(note.text(), 1_700_000_000).unwrap())
            .unwrap();
    }
    let text = note.format();
    let mut group = c.benchmark_group("note");
    group.throughput(Throughput::Elements(1));
    group.bench_function("verify_checkpoint_3_replicas_2_witnesses", |b| {
        b.iter(|| {
            policy
                .verify_checkpoint_bytes(black_box(text.as_bytes()))
                .unwrap()
        })
    });
    group.bench_function("parse_checkpoint_note", |b| {
        b.iter(|| Note::parse(black_box(text.as_bytes())).unwrap())
    });
    group.bench_function("sign_checkpoint", |b| {
        b.iter(|| cp.sign(&replicas[0]).unwrap())
    });
    group.finish();

    // A receipt batch as the client library formats it: 256 entries of a
    // 2^24-entry log, 24 proof hashes each, one checkpoint note.
    let proof: Vec<Hash> = leaves(24);
    let mut group = c.benchmark_group("proof");
    group.throughput(Throughput::Elements(256));
    group.bench_function("format_256_receipts", |b| {
        b.iter(|| {
            TlogProof::format_batch(
                black_box(&note),
                (0..256u64).map(|i| ((1 << 23) + i, proof.as_slice())),
            )
        })
    });
    group.finish();
}

fn wire_benches(c: &mut Criterion) {
    let entries: Vec<wire::Entry> = (0..1000)
        .map(|i| wire::Entry::new(vec![i as u8; 256]).unwrap())
        .collect();
    let request = wire::ClientRequest::AppendMultiproof {
        entries: wire::BoundedVec::new(entries).unwrap(),
    };
    let bytes = wire::encode(&request);
    let mut group = c.benchmark_group("wire");
    group.throughput(Throughput::Elements(1000));
    group.bench_function("encode_append_1000x256B", |b| {
        b.iter(|| wire::encode(black_box(&request)))
    });
    group.bench_function("decode_append_1000x256B", |b| {
        b.iter_batched(
            || bytes.clone(),
            |bytes| wire::decode::<wire::ClientRequest>(&bytes).unwrap(),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, merkle_benches, note_benches, wire_benches);
criterion_main!(benches);
