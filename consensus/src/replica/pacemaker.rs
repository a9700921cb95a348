//! Rounds and their timers: entering rounds on QCs and TCs, timeouts,
//! forming timeout certificates, and the periodic status message.

use super::*;

/// Timeouts received for one round.
#[derive(Default)]
struct TimeoutSet {
    timeouts: BTreeMap<ReplicaId, Timeout>,
    /// Set once a certificate was formed.
    done: bool,
}

/// The round this replica is in, its timers and the timeouts collected
/// towards certificates. It decides nothing about blocks: the replica
/// tells it when a QC or TC moves the round.
pub(super) struct Pacemaker {
    round: u64,
    /// Consecutive rounds ended by a TC (for the backoff).
    timeouts_in_a_row: u32,
    round_deadline: Option<Duration>,
    status_deadline: Duration,
    /// The timeout this replica sent for the current round, if any.
    sent_timeout: Option<Timeout>,
    entered_by_tc: Option<TimeoutCert>,
    timeouts: BTreeMap<u64, TimeoutSet>,
    round_timeout_ms: u64,
    max_round_timeout_ms: u64,
    status_interval_ms: u64,
}

/// What a timeout added to its round's set amounts to.
pub(super) enum Collected {
    /// The round already has its certificate.
    Done,
    /// This many distinct senders have timed out in the round.
    Count(usize),
}

impl Pacemaker {
    pub(super) fn new(
        cfg: &Config,
        round: u64,
        entered_by_tc: Option<TimeoutCert>,
        now: Duration,
    ) -> Self {
        Pacemaker {
            round,
            timeouts_in_a_row: 0,
            round_deadline: None,
            status_deadline: now + Duration::from_millis(cfg.status_interval_ms),
            sent_timeout: None,
            entered_by_tc,
            timeouts: BTreeMap::new(),
            round_timeout_ms: cfg.round_timeout_ms,
            max_round_timeout_ms: cfg.max_round_timeout_ms,
            status_interval_ms: cfg.status_interval_ms,
        }
    }

    pub(super) fn round(&self) -> u64 {
        self.round
    }

    /// The TC this replica entered the current round by, if it did.
    pub(super) fn entered_by_tc(&self) -> Option<&TimeoutCert> {
        self.entered_by_tc.as_ref()
    }

    pub(super) fn round_deadline(&self) -> Option<Duration> {
        self.round_deadline
    }

    pub(super) fn status_deadline(&self) -> Duration {
        self.status_deadline
    }

    pub(super) fn round_expired(&self, now: Duration) -> bool {
        self.round_deadline.is_some_and(|d| d <= now)
    }

    /// Whether the periodic status message is due; if so, the next one is
    /// scheduled.
    pub(super) fn status_due(&mut self, now: Duration) -> bool {
        if self.status_deadline > now {
            return false;
        }
        self.status_deadline = now + Duration::from_millis(self.status_interval_ms);
        true
    }

    /// The round timer: the first timeout, doubled per consecutive round
    /// ended by a TC, up to the cap.
    fn round_timeout(&self) -> Duration {
        let factor = 1u64 << self.timeouts_in_a_row.min(16);
        Duration::from_millis(
            self.round_timeout_ms
                .saturating_mul(factor)
                .min(self.max_round_timeout_ms),
        )
    }

    /// Starts the round timer if none is running.
    fn arm(&mut self, now: Duration) {
        if self.round_deadline.is_none() {
            self.round_deadline = Some(now + self.round_timeout());
        }
    }

    /// Moves to `round`, entered by a QC (`tc` none: the backoff resets)
    /// or by a TC for the round before.
    fn enter(&mut self, round: u64, tc: Option<TimeoutCert>) {
        assert!(round > self.round, "rounds only grow");
        if tc.is_some() {
            self.timeouts_in_a_row = self.timeouts_in_a_row.saturating_add(1);
        } else {
            self.timeouts_in_a_row = 0;
        }
        self.round = round;
        self.sent_timeout = None;
        self.entered_by_tc = tc;
        self.round_deadline = None;
    }

    /// Records this replica's timeout for the current round (sent again
    /// as it is if the round drags on) and schedules the re-send.
    fn sent(&mut self, timeout: Timeout, now: Duration) {
        self.sent_timeout = Some(timeout);
        // Back off the re-send as the round drags on.
        self.round_deadline = Some(now + self.round_timeout() * 2);
    }

    /// The timeout this replica already sent for `round`.
    fn sent_for(&self, round: u64) -> Option<&Timeout> {
        self.sent_timeout.as_ref().filter(|t| t.round == round)
    }

    fn collect(&mut self, from: ReplicaId, timeout: Timeout) -> Collected {
        let set = self.timeouts.entry(timeout.round).or_default();
        if set.done {
            return Collected::Done;
        }
        set.timeouts.entry(from).or_insert(timeout);
        Collected::Count(set.timeouts.len())
    }

    /// Rounds after the current one for which `from`'s timeout is kept.
    pub(super) fn rounds_ahead_kept(&self, from: ReplicaId) -> usize {
        self.timeouts
            .range(self.round + 1..)
            .filter(|(_, set)| set.timeouts.contains_key(&from))
            .count()
    }

    /// Where `round`'s set stands now (it may have formed a certificate
    /// meanwhile, through this replica's own timeout).
    fn collect_count(&self, round: u64) -> Collected {
        match self.timeouts.get(&round) {
            Some(set) if set.done => Collected::Done,
            Some(set) => Collected::Count(set.timeouts.len()),
            None => Collected::Count(0),
        }
    }

    /// The signed messages of `round`'s timeouts, to verify in one batch.
    fn signed_timeouts(&self, round: u64) -> Vec<(ReplicaId, Vec<u8>, Signature64)> {
        self.timeouts[&round]
            .timeouts
            .values()
            .map(|t| {
                (
                    t.sender,
                    crypto::timeout_message(t.epoch, t.round, t.high_qc.round),
                    t.signature,
                )
            })
            .collect()
    }

    fn drop_timeout(&mut self, round: u64, sender: ReplicaId) {
        if let Some(set) = self.timeouts.get_mut(&round) {
            set.timeouts.remove(&sender);
        }
    }

    /// The certificate from `quorum` of `round`'s (verified) timeouts,
    /// carrying the highest QC among them.
    fn certificate(&mut self, epoch: u64, round: u64, quorum: usize) -> TimeoutCert {
        let set = self.timeouts.get_mut(&round).expect("collected");
        set.done = true;
        let chosen: Vec<&Timeout> = set.timeouts.values().take(quorum).collect();
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
        TimeoutCert {
            epoch,
            round,
            high_qc,
            signatures: BoundedVec::new(signatures).expect("≤ n"),
        }
    }

    /// Forgets timeouts of rounds before the previous one.
    pub(super) fn prune_timeouts(&mut self) {
        self.timeouts = self.timeouts.split_off(&self.round.saturating_sub(1));
    }
}

impl<R: CryptoRng> Replica<R> {
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
        if qc.round >= self.round() {
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
        if tc.round >= self.round() {
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

    /// Starts the round timer if there is work and none is running.
    pub(super) fn arm_timer(&mut self) {
        if self.pacemaker.round_deadline().is_none() && self.has_work() {
            self.pacemaker.arm(self.now);
        }
    }

    pub(super) fn enter_round(&mut self, round: u64, tc: Option<TimeoutCert>) {
        if tc.is_some() {
            self.metrics.view_changes += 1;
            self.events.push(Event::ViewChange { round });
        }
        self.pacemaker.enter(round, tc);
        self.waiting_proposals.retain(|w| w.block.round >= round);
        // A proposal of the previous round may still be stored (it is not
        // stale yet); older ones can only arrive by sync now.
        self.pending_leaves.retain(|p| p.header.round + 1 >= round);
        self.arm_timer();
        self.maybe_propose();
    }

    pub(super) fn local_timeout(&mut self) {
        let round = self.round();
        let timeout = match self.pacemaker.sent_for(round) {
            // Re-send the same timeout: messages may have been lost.
            Some(t) => t.clone(),
            None => {
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
                Timeout {
                    epoch: self.cfg.epoch,
                    round,
                    high_qc,
                    sender: self.id,
                    signature,
                }
            }
        };
        self.pacemaker.sent(timeout.clone(), self.now);
        self.metrics.timeouts_sent += 1;
        self.events.push(Event::TimeoutSent { round });
        self.send(
            Target::All,
            ConsensusMessage::Timeout {
                timeout: timeout.clone(),
            },
        );
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
        if timeout.round < self.round() {
            // The sender is behind: help it to the current round.
            self.reject(Rejection::Stale);
            self.send_certificates(Target::One(from));
            return;
        }
        if timeout.round > self.round() + MAX_ROUNDS_AHEAD
            || (timeout.round > self.round()
                && self.pacemaker.rounds_ahead_kept(from) >= MAX_ROUNDS_AHEAD_PER_PEER)
        {
            self.reject(Rejection::Ahead);
            return;
        }
        let high_qc = timeout.high_qc.clone();
        if !self.check_qc(&high_qc) {
            return;
        }
        self.process_qc(&high_qc, from);
        if timeout.round < self.round() {
            return;
        }
        self.add_timeout(from, timeout);
    }

    pub(super) fn add_timeout(&mut self, from: ReplicaId, timeout: Timeout) {
        let round = timeout.round;
        let Collected::Count(count) = self.pacemaker.collect(from, timeout) else {
            return;
        };
        // f+1 timeouts mean at least one honest replica gave up on this
        // round: join them so a TC can form.
        if count > self.cfg.f() && round == self.round() && self.pacemaker.sent_for(round).is_none()
        {
            self.local_timeout();
        }
        let Collected::Count(count) = self.pacemaker.collect_count(round) else {
            return;
        };
        if count < self.cfg.quorum() {
            return;
        }
        let items = self.pacemaker.signed_timeouts(round);
        let bad = self.committee.verify_many(&items, &mut self.rng);
        if !bad.is_empty() {
            for i in bad {
                self.pacemaker.drop_timeout(round, items[i].0);
                self.reject_from(items[i].0, Rejection::InvalidSignature);
            }
            return;
        }
        let tc = self
            .pacemaker
            .certificate(self.cfg.epoch, round, self.cfg.quorum());
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
            if tc.round >= self.round() && self.check_tc(&tc) {
                self.process_tc(&tc, from);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_round_timer_doubles_per_failed_round_up_to_the_cap_and_resets_on_a_qc() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[1; 32]);
        let mut cfg = Config::new(1, "o", vec![key.verifying_key()]);
        cfg.round_timeout_ms = 1000;
        cfg.max_round_timeout_ms = 5000;
        let mut pacemaker = Pacemaker::new(&cfg, 1, None, Duration::ZERO);
        let tc = |round| TimeoutCert {
            epoch: 1,
            round,
            high_qc: genesis_qc(1),
            signatures: BoundedVec::new(Vec::new()).expect("empty"),
        };
        let mut timers = Vec::new();
        for round in 1..=4 {
            pacemaker.arm(Duration::ZERO);
            timers.push(pacemaker.round_deadline().unwrap().as_millis());
            pacemaker.enter(round + 1, Some(tc(round)));
        }
        assert_eq!(timers, vec![1000, 2000, 4000, 5000]);
        pacemaker.enter(6, None);
        pacemaker.arm(Duration::ZERO);
        assert_eq!(
            pacemaker.round_deadline(),
            Some(Duration::from_millis(1000))
        );
        // Arming again keeps the running timer.
        pacemaker.arm(Duration::from_millis(700));
        assert_eq!(
            pacemaker.round_deadline(),
            Some(Duration::from_millis(1000))
        );
    }
}
