//! Strict text encodings shared by every format: canonical, padded standard
//! base64 (RFC 4648 §4) and canonical unsigned decimals.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// Why a base64 field was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Base64Error {
    #[error("not canonical padded standard base64")]
    Invalid,
    #[error("decodes to {actual} bytes, expected {expected}")]
    WrongLength { expected: usize, actual: usize },
}

/// Decodes standard base64 with padding, rejecting anything that does not
/// re-encode to the same text (non-zero trailing bits, missing or extra
/// padding, whitespace, the URL alphabet).
pub fn decode_base64(text: &str) -> Result<Vec<u8>, Base64Error> {
    let bytes = STANDARD.decode(text).map_err(|_| Base64Error::Invalid)?;
    // The engine already rejects non-canonical trailing bits and padding;
    // the round trip makes the rule explicit and independent of its config.
    if STANDARD.encode(&bytes) != text {
        return Err(Base64Error::Invalid);
    }
    Ok(bytes)
}

/// [`decode_base64`] of exactly `N` bytes, without allocating: the form of
/// every hash in checkpoints and proofs, where a receipt holds dozens.
pub fn decode_base64_array<const N: usize>(text: &str) -> Result<[u8; N], Base64Error> {
    let encoded_len = N.div_ceil(3) * 4;
    if text.len() != encoded_len {
        // Not the canonical length of N bytes: let the general path say
        // whether it is invalid or merely the wrong length.
        let bytes = decode_base64(text)?;
        return Err(Base64Error::WrongLength {
            expected: N,
            actual: bytes.len(),
        });
    }
    assert!(N <= 768, "arrays up to 768 bytes");
    // The engine wants room for whole 3-byte groups.
    let mut decoded = [0u8; 771];
    let written = STANDARD
        .decode_slice(text, &mut decoded)
        .map_err(|_| Base64Error::Invalid)?;
    if written != N {
        return Err(Base64Error::WrongLength {
            expected: N,
            actual: written,
        });
    }
    let mut out = [0u8; N];
    out.copy_from_slice(&decoded[..N]);
    // The same explicit round trip as `decode_base64`, on the stack.
    let mut reencoded = [0u8; 1024];
    let n = STANDARD
        .encode_slice(out, &mut reencoded)
        .expect("sized for the encoding");
    if &reencoded[..n] != text.as_bytes() {
        return Err(Base64Error::Invalid);
    }
    Ok(out)
}

/// Encodes standard padded base64.
pub fn encode_base64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// Appends the standard padded base64 of `bytes` (at most
/// [`SHORT_BASE64_MAX_BYTES`]) to `out`, encoding on the stack. A receipt
/// holds dozens of hashes, and the engine's `encode_string` (a chunked
/// encoder writing through a sink) was 18% of the bench client's CPU.
pub fn push_base64_short(out: &mut String, bytes: &[u8]) {
    assert!(
        bytes.len() <= SHORT_BASE64_MAX_BYTES,
        "short base64 input of {} bytes",
        bytes.len()
    );
    let mut buf = [0u8; SHORT_BASE64_MAX_BYTES.div_ceil(3) * 4];
    let n = STANDARD
        .encode_slice(bytes, &mut buf)
        .expect("sized for the encoding");
    out.push_str(std::str::from_utf8(&buf[..n]).expect("base64 is ASCII"));
}

/// The most bytes [`push_base64_short`] encodes.
pub const SHORT_BASE64_MAX_BYTES: usize = 96;

/// Why a decimal field was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecimalError {
    #[error("empty number")]
    Empty,
    #[error("not an ASCII decimal number")]
    NotDigits,
    #[error("leading zero")]
    LeadingZero,
    #[error("number does not fit in 64 bits")]
    Overflow,
}

/// Parses an ASCII decimal with no sign, no leading zeroes (except `0`
/// itself), no whitespace, fitting in a u64.
pub fn parse_decimal(text: &str) -> Result<u64, DecimalError> {
    let bytes = text.as_bytes();
    if bytes.is_empty() {
        return Err(DecimalError::Empty);
    }
    if !bytes.iter().all(u8::is_ascii_digit) {
        return Err(DecimalError::NotDigits);
    }
    if bytes.len() > 1 && bytes[0] == b'0' {
        return Err(DecimalError::LeadingZero);
    }
    let mut value: u64 = 0;
    for &b in bytes {
        value = value
            .checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(b - b'0')))
            .ok_or(DecimalError::Overflow)?;
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_base64_matches_the_engine() {
        for len in 0..=SHORT_BASE64_MAX_BYTES {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + len) as u8).collect();
            let mut out = String::from("x");
            push_base64_short(&mut out, &bytes);
            assert_eq!(out, format!("x{}", encode_base64(&bytes)), "{len} bytes");
        }
    }

    #[test]
    fn decimals_are_canonical() {
        assert_eq!(parse_decimal("0"), Ok(0));
        assert_eq!(parse_decimal("18446744073709551615"), Ok(u64::MAX));
        assert_eq!(
            parse_decimal("18446744073709551616"),
            Err(DecimalError::Overflow)
        );
        assert_eq!(parse_decimal("00"), Err(DecimalError::LeadingZero));
        assert_eq!(parse_decimal("01"), Err(DecimalError::LeadingZero));
        for bad in ["+1", "-1", " 1", "1 ", "1e3", "0x1", "١"] {
            assert_eq!(parse_decimal(bad), Err(DecimalError::NotDigits), "{bad:?}");
        }
        assert_eq!(parse_decimal(""), Err(DecimalError::Empty));
    }

    #[test]
    fn base64_is_strict() {
        assert_eq!(decode_base64("AAE=").unwrap(), vec![0, 1]);
        // Non-zero trailing bits, missing padding, URL alphabet, whitespace.
        for bad in ["AAF=", "AAE", "AA==AA==", "-_8=", "AA E=", "AAE=\n", "A==="] {
            assert_eq!(decode_base64(bad), Err(Base64Error::Invalid), "{bad:?}");
        }
        assert_eq!(decode_base64("").unwrap(), Vec::<u8>::new());
    }

    /// The allocation-free array decoder agrees with the general one on
    /// every input: same bytes, same error kind.
    #[test]
    fn base64_arrays_agree_with_the_general_decoder() {
        let hash: Vec<u8> = (0u8..32).collect();
        let good = encode_base64(&hash);
        assert_eq!(decode_base64_array::<32>(&good).unwrap().to_vec(), hash);
        let mut cases = vec![
            good.clone(),
            encode_base64(&[7u8; 31]),
            encode_base64(&[7u8; 33]),
        ];
        // Every single-character change of a canonical hash, and every cut.
        for i in 0..good.len() {
            for c in ["A", "B", "/", "+", "=", "-", " ", "\n", "é"] {
                let mut s = good.clone();
                s.replace_range(i..i + 1, c);
                cases.push(s);
            }
            cases.push(good[..i].to_string());
        }
        for text in &cases {
            let general = decode_base64(text).and_then(|bytes| {
                <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| Base64Error::WrongLength {
                    expected: 32,
                    actual: bytes.len(),
                })
            });
            assert_eq!(decode_base64_array::<32>(text), general, "{text:?}");
        }
        assert_eq!(
            decode_base64_array::<2>("AAE="),
            Ok([0, 1]),
            "padding of a short array"
        );
        assert_eq!(decode_base64_array::<2>("AAF="), Err(Base64Error::Invalid));
    }
}
