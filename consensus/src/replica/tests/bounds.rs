//! What a peer can make a replica keep or do: proposals ahead of every
//! certificate, stripped certificates, sync answers beyond the rate.

use super::*;

/// A proposal for a round no certificate has reached (here round 5, led
/// round robin by replica 1, on the genesis QC at round 1) is refused and
/// not kept: otherwise a replica could make the others store a block for
/// every round it leads. With the known bug switched on it is kept.
#[test]
#[cfg(feature = "inject-bugs")]
fn a_proposal_ahead_of_every_certificate_is_not_stored() {
    let (keys, cfg) = test_replicas(4);
    let block = Block {
        round: 5,
        author: 1,
        entries: BoundedVec::new(vec![Entry::new(vec![7; 1000]).unwrap()]).unwrap(),
        ..round_one_header()
    };
    let id = crypto::block_id(&block);
    let signature = Signer::new(keys[1].clone()).sign(&crypto::proposal_message(1, &id));
    let run = |bug_on: bool| {
        bugs::set(bug_on.then_some(Bug::StoreFutureProposals));
        let mut replica = test_replica(&keys, &cfg, 0);
        replica.handle_message(
            Duration::ZERO,
            1,
            ConsensusMessage::Proposal {
                block: block.clone(),
                timeout_cert: None,
                signature,
            },
        );
        bugs::set(None);
        let step = replica.poll_step();
        (replica.footprint(), step.events)
    };
    let (footprint, events) = run(false);
    assert_eq!((footprint.round, footprint.stored_blocks), (1, 0));
    assert_eq!(
        events,
        vec![Event::Rejected {
            from: 1,
            reason: Rejection::Ahead
        }]
    );
    assert!(footprint.check(&cfg).is_ok());
    let (footprint, _) = run(true);
    assert_eq!(footprint.stored_blocks, 1, "the known bug keeps it");
    assert!(
        footprint.check(&cfg).is_err(),
        "and the bounds check sees it"
    );
}

/// A certificate whose fact this replica has verified before is still
/// checked signature by signature: a Byzantine leader's block carrying a
/// copy of the QC with its signatures zeroed is refused, not voted for
/// (honest replicas that never saw the QC could not verify that block).
#[test]
fn a_stripped_copy_of_a_known_qc_is_refused() {
    let (keys, cfg) = test_replicas(4);
    let now = Duration::ZERO;
    let a = round_one_header();
    let a_id = crypto::block_id(&a);
    let mut replica = test_replica(&keys, &cfg, 0);
    let sign = |signer: usize, message: &[u8]| Signer::new(keys[signer].clone()).sign(message);
    replica.handle_message(
        now,
        1,
        ConsensusMessage::Proposal {
            block: a.clone(),
            timeout_cert: None,
            signature: sign(1, &crypto::proposal_message(1, &a_id)),
        },
    );
    for voter in 1..=3 {
        replica.handle_message(now, voter, signed_vote(&keys, 1, a_id, 0, voter));
    }
    drain(&mut replica);
    let qc_a = replica.safety().high_qc.clone();
    assert_eq!((qc_a.round, replica.round()), (1, 2));
    let mut stripped = qc_a.clone();
    stripped.signatures = BoundedVec::new(
        qc_a.signatures
            .iter()
            .map(|s| ReplicaSignature {
                replica: s.replica,
                signature: Signature64([0; 64]),
            })
            .collect(),
    )
    .unwrap();
    // Round 2 on A: replica 2 leads (the first active from 2 on).
    let b = Block {
        round: 2,
        author: 2,
        parent_id: a_id,
        justify: stripped,
        ..round_one_header()
    };
    let b_id = crypto::block_id(&b);
    replica.handle_message(
        now,
        2,
        ConsensusMessage::Proposal {
            block: b,
            timeout_cert: None,
            signature: sign(2, &crypto::proposal_message(1, &b_id)),
        },
    );
    let sent = drain(&mut replica);
    assert!(
        !sent
            .iter()
            .any(|o| matches!(o.message, ConsensusMessage::Vote { .. })),
        "no vote for a block on a forged certificate: {sent:?}"
    );
    assert_eq!(replica.metrics.invalid_certificates, 1);
    assert_eq!(replica.footprint().stored_blocks, 1, "only A");
}

/// Sync answers to one peer follow its byte rate: as many at once as
/// the burst holds, then one each time the rate has paid back the bytes
/// of the one before.
#[test]
fn sync_answers_to_one_peer_are_rate_limited() {
    let (keys, mut cfg) = test_replicas(4);
    cfg.sync_serve_bytes_per_s = 1 << 20;
    cfg.sync_serve_burst_bytes = 2 << 20;
    let mut replica = test_replica(&keys, &cfg, 0);
    let entries: Vec<Entry> = (0..1024u32)
        .map(|i| Entry::new([i.to_be_bytes().to_vec(), vec![0; 1020]].concat()).unwrap())
        .collect();
    commit_chain(&mut replica, 8, &entries);
    let answered = |replica: &mut Replica<_>, at_ms: u64, from: ReplicaId| {
        replica.now = Duration::from_millis(at_ms);
        replica.on_sync_request(from, 1, 1);
        replica.finish();
        !drain(replica).is_empty()
    };
    // Each answer is one block of about 1 MiB.
    assert!(answered(&mut replica, 0, 1));
    assert!(answered(&mut replica, 0, 1));
    assert!(!answered(&mut replica, 0, 1), "over the burst");
    assert_eq!(replica.metrics.rate_limited_messages, 1);
    // Another peer has its own budget.
    assert!(answered(&mut replica, 0, 2));
    // Once the rate has paid back the debt (a few KB over the burst, at
    // 1 MiB/s: a few ms), one more answer; and then a debt of ~1 MiB.
    assert!(answered(&mut replica, 100, 1));
    assert!(!answered(&mut replica, 100, 1));
    assert!(!answered(&mut replica, 900, 1));
    assert!(answered(&mut replica, 1100, 1));
}
