//! Message types. Version 1 of the protocol; later issues extend these
//! enums by appending variants (indices are part of the format: never
//! reorder or remove one).

use super::{BoundedBytes, BoundedVec};
use crate::merkle::{HASH_LEN, Hash, MAX_PROOF_LEN};
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use std::fmt;

/// Default and largest entry size, in bytes: what a C2SP tlog-tiles entry
/// bundle can carry (its length prefix is a uint16), so that every entry
/// is readable through tiles.
pub const MAX_ENTRY_BYTES: usize = crate::tiles::MAX_BUNDLE_ENTRY_BYTES;
/// Most entries in one append request.
pub const MAX_APPEND_ENTRIES: usize = 4096;
/// Most entries returned by one `GetEntries`.
pub const MAX_GET_ENTRIES: usize = 1024;
/// Most inclusion proofs one `GetInclusionProofs` asks for (the answer is at
/// most 1,024 × 64 hashes, about 2.2 MB).
pub const MAX_PROOF_BATCH: usize = 1024;
/// Most entries in one consensus block.
pub const MAX_BLOCK_ENTRIES: usize = 65_536;
/// Most signatures in a certificate (replicas in a cluster).
pub const MAX_REPLICAS: usize = 256;
/// Most blocks in one sync response.
pub const MAX_SYNC_BLOCKS: usize = 64;
/// Largest note carried in a message.
pub const MAX_NOTE_TEXT: usize = crate::note::MAX_NOTE_BYTES;
/// Largest free-text error message.
pub const MAX_ERROR_TEXT: usize = 1024;
/// Most hashes in a `ReceiptMultiproof`: a multiproof of k leaves holds at
/// most k·64 (one sibling per level per leaf, and a tree of up to 2^64 − 1
/// leaves has 64 levels), so 4,096 × 64 bounds any append's (about 8.9 MB
/// encoded, under the 16 MiB frame limit).
pub const MAX_MULTIPROOF_HASHES: usize = MAX_APPEND_ENTRIES * MAX_PROOF_LEN;

pub type Entry = BoundedBytes<MAX_ENTRY_BYTES>;
pub type NoteText = BoundedBytes<MAX_NOTE_TEXT>;

impl Serialize for Hash {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Hash {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Hash;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a {HASH_LEN}-byte hash")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Hash, E> {
                Hash::from_slice(v).map_err(|_| E::invalid_length(v.len(), &self))
            }
        }
        deserializer.deserialize_bytes(V)
    }
}

/// An Ed25519 signature: exactly 64 bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature64(pub [u8; 64]);

impl fmt::Debug for Signature64 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature64({:02x}{:02x}…)", self.0[0], self.0[1])
    }
}

impl Serialize for Signature64 {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Signature64 {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Signature64;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a 64-byte signature")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Signature64, E> {
                let array: [u8; 64] = v
                    .try_into()
                    .map_err(|_| E::invalid_length(v.len(), &self))?;
                Ok(Signature64(array))
            }
        }
        deserializer.deserialize_bytes(V)
    }
}

/// 32 bytes of a FROST(Ed25519, SHA-512) value (RFC 9591): a compressed
/// Edwards point (a nonce commitment) or a little-endian scalar (a
/// signature share). Exactly 32 bytes on the wire; whether they decode
/// to a valid element is checked where they are used.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Element32(pub [u8; 32]);

impl fmt::Debug for Element32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Element32({:02x}{:02x}…)", self.0[0], self.0[1])
    }
}

impl Serialize for Element32 {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Element32 {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Element32;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a 32-byte group element or scalar")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Element32, E> {
                let array: [u8; 32] = v
                    .try_into()
                    .map_err(|_| E::invalid_length(v.len(), &self))?;
                Ok(Element32(array))
            }
        }
        deserializer.deserialize_bytes(V)
    }
}

/// One replica's FROST round-one commitment (RFC 9591 section 5.1) for
/// the checkpoint of one block height: its hiding and binding nonce
/// commitments.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NonceCommitment {
    pub hiding: Element32,
    pub binding: Element32,
}

/// A signer's commitment within a signing set: the set a
/// `ThresholdShare` was computed for, each member with the commitment
/// its share used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignerCommitment {
    pub replica: ReplicaId,
    pub commitment: NonceCommitment,
}

/// Most nonce commitments in one `NonceCommitments` message.
pub const MAX_NONCE_BATCH: usize = 256;

// ---------------------------------------------------------------------------
// Client protocol
// ---------------------------------------------------------------------------

/// Which leaf an inclusion proof is for.
///
/// Every enum in this module uses unit or struct variants only: serde_cbor's
/// packed format keys newtype variants by *name*, struct variants by index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum LeafRef {
    Index { index: u64 },
    LeafHash { leaf_hash: Hash },
}

/// A client's request to any replica.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum ClientRequest {
    /// Index 0, retired before 0.1.0 (an append answered with one
    /// tlog-proof text per entry). Decoded only so that a replica can
    /// answer an old client with [`ErrorCode::Unsupported`].
    RetiredAppend {
        entries: BoundedVec<Entry, MAX_APPEND_ENTRIES>,
    },
    /// The latest quorum checkpoint.
    GetCheckpoint,
    GetInclusionProof {
        leaf: LeafRef,
        tree_size: u64,
    },
    GetConsistencyProof {
        old_size: u64,
        new_size: u64,
    },
    GetEntries {
        start: u64,
        count: u32,
    },
    /// Inclusion proofs of several leaves, by index, in one tree: one
    /// stream and one read for many proofs (auditors, monitors, bulk
    /// verification).
    GetInclusionProofs {
        indexes: BoundedVec<u64, MAX_PROOF_BATCH>,
        tree_size: u64,
    },
    /// Index 6, retired before 0.1.0 (an append answered with one proof
    /// per entry). Answered with [`ErrorCode::Unsupported`].
    RetiredAppendBatch {
        entries: BoundedVec<Entry, MAX_APPEND_ENTRIES>,
    },
    /// Append entries, answered once a quorum checkpoint covers them all
    /// with [`ClientResponse::ReceiptMultiproof`]: one checkpoint, each
    /// entry's index and one multiproof for them all, from which the client
    /// derives every entry's receipt (a C2SP tlog-proof).
    AppendMultiproof {
        entries: BoundedVec<Entry, MAX_APPEND_ENTRIES>,
    },
}

/// Error codes a replica returns; the connection survives all of them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum ErrorCode {
    TooLarge,
    Malformed,
    Overloaded {
        retry_after_ms: u64,
    },
    NotFound,
    Internal,
    /// A request this replica no longer serves (a retired variant): the
    /// client must be upgraded.
    Unsupported,
    /// The submitter's admission quota (entries a second with a burst, or
    /// bytes a day) is spent at this replica: nothing was submitted; retry
    /// the same request after `retry_after_ms`.
    QuotaExceeded {
        retry_after_ms: u64,
    },
    /// This replica admits appends only from the submitter keys it lists,
    /// and the key the client presented is not one of them. Reads are
    /// open to everyone.
    Forbidden,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum ClientResponse {
    /// Index 0, retired before 0.1.0 (the answer to `RetiredAppend`):
    /// reserved, never sent.
    RetiredReceipts,
    Checkpoint {
        note: NoteText,
    },
    InclusionProof {
        index: u64,
        tree_size: u64,
        hashes: BoundedVec<Hash, MAX_PROOF_LEN>,
    },
    ConsistencyProof {
        old_size: u64,
        new_size: u64,
        hashes: BoundedVec<Hash, MAX_PROOF_LEN>,
    },
    Entries {
        start: u64,
        entries: BoundedVec<Entry, MAX_GET_ENTRIES>,
    },
    Error {
        code: ErrorCode,
        message: BoundedBytes<MAX_ERROR_TEXT>,
    },
    /// One proof per requested index, in request order.
    InclusionProofs {
        tree_size: u64,
        proofs: BoundedVec<BoundedVec<Hash, MAX_PROOF_LEN>, MAX_PROOF_BATCH>,
    },
    /// Index 7, retired before 0.1.0 (the answer to
    /// `RetiredAppendBatch`): reserved, never sent.
    RetiredReceiptBatch,
    /// The answer to an `AppendMultiproof`: one checkpoint note (carrying
    /// at least the replica quorum), each entry's index in request order,
    /// and the multiproof (spec/merkle.md) of the distinct indexes, in
    /// increasing order, in that checkpoint. With its entries' leaf hashes
    /// the client checks them all at once and derives each entry's
    /// inclusion proof, and with it the entry's tlog-proof; a run of
    /// neighbouring entries costs about two proofs' worth of hashes
    /// instead of one proof each.
    ReceiptMultiproof {
        checkpoint: NoteText,
        indexes: BoundedVec<u64, MAX_APPEND_ENTRIES>,
        proof: BoundedVec<Hash, MAX_MULTIPROOF_HASHES>,
    },
}

// ---------------------------------------------------------------------------
// Replica-to-replica protocol (consensus, checkpoint signatures, sync)
// ---------------------------------------------------------------------------

/// Index of a replica in the cluster configuration.
pub type ReplicaId = u16;

/// A signature by one replica inside a certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicaSignature {
    pub replica: ReplicaId,
    pub signature: Signature64,
}

/// 2f+1 votes for one block: a quorum certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuorumCert {
    pub epoch: u64,
    pub round: u64,
    pub block_id: Hash,
    /// Round of the certified block's parent: votes bind it.
    pub parent_round: u64,
    pub signatures: BoundedVec<ReplicaSignature, MAX_REPLICAS>,
}

/// A proposed block: a batch of entries extending the block its QC certifies.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Block {
    pub epoch: u64,
    pub round: u64,
    pub author: ReplicaId,
    pub parent_id: Hash,
    /// Certificate for the parent block.
    pub justify: QuorumCert,
    pub entries: BoundedVec<Entry, MAX_BLOCK_ENTRIES>,
}

/// A vote for a block.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vote {
    pub epoch: u64,
    pub round: u64,
    pub block_id: Hash,
    pub parent_round: u64,
    pub voter: ReplicaId,
    pub signature: Signature64,
}

/// A replica's timeout for a round, carrying its highest QC.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timeout {
    pub epoch: u64,
    pub round: u64,
    pub high_qc: QuorumCert,
    pub sender: ReplicaId,
    pub signature: Signature64,
}

/// One signer's part of a timeout certificate: the round of its highest QC
/// is what it signed alongside the timeout round.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutSignature {
    pub replica: ReplicaId,
    pub high_qc_round: u64,
    pub signature: Signature64,
}

/// 2f+1 timeouts for one round, with the highest QC among them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutCert {
    pub epoch: u64,
    pub round: u64,
    pub high_qc: QuorumCert,
    pub signatures: BoundedVec<TimeoutSignature, MAX_REPLICAS>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum ConsensusMessage {
    Proposal {
        block: Block,
        timeout_cert: Option<TimeoutCert>,
        signature: Signature64,
    },
    Vote {
        vote: Vote,
    },
    Timeout {
        timeout: Timeout,
    },
    /// A replica's signature on the checkpoint it computed after commit.
    CheckpointSignature {
        size: u64,
        root: Hash,
        replica: ReplicaId,
        note_signature: Signature64,
    },
    /// Entries forwarded toward upcoming leaders.
    Forward {
        entries: BoundedVec<Entry, MAX_APPEND_ENTRIES>,
    },
    /// Ask for blocks from height `from_height` on: committed blocks, then the
    /// chain up to the responder's highest certified block.
    SyncRequest {
        from_height: u64,
        max_blocks: u16,
    },
    /// Blocks with the certificates that commit them.
    SyncResponse {
        blocks: BoundedVec<Block, MAX_SYNC_BLOCKS>,
        commit_qc: Option<QuorumCert>,
    },
    /// The sender's highest certificates, sent to a replica whose messages
    /// show it is behind, so it can move to the current round.
    Certificates {
        high_qc: QuorumCert,
        high_tc: Option<TimeoutCert>,
        /// The sender's committed height: a replica below it syncs.
        committed_height: u64,
    },
    /// A proposal that names its entries by RFC 6962 leaf hash instead of
    /// carrying them: `header` is the block with an empty `entries` list
    /// and `leaves` lists the entries' leaf hashes in block order. The
    /// block id covers exactly these (header and leaf hashes), so the
    /// signature is the one a full [`ConsensusMessage::Proposal`] of the
    /// same block carries. Receivers take the entries from what was
    /// forwarded to them and ask for the rest with `EntryRequest`.
    ProposalLeaves {
        header: Block,
        leaves: BoundedVec<Hash, MAX_BLOCK_ENTRIES>,
        timeout_cert: Option<TimeoutCert>,
        signature: Signature64,
    },
    /// Asks for the entries with these leaf hashes; answered with
    /// `Forward` messages carrying those the responder holds.
    EntryRequest {
        leaves: BoundedVec<Hash, MAX_APPEND_ENTRIES>,
    },
    /// The sender's cluster-key nonce commitments for the checkpoints of
    /// consecutive block heights from `first_height` on, published ahead
    /// of the commits that use them (their secrets are durable first).
    NonceCommitments {
        replica: ReplicaId,
        first_height: u64,
        commitments: BoundedVec<NonceCommitment, MAX_NONCE_BATCH>,
        /// Set by a replica that just started (it holds no one's
        /// commitments): receivers answer with theirs.
        started: bool,
    },
    /// The sender's FROST signature share on the checkpoint `(size, root)`
    /// of block `height`, computed for the signing set `signers` (in
    /// replica order, each with the commitment the share used): shares
    /// that name one set combine into the cluster signature
    /// (spec/consensus.md, "The cluster signature").
    ThresholdShare {
        height: u64,
        size: u64,
        root: Hash,
        replica: ReplicaId,
        signers: BoundedVec<SignerCommitment, MAX_REPLICAS>,
        share: Element32,
        /// `None` for a share made with the sender's nonce for `height`
        /// (published ahead); the stage for a share made in a recovery
        /// session (`RecoveryRequest`).
        recovery_stage: Option<u32>,
    },
    /// A nonce commitment for recovering the cluster signature of the
    /// checkpoint of block `height`, which went unsigned: sent to all; the
    /// stage's coordinator (replica `(height + stage) mod n`) uses it, the
    /// others learn the sender's stage. Its secret lives only in the
    /// sender's memory.
    RecoveryCommitment {
        replica: ReplicaId,
        height: u64,
        stage: u32,
        commitment: NonceCommitment,
    },
    /// A coordinator's recovery session: the members of `signers` sign the
    /// checkpoint `(size, root)` with the commitments named, each sending a
    /// `ThresholdShare` with `recovery_stage` set to `stage`.
    RecoveryRequest {
        height: u64,
        size: u64,
        root: Hash,
        stage: u32,
        signers: BoundedVec<SignerCommitment, MAX_REPLICAS>,
    },
    /// The cluster signature of the checkpoint `(size, root)` of block
    /// `height`, sent to a replica that asked to recover it after it had
    /// formed.
    ClusterSignature {
        height: u64,
        size: u64,
        root: Hash,
        signature: Signature64,
    },
}

impl ConsensusMessage {
    /// The variant's name, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ConsensusMessage::Proposal { .. } => "Proposal",
            ConsensusMessage::Vote { .. } => "Vote",
            ConsensusMessage::Timeout { .. } => "Timeout",
            ConsensusMessage::CheckpointSignature { .. } => "CheckpointSignature",
            ConsensusMessage::Forward { .. } => "Forward",
            ConsensusMessage::SyncRequest { .. } => "SyncRequest",
            ConsensusMessage::SyncResponse { .. } => "SyncResponse",
            ConsensusMessage::Certificates { .. } => "Certificates",
            ConsensusMessage::ProposalLeaves { .. } => "ProposalLeaves",
            ConsensusMessage::EntryRequest { .. } => "EntryRequest",
            ConsensusMessage::NonceCommitments { .. } => "NonceCommitments",
            ConsensusMessage::ThresholdShare { .. } => "ThresholdShare",
            ConsensusMessage::RecoveryCommitment { .. } => "RecoveryCommitment",
            ConsensusMessage::RecoveryRequest { .. } => "RecoveryRequest",
            ConsensusMessage::ClusterSignature { .. } => "ClusterSignature",
        }
    }
}
