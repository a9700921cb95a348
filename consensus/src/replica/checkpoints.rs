//! Checkpoints: signing one after each commit (never two roots for one
//! size), exchanging signatures and assembling quorum notes.
//!
//! [`CheckpointQuorum`] owns the signature table and the note keys; the
//! replica decides what it may sign (its durable `last_signed` record)
//! and sends what the table produces.

use super::*;

/// Checkpoint signatures kept per signer for sizes above the latest
/// quorum note. Honest replicas sign increasing sizes, and a quorum forms
/// at a size that 2f+1 of them signed, normally within a few commits; a
/// signer's oldest row goes when it has this many, so a faulty signer's
/// rows for sizes no one else signs only ever push out its own.
pub const CHECKPOINT_ROWS_PER_SIGNER: usize = 64;

/// The replicas' checkpoint signatures, collected per signer until a
/// quorum of them on one (size, root) makes a note.
///
/// A peer's signature is verified only once its row has a quorum of
/// signers (like votes), so a peer flooding signatures for sizes no one
/// else signs costs a map insert each, not a signature check; an invalid
/// signature found then is dropped and its signer blamed.
pub(super) struct CheckpointQuorum {
    origin: String,
    quorum: usize,
    note_key: SignerKey,
    verifiers: Vec<VerifierKey>,
    /// Per replica id: (size, root) → its signature and whether it was
    /// verified, at most [`CHECKPOINT_ROWS_PER_SIGNER`] rows, all above
    /// `quorum_size`.
    by_signer: Vec<BTreeMap<(u64, Hash), (Signature64, bool)>>,
    /// The size of the latest quorum note: smaller sizes are of no use.
    quorum_size: u64,
    /// The cluster key as a note verifier, when the cluster has one.
    cluster_verifier: Option<VerifierKey>,
    /// Cluster signatures for sizes above `quorum_size`, waiting for their
    /// quorum note; at most [`CHECKPOINT_ROWS_PER_SIGNER`], the smallest
    /// going first.
    cluster_signatures: BTreeMap<u64, (Hash, Signature64)>,
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
        let cluster_verifier = match &cfg.cluster_share {
            Some(share) => {
                let key = share
                    .verifying_key()
                    .map_err(|e| SetupError::ClusterKey(e.to_string()))?;
                Some(
                    VerifierKey::new(&cfg.origin, KeyType::Ed25519, key)
                        .map_err(|e| SetupError::Origin(e.to_string()))?,
                )
            }
            None => None,
        };
        Ok(CheckpointQuorum {
            cluster_verifier,
            cluster_signatures: BTreeMap::new(),
            origin: cfg.origin.clone(),
            quorum: cfg.quorum(),
            note_key,
            by_signer: vec![BTreeMap::new(); verifiers.len()],
            verifiers,
            quorum_size: 0,
        })
    }

    /// The most rows any one signer has (for [`crate::Footprint`]).
    pub(super) fn most_rows_of_one_signer(&self) -> usize {
        self.by_signer.iter().map(BTreeMap::len).max().unwrap_or(0)
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

    /// Keeps a peer's signature (verified once its row has a quorum).
    /// Also returns the signers whose signatures that check found invalid
    /// (they were dropped).
    pub(super) fn accept(
        &mut self,
        replica: ReplicaId,
        size: u64,
        root: Hash,
        signature: Signature64,
    ) -> Result<(Accepted, Vec<ReplicaId>), Rejection> {
        if size == 0 || replica as usize >= self.verifiers.len() {
            return Err(Rejection::Malformed);
        }
        if size < self.quorum_size {
            return Err(Rejection::Stale);
        }
        if size == self.quorum_size {
            return Ok((Accepted::AtQuorumSize, Vec::new()));
        }
        let rows = &self.by_signer[replica as usize];
        if rows
            .get(&(size, root))
            .is_some_and(|(s, _)| *s == signature)
        {
            // A re-send: known already.
            return Ok((Accepted::Kept, Vec::new()));
        }
        // Full, and older than all the signer's rows: it would be the
        // row to go.
        if rows.len() >= CHECKPOINT_ROWS_PER_SIGNER
            && rows
                .first_key_value()
                .is_some_and(|(first, _)| (size, root) < *first)
        {
            return Err(Rejection::Stale);
        }
        if bug(Bug::SharedSignatureTable) && self.shared_table_full(size, root) {
            return Err(Rejection::Stale);
        }
        Ok(self.insert(replica, size, root, signature, false))
    }

    /// The known bug [`Bug::SharedSignatureTable`]: one bound on the rows
    /// of all signers together.
    fn shared_table_full(&self, size: u64, root: Hash) -> bool {
        let rows: std::collections::BTreeSet<&(u64, Hash)> =
            self.by_signer.iter().flat_map(BTreeMap::keys).collect();
        rows.len() >= 4 * self.verifiers.len() + 64 && !rows.contains(&(size, root))
    }

    /// Keeps a signature already known to be valid (this replica's own).
    pub(super) fn add(
        &mut self,
        replica: ReplicaId,
        size: u64,
        root: Hash,
        signature: Signature64,
    ) -> (Accepted, Vec<ReplicaId>) {
        self.insert(replica, size, root, signature, true)
    }

    /// Keeps a signature; once its row has a quorum of signers, verifies
    /// those not verified yet, drops the invalid ones (returned), and
    /// makes the note if a quorum of valid ones remains.
    fn insert(
        &mut self,
        replica: ReplicaId,
        size: u64,
        root: Hash,
        signature: Signature64,
        verified: bool,
    ) -> (Accepted, Vec<ReplicaId>) {
        let key = (size, root);
        let rows = &mut self.by_signer[replica as usize];
        rows.insert(key, (signature, verified));
        if rows.len() > CHECKPOINT_ROWS_PER_SIGNER && !bug(Bug::SharedSignatureTable) {
            rows.pop_first();
        }
        let count = self
            .by_signer
            .iter()
            .filter(|rows| rows.contains_key(&key))
            .count();
        if count < self.quorum || size <= self.quorum_size {
            return (Accepted::Kept, Vec::new());
        }
        let text = Checkpoint::new(&self.origin, size, root).format();
        let mut invalid = Vec::new();
        for (r, rows) in self.by_signer.iter_mut().enumerate() {
            if let Some((signature, verified)) = rows.get_mut(&key) {
                if *verified {
                    continue;
                }
                if self.verifiers[r].verify(&text, &signature.0).is_ok() {
                    *verified = true;
                } else {
                    rows.remove(&key);
                    invalid.push(r as ReplicaId);
                }
            }
        }
        let signers: Vec<(ReplicaId, Signature64)> = self
            .by_signer
            .iter()
            .enumerate()
            .filter_map(|(r, rows)| rows.get(&key).map(|(s, _)| (r as ReplicaId, *s)))
            .collect();
        if signers.len() < self.quorum {
            return (Accepted::Kept, invalid);
        }
        let mut note = Note::new(&text).expect("checkpoint text is a valid note");
        for (r, s) in signers {
            note.add_signature(NoteSignature {
                name: self.origin.clone(),
                key_id: self.verifiers[r as usize].key_id(),
                signature: s.0.to_vec(),
            })
            .expect("n ≤ MAX_CLUSTER_REPLICAS signatures fit a note");
        }
        self.quorum_size = size;
        for rows in &mut self.by_signer {
            *rows = rows.split_off(&(size + 1, Hash([0; 32])));
        }
        match self.cluster_signatures.remove(&size) {
            Some((r, signature)) if r == root => self.add_cluster_line(&mut note, signature),
            _ => {}
        }
        self.cluster_signatures = self.cluster_signatures.split_off(&(size + 1));
        (Accepted::Quorum { size, note }, invalid)
    }

    /// The note line of the cluster signature `signature` (already
    /// verified) on `(size, root)`, which it also keeps for the quorum
    /// note of that size if that has not formed yet.
    pub(super) fn cluster_line(
        &mut self,
        size: u64,
        root: Hash,
        signature: Signature64,
    ) -> NoteSignature {
        if size > self.quorum_size {
            self.cluster_signatures.insert(size, (root, signature));
            if self.cluster_signatures.len() > CHECKPOINT_ROWS_PER_SIGNER {
                self.cluster_signatures.pop_first();
            }
        }
        self.line_of(signature)
    }

    fn add_cluster_line(&self, note: &mut Note, signature: Signature64) {
        note.add_signature(self.line_of(signature))
            .expect("n + 1 ≤ MAX_CLUSTER_REPLICAS + 1 signatures fit a note");
    }

    fn line_of(&self, signature: Signature64) -> NoteSignature {
        let verifier = self
            .cluster_verifier
            .as_ref()
            .expect("cluster signatures exist only with a cluster key");
        NoteSignature {
            name: self.origin.clone(),
            key_id: verifier.key_id(),
            signature: signature.0.to_vec(),
        }
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

    /// Reports a quorum note, and blames the signers whose signatures the
    /// check that preceded it found invalid.
    pub(super) fn report_quorum(&mut self, (accepted, invalid): (Accepted, Vec<ReplicaId>)) {
        for signer in invalid {
            self.reject_from(signer, Rejection::InvalidSignature);
        }
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
            (Accepted::Kept, _)
        ));
        assert!(matches!(
            table.accept(0, 0, root, tables[0].sign(0, root)),
            Err(Rejection::Malformed)
        ));
        // Replica 1's signature presented as replica 2's: kept unchecked
        // until its row has a quorum, then found invalid, dropped and
        // blamed; no note from two valid signatures.
        assert!(matches!(
            table.accept(2, 5, root, tables[1].sign(5, root)),
            Ok((Accepted::Kept, ref invalid)) if invalid.is_empty()
        ));
        assert!(matches!(
            table.accept(1, 5, root, tables[1].sign(5, root)),
            Ok((Accepted::Kept, ref invalid)) if invalid == &[2]
        ));
        let Ok((Accepted::Quorum { size, note }, invalid)) =
            table.accept(2, 5, root, tables[2].sign(5, root))
        else {
            panic!("three valid signatures of four make a quorum");
        };
        assert!(invalid.is_empty());
        assert_eq!(size, 5);
        assert_eq!(note.signatures().len(), 3);
        let text = Checkpoint::new("example.com/log", 5, root).format();
        assert_eq!(note.text(), text);
        // A re-send at the quorum size is expected; below it, stale.
        assert!(matches!(
            table.accept(3, 5, root, tables[3].sign(5, root)),
            Ok((Accepted::AtQuorumSize, _))
        ));
        assert!(matches!(
            table.accept(3, 4, root, tables[3].sign(4, root)),
            Err(Rejection::Stale)
        ));
    }

    /// A faulty signer's rows for sizes no one else signs must not crowd
    /// out honest signatures. With one bound for all signers (the known
    /// bug) they did: the honest replicas' quorum never formed.
    #[test]
    fn a_signer_flooding_sizes_evicts_only_its_own_rows() {
        let (keys, cfg) = keys_and_config();
        let signers: Vec<CheckpointQuorum> = keys
            .iter()
            .map(|k| CheckpointQuorum::new(&cfg, k).unwrap())
            .collect();
        let root = Hash([7; 32]);
        let run = |bug_on: bool| {
            crate::bugs::set(bug_on.then_some(Bug::SharedSignatureTable));
            let mut table = CheckpointQuorum::new(&cfg, &keys[0]).unwrap();
            for size in 1_000..1_500 {
                let _ = table.accept(3, size, root, signers[3].sign(size, root));
            }
            assert!(table.most_rows_of_one_signer() <= CHECKPOINT_ROWS_PER_SIGNER || bug_on);
            let mut quorum = None;
            for r in 0..3u16 {
                if let Ok((Accepted::Quorum { size, .. }, _)) =
                    table.accept(r as ReplicaId, 50, root, signers[r as usize].sign(50, root))
                {
                    quorum = Some(size);
                }
            }
            crate::bugs::set(None);
            quorum
        };
        assert_eq!(run(false), Some(50));
        assert_eq!(run(true), None, "the known bug loses the honest quorum");
        // At its limit, a signer's row older than all it holds is refused
        // before any signature check.
        let mut table = CheckpointQuorum::new(&cfg, &keys[0]).unwrap();
        for size in 100..100 + CHECKPOINT_ROWS_PER_SIGNER as u64 {
            assert!(matches!(
                table.accept(3, size, root, signers[3].sign(size, root)),
                Ok((Accepted::Kept, _))
            ));
        }
        assert!(matches!(
            table.accept(3, 99, root, Signature64([0; 64])),
            Err(Rejection::Stale)
        ));
    }
}
