//! Mode 0: one honest replica, every peer hostile.

use super::*;

struct Adversary {
    cfg: Config,
    me: ReplicaId,
    node: Process,
    now: Duration,
    signers: Vec<Signer>,
    note_keys: Vec<SignerKey>,
    keys: KeyRing,
    checker: Checker,
    /// Blocks seen or made, by id.
    blocks: Vec<Block>,
    by_id: HashMap<Hash, Block>,
    /// Certificates seen or made; the genesis QC stays first.
    qcs: Vec<QuorumCert>,
    tcs: Vec<TimeoutCert>,
    /// Messages the replica sent, to replay.
    seen: Vec<ConsensusMessage>,
    /// Checkpoints the replica computed.
    checkpoints: Vec<(u64, Hash)>,
}

/// Mode 0 (see the module docs).
pub fn adversary(input: &mut Input) -> Progress {
    let cfg = config();
    let me = input.below(REPLICAS) as ReplicaId;
    let now = Duration::from_millis(1);
    let node = Process::new(&cfg, me, now);
    let genesis = bftlog_consensus::genesis_qc(cfg.epoch);
    let mut a = Adversary {
        signers: (0..REPLICAS)
            .map(|i| Signer::new(replica_signing_key(i)))
            .collect(),
        note_keys: (0..REPLICAS).map(replica_note_key).collect(),
        keys: KEYS.clone(),
        checker: Checker::new(&cfg, vec![me]),
        cfg,
        me,
        node,
        now,
        blocks: Vec::new(),
        by_id: HashMap::new(),
        qcs: vec![genesis],
        tcs: Vec::new(),
        seen: Vec::new(),
        checkpoints: Vec::new(),
    };
    a.drain();
    let mut ops = 0;
    while !input.is_empty() && ops < 256 {
        ops += 1;
        a.step(input);
        a.drain();
        if let Some(v) = a.checker.take_violation() {
            panic!("replica {} broke an invariant: {v:?}", a.me);
        }
    }
    a.node.progress()
}

impl Adversary {
    fn n(&self) -> usize {
        self.cfg.n()
    }

    fn other(&self, input: &mut Input) -> ReplicaId {
        let k = 1 + input.below(self.n() - 1);
        ((self.me as usize + k) % self.n()) as ReplicaId
    }

    /// A round near the replica's, or anywhere.
    fn round(&self, input: &mut Input) -> u64 {
        let base = self.node.replica.round();
        match input.u8() % 16 {
            15 => input.size(),
            d => (base + d as u64 % 6).saturating_sub(2).max(1),
        }
    }

    fn pick<T: Clone>(input: &mut Input, list: &[T]) -> Option<T> {
        if list.is_empty() {
            return None;
        }
        // Biased to recent items.
        let back = if input.bool() {
            input.below(2)
        } else {
            input.below(list.len())
        };
        Some(list[list.len() - 1 - back.min(list.len() - 1)].clone())
    }

    fn learn_block(&mut self, block: &Block) {
        let id = crypto::block_id(block);
        if self.by_id.insert(id, block.clone()).is_none() {
            push_bounded(&mut self.blocks, block.clone(), 0, 48);
        }
        self.learn_qc(&block.justify);
    }

    fn learn_qc(&mut self, qc: &QuorumCert) {
        if qc.round > 0 && !self.qcs.contains(qc) {
            push_bounded(&mut self.qcs, qc.clone(), 1, 32);
        }
    }

    fn learn_tc(&mut self, tc: &TimeoutCert) {
        if !self.tcs.contains(tc) {
            push_bounded(&mut self.tcs, tc.clone(), 0, 16);
        }
        self.learn_qc(&tc.high_qc);
    }

    fn drain(&mut self) {
        let quorum = self.cfg.quorum();
        let sent = self
            .node
            .drain(&mut self.checker, &self.keys, quorum, false);
        for out in sent {
            match &out.message {
                ConsensusMessage::Proposal {
                    block,
                    timeout_cert,
                    ..
                } => {
                    self.learn_block(block);
                    if let Some(tc) = timeout_cert {
                        self.learn_tc(tc);
                    }
                }
                ConsensusMessage::Timeout { timeout } => self.learn_qc(&timeout.high_qc),
                ConsensusMessage::Certificates {
                    high_qc, high_tc, ..
                } => {
                    self.learn_qc(high_qc);
                    if let Some(tc) = high_tc {
                        self.learn_tc(tc);
                    }
                }
                ConsensusMessage::SyncResponse { blocks, commit_qc } => {
                    for b in blocks.iter() {
                        self.learn_block(b);
                    }
                    if let Some(qc) = commit_qc {
                        self.learn_qc(qc);
                    }
                }
                ConsensusMessage::CheckpointSignature { size, root, .. }
                    if !self.checkpoints.contains(&(*size, *root)) =>
                {
                    push_bounded(&mut self.checkpoints, (*size, *root), 0, 16);
                }
                _ => {}
            }
            push_bounded(&mut self.seen, out.message, 0, 32);
        }
    }

    fn deliver(&mut self, from: ReplicaId, message: ConsensusMessage) {
        self.node.replica.handle_message(self.now, from, message);
    }

    fn sign_vote(
        &self,
        signer: usize,
        round: u64,
        block_id: &Hash,
        parent_round: u64,
    ) -> Signature64 {
        self.signers[signer].sign(&crypto::vote_message(
            self.cfg.epoch,
            round,
            block_id,
            parent_round,
        ))
    }

    /// A certificate for `block`, signed by the replicas in `mask`.
    fn make_qc(&self, input: &mut Input, block: &Block) -> QuorumCert {
        let id = crypto::block_id(block);
        let mut round = block.round;
        let mut parent_round = block.justify.round;
        if input.u8() == 0xff {
            // Lie about what is certified (signatures still match).
            round = input.size();
            parent_round = input.size();
        }
        let mask = self.signer_mask(input);
        let signatures = (0..self.n())
            .filter(|i| mask & (1 << i) != 0)
            .map(|i| ReplicaSignature {
                replica: i as ReplicaId,
                signature: self.sign_vote(i, round, &id, parent_round),
            })
            .collect();
        let mut qc = QuorumCert {
            epoch: self.cfg.epoch,
            round,
            block_id: id,
            parent_round,
            signatures: BoundedVec::new(signatures).expect("≤ n"),
        };
        self.maybe_corrupt_qc(input, &mut qc);
        qc
    }

    /// Which peers sign: usually all of them (a quorum without us), never
    /// the replica under test, whose key the peers do not have.
    fn signer_mask(&self, input: &mut Input) -> u8 {
        let all = (1u8 << self.n()) - 1;
        let peers = all & !(1 << self.me);
        match input.u8() % 8 {
            0 => input.u8() & peers,
            _ => peers,
        }
    }

    fn maybe_corrupt_qc(&self, input: &mut Input, qc: &mut QuorumCert) {
        match input.u8() % 16 {
            0 if !qc.signatures.is_empty() => {
                let mut sigs = qc.signatures.clone().into_inner();
                let i = input.below(sigs.len());
                sigs[i].signature.0[input.below(64)] ^= 1 << (input.u8() % 8);
                qc.signatures = BoundedVec::new(sigs).expect("same length");
            }
            1 if !qc.signatures.is_empty() => {
                let mut sigs = qc.signatures.clone().into_inner();
                sigs.push(sigs[0].clone());
                qc.signatures = BoundedVec::new(sigs).expect("few");
            }
            2 => qc.epoch = qc.epoch.wrapping_add(1),
            _ => {}
        }
    }

    fn make_timeout(&self, sender: ReplicaId, round: u64, high_qc: QuorumCert) -> Timeout {
        let signature = self.signers[sender as usize].sign(&crypto::timeout_message(
            self.cfg.epoch,
            round,
            high_qc.round,
        ));
        Timeout {
            epoch: self.cfg.epoch,
            round,
            high_qc,
            sender,
            signature,
        }
    }

    fn make_tc(&self, input: &mut Input, round: u64) -> TimeoutCert {
        let mask = self.signer_mask(input);
        let mut high: Option<QuorumCert> = None;
        let mut signatures = Vec::new();
        for i in (0..self.n()).filter(|i| mask & (1 << i) != 0) {
            let qc = Self::pick(input, &self.qcs).expect("genesis at least");
            let signature =
                self.signers[i].sign(&crypto::timeout_message(self.cfg.epoch, round, qc.round));
            signatures.push(TimeoutSignature {
                replica: i as ReplicaId,
                high_qc_round: qc.round,
                signature,
            });
            if high.as_ref().is_none_or(|h| qc.round > h.round) {
                high = Some(qc);
            }
        }
        let mut high_qc = high.unwrap_or_else(|| self.qcs[0].clone());
        if input.u8() == 0xff {
            // A high QC that is not the highest the signers named.
            high_qc = Self::pick(input, &self.qcs).expect("genesis at least");
        }
        TimeoutCert {
            epoch: self.cfg.epoch,
            round,
            high_qc,
            signatures: BoundedVec::new(signatures).expect("≤ n"),
        }
    }

    fn make_proposal(&mut self, input: &mut Input) -> (ReplicaId, ConsensusMessage) {
        let round = self.round(input);
        let mut author = self.cfg.leader(round);
        if input.u8() == 0xff {
            author = input.below(self.n()) as ReplicaId;
        }
        let justify = Self::pick(input, &self.qcs).expect("genesis at least");
        let parent_id = if input.u8() == 0xff {
            Self::pick(input, &self.blocks).map_or(Hash(input.hash()), |b| crypto::block_id(&b))
        } else {
            justify.block_id
        };
        let entries = entries_from(input, 4);
        let block = Block {
            epoch: self.cfg.epoch,
            round,
            author,
            parent_id,
            justify,
            entries: bounded_entries(entries),
        };
        let timeout_cert = if input.bool() {
            match self
                .tcs
                .iter()
                .rev()
                .find(|tc| tc.round.checked_add(1) == Some(round))
            {
                Some(tc) if input.bool() => Some(tc.clone()),
                _ => Self::pick(input, &self.tcs),
            }
        } else {
            None
        };
        let mut signature = self.signers[author as usize].sign(&crypto::proposal_message(
            self.cfg.epoch,
            &crypto::block_id(&block),
        ));
        if input.u8() == 0xff || author == self.me {
            // Peers cannot sign as the replica under test.
            signature.0[0] ^= 1;
        }
        self.learn_block(&block);
        let from = if author == self.me {
            self.other(input)
        } else {
            author
        };
        (
            from,
            ConsensusMessage::Proposal {
                block,
                timeout_cert,
                signature,
            },
        )
    }

    /// A chain of known blocks ending at a chosen one, oldest first.
    fn chain(&self, input: &mut Input) -> Vec<Block> {
        let Some(tip) = Self::pick(input, &self.blocks) else {
            return Vec::new();
        };
        let max = 1 + input.below(8);
        let mut chain = vec![tip];
        while chain.len() < max {
            let parent = chain.last().expect("non-empty").parent_id;
            match self.by_id.get(&parent) {
                Some(b) => chain.push(b.clone()),
                None => break,
            }
        }
        chain.reverse();
        if input.u8() == 0xff {
            chain.reverse();
        }
        chain
    }

    fn step(&mut self, input: &mut Input) {
        match input.u8() % 20 {
            // Arbitrary bytes through the wire decoder.
            0 => {
                let from = input.below(self.n() + 1) as ReplicaId;
                let bytes = input.bytes(600);
                if let Ok(message) = wire::decode::<ConsensusMessage>(bytes) {
                    self.deliver(from, message);
                }
            }
            // Replay something the replica sent, as if from a peer.
            1 => {
                if let Some(message) = Self::pick(input, &self.seen) {
                    let from = input.below(self.n()) as ReplicaId;
                    self.deliver(from, message);
                }
            }
            2 | 3 => {
                let (from, message) = self.make_proposal(input);
                self.deliver(from, message);
            }
            4 | 5 => {
                // Votes from peers for a known block.
                let Some(block) = Self::pick(input, &self.blocks) else {
                    return;
                };
                let id = crypto::block_id(&block);
                let mask = self.signer_mask(input);
                for voter in (0..self.n()).filter(|i| mask & (1 << i) != 0) {
                    let (round, parent_round) = if input.u8() == 0xff {
                        (input.size(), input.size())
                    } else {
                        (block.round, block.justify.round)
                    };
                    let vote = Vote {
                        epoch: self.cfg.epoch,
                        round,
                        block_id: id,
                        parent_round,
                        voter: voter as ReplicaId,
                        signature: self.sign_vote(voter, round, &id, parent_round),
                    };
                    self.deliver(voter as ReplicaId, ConsensusMessage::Vote { vote });
                }
            }
            6 => {
                // A certificate for a known block.
                let Some(block) = Self::pick(input, &self.blocks) else {
                    return;
                };
                let qc = self.make_qc(input, &block);
                self.learn_qc(&qc);
                let high_tc = if input.bool() {
                    Self::pick(input, &self.tcs)
                } else {
                    None
                };
                let from = self.other(input);
                let committed_height = input.size();
                self.deliver(
                    from,
                    ConsensusMessage::Certificates {
                        high_qc: qc,
                        high_tc,
                        committed_height,
                    },
                );
            }
            7 => {
                let sender = self.other(input);
                let round = self.round(input);
                let high_qc = Self::pick(input, &self.qcs).expect("genesis at least");
                let timeout = self.make_timeout(sender, round, high_qc);
                self.deliver(sender, ConsensusMessage::Timeout { timeout });
            }
            8 => {
                // Timeouts for one round from several peers.
                let round = self.round(input);
                let mask = self.signer_mask(input);
                for sender in (0..self.n() as ReplicaId).filter(|i| mask & (1 << i) != 0) {
                    if sender == self.me {
                        continue;
                    }
                    let high_qc = Self::pick(input, &self.qcs).expect("genesis at least");
                    let timeout = self.make_timeout(sender, round, high_qc);
                    self.deliver(sender, ConsensusMessage::Timeout { timeout });
                }
            }
            9 => {
                let round = self.round(input);
                let tc = self.make_tc(input, round);
                self.learn_tc(&tc);
                let from = self.other(input);
                let high_qc = Self::pick(input, &self.qcs).expect("genesis at least");
                let committed_height = input.size();
                self.deliver(
                    from,
                    ConsensusMessage::Certificates {
                        high_qc,
                        high_tc: Some(tc),
                        committed_height,
                    },
                );
            }
            10 => {
                let from = self.other(input);
                let (size, root) = match Self::pick(input, &self.checkpoints) {
                    Some(c) if input.bool() => c,
                    _ => (input.size(), Hash(input.hash())),
                };
                let replica = if input.u8() == 0xff {
                    input.below(self.n()) as ReplicaId
                } else {
                    from
                };
                let note_signature = match Checkpoint::new(ORIGIN, size, root).format() {
                    text if input.u8() != 0xff && replica != self.me => {
                        let sig = self.note_keys[replica as usize]
                            .sign_text(&text)
                            .expect("checkpoint text");
                        Signature64(sig.signature.try_into().expect("64 bytes"))
                    }
                    _ => Signature64([input.u8(); 64]),
                };
                self.deliver(
                    from,
                    ConsensusMessage::CheckpointSignature {
                        size,
                        root,
                        replica,
                        note_signature,
                    },
                );
            }
            11 => {
                let from = self.other(input);
                let from_height = if input.bool() {
                    input.size()
                } else {
                    self.node
                        .replica
                        .committed_height()
                        .saturating_sub(input.u8() as u64 % 8)
                };
                let max_blocks = input.u16();
                self.deliver(
                    from,
                    ConsensusMessage::SyncRequest {
                        from_height,
                        max_blocks,
                    },
                );
            }
            12 => {
                let from = self.other(input);
                let blocks = self.chain(input);
                let commit_qc = match input.u8() % 4 {
                    0 => None,
                    1 => Self::pick(input, &self.qcs),
                    _ => blocks.last().map(|b| self.make_qc(input, &b.clone())),
                };
                self.deliver(
                    from,
                    ConsensusMessage::SyncResponse {
                        blocks: BoundedVec::new(blocks).expect("≤ 8 blocks"),
                        commit_qc,
                    },
                );
            }
            13 => {
                let from = self.other(input);
                let entries = bounded_entries(entries_from(input, 6));
                self.deliver(from, ConsensusMessage::Forward { entries });
            }
            14 => {
                let entries = entries_from(input, 6);
                let now = self.now;
                self.node.replica.submit(now, ClientId([0; 16]), entries);
            }
            15 => {
                // The replica's timer fires (or a spurious early call).
                if let Some(t) = self.node.replica.poll_timeout()
                    && input.u8() != 0xff
                {
                    self.now = self.now.max(t);
                }
                let now = self.now;
                self.node.replica.handle_timeout(now);
            }
            16 | 17 => {
                if input.bool() {
                    self.node.ack_all();
                } else {
                    self.node.ack_one();
                }
            }
            18 => {
                if input.u8().is_multiple_of(4) {
                    self.node.restart(self.now, &mut self.checker);
                }
            }
            _ => {
                self.now += Duration::from_millis(input.u16() as u64);
            }
        }
    }
}
