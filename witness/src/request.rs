//! The `add-checkpoint` request body (C2SP tlog-witness):
//!
//! ```text
//! old <size>
//! <base64 hash>          (0 to 63 consistency proof lines)
//!
//! <signed checkpoint note>
//! ```
//!
//! Parsing is strict: a canonical decimal, canonical padded base64 of
//! exactly 32 bytes per proof line, at most 63 lines, and a checkpoint note
//! that passes every signed-note and checkpoint rule. Normative
//! description: `spec/witness.md`.

use bftlog_spec::checkpoint::{Checkpoint, CheckpointError};
use bftlog_spec::encoding::parse_decimal;
use bftlog_spec::merkle::Hash;
use bftlog_spec::note::{Note, NoteError};

/// Largest request body a witness reads. A checkpoint of a 64-replica log
/// with 63 proof lines fits in under 12 KiB.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// C2SP: "The client MUST NOT send more than 63 consistency proof lines."
pub const MAX_PROOF_LINES: usize = 63;

/// A parsed `add-checkpoint` body. Signatures are not verified yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddCheckpoint {
    pub old_size: u64,
    pub proof: Vec<Hash>,
    pub note: Note,
    pub checkpoint: Checkpoint,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("request body is larger than {MAX_BODY_BYTES} bytes")]
    TooLarge,
    #[error("line {line}: {reason}")]
    Line { line: usize, reason: &'static str },
    #[error("checkpoint note: {0}")]
    Note(NoteError),
    #[error("checkpoint: {0}")]
    Checkpoint(CheckpointError),
}

/// Parses an `add-checkpoint` request body.
pub fn parse_add_checkpoint(body: &[u8]) -> Result<AddCheckpoint, RequestError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(RequestError::TooLarge);
    }
    let mut pos = 0usize;
    let mut line_no = 0usize;
    let mut next_line = |pos: &mut usize| -> Result<(usize, &[u8]), RequestError> {
        line_no += 1;
        let end = body[*pos..]
            .iter()
            .position(|&b| b == b'\n')
            .ok_or(RequestError::Line {
                line: line_no,
                reason: "missing newline",
            })?;
        let line = &body[*pos..*pos + end];
        *pos += end + 1;
        Ok((line_no, line))
    };
    let (line, old) = next_line(&mut pos)?;
    let old_size = std::str::from_utf8(old)
        .ok()
        .and_then(|l| l.strip_prefix("old "))
        .and_then(|d| parse_decimal(d).ok())
        .ok_or(RequestError::Line {
            line,
            reason: "expected \"old <canonical decimal>\"",
        })?;
    let mut proof = Vec::new();
    loop {
        let (line, text) = next_line(&mut pos)?;
        if text.is_empty() {
            break;
        }
        if proof.len() == MAX_PROOF_LINES {
            return Err(RequestError::Line {
                line,
                reason: "more than 63 consistency proof lines",
            });
        }
        let hash = std::str::from_utf8(text)
            .ok()
            .and_then(|t| Hash::from_base64(t).ok())
            .ok_or(RequestError::Line {
                line,
                reason: "expected canonical base64 of a 32-byte hash",
            })?;
        proof.push(hash);
    }
    let note = Note::parse(&body[pos..]).map_err(RequestError::Note)?;
    let checkpoint = Checkpoint::parse(note.text()).map_err(RequestError::Checkpoint)?;
    Ok(AddCheckpoint {
        old_size,
        proof,
        note,
        checkpoint,
    })
}

/// Formats an `add-checkpoint` body; `note` is the signed checkpoint.
pub fn format_add_checkpoint(old_size: u64, proof: &[Hash], note: &str) -> String {
    let mut out = String::with_capacity(16 + proof.len() * 45 + note.len());
    out.push_str("old ");
    out.push_str(&old_size.to_string());
    out.push('\n');
    for hash in proof {
        out.push_str(&hash.to_base64());
        out.push('\n');
    }
    out.push('\n');
    out.push_str(note);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use bftlog_spec::note::{KeyType, SignerKey};

    fn note() -> String {
        let key = SignerKey::new(
            "example.com/log",
            KeyType::Ed25519,
            ed25519_dalek::SigningKey::from_bytes(&[1; 32]),
        )
        .unwrap();
        Checkpoint::new("example.com/log", 5, Hash([7; 32]))
            .sign(&key)
            .unwrap()
            .format()
    }

    #[test]
    fn round_trip() {
        let proof = vec![Hash([1; 32]), Hash([2; 32])];
        let body = format_add_checkpoint(3, &proof, &note());
        let parsed = parse_add_checkpoint(body.as_bytes()).unwrap();
        assert_eq!(parsed.old_size, 3);
        assert_eq!(parsed.proof, proof);
        assert_eq!(parsed.note.format(), note());
        assert_eq!(parsed.checkpoint.size, 5);
        assert_eq!(
            format_add_checkpoint(parsed.old_size, &parsed.proof, &parsed.note.format()),
            body
        );
    }

    #[test]
    fn rejects_malformed_bodies() {
        let n = note();
        let hash = Hash([1; 32]).to_base64();
        let bad = [
            format!("old 03\n\n{n}"),
            format!("old -1\n\n{n}"),
            format!("old  3\n\n{n}"),
            format!("Old 3\n\n{n}"),
            format!("old 3\r\n\n{n}"),
            format!("old 3\n{}\n\n{n}", &hash[..43]),
            format!("old 3\n{hash} \n\n{n}"),
            format!(
                "old 3\n{}\n\n{n}",
                Hash([1; 32]).to_base64().replace('=', "")
            ),
            format!("old 3\n{hash}\n{n}"),
            "old 3\n".to_string(),
            "old 3".to_string(),
            format!("old 3\n\n{}", n.trim_end()),
            format!("old 3\n\n{n}trailing"),
            format!(
                "old 3\n\nexample.com/log\n5\nnot-a-hash\n\n{}",
                n.lines().last().unwrap()
            ),
        ];
        for body in bad {
            assert!(
                parse_add_checkpoint(body.as_bytes()).is_err(),
                "accepted {body:?}"
            );
        }
    }

    #[test]
    fn proof_line_limit() {
        let n = note();
        let at_limit = format_add_checkpoint(3, &vec![Hash([1; 32]); 63], &n);
        assert!(parse_add_checkpoint(at_limit.as_bytes()).is_ok());
        let over = format_add_checkpoint(3, &vec![Hash([1; 32]); 64], &n);
        assert_eq!(
            parse_add_checkpoint(over.as_bytes()),
            Err(RequestError::Line {
                line: 65,
                reason: "more than 63 consistency proof lines"
            })
        );
        let huge = vec![b'a'; MAX_BODY_BYTES + 1];
        assert_eq!(parse_add_checkpoint(&huge), Err(RequestError::TooLarge));
    }
}
