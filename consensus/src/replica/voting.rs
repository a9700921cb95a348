//! Proposals and votes: when a leader proposes, when a replica votes,
//! and how votes become quorum certificates.

use super::*;

impl<R: CryptoRng> Replica<R> {
    /// Leader: propose once per round, when there is something to propose
    /// or a certified block with entries still needs its commit.
    pub(super) fn maybe_propose(&mut self) {
        // A leader votes for its own proposal, so a round at or below the
        // durable last-voted round is one it already proposed in (or gave
        // up on) before a restart: proposing again would equivocate. (The
        // round after it is excluded after a restart by `proposed_round`.)
        if self.leader() != self.id
            || self.proposed_round >= self.round()
            || self.safety.last_voted_round >= self.round()
        {
            return;
        }
        let qc = self.safety.high_qc.clone();
        // Entered through a QC: it must be for the previous round. Through
        // a TC: it must be the TC for the previous round.
        let tc = match self.pacemaker.entered_by_tc() {
            Some(tc) if tc.round + 1 == self.round() => Some(tc.clone()),
            _ if qc.round + 1 == self.round() => None,
            _ => return,
        };
        // Propose only on top of a block we hold: we vote for our own
        // proposal, and that vote (durable before the proposal leaves, or
        // for an early proposal the restart rule in `Replica::new`) is
        // what stops a restarted leader from proposing twice in a round.
        if qc.block_id != self.committed_id && !self.blocks.contains_key(&qc.block_id) {
            let peer = self.sync.peer;
            self.request_sync(peer);
            return;
        }
        let exclude = self.uncommitted_leaves(&qc.block_id);
        let batch = self.mempool.batch(
            &exclude,
            self.cfg.max_block_entries.min(wire::MAX_BLOCK_ENTRIES),
            self.cfg.max_block_bytes,
        );
        let pending_commit = self
            .blocks
            .values()
            .any(|b| !b.leaves.is_empty() && b.block.round > self.committed_round);
        if batch.is_empty() && !pending_commit && self.commit_target.is_none() {
            return;
        }
        let (leaves, entries): (Vec<Hash>, Vec<Entry>) = batch
            .into_iter()
            .map(|(leaf, e)| (leaf, Entry::new(e).expect("mempool bounds entries")))
            .unzip();
        let block = Block {
            epoch: self.cfg.epoch,
            round: self.round(),
            author: self.id,
            parent_id: qc.block_id,
            justify: qc,
            entries: BoundedVec::new(entries).expect("batch bounded"),
        };
        let id = crypto::block_id_with_leaves(&block, &leaves);
        let signature = self
            .signer
            .sign(&crypto::proposal_message(self.cfg.epoch, &id));
        self.proposed_round = self.round();
        self.metrics.proposals_sent += 1;
        // Followers hold the entries already (forwarded when submitted), so
        // the proposal names them by leaf hash: 32 bytes instead of the
        // entry, and no decoding or hashing of entries by followers.
        let proposal = Outgoing {
            to: Target::All,
            message: ConsensusMessage::ProposalLeaves {
                header: crypto::header_of(&block),
                leaves: BoundedVec::new(leaves.clone()).expect("batch bounded"),
                timeout_cert: tc.clone(),
                signature,
            },
        };
        // The proposal for the round right after the last-voted round of
        // an issued write need not wait for this input's write (the
        // leader's own vote and its copy of the block): the followers'
        // writes then run alongside the leader's instead of after it, one
        // durable write less per round. A restart cannot make this replica
        // propose twice in the round: it never proposes in the round after
        // its durable last-voted round again (`Replica::new`), and the
        // proposal leaves only once that write is durable. Round 1 always
        // waits, so that a replica that never voted can propose in it.
        if self.round() >= 2 && self.round() == self.issued_last_voted_round + 1 {
            self.staging_early.push(proposal);
        } else {
            self.staging.push(proposal);
        }
        // Handle our own proposal like anyone else's (stores it, votes).
        self.on_proposal_hashed(self.id, block, Some(leaves), tc, signature);
    }

    /// Leaf hashes in the uncommitted chain ending at `tip`.
    pub(super) fn uncommitted_leaves(&self, tip: &Hash) -> DigestSet<Hash> {
        let mut out = DigestSet::default();
        let mut cursor = *tip;
        while let Some(b) = self.blocks.get(&cursor) {
            if b.block.round <= self.committed_round {
                break;
            }
            out.extend(b.leaves.iter().copied());
            cursor = b.block.parent_id;
        }
        out
    }

    pub(super) fn on_proposal(
        &mut self,
        from: ReplicaId,
        block: Block,
        tc: Option<TimeoutCert>,
        signature: Signature64,
    ) {
        self.on_proposal_hashed(from, block, None, tc, signature);
    }

    /// A stored block, or the committed tip (kept in the committed window).
    pub(super) fn block_by_id(&self, id: &Hash) -> Option<&Block> {
        match self.blocks.get(id) {
            Some(stored) => Some(&stored.block),
            None if *id == self.committed_id => {
                self.committed_window.back().map(|(_, block)| &**block)
            }
            None => None,
        }
    }

    /// The leader of `round` for a block extending `parent_id` of
    /// `parent_round` ([`Config::leader_after`]); `None` if that depends
    /// on a parent this replica does not hold.
    pub(super) fn leader_for(
        &self,
        round: u64,
        parent_id: &Hash,
        parent_round: u64,
    ) -> Option<ReplicaId> {
        if parent_round + 1 != round {
            return Some(self.cfg.leader(round));
        }
        match self.block_by_id(parent_id) {
            Some(parent) => Some(self.cfg.leader_after(round, parent)),
            // The genesis QC certifies no block.
            None if *parent_id == crypto::genesis_id(self.cfg.epoch) => {
                Some(self.cfg.leader(round))
            }
            None => None,
        }
    }

    /// The leader of the current round as this replica sees it: for a
    /// proposal on its highest certificate, or round robin if it does not
    /// hold that certificate's block.
    pub fn leader(&self) -> ReplicaId {
        let qc = &self.safety.high_qc;
        self.leader_for(self.round(), &qc.block_id, qc.round)
            .unwrap_or_else(|| self.cfg.leader(self.round()))
    }

    /// The cheap checks of a proposed block's header, before any hashing:
    /// this epoch, a round led by its author (when this replica holds the
    /// parent that decides it; else [`Replica::on_proposal_hashed`] checks
    /// once it does), not stale. Counts a failure.
    pub(super) fn proposal_header_current(&mut self, block: &Block) -> bool {
        let leader = self.leader_for(block.round, &block.parent_id, block.justify.round);
        if block.epoch != self.cfg.epoch
            || block.justify.epoch != self.cfg.epoch
            || block.round == 0
            || leader.is_some_and(|leader| block.author != leader)
            || block.author as usize >= self.cfg.n()
        {
            self.reject(Rejection::Malformed);
            return false;
        }
        if block.round + 1 < self.round() {
            self.reject(Rejection::Stale);
            return false;
        }
        true
    }

    /// [`Replica::on_proposal`] with the block's leaf hashes when the caller
    /// already has them (our own proposal, from the mempool's hashes).
    pub(super) fn on_proposal_hashed(
        &mut self,
        from: ReplicaId,
        block: Block,
        leaves: Option<Vec<Hash>>,
        tc: Option<TimeoutCert>,
        signature: Signature64,
    ) {
        if !self.proposal_header_current(&block) {
            return;
        }
        if entry_bytes(&block) > MAX_BLOCK_BYTES {
            self.reject(Rejection::Malformed);
            return;
        }
        // Leaf hashes first: the block id is computed from them.
        let leaves: Vec<Hash> =
            leaves.unwrap_or_else(|| block.entries.iter().map(|e| merkle::leaf_hash(e)).collect());
        let id = crypto::block_id_with_leaves(&block, &leaves);
        if self.blocks.contains_key(&id) {
            // Already have it; it may still be votable if we were waiting.
            self.vote_for_stored(&id, block.round, tc);
            return;
        }
        // Our own proposal (`from == self.id` only via `maybe_propose`) was
        // just signed here; re-verifying it would cost a verification per block.
        if from != self.id
            && !self.committee.verify(
                block.author,
                &crypto::proposal_message(self.cfg.epoch, &id),
                &signature,
            )
        {
            self.reject(Rejection::InvalidSignature);
            return;
        }
        if block.justify.block_id != block.parent_id || block.justify.round >= block.round {
            self.reject(Rejection::Malformed);
            return;
        }
        let justify = block.justify.clone();
        if !self.check_qc(&justify) {
            return;
        }
        if let Some(tc) = &tc {
            if tc.round + 1 != block.round || !self.check_tc(tc) {
                self.reject(Rejection::InvalidCertificate);
                return;
            }
        }
        if let Some(tc) = &tc {
            self.process_tc(tc, from);
        }
        self.process_qc(&justify, from);
        // An honest proposal carries the certificate that moves its
        // receivers to its round (a QC or TC for the round before), so
        // once they are applied it is never ahead. One that is ahead is
        // of a round no certificate reached, and storing it would let a
        // replica fill memory with blocks for every round it leads.
        if block.round > self.round() && !bug(Bug::StoreFutureProposals) {
            self.reject(Rejection::Ahead);
            return;
        }
        // A block with duplicate entries is invalid.
        let distinct: DigestSet<&Hash> = leaves.iter().collect();
        if distinct.len() != leaves.len() {
            self.reject(Rejection::Malformed);
            return;
        }
        let parent_height = self.height_of(&block.parent_id);
        let Some(parent_height) = parent_height else {
            if block.round == self.round() {
                let waiting = WaitingProposal {
                    block,
                    tc,
                    signature,
                    from,
                };
                put_per_author(&mut self.waiting_proposals, waiting, |w| w.block.author);
            }
            self.request_sync(from);
            return;
        };
        if let Some(parent) = self.blocks.get(&block.parent_id) {
            // The QC's round must be its block's round.
            if parent.block.round != block.justify.round && !bug(Bug::QcRoundUnbound) {
                self.reject(Rejection::Malformed);
                return;
            }
        }
        // The parent is held now, so the leader is decided.
        if self.leader_for(block.round, &block.parent_id, block.justify.round) != Some(block.author)
        {
            self.reject(Rejection::Malformed);
            return;
        }
        let round = block.round;
        // One stored block per (round, author): an equivocating leader
        // gets its first block stored; the other arrives by id via sync if
        // it is the one certified.
        if self.blocks.slot_taken(block.round, block.author) {
            self.reject(Rejection::Equivocation);
        } else {
            self.store_block(id, block, parent_height, leaves);
        }
        self.arm_timer();
        // A proposal that arrived before this block, its parent, can be
        // handled now (proposals from different leaders travel on
        // different connections, so they overtake each other).
        self.retry_waiting_proposals();
        // A QC that arrived before its block can now be applied.
        let mut early: Vec<QuorumCert> = self
            .certified
            .values()
            .filter(|c| c.qc.block_id == id)
            .map(|c| c.qc.clone())
            .collect();
        early.sort_by_key(|qc| qc.round);
        for qc in early {
            self.apply_commit_rule(&qc);
        }
        self.try_commit();
        if round == self.round() {
            self.try_vote(&id, tc.as_ref());
        }
    }

    /// The height of a block this replica can extend: a stored block or
    /// the committed tip.
    pub(super) fn height_of(&self, id: &Hash) -> Option<u64> {
        if *id == self.committed_id {
            Some(self.committed_height)
        } else {
            self.blocks.get(id).map(|b| b.height)
        }
    }

    /// Handles again the waiting proposals whose parent this replica now
    /// holds.
    pub(super) fn retry_waiting_proposals(&mut self) {
        if self.waiting_proposals.is_empty() {
            return;
        }
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiting_proposals)
            .into_iter()
            .partition(|w| self.height_of(&w.block.parent_id).is_some());
        self.waiting_proposals = waiting;
        for w in ready {
            self.on_proposal(w.from, w.block, w.tc, w.signature);
        }
    }

    /// A proposal for a block already stored: votes if the rules allow.
    /// The TC is this message's, unverified so far, and [`Replica::try_vote`]
    /// trusts the TC it is given (a forged one with a low high QC would
    /// unlock a vote for a block that skips a certified one), so it is
    /// verified first.
    pub(super) fn vote_for_stored(&mut self, id: &Hash, round: u64, tc: Option<TimeoutCert>) {
        if round != self.round() {
            return;
        }
        if let Some(tc) = &tc {
            if tc.round + 1 != round {
                self.reject(Rejection::InvalidCertificate);
                return;
            }
            if !self.check_tc(tc) {
                return;
            }
        }
        self.try_vote(id, tc.as_ref());
    }

    /// Votes for the stored block `id` if the safety rules allow. `tc`
    /// must have been verified.
    pub(super) fn try_vote(&mut self, id: &Hash, tc: Option<&TimeoutCert>) {
        let Some(stored) = self.blocks.get(id) else {
            return;
        };
        let block = &stored.block;
        if block.round != self.round() || block.round <= self.safety.last_voted_round {
            return;
        }
        // Validity: no entry that is already in the chain or was committed
        // recently (an honest leader never proposes one).
        let ancestors = self.uncommitted_leaves(&block.parent_id);
        if stored
            .leaves
            .iter()
            .any(|l| ancestors.contains(l) || self.dedup.contains(l))
        {
            self.reject(Rejection::Malformed);
            return;
        }
        let qc_round = block.justify.round;
        let safe = qc_round + 1 == block.round
            || tc.is_some_and(|tc| tc.round + 1 == block.round && qc_round >= tc.high_qc.round);
        if !safe {
            return;
        }
        let (round, parent_round) = (block.round, qc_round);
        self.persist_blocks.push((*id, Arc::clone(&stored.block)));
        self.safety.last_voted_round = round;
        self.safety.last_vote_round = round;
        self.dirty = true;
        // This replica has voted in this round: the others cannot get its
        // vote.
        self.waiting_proposals.retain(|w| w.block.round != round);
        let signature = self.signer.sign(&crypto::vote_message(
            self.cfg.epoch,
            round,
            id,
            parent_round,
        ));
        let vote = Vote {
            epoch: self.cfg.epoch,
            round,
            block_id: *id,
            parent_round,
            voter: self.id,
            signature,
        };
        self.metrics.votes_sent += 1;
        self.send(Target::All, ConsensusMessage::Vote { vote: vote.clone() });
        self.add_vote(vote);
    }

    pub(super) fn on_vote(&mut self, from: ReplicaId, vote: Vote) {
        if vote.voter != from || vote.epoch != self.cfg.epoch || vote.parent_round >= vote.round {
            self.reject(Rejection::Malformed);
            return;
        }
        if vote.round + 1 < self.round() {
            self.reject(Rejection::Stale);
            return;
        }
        if vote.round > self.round() + MAX_ROUNDS_AHEAD
            || (vote.round > self.round()
                && self.vote_rounds_ahead_kept(from) >= MAX_ROUNDS_AHEAD_PER_PEER)
        {
            // Far ahead of us, or more rounds ahead than an honest peer
            // gets before this replica catches up: not kept.
            self.reject(Rejection::Ahead);
            return;
        }
        self.add_vote(vote);
    }

    /// Rounds after the current one for which `voter`'s vote is kept.
    pub(super) fn vote_rounds_ahead_kept(&self, voter: ReplicaId) -> usize {
        let round = self.round();
        self.voted_for
            .keys()
            .filter(|(r, v)| *v == voter && *r > round)
            .count()
    }

    pub(super) fn add_vote(&mut self, vote: Vote) {
        match self.voted_for.get(&(vote.round, vote.voter)) {
            Some(b) if *b != vote.block_id => {
                self.reject(Rejection::Equivocation);
                return;
            }
            Some(_) => {}
            None => {
                self.voted_for
                    .insert((vote.round, vote.voter), vote.block_id);
            }
        }
        let key = (vote.round, vote.block_id, vote.parent_round);
        let quorum = self.cfg.quorum();
        let set = self.votes.entry(key).or_default();
        if set.done {
            return;
        }
        set.votes.insert(vote.voter, vote.signature);
        if set.votes.len() < quorum {
            return;
        }
        // Verify the collected votes in one batch; drop the invalid ones.
        let msg = crypto::vote_message(vote.epoch, vote.round, &vote.block_id, vote.parent_round);
        let items: Vec<(ReplicaId, Vec<u8>, Signature64)> = set
            .votes
            .iter()
            .map(|(r, s)| (*r, msg.clone(), *s))
            .collect();
        let bad = self.committee.verify_many(&items, &mut self.rng);
        let set = self.votes.get_mut(&key).expect("present");
        if !bad.is_empty() {
            for &i in &bad {
                set.votes.remove(&items[i].0);
            }
            for i in bad {
                self.reject_from(items[i].0, Rejection::InvalidSignature);
            }
            return;
        }
        set.done = true;
        let signatures: Vec<ReplicaSignature> = set
            .votes
            .iter()
            .take(quorum)
            .map(|(r, s)| ReplicaSignature {
                replica: *r,
                signature: *s,
            })
            .collect();
        let qc = QuorumCert {
            epoch: vote.epoch,
            round: vote.round,
            block_id: vote.block_id,
            parent_round: vote.parent_round,
            signatures: BoundedVec::new(signatures).expect("≤ n"),
        };
        let verified = set.votes.clone();
        self.certified.insert(
            key,
            Certified {
                qc: qc.clone(),
                verified,
            },
        );
        self.metrics.qcs_formed += 1;
        let me = self.id;
        self.process_qc(&qc, me);
    }

    /// Whether `qc` is a valid certificate. Each of its signatures is
    /// verified once: those already verified for the same fact are not
    /// checked again.
    pub(super) fn check_qc(&mut self, qc: &QuorumCert) -> bool {
        if qc.epoch != self.cfg.epoch {
            return false;
        }
        if qc.round == 0 {
            // Only the genesis QC has round 0.
            if *qc == genesis_qc(self.cfg.epoch) {
                return true;
            }
            self.reject(Rejection::InvalidCertificate);
            return false;
        }
        let signers: HashSet<ReplicaId> = qc.signatures.iter().map(|s| s.replica).collect();
        if signers.len() != qc.signatures.len()
            || signers.len() < self.cfg.quorum()
            || qc.parent_round >= qc.round
        {
            self.reject(Rejection::InvalidCertificate);
            return false;
        }
        let fact = (qc.round, qc.block_id, qc.parent_round);
        let known = self.certified.get(&fact).map(|c| &c.verified);
        let msg = crypto::vote_message(qc.epoch, qc.round, &qc.block_id, qc.parent_round);
        let unverified: Vec<(ReplicaId, Vec<u8>, Signature64)> = qc
            .signatures
            .iter()
            .filter(|s| known.is_none_or(|k| k.get(&s.replica) != Some(&s.signature)))
            .map(|s| (s.replica, msg.clone(), s.signature))
            .collect();
        if unverified.is_empty() {
            return true;
        }
        if !self
            .committee
            .verify_many(&unverified, &mut self.rng)
            .is_empty()
        {
            self.reject(Rejection::InvalidCertificate);
            return false;
        }
        let certified = self.certified.entry(fact).or_insert_with(|| Certified {
            qc: qc.clone(),
            verified: BTreeMap::new(),
        });
        certified
            .verified
            .extend(unverified.into_iter().map(|(r, _, s)| (r, s)));
        true
    }
}
