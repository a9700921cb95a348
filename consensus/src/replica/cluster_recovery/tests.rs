//! Recovery sessions on one replica, driven by hand: what it signs, what
//! it refuses, and what a cluster signature from a peer must be.

use super::super::*;
use crate::Rejection;
use crate::threshold::{self, ClusterShare};
use bftlog_spec::wire::{Element32, NonceCommitment, SignerCommitment};
use rand::SeedableRng;
use rand::rngs::StdRng;

const HEIGHT: u64 = 9;
const SIZE: u64 = 5;

struct Cluster {
    keys: Vec<ed25519_dalek::SigningKey>,
    cfg: Config,
    shares: Vec<ClusterShare>,
    root: Hash,
}

fn cluster() -> Cluster {
    let keys: Vec<ed25519_dalek::SigningKey> = (1..=4u8)
        .map(|i| ed25519_dalek::SigningKey::from_bytes(&[i; 32]))
        .collect();
    let cfg = Config::new(1, "o", keys.iter().map(|k| k.verifying_key()).collect());
    let shares = threshold::deal(4, 3, &mut StdRng::seed_from_u64(7)).unwrap();
    Cluster {
        keys,
        cfg,
        shares,
        root: merkle::leaf_hash(b"root"),
    }
}

impl Cluster {
    /// Replica `id` with its share, the checkpoint of `HEIGHT` committed
    /// and unsigned, started at time zero.
    fn replica(&self, id: ReplicaId) -> Replica<StdRng> {
        let mut cfg = self.cfg.clone();
        cfg.cluster_share = Some(self.shares[id as usize].clone());
        let mut replica = Replica::new(
            cfg,
            id,
            self.keys[id as usize].clone(),
            StdRng::seed_from_u64(100 + id as u64),
            Recovered::fresh(1),
            Duration::ZERO,
        )
        .unwrap();
        replica.track_unsigned(HEIGHT, SIZE, self.root);
        replica
    }

    /// A fresh nonce of replica `id` (as the test's stand-in for it).
    fn nonce(&self, id: ReplicaId) -> (frost_ed25519::round1::SigningNonces, NonceCommitment) {
        let nonces = threshold::fresh_nonces(
            &self.shares[id as usize],
            &mut StdRng::seed_from_u64(200 + id as u64),
            1,
        )
        .pop()
        .unwrap();
        let commitment = threshold::to_wire(nonces.commitments());
        (nonces, commitment)
    }

    fn text(&self) -> String {
        Checkpoint::new(&self.cfg.origin, SIZE, self.root).format()
    }

    /// Replica `id`'s share for `signers`, signed with `nonces`.
    fn share(
        &self,
        id: ReplicaId,
        nonces: &frost_ed25519::round1::SigningNonces,
        signers: &[SignerCommitment],
    ) -> Element32 {
        let decoded = signers
            .iter()
            .map(|s| (s.replica, threshold::from_wire(&s.commitment).unwrap()));
        let package = threshold::signing_package(decoded, self.text().as_bytes());
        threshold::sign_share(&self.shares[id as usize], nonces, &package).unwrap()
    }
}

/// Every output of the replica so far, writes acknowledged.
fn drain(replica: &mut Replica<StdRng>) -> (Vec<Outgoing>, Vec<CheckpointEvent>, Vec<Event>) {
    let (mut sends, mut checkpoints, mut events) = (Vec::new(), Vec::new(), Vec::new());
    loop {
        let step = replica.poll_step();
        if step.is_empty() {
            return (sends, checkpoints, events);
        }
        sends.extend(step.sends);
        checkpoints.extend(step.checkpoints);
        events.extend(step.events);
        for write in step.persist {
            replica.handle_persisted(write.token);
        }
    }
}

/// The recovery commitments among `sends`, as (to, commitment).
fn recovery_commitments(sends: &[Outgoing]) -> Vec<(Target, NonceCommitment)> {
    sends
        .iter()
        .filter_map(|o| match &o.message {
            ConsensusMessage::RecoveryCommitment {
                height: HEIGHT,
                stage: 1,
                commitment,
                ..
            } => Some((o.to, *commitment)),
            _ => None,
        })
        .collect()
}

fn shares_sent(sends: &[Outgoing]) -> Vec<Element32> {
    sends
        .iter()
        .filter_map(|o| match &o.message {
            ConsensusMessage::ThresholdShare {
                share,
                recovery_stage: Some(1),
                ..
            } => Some(*share),
            _ => None,
        })
        .collect()
}

fn request(signers: &[SignerCommitment], root: Hash) -> ConsensusMessage {
    ConsensusMessage::RecoveryRequest {
        height: HEIGHT,
        size: SIZE,
        root,
        stage: 1,
        signers: BoundedVec::new(signers.to_vec()).unwrap(),
    }
}

/// A checkpoint unsigned `cluster_recovery_ms` after its commit enters
/// stage 1: replica 0 sends all a commitment for the stage's coordinator,
/// replica (9 + 1) mod 4 = 2. It signs the coordinator's session once,
/// with that nonce, and sends the coordinator a fresh commitment; the same
/// session again, a session from another replica, or one for another
/// root gets nothing. Its share combines with the others' into the
/// cluster signature.
#[test]
fn a_member_signs_each_recovery_nonce_once() {
    let c = cluster();
    let mut replica = c.replica(0);
    drain(&mut replica);
    replica.handle_timeout(Duration::from_millis(499));
    assert!(recovery_commitments(&drain(&mut replica).0).is_empty());
    let at = Duration::from_millis(500);
    replica.handle_timeout(at);
    let offered = recovery_commitments(&drain(&mut replica).0);
    assert_eq!(
        offered.len(),
        1,
        "one commitment, to all (the coordinator uses it)"
    );
    assert_eq!(offered[0].0, Target::All);
    let own = offered[0].1;

    let (nonces_2, commitment_2) = c.nonce(2);
    let (nonces_3, commitment_3) = c.nonce(3);
    let signers = vec![
        SignerCommitment {
            replica: 0,
            commitment: own,
        },
        SignerCommitment {
            replica: 2,
            commitment: commitment_2,
        },
        SignerCommitment {
            replica: 3,
            commitment: commitment_3,
        },
    ];
    // A session for another root: refused.
    let mut other_root = c.root;
    other_root.0[0] ^= 1;
    replica.handle_message(at, 2, request(&signers, other_root));
    assert!(shares_sent(&drain(&mut replica).0).is_empty());
    // From a replica that does not coordinate the stage: malformed.
    replica.handle_message(at, 3, request(&signers, c.root));
    let (sends, _, events) = drain(&mut replica);
    assert!(shares_sent(&sends).is_empty());
    assert!(events.contains(&Event::Rejected {
        from: 3,
        reason: Rejection::Malformed
    }));

    replica.handle_message(at, 2, request(&signers, c.root));
    let (sends, _, _) = drain(&mut replica);
    let shares = shares_sent(&sends);
    assert_eq!(shares.len(), 1, "one share for the session");
    let fresh = recovery_commitments(&sends);
    assert_eq!(
        fresh.len(),
        1,
        "and a fresh commitment for the next session"
    );
    assert_eq!(fresh[0].0, Target::All);
    assert_ne!(fresh[0].1, own);

    // The nonce is gone: the same session signs nothing.
    replica.handle_message(at, 2, request(&signers, c.root));
    assert!(shares_sent(&drain(&mut replica).0).is_empty());

    // The others' shares complete the session: the replica emits the
    // cluster signature's line, and the checkpoint is no longer unsigned.
    for (id, nonces) in [(2, &nonces_2), (3, &nonces_3)] {
        let share = c.share(id, nonces, &signers);
        replica.handle_message(
            at,
            id,
            ConsensusMessage::ThresholdShare {
                height: HEIGHT,
                size: SIZE,
                root: c.root,
                replica: id,
                signers: BoundedVec::new(signers.clone()).unwrap(),
                share,
                recovery_stage: Some(1),
            },
        );
    }
    let (_, checkpoints, _) = drain(&mut replica);
    let line = checkpoints
        .iter()
        .find_map(|e| match e {
            CheckpointEvent::ClusterSigned {
                size: SIZE, line, ..
            } => Some(line.clone()),
            _ => None,
        })
        .expect("the cluster signature formed");
    let key = c.shares[0].verifying_key().unwrap();
    let signature =
        ed25519_dalek::Signature::from_bytes(&line.signature.clone().try_into().unwrap());
    key.verify_strict(c.text().as_bytes(), &signature)
        .expect("a valid Ed25519 signature under the cluster key");
    assert!(
        replica.recovery_deadline().is_none(),
        "nothing left to recover"
    );
}

/// A cluster signature a peer sends is checked strictly before use, once
/// per sender: a forged one is counted against its sender, a valid one
/// ends the recovery.
#[test]
fn a_cluster_signature_from_a_peer_is_verified() {
    let c = cluster();
    let mut replica = c.replica(1);
    drain(&mut replica);
    let message = |signature| ConsensusMessage::ClusterSignature {
        height: HEIGHT,
        size: SIZE,
        root: c.root,
        signature,
    };
    replica.handle_message(Duration::ZERO, 2, message(Signature64([7; 64])));
    let (_, checkpoints, events) = drain(&mut replica);
    assert!(checkpoints.is_empty());
    assert!(events.contains(&Event::Rejected {
        from: 2,
        reason: Rejection::InvalidSignature
    }));

    // A valid signature made by replicas 0, 2 and 3.
    let members: Vec<(ReplicaId, _)> = [0, 2, 3].into_iter().map(|id| (id, c.nonce(id))).collect();
    let signers: Vec<SignerCommitment> = members
        .iter()
        .map(|(id, (_, commitment))| SignerCommitment {
            replica: *id,
            commitment: *commitment,
        })
        .collect();
    let shares = members
        .iter()
        .map(|(id, (nonces, _))| (*id, c.share(*id, nonces, &signers)))
        .collect();
    let decoded = signers
        .iter()
        .map(|s| (s.replica, threshold::from_wire(&s.commitment).unwrap()));
    let text = c.text();
    let package = threshold::signing_package(decoded, text.as_bytes());
    let signature = threshold::combine(
        &c.shares[1].public,
        &c.shares[1].verifying_key().unwrap(),
        &package,
        &shares,
        text.as_bytes(),
    )
    .unwrap();

    // Replica 2 had its one try.
    replica.handle_message(Duration::ZERO, 2, message(signature));
    assert!(drain(&mut replica).1.is_empty());
    replica.handle_message(Duration::ZERO, 3, message(signature));
    let (_, checkpoints, _) = drain(&mut replica);
    assert!(matches!(
        checkpoints.as_slice(),
        [CheckpointEvent::ClusterSigned { size: SIZE, .. }]
    ));
    assert!(replica.recovery_deadline().is_none());
}

/// Stages are timed from each replica's own commit, so they drift; a
/// replica moves up to the (f+1)-th highest stage that it and its peers
/// named: one faulty peer naming a far stage does not move it, two peers
/// do (f = 1), and it then offers a nonce for that stage.
#[test]
fn a_replica_behind_f_plus_one_peers_catches_up_their_stage() {
    let c = cluster();
    let mut replica = c.replica(0);
    drain(&mut replica);
    let commitment_at = |replica: ReplicaId, stage: u32| ConsensusMessage::RecoveryCommitment {
        replica,
        height: HEIGHT,
        stage,
        commitment: c.nonce(replica).1,
    };
    let own_stages = |sends: &[Outgoing]| -> Vec<u32> {
        sends
            .iter()
            .filter_map(|o| match &o.message {
                ConsensusMessage::RecoveryCommitment {
                    replica: 0, stage, ..
                } => Some(*stage),
                _ => None,
            })
            .collect()
    };
    replica.handle_message(Duration::ZERO, 1, commitment_at(1, 40));
    assert!(
        own_stages(&drain(&mut replica).0).is_empty(),
        "one peer alone"
    );
    replica.handle_message(Duration::ZERO, 2, commitment_at(2, 5));
    assert_eq!(
        own_stages(&drain(&mut replica).0),
        vec![5],
        "f + 1 peers at 5 or more"
    );
}

/// A recovery coordinator leaves out a member whose commitment is not
/// two valid points (a session naming it would fail at every member),
/// and a cluster signature for a height not committed here is not taken
/// (the signed text does not name the height).
#[test]
fn bad_recovery_inputs_are_refused() {
    let c = cluster();
    // Replica 2 coordinates stage 1 of height 9.
    let mut coordinator = c.replica(2);
    drain(&mut coordinator);
    coordinator.handle_timeout(Duration::from_millis(500));
    drain(&mut coordinator);
    let garbage = NonceCommitment {
        hiding: Element32([0xff; 32]),
        binding: Element32([0xff; 32]),
    };
    coordinator.handle_message(
        Duration::from_millis(500),
        3,
        ConsensusMessage::RecoveryCommitment {
            replica: 3,
            height: HEIGHT,
            stage: 1,
            commitment: garbage,
        },
    );
    let (_, _, events) = drain(&mut coordinator);
    assert!(events.contains(&Event::Rejected {
        from: 3,
        reason: Rejection::Malformed
    }));

    let mut replica = c.replica(1);
    drain(&mut replica);
    replica.handle_message(
        Duration::ZERO,
        2,
        ConsensusMessage::ClusterSignature {
            height: HEIGHT + 1,
            size: SIZE,
            root: c.root,
            signature: Signature64([7; 64]),
        },
    );
    let (_, checkpoints, events) = drain(&mut replica);
    assert!(checkpoints.is_empty() && events.is_empty(), "not looked at");
}
