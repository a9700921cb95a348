//! Rounds and their timers: entering rounds on QCs and TCs, timeouts,
//! forming timeout certificates, and the periodic status message.

use super::*;

impl<R: RngCore + CryptoRng> Replica<R> {
    /// Takes in a verified QC: highest QC, commit rule, round advance.
    pub(super) fn process_qc(&mut self, qc: &QuorumCert, from: ReplicaId) {
        // The highest QC rides along with the next state write rather than
        // costing one of its own (at light load, one flush per replica and
        // round that certifies no entries). What safety needs of it is
        // that a replica which voted for a block never reports a highest
        // QC below that block's certificate after a crash: a vote's write
        // holds the whole state, and the certificate a block carries is
        // processed before the vote, so that write covers it.
        if qc.round > self.safety.high_qc.round {
            self.safety.high_qc = qc.clone();
        }
        if qc.round > 0
            && !self.blocks.contains_key(&qc.block_id)
            && !self.is_committed(&qc.block_id)
        {
            self.request_sync(from);
        }
        self.apply_commit_rule(qc);
        if qc.round >= self.round {
            self.timeouts_in_a_row = 0;
            self.enter_round(qc.round + 1, None);
        }
    }

    pub(super) fn process_tc(&mut self, tc: &TimeoutCert, from: ReplicaId) {
        let high_qc = tc.high_qc.clone();
        self.process_qc(&high_qc, from);
        if self
            .safety
            .high_tc
            .as_ref()
            .is_none_or(|t| tc.round > t.round)
        {
            self.safety.high_tc = Some(tc.clone());
            self.dirty = true;
        }
        if tc.round >= self.round {
            self.timeouts_in_a_row = self.timeouts_in_a_row.saturating_add(1);
            self.enter_round(tc.round + 1, Some(tc.clone()));
        }
    }

    pub(super) fn has_work(&self) -> bool {
        if !self.mempool.is_empty()
            || !self.waiting_proposals.is_empty()
            || self.commit_target.is_some()
        {
            return true;
        }
        self.blocks
            .values()
            .any(|b| !b.leaves.is_empty() && b.block.round > self.committed_round)
    }

    pub(super) fn round_timeout(&self) -> Duration {
        let factor = 1u64 << self.timeouts_in_a_row.min(16);
        Duration::from_millis(
            self.cfg
                .round_timeout_ms
                .saturating_mul(factor)
                .min(self.cfg.max_round_timeout_ms),
        )
    }

    /// Starts the round timer if there is work and none is running.
    pub(super) fn arm_timer(&mut self) {
        if self.round_deadline.is_none() && self.has_work() {
            self.round_deadline = Some(self.now + self.round_timeout());
        }
    }

    pub(super) fn enter_round(&mut self, round: u64, tc: Option<TimeoutCert>) {
        debug_assert!(round > self.round);
        if tc.is_some() {
            self.metrics.view_changes += 1;
            self.events.push(Event::ViewChange { round });
        }
        self.round = round;
        self.sent_timeout = None;
        self.entered_by_tc = tc;
        self.round_deadline = None;
        self.waiting_proposals.retain(|w| w.block.round >= round);
        // A proposal of the previous round may still be stored (it is not
        // stale yet); older ones can only arrive by sync now.
        self.pending_leaves.retain(|p| p.header.round + 1 >= round);
        self.arm_timer();
        self.maybe_propose();
    }

    pub(super) fn local_timeout(&mut self) {
        let round = self.round;
        let timeout = match &self.sent_timeout {
            // Re-send the same timeout: messages may have been lost.
            Some(t) if t.round == round => t.clone(),
            _ => {
                if self.safety.last_voted_round < round {
                    self.safety.last_voted_round = round;
                    self.dirty = true;
                }
                let high_qc = self.safety.high_qc.clone();
                let signature = self.signer.sign(&crypto::timeout_message(
                    self.cfg.epoch,
                    round,
                    high_qc.round,
                ));
                let t = Timeout {
                    epoch: self.cfg.epoch,
                    round,
                    high_qc,
                    sender: self.id,
                    signature,
                };
                self.sent_timeout = Some(t.clone());
                t
            }
        };
        self.metrics.timeouts_sent += 1;
        self.events.push(Event::TimeoutSent { round });
        self.send(
            Target::All,
            ConsensusMessage::Timeout {
                timeout: timeout.clone(),
            },
        );
        // Back off the re-send as the round drags on.
        self.round_deadline = Some(self.now + self.round_timeout() * 2);
        self.add_timeout(self.id, timeout);
    }

    pub(super) fn on_timeout_message(&mut self, from: ReplicaId, timeout: Timeout) {
        if timeout.sender != from
            || timeout.epoch != self.cfg.epoch
            || timeout.high_qc.round >= timeout.round
        {
            self.reject(Rejection::Malformed);
            return;
        }
        if timeout.round < self.round {
            // The sender is behind: help it to the current round.
            self.reject(Rejection::Stale);
            self.send_certificates(Target::One(from));
            return;
        }
        if timeout.round > self.round + 1024 {
            self.reject(Rejection::Stale);
            return;
        }
        let high_qc = timeout.high_qc.clone();
        if !self.check_qc(&high_qc) {
            return;
        }
        self.process_qc(&high_qc, from);
        if timeout.round < self.round {
            return;
        }
        self.add_timeout(from, timeout);
    }

    pub(super) fn add_timeout(&mut self, from: ReplicaId, timeout: Timeout) {
        let round = timeout.round;
        let set = self.timeouts.entry(round).or_default();
        if set.done {
            return;
        }
        set.timeouts.entry(from).or_insert(timeout);
        let count = set.timeouts.len();
        // f+1 timeouts mean at least one honest replica gave up on this
        // round: join them so a TC can form.
        if count > self.cfg.f()
            && round == self.round
            && self.sent_timeout.as_ref().is_none_or(|t| t.round != round)
        {
            self.local_timeout();
        }
        let set = self.timeouts.get_mut(&round).expect("present");
        if set.timeouts.len() < self.cfg.quorum() {
            return;
        }
        let items: Vec<(ReplicaId, Vec<u8>, Signature64)> = set
            .timeouts
            .values()
            .map(|t| {
                (
                    t.sender,
                    crypto::timeout_message(t.epoch, t.round, t.high_qc.round),
                    t.signature,
                )
            })
            .collect();
        let bad = self.committee.verify_many(&items, &mut self.rng);
        let set = self.timeouts.get_mut(&round).expect("present");
        if !bad.is_empty() {
            for &i in &bad {
                set.timeouts.remove(&items[i].0);
            }
            for i in bad {
                self.reject_from(items[i].0, Rejection::InvalidSignature);
            }
            return;
        }
        set.done = true;
        let chosen: Vec<&Timeout> = set.timeouts.values().take(self.cfg.quorum()).collect();
        let high_qc = chosen
            .iter()
            .map(|t| &t.high_qc)
            .max_by_key(|qc| qc.round)
            .expect("quorum > 0")
            .clone();
        let signatures = chosen
            .iter()
            .map(|t| TimeoutSignature {
                replica: t.sender,
                high_qc_round: t.high_qc.round,
                signature: t.signature,
            })
            .collect();
        let tc = TimeoutCert {
            epoch: self.cfg.epoch,
            round,
            high_qc,
            signatures: BoundedVec::new(signatures).expect("≤ n"),
        };
        self.metrics.tcs_formed += 1;
        self.events.push(Event::TcFormed { round });
        let me = self.id;
        self.process_tc(&tc, me);
    }

    pub(super) fn check_tc(&mut self, tc: &TimeoutCert) -> bool {
        if tc.epoch != self.cfg.epoch || tc.round == 0 {
            self.reject(Rejection::InvalidCertificate);
            return false;
        }
        let signers: HashSet<ReplicaId> = tc.signatures.iter().map(|s| s.replica).collect();
        let max_qc_round = tc.signatures.iter().map(|s| s.high_qc_round).max();
        if signers.len() != tc.signatures.len()
            || signers.len() < self.cfg.quorum()
            || max_qc_round != Some(tc.high_qc.round)
            || tc.high_qc.round >= tc.round
        {
            self.reject(Rejection::InvalidCertificate);
            return false;
        }
        if !self.check_qc(&tc.high_qc.clone()) {
            return false;
        }
        let items: Vec<(ReplicaId, Vec<u8>, Signature64)> = tc
            .signatures
            .iter()
            .map(|s| {
                (
                    s.replica,
                    crypto::timeout_message(tc.epoch, tc.round, s.high_qc_round),
                    s.signature,
                )
            })
            .collect();
        if !self.committee.verify_many(&items, &mut self.rng).is_empty() {
            self.reject(Rejection::InvalidCertificate);
            return false;
        }
        true
    }

    pub(super) fn send_certificates(&mut self, to: Target) {
        let message = ConsensusMessage::Certificates {
            high_qc: self.safety.high_qc.clone(),
            high_tc: self.safety.high_tc.clone(),
            committed_height: self.committed_height,
        };
        self.send(to, message);
    }

    pub(super) fn on_certificates(
        &mut self,
        from: ReplicaId,
        high_qc: QuorumCert,
        high_tc: Option<TimeoutCert>,
        committed_height: u64,
    ) {
        if committed_height > self.committed_height {
            self.request_sync(from);
        }
        if high_qc.round < self.safety.high_qc.round || committed_height < self.committed_height {
            // The sender is behind: answer with ours.
            self.send_certificates(Target::One(from));
        }
        if self.check_qc(&high_qc) {
            self.process_qc(&high_qc, from);
        }
        if let Some(tc) = high_tc {
            if tc.round >= self.round && self.check_tc(&tc) {
                self.process_tc(&tc, from);
            }
        }
    }
}
