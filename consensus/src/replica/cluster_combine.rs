//! Combining a signing set's shares into the cluster signature. Every
//! replica combines a set once it holds all its shares. (Letting one
//! member combine and send the result to the others saved their
//! aggregations but added a hop: on the 2-core reference machine the
//! signature then trailed the quorum checkpoint by more, so every
//! replica combines.)

use super::threshold_signing::{Combined, ReceivedShare};
use super::*;
use crate::threshold::{self, CombineError};
use bftlog_spec::wire::Element32;
use frost_ed25519 as frost;

impl<R: CryptoRng> Replica<R> {
    /// Combines the set `received` names, if every member's share for it
    /// is here.
    pub(super) fn combine_set(&mut self, height: u64, received: &ReceivedShare) {
        let signing = self.threshold.as_mut().expect("callers checked");
        if signing.combined.contains_key(&height) {
            return;
        }
        let same_set = |r: &ReceivedShare| {
            r.size == received.size && r.root == received.root && r.signers == received.signers
        };
        let Some(at_height) = signing.shares.get(&height) else {
            return;
        };
        let group: Option<BTreeMap<ReplicaId, Element32>> = received
            .signers
            .iter()
            .map(|s| {
                at_height.get(&s.replica).and_then(|shares| {
                    shares
                        .iter()
                        .find(|r| same_set(r))
                        .map(|r| (s.replica, r.share))
                })
            })
            .collect();
        let Some(group) = group else {
            return;
        };
        let (size, root) = (received.size, received.root);
        let text = Checkpoint::new(&self.cfg.origin, size, root).format();
        // The set's commitments, decoded: those this replica holds (the
        // same bytes) as they are, others decoded now.
        let decoded: Option<Vec<(ReplicaId, frost::round1::SigningCommitments)>> = received
            .signers
            .iter()
            .map(|s| {
                let known = signing.commitments[s.replica as usize]
                    .get(&height)
                    .filter(|c| c.wire == s.commitment);
                match known {
                    Some(c) => c.decoded(),
                    None => threshold::from_wire(&s.commitment).ok(),
                }
                .map(|d| (s.replica, d))
            })
            .collect();
        let combined = match decoded {
            Some(decoded) => threshold::combine(
                &signing.share.public,
                &signing.cluster_key,
                &threshold::signing_package(decoded, text.as_bytes()),
                &group,
                text.as_bytes(),
            ),
            // A commitment that is not a point: no honest member signed
            // for this set.
            None => Err(CombineError::Malformed),
        };
        match combined {
            Ok(signature) => {
                self.metrics.cluster_signatures += 1;
                self.cluster_signature_formed(height, size, root, signature);
            }
            Err(CombineError::Culprits(culprits)) => {
                // The bad shares stay: a culprit's next share for this
                // set is then equivocation, not another aggregation
                // (each costs several scalar multiplications).
                for culprit in culprits {
                    self.metrics.bad_threshold_shares += 1;
                    self.reject_from(culprit, Rejection::InvalidSignature);
                    self.exclude_from_recovery(height, culprit);
                }
            }
            Err(CombineError::Malformed) => {
                // Valid shares of valid commitments that still do not make
                // a signature: the set is not what its members signed.
                let signing = self.threshold.as_mut().expect("callers checked");
                if let Some(at_height) = signing.shares.get_mut(&height) {
                    for s in &received.signers {
                        if let Some(shares) = at_height.get_mut(&s.replica) {
                            shares.retain(|r| !same_set(r));
                        }
                    }
                }
                self.reject(Rejection::Malformed);
            }
        }
    }

    /// Combines each set of `height` whose shares are all here, until the
    /// signature forms. Sets with a member named bad are not tried again
    /// (their shares stay, so each try would repeat the aggregation).
    pub(super) fn combine_complete_sets(&mut self, height: u64) {
        let Some(sets) = self.threshold.as_ref().and_then(|s| {
            let at_height = s.shares.get(&height)?;
            let unsigned = s.unsigned.get(&height)?;
            let mut sets: Vec<ReceivedShare> = Vec::new();
            for share in at_height.values().flatten() {
                if share
                    .signers
                    .iter()
                    .any(|m| unsigned.is_excluded(m.replica))
                {
                    continue;
                }
                if !sets.iter().any(|k| {
                    k.size == share.size && k.root == share.root && k.signers == share.signers
                }) {
                    sets.push(share.clone());
                }
            }
            Some(sets)
        }) else {
            return;
        };
        for set in sets {
            self.combine_set(height, &set);
            if self
                .threshold
                .as_ref()
                .is_some_and(|s| s.combined.contains_key(&height))
            {
                return;
            }
        }
    }

    /// A cluster signature formed for the checkpoint of `height` (combined
    /// here, or received and verified): no more work on the height, and
    /// the quorum note of that checkpoint carries it.
    pub(super) fn cluster_signature_formed(
        &mut self,
        height: u64,
        size: u64,
        root: Hash,
        signature: Signature64,
    ) {
        let signing = self.threshold.as_mut().expect("callers checked");
        signing.combined.insert(
            height,
            Combined {
                size,
                root,
                signature,
                sent_to: 0,
            },
        );
        signing.shares.remove(&height);
        signing.unsigned.remove(&height);
        let line = self.checkpoints.cluster_line(size, root, signature);
        self.checkpoint_events
            .push(CheckpointEvent::ClusterSigned { size, root, line });
    }
}
