//! The cluster key's signing primitives: one replica's share of the
//! FROST(Ed25519, SHA-512) cluster key (RFC 9591, through the Zcash
//! Foundation's `frost-ed25519`), its nonces, signing sets, signature
//! shares and their combination. The protocol that uses them (when a
//! replica signs, what it persists first, what it sends) is in
//! `replica/threshold_signing.rs` and spec/consensus.md, "The cluster
//! signature".
//!
//! Nothing here keeps state between calls; the replica owns it.

use std::collections::BTreeMap;
use std::fmt;

use bftlog_spec::wire::{Element32, NonceCommitment, ReplicaId, Signature64};
use frost_ed25519 as frost;
use zeroize::Zeroizing;

/// Heights of nonces a replica generates at once, and how far ahead of
/// its committed height it keeps them: it publishes the next batch once
/// fewer than this many heights ahead remain. The default and the
/// largest `Config::cluster_nonce_batch_heights`.
pub const NONCE_BATCH_HEIGHTS: u64 = 64;

/// Heights beyond its committed height for which a replica keeps a peer's
/// commitments: a peer ahead publishes further, but no honest peer more
/// than two batches ahead of its own commits, and one this far ahead of
/// this replica will re-send them at a status interval.
pub const COMMITMENTS_AHEAD_HEIGHTS: u64 = 4 * NONCE_BATCH_HEIGHTS;

/// Heights below its committed height for which a replica keeps shares
/// and commitments: a signer slower by more than this is no help.
pub const THRESHOLD_LAG_HEIGHTS: u64 = 64;

/// Heights below its committed height for which a replica keeps an
/// unsigned checkpoint (and its recovery's shares) before giving its
/// cluster signature up: recovery starts half a second after a commit
/// and its stages last seconds, while a loaded cluster commits a hundred
/// heights or more a second.
pub const RECOVERY_WINDOW_HEIGHTS: u64 = 1024;

/// One replica's share of the cluster key, with the cluster's public
/// package (every replica's verifying share, which a combiner needs to
/// name the signer of a bad share).
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterShare {
    pub key_package: frost::keys::KeyPackage,
    pub public: frost::keys::PublicKeyPackage,
}

impl fmt::Debug for ClusterShare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterShare")
            .field("identifier", self.key_package.identifier())
            .field("signing_share", &"<redacted>")
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterShareError {
    #[error("FROST: {0}")]
    Frost(#[from] frost::Error),
    #[error("the cluster key is not a usable Ed25519 key: {0}")]
    Key(String),
    #[error("the share is replica {found}'s, not replica {expected}'s")]
    WrongReplica { expected: ReplicaId, found: String },
    #[error("the share needs {found} signers; a cluster of {n} needs {expected}")]
    WrongThreshold {
        n: usize,
        expected: usize,
        found: u16,
    },
}

impl ClusterShare {
    /// The cluster key as an Ed25519 key.
    pub fn verifying_key(&self) -> Result<ed25519_dalek::VerifyingKey, ClusterShareError> {
        cluster_key_of(&self.public)
    }

    /// Checks that this is replica `id`'s share of a key that `quorum`
    /// of `n` replicas sign with.
    pub fn check_for(
        &self,
        id: ReplicaId,
        n: usize,
        quorum: usize,
    ) -> Result<(), ClusterShareError> {
        if *self.key_package.identifier() != identifier(id) {
            return Err(ClusterShareError::WrongReplica {
                expected: id,
                found: format!("{:?}", self.key_package.identifier()),
            });
        }
        let threshold = *self.key_package.min_signers();
        if threshold as usize != quorum || self.public.verifying_shares().len() != n {
            return Err(ClusterShareError::WrongThreshold {
                n,
                expected: quorum,
                found: threshold,
            });
        }
        self.verifying_key().map(|_| ())
    }
}

/// The cluster key of a public package, as an Ed25519 key.
pub fn cluster_key_of(
    public: &frost::keys::PublicKeyPackage,
) -> Result<ed25519_dalek::VerifyingKey, ClusterShareError> {
    let bytes = public.verifying_key().serialize()?;
    let bytes: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| ClusterShareError::Key(format!("{} bytes, not 32", bytes.len())))?;
    ed25519_dalek::VerifyingKey::from_bytes(&bytes)
        .map_err(|e| ClusterShareError::Key(e.to_string()))
}

/// Replica `id`'s FROST identifier: `id + 1` (identifiers are nonzero).
pub fn identifier(id: ReplicaId) -> frost::Identifier {
    frost::Identifier::try_from(id + 1).expect("id + 1 is nonzero and fits a u16")
}

/// The replica whose identifier is `identifier`, if any of `n` is.
pub fn replica_of(identifier: &frost::Identifier, n: usize) -> Option<ReplicaId> {
    (0..n as ReplicaId).find(|id| self::identifier(*id) == *identifier)
}

/// The core's randomness (rand_core 0.10) as the rand_core 0.6 source
/// `frost-ed25519` takes.
pub(crate) struct FrostRng<'a, R>(pub &'a mut R);

impl<R: rand_core::CryptoRng> rand_core06::RngCore for FrostRng<'_, R> {
    fn next_u32(&mut self) -> u32 {
        self.0.next_u32()
    }
    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.0.fill_bytes(dest)
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core06::Error> {
        self.0.fill_bytes(dest);
        Ok(())
    }
}

impl<R: rand_core::CryptoRng> rand_core06::CryptoRng for FrostRng<'_, R> {}

/// A nonce pair's secret as stored: `frost-ed25519`'s serialisation of
/// its `SigningNonces`. Wiped when dropped; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct NonceSecret(Zeroizing<Vec<u8>>);

impl fmt::Debug for NonceSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NonceSecret(<redacted>)")
    }
}

impl NonceSecret {
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        NonceSecret(Zeroizing::new(bytes))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub(crate) fn of(nonces: &frost::round1::SigningNonces) -> Self {
        NonceSecret(Zeroizing::new(
            nonces.serialize().expect("nonces serialise"),
        ))
    }

    pub(crate) fn nonces(&self) -> Result<frost::round1::SigningNonces, frost::Error> {
        frost::round1::SigningNonces::deserialize(&self.0)
    }
}

/// Fresh nonces for the checkpoints of `count` heights.
pub(crate) fn fresh_nonces<R: rand_core::CryptoRng>(
    share: &ClusterShare,
    rng: &mut R,
    count: u64,
) -> Vec<frost::round1::SigningNonces> {
    let mut rng = FrostRng(rng);
    (0..count)
        .map(|_| frost::round1::SigningNonces::new(share.key_package.signing_share(), &mut rng))
        .collect()
}

/// A commitment as it travels.
pub(crate) fn to_wire(commitments: &frost::round1::SigningCommitments) -> NonceCommitment {
    let element = |c: &frost::round1::NonceCommitment| {
        Element32(
            c.serialize()
                .expect("a commitment serialises")
                .try_into()
                .expect("an Ed25519 point is 32 bytes"),
        )
    };
    NonceCommitment {
        hiding: element(commitments.hiding()),
        binding: element(commitments.binding()),
    }
}

/// A commitment from the wire, if both halves are valid points.
pub(crate) fn from_wire(
    commitment: &NonceCommitment,
) -> Result<frost::round1::SigningCommitments, frost::Error> {
    Ok(frost::round1::SigningCommitments::new(
        frost::round1::NonceCommitment::deserialize(&commitment.hiding.0)?,
        frost::round1::NonceCommitment::deserialize(&commitment.binding.0)?,
    ))
}

/// The signing set of the checkpoint of a height: `quorum` replicas, the
/// first active ones in round-robin order from `height mod n`, then
/// inactive ones if too few are active. `active[id]` says whether the
/// committed block at that height shows replica `id` active (its author
/// or a signer of the certificate it carries), so every replica holding
/// the block computes the same set, and a crashed replica drops out of it
/// as it drops out of certificates.
pub fn signing_set(height: u64, quorum: usize, active: &[bool]) -> Vec<ReplicaId> {
    let n = active.len();
    let first = (height % n as u64) as usize;
    let order = (0..n).map(|k| (first + k) % n);
    let mut set: Vec<ReplicaId> = order
        .clone()
        .filter(|id| active[*id])
        .take(quorum)
        .map(|id| id as ReplicaId)
        .collect();
    for id in order.filter(|id| !active[*id]) {
        if set.len() >= quorum {
            break;
        }
        set.push(id as ReplicaId);
    }
    set.sort_unstable();
    set
}

/// Why shares did not combine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CombineError {
    /// These signers' shares (or commitments) are invalid.
    Culprits(Vec<ReplicaId>),
    /// Not a valid set or share encoding; nobody in particular to blame.
    Malformed,
}

/// The package every member of a signing set signs for `message`, from
/// each member's commitment (already decoded: decoding checks a point's
/// torsion, which costs a scalar multiplication, so it is done once).
pub(crate) fn signing_package(
    commitments: impl IntoIterator<Item = (ReplicaId, frost::round1::SigningCommitments)>,
    message: &[u8],
) -> frost::SigningPackage {
    let commitments = commitments
        .into_iter()
        .map(|(replica, c)| (identifier(replica), c))
        .collect();
    frost::SigningPackage::new(commitments, message)
}

/// This replica's share for `package` (which holds this replica's
/// commitment to `nonces`).
pub(crate) fn sign_share(
    share: &ClusterShare,
    nonces: &frost::round1::SigningNonces,
    package: &frost::SigningPackage,
) -> Result<Element32, frost::Error> {
    let signature_share = frost::round2::sign(package, nonces, &share.key_package)?;
    Ok(Element32(
        signature_share
            .serialize()
            .try_into()
            .expect("an Ed25519 scalar is 32 bytes"),
    ))
}

/// Combines one share per member of the signing set of `package` (in
/// `shares`, by replica) into an Ed25519 signature on `message`, checked
/// with strict RFC 8032 verification under the cluster key before it is
/// returned. A bad share is named (FROST's identifiable abort).
pub(crate) fn combine(
    public: &frost::keys::PublicKeyPackage,
    cluster_key: &ed25519_dalek::VerifyingKey,
    package: &frost::SigningPackage,
    shares: &BTreeMap<ReplicaId, Element32>,
    message: &[u8],
) -> Result<Signature64, CombineError> {
    let n = public.verifying_shares().len();
    if shares.len() != package.signing_commitments().len() {
        return Err(CombineError::Malformed);
    }
    let mut frost_shares = BTreeMap::new();
    for (replica, bytes) in shares {
        let share = frost::round2::SignatureShare::deserialize(&bytes.0)
            .map_err(|_| CombineError::Culprits(vec![*replica]))?;
        frost_shares.insert(identifier(*replica), share);
    }
    let signature = frost::aggregate(package, &frost_shares, public).map_err(|e| {
        let culprits: Vec<ReplicaId> = e
            .culprits()
            .iter()
            .filter_map(|id| replica_of(id, n))
            .collect();
        if culprits.is_empty() {
            CombineError::Malformed
        } else {
            CombineError::Culprits(culprits)
        }
    })?;
    let bytes: [u8; 64] = signature
        .serialize()
        .map_err(|_| CombineError::Malformed)?
        .try_into()
        .map_err(|_| CombineError::Malformed)?;
    let ed = ed25519_dalek::Signature::from_bytes(&bytes);
    // Strict: the signature every RFC 8032 verifier accepts, not only
    // the cofactored check FROST's aggregate made.
    cluster_key
        .verify_strict(message, &ed)
        .map_err(|_| CombineError::Malformed)?;
    Ok(Signature64(bytes))
}

/// Deals a cluster key with a trusted dealer from `rng` (the simulator's
/// and tests' seeded randomness; `bftlog init` deals from the operating
/// system's): share `i` is replica `i`'s.
pub fn deal<R: rand_core::CryptoRng>(
    n: u16,
    threshold: u16,
    rng: &mut R,
) -> Result<Vec<ClusterShare>, frost::Error> {
    let (secret_shares, public) = frost::keys::generate_with_dealer(
        n,
        threshold,
        frost::keys::IdentifierList::Default,
        FrostRng(rng),
    )?;
    let mut shares = Vec::with_capacity(n as usize);
    for id in 0..n {
        let secret = secret_shares
            .get(&identifier(id))
            .expect("the default identifiers are 1..=n")
            .clone();
        shares.push(ClusterShare {
            key_package: frost::keys::KeyPackage::try_from(secret)?,
            public: public.clone(),
        });
    }
    Ok(shares)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn set_of(
        shares: &[ClusterShare],
        ids: &[ReplicaId],
        rng: &mut rand::rngs::StdRng,
    ) -> (
        Vec<(ReplicaId, frost::round1::SigningCommitments)>,
        Vec<frost::round1::SigningNonces>,
    ) {
        let mut signers = Vec::new();
        let mut nonces = Vec::new();
        for id in ids {
            let n = fresh_nonces(&shares[*id as usize], rng, 1).pop().unwrap();
            // Through the wire form, as peers' commitments arrive.
            let wire = to_wire(n.commitments());
            signers.push((*id, from_wire(&wire).unwrap()));
            nonces.push(n);
        }
        (signers, nonces)
    }

    #[test]
    fn a_signing_set_of_shares_combines_and_a_bad_share_is_named() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let shares = deal(4, 3, &mut rng).unwrap();
        let key = shares[0].verifying_key().unwrap();
        let message = b"example.com/log\n5\nAAAA\n";
        let ids = [0, 2, 3];
        let (signers, nonces) = set_of(&shares, &ids, &mut rng);
        let package = signing_package(signers.clone(), message);
        let mut by_replica = BTreeMap::new();
        for (id, n) in ids.iter().zip(&nonces) {
            let s = sign_share(&shares[*id as usize], n, &package).unwrap();
            by_replica.insert(*id, s);
        }
        let signature = combine(&shares[1].public, &key, &package, &by_replica, message).unwrap();
        key.verify_strict(message, &ed25519_dalek::Signature::from_bytes(&signature.0))
            .unwrap();
        // Replica 2's share replaced by one for another message.
        let other_package = signing_package(signers, b"another");
        let other = sign_share(&shares[2], &nonces[1], &other_package).unwrap();
        by_replica.insert(2, other);
        assert_eq!(
            combine(&shares[1].public, &key, &package, &by_replica, message),
            Err(CombineError::Culprits(vec![2]))
        );
        // A share that is not a scalar names its signer too.
        by_replica.insert(2, Element32([0xff; 32]));
        assert_eq!(
            combine(&shares[1].public, &key, &package, &by_replica, message),
            Err(CombineError::Culprits(vec![2]))
        );
        // A share missing: nobody to blame.
        by_replica.remove(&2);
        assert_eq!(
            combine(&shares[1].public, &key, &package, &by_replica, message),
            Err(CombineError::Malformed)
        );
    }

    #[test]
    fn the_signing_set_prefers_active_replicas_and_rotates() {
        assert_eq!(signing_set(0, 3, &[true; 4]), vec![0, 1, 2]);
        assert_eq!(signing_set(1, 3, &[true; 4]), vec![1, 2, 3]);
        assert_eq!(signing_set(3, 3, &[true; 4]), vec![0, 1, 3]);
        assert_eq!(signing_set(1, 3, &[true, true, false, true]), vec![0, 1, 3]);
        // Too few active: filled in order.
        assert_eq!(
            signing_set(0, 3, &[true, false, false, true]),
            vec![0, 1, 3]
        );
    }

    #[test]
    fn nonce_secrets_round_trip_and_the_share_checks_its_replica() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(8);
        let shares = deal(4, 3, &mut rng).unwrap();
        let n = fresh_nonces(&shares[0], &mut rng, 1).pop().unwrap();
        assert_eq!(NonceSecret::of(&n).nonces().unwrap(), n);
        assert!(format!("{:?}", NonceSecret::of(&n)).contains("redacted"));
        shares[1].check_for(1, 4, 3).unwrap();
        assert!(matches!(
            shares[1].check_for(2, 4, 3),
            Err(ClusterShareError::WrongReplica { .. })
        ));
        assert!(matches!(
            shares[1].check_for(1, 4, 4),
            Err(ClusterShareError::WrongThreshold { .. })
        ));
    }
}
