//! tlog-policy (with the replica-quorum extension), tlog-proof receipts and
//! split-view evidence, end to end with real keys and trees.

use bftlog_spec::checkpoint::Checkpoint;
use bftlog_spec::evidence::{self, Comparison, Evidence, EvidenceError, Kind};
use bftlog_spec::merkle::{self, Hash, MemoryTree};
use bftlog_spec::note::{KeyType, Note, SignerKey};
use bftlog_spec::policy::{Policy, PolicyError, VerifyCheckpointError, bft_threshold};
use bftlog_spec::proof::{ProofParseError, ProofVerifyError, TlogProof};

type PolicyCheck = fn(&PolicyError) -> bool;
type ProofCheck = fn(&ProofParseError) -> bool;

const ORIGIN: &str = "bftlog.example/test";

fn key(name: &str, kind: KeyType, seed: u8) -> SignerKey {
    SignerKey::new(
        name,
        kind,
        ed25519_dalek::SigningKey::from_bytes(&[seed; 32]),
    )
    .unwrap()
}

struct Cluster {
    replicas: Vec<SignerKey>,
    witnesses: Vec<SignerKey>,
    policy: Policy,
}

/// Four replicas (threshold 3 by default) and two witnesses, quorum "any".
fn cluster() -> Cluster {
    let replicas: Vec<SignerKey> = (1..=4).map(|i| key(ORIGIN, KeyType::Ed25519, i)).collect();
    let witnesses: Vec<SignerKey> = (1..=2)
        .map(|i| {
            key(
                &format!("witness.example/w{i}"),
                KeyType::CosignatureV1,
                100 + i,
            )
        })
        .collect();
    let mut text = String::from("# a 4-replica bftlog\n");
    for r in &replicas {
        text += &format!("log {}\n", r.verifier());
    }
    text += &format!("replica-quorum {ORIGIN}\n\n");
    for (i, w) in witnesses.iter().enumerate() {
        text += &format!("witness w{i}\t{} https://w{i}.example/\n", w.verifier());
    }
    text += "group ws any w0 w1\n  quorum ws  \n";
    let policy = Policy::parse(text.as_bytes()).unwrap();
    Cluster {
        replicas,
        witnesses,
        policy,
    }
}

fn tree(n: u64, salt: &str) -> MemoryTree {
    let mut t = MemoryTree::new();
    for i in 0..n {
        t.append(merkle::leaf_hash(format!("{salt}{i}").as_bytes()));
    }
    t
}

fn sign(c: &Cluster, size: u64, root: Hash, replicas: &[usize], witnesses: &[usize]) -> Note {
    let cp = Checkpoint::new(ORIGIN, size, root);
    let mut note = Note::new(&cp.format()).unwrap();
    for &r in replicas {
        note.sign(&c.replicas[r]).unwrap();
    }
    for &w in witnesses {
        let sig = c.witnesses[w]
            .cosign_text(note.text(), 1_700_000_000 + w as u64)
            .unwrap();
        note.add_signature(sig).unwrap();
    }
    note
}

#[test]
fn policy_thresholds_and_evaluation() {
    let c = cluster();
    assert_eq!(c.policy.log_threshold(ORIGIN), 3);
    assert_eq!(
        [1, 2, 3, 4, 5, 6, 7, 10].map(bft_threshold),
        [1, 1, 1, 3, 3, 3, 5, 7]
    );
    let t = tree(5, "x");
    // 3 replicas + 1 witness: valid, and the evaluation says who signed.
    let ok = c
        .policy
        .verify_checkpoint(&sign(&c, 5, t.root(), &[0, 2, 3], &[1]))
        .unwrap();
    let eval = ok.evaluation();
    assert_eq!(eval.log_signers.len(), 3);
    assert_eq!(eval.cosigners.len(), 1);
    assert_eq!(eval.cosigners[0].name, "w1");
    assert_eq!(eval.cosigners[0].timestamp, 1_700_000_001);
    assert_eq!(eval.groups_met, vec!["ws".to_string()]);
    // 2 replicas: below 2f+1.
    match c
        .policy
        .verify_checkpoint(&sign(&c, 5, t.root(), &[0, 1], &[0]))
    {
        Err(VerifyCheckpointError::LogQuorum {
            signed: 2,
            needed: 3,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    // No witness.
    assert!(matches!(
        c.policy
            .verify_checkpoint(&sign(&c, 5, t.root(), &[0, 1, 2], &[])),
        Err(VerifyCheckpointError::WitnessQuorum { .. })
    ));
    // A known replica's bad signature rejects the whole note, even with
    // enough good ones.
    let mut note = sign(&c, 5, t.root(), &[0, 1, 2], &[0]);
    let other = sign(&c, 6, t.root(), &[3], &[]);
    note.add_signature(other.signatures()[0].clone()).unwrap();
    assert!(c.policy.verify_checkpoint(&note).is_err());
    // Policy text round-trips to the same meaning.
    let again = Policy::parse(c.policy.to_text().as_bytes()).unwrap();
    assert_eq!(again.to_text(), c.policy.to_text());
    assert_eq!(again.log_threshold(ORIGIN), 3);
}

#[test]
fn policy_parse_errors() {
    let c = cluster();
    let log = |i: usize| format!("log {}\n", c.replicas[i].verifier());
    let wit = |i: usize| format!("witness w{i} {}\n", c.witnesses[i].verifier());
    let cases: Vec<(String, PolicyCheck)> = vec![
        (log(0), |e| matches!(e, PolicyError::NoQuorum)),
        (format!("{}{}quorum none\n", log(0), log(0)), |e| {
            matches!(e, PolicyError::DuplicateKey { line: 2 })
        }),
        (format!("{}quorum none\nquorum none\n", log(0)), |e| {
            matches!(e, PolicyError::DuplicateQuorum { line: 3 })
        }),
        (format!("{}quorum w9\n", log(0)), |e| {
            matches!(e, PolicyError::UndefinedName { .. })
        }),
        (
            format!("{}group g 1 w0\n{}quorum g\n", log(0), wit(0)),
            |e| matches!(e, PolicyError::UndefinedName { line: 2, .. }),
        ),
        (
            format!("{}{}group g 2 w0\nquorum g\n", log(0), wit(0)),
            |e| matches!(e, PolicyError::Threshold { line: 3 }),
        ),
        (
            format!("{}{}group g 0 w0\nquorum g\n", log(0), wit(0)),
            |e| matches!(e, PolicyError::Threshold { .. }),
        ),
        (
            format!("{}{}group g 01 w0\nquorum g\n", log(0), wit(0)),
            |e| matches!(e, PolicyError::Threshold { .. }),
        ),
        (
            format!("{}{}group g any w0 w0\nquorum g\n", log(0), wit(0)),
            |e| matches!(e, PolicyError::DuplicateMember { .. }),
        ),
        // A member of one group may not be a member of another: w0 would
        // count twice towards b ("2 of a, w0" met by w0 alone).
        (
            format!(
                "{}{}group a any w0\ngroup b 2 a w0\nquorum b\n",
                log(0),
                wit(0)
            ),
            |e| matches!(e, PolicyError::DuplicateMember { line: 4, .. }),
        ),
        (
            format!("{}{}group w0 any w0\nquorum w0\n", log(0), wit(0)),
            |e| matches!(e, PolicyError::DuplicateName { .. }),
        ),
        (
            format!(
                "{}witness none {}\nquorum none\n",
                log(0),
                c.witnesses[0].verifier()
            ),
            |e| matches!(e, PolicyError::ReservedName { .. }),
        ),
        (
            format!("log {}\nquorum none\n", c.witnesses[0].verifier()),
            |e| matches!(e, PolicyError::KeyType { .. }),
        ),
        (
            format!("witness w {}\nquorum none\n", c.replicas[0].verifier()),
            |e| matches!(e, PolicyError::KeyType { .. }),
        ),
        (
            format!(
                "{}replica-quorum {ORIGIN} 1\nquorum none\n",
                log(0) + &log(1)
            ),
            |e| matches!(e, PolicyError::ReplicaThreshold { k: 1, n: 2, .. }),
        ),
        (
            format!("{}replica-quorum {ORIGIN} 2\nquorum none\n", log(0)),
            |e| matches!(e, PolicyError::ReplicaThreshold { .. }),
        ),
        (
            format!("{}replica-quorum other.example\nquorum none\n", log(0)),
            |e| matches!(e, PolicyError::NoReplicas { .. }),
        ),
        (format!("{}frobnicate\nquorum none\n", log(0)), |e| {
            matches!(e, PolicyError::UnknownKeyword { .. })
        }),
        (format!("{}quorum none\x0b\n", log(0)), |e| {
            matches!(e, PolicyError::ControlCharacter { line: 2 })
        }),
        ("log not-a-key\nquorum none\n".to_string(), |e| {
            matches!(e, PolicyError::Key { line: 1, .. })
        }),
    ];
    for (text, check) in cases {
        let err = Policy::parse(text.as_bytes()).unwrap_err();
        assert!(check(&err), "{text:?} gave {err:?}");
    }
    assert!(matches!(
        Policy::parse(&[0xff, b'\n']),
        Err(PolicyError::NotUtf8)
    ));
}

#[test]
fn receipts_verify_and_reject_tampering() {
    let c = cluster();
    let t = tree(1000, "e");
    let note = sign(&c, 1000, t.root(), &[0, 1, 3], &[0, 1]);
    for index in [0u64, 1, 511, 512, 999] {
        let proof = TlogProof {
            extra: Some(b"ctx".to_vec()),
            index,
            inclusion: merkle::prove_inclusion(index, 1000, &t).unwrap(),
            checkpoint: note.clone(),
        };
        let text = proof.format();
        let parsed = TlogProof::parse(text.as_bytes()).unwrap();
        assert_eq!(parsed, proof);
        let entry = format!("e{index}");
        let verified = parsed.verify_entry(&c.policy, entry.as_bytes()).unwrap();
        assert_eq!(verified.index(), index);
        assert_eq!(verified.extra(), Some(&b"ctx"[..]));
        assert!(matches!(
            parsed.verify_entry(&c.policy, b"other"),
            Err(ProofVerifyError::Inclusion(_))
        ));
        let mut moved = parsed.clone();
        moved.index = (index + 1) % 1000;
        assert!(moved.verify_entry(&c.policy, entry.as_bytes()).is_err());
    }
    let proof = TlogProof {
        extra: None,
        index: 7,
        inclusion: merkle::prove_inclusion(7, 1000, &t).unwrap(),
        checkpoint: note,
    };
    // A receipt batch formats each proof exactly as one at a time.
    let batch: Vec<(u64, Vec<merkle::Hash>)> = [7u64, 8, 999]
        .iter()
        .map(|&i| (i, merkle::prove_inclusion(i, 1000, &t).unwrap()))
        .collect();
    let texts = TlogProof::format_batch(
        &proof.checkpoint,
        batch.iter().map(|(i, p)| (*i, p.as_slice())),
    );
    for ((index, inclusion), text) in batch.iter().zip(&texts) {
        let single = TlogProof {
            extra: None,
            index: *index,
            inclusion: inclusion.clone(),
            checkpoint: proof.checkpoint.clone(),
        };
        assert_eq!(*text, single.format());
        let note_text = proof.checkpoint.format();
        assert_eq!(
            *text,
            TlogProof::format_with_note(*index, inclusion, &note_text)
        );
    }
    let text = proof.format();
    assert!(text.starts_with("c2sp.org/tlog-proof@v1\nindex 7\n"));
    let bad: Vec<(String, ProofCheck)> = vec![
        (
            text.replacen("c2sp.org/tlog-proof@v1", "c2sp.org/tlog-proof@v2", 1),
            |e| matches!(e, ProofParseError::Header),
        ),
        (text.replacen("index 7", "index 07", 1), |e| {
            matches!(e, ProofParseError::Index { line: 2 })
        }),
        (text.replacen("index 7", "index  7", 1), |e| {
            matches!(e, ProofParseError::Index { .. })
        }),
        (
            text.replacen("index 7\n", "index 7\nnot base64\n", 1),
            |e| matches!(e, ProofParseError::Hash { line: 3 }),
        ),
        (text.replacen("index 7\n", "extra !!\nindex 7\n", 1), |e| {
            matches!(e, ProofParseError::Extra { line: 2 })
        }),
        (text[..text.find("\n\n").unwrap()].to_string(), |e| {
            matches!(e, ProofParseError::Truncated)
        }),
        (
            text.replacen(
                "index 7\n",
                &format!(
                    "index 7\n{}",
                    "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n".repeat(65)
                ),
                1,
            ),
            |e| matches!(e, ProofParseError::TooManyHashes),
        ),
        (format!("{text}extra"), |e| {
            matches!(e, ProofParseError::Checkpoint(_))
        }),
    ];
    // The cached parser rejects exactly the same, with a warm cache of the
    // good checkpoint or a cold one, and leaves a good cache usable.
    let mut warm = None;
    assert_eq!(
        TlogProof::parse_str_cached(&text, &mut warm).unwrap(),
        proof
    );
    for (bad_text, check) in &bad {
        let err = TlogProof::parse(bad_text.as_bytes()).unwrap_err();
        assert!(check(&err), "{err:?}");
        assert_eq!(
            TlogProof::parse_str_cached(bad_text, &mut warm).unwrap_err(),
            err
        );
        assert_eq!(
            TlogProof::parse_str_cached(bad_text, &mut None).unwrap_err(),
            err
        );
    }
    // Receipts sharing a checkpoint parse to what `parse` gives, and a
    // different checkpoint replaces the cached one.
    let mut cache = None;
    for text in texts.iter().chain([&text]) {
        assert_eq!(
            TlogProof::parse_str_cached(text, &mut cache).unwrap(),
            TlogProof::parse(text.as_bytes()).unwrap()
        );
    }
    let other_note = sign(&c, 1000, t.root(), &[0, 1, 2], &[0, 1]);
    let other = TlogProof {
        checkpoint: other_note.clone(),
        ..proof.clone()
    };
    let parsed = TlogProof::parse_str_cached(&other.format(), &mut cache).unwrap();
    assert_eq!(parsed.checkpoint, other_note);
    assert_eq!(cache.as_ref().map(|(_, n)| n), Some(&other_note));
}

#[test]
fn evidence_same_size_names_replicas_that_signed_both() {
    let c = cluster();
    let (a, b) = (tree(10, "a"), tree(10, "b"));
    let note_a = sign(&c, 10, a.root(), &[0, 1, 2], &[]);
    let note_b = sign(&c, 10, b.root(), &[1, 2, 3], &[]);
    let Comparison::SplitView(ev, verified) =
        evidence::compare(&c.policy, &note_a, &note_b, None).unwrap()
    else {
        panic!("split view not found")
    };
    assert_eq!(verified.kind, Kind::SameSize);
    let names: Vec<String> = verified.signed_both.iter().map(|k| k.to_string()).collect();
    assert_eq!(
        names,
        vec![
            c.replicas[1].verifier().to_string(),
            c.replicas[2].verifier().to_string()
        ]
    );
    assert!(verified.quorum_a && verified.quorum_b);
    // The text form round-trips and checks independently.
    let text = ev.format();
    let parsed = Evidence::parse(text.as_bytes()).unwrap();
    assert_eq!(&parsed, ev.as_ref());
    assert_eq!(parsed.check(&c.policy).unwrap(), verified);
    // Claiming an extra signer, or dropping one, fails the check.
    let mut lying = parsed.clone();
    lying.signers.push(c.replicas[0].verifier());
    assert_eq!(lying.check(&c.policy), Err(EvidenceError::SignerMismatch));
    lying.signers.truncate(1);
    assert_eq!(lying.check(&c.policy), Err(EvidenceError::SignerMismatch));
    assert!(Evidence::parse(format!("{text}x").as_bytes()).is_err());
    // The same checkpoint twice is not a split view.
    assert!(matches!(
        evidence::compare(&c.policy, &note_a, &note_a, None).unwrap(),
        Comparison::Consistent
    ));
}

#[test]
fn evidence_larger_tree_not_extending_smaller() {
    let c = cluster();
    let honest = tree(20, "h");
    // A forked tree: same first 10 leaves, different 11th..
    let mut forked = MemoryTree::new();
    for i in 0..20u64 {
        let data = if i < 10 {
            format!("h{i}")
        } else {
            format!("fork{i}")
        };
        forked.append(merkle::leaf_hash(data.as_bytes()));
    }
    for old in [11u64, 13, 16] {
        let small = sign(
            &c,
            old,
            merkle::tree_root(old, &honest).unwrap(),
            &[0, 1, 2],
            &[0],
        );
        let large = sign(&c, 20, forked.root(), &[0, 2, 3], &[1]);
        // The honest tree is consistent with its own prefix.
        let honest_large = sign(&c, 20, honest.root(), &[0, 1, 2], &[]);
        let proof = merkle::prove_consistency(old, 20, &honest).unwrap();
        assert!(matches!(
            evidence::compare(&c.policy, &small, &honest_large, Some(&proof)).unwrap(),
            Comparison::Consistent
        ));
        // Against the fork: without a proof, undetermined.
        assert!(matches!(
            evidence::compare(&c.policy, &small, &large, None).unwrap(),
            Comparison::Undetermined(_)
        ));
        // With the fork's full path, a split view naming replicas 0 and 2.
        let path = merkle::prove_consistency_path(old, 20, &forked).unwrap();
        let result = evidence::compare(&c.policy, &large, &small, Some(&path)).unwrap();
        let Comparison::SplitView(ev, verified) = result else {
            panic!("old {old}: {result:?}")
        };
        assert_eq!(verified.kind, Kind::Inconsistent);
        assert_eq!(
            verified.signed_both,
            vec![c.replicas[0].verifier(), c.replicas[2].verifier()]
        );
        let parsed = Evidence::parse(ev.format().as_bytes()).unwrap();
        assert_eq!(parsed.check(&c.policy).unwrap(), verified);
        // A garbage path proves nothing.
        let mut garbage = parsed.clone();
        garbage.path[0] = Hash([0; 32]);
        assert_eq!(
            garbage.check(&c.policy),
            Err(EvidenceError::PathNotFromNewTree)
        );
    }
    // Power-of-two old size: a standard proof cannot decide, the full path can.
    let small = sign(
        &c,
        16,
        merkle::tree_root(16, &honest).unwrap(),
        &[0, 1, 2],
        &[],
    );
    let large = sign(&c, 20, forked.root(), &[1, 2, 3], &[]);
    let proof = merkle::prove_consistency(16, 20, &forked).unwrap();
    assert!(matches!(
        evidence::compare(&c.policy, &small, &large, Some(&proof)).unwrap(),
        Comparison::Undetermined(_)
    ));
    let path = merkle::prove_consistency_path(16, 20, &forked).unwrap();
    assert!(matches!(
        evidence::compare(&c.policy, &small, &large, Some(&path)).unwrap(),
        Comparison::SplitView(..)
    ));
}
