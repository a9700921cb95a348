//! The cluster signature (spec/consensus.md, "The cluster signature"):
//! with a share of the cluster key, a replica
//!
//! 1. keeps nonces for the checkpoints of the next heights, their secrets
//!    durable before their commitments leave (`NonceCommitments`), so
//!    signing adds no round trip;
//! 2. after committing a block with entries, if it is in that height's
//!    signing set, signs the checkpoint with its nonce for the height;
//!    the share leaves only once `last_share`, which retires that nonce
//!    and every lower one, is durable, so a nonce never signs two
//!    messages, across crashes too;
//! 3. combines the shares of one signing set into an Ed25519 signature
//!    under the cluster key, verified strictly, which the quorum note of
//!    that checkpoint then carries as one more line. A bad share is named
//!    by FROST's identifiable abort, counted and dropped.

use super::*;
use crate::SentShare;
use crate::threshold::{
    self, COMMITMENTS_AHEAD_HEIGHTS, ClusterShare, NonceSecret, RECOVERY_WINDOW_HEIGHTS,
    THRESHOLD_LAG_HEIGHTS,
};
use bftlog_spec::wire::{Element32, MAX_NONCE_BATCH, NonceCommitment, SignerCommitment};
use frost_ed25519 as frost;

/// A share received, with what it signs.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct ReceivedShare {
    pub(super) size: u64,
    pub(super) root: Hash,
    pub(super) signers: Vec<SignerCommitment>,
    pub(super) share: Element32,
}

/// Shares one signer may have kept for one height: one made with its
/// nonce for the height, the rest in recovery sessions (at most
/// `n - t + 1` per stage of an honest signer); beyond it the oldest go.
pub(super) const SHARES_PER_SIGNER_HEIGHT: usize = 8;

/// A cluster signature formed (or received) here.
pub(super) struct Combined {
    pub(super) size: u64,
    pub(super) root: Hash,
    pub(super) signature: Signature64,
    /// Replicas already sent it (each at most once).
    pub(super) sent_to: u64,
}

/// A replica's commitment for one height, as sent, decoded when first
/// used: decoding checks both points' torsion, a scalar multiplication
/// each, and most commitments published are never used by this replica.
#[derive(Clone)]
pub(super) struct Commitment {
    pub(super) wire: NonceCommitment,
    decoded: std::cell::OnceCell<Option<frost::round1::SigningCommitments>>,
}

impl Commitment {
    fn of(decoded: &frost::round1::SigningCommitments) -> Self {
        Commitment {
            wire: threshold::to_wire(decoded),
            decoded: std::cell::OnceCell::from(Some(*decoded)),
        }
    }

    fn received(wire: NonceCommitment) -> Self {
        Commitment {
            wire,
            decoded: std::cell::OnceCell::new(),
        }
    }

    /// The commitment decoded, if both its points are valid.
    pub(super) fn decoded(&self) -> Option<frost::round1::SigningCommitments> {
        *self
            .decoded
            .get_or_init(|| threshold::from_wire(&self.wire).ok())
    }
}

/// A committed checkpoint this replica is to sign a share of.
struct ToSign {
    size: u64,
    root: Hash,
    set: Vec<ReplicaId>,
}

/// One replica's cluster-key signing state.
pub(super) struct ThresholdSigning {
    pub(super) share: ClusterShare,
    pub(super) cluster_key: ed25519_dalek::VerifyingKey,
    /// This replica's nonces not used yet, by height.
    own: BTreeMap<u64, frost::round1::SigningNonces>,
    /// Nonces exist (used or not) for the heights below this.
    generated_end: u64,
    /// Per replica (this one included): its commitments by height, the
    /// first received kept, within the window of heights kept.
    pub(super) commitments: Vec<BTreeMap<u64, Commitment>>,
    /// Committed checkpoints this replica is in the signing set of and
    /// has not signed yet (waiting for the set's commitments).
    to_sign: BTreeMap<u64, ToSign>,
    /// Shares received (and this replica's own), by height and signer,
    /// at most [`SHARES_PER_SIGNER_HEIGHT`] each.
    pub(super) shares: BTreeMap<u64, BTreeMap<ReplicaId, VecDeque<ReceivedShare>>>,
    /// Cluster signatures formed here, by height: later shares for them
    /// are of no use, and a replica recovering one is sent it.
    pub(super) combined: BTreeMap<u64, Combined>,
    /// Committed checkpoints without their cluster signature here, by
    /// height: recovered in sessions if it does not form in time
    /// (`cluster_recovery`).
    pub(super) unsigned: BTreeMap<u64, super::cluster_recovery::Unsigned>,
    /// Per replica: when this replica last answered its start with its
    /// own commitments.
    answered_start: Vec<Option<Duration>>,
}

impl ThresholdSigning {
    pub(super) fn new(share: ClusterShare, n: usize) -> Result<Self, SetupError> {
        let cluster_key = share
            .verifying_key()
            .map_err(|e| SetupError::ClusterKey(e.to_string()))?;
        Ok(ThresholdSigning {
            share,
            cluster_key,
            own: BTreeMap::new(),
            generated_end: 0,
            commitments: vec![BTreeMap::new(); n],
            to_sign: BTreeMap::new(),
            shares: BTreeMap::new(),
            combined: BTreeMap::new(),
            unsigned: BTreeMap::new(),
            answered_start: vec![None; n],
        })
    }

    /// The most heights of commitments kept for one replica, of shares
    /// kept, and of unsigned checkpoints (for [`crate::Footprint`]).
    pub(super) fn footprint(&self) -> (usize, usize, usize) {
        (
            self.commitments
                .iter()
                .map(BTreeMap::len)
                .max()
                .unwrap_or(0),
            self.shares.len(),
            self.unsigned.len(),
        )
    }
}

impl<R: CryptoRng> Replica<R> {
    /// At start: takes the recovered nonces above the last share's
    /// height, publishes them (again: peers may have restarted too) with
    /// more if needed, and sends the last share again.
    pub(super) fn start_threshold_signing(&mut self, nonces: Vec<(u64, NonceSecret)>) {
        let used_through = self.used_nonce_height();
        let id = self.id;
        let Some(signing) = self.threshold.as_mut() else {
            return;
        };
        let floor = self.committed_height.saturating_sub(THRESHOLD_LAG_HEIGHTS);
        for (height, secret) in nonces {
            if height <= used_through.max(floor) {
                continue;
            }
            // A stored nonce that does not parse is never used: its
            // height goes unsigned.
            if let Ok(nonces) = secret.nonces() {
                signing.commitments[id as usize]
                    .insert(height, Commitment::of(nonces.commitments()));
                signing.own.insert(height, nonces);
                signing.generated_end = signing.generated_end.max(height + 1);
            }
        }
        self.send_unused_commitments(Target::All, true);
        if let Some(last) = self.safety.last_share.clone() {
            self.send_share(&last);
        }
        self.replenish_nonces();
    }

    /// The highest height whose nonce this replica used (or retired).
    fn used_nonce_height(&self) -> u64 {
        self.safety.last_share.as_ref().map_or(0, |s| s.height)
    }

    /// Sends this replica's unused commitments and its last share again
    /// (at start and at each status interval): a peer that restarted, or
    /// was cut off, lost them.
    pub(super) fn resend_threshold_state(&mut self) {
        self.send_unused_commitments(Target::All, false);
        if let Some(last) = self.safety.last_share.clone() {
            self.send_share(&last);
        }
    }

    /// Sends this replica's commitments not used yet to `to`; `started`
    /// asks the receivers for theirs.
    fn send_unused_commitments(&mut self, to: Target, started: bool) {
        let Some(signing) = self.threshold.as_ref() else {
            return;
        };
        let floor = self.committed_height.saturating_sub(THRESHOLD_LAG_HEIGHTS);
        let unused: Vec<(u64, NonceCommitment)> = signing
            .own
            .range(floor + 1..)
            .map(|(h, n)| (*h, threshold::to_wire(n.commitments())))
            .collect();
        self.send_commitments(to, &unused, started);
    }

    /// Sends commitments of consecutive heights, in messages of at most
    /// [`MAX_NONCE_BATCH`].
    fn send_commitments(
        &mut self,
        to: Target,
        commitments: &[(u64, NonceCommitment)],
        started: bool,
    ) {
        for run in commitments.chunk_by(|a, b| a.0 + 1 == b.0) {
            for chunk in run.chunks(MAX_NONCE_BATCH) {
                let message = ConsensusMessage::NonceCommitments {
                    replica: self.id,
                    first_height: chunk[0].0,
                    commitments: BoundedVec::new(chunk.iter().map(|(_, c)| *c).collect())
                        .expect("chunked"),
                    started,
                };
                self.send(to, message);
            }
        }
    }

    fn send_share(&mut self, share: &SentShare) {
        let message = ConsensusMessage::ThresholdShare {
            height: share.height,
            size: share.size,
            root: share.root,
            replica: self.id,
            signers: BoundedVec::new(share.signers.clone()).expect("a quorum of replicas"),
            share: share.share,
            recovery_stage: None,
        };
        self.send(Target::All, message);
    }

    /// Keeps nonces for the next `cluster_nonce_batch_heights` to twice
    /// that many heights: when fewer remain, makes a batch, which goes
    /// into this input's write before its commitments leave.
    fn replenish_nonces(&mut self) {
        let committed = self.committed_height;
        let batch = self.cfg.cluster_nonce_batch_heights;
        let used_through = self.used_nonce_height();
        let Some(signing) = self.threshold.as_mut() else {
            return;
        };
        if signing.generated_end > committed + batch {
            return;
        }
        let first = signing
            .generated_end
            .max(committed + 1)
            .max(used_through + 1);
        let end = committed + 2 * batch + 1;
        let fresh = threshold::fresh_nonces(&signing.share, &mut self.rng, end - first);
        let mut published = Vec::with_capacity(fresh.len());
        for (height, nonces) in (first..end).zip(fresh) {
            let commitment = Commitment::of(nonces.commitments());
            signing.commitments[self.id as usize].insert(height, commitment.clone());
            self.persist_nonces.push((height, NonceSecret::of(&nonces)));
            signing.own.insert(height, nonces);
            published.push((height, commitment.wire));
        }
        signing.generated_end = end;
        self.metrics.nonces_generated += published.len() as u64;
        self.dirty = true;
        // Held until the write with the secrets is durable (`finish`).
        self.send_commitments(Target::All, &published, false);
    }

    /// Notes a committed block for the cluster signature: if it has
    /// entries and this replica is in its height's signing set, its
    /// checkpoint is to be signed.
    pub(super) fn threshold_committed(&mut self, height: u64, block: &Block) {
        if block.entries.is_empty() {
            return;
        }
        let (size, root) = (self.tree.size(), self.tree.root());
        self.track_unsigned(height, size, root);
        if height <= self.used_nonce_height() {
            return;
        }
        let n = self.cfg.n();
        let quorum = self.cfg.quorum();
        let id = self.id;
        let Some(signing) = self.threshold.as_mut() else {
            return;
        };
        let mut active = vec![false; n];
        for who in
            std::iter::once(block.author).chain(block.justify.signatures.iter().map(|s| s.replica))
        {
            if let Some(slot) = active.get_mut(who as usize) {
                *slot = true;
            }
        }
        let set = threshold::signing_set(height, quorum, &active);
        if set.contains(&id) {
            signing.to_sign.insert(height, ToSign { size, root, set });
        }
    }

    /// After commits: drops what fell out of the window of heights, signs
    /// what can be signed, and keeps nonces ahead.
    pub(super) fn threshold_after_commit(&mut self) {
        let floor = self.committed_height.saturating_sub(THRESHOLD_LAG_HEIGHTS);
        if let Some(signing) = self.threshold.as_mut() {
            for table in &mut signing.commitments {
                *table = table.split_off(&(floor + 1));
            }
            signing.to_sign = signing.to_sign.split_off(&(floor + 1));
            // Nonces of heights this far behind are never used: dropping
            // an unused nonce is always safe (the store drops them too).
            signing.own = signing.own.split_off(&(floor + 1));
        }
        let recovery_floor = self
            .committed_height
            .saturating_sub(RECOVERY_WINDOW_HEIGHTS);
        self.drop_unsigned_below(recovery_floor + 1);
        if let Some(signing) = self.threshold.as_mut() {
            // Below the lag window, only shares of checkpoints still being
            // recovered are of use.
            let unsigned = &signing.unsigned;
            signing
                .shares
                .retain(|h, _| *h > floor || unsigned.contains_key(h));
            signing.combined = signing.combined.split_off(&(recovery_floor + 1));
        }
        self.sign_ready_checkpoints();
        self.replenish_nonces();
    }

    /// Signs each checkpoint waiting whose signing set's commitments are
    /// all known, lowest height first.
    fn sign_ready_checkpoints(&mut self) {
        loop {
            let used_through = self.used_nonce_height();
            let Some(signing) = self.threshold.as_mut() else {
                return;
            };
            signing.to_sign = signing.to_sign.split_off(&(used_through + 1));
            let ready = signing.to_sign.iter().find_map(|(height, job)| {
                let signers: Option<Vec<(ReplicaId, Commitment)>> = job
                    .set
                    .iter()
                    .map(|r| {
                        signing.commitments[*r as usize]
                            .get(height)
                            .map(|c| (*r, c.clone()))
                    })
                    .collect();
                signers.map(|s| (*height, s))
            });
            let Some((height, set)) = ready else {
                return;
            };
            let job = signing.to_sign.remove(&height).expect("found");
            let Some(nonces) = signing.own.remove(&height) else {
                // No nonce for this height (it was not kept ahead):
                // nothing to sign with.
                continue;
            };
            let decoded: Result<Vec<_>, ReplicaId> = set
                .iter()
                .map(|(r, c)| c.decoded().map(|d| (*r, d)).ok_or(*r))
                .collect();
            let decoded = match decoded {
                Ok(decoded) => decoded,
                Err(culprit) => {
                    // Not a point: its author published garbage, and this
                    // height goes unsigned.
                    self.reject_from(culprit, Rejection::Malformed);
                    continue;
                }
            };
            let signing = self.threshold.as_mut().expect("checked above");
            let text = Checkpoint::new(&self.cfg.origin, job.size, job.root).format();
            let package = threshold::signing_package(decoded, text.as_bytes());
            let signers: Vec<SignerCommitment> = set
                .iter()
                .map(|(r, c)| SignerCommitment {
                    replica: *r,
                    commitment: c.wire,
                })
                .collect();
            let Ok(share) = threshold::sign_share(&signing.share, &nonces, &package) else {
                // Our commitment in the set is not this nonce's (it
                // cannot be, unless storage lost a write): skip.
                continue;
            };
            // Every nonce up to this height is retired with it.
            signing.own = signing.own.split_off(&(height + 1));
            let sent = SentShare {
                height,
                size: job.size,
                root: job.root,
                signers,
                share,
            };
            self.safety.last_share = Some(sent.clone());
            self.dirty = true;
            self.metrics.threshold_shares_sent += 1;
            // Held until `last_share` is durable (`finish`).
            self.send_share(&sent);
            let id = self.id;
            self.keep_share(height, id, sent.size, sent.root, sent.signers, sent.share);
        }
    }

    pub(super) fn on_nonce_commitments(
        &mut self,
        from: ReplicaId,
        replica: ReplicaId,
        first_height: u64,
        commitments: Vec<NonceCommitment>,
        started: bool,
    ) {
        if replica != from {
            self.reject(Rejection::Malformed);
            return;
        }
        if started && self.threshold.is_some() {
            // It holds none of ours: they go to it alone, at most once per
            // status interval (a peer setting this on every message must
            // not make this replica send a batch per message).
            let now = self.now;
            let interval = Duration::from_millis(self.cfg.status_interval_ms);
            let signing = self.threshold.as_mut().expect("checked");
            let last = &mut signing.answered_start[from as usize];
            if last.is_none_or(|t| now >= t + interval) {
                *last = Some(now);
                self.send_unused_commitments(Target::One(from), false);
            }
        }
        let committed = self.committed_height;
        let Some(signing) = self.threshold.as_mut() else {
            return;
        };
        let (mut stale, mut ahead, mut conflict, mut malformed) = (false, false, false, false);
        for (i, commitment) in commitments.into_iter().enumerate() {
            let Some(height) = first_height.checked_add(i as u64) else {
                malformed = true;
                break;
            };
            if height.saturating_add(THRESHOLD_LAG_HEIGHTS) <= committed {
                stale = true;
                continue;
            }
            if height > committed.saturating_add(COMMITMENTS_AHEAD_HEIGHTS) {
                ahead = true;
                break;
            }
            match signing.commitments[from as usize].get(&height) {
                None => {
                    signing.commitments[from as usize]
                        .insert(height, Commitment::received(commitment));
                }
                // A replica publishes one commitment per height; keep the
                // first.
                Some(known) if known.wire != commitment => conflict = true,
                Some(_) => {}
            }
        }
        for (happened, reason) in [
            (malformed, Rejection::Malformed),
            (conflict, Rejection::Equivocation),
            (ahead, Rejection::Ahead),
            (stale, Rejection::Stale),
        ] {
            if happened {
                self.reject(reason);
            }
        }
        self.sign_ready_checkpoints();
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_threshold_share(
        &mut self,
        from: ReplicaId,
        height: u64,
        size: u64,
        root: Hash,
        replica: ReplicaId,
        signers: Vec<SignerCommitment>,
        share: Element32,
        recovery_stage: Option<u32>,
    ) {
        if replica != from || !self.well_formed_set(size, &signers, replica) {
            self.reject(Rejection::Malformed);
            return;
        }
        if self.threshold.is_none() {
            return;
        }
        if !self.in_threshold_window(height) {
            return;
        }
        // The sender's own commitment in a set of its height's nonces is
        // its word on it: a replica that restarted after the sender's
        // nonce for the height was used (and so is no longer published)
        // learns it here. A recovery share's commitment is another nonce.
        if recovery_stage.is_none() {
            if let Some(own) = signers.iter().find(|s| s.replica == replica) {
                let signing = self.threshold.as_mut().expect("checked above");
                let known = signing.commitments[replica as usize].contains_key(&height);
                if !known {
                    signing.commitments[replica as usize]
                        .insert(height, Commitment::received(own.commitment));
                }
            }
        }
        self.keep_share(height, replica, size, root, signers, share);
        if recovery_stage.is_some() {
            self.coordinate(height);
        }
        self.sign_ready_checkpoints();
    }

    /// Whether `signers` can be a signing set for a checkpoint of `size`
    /// that `member` belongs to: a quorum of distinct replicas, in order.
    pub(super) fn well_formed_set(
        &self,
        size: u64,
        signers: &[SignerCommitment],
        member: ReplicaId,
    ) -> bool {
        let n = self.cfg.n();
        size > 0
            && signers.len() == self.cfg.quorum()
            && signers.windows(2).all(|w| w[0].replica < w[1].replica)
            && signers.iter().all(|s| (s.replica as usize) < n)
            && signers.iter().any(|s| s.replica == member)
    }

    /// Whether `height` lies in the window of heights the cluster
    /// signature is worked on (further back, only checkpoints still
    /// being recovered); rejects the message being handled if not.
    pub(super) fn in_threshold_window(&mut self, height: u64) -> bool {
        // Signed ones too: a replica recovering one is sent it.
        let recovering = self
            .threshold
            .as_ref()
            .is_some_and(|s| s.unsigned.contains_key(&height) || s.combined.contains_key(&height));
        if height.saturating_add(THRESHOLD_LAG_HEIGHTS) <= self.committed_height && !recovering {
            self.reject(Rejection::Stale);
            return false;
        }
        if height
            > self
                .committed_height
                .saturating_add(COMMITMENTS_AHEAD_HEIGHTS)
        {
            self.reject(Rejection::Ahead);
            return false;
        }
        true
    }

    /// Keeps a share (per signer and height, one per signing set, at most
    /// [`SHARES_PER_SIGNER_HEIGHT`]) and combines its signing set's shares
    /// once all are in.
    pub(super) fn keep_share(
        &mut self,
        height: u64,
        replica: ReplicaId,
        size: u64,
        root: Hash,
        signers: Vec<SignerCommitment>,
        share: Element32,
    ) {
        let signing = self.threshold.as_mut().expect("callers checked");
        if signing.combined.contains_key(&height) {
            return;
        }
        let received = ReceivedShare {
            size,
            root,
            signers,
            share,
        };
        let at_height = signing.shares.entry(height).or_default();
        let of_signer = at_height.entry(replica).or_default();
        let same_set = |r: &ReceivedShare| {
            r.size == received.size && r.root == received.root && r.signers == received.signers
        };
        match of_signer.iter().find(|r| same_set(r)) {
            // One nonce makes one share per message: another is a lie.
            Some(known) if known.share != received.share => {
                self.reject_from(replica, Rejection::Equivocation);
                return;
            }
            Some(_) => return,
            None => {}
        }
        if of_signer.len() == SHARES_PER_SIGNER_HEIGHT {
            of_signer.pop_front();
        }
        of_signer.push_back(received.clone());
        self.combine_set(height, &received);
    }
}
