//! Checkpoints: signing one after each commit (never two roots for one
//! size), exchanging signatures and assembling quorum notes.

use super::*;

impl<R: RngCore + CryptoRng> Replica<R> {
    /// Signs the checkpoint for the committed tree if that is safe.
    /// Sends this replica's signature on its latest checkpoint again (the
    /// same bytes: Ed25519 signing is deterministic). Signatures sent
    /// while a peer was restarting are lost with its old connection, and a
    /// peer that then caught up by sync would lack a quorum checkpoint for
    /// its size until the next commit.
    pub(super) fn resend_checkpoint_signature(&mut self) {
        if let Some((size, root)) = self.safety.last_signed {
            self.send_checkpoint_signature(size, root);
        }
    }

    /// Signs the checkpoint `(size, root)` and sends the signature to all;
    /// callers decide whether this replica may sign it.
    pub(super) fn send_checkpoint_signature(&mut self, size: u64, root: Hash) -> Signature64 {
        let text = Checkpoint::new(&self.cfg.origin, size, root).format();
        let sig = self
            .note_key
            .sign_text(&text)
            .expect("checkpoint text is a valid note");
        let note_signature = Signature64(sig.signature.try_into().expect("Ed25519 is 64 bytes"));
        self.send(
            Target::All,
            ConsensusMessage::CheckpointSignature {
                size,
                root,
                replica: self.id,
                note_signature,
            },
        );
        note_signature
    }

    pub(super) fn sign_checkpoint(&mut self) {
        let (size, root) = (self.tree.size(), self.tree.root());
        if size == 0 {
            return;
        }
        if let Some(last) = self.safety.last_signed {
            if size < last.0 || (size == last.0 && root == last.1) {
                return;
            }
            if size == last.0 {
                self.metrics.checkpoints_refused += 1;
                self.checkpoint_events.push(CheckpointEvent::Refused {
                    size,
                    root,
                    last_signed: last,
                });
                return;
            }
        }
        self.safety.last_signed = Some((size, root));
        self.dirty = true;
        self.metrics.checkpoints_signed += 1;
        self.checkpoint_events
            .push(CheckpointEvent::Signed { size, root });
        // Sent only after `last_signed` is durable: messages wait for the
        // step's write.
        let signature = self.send_checkpoint_signature(size, root);
        let me = self.id;
        self.add_checkpoint_signature(size, root, me, signature);
    }

    pub(super) fn on_checkpoint_signature(
        &mut self,
        from: ReplicaId,
        size: u64,
        root: Hash,
        replica: ReplicaId,
        signature: Signature64,
    ) {
        if replica != from || size == 0 {
            self.reject(Rejection::Malformed);
            return;
        }
        if size <= self.quorum_size {
            // At the quorum size: most likely a peer's periodic re-send.
            if size < self.quorum_size {
                self.reject(Rejection::Stale);
            }
            return;
        }
        // Bound what is kept: sizes up to far beyond our own tree would be
        // unbounded state.
        if self.checkpoint_sigs.len() >= 4 * self.cfg.n() + 64
            && !self.checkpoint_sigs.contains_key(&(size, root))
        {
            self.reject(Rejection::Stale);
            return;
        }
        let text = Checkpoint::new(&self.cfg.origin, size, root).format();
        if self.note_verifiers[replica as usize]
            .verify(&text, &signature.0)
            .is_err()
        {
            self.reject(Rejection::InvalidSignature);
            return;
        }
        self.add_checkpoint_signature(size, root, replica, signature);
    }

    pub(super) fn add_checkpoint_signature(
        &mut self,
        size: u64,
        root: Hash,
        replica: ReplicaId,
        signature: Signature64,
    ) {
        let sigs = self.checkpoint_sigs.entry((size, root)).or_default();
        sigs.insert(replica, signature);
        if sigs.len() < self.cfg.quorum() || size <= self.quorum_size {
            return;
        }
        let text = Checkpoint::new(&self.cfg.origin, size, root).format();
        let mut note = Note::new(&text).expect("checkpoint text is a valid note");
        for (r, s) in sigs.iter() {
            note.add_signature(NoteSignature {
                name: self.cfg.origin.clone(),
                key_id: self.note_verifiers[*r as usize].key_id(),
                signature: s.0.to_vec(),
            })
            .expect("n ≤ MAX_CLUSTER_REPLICAS signatures fit a note");
        }
        self.quorum_size = size;
        self.checkpoint_sigs = self.checkpoint_sigs.split_off(&(size + 1, Hash([0; 32])));
        self.checkpoint_events
            .push(CheckpointEvent::Quorum { size, note });
    }
}
