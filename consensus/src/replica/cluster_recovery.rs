//! Recovering a cluster signature (spec/consensus.md, "Recovery"): a
//! height's signing set is fixed by its block, so one member that
//! withholds its share, sends a bad one or lied about its commitment
//! leaves the checkpoint unsigned. Every replica notes each committed
//! checkpoint until its cluster signature forms; one still unsigned
//! `cluster_recovery_ms` after its commit enters stages, each with a
//! coordinator (replica `(height + stage) mod n`) that runs ROAST's
//! sessions:
//!
//! - each replica sends all a commitment to a fresh nonce
//!   held only in its memory (`RecoveryCommitment`): a crash loses the
//!   nonce, so it can never sign twice;
//! - once `t` members it does not know as culprits are ready, the
//!   coordinator names them and their commitments (`RecoveryRequest`);
//! - each member signs with that nonce, forgets it, and sends all its
//!   share and a commitment to a new nonce; the coordinator takes the
//!   member as ready again once its share for the last session is in.
//!
//! A member that withholds its share is never ready again, and a bad share
//! names its sender, so with at most f faulty replicas a coordinator's
//! sessions succeed within `n - t + 1`. A faulty coordinator is passed
//! over at the next stage. Stages drift (each replica times them from its
//! own commit); a replica behind f + 1 others' stages catches up. A replica that asks a coordinator that already
//! has the signature gets it (`ClusterSignature`).

use super::*;
use crate::threshold;
use bftlog_spec::wire::{NonceCommitment, SignerCommitment};
use frost_ed25519 as frost;

/// The longest wait between two stages, in multiples of
/// `cluster_recovery_ms`.
const MAX_STAGE_INTERVAL_FACTOR: u64 = 8;

/// A nonce for a recovery session, held in memory only.
struct RecoveryNonce {
    stage: u32,
    nonces: frost::round1::SigningNonces,
    commitment: NonceCommitment,
}

/// A coordinator's sessions for one stage (ROAST).
struct Coordination {
    stage: u32,
    /// Members free to be put into a session, with their commitments.
    ready: BTreeMap<ReplicaId, NonceCommitment>,
    /// Members in a session not yet answered, with its set.
    in_session: BTreeMap<ReplicaId, Vec<SignerCommitment>>,
    /// New commitments of members in a session, waiting for their share
    /// for it: a member that sends commitments without signing is never
    /// ready again.
    returned: BTreeMap<ReplicaId, NonceCommitment>,
    sessions: u32,
}

/// A committed checkpoint whose cluster signature has not formed here.
pub(super) struct Unsigned {
    size: u64,
    root: Hash,
    /// 0 while the height's own signing set may still deliver.
    stage: u32,
    next_stage_at: Duration,
    /// This replica's unused nonces, for its current stage and the one
    /// before (a coordinator a little behind may still ask for it).
    nonces: Vec<RecoveryNonce>,
    /// Per stage (the current one and the one before): how many times
    /// this replica signed in it.
    signed: Vec<(u32, u32)>,
    /// Per replica: the highest stage its recovery commitments for this
    /// height named (this replica's own included), so a replica whose
    /// stages lag behind those of f + 1 others catches up.
    stages: Vec<u32>,
    /// Replicas whose share for this height FROST named bad.
    excluded: u64,
    /// This replica's sessions, when it coordinates a stage.
    coordination: Option<Coordination>,
    /// Replicas whose `ClusterSignature` for this height was checked.
    signature_from: u64,
}

impl Unsigned {
    pub(super) fn is_excluded(&self, replica: ReplicaId) -> bool {
        self.excluded & (1 << replica) != 0
    }
}

impl<R: CryptoRng> Replica<R> {
    /// The most sessions a coordinator runs, and a member signs in, per
    /// stage: enough for one without any of f faulty members.
    fn sessions_per_stage(&self) -> u32 {
        (self.cfg.n() - self.cfg.quorum() + 1) as u32
    }

    /// The coordinator of `stage` of the recovery of `height`.
    fn coordinator(&self, height: u64, stage: u32) -> ReplicaId {
        let n = self.cfg.n() as u64;
        ((height % n + u64::from(stage) % n) % n) as ReplicaId
    }

    /// Notes a committed checkpoint as unsigned until its cluster
    /// signature forms.
    pub(super) fn track_unsigned(&mut self, height: u64, size: u64, root: Hash) {
        let start = self.now + Duration::from_millis(self.cfg.cluster_recovery_ms);
        let n = self.cfg.n();
        let Some(signing) = self.threshold.as_mut() else {
            return;
        };
        if signing.combined.contains_key(&height) {
            return;
        }
        signing.unsigned.entry(height).or_insert(Unsigned {
            size,
            root,
            stage: 0,
            next_stage_at: start,
            nonces: Vec::new(),
            signed: Vec::new(),
            stages: vec![0; n],
            excluded: 0,
            coordination: None,
            signature_from: 0,
        });
    }

    /// Forgets the unsigned checkpoints below `height`: their cluster
    /// signature is given up.
    pub(super) fn drop_unsigned_below(&mut self, height: u64) {
        let Some(signing) = self.threshold.as_mut() else {
            return;
        };
        let kept = signing.unsigned.split_off(&height);
        let dropped = std::mem::replace(&mut signing.unsigned, kept);
        self.metrics.cluster_signatures_abandoned += dropped.len() as u64;
    }

    /// A culprit's later commitments for the recovery of `height` are not
    /// put into sessions.
    pub(super) fn exclude_from_recovery(&mut self, height: u64, culprit: ReplicaId) {
        if let Some(unsigned) = self
            .threshold
            .as_mut()
            .and_then(|s| s.unsigned.get_mut(&height))
        {
            unsigned.excluded |= 1 << culprit;
            if let Some(c) = unsigned.coordination.as_mut() {
                c.ready.remove(&culprit);
                c.returned.remove(&culprit);
            }
        }
    }

    /// When the next stage of some recovery is due.
    pub(super) fn recovery_deadline(&self) -> Option<Duration> {
        self.threshold
            .as_ref()?
            .unsigned
            .values()
            .map(|u| u.next_stage_at)
            .min()
    }

    /// Moves each unsigned checkpoint whose stage is over to its next
    /// stage: a fresh nonce, its commitment to the stage's coordinator.
    pub(super) fn advance_recovery(&mut self) {
        let now = self.now;
        if bug(Bug::NoClusterRecovery) {
            if let Some(signing) = self.threshold.as_mut() {
                for unsigned in signing.unsigned.values_mut() {
                    unsigned.next_stage_at = Duration::MAX;
                }
            }
            return;
        }
        let Some(signing) = self.threshold.as_mut() else {
            return;
        };
        let due: Vec<(u64, u32)> = signing
            .unsigned
            .iter()
            .filter(|(_, u)| u.next_stage_at <= now)
            .map(|(h, u)| (*h, u.stage.saturating_add(1)))
            .collect();
        for (height, stage) in due {
            self.enter_stage(height, stage);
        }
    }

    /// Moves the recovery of `height` to `stage` (later than its current
    /// one): a fresh nonce, its commitment to all (the stage's coordinator
    /// uses it; the others learn the stage).
    fn enter_stage(&mut self, height: u64, stage: u32) {
        let now = self.now;
        let recovery_ms = self.cfg.cluster_recovery_ms.max(1);
        let id = self.id as usize;
        let Some(unsigned) = self
            .threshold
            .as_mut()
            .and_then(|s| s.unsigned.get_mut(&height))
        else {
            return;
        };
        unsigned.stage = stage;
        unsigned.stages[id] = stage;
        let factor = (1u64 << stage.min(8)).min(MAX_STAGE_INTERVAL_FACTOR);
        unsigned.next_stage_at = now + Duration::from_millis(recovery_ms * factor);
        unsigned.nonces.retain(|n| n.stage + 1 >= stage);
        unsigned.signed.retain(|(s, _)| s + 1 >= stage);
        // Shares that arrived in a set this replica had not tried (kept
        // while an earlier set was still open): tried first.
        self.combine_complete_sets(height);
        let signed = self
            .threshold
            .as_ref()
            .is_some_and(|s| s.combined.contains_key(&height));
        if !signed {
            self.offer_recovery_nonce(height, stage);
        }
    }

    /// Stages are timed from each replica's own commit (or restart), so
    /// they can drift apart; a replica whose stage is below the (f+1)-th
    /// highest its peers and it named moves up to it: at least one honest
    /// replica is that far, and f faulty ones cannot move it further.
    fn catch_up_stage(&mut self, height: u64) {
        let f = self.cfg.f();
        let Some(unsigned) = self
            .threshold
            .as_ref()
            .and_then(|s| s.unsigned.get(&height))
        else {
            return;
        };
        let mut stages = unsigned.stages.clone();
        stages.sort_unstable_by(|a, b| b.cmp(a));
        let target = stages[f.min(stages.len() - 1)];
        if target > unsigned.stage {
            self.enter_stage(height, target);
        }
    }

    /// Makes a nonce for `stage` of the recovery of `height` and sends its
    /// commitment to all: the stage's coordinator puts it in sessions.
    fn offer_recovery_nonce(&mut self, height: u64, stage: u32) {
        let coordinator = self.coordinator(height, stage);
        let id = self.id;
        let Some(signing) = self.threshold.as_mut() else {
            return;
        };
        let nonces = threshold::fresh_nonces(&signing.share, &mut self.rng, 1)
            .pop()
            .expect("one");
        let commitment = threshold::to_wire(nonces.commitments());
        let Some(unsigned) = signing.unsigned.get_mut(&height) else {
            return;
        };
        unsigned.nonces.push(RecoveryNonce {
            stage,
            nonces,
            commitment,
        });
        self.send(
            Target::All,
            ConsensusMessage::RecoveryCommitment {
                replica: id,
                height,
                stage,
                commitment,
            },
        );
        if coordinator == id {
            self.on_recovery_commitment_from(id, height, stage, commitment);
        }
    }

    pub(super) fn on_recovery_commitment(
        &mut self,
        from: ReplicaId,
        replica: ReplicaId,
        height: u64,
        stage: u32,
        commitment: NonceCommitment,
    ) {
        if replica != from {
            self.reject(Rejection::Malformed);
            return;
        }
        if self.threshold.is_none() || !self.in_threshold_window(height) {
            return;
        }
        if let Some(unsigned) = self
            .threshold
            .as_mut()
            .and_then(|s| s.unsigned.get_mut(&height))
        {
            let known = &mut unsigned.stages[from as usize];
            *known = (*known).max(stage);
            self.catch_up_stage(height);
        }
        if self.coordinator(height, stage) == self.id {
            self.on_recovery_commitment_from(from, height, stage, commitment);
        }
    }

    /// A member's commitment for a stage this replica coordinates.
    fn on_recovery_commitment_from(
        &mut self,
        from: ReplicaId,
        height: u64,
        stage: u32,
        commitment: NonceCommitment,
    ) {
        let signing = self.threshold.as_mut().expect("callers checked");
        if let Some(combined) = signing.combined.get_mut(&height) {
            // It missed the signature: once per replica and height.
            if combined.sent_to & (1 << from) == 0 && from != self.id {
                combined.sent_to |= 1 << from;
                let message = ConsensusMessage::ClusterSignature {
                    height,
                    size: combined.size,
                    root: combined.root,
                    signature: combined.signature,
                };
                self.send(Target::One(from), message);
            }
            return;
        }
        // Not committed here yet: the member tries the next stage's
        // coordinator.
        let Some(unsigned) = signing.unsigned.get(&height) else {
            return;
        };
        // A stage far ahead of this replica's is not one it is in yet.
        if stage > unsigned.stage.saturating_add(1) || unsigned.is_excluded(from) {
            return;
        }
        // A commitment that is not two valid points would make every
        // session naming it fail at its members: its sender is left out.
        if threshold::from_wire(&commitment).is_err() {
            self.reject_from(from, Rejection::Malformed);
            self.exclude_from_recovery(height, from);
            return;
        }
        let signing = self.threshold.as_mut().expect("callers checked");
        let unsigned = signing.unsigned.get_mut(&height).expect("found above");
        let coordination = match &mut unsigned.coordination {
            Some(c) if c.stage == stage => c,
            Some(c) if c.stage > stage => return,
            slot => slot.insert(Coordination {
                stage,
                ready: BTreeMap::new(),
                in_session: BTreeMap::new(),
                returned: BTreeMap::new(),
                sessions: 0,
            }),
        };
        if coordination.in_session.contains_key(&from) {
            coordination.returned.insert(from, commitment);
        } else {
            coordination.ready.insert(from, commitment);
        }
        self.coordinate(height);
    }

    /// A coordinator's step (ROAST): members whose share for their last
    /// session is in are ready again; with `t` ready, a session starts.
    pub(super) fn coordinate(&mut self, height: u64) {
        let quorum = self.cfg.quorum();
        let max_sessions = self.sessions_per_stage();
        let Some(signing) = self.threshold.as_mut() else {
            return;
        };
        let shares = signing.shares.get(&height);
        let Some(unsigned) = signing.unsigned.get_mut(&height) else {
            return;
        };
        let Some(c) = unsigned.coordination.as_mut() else {
            return;
        };
        let answered: Vec<ReplicaId> = c
            .in_session
            .iter()
            .filter(|(member, set)| {
                shares
                    .and_then(|s| s.get(member))
                    .is_some_and(|kept| kept.iter().any(|r| r.signers == **set))
            })
            .map(|(member, _)| *member)
            .collect();
        for member in answered {
            c.in_session.remove(&member);
            if let Some(commitment) = c.returned.remove(&member) {
                c.ready.insert(member, commitment);
            }
        }
        if c.ready.len() < quorum || c.sessions >= max_sessions {
            return;
        }
        c.sessions += 1;
        let chosen: Vec<ReplicaId> = c.ready.keys().take(quorum).copied().collect();
        let signers: Vec<SignerCommitment> = chosen
            .iter()
            .map(|r| SignerCommitment {
                replica: *r,
                commitment: c.ready.remove(r).expect("chosen from ready"),
            })
            .collect();
        for member in &chosen {
            c.in_session.insert(*member, signers.clone());
        }
        let stage = c.stage;
        let message = ConsensusMessage::RecoveryRequest {
            height,
            size: unsigned.size,
            root: unsigned.root,
            stage,
            signers: BoundedVec::new(signers.clone()).expect("a quorum of replicas"),
        };
        self.metrics.recovery_sessions += 1;
        self.send(Target::All, message);
        if chosen.contains(&self.id) {
            let id = self.id;
            self.on_recovery_request_from(id, height, stage, signers);
        }
    }

    pub(super) fn on_recovery_request(
        &mut self,
        from: ReplicaId,
        height: u64,
        size: u64,
        root: Hash,
        stage: u32,
        signers: Vec<SignerCommitment>,
    ) {
        if self.coordinator(height, stage) != from || signers.len() != self.cfg.quorum() {
            self.reject(Rejection::Malformed);
            return;
        }
        if self.threshold.is_none() || !self.in_threshold_window(height) {
            return;
        }
        if !signers.iter().any(|s| s.replica == self.id) {
            // Not a member of this session (the coordinator need not be
            // one either).
            return;
        }
        if !self.well_formed_set(size, &signers, self.id) {
            self.reject(Rejection::Malformed);
            return;
        }
        let signing = self.threshold.as_ref().expect("checked above");
        let matches = signing
            .unsigned
            .get(&height)
            .is_some_and(|u| (u.size, u.root) == (size, root));
        if !matches {
            // Not committed here yet, or signed already; a checkpoint
            // other than the one committed here is never signed.
            return;
        }
        self.on_recovery_request_from(from, height, stage, signers);
    }

    /// Signs in a recovery session with the nonce whose commitment it
    /// names, if this replica still holds that nonce: the nonce is gone
    /// once used.
    fn on_recovery_request_from(
        &mut self,
        coordinator: ReplicaId,
        height: u64,
        stage: u32,
        signers: Vec<SignerCommitment>,
    ) {
        let id = self.id;
        let max_sessions = self.sessions_per_stage();
        let signing = self.threshold.as_mut().expect("callers checked");
        let Some(unsigned) = signing.unsigned.get_mut(&height) else {
            return;
        };
        let (size, root) = (unsigned.size, unsigned.root);
        let Some(own) = signers.iter().find(|s| s.replica == id) else {
            return;
        };
        let Some(index) = unsigned
            .nonces
            .iter()
            .position(|n| n.stage == stage && n.commitment == own.commitment)
        else {
            return;
        };
        let decoded: Result<Vec<_>, ReplicaId> = signers
            .iter()
            .map(|s| {
                threshold::from_wire(&s.commitment)
                    .map(|d| (s.replica, d))
                    .map_err(|_| s.replica)
            })
            .collect();
        let Ok(decoded) = decoded else {
            // Not points: the coordinator named commitments no member
            // made. The nonce stays for an honest session.
            self.reject_from(coordinator, Rejection::Malformed);
            return;
        };
        let text = Checkpoint::new(&self.cfg.origin, size, root).format();
        let signing = self.threshold.as_mut().expect("callers checked");
        let unsigned = signing.unsigned.get_mut(&height).expect("found above");
        let nonce = if bug(Bug::KeepRecoveryNonce) {
            let kept = &unsigned.nonces[index];
            RecoveryNonce {
                stage: kept.stage,
                nonces: kept.nonces.clone(),
                commitment: kept.commitment,
            }
        } else {
            unsigned.nonces.swap_remove(index)
        };
        let package = threshold::signing_package(decoded, text.as_bytes());
        let Ok(share) = threshold::sign_share(&signing.share, &nonce.nonces, &package) else {
            return;
        };
        let count = match unsigned.signed.iter_mut().find(|(s, _)| *s == stage) {
            Some((_, count)) => {
                *count += 1;
                *count
            }
            None => {
                unsigned.signed.push((stage, 1));
                1
            }
        };
        let more = count < max_sessions;
        self.metrics.recovery_shares_sent += 1;
        self.send(
            Target::All,
            ConsensusMessage::ThresholdShare {
                height,
                size,
                root,
                replica: id,
                signers: BoundedVec::new(signers.clone()).expect("a quorum of replicas"),
                share,
                recovery_stage: Some(stage),
            },
        );
        self.keep_share(height, id, size, root, signers, share);
        if more
            && self
                .threshold
                .as_ref()
                .is_some_and(|s| s.unsigned.contains_key(&height))
        {
            self.offer_recovery_nonce(height, stage);
        }
        self.coordinate(height);
    }

    /// The cluster signature's state, for diagnostics: unsigned
    /// checkpoints as height:size/stage (with a coordinator's ready and
    /// in-session members and sessions), and the sizes combined.
    pub(super) fn describe_cluster_signing(&self) -> String {
        let Some(signing) = self.threshold.as_ref() else {
            return String::new();
        };
        let unsigned: Vec<String> = signing
            .unsigned
            .iter()
            .map(|(h, u)| {
                let c = u.coordination.as_ref().map(|c| {
                    format!(
                        " c{}:{:?}/{:?}/{}",
                        c.stage,
                        c.ready.keys().collect::<Vec<_>>(),
                        c.in_session.keys().collect::<Vec<_>>(),
                        c.sessions
                    )
                });
                format!(
                    "{h}:{}/{} n{}{}",
                    u.size,
                    u.stage,
                    u.nonces.len(),
                    c.unwrap_or_default()
                )
            })
            .collect();
        let combined: Vec<u64> = signing.combined.values().map(|c| c.size).collect();
        format!("\n  unsigned {unsigned:?} combined {combined:?}")
    }

    /// A cluster signature from a coordinator this replica asked, for a
    /// checkpoint it committed and has not seen signed: verified strictly
    /// before use, once per sender and height. (The signed text does not
    /// name the height, so a signature for a height not committed here
    /// could be an old one of another height: never taken.)
    pub(super) fn on_cluster_signature(
        &mut self,
        from: ReplicaId,
        height: u64,
        size: u64,
        root: Hash,
        signature: Signature64,
    ) {
        let text = Checkpoint::new(&self.cfg.origin, size, root).format();
        let Some(signing) = self.threshold.as_mut() else {
            return;
        };
        let Some(unsigned) = signing.unsigned.get_mut(&height) else {
            return;
        };
        // A checkpoint other than the one committed here is not taken.
        if (unsigned.size, unsigned.root) != (size, root)
            || unsigned.signature_from & (1 << from) != 0
        {
            return;
        }
        unsigned.signature_from |= 1 << from;
        let valid = signing
            .cluster_key
            .verify_strict(
                text.as_bytes(),
                &ed25519_dalek::Signature::from_bytes(&signature.0),
            )
            .is_ok();
        if !valid {
            self.reject(Rejection::InvalidSignature);
            return;
        }
        self.metrics.cluster_signatures_received += 1;
        self.cluster_signature_formed(height, size, root, signature);
    }
}

#[cfg(test)]
mod tests;
