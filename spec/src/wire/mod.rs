//! Canonical CBOR wire messages and framing. The only module that uses
//! serde_cbor.
//!
//! Normative description: `spec/wire.md`.
//!
//! Encoding: serde_cbor's packed format — structs are maps keyed by field
//! index (0, 1, 2, … in order, so keys are sorted), enum variants are keyed
//! by variant index, integers use the shortest form, lengths are definite.
//! Decoding is strict: the input must be at most [`MAX_MESSAGE_BYTES`], must
//! decode with no unknown fields and no trailing bytes, and must re-encode to
//! exactly the same bytes. Anything else (long-form integers, indefinite
//! lengths, reordered or duplicate keys, field names instead of indices) is
//! rejected.
//!
//! Framing: each message is sent as a 4-byte big-endian length followed by
//! that many bytes of CBOR.

mod bounded;
mod messages;

pub use bounded::{BoundedBytes, BoundedVec, LengthError};
pub use messages::*;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Largest encoded message accepted, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("message of {0} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("malformed CBOR: {0}")]
    Cbor(String),
    #[error("not canonical: re-encoding gives different bytes")]
    NotCanonical,
}

/// Encodes a value canonically.
///
/// The value is serialized twice: once to count its bytes, then into a
/// buffer of exactly that size. Growing the buffer instead copied a block of
/// thousands of entries about twice over and touched fresh memory for each
/// doubling, a measurable share of a replica's CPU under load; counting
/// copies nothing.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(encoded_len(value));
    write_packed(value, &mut out);
    out
}

/// Appends the canonical encoding of `value` to `out`: for a caller that
/// encodes into a buffer it reuses, so that neither a count pass nor fresh
/// memory is paid per value.
pub fn encode_into<T: Serialize>(value: &T, out: &mut Vec<u8>) {
    write_packed(value, out);
}

/// [`frame`]`(&`[`encode`]`(value))` without the intermediate copy.
///
/// # Panics
/// If the encoding exceeds [`MAX_MESSAGE_BYTES`], like [`frame`]. Code
/// that frames messages whose size depends on its peers uses
/// [`try_encode_frame`].
pub fn encode_frame<T: Serialize>(value: &T) -> Vec<u8> {
    try_encode_frame(value).expect("refusing to frame an oversized message")
}

/// [`encode_frame`], or the encoded length if it exceeds
/// [`MAX_MESSAGE_BYTES`] (nothing is framed then).
pub fn try_encode_frame<T: Serialize>(value: &T) -> Result<Vec<u8>, usize> {
    let len = encoded_len(value);
    if len > MAX_MESSAGE_BYTES {
        return Err(len);
    }
    let mut out = Vec::with_capacity(FRAME_HEADER_BYTES + len);
    out.extend_from_slice(&(len as u32).to_be_bytes());
    write_packed(value, &mut out);
    debug_assert_eq!(out.len(), FRAME_HEADER_BYTES + len);
    Ok(out)
}

/// The length of [`encode`]`(value)`, without allocating.
pub fn encoded_len<T: Serialize>(value: &T) -> usize {
    let mut counter = ByteCounter(0);
    let mut serializer =
        serde_cbor::Serializer::new(serde_cbor::ser::IoWrite::new(&mut counter)).packed_format();
    value
        .serialize(&mut serializer)
        .expect("wire types always serialize");
    counter.0
}

fn write_packed<T: Serialize>(value: &T, out: &mut Vec<u8>) {
    let mut serializer = serde_cbor::Serializer::new(out).packed_format();
    value
        .serialize(&mut serializer)
        .expect("wire types always serialize");
}

/// Counts the bytes written to it.
struct ByteCounter(usize);

impl std::io::Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Compares what is written to it with `expected`, from the start: the
/// canonical check of [`decode`] without building a second copy.
struct CanonicalCheck<'a> {
    expected: &'a [u8],
    matched: usize,
}

impl std::io::Write for CanonicalCheck<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let end = self.matched + buf.len();
        if self.expected.get(self.matched..end) != Some(buf) {
            return Err(std::io::Error::other("re-encoding differs"));
        }
        self.matched = end;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Whether `value` encodes to exactly `bytes`.
fn encodes_to<T: Serialize>(value: &T, bytes: &[u8]) -> bool {
    let mut check = CanonicalCheck {
        expected: bytes,
        matched: 0,
    };
    let mut serializer =
        serde_cbor::Serializer::new(serde_cbor::ser::IoWrite::new(&mut check)).packed_format();
    value.serialize(&mut serializer).is_ok() && check.matched == bytes.len()
}

/// Decodes a value strictly (see the module docs).
pub fn decode<T: Serialize + DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(DecodeError::TooLarge(bytes.len()));
    }
    // from_slice rejects trailing bytes; reading from a slice means no
    // length field can make it allocate more than the input holds.
    let value: T = serde_cbor::from_slice(bytes).map_err(|e| DecodeError::Cbor(e.to_string()))?;
    if !encodes_to(&value, bytes) {
        return Err(DecodeError::NotCanonical);
    }
    Ok(value)
}

/// Length prefix of a frame.
pub const FRAME_HEADER_BYTES: usize = 4;

/// Frames an encoded message: 4-byte big-endian length, then the bytes.
pub fn frame(message: &[u8]) -> Vec<u8> {
    assert!(
        message.len() <= MAX_MESSAGE_BYTES,
        "refusing to frame an oversized message"
    );
    let mut out = Vec::with_capacity(FRAME_HEADER_BYTES + message.len());
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame announces {0} bytes, over the limit of {1}")]
    TooLarge(usize, usize),
}

/// Incremental, sans-IO frame splitter: feed bytes as they arrive, take
/// whole messages out. Rejects a frame as soon as its header announces more
/// than the limit, before buffering it.
#[derive(Debug)]
pub struct FrameDecoder {
    buffer: Vec<u8>,
    limit: usize,
}

impl FrameDecoder {
    pub fn new(limit: usize) -> Self {
        assert!(
            limit <= MAX_MESSAGE_BYTES,
            "frame limit above the protocol maximum"
        );
        FrameDecoder {
            buffer: Vec::new(),
            limit,
        }
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// Takes the next complete message, if any.
    pub fn next_message(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        if self.buffer.len() < FRAME_HEADER_BYTES {
            return Ok(None);
        }
        let len = u32::from_be_bytes(self.buffer[..4].try_into().expect("4 bytes")) as usize;
        if len > self.limit {
            return Err(FrameError::TooLarge(len, self.limit));
        }
        if self.buffer.len() < FRAME_HEADER_BYTES + len {
            return Ok(None);
        }
        let message = self.buffer[FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + len].to_vec();
        self.buffer.drain(..FRAME_HEADER_BYTES + len);
        Ok(Some(message))
    }

    /// Bytes buffered but not yet returned.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }
}

/// One encoded example per message kind, as Markdown: the source of the
/// `## Examples` section of `spec/wire.md`.
pub fn examples_markdown() -> String {
    use crate::merkle::leaf_hash;
    let hash = leaf_hash(b"example");
    let sig = Signature64([0xab; 64]);
    // Replicas 0 and 1, each with hiding 32 × 0x11 and binding 32 × 0x22.
    let two_signers: BoundedVec<SignerCommitment, MAX_REPLICAS> = BoundedVec::new(
        (0..2)
            .map(|replica| SignerCommitment {
                replica,
                commitment: NonceCommitment {
                    hiding: Element32([0x11; 32]),
                    binding: Element32([0x22; 32]),
                },
            })
            .collect(),
    )
    .expect("two");
    let qc = QuorumCert {
        epoch: 1,
        round: 6,
        block_id: hash,
        parent_round: 5,
        signatures: BoundedVec::new(vec![ReplicaSignature {
            replica: 0,
            signature: sig,
        }])
        .expect("one signature"),
    };
    let entry = |bytes: &[u8]| Entry::new(bytes.to_vec()).expect("small entry");
    let examples: Vec<(&str, Vec<u8>)> = vec![
        (
            "ClientRequest::GetCheckpoint",
            encode(&ClientRequest::GetCheckpoint),
        ),
        (
            "ClientRequest::GetInclusionProof for index 5 in a tree of size 9",
            encode(&ClientRequest::GetInclusionProof {
                leaf: LeafRef::Index { index: 5 },
                tree_size: 9,
            }),
        ),
        (
            "ClientRequest::GetConsistencyProof from 3 to 1000",
            encode(&ClientRequest::GetConsistencyProof {
                old_size: 3,
                new_size: 1000,
            }),
        ),
        (
            "ClientRequest::GetEntries from 100, count 2",
            encode(&ClientRequest::GetEntries {
                start: 100,
                count: 2,
            }),
        ),
        (
            "ClientRequest::GetInclusionProofs for indexes 0 and 1 in a tree of size 2",
            encode(&ClientRequest::GetInclusionProofs {
                indexes: BoundedVec::new(vec![0, 1]).expect("two"),
                tree_size: 2,
            }),
        ),
        (
            "ClientResponse::InclusionProofs (size 2: the proofs of leaves 0 and 1, the other leaf's hash each; leaf_hash(\"example\") and leaf_hash(\"\"))",
            encode(&ClientResponse::InclusionProofs {
                tree_size: 2,
                proofs: BoundedVec::new(vec![
                    BoundedVec::new(vec![hash]).expect("one"),
                    BoundedVec::new(vec![crate::merkle::leaf_hash(b"")]).expect("one"),
                ])
                .expect("two"),
            }),
        ),
        (
            "ClientResponse::Error (Unsupported, \"upgrade the client\"): the answer to a retired request",
            encode(&ClientResponse::Error {
                code: ErrorCode::Unsupported,
                message: BoundedBytes::new(b"upgrade the client".to_vec()).expect("short"),
            }),
        ),
        (
            "ClientRequest::AppendMultiproof with entry \"hello\"",
            encode(&ClientRequest::AppendMultiproof {
                entries: BoundedVec::new(vec![entry(b"hello")]).expect("one"),
            }),
        ),
        (
            "ClientResponse::ReceiptMultiproof (checkpoint note \"note\" as a placeholder; entries at indexes 0 and 0 (the same entry twice) in a tree of size 2; proof = leaf_hash(\"example\"), the other leaf)",
            encode(&ClientResponse::ReceiptMultiproof {
                checkpoint: BoundedBytes::new(b"note".to_vec()).expect("short"),
                indexes: BoundedVec::new(vec![0, 0]).expect("two"),
                proof: BoundedVec::new(vec![hash]).expect("one"),
            }),
        ),
        (
            "ClientResponse::Error Overloaded, retry after 250 ms, message \"busy\"",
            encode(&ClientResponse::Error {
                code: ErrorCode::Overloaded {
                    retry_after_ms: 250,
                },
                message: BoundedBytes::new(b"busy".to_vec()).expect("short"),
            }),
        ),
        (
            "ClientResponse::Error QuotaExceeded, retry after 1500 ms, message \"quota\"",
            encode(&ClientResponse::Error {
                code: ErrorCode::QuotaExceeded {
                    retry_after_ms: 1500,
                },
                message: BoundedBytes::new(b"quota".to_vec()).expect("short"),
            }),
        ),
        (
            "ClientResponse::InclusionProof (index 0, size 2, one hash = leaf_hash(\"example\"))",
            encode(&ClientResponse::InclusionProof {
                index: 0,
                tree_size: 2,
                hashes: BoundedVec::new(vec![hash]).expect("one"),
            }),
        ),
        (
            "ConsensusMessage::Vote (epoch 1, round 7, block leaf_hash(\"example\"), parent round 6, voter 2, signature 64 × 0xab)",
            encode(&ConsensusMessage::Vote {
                vote: Vote {
                    epoch: 1,
                    round: 7,
                    block_id: hash,
                    parent_round: 6,
                    voter: 2,
                    signature: sig,
                },
            }),
        ),
        (
            "ConsensusMessage::Timeout (round 8, high QC for round 6 with one signature)",
            encode(&ConsensusMessage::Timeout {
                timeout: Timeout {
                    epoch: 1,
                    round: 8,
                    high_qc: qc.clone(),
                    sender: 3,
                    signature: sig,
                },
            }),
        ),
        (
            "ConsensusMessage::CheckpointSignature (size 9, root leaf_hash(\"example\"), replica 1)",
            encode(&ConsensusMessage::CheckpointSignature {
                size: 9,
                root: hash,
                replica: 1,
                note_signature: sig,
            }),
        ),
        (
            "ConsensusMessage::SyncRequest from height 40, at most 16 blocks",
            encode(&ConsensusMessage::SyncRequest {
                from_height: 40,
                max_blocks: 16,
            }),
        ),
        (
            "ConsensusMessage::Proposal (round 7, one entry \"hello\", justified by the round-6 QC, no TC)",
            encode(&ConsensusMessage::Proposal {
                block: Block {
                    epoch: 1,
                    round: 7,
                    author: 3,
                    parent_id: hash,
                    justify: qc.clone(),
                    entries: BoundedVec::new(vec![entry(b"hello")]).expect("one"),
                },
                timeout_cert: None,
                signature: sig,
            }),
        ),
        (
            "ConsensusMessage::ProposalLeaves (the same proposal naming its entry by leaf hash)",
            encode(&ConsensusMessage::ProposalLeaves {
                header: Block {
                    epoch: 1,
                    round: 7,
                    author: 3,
                    parent_id: hash,
                    justify: qc,
                    entries: BoundedVec::new(Vec::new()).expect("empty"),
                },
                leaves: BoundedVec::new(vec![crate::merkle::leaf_hash(b"hello")]).expect("one"),
                timeout_cert: None,
                signature: sig,
            }),
        ),
        (
            "ConsensusMessage::EntryRequest for the entry \"hello\"",
            encode(&ConsensusMessage::EntryRequest {
                leaves: BoundedVec::new(vec![crate::merkle::leaf_hash(b"hello")]).expect("one"),
            }),
        ),
        (
            "ConsensusMessage::NonceCommitments (replica 1, one commitment for height 40: hiding 32 × 0x11, binding 32 × 0x22)",
            encode(&ConsensusMessage::NonceCommitments {
                replica: 1,
                first_height: 40,
                commitments: BoundedVec::new(vec![NonceCommitment {
                    hiding: Element32([0x11; 32]),
                    binding: Element32([0x22; 32]),
                }])
                .expect("one"),
                started: false,
            }),
        ),
        (
            "ConsensusMessage::ThresholdShare (height 40, size 9, root leaf_hash(\"example\"), replica 1, signers 0 and 1 with that commitment each, share 32 × 0x33)",
            encode(&ConsensusMessage::ThresholdShare {
                height: 40,
                size: 9,
                root: hash,
                replica: 1,
                signers: two_signers.clone(),
                share: Element32([0x33; 32]),
                recovery_stage: None,
            }),
        ),
        (
            "ConsensusMessage::RecoveryCommitment (replica 1, height 40, stage 2, hiding 32 × 0x11, binding 32 × 0x22)",
            encode(&ConsensusMessage::RecoveryCommitment {
                replica: 1,
                height: 40,
                stage: 2,
                commitment: NonceCommitment {
                    hiding: Element32([0x11; 32]),
                    binding: Element32([0x22; 32]),
                },
            }),
        ),
        (
            "ConsensusMessage::RecoveryRequest (height 40, size 9, root leaf_hash(\"example\"), stage 2, signers 0 and 1 with that commitment each)",
            encode(&ConsensusMessage::RecoveryRequest {
                height: 40,
                size: 9,
                root: hash,
                stage: 2,
                signers: two_signers.clone(),
            }),
        ),
        (
            "ConsensusMessage::ClusterSignature (height 40, size 9, root leaf_hash(\"example\"), signature 64 × 0xab)",
            encode(&ConsensusMessage::ClusterSignature {
                height: 40,
                size: 9,
                root: hash,
                signature: sig,
            }),
        ),
    ];
    let mut out = String::new();
    for (title, bytes) in examples {
        out.push_str(&format!("**{title}** ({} bytes)\n\n```\n", bytes.len()));
        for chunk in bytes.chunks(32) {
            let line: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
            out.push_str(&line.join(" "));
            out.push('\n');
        }
        out.push_str("```\n\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::Hash;
    use proptest::prelude::*;

    fn vote(epoch: u64, round: u64) -> Vote {
        Vote {
            epoch,
            round,
            block_id: Hash([7; 32]),
            parent_round: round.saturating_sub(1),
            voter: 2,
            signature: Signature64([9; 64]),
        }
    }

    fn qc(round: u64, signers: u16) -> QuorumCert {
        QuorumCert {
            epoch: 1,
            round,
            block_id: Hash([round as u8; 32]),
            parent_round: round.saturating_sub(1),
            signatures: BoundedVec::new(
                (0..signers)
                    .map(|replica| ReplicaSignature {
                        replica,
                        signature: Signature64([replica as u8; 64]),
                    })
                    .collect(),
            )
            .unwrap(),
        }
    }

    fn entries<const N: usize>(items: Vec<Vec<u8>>) -> BoundedVec<Entry, N> {
        BoundedVec::new(items.into_iter().map(|e| Entry::new(e).unwrap()).collect()).unwrap()
    }

    fn hash() -> impl Strategy<Value = Hash> {
        any::<[u8; 32]>().prop_map(Hash)
    }

    fn sig() -> impl Strategy<Value = Signature64> {
        prop::collection::vec(any::<u8>(), 64).prop_map(|v| Signature64(v.try_into().unwrap()))
    }

    fn qc_strategy() -> impl Strategy<Value = QuorumCert> {
        (
            any::<u64>(),
            any::<u64>(),
            hash(),
            any::<u64>(),
            prop::collection::vec((any::<u16>(), sig()), 0..8),
        )
            .prop_map(|(epoch, round, block_id, parent_round, sigs)| QuorumCert {
                epoch,
                round,
                block_id,
                parent_round,
                signatures: BoundedVec::new(
                    sigs.into_iter()
                        .map(|(replica, signature)| ReplicaSignature { replica, signature })
                        .collect(),
                )
                .unwrap(),
            })
    }

    fn entry_list() -> impl Strategy<Value = Vec<Vec<u8>>> {
        prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..6)
    }

    fn client_request() -> impl Strategy<Value = ClientRequest> {
        prop_oneof![
            entry_list().prop_map(|e| ClientRequest::RetiredAppend {
                entries: entries(e)
            }),
            Just(ClientRequest::GetCheckpoint),
            (any::<u64>(), any::<u64>()).prop_map(|(i, t)| ClientRequest::GetInclusionProof {
                leaf: LeafRef::Index { index: i },
                tree_size: t
            }),
            (hash(), any::<u64>()).prop_map(|(h, t)| ClientRequest::GetInclusionProof {
                leaf: LeafRef::LeafHash { leaf_hash: h },
                tree_size: t
            }),
            (any::<u64>(), any::<u64>()).prop_map(|(old_size, new_size)| {
                ClientRequest::GetConsistencyProof { old_size, new_size }
            }),
            (any::<u64>(), any::<u32>())
                .prop_map(|(start, count)| ClientRequest::GetEntries { start, count }),
            (prop::collection::vec(any::<u64>(), 0..20), any::<u64>()).prop_map(
                |(indexes, tree_size)| ClientRequest::GetInclusionProofs {
                    indexes: BoundedVec::new(indexes).unwrap(),
                    tree_size
                }
            ),
            entry_list().prop_map(|e| ClientRequest::RetiredAppendBatch {
                entries: entries(e)
            }),
            entry_list().prop_map(|e| ClientRequest::AppendMultiproof {
                entries: entries(e)
            }),
        ]
    }

    fn client_response() -> impl Strategy<Value = ClientResponse> {
        prop_oneof![
            Just(ClientResponse::RetiredReceipts),
            Just(ClientResponse::RetiredReceiptBatch),
            Just(ClientResponse::Error {
                code: ErrorCode::Unsupported,
                message: BoundedBytes::default()
            }),
            (
                any::<u64>(),
                any::<u64>(),
                prop::collection::vec(hash(), 0..64)
            )
                .prop_map(|(index, tree_size, h)| ClientResponse::InclusionProof {
                    index,
                    tree_size,
                    hashes: BoundedVec::new(h).unwrap()
                }),
            (
                any::<u64>(),
                prop::collection::vec(prop::collection::vec(hash(), 0..30), 0..5)
            )
                .prop_map(|(tree_size, p)| ClientResponse::InclusionProofs {
                    tree_size,
                    proofs: BoundedVec::new(
                        p.into_iter().map(|h| BoundedVec::new(h).unwrap()).collect()
                    )
                    .unwrap()
                }),
            any::<u64>().prop_map(|ms| ClientResponse::Error {
                code: ErrorCode::Overloaded { retry_after_ms: ms },
                message: BoundedBytes::new(b"busy".to_vec()).unwrap()
            }),
            Just(ClientResponse::Error {
                code: ErrorCode::NotFound,
                message: BoundedBytes::default()
            }),
            any::<u64>().prop_map(|ms| ClientResponse::Error {
                code: ErrorCode::QuotaExceeded { retry_after_ms: ms },
                message: BoundedBytes::new(b"quota".to_vec()).unwrap()
            }),
            Just(ClientResponse::Error {
                code: ErrorCode::Forbidden,
                message: BoundedBytes::default()
            }),
            (any::<u64>(), entry_list()).prop_map(|(start, e)| ClientResponse::Entries {
                start,
                entries: entries(e)
            }),
            (
                prop::collection::vec(any::<u8>(), 0..200),
                prop::collection::vec(any::<u64>(), 0..8),
                prop::collection::vec(hash(), 0..40)
            )
                .prop_map(|(note, indexes, proof)| ClientResponse::ReceiptMultiproof {
                    checkpoint: BoundedBytes::new(note).unwrap(),
                    indexes: BoundedVec::new(indexes).unwrap(),
                    proof: BoundedVec::new(proof).unwrap()
                }),
        ]
    }

    fn consensus_message() -> impl Strategy<Value = ConsensusMessage> {
        prop_oneof![
            (
                any::<u64>(),
                any::<u64>(),
                any::<u16>(),
                hash(),
                qc_strategy(),
                entry_list(),
                prop::option::of(qc_strategy()),
                sig()
            )
                .prop_map(
                    |(epoch, round, author, parent_id, justify, e, tc_qc, signature)| {
                        ConsensusMessage::Proposal {
                            block: Block {
                                epoch,
                                round,
                                author,
                                parent_id,
                                justify,
                                entries: entries(e),
                            },
                            timeout_cert: tc_qc.map(|high_qc| TimeoutCert {
                                epoch,
                                round,
                                high_qc,
                                signatures: BoundedVec::new(vec![TimeoutSignature {
                                    replica: 1,
                                    high_qc_round: 3,
                                    signature: Signature64([1; 64]),
                                }])
                                .unwrap(),
                            }),
                            signature,
                        }
                    }
                ),
            (
                any::<u64>(),
                any::<u64>(),
                hash(),
                any::<u64>(),
                any::<u16>(),
                sig()
            )
                .prop_map(
                    |(epoch, round, block_id, parent_round, voter, signature)| {
                        ConsensusMessage::Vote {
                            vote: Vote {
                                epoch,
                                round,
                                block_id,
                                parent_round,
                                voter,
                                signature,
                            },
                        }
                    }
                ),
            (
                any::<u64>(),
                any::<u64>(),
                qc_strategy(),
                any::<u16>(),
                sig()
            )
                .prop_map(|(epoch, round, high_qc, sender, signature)| {
                    ConsensusMessage::Timeout {
                        timeout: Timeout {
                            epoch,
                            round,
                            high_qc,
                            sender,
                            signature,
                        },
                    }
                }),
            (any::<u64>(), hash(), any::<u16>(), sig()).prop_map(
                |(size, root, replica, note_signature)| ConsensusMessage::CheckpointSignature {
                    size,
                    root,
                    replica,
                    note_signature
                }
            ),
            (any::<u64>(), any::<u16>()).prop_map(|(from_height, max_blocks)| {
                ConsensusMessage::SyncRequest {
                    from_height,
                    max_blocks,
                }
            }),
            (qc_strategy(), prop::option::of(qc_strategy()), any::<u64>()).prop_map(
                |(high_qc, tc_qc, committed_height)| ConsensusMessage::Certificates {
                    committed_height,
                    high_tc: tc_qc.map(|qc| TimeoutCert {
                        epoch: qc.epoch,
                        round: qc.round.wrapping_add(1),
                        high_qc: qc,
                        signatures: BoundedVec::new(Vec::new()).unwrap(),
                    }),
                    high_qc,
                }
            ),
            (
                any::<u64>(),
                any::<u64>(),
                any::<u16>(),
                hash(),
                qc_strategy(),
                prop::collection::vec(hash(), 0..20),
                sig()
            )
                .prop_map(
                    |(epoch, round, author, parent_id, justify, leaves, signature)| {
                        ConsensusMessage::ProposalLeaves {
                            header: Block {
                                epoch,
                                round,
                                author,
                                parent_id,
                                justify,
                                entries: BoundedVec::new(Vec::new()).unwrap(),
                            },
                            leaves: BoundedVec::new(leaves).unwrap(),
                            timeout_cert: None,
                            signature,
                        }
                    }
                ),
            prop::collection::vec(hash(), 0..20).prop_map(|leaves| {
                ConsensusMessage::EntryRequest {
                    leaves: BoundedVec::new(leaves).unwrap(),
                }
            }),
            (
                any::<u16>(),
                any::<u64>(),
                prop::collection::vec((any::<[u8; 32]>(), any::<[u8; 32]>()), 0..8),
                any::<bool>()
            )
                .prop_map(|(replica, first_height, pairs, started)| {
                    ConsensusMessage::NonceCommitments {
                        replica,
                        first_height,
                        started,
                        commitments: BoundedVec::new(
                            pairs
                                .into_iter()
                                .map(|(h, b)| NonceCommitment {
                                    hiding: Element32(h),
                                    binding: Element32(b),
                                })
                                .collect(),
                        )
                        .unwrap(),
                    }
                }),
            (
                any::<u64>(),
                any::<u64>(),
                hash(),
                any::<u16>(),
                prop::collection::vec((any::<u16>(), any::<[u8; 32]>()), 0..5),
                any::<[u8; 32]>(),
                prop::option::of(any::<u32>())
            )
                .prop_map(
                    |(height, size, root, replica, signers, share, recovery_stage)| {
                        ConsensusMessage::ThresholdShare {
                            height,
                            size,
                            root,
                            replica,
                            signers: BoundedVec::new(
                                signers
                                    .into_iter()
                                    .map(|(replica, point)| SignerCommitment {
                                        replica,
                                        commitment: NonceCommitment {
                                            hiding: Element32(point),
                                            binding: Element32([7; 32]),
                                        },
                                    })
                                    .collect(),
                            )
                            .unwrap(),
                            share: Element32(share),
                            recovery_stage,
                        }
                    }
                ),
            (any::<u16>(), any::<u64>(), any::<u32>(), any::<[u8; 32]>()).prop_map(
                |(replica, height, stage, point)| {
                    ConsensusMessage::RecoveryCommitment {
                        replica,
                        height,
                        stage,
                        commitment: NonceCommitment {
                            hiding: Element32(point),
                            binding: Element32([3; 32]),
                        },
                    }
                }
            ),
            (
                any::<u64>(),
                any::<u64>(),
                hash(),
                any::<u32>(),
                prop::collection::vec((any::<u16>(), any::<[u8; 32]>()), 0..5)
            )
                .prop_map(|(height, size, root, stage, signers)| {
                    ConsensusMessage::RecoveryRequest {
                        height,
                        size,
                        root,
                        stage,
                        signers: BoundedVec::new(
                            signers
                                .into_iter()
                                .map(|(replica, point)| SignerCommitment {
                                    replica,
                                    commitment: NonceCommitment {
                                        hiding: Element32(point),
                                        binding: Element32([5; 32]),
                                    },
                                })
                                .collect(),
                        )
                        .unwrap(),
                    }
                }),
            (any::<u64>(), any::<u64>(), hash(), sig()).prop_map(
                |(height, size, root, signature)| {
                    ConsensusMessage::ClusterSignature {
                        height,
                        size,
                        root,
                        signature,
                    }
                }
            ),
        ]
    }

    proptest! {
        #[test]
        fn client_requests_round_trip(msg in client_request()) {
            let bytes = encode(&msg);
            prop_assert_eq!(decode::<ClientRequest>(&bytes).unwrap(), msg);
        }

        #[test]
        fn client_responses_round_trip(msg in client_response()) {
            let bytes = encode(&msg);
            prop_assert_eq!(decode::<ClientResponse>(&bytes).unwrap(), msg);
        }

        #[test]
        fn consensus_messages_round_trip(msg in consensus_message()) {
            let bytes = encode(&msg);
            prop_assert_eq!(decode::<ConsensusMessage>(&bytes).unwrap(), msg.clone());
            // The sized and framing paths give the same bytes as serde_cbor.
            let reference = serde_cbor::ser::to_vec_packed(&msg).unwrap();
            prop_assert_eq!(&bytes, &reference);
            prop_assert_eq!(encoded_len(&msg), reference.len());
            prop_assert_eq!(encode_frame(&msg), frame(&reference));
            // Appending into a reused buffer leaves what it held before.
            let mut reused = b"kept".to_vec();
            encode_into(&msg, &mut reused);
            prop_assert_eq!(&reused[..4], b"kept");
            prop_assert_eq!(&reused[4..], &reference[..]);
        }

        /// The streaming canonical check rejects every strict prefix and
        /// every one-byte extension of a canonical encoding.
        #[test]
        fn canonical_check_needs_the_exact_bytes(msg in client_request(), extra in any::<u8>()) {
            let bytes = encode(&msg);
            prop_assert!(encodes_to(&msg, &bytes));
            prop_assert!(!encodes_to(&msg, &bytes[..bytes.len() - 1]));
            let mut longer = bytes.clone();
            longer.push(extra);
            prop_assert!(!encodes_to(&msg, &longer));
            let mut flipped = bytes;
            let last = flipped.len() - 1;
            flipped[last] ^= 1;
            prop_assert!(!encodes_to(&msg, &flipped));
        }

        /// Arbitrary bytes never panic, and whatever decodes re-encodes to
        /// the same bytes.
        #[test]
        fn arbitrary_bytes_are_canonical_or_rejected(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(msg) = decode::<ConsensusMessage>(&bytes) {
                prop_assert_eq!(encode(&msg), bytes.clone());
            }
            if let Ok(msg) = decode::<ClientRequest>(&bytes) {
                prop_assert_eq!(encode(&msg), bytes);
            }
        }

        /// Splitting a byte stream anywhere yields the same frames.
        #[test]
        fn frames_survive_any_split(msgs in prop::collection::vec(client_request(), 1..5), cut in any::<prop::sample::Index>()) {
            let stream: Vec<u8> = msgs.iter().flat_map(|m| frame(&encode(m))).collect();
            let at = cut.index(stream.len() + 1);
            let mut decoder = FrameDecoder::new(MAX_MESSAGE_BYTES);
            let mut out = Vec::new();
            for part in [&stream[..at], &stream[at..]] {
                decoder.push(part);
                while let Some(m) = decoder.next_message().unwrap() {
                    out.push(decode::<ClientRequest>(&m).unwrap());
                }
            }
            prop_assert_eq!(out, msgs);
            prop_assert_eq!(decoder.buffered(), 0);
        }
    }

    fn rejects<T: Serialize + DeserializeOwned + std::fmt::Debug>(bytes: &[u8], what: &str) {
        let result = decode::<T>(bytes);
        assert!(
            result.is_err(),
            "{what}: accepted {:02x?} as {:?}",
            bytes,
            result.unwrap()
        );
    }

    #[test]
    fn non_canonical_encodings_are_rejected() {
        let v = vote(5, 6);
        let good = encode(&v);
        assert_eq!(decode::<Vote>(&good).unwrap(), v);
        // Map of 6 entries keyed 0..5, first entry: key 0 -> epoch 5.
        assert_eq!(&good[..3], &[0xa6, 0x00, 0x05]);

        let mut long_int = good.clone();
        long_int.splice(2..3, [0x18, 0x05]);
        rejects::<Vote>(&long_int, "long-form integer");

        let mut long_key = good.clone();
        long_key.splice(1..2, [0x18, 0x00]);
        rejects::<Vote>(&long_key, "long-form map key");

        let mut indefinite = good.clone();
        indefinite[0] = 0xbf;
        indefinite.push(0xff);
        rejects::<Vote>(&indefinite, "indefinite-length map");

        let mut extra = good.clone();
        extra[0] = 0xa7;
        extra.extend_from_slice(&[0x06, 0x00]);
        rejects::<Vote>(&extra, "unknown field");

        let mut trailing = good.clone();
        trailing.push(0x00);
        rejects::<Vote>(&trailing, "trailing byte");

        let named = serde_cbor::to_vec(&v).unwrap();
        rejects::<Vote>(&named, "field names instead of indices");

        // Swap the first two entries (keys 0 and 1).
        let mut reordered = vec![0xa6, 0x01, 0x06, 0x00, 0x05];
        reordered.extend_from_slice(&good[5..]);
        rejects::<Vote>(&reordered, "keys out of order");

        let mut duplicate = vec![0xa6, 0x00, 0x05, 0x00, 0x05];
        duplicate.extend_from_slice(&good[5..]);
        rejects::<Vote>(&duplicate, "duplicate key");

        // Hash of 31 bytes: key 2 holds the block id (0x58 0x20 + 32 bytes).
        let at = good.windows(2).position(|w| w == [0x58, 0x20]).unwrap();
        let mut short_hash = good.clone();
        short_hash[at + 1] = 0x1f;
        short_hash.remove(at + 2);
        rejects::<Vote>(&short_hash, "31-byte hash");

        // Indefinite-length byte string for the signature.
        let at = good.windows(2).position(|w| w == [0x58, 0x40]).unwrap();
        let mut chunked = good[..at].to_vec();
        chunked.extend_from_slice(&[0x5f, 0x58, 0x20]);
        chunked.extend_from_slice(&[9; 32]);
        chunked.extend_from_slice(&[0x58, 0x20]);
        chunked.extend_from_slice(&[9; 32]);
        chunked.push(0xff);
        rejects::<Vote>(&chunked, "chunked byte string");

        rejects::<Vote>(&[], "empty input");
        rejects::<Vote>(&good[..good.len() - 1], "truncated");
    }

    /// spec/wire.md's examples are exactly what the code encodes, and each
    /// decodes strictly.
    #[test]
    fn wire_md_examples_match_the_code() {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/wire.md")).unwrap();
        let generated = examples_markdown();
        assert!(
            doc.contains(&generated),
            "spec/wire.md examples are stale: run `cargo run -p bftlog-spec --example wire_examples` and paste the output under ## Examples"
        );
    }

    #[test]
    fn variants_are_keyed_by_index() {
        assert_eq!(encode(&ClientRequest::GetCheckpoint), vec![0x01]);
        // Struct variants: a one-entry map from variant index to the fields.
        let by_index = ClientRequest::GetInclusionProof {
            leaf: LeafRef::Index { index: 5 },
            tree_size: 9,
        };
        assert_eq!(
            encode(&by_index),
            vec![
                0xa1, 0x02, 0xa2, 0x00, 0xa1, 0x00, 0xa1, 0x00, 0x05, 0x01, 0x09
            ]
        );
        let vote = encode(&ConsensusMessage::Vote { vote: vote(1, 2) });
        assert_eq!(&vote[..4], &[0xa1, 0x01, 0xa1, 0x00]);
        // A variant name instead of its index is not canonical.
        rejects::<ClientRequest>(
            &serde_cbor::to_vec(&ClientRequest::GetCheckpoint).unwrap(),
            "variant by name",
        );
        rejects::<ClientRequest>(&[0x05], "unknown variant index");
        rejects::<ClientRequest>(&[0x18, 0x01], "long-form variant index");
    }

    #[test]
    fn bounds_are_checked_before_allocation() {
        // A QC announcing 257 signatures (over MAX_REPLICAS) is rejected on
        // the array header alone.
        let mut bytes = encode(&qc(3, 1));
        let at = bytes.len() - (1 + 1 + 1 + 1 + 2 + 64) - 1;
        assert_eq!(bytes[at], 0x81, "one-element signature array");
        bytes.truncate(at);
        bytes.extend_from_slice(&[0x99, 0x01, 0x01]);
        let err = decode::<QuorumCert>(&bytes).unwrap_err();
        assert!(err.to_string().contains("at most 256"), "{err}");

        // A byte string claiming 4 GiB in a short message.
        let mut huge = vec![0xa1, 0x00, 0xa1, 0x00, 0x81, 0x5a, 0xff, 0xff, 0xff, 0xff];
        huge.extend_from_slice(&[0; 16]);
        rejects::<ClientRequest>(&huge, "oversized byte string claim");

        // An entry one byte over the limit.
        let big = ClientRequest::AppendMultiproof {
            entries: BoundedVec::new(vec![]).unwrap(),
        };
        let mut bytes = encode(&big);
        bytes.pop();
        bytes.push(0x81);
        bytes.extend_from_slice(&[0x5a, 0x00, 0x01, 0x00, 0x01]);
        bytes.extend_from_slice(&vec![0u8; MAX_ENTRY_BYTES + 1]);
        rejects::<ClientRequest>(&bytes, "entry over 65,535 bytes");

        assert!(matches!(
            decode::<Vote>(&vec![0; MAX_MESSAGE_BYTES + 1]),
            Err(DecodeError::TooLarge(_))
        ));
    }

    #[test]
    fn frame_decoder_rejects_oversized_headers_before_buffering() {
        let mut decoder = FrameDecoder::new(1024);
        decoder.push(&2048u32.to_be_bytes());
        assert_eq!(
            decoder.next_message(),
            Err(FrameError::TooLarge(2048, 1024))
        );
        let mut decoder = FrameDecoder::new(1024);
        decoder.push(&[0, 0]);
        assert_eq!(decoder.next_message(), Ok(None));
    }
}
