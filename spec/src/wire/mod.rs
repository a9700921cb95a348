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
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_cbor::ser::to_vec_packed(value).expect("wire types always serialize")
}

/// Decodes a value strictly (see the module docs).
pub fn decode<T: Serialize + DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(DecodeError::TooLarge(bytes.len()));
    }
    // from_slice rejects trailing bytes; reading from a slice means no
    // length field can make it allocate more than the input holds.
    let value: T = serde_cbor::from_slice(bytes).map_err(|e| DecodeError::Cbor(e.to_string()))?;
    if encode(&value) != bytes {
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
