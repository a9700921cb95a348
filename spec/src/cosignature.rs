//! C2SP tlog-cosignature v1: timestamped Ed25519 witness cosignatures
//! (signature type 0x04).
//!
//! Normative description: `spec/note.md` (cosignature section).
//!
//! A cosignature line is a note signature whose bytes after the key ID are
//! `u64 big-endian timestamp || Ed25519 signature`, the signature covering
//! `cosignature/v1\ntime <T>\n` followed by the checkpoint body.

use crate::note::SignatureError;
use ed25519_dalek::Signature;

/// Cosignature timestamps must not exceed 2^63 - 1.
pub const MAX_TIMESTAMP: u64 = (1 << 63) - 1;

/// The message a v1 cosignature signs.
pub fn signed_message(timestamp: u64, checkpoint_body: &str) -> String {
    let mut message = String::with_capacity(32 + checkpoint_body.len());
    message.push_str("cosignature/v1\ntime ");
    message.push_str(&timestamp.to_string());
    message.push('\n');
    message.push_str(checkpoint_body);
    message
}

/// Splits the 72 signature bytes after the key ID into timestamp and
/// Ed25519 signature.
pub fn split_signature(bytes: &[u8]) -> Result<(u64, Signature), SignatureError> {
    if bytes.len() != 72 {
        return Err(SignatureError::Length {
            expected: 72,
            actual: bytes.len(),
        });
    }
    let timestamp = u64::from_be_bytes(bytes[..8].try_into().expect("length checked"));
    if timestamp > MAX_TIMESTAMP {
        return Err(SignatureError::Timestamp);
    }
    let signature = Signature::from_slice(&bytes[8..]).map_err(|_| SignatureError::Invalid)?;
    Ok((timestamp, signature))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_layout() {
        assert_eq!(
            signed_message(1679315147, "o\n1\nr\n"),
            "cosignature/v1\ntime 1679315147\no\n1\nr\n"
        );
        assert_eq!(signed_message(0, "x\n"), "cosignature/v1\ntime 0\nx\n");
    }

    #[test]
    fn rejects_large_timestamps_and_lengths() {
        let mut bytes = [0u8; 72];
        bytes[0] = 0x80;
        assert_eq!(split_signature(&bytes), Err(SignatureError::Timestamp));
        assert!(matches!(
            split_signature(&bytes[..71]),
            Err(SignatureError::Length { .. })
        ));
    }
}
