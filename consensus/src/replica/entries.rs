//! Entries between replicas: forwarding submitted entries, proposals
//! that name entries by leaf hash, and fetching the ones a replica lacks.

use super::*;

impl<R: CryptoRng> Replica<R> {
    /// A proposal by leaf hash: completed from the mempool when every entry
    /// is there (the usual case: entries are forwarded to all replicas when
    /// submitted), else the missing entries are asked of the leader and the
    /// proposal waits for them (in [`Replica::on_forward`]).
    pub(super) fn on_proposal_leaves(
        &mut self,
        from: ReplicaId,
        header: Block,
        leaves: Vec<Hash>,
        tc: Option<TimeoutCert>,
        signature: Signature64,
    ) {
        if !header.entries.is_empty() {
            self.reject(Rejection::Malformed);
            return;
        }
        if !self.proposal_header_current(&header) {
            return;
        }
        let mut entries = Vec::with_capacity(leaves.len());
        let mut missing = DigestMap::default();
        let mut bytes = 0;
        for (i, leaf) in leaves.iter().enumerate() {
            match self.mempool.get(leaf) {
                Some(entry) => {
                    bytes += entry.len();
                    if bytes > MAX_BLOCK_BYTES {
                        self.reject(Rejection::Malformed);
                        return;
                    }
                    entries.push(Some(entry.clone()));
                }
                None => {
                    entries.push(None);
                    if missing.insert(*leaf, i).is_some() {
                        // A block with duplicate entries is invalid.
                        self.reject(Rejection::Malformed);
                        return;
                    }
                }
            }
        }
        if missing.is_empty() {
            let block = with_entries(header, entries);
            self.on_proposal_hashed(from, block, Some(leaves), tc, signature);
            return;
        }
        let id = crypto::block_id_from_header(&header, &leaves);
        if self.blocks.contains_key(&id) {
            self.vote_for_stored(&id, header.round, tc);
            return;
        }
        // An honest leader never proposes a committed entry (nor may anyone
        // vote for one): nothing to fetch.
        if missing.keys().any(|leaf| self.dedup.contains(leaf)) {
            self.reject(Rejection::Malformed);
            return;
        }
        if self
            .pending_leaves
            .iter()
            .any(|p| p.header.author == header.author && p.header.round > header.round)
        {
            self.reject(Rejection::Stale);
            return;
        }
        // Only a proposal its leader signed may make us fetch.
        if !self.committee.verify(
            header.author,
            &crypto::proposal_message(self.cfg.epoch, &id),
            &signature,
        ) {
            self.reject(Rejection::InvalidSignature);
            return;
        }
        self.metrics.proposals_incomplete += 1;
        self.metrics.entries_requested += missing.len() as u64;
        // Ask in block order (a deterministic message for simulation).
        let ask: Vec<Hash> = leaves
            .iter()
            .zip(&entries)
            .filter(|(_, e)| e.is_none())
            .map(|(leaf, _)| *leaf)
            .collect();
        for chunk in ask.chunks(wire::MAX_APPEND_ENTRIES) {
            self.outbox.push(Outgoing {
                to: Target::One(from),
                message: ConsensusMessage::EntryRequest {
                    leaves: BoundedVec::new(chunk.to_vec()).expect("chunked"),
                },
            });
        }
        let pending = PendingProposal {
            header,
            leaves,
            entries,
            missing,
            tc,
            signature,
            from,
        };
        put_per_author(&mut self.pending_leaves, pending, |p| p.header.author);
    }

    /// Answers with the requested entries this replica holds: pending ones
    /// from the mempool, else those in uncommitted blocks. Nothing here
    /// changes safety state, so the answer need not wait for a write.
    pub(super) fn on_entry_request(&mut self, from: ReplicaId, leaves: Vec<Hash>) {
        let mut in_blocks: Option<DigestMap<Hash, (Hash, usize)>> = None;
        let mut found: Vec<Entry> = Vec::new();
        let mut bytes = 0;
        for leaf in leaves {
            let entry = match self.mempool.get(&leaf) {
                Some(entry) => Some(Entry::new(entry.clone()).expect("mempool bounds entries")),
                None => {
                    let blocks = &self.blocks;
                    let index = in_blocks.get_or_insert_with(|| {
                        let mut index = DigestMap::default();
                        for (id, stored) in blocks.iter() {
                            for (i, leaf) in stored.leaves.iter().enumerate() {
                                index.insert(*leaf, (*id, i));
                            }
                        }
                        index
                    });
                    index.get(&leaf).and_then(|(id, i)| {
                        self.blocks.get(id).map(|b| b.block.entries[*i].clone())
                    })
                }
            };
            let Some(entry) = entry else { continue };
            if found.len() == wire::MAX_APPEND_ENTRIES
                || bytes + entry.len() > ENTRY_ANSWER_MAX_BYTES
            {
                self.answer_entries(from, std::mem::take(&mut found));
                bytes = 0;
            }
            bytes += entry.len();
            found.push(entry);
        }
        if !found.is_empty() {
            self.answer_entries(from, found);
        }
    }

    pub(super) fn answer_entries(&mut self, to: ReplicaId, entries: Vec<Entry>) {
        self.metrics.entries_served += entries.len() as u64;
        self.outbox.push(Outgoing {
            to: Target::One(to),
            message: ConsensusMessage::Forward {
                entries: BoundedVec::new(entries).expect("chunked"),
            },
        });
    }

    pub(super) fn on_forward(
        &mut self,
        from: ReplicaId,
        entries: BoundedVec<Entry, { wire::MAX_APPEND_ENTRIES }>,
    ) {
        let mut completed = false;
        for entry in entries.into_inner() {
            let entry = entry.into_inner();
            let leaf = merkle::leaf_hash(&entry);
            for pending in &mut self.pending_leaves {
                if let Some(i) = pending.missing.remove(&leaf) {
                    pending.entries[i] = Some(entry.clone());
                    completed |= pending.missing.is_empty();
                }
            }
            if self.dedup.contains(&leaf) {
                continue;
            }
            if self
                .mempool
                .insert(Submitter::Peer(from), leaf, entry)
                .is_err()
            {
                self.metrics.forwarded_dropped += 1;
            }
        }
        if completed {
            let (done, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending_leaves)
                .into_iter()
                .partition(|p| p.missing.is_empty());
            self.pending_leaves = waiting;
            for p in done {
                let block = with_entries(p.header, p.entries);
                self.on_proposal_hashed(p.from, block, Some(p.leaves), p.tc, p.signature);
            }
        }
        self.arm_timer();
        self.maybe_propose();
    }
}
