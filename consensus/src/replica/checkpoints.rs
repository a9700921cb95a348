//! Checkpoints: signing one after each commit (never two roots for one
//! size), exchanging signatures and assembling quorum notes.
//!
//! [`CheckpointQuorum`] owns the signature table and the note keys; the
//! replica decides what it may sign (its durable `last_signed` record)
//! and sends what the table produces.

use super::*;

/// The replicas' checkpoint signatures, collected per (size, root) until
/// a quorum of them makes a note.
pub(super) struct CheckpointQuorum {
    origin: String,
    quorum: usize,
    /// Most (size, root) rows kept: sizes far beyond this replica's tree
    /// would otherwise be unbounded state.
    max_rows: usize,
    note_key: SignerKey,
    verifiers: Vec<VerifierKey>,
    signatures: BTreeMap<(u64, Hash), BTreeMap<ReplicaId, Signature64>>,
    /// The size of the latest quorum note: smaller sizes are of no use.
    quorum_size: u64,
}

/// What became of a peer's checkpoint signature.
pub(super) enum Accepted {
    /// Kept; no new quorum yet.
    Kept,
    /// For the size of the latest quorum note: most likely a peer's
    /// periodic re-send, nothing to do.
    AtQuorumSize,
    /// It completed a quorum note for `size`.
    Quorum { size: u64, note: Note },
}

impl CheckpointQuorum {
    pub(super) fn new(cfg: &Config, key: &ed25519_dalek::SigningKey) -> Result<Self, SetupError> {
        let note_key = SignerKey::new(&cfg.origin, KeyType::Ed25519, key.clone())
            .map_err(|e| SetupError::Origin(e.to_string()))?;
        let verifiers = cfg
            .replicas
            .iter()
            .map(|k| VerifierKey::new(&cfg.origin, KeyType::Ed25519, *k))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| SetupError::Origin(e.to_string()))?;
        Ok(CheckpointQuorum {
            origin: cfg.origin.clone(),
            quorum: cfg.quorum(),
            max_rows: 4 * cfg.n() + 64,
            note_key,
            verifiers,
            signatures: BTreeMap::new(),
            quorum_size: 0,
        })
    }

    /// This replica's note signature on the checkpoint `(size, root)`
    /// (deterministic: signing again gives the same bytes).
    pub(super) fn sign(&self, size: u64, root: Hash) -> Signature64 {
        let text = Checkpoint::new(&self.origin, size, root).format();
        let sig = self
            .note_key
            .sign_text(&text)
            .expect("checkpoint text is a valid note");
        Signature64(sig.signature.try_into().expect("Ed25519 is 64 bytes"))
    }

    /// Checks a peer's signature and keeps it.
    pub(super) fn accept(
        &mut self,
        replica: ReplicaId,
        size: u64,
        root: Hash,
        signature: Signature64,
    ) -> Result<Accepted, Rejection> {
        if size == 0 || replica as usize >= self.verifiers.len() {
            return Err(Rejection::Malformed);
        }
        if size < self.quorum_size {
            return Err(Rejection::Stale);
        }
        if size == self.quorum_size {
            return Ok(Accepted::AtQuorumSize);
        }
        if self.signatures.len() >= self.max_rows && !self.signatures.contains_key(&(size, root)) {
            return Err(Rejection::Stale);
        }
        let text = Checkpoint::new(&self.origin, size, root).format();
        if self.verifiers[replica as usize]
            .verify(&text, &signature.0)
            .is_err()
        {
            return Err(Rejection::InvalidSignature);
        }
        Ok(self.add(replica, size, root, signature))
    }

    /// Keeps a signature already known to be valid (this replica's own).
    pub(super) fn add(
        &mut self,
        replica: ReplicaId,
        size: u64,
        root: Hash,
        signature: Signature64,
    ) -> Accepted {
        let sigs = self.signatures.entry((size, root)).or_default();
        sigs.insert(replica, signature);
        if sigs.len() < self.quorum || size <= self.quorum_size {
            return Accepted::Kept;
        }
        let text = Checkpoint::new(&self.origin, size, root).format();
        let mut note = Note::new(&text).expect("checkpoint text is a valid note");
        for (r, s) in sigs.iter() {
            note.add_signature(NoteSignature {
                name: self.origin.clone(),
                key_id: self.verifiers[*r as usize].key_id(),
                signature: s.0.to_vec(),
            })
            .expect("n ≤ MAX_CLUSTER_REPLICAS signatures fit a note");
        }
        self.quorum_size = size;
        self.signatures = self.signatures.split_off(&(size + 1, Hash([0; 32])));
        Accepted::Quorum { size, note }
    }
}

impl<R: CryptoRng> Replica<R> {
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
    fn send_checkpoint_signature(&mut self, size: u64, root: Hash) -> Signature64 {
        let note_signature = self.checkpoints.sign(size, root);
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

    /// Signs the checkpoint for the committed tree if that is safe.
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
        let added = self.checkpoints.add(self.id, size, root, signature);
        self.report_quorum(added);
    }

    pub(super) fn on_checkpoint_signature(
        &mut self,
        from: ReplicaId,
        size: u64,
        root: Hash,
        replica: ReplicaId,
        signature: Signature64,
    ) {
        if replica != from {
            self.reject(Rejection::Malformed);
            return;
        }
        match self.checkpoints.accept(replica, size, root, signature) {
            Ok(accepted) => self.report_quorum(accepted),
            Err(reason) => self.reject(reason),
        }
    }

    fn report_quorum(&mut self, accepted: Accepted) {
        if let Accepted::Quorum { size, note } = accepted {
            self.checkpoint_events
                .push(CheckpointEvent::Quorum { size, note });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys_and_config() -> (Vec<ed25519_dalek::SigningKey>, Config) {
        let keys: Vec<ed25519_dalek::SigningKey> = (1..=4u8)
            .map(|i| ed25519_dalek::SigningKey::from_bytes(&[i; 32]))
            .collect();
        let cfg = Config::new(
            1,
            "example.com/log",
            keys.iter().map(|k| k.verifying_key()).collect(),
        );
        (keys, cfg)
    }

    #[test]
    fn a_quorum_of_valid_signatures_makes_one_note_and_older_sizes_are_stale() {
        let (keys, cfg) = keys_and_config();
        let tables: Vec<CheckpointQuorum> = keys
            .iter()
            .map(|k| CheckpointQuorum::new(&cfg, k).unwrap())
            .collect();
        let mut table = CheckpointQuorum::new(&cfg, &keys[0]).unwrap();
        let root = Hash([9; 32]);
        assert!(matches!(
            table.add(0, 5, root, table.sign(5, root)),
            Accepted::Kept
        ));
        // Replica 1's signature presented as replica 2's: refused.
        assert!(matches!(
            table.accept(2, 5, root, tables[1].sign(5, root)),
            Err(Rejection::InvalidSignature)
        ));
        assert!(matches!(
            table.accept(0, 0, root, tables[0].sign(0, root)),
            Err(Rejection::Malformed)
        ));
        assert!(matches!(
            table.accept(1, 5, root, tables[1].sign(5, root)),
            Ok(Accepted::Kept)
        ));
        let Ok(Accepted::Quorum { size, note }) = table.accept(2, 5, root, tables[2].sign(5, root))
        else {
            panic!("three of four signatures make a quorum");
        };
        assert_eq!(size, 5);
        assert_eq!(note.signatures().len(), 3);
        let text = Checkpoint::new("example.com/log", 5, root).format();
        assert_eq!(note.text(), text);
        // A re-send at the quorum size is expected; below it, stale.
        assert!(matches!(
            table.accept(3, 5, root, tables[3].sign(5, root)),
            Ok(Accepted::AtQuorumSize)
        ));
        assert!(matches!(
            table.accept(3, 4, root, tables[3].sign(4, root)),
            Err(Rejection::Stale)
        ));
    }
}
