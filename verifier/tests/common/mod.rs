//! Fixtures shared by the CLI tests and the benchmark: a cluster of replica
//! and witness keys, its policy, signed checkpoints, receipts, and a sparse
//! perfect tree that gives real inclusion proofs in a 2^24-leaf log without
//! hashing 16 million leaves.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use bftlog_spec::checkpoint::Checkpoint;
use bftlog_spec::ed25519_dalek::SigningKey;
use bftlog_spec::merkle::{self, Hash};
use bftlog_spec::note::{KeyType, Note, SignerKey};
use bftlog_spec::proof::TlogProof;

pub const ORIGIN: &str = "bftlog.test/log";

/// Replica keys (named after the origin) and witness keys.
pub struct Cluster {
    pub replicas: Vec<SignerKey>,
    pub witnesses: Vec<SignerKey>,
}

impl Cluster {
    /// Deterministic keys: replica `i` has seed `[seed, i, 0...]`.
    pub fn new(replicas: usize, witnesses: usize, seed: u8) -> Self {
        let key = |kind: u8, i: usize| {
            let mut bytes = [0u8; 32];
            bytes[0] = seed;
            bytes[1] = kind;
            bytes[2] = i as u8;
            SigningKey::from_bytes(&bytes)
        };
        Cluster {
            replicas: (0..replicas)
                .map(|i| SignerKey::new(ORIGIN, KeyType::Ed25519, key(1, i)).unwrap())
                .collect(),
            witnesses: (0..witnesses)
                .map(|i| {
                    SignerKey::new(
                        &format!("witness.test/w{}", i + 1),
                        KeyType::CosignatureV1,
                        key(2, i),
                    )
                    .unwrap()
                })
                .collect(),
        }
    }

    /// Policy: every replica, every witness, a witness group needing
    /// `witness_k` of them (or `quorum none`), default replica quorum 2f+1.
    pub fn policy(&self, witness_k: usize) -> String {
        let mut out = String::from("# bftlog test policy\n");
        for r in &self.replicas {
            out.push_str(&format!("log {}\n", r.verifier()));
        }
        for (i, w) in self.witnesses.iter().enumerate() {
            out.push_str(&format!("witness w{} {}\n", i + 1, w.verifier()));
        }
        if witness_k == 0 || self.witnesses.is_empty() {
            out.push_str("quorum none\n");
        } else {
            let members: Vec<String> = (1..=self.witnesses.len())
                .map(|i| format!("w{i}"))
                .collect();
            out.push_str(&format!(
                "group witnesses {witness_k} {}\nquorum witnesses\n",
                members.join(" ")
            ));
        }
        out.push_str(&format!("replica-quorum {ORIGIN}\n"));
        out
    }

    /// A checkpoint note signed by the given replicas and cosigned by the
    /// given witnesses at `timestamp`.
    pub fn sign(
        &self,
        size: u64,
        root: Hash,
        replicas: &[usize],
        witnesses: &[usize],
        timestamp: u64,
    ) -> Note {
        let text = Checkpoint::new(ORIGIN, size, root).format();
        let mut note = Note::new(&text).unwrap();
        for &r in replicas {
            note.sign(&self.replicas[r]).unwrap();
        }
        for &w in witnesses {
            let sig = self.witnesses[w].cosign_text(&text, timestamp).unwrap();
            note.add_signature(sig).unwrap();
        }
        note
    }
}

/// Entry `i` of the test logs.
pub fn entry(i: u64) -> Vec<u8> {
    format!("test entry {i}").into_bytes()
}

/// An in-memory log of `size` entries `entry(0..size)`.
pub fn memory_tree(size: u64) -> merkle::MemoryTree {
    let mut tree = merkle::MemoryTree::new();
    for i in 0..size {
        tree.append(merkle::leaf_hash(&entry(i)));
    }
    tree
}

/// A receipt for `entry(index)` in `tree`, under `note` (which must be the
/// tree's checkpoint for the receipt to verify).
pub fn receipt(tree: &merkle::MemoryTree, index: u64, note: &Note) -> String {
    TlogProof {
        extra: None,
        index,
        inclusion: merkle::prove_inclusion(index, tree.size(), tree).unwrap(),
        checkpoint: note.clone(),
    }
    .format()
}

/// A perfect tree of `2^height` leaves in which only chosen leaves differ
/// from one filler leaf, so roots and proofs cost O(k · height²).
pub struct SparseTree {
    height: u32,
    leaves: BTreeMap<u64, Hash>,
    /// Root of a perfect subtree of filler leaves, per level.
    filler: Vec<Hash>,
}

impl SparseTree {
    pub fn new(height: u32, filler_entry: &[u8]) -> Self {
        let mut filler = vec![merkle::leaf_hash(filler_entry)];
        for level in 1..=height as usize {
            let below = filler[level - 1];
            filler.push(merkle::node_hash(&below, &below));
        }
        SparseTree {
            height,
            leaves: BTreeMap::new(),
            filler,
        }
    }

    pub fn size(&self) -> u64 {
        1 << self.height
    }

    pub fn set(&mut self, index: u64, leaf: Hash) {
        assert!(index < self.size());
        self.leaves.insert(index, leaf);
    }

    fn subtree(&self, level: u32, start: u64) -> Hash {
        let end = start + (1 << level);
        if self.leaves.range(start..end).next().is_none() {
            return self.filler[level as usize];
        }
        if level == 0 {
            return self.leaves[&start];
        }
        let half = 1 << (level - 1);
        merkle::node_hash(
            &self.subtree(level - 1, start),
            &self.subtree(level - 1, start + half),
        )
    }

    pub fn root(&self) -> Hash {
        self.subtree(self.height, 0)
    }

    /// The RFC 6962 inclusion proof: siblings from the leaf up.
    pub fn prove(&self, index: u64) -> Vec<Hash> {
        (0..self.height)
            .map(|level| self.subtree(level, ((index >> level) ^ 1) << level))
            .collect()
    }
}

/// A fresh temporary directory.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// Writes `bytes` to `dir/name` and returns the path.
pub fn write(dir: &tempfile::TempDir, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

// The shared-vector helpers are the spec crate's own.
#[path = "../../../spec/tests/common/mod.rs"]
mod spec_common;
#[allow(unused_imports)]
pub use spec_common::{json_files, testdata};
