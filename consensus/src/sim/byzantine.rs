//! Byzantine behaviours: a faulty replica runs the honest core and these
//! functions rewrite what it sends. Forgeries are signed with the faulty
//! replica's real key, so they get past signature checks and exercise the
//! protocol's rules.

use bftlog_spec::checkpoint::Checkpoint;
use bftlog_spec::merkle::Hash;
use bftlog_spec::note::{KeyType, SignerKey};
use bftlog_spec::wire::{
    BoundedVec, ConsensusMessage, Element32, Entry, NonceCommitment, ReplicaId, Signature64,
    TimeoutCert, TimeoutSignature, Vote,
};
use rand::RngExt;
use rand::rngs::StdRng;

use super::Sim;
use crate::crypto::{self, Signer};
use crate::{Outgoing, Target};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// Sends nothing at all.
    Silent,
    /// Sends each vote to at most one replica, so certificates form at
    /// some replicas and not at others.
    WithholdVotes,
    /// Never sends its proposals.
    WithholdProposals,
    /// As leader, sends one block to half the replicas and a conflicting
    /// block to the other half (then each half the other block too), and
    /// votes for both.
    Equivocate,
    /// Votes for its block and, to other replicas, for another block in the
    /// same round.
    DoubleVote,
    /// Corrupts signatures of half its messages.
    BadSignatures,
    /// Re-sends old messages (its own and copies of what it sent before).
    Replay,
    /// Sends proposals whose certificates are forged: a QC moved to
    /// another round (also one extending an old block, relabelled as the
    /// previous round's), a TC whose high QC does not match its
    /// signatures, or a block on an old QC sent twice, the second time
    /// with a TC of invalid signatures (receivers then hold the block: the
    /// path that must still verify the TC).
    ForgeCertificates,
    /// Two copies with one key, each talking to its own side of the
    /// honest replicas.
    Twins,
    /// With each vote, also proposes an empty block on its highest QC (for
    /// the round after the QC's, usually the round it votes in), whoever
    /// leads that round, to half the replicas. Replicas holding the QC's
    /// block reject it at once; lagging ones cannot tell it from the
    /// leader's proposal until the block arrives, and must keep both.
    ProposeOutOfTurn,
    /// With each vote, proposes blocks carrying entries on its highest QC
    /// for the next rounds it leads round robin, far ahead of any
    /// certificate: receivers must not keep them.
    FarFutureFlood,
    /// With each vote, signs checkpoints for sizes no one else signs:
    /// receivers' signature tables may keep only a bounded number of its
    /// rows, never at the honest replicas' expense.
    SignatureFlood,
    /// With each vote, asks every replica for sync from height 1, as
    /// many blocks as allowed: answers are rate-limited per peer.
    SyncFlood,
    /// Claims in its certificates a committed height far beyond anyone's,
    /// so the others ask it for sync and get nothing of use.
    LieCommittedHeight,
    /// With each vote until the heal, forwards 256 new junk entries to
    /// every replica, far more than blocks carry: each receiver may let its forwards
    /// fill only a peer's share of the mempool, so clients' entries still
    /// get in.
    ForwardFlood,
    /// Sends every cluster-key share altered: combiners must name it
    /// (FROST's identifiable abort) and drop it; answering a recovery, sends
    /// altered cluster signatures.
    BadShares,
    /// Never sends its cluster-key shares, though it votes and so is in
    /// signing sets, nor the cluster signature to a replica recovering one.
    WithholdShares,
    /// Sends half the replicas its nonce commitments with hiding and
    /// binding swapped (valid points, another commitment for the same
    /// heights), and replays old batches: receivers keep the first
    /// commitment per height, and no honest nonce signs twice.
    EquivocateCommitments,
    /// Withholds its shares made with height nonces, so checkpoints need
    /// recovery, and misleads that recovery: its recovery commitments are
    /// not its nonces' (it can never sign with them) or not points, its
    /// sessions name another root to half the replicas, each goes out
    /// again with one member's commitment altered, and with each it sends
    /// everyone a forged cluster signature.
    MisleadRecovery,
}

/// Every behaviour.
pub const ALL_BEHAVIOURS: [Behaviour; 19] = [
    Behaviour::Silent,
    Behaviour::WithholdVotes,
    Behaviour::WithholdProposals,
    Behaviour::Equivocate,
    Behaviour::DoubleVote,
    Behaviour::BadSignatures,
    Behaviour::Replay,
    Behaviour::ForgeCertificates,
    Behaviour::Twins,
    Behaviour::ProposeOutOfTurn,
    Behaviour::FarFutureFlood,
    Behaviour::SignatureFlood,
    Behaviour::SyncFlood,
    Behaviour::LieCommittedHeight,
    Behaviour::ForwardFlood,
    Behaviour::BadShares,
    Behaviour::WithholdShares,
    Behaviour::EquivocateCommitments,
    Behaviour::MisleadRecovery,
];

impl Behaviour {
    pub fn random(rng: &mut StdRng) -> Self {
        ALL_BEHAVIOURS[rng.random_range(0..ALL_BEHAVIOURS.len())]
    }
}

/// Memory of Byzantine replicas (messages to replay).
#[derive(Default)]
pub struct State {
    recorded: Vec<ConsensusMessage>,
    /// Certificates a forger saw, to build on stale ones later.
    old_qcs: Vec<bftlog_spec::wire::QuorumCert>,
}

fn split(n: usize, from: ReplicaId) -> (Vec<ReplicaId>, Vec<ReplicaId>) {
    let others: Vec<ReplicaId> = (0..n as ReplicaId).filter(|r| *r != from).collect();
    let half = others.len() / 2;
    (others[..half].to_vec(), others[half..].to_vec())
}

fn to_each(ids: &[ReplicaId], message: &ConsensusMessage) -> Vec<Outgoing> {
    ids.iter()
        .map(|r| Outgoing {
            to: Target::One(*r),
            message: message.clone(),
        })
        .collect()
}

/// The highest QC of a (running) process.
fn high_qc(sim: &Sim, node: usize) -> Option<bftlog_spec::wire::QuorumCert> {
    sim.nodes[node]
        .replica
        .as_ref()
        .map(|r| r.safety().high_qc.clone())
}

pub(super) fn tamper(
    sim: &mut Sim,
    node: usize,
    behaviour: Behaviour,
    out: Outgoing,
) -> Vec<Outgoing> {
    let id = sim.nodes[node].replica_id;
    let n = sim.scenario.n;
    let signer = Signer::new(sim.keys[id as usize].clone());
    let epoch = sim.cfg.epoch;
    match behaviour {
        Behaviour::Silent => Vec::new(),
        Behaviour::Twins => vec![out],
        Behaviour::ProposeOutOfTurn => {
            let ConsensusMessage::Vote { .. } = out.message else {
                return vec![out];
            };
            let Some(high_qc) = high_qc(sim, node) else {
                return vec![out];
            };
            let block = bftlog_spec::wire::Block {
                epoch,
                round: high_qc.round + 1,
                author: id,
                parent_id: high_qc.block_id,
                justify: high_qc,
                entries: BoundedVec::new(Vec::new()).expect("empty"),
            };
            let signature =
                signer.sign(&crypto::proposal_message(epoch, &crypto::block_id(&block)));
            let proposal = ConsensusMessage::Proposal {
                block,
                timeout_cert: None,
                signature,
            };
            let (a, _) = split(n, id);
            let mut outs = to_each(&a, &proposal);
            outs.push(out);
            outs
        }
        Behaviour::FarFutureFlood => {
            let ConsensusMessage::Vote { vote } = &out.message else {
                return vec![out];
            };
            let Some(high_qc) = high_qc(sim, node) else {
                return vec![out];
            };
            let mut outs = vec![out.clone()];
            // The next rounds it leads round robin, from two rounds past
            // its vote on: no certificate has reached them.
            let first = vote.round + 2;
            for round in (first..first + 64 * n as u64)
                .filter(|r| r % n as u64 == id as u64)
                .take(8)
            {
                let entries: Vec<Entry> = (0..4)
                    .map(|k| {
                        Entry::new(format!("far future {round} {k} {:0>1000}", 0).into_bytes())
                            .expect("small")
                    })
                    .collect();
                let block = bftlog_spec::wire::Block {
                    epoch,
                    round,
                    author: id,
                    parent_id: high_qc.block_id,
                    justify: high_qc.clone(),
                    entries: BoundedVec::new(entries).expect("four"),
                };
                let signature =
                    signer.sign(&crypto::proposal_message(epoch, &crypto::block_id(&block)));
                outs.push(Outgoing {
                    to: Target::All,
                    message: ConsensusMessage::Proposal {
                        block,
                        timeout_cert: None,
                        signature,
                    },
                });
            }
            outs
        }
        Behaviour::SignatureFlood => {
            let ConsensusMessage::Vote { vote } = &out.message else {
                return vec![out];
            };
            let note_key = SignerKey::new(
                &sim.cfg.origin,
                KeyType::Ed25519,
                sim.keys[id as usize].clone(),
            )
            .expect("the simulation's origin is a valid key name");
            let mut outs = vec![out.clone()];
            for k in 0..16u64 {
                let size = 1_000_000 + vote.round * 16 + k;
                let root = Hash(sim.rng.random());
                let text = Checkpoint::new(&sim.cfg.origin, size, root).format();
                let signed = note_key.sign_text(&text).expect("a checkpoint is a note");
                outs.push(Outgoing {
                    to: Target::All,
                    message: ConsensusMessage::CheckpointSignature {
                        size,
                        root,
                        replica: id,
                        note_signature: Signature64(signed.signature.try_into().expect("Ed25519")),
                    },
                });
            }
            outs
        }
        Behaviour::ForwardFlood => {
            // Until the heal: junk forwarded is junk committed, and a log
            // that never stops growing never lets every replica be seen
            // caught up.
            let ConsensusMessage::Vote { vote } = &out.message else {
                return vec![out];
            };
            if sim.healed {
                return vec![out];
            }
            let mut outs = vec![out.clone()];
            for chunk in 0..4u64 {
                let entries: Vec<Entry> = (0..64u64)
                    .map(|k| {
                        let text = format!("junk {id} round {} {chunk} {k}", vote.round);
                        Entry::new(text.into_bytes()).expect("small")
                    })
                    .collect();
                outs.push(Outgoing {
                    to: Target::All,
                    message: ConsensusMessage::Forward {
                        entries: BoundedVec::new(entries).expect("64"),
                    },
                });
            }
            outs
        }
        Behaviour::SyncFlood => {
            let ConsensusMessage::Vote { .. } = &out.message else {
                return vec![out];
            };
            let mut outs = vec![out];
            for _ in 0..4 {
                outs.push(Outgoing {
                    to: Target::All,
                    message: ConsensusMessage::SyncRequest {
                        from_height: 1,
                        max_blocks: bftlog_spec::wire::MAX_SYNC_BLOCKS as u16,
                    },
                });
            }
            outs
        }
        Behaviour::LieCommittedHeight => {
            let mut outs = vec![out];
            // With each vote, also a status, so the lie arrives often.
            if let (ConsensusMessage::Vote { .. }, Some(r)) =
                (&outs[0].message, sim.nodes[node].replica.as_ref())
            {
                outs.push(Outgoing {
                    to: Target::All,
                    message: ConsensusMessage::Certificates {
                        high_qc: r.safety().high_qc.clone(),
                        high_tc: r.safety().high_tc.clone(),
                        committed_height: r.committed_height(),
                    },
                });
            }
            for out in &mut outs {
                if let ConsensusMessage::Certificates {
                    committed_height, ..
                } = &mut out.message
                {
                    *committed_height += 1_000_000;
                }
            }
            outs
        }
        Behaviour::WithholdVotes => match out.message {
            // Each vote reaches one replica at most: certificates form at
            // some replicas and not others.
            ConsensusMessage::Vote { .. } if sim.rng.random_bool(0.5) => {
                let to = sim.rng.random_range(0..n as ReplicaId);
                vec![Outgoing {
                    to: Target::One(to),
                    message: out.message,
                }]
            }
            ConsensusMessage::Vote { .. } => Vec::new(),
            _ => vec![out],
        },
        Behaviour::BadShares => {
            let mut out = out;
            match &mut out.message {
                ConsensusMessage::ThresholdShare { share, .. } => {
                    // Still a canonical scalar (the top byte stays small),
                    // so only the combination can tell.
                    share.0[0] ^= 1 << sim.rng.random_range(0..8);
                }
                // Answering a recovery: a signature that does not verify.
                ConsensusMessage::ClusterSignature { signature, .. } => {
                    signature.0[0] ^= 1 << sim.rng.random_range(0..8);
                }
                _ => {}
            }
            vec![out]
        }
        Behaviour::WithholdShares => match out.message {
            ConsensusMessage::ThresholdShare { .. } | ConsensusMessage::ClusterSignature { .. } => {
                Vec::new()
            }
            _ => vec![out],
        },
        Behaviour::MisleadRecovery => match out.message {
            ConsensusMessage::ThresholdShare {
                recovery_stage: None,
                ..
            } => Vec::new(),
            ConsensusMessage::RecoveryCommitment {
                replica,
                height,
                stage,
                commitment,
            } => vec![Outgoing {
                to: out.to,
                message: ConsensusMessage::RecoveryCommitment {
                    replica,
                    height,
                    stage,
                    // Another commitment (swapped points), or no points
                    // at all.
                    commitment: if sim.rng.random_bool(0.5) {
                        NonceCommitment {
                            hiding: commitment.binding,
                            binding: commitment.hiding,
                        }
                    } else {
                        NonceCommitment {
                            hiding: Element32([0xff; 32]),
                            binding: Element32([0xff; 32]),
                        }
                    },
                },
            }],
            ConsensusMessage::RecoveryRequest {
                height,
                size,
                root,
                stage,
                signers,
            } => {
                let (a, b) = split(n, sim.nodes[node].replica_id);
                let mut other_root = root;
                other_root.0[0] ^= 1;
                let mut outs = to_each(
                    &a,
                    &ConsensusMessage::RecoveryRequest {
                        height,
                        size,
                        root,
                        stage,
                        signers: signers.clone(),
                    },
                );
                outs.extend(to_each(
                    &b,
                    &ConsensusMessage::RecoveryRequest {
                        height,
                        size,
                        root: other_root,
                        stage,
                        signers: signers.clone(),
                    },
                ));
                // The same session again with one member's commitment
                // altered: a member must not sign twice with one nonce.
                let mut altered = signers.clone().into_inner();
                if let Some(last) = altered.last_mut() {
                    last.commitment = NonceCommitment {
                        hiding: last.commitment.binding,
                        binding: last.commitment.hiding,
                    };
                }
                outs.push(Outgoing {
                    to: Target::All,
                    message: ConsensusMessage::RecoveryRequest {
                        height,
                        size,
                        root,
                        stage,
                        signers: BoundedVec::new(altered).expect("as many as before"),
                    },
                });
                let mut forged = [0u8; 64];
                sim.rng.fill(&mut forged[..]);
                outs.push(Outgoing {
                    to: Target::All,
                    message: ConsensusMessage::ClusterSignature {
                        height,
                        size,
                        root,
                        signature: Signature64(forged),
                    },
                });
                outs
            }
            message => vec![Outgoing {
                to: out.to,
                message,
            }],
        },
        Behaviour::EquivocateCommitments => match &out.message {
            ConsensusMessage::NonceCommitments {
                replica,
                first_height,
                commitments,
                started,
            } => {
                let (a, b) = split(n, *replica);
                let swapped = ConsensusMessage::NonceCommitments {
                    replica: *replica,
                    first_height: *first_height,
                    started: *started,
                    commitments: BoundedVec::new(
                        commitments
                            .iter()
                            .map(|c| NonceCommitment {
                                hiding: c.binding,
                                binding: c.hiding,
                            })
                            .collect(),
                    )
                    .expect("as many as before"),
                };
                let mut outs = to_each(&a, &out.message);
                outs.extend(to_each(&b, &swapped));
                sim.byz.recorded.push(swapped);
                if sim.byz.recorded.len() > 512 {
                    sim.byz.recorded.remove(0);
                }
                let i = sim.rng.random_range(0..sim.byz.recorded.len());
                outs.push(Outgoing {
                    to: Target::All,
                    message: sim.byz.recorded[i].clone(),
                });
                outs
            }
            _ => vec![out],
        },
        Behaviour::WithholdProposals => match out.message {
            ConsensusMessage::Proposal { .. } | ConsensusMessage::ProposalLeaves { .. } => {
                Vec::new()
            }
            _ => vec![out],
        },
        Behaviour::Equivocate => match &out.message {
            ConsensusMessage::ProposalLeaves {
                header,
                leaves,
                timeout_cert,
                ..
            } => {
                // The second block adds an entry no one else has: it goes
                // out first as a forward, as an honest submission would.
                let junk = format!("equivocation {} {}", header.round, sim.rng.random::<u64>());
                let junk = Entry::new(junk.into_bytes()).expect("small");
                let mut other_leaves = leaves.clone().into_inner();
                other_leaves.push(bftlog_spec::merkle::leaf_hash(&junk));
                if other_leaves.len() > bftlog_spec::wire::MAX_BLOCK_ENTRIES {
                    other_leaves.remove(0);
                }
                let other_id = crypto::block_id_from_header(header, &other_leaves);
                let other_sig = signer.sign(&crypto::proposal_message(epoch, &other_id));
                let (a, b) = split(n, id);
                let forward = ConsensusMessage::Forward {
                    entries: BoundedVec::new(vec![junk]).expect("one"),
                };
                let mut outs = to_each(&a, &forward);
                outs.extend(to_each(&b, &forward));
                outs.extend(to_each(&a, &out.message));
                let forged = ConsensusMessage::ProposalLeaves {
                    header: header.clone(),
                    leaves: BoundedVec::new(other_leaves).expect("bounded"),
                    timeout_cert: timeout_cert.clone(),
                    signature: other_sig,
                };
                outs.extend(to_each(&b, &forged));
                // Then each side also gets the other block: whoever crashes
                // and forgets its vote sees a second candidate.
                outs.extend(to_each(&a, &forged));
                outs.extend(to_each(&b, &out.message));
                // And vote for the second block on that side.
                let vote = Vote {
                    epoch,
                    round: header.round,
                    block_id: other_id,
                    parent_round: header.justify.round,
                    voter: id,
                    signature: signer.sign(&crypto::vote_message(
                        epoch,
                        header.round,
                        &other_id,
                        header.justify.round,
                    )),
                };
                outs.extend(to_each(&b, &ConsensusMessage::Vote { vote }));
                outs
            }
            ConsensusMessage::Vote { .. } => {
                // Its own vote goes only to the first side.
                let (a, _) = split(n, id);
                to_each(&a, &out.message)
            }
            _ => vec![out],
        },
        Behaviour::DoubleVote => match &out.message {
            ConsensusMessage::Vote { vote } => {
                let (a, b) = split(n, id);
                let mut outs = to_each(&a, &out.message);
                let fake_id = Hash(sim.rng.random());
                let mut other = vote.clone();
                other.block_id = fake_id;
                other.signature = signer.sign(&crypto::vote_message(
                    epoch,
                    other.round,
                    &fake_id,
                    other.parent_round,
                ));
                outs.extend(to_each(&b, &ConsensusMessage::Vote { vote: other }));
                outs
            }
            _ => vec![out],
        },
        Behaviour::BadSignatures => {
            let mut out = out;
            if sim.rng.random_bool(0.5) {
                corrupt(&mut out.message, &mut sim.rng);
            }
            vec![out]
        }
        Behaviour::Replay => {
            let mut outs = vec![out.clone()];
            sim.byz.recorded.push(out.message);
            if sim.byz.recorded.len() > 512 {
                sim.byz.recorded.remove(0);
            }
            if sim.rng.random_bool(0.5) {
                let i = sim.rng.random_range(0..sim.byz.recorded.len());
                outs.push(Outgoing {
                    to: Target::All,
                    message: sim.byz.recorded[i].clone(),
                });
            }
            outs
        }
        Behaviour::ForgeCertificates => match &out.message {
            ConsensusMessage::ProposalLeaves {
                header,
                leaves,
                timeout_cert,
                ..
            } => {
                let mut forged = header.clone();
                let mut leaves = leaves.clone().into_inner();
                let mut tc = timeout_cert.clone();
                sim.byz.old_qcs.push(header.justify.clone());
                if sim.byz.old_qcs.len() > 64 {
                    sim.byz.old_qcs.remove(0);
                }
                let pick = sim.rng.random_range(0..4);
                if pick == 3 {
                    // Extend an old certified block with its true QC:
                    // receivers store the block but must not vote without
                    // a TC. Then send it again with a TC whose signatures
                    // are garbage and whose high QC is that old one: the
                    // path for a proposal already stored must verify it.
                    let i = sim.rng.random_range(0..sim.byz.old_qcs.len());
                    let old = sim.byz.old_qcs[i].clone();
                    if old.round + 1 < forged.round {
                        forged.parent_id = old.block_id;
                        let fake_tc = TimeoutCert {
                            epoch,
                            round: forged.round - 1,
                            high_qc: old.clone(),
                            signatures: BoundedVec::new(
                                (0..n as ReplicaId)
                                    .map(|replica| TimeoutSignature {
                                        replica,
                                        high_qc_round: old.round,
                                        signature: Signature64([0; 64]),
                                    })
                                    .collect(),
                            )
                            .expect("n replicas"),
                        };
                        forged.justify = old;
                        forged.entries = BoundedVec::new(Vec::new()).expect("empty");
                        let forged_id = crypto::block_id(&forged);
                        let signature = signer.sign(&crypto::proposal_message(epoch, &forged_id));
                        return [None, Some(fake_tc)]
                            .into_iter()
                            .map(|timeout_cert| Outgoing {
                                to: out.to,
                                message: ConsensusMessage::Proposal {
                                    block: forged.clone(),
                                    timeout_cert,
                                    signature,
                                },
                            })
                            .collect();
                    }
                }
                if let Some(tc) = tc.as_mut().filter(|_| pick == 0) {
                    // Claim a higher QC round than any signer reported.
                    tc.high_qc.round += 1;
                } else if pick == 1 {
                    // Move the justify QC to the round just before this one.
                    forged.justify.round = forged.round - 1;
                    forged.justify.parent_round = forged.round.saturating_sub(2);
                } else {
                    // Extend an old certified block, relabelling its QC as
                    // the previous round's so no TC seems needed (only the
                    // round is changed: what voters signed otherwise holds).
                    let i = sim.rng.random_range(0..sim.byz.old_qcs.len());
                    let mut old = sim.byz.old_qcs[i].clone();
                    if old.round > 0 && old.round + 1 < forged.round {
                        old.round = forged.round - 1;
                        forged.parent_id = old.block_id;
                        forged.justify = old;
                        leaves.clear();
                        tc = None;
                    }
                }
                let forged_id = crypto::block_id_from_header(&forged, &leaves);
                let signature = signer.sign(&crypto::proposal_message(epoch, &forged_id));
                // An empty block goes out whole, so receivers' handling of
                // full proposals meets forgeries too.
                let message = if leaves.is_empty() {
                    ConsensusMessage::Proposal {
                        block: forged,
                        timeout_cert: tc,
                        signature,
                    }
                } else {
                    ConsensusMessage::ProposalLeaves {
                        header: forged,
                        leaves: BoundedVec::new(leaves).expect("bounded"),
                        timeout_cert: tc,
                        signature,
                    }
                };
                vec![Outgoing {
                    to: out.to,
                    message,
                }]
            }
            _ => vec![out],
        },
    }
}

fn corrupt(message: &mut ConsensusMessage, rng: &mut StdRng) {
    let flip = |s: &mut bftlog_spec::wire::Signature64, rng: &mut StdRng| {
        let i = rng.random_range(0..64);
        s.0[i] ^= 1 << rng.random_range(0..8);
    };
    match message {
        ConsensusMessage::Proposal { signature, .. }
        | ConsensusMessage::ProposalLeaves { signature, .. } => flip(signature, rng),
        ConsensusMessage::Vote { vote } => flip(&mut vote.signature, rng),
        ConsensusMessage::Timeout { timeout } => flip(&mut timeout.signature, rng),
        ConsensusMessage::CheckpointSignature { note_signature, .. } => flip(note_signature, rng),
        _ => {}
    }
}
