//! Writes the seed corpora under `fuzz/corpus/<target>/`:
//!
//! ```text
//! cd fuzz && cargo run --release --example gen_corpus            # all targets
//! cd fuzz && cargo run --release --example gen_corpus -- DIR     # elsewhere
//! ```
//!
//! Seeds come from the shared vectors (`$BFTLOG_SHARED/testdata`, else
//! `../../shared/testdata`: Merkle proofs and signed notes) and from
//! examples made here with the fixed keys of `bftlog_fuzz`, so receipts,
//! checkpoints and evidence verify under the targets' policy. Consensus
//! seeds are the most productive of a few thousand deterministic random
//! programs. Output is deterministic; file names are content hashes, as
//! libFuzzer names its own.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bftlog_consensus::crypto::{self, Signer};
use bftlog_consensus::genesis_qc;
use bftlog_fuzz::{ORIGIN, Output, REPLICAS, receipt_entry, replica_note_key, witness_key};
use bftlog_spec::checkpoint::Checkpoint;
use bftlog_spec::evidence::{self, Comparison};
use bftlog_spec::merkle::{self, Hash, MemoryTree};
use bftlog_spec::note::{KeyType, Note, SignerKey};
use bftlog_spec::proof::TlogProof;
use bftlog_spec::wire::{
    self, Block, BoundedBytes, BoundedVec, ClientRequest, ClientResponse, ConsensusMessage, Entry,
    ErrorCode, LeafRef, QuorumCert, ReplicaSignature, Signature64, Timeout, TimeoutCert,
    TimeoutSignature, Vote,
};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use sha2::{Digest, Sha256};

struct Corpus {
    root: PathBuf,
    counts: BTreeMap<&'static str, usize>,
}

impl Corpus {
    fn add(&mut self, target: &'static str, bytes: &[u8]) {
        let dir = self.root.join(target);
        std::fs::create_dir_all(&dir).expect("create corpus dir");
        let name = hex(&Sha256::digest(bytes)[..20]);
        std::fs::write(dir.join(name), bytes).expect("write seed");
        *self.counts.entry(target).or_default() += 1;
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn testdata() -> PathBuf {
    let base = match std::env::var_os("BFTLOG_SHARED") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"),
    };
    let dir = base.join("testdata");
    assert!(
        dir.is_dir(),
        "shared test vectors not found at {} (set BFTLOG_SHARED)",
        dir.display()
    );
    dir
}

fn json_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read vector dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "json") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn entry(bytes: &[u8]) -> Entry {
    Entry::new(bytes.to_vec()).expect("small entry")
}

/// A tree of `n` entries `fuzz entry i`, so receipts name their entry.
fn receipt_tree(n: u64) -> MemoryTree {
    let mut tree = MemoryTree::new();
    for i in 0..n {
        tree.append(merkle::leaf_hash(&receipt_entry(i)));
    }
    tree
}

fn tree_of(entries: &[&str]) -> MemoryTree {
    let mut tree = MemoryTree::new();
    for e in entries {
        tree.append(merkle::leaf_hash(e.as_bytes()));
    }
    tree
}

/// A checkpoint note signed by the given replicas and, if asked, cosigned
/// by the witness.
fn signed(size: u64, root: Hash, replicas: &[usize], cosign: bool, extensions: &[&str]) -> Note {
    let mut cp = Checkpoint::new(ORIGIN, size, root);
    cp.extensions = extensions.iter().map(|e| e.to_string()).collect();
    let text = cp.format();
    let mut note = Note::new(&text).expect("text");
    for &i in replicas {
        note.sign(&replica_note_key(i)).expect("sign");
    }
    if cosign {
        note.add_signature(
            witness_key()
                .cosign_text(&text, 1_763_683_200)
                .expect("cosign"),
        )
        .expect("fits");
    }
    note
}

fn vector_notes() -> Vec<(String, String)> {
    let path = testdata().join("note/checkpoints.json");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("read note vectors")).expect("json");
    json["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .map(|c| {
            (
                c["name"].as_str().expect("name").to_owned(),
                c["note"].as_str().expect("note").to_owned(),
            )
        })
        .collect()
}

fn notes_and_checkpoints(corpus: &mut Corpus) {
    for (_, note) in vector_notes() {
        corpus.add("note_parse_verify", note.as_bytes());
        corpus.add("checkpoint_parse", note.as_bytes());
        if let Ok(parsed) = Note::parse(note.as_bytes()) {
            corpus.add("checkpoint_parse", parsed.text().as_bytes());
        }
    }
    let tree = receipt_tree(5);
    let made = [
        signed(5, tree.root(), &[0, 1, 2, 3], true, &[]),
        signed(5, tree.root(), &[1, 3], false, &["ext one", "ext two"]),
        signed(0, merkle::empty_root(), &[2], false, &[]),
        signed(u64::MAX, tree.root(), &[0], true, &["\u{e9}t\u{e9}"]),
    ];
    for note in &made {
        corpus.add("note_parse_verify", note.format().as_bytes());
        corpus.add("checkpoint_parse", note.format().as_bytes());
        corpus.add("checkpoint_parse", note.text().as_bytes());
    }
    // A note by a key nobody knows, and one with a non-checkpoint body.
    let stranger = SignerKey::new(
        "stranger.example/key",
        KeyType::Ed25519,
        ed25519_dalek::SigningKey::from_bytes(&[3; 32]),
    )
    .expect("name");
    let mut note = Note::new("hello\nworld\n").expect("text");
    note.sign(&stranger).expect("sign");
    note.sign(&replica_note_key(0)).expect("sign");
    corpus.add("note_parse_verify", note.format().as_bytes());
}

fn receipts(corpus: &mut Corpus) {
    let policy = bftlog_fuzz::policy();
    for (size, index, extra) in [
        (1u64, 0u64, None),
        (7, 0, None),
        (7, 3, Some(b"app data".to_vec())),
        (7, 6, None),
        (16, 9, Some(Vec::new())),
        (33, 32, None),
    ] {
        let tree = receipt_tree(size);
        let proof = TlogProof {
            extra,
            index,
            inclusion: merkle::prove_inclusion(index, size, &tree).expect("in range"),
            checkpoint: signed(size, tree.root(), &[0, 2, 3], true, &[]),
        };
        proof
            .verify_entry(&policy, &receipt_entry(index))
            .expect("seed receipt verifies");
        corpus.add("tlog_proof_verify", proof.format().as_bytes());
    }
    // Ones that fail: too few replicas, no cosignature.
    let tree = receipt_tree(4);
    for (replicas, cosign) in [(&[0, 1][..], true), (&[0, 1, 2][..], false)] {
        let proof = TlogProof {
            extra: None,
            index: 2,
            inclusion: merkle::prove_inclusion(2, 4, &tree).expect("in range"),
            checkpoint: signed(4, tree.root(), replicas, cosign, &[]),
        };
        corpus.add("tlog_proof_verify", proof.format().as_bytes());
    }
}

fn policies(corpus: &mut Corpus) {
    let fixed = bftlog_fuzz::policy_text();
    corpus.add("policy_parse", fixed.as_bytes());
    let logs: String = (0..REPLICAS)
        .map(|i| format!("log {}\n", replica_note_key(i).verifier()))
        .collect();
    let w1 = witness_key().verifier();
    let w2 = SignerKey::new(
        "witness.fuzz.test/w2",
        KeyType::CosignatureV1,
        ed25519_dalek::SigningKey::from_bytes(&[0x78; 32]),
    )
    .expect("name")
    .verifier();
    let vector_log = bftlog_fuzz::VECTOR_LOG_VKEY;
    for text in [
        format!("{logs}quorum none\n"),
        format!("{logs}replica-quorum {ORIGIN} 4\nquorum none\n"),
        format!(
            "# a comment\n\n{logs}replica-quorum\t{ORIGIN}  3\nwitness w1 {w1}\nwitness w2 {w2} https://w2.example/\ngroup g 1 w1 w2\ngroup all all g\nquorum all\n"
        ),
        format!(
            "log {vector_log} https://log.example\nwitness a {w1}\ngroup any any a\nquorum any\n"
        ),
        format!(
            "{logs}log {vector_log}\nreplica-quorum {ORIGIN}\nreplica-quorum PeterNeumann 1\nquorum none\n"
        ),
    ] {
        bftlog_spec::policy::Policy::parse(text.as_bytes()).expect("seed policy parses");
        corpus.add("policy_parse", text.as_bytes());
    }
}

fn split_views(corpus: &mut Corpus) {
    let policy = bftlog_fuzz::policy();
    let mut add = |a: Note, b: Note, path: Option<Vec<Hash>>| match evidence::compare(
        &policy,
        &a,
        &b,
        path.as_deref(),
    )
    .expect("compare")
    {
        Comparison::SplitView(ev, _) => corpus.add("evidence_check", ev.format().as_bytes()),
        other => panic!("seed is not a split view: {other:?}"),
    };
    let left = tree_of(&["a", "b", "c", "d", "e"]);
    let right = tree_of(&["a", "b", "c", "d", "x"]);
    add(
        signed(5, left.root(), &[0, 1, 2], true, &[]),
        signed(5, right.root(), &[0, 1, 2, 3], false, &[]),
        None,
    );
    for (m, n) in [(3u64, 6u64), (4, 7), (1, 2)] {
        let small = tree_of(&["p", "q", "r", "s"][..m as usize]);
        let large = tree_of(&["a", "b", "c", "d", "e", "f", "g"][..n as usize]);
        let path = merkle::prove_consistency_path(m, n, &large).expect("0 < m < n");
        add(
            signed(m, small.root(), &[1, 2, 3], false, &[]),
            signed(n, large.root(), &[0, 1, 2, 3], true, &[]),
            Some(path),
        );
    }
    add(
        signed(0, merkle::leaf_hash(b"not empty"), &[0, 3], false, &[]),
        signed(2, left.root(), &[0, 1, 3], false, &[]),
        None,
    );
}

/// `merkle_proofs` mode 0 input for one shared vector.
fn merkle_vector(json: &serde_json::Value) -> Option<Vec<u8>> {
    let b64 = |v: &serde_json::Value| -> Vec<u8> {
        v.as_str()
            .and_then(|s| bftlog_spec::encoding::decode_base64(s).ok())
            .unwrap_or_default()
    };
    let hash32 = |bytes: &[u8]| -> [u8; 32] { bytes.try_into().unwrap_or([0; 32]) };
    let proof: Vec<Vec<u8>> = json["proof"]
        .as_array()
        .map(|p| p.iter().map(b64).collect())
        .unwrap_or_default();
    let (index, size, old_size, leaf, root, other) = if json.get("leafIdx").is_some() {
        (
            json["leafIdx"].as_u64()?,
            json["treeSize"].as_u64()?,
            0,
            b64(&json["leafHash"]),
            b64(&json["root"]),
            Vec::new(),
        )
    } else {
        (
            0,
            json["size2"].as_u64()?,
            json["size1"].as_u64()?,
            Vec::new(),
            b64(&json["root1"]),
            b64(&json["root2"]),
        )
    };
    let mut out = Output::default();
    out.u8(0).size(index).size(size).size(old_size);
    out.bytes(&hash32(&leaf))
        .bytes(&hash32(&root))
        .bytes(&hash32(&other));
    out.u8(proof.len() as u8);
    for p in &proof {
        out.bytes(&hash32(p));
    }
    let raw: Vec<&Vec<u8>> = proof.iter().take(7).collect();
    out.u8(raw.len() as u8);
    for p in raw {
        out.u8(p.len().min(40) as u8).bytes(&p[..p.len().min(40)]);
    }
    for b in [&leaf, &root, &root, &other] {
        out.u8(b.len().min(40) as u8).bytes(&b[..b.len().min(40)]);
    }
    Some(out.0)
}

fn merkle_seeds(corpus: &mut Corpus) {
    let dir = testdata().join("merkle");
    for path in json_files(&dir) {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let parent = path
            .parent()
            .and_then(|p| p.file_name())
            .and_then(|n| n.to_str());
        let keep = name.starts_with("happy-path")
            || name == "random-leaf.json"
            || parent.is_some_and(|p| p == "additional" || p == "single-entry");
        if !keep {
            continue;
        }
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).expect("read vector")).expect("json");
        if let Some(seed) = merkle_vector(&json) {
            corpus.add("merkle_proofs", &seed);
        }
    }
    // Mode 1: trees of 1, 2, 7, 8, 9, 64, 128 and 1025 leaves.
    for (tag, extra) in [
        (0u8, None),
        (1, None),
        (6, None),
        (7, None),
        (8, None),
        (63, None),
        (127, None),
        (0xff, Some(1024u16)),
    ] {
        for choice in [0u8, 3] {
            let mut out = Output::default();
            out.u8(1).u8(tag);
            if let Some(n) = extra {
                out.u16(n);
            }
            out.u8(4).bytes(b"salt");
            out.u8(tag / 2).u8(choice).u8(5).u8(3);
            out.u8(tag / 3).u8(choice).u8(1).u8(2);
            corpus.add("merkle_proofs", &out.0);
        }
    }
}

fn wire_seeds(corpus: &mut Corpus) {
    let epoch = 1;
    let signers: Vec<Signer> = (0..REPLICAS)
        .map(|i| Signer::new(bftlog_fuzz::replica_signing_key(i)))
        .collect();
    let block = Block {
        epoch,
        round: 1,
        author: 1,
        parent_id: crypto::genesis_id(epoch),
        justify: genesis_qc(epoch),
        entries: BoundedVec::new(vec![entry(b"hello"), entry(b"")]).expect("two"),
    };
    let id = crypto::block_id(&block);
    let qc = QuorumCert {
        epoch,
        round: 1,
        block_id: id,
        parent_round: 0,
        signatures: BoundedVec::new(
            (0..3)
                .map(|i| ReplicaSignature {
                    replica: i as u16,
                    signature: signers[i].sign(&crypto::vote_message(epoch, 1, &id, 0)),
                })
                .collect(),
        )
        .expect("three"),
    };
    let child = Block {
        epoch,
        round: 2,
        author: 2,
        parent_id: id,
        justify: qc.clone(),
        entries: BoundedVec::new(vec![entry(&[0xff; 100])]).expect("one"),
    };
    let timeout = Timeout {
        epoch,
        round: 3,
        high_qc: qc.clone(),
        sender: 3,
        signature: signers[3].sign(&crypto::timeout_message(epoch, 3, 1)),
    };
    let tc = TimeoutCert {
        epoch,
        round: 3,
        high_qc: qc.clone(),
        signatures: BoundedVec::new(
            (1..4)
                .map(|i| TimeoutSignature {
                    replica: i as u16,
                    high_qc_round: 1,
                    signature: signers[i].sign(&crypto::timeout_message(epoch, 3, 1)),
                })
                .collect(),
        )
        .expect("three"),
    };
    let vote = Vote {
        epoch,
        round: 2,
        block_id: crypto::block_id(&child),
        parent_round: 1,
        voter: 0,
        signature: signers[0].sign(&crypto::vote_message(
            epoch,
            2,
            &crypto::block_id(&child),
            1,
        )),
    };
    let tree = receipt_tree(3);
    let messages: Vec<Vec<u8>> = vec![
        wire::encode(&ClientRequest::RetiredAppend {
            entries: BoundedVec::new(vec![entry(b"a"), entry(b"bb")]).expect("two"),
        }),
        wire::encode(&ClientRequest::GetCheckpoint),
        wire::encode(&ClientRequest::GetInclusionProof {
            leaf: LeafRef::Index { index: 5 },
            tree_size: 9,
        }),
        wire::encode(&ClientRequest::GetInclusionProof {
            leaf: LeafRef::LeafHash {
                leaf_hash: merkle::leaf_hash(b"x"),
            },
            tree_size: u64::MAX,
        }),
        wire::encode(&ClientRequest::GetConsistencyProof {
            old_size: 3,
            new_size: 70_000,
        }),
        wire::encode(&ClientRequest::GetEntries {
            start: 1 << 40,
            count: 1024,
        }),
        wire::encode(&ClientResponse::RetiredReceipts),
        wire::encode(&ClientResponse::Error {
            code: ErrorCode::Unsupported,
            message: BoundedBytes::new(b"upgrade the client".to_vec()).expect("short"),
        }),
        wire::encode(&ClientResponse::Checkpoint {
            note: BoundedBytes::new(
                signed(3, tree.root(), &[0], false, &[])
                    .format()
                    .into_bytes(),
            )
            .expect("small"),
        }),
        wire::encode(&ClientResponse::InclusionProof {
            index: 1,
            tree_size: 3,
            hashes: BoundedVec::new(merkle::prove_inclusion(1, 3, &tree).expect("ok"))
                .expect("short"),
        }),
        wire::encode(&ClientResponse::ConsistencyProof {
            old_size: 1,
            new_size: 3,
            hashes: BoundedVec::new(merkle::prove_consistency(1, 3, &tree).expect("ok"))
                .expect("short"),
        }),
        wire::encode(&ClientResponse::Entries {
            start: 0,
            entries: BoundedVec::new(vec![entry(b"fuzz entry 0")]).expect("one"),
        }),
        wire::encode(&ClientResponse::Error {
            code: ErrorCode::Overloaded {
                retry_after_ms: 250,
            },
            message: BoundedBytes::new(b"busy".to_vec()).expect("short"),
        }),
        wire::encode(&ClientResponse::Error {
            code: ErrorCode::NotFound,
            message: BoundedBytes::default(),
        }),
        wire::encode(&ConsensusMessage::Proposal {
            block: child.clone(),
            timeout_cert: Some(tc.clone()),
            signature: signers[2].sign(&crypto::proposal_message(epoch, &crypto::block_id(&child))),
        }),
        wire::encode(&ConsensusMessage::Vote { vote: vote.clone() }),
        wire::encode(&ConsensusMessage::Timeout {
            timeout: timeout.clone(),
        }),
        wire::encode(&ConsensusMessage::CheckpointSignature {
            size: 3,
            root: tree.root(),
            replica: 1,
            note_signature: Signature64([7; 64]),
        }),
        wire::encode(&ConsensusMessage::Forward {
            entries: BoundedVec::new(vec![entry(b"fwd")]).expect("one"),
        }),
        wire::encode(&ConsensusMessage::SyncRequest {
            from_height: 1,
            max_blocks: 32,
        }),
        wire::encode(&ConsensusMessage::SyncResponse {
            blocks: BoundedVec::new(vec![block.clone(), child.clone()]).expect("two"),
            commit_qc: Some(qc.clone()),
        }),
        wire::encode(&ConsensusMessage::Certificates {
            high_qc: qc.clone(),
            high_tc: Some(tc.clone()),
            committed_height: 7,
        }),
        wire::encode(&block),
        wire::encode(&vote),
        wire::encode(&timeout),
        wire::encode(&qc),
        wire::encode(&tc),
        wire::encode(&ErrorCode::Malformed),
        wire::encode(&LeafRef::Index { index: 0 }),
    ];
    for m in &messages {
        corpus.add("wire_decode", m);
    }
    // A stream of frames, cut after 7 bytes.
    let mut stream = vec![7u8];
    for m in &messages[..4] {
        stream.extend_from_slice(&wire::frame(m));
    }
    corpus.add("wire_decode", &stream);

    // The same messages, raw, as consensus_core mode-0 inputs (op 0).
    for m in &messages[13..21] {
        consensus_core_raw(corpus, m);
    }
    later_wire_seeds(corpus, &signers, &child, &tree);
}

/// A raw message as a consensus_core mode-0 input (op 0), if it fits.
fn consensus_core_raw(corpus: &mut Corpus, message: &[u8]) {
    if message.len() <= 255 {
        let mut out = Output::default();
        out.u8(0)
            .u8(0)
            .u8(0)
            .u8(1)
            .u8(message.len() as u8)
            .bytes(message);
        corpus.add("consensus_core", &out.0);
    }
}

/// Variants added after the first corpus: receipts in parts, and proposals
/// by leaf hash with the entry request that completes them.
fn later_wire_seeds(corpus: &mut Corpus, signers: &[Signer], child: &Block, tree: &MemoryTree) {
    let epoch = child.epoch;
    let leaves: Vec<Hash> = child.entries.iter().map(|e| merkle::leaf_hash(e)).collect();
    let header = crypto::header_of(child);
    let consensus = vec![
        wire::encode(&ConsensusMessage::ProposalLeaves {
            header: header.clone(),
            leaves: BoundedVec::new(leaves.clone()).expect("one"),
            timeout_cert: None,
            signature: signers[2].sign(&crypto::proposal_message(
                epoch,
                &crypto::block_id_from_header(&header, &leaves),
            )),
        }),
        wire::encode(&ConsensusMessage::EntryRequest {
            leaves: BoundedVec::new(leaves).expect("one"),
        }),
    ];
    for m in &consensus {
        corpus.add("wire_decode", m);
        consensus_core_raw(corpus, m);
    }
    let client = [
        wire::encode(&ClientRequest::RetiredAppendBatch {
            entries: BoundedVec::new(vec![entry(b"a"), entry(b"bb")]).expect("two"),
        }),
        wire::encode(&ClientResponse::RetiredReceiptBatch),
        wire::encode(&ClientRequest::AppendMultiproof {
            entries: BoundedVec::new(vec![entry(b"a"), entry(b"bb")]).expect("two"),
        }),
        wire::encode(&ClientResponse::ReceiptMultiproof {
            checkpoint: BoundedBytes::new(
                signed(3, tree.root(), &[0, 1, 2], true, &[])
                    .format()
                    .into_bytes(),
            )
            .expect("small"),
            indexes: BoundedVec::new(vec![1, 2, 1]).expect("three"),
            proof: BoundedVec::new(merkle::prove_multiproof(&[1, 2], 3, tree).expect("ok"))
                .expect("short"),
        }),
    ];
    for m in &client {
        corpus.add("wire_decode", m);
    }
}

/// The most productive of many random programs, per mode.
fn consensus_seeds(corpus: &mut Corpus) {
    let mut rng = StdRng::seed_from_u64(0xb1f7_1065);
    for mode in [0u8, 1] {
        let mut best: Vec<(bftlog_fuzz::consensus::Progress, Vec<u8>)> = Vec::new();
        for _ in 0..1500 {
            let len = rng.random_range(64..1500);
            let mut program = vec![mode];
            program.extend((0..len).map(|_| rng.random::<u8>()));
            let progress = bftlog_fuzz::consensus::run(&program);
            best.push((progress, program));
        }
        best.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.len().cmp(&b.1.len())));
        best.dedup_by_key(|(p, _)| *p);
        for (progress, program) in best.iter().take(12) {
            eprintln!(
                "consensus_core mode {mode}: {progress:?}, {} bytes",
                program.len()
            );
            corpus.add("consensus_core", program);
        }
    }
    // consensus_sim: seeds and fault plans (see consensus::simulate).
    for i in 0..12u64 {
        let mut out = Output::default();
        out.u64(i * 7919)
            .u8((i % 4) as u8)
            .u8((i % 3) as u8)
            .u8(1)
            .u8((i % 9) as u8)
            .u8(2)
            .u8((i * 13) as u8)
            .u8((i * 5 % 16) as u8)
            .u8((i % 11) as u8)
            .u8((i % 2) as u8)
            .u8((i / 2 % 2) as u8)
            .u8((i * 3) as u8)
            .u16((i * 150) as u16);
        bftlog_fuzz::consensus::simulate(&out.0);
        corpus.add("consensus_sim", &out.0);
    }
}

fn main() {
    let root = match std::env::args().nth(1).filter(|a| !a.starts_with("--")) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus"),
    };
    let mut corpus = Corpus {
        root,
        counts: BTreeMap::new(),
    };
    // `--wire-only` writes just the wire seeds (the whole generator takes
    // minutes, most of it spent choosing consensus seeds).
    if std::env::args().any(|a| a == "--wire-only") {
        wire_seeds(&mut corpus);
        for (target, n) in &corpus.counts {
            println!("{target}: {n} seeds");
        }
        return;
    }
    notes_and_checkpoints(&mut corpus);
    receipts(&mut corpus);
    policies(&mut corpus);
    split_views(&mut corpus);
    merkle_seeds(&mut corpus);
    wire_seeds(&mut corpus);
    consensus_seeds(&mut corpus);
    for (target, n) in &corpus.counts {
        println!("{target}: {n} seeds");
    }
}
