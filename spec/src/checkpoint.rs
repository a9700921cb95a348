//! C2SP tlog-checkpoint: the note body `origin\nsize\nbase64(root)\n` plus
//! optional extension lines.
//!
//! Normative description: `spec/note.md` (checkpoint section).

use crate::encoding::{DecimalError, parse_decimal};
use crate::merkle::Hash;
use crate::note::{Note, NoteError, SignError, SignerKey, TextError, check_text};
use std::fmt;

/// Most extension lines accepted.
pub const MAX_EXTENSION_LINES: usize = 16;

/// A checkpoint body. Parsing is strict: `format(parse(x)) == x`.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
    pub extensions: Vec<String>,
}

/// Why a checkpoint body was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint text: {0}")]
    Text(#[from] TextError),
    #[error("checkpoint needs origin, size and root lines")]
    MissingLines,
    #[error("origin line is empty")]
    EmptyOrigin,
    #[error("size line: {0}")]
    Size(DecimalError),
    #[error("root line is not canonical base64 of a 32-byte hash")]
    Root,
    #[error("extension line {0} is empty")]
    EmptyExtension(usize),
    #[error("more than {MAX_EXTENSION_LINES} extension lines")]
    TooManyExtensions,
}

impl Checkpoint {
    pub fn new(origin: &str, size: u64, root: Hash) -> Self {
        Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
            extensions: Vec::new(),
        }
    }

    /// Parses a checkpoint body (note text).
    pub fn parse(text: &str) -> Result<Self, CheckpointError> {
        check_text(text)?;
        let mut lines = text[..text.len() - 1].split('\n');
        let (Some(origin), Some(size), Some(root)) = (lines.next(), lines.next(), lines.next())
        else {
            return Err(CheckpointError::MissingLines);
        };
        if origin.is_empty() {
            return Err(CheckpointError::EmptyOrigin);
        }
        let size = parse_decimal(size).map_err(CheckpointError::Size)?;
        let root = Hash::from_base64(root).map_err(|_| CheckpointError::Root)?;
        let mut extensions = Vec::new();
        for (i, line) in lines.enumerate() {
            if line.is_empty() {
                return Err(CheckpointError::EmptyExtension(i + 1));
            }
            if extensions.len() == MAX_EXTENSION_LINES {
                return Err(CheckpointError::TooManyExtensions);
            }
            extensions.push(line.to_owned());
        }
        Ok(Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
            extensions,
        })
    }

    /// The note text.
    pub fn format(&self) -> String {
        let mut out = format!("{}\n{}\n{}\n", self.origin, self.size, self.root);
        for line in &self.extensions {
            out.push_str(line);
            out.push('\n');
        }
        out
    }

    /// Signs the body with an Ed25519 key, giving a one-signature note.
    pub fn sign(&self, key: &SignerKey) -> Result<Note, CheckpointSignError> {
        let text = self.format();
        // A signer must never sign a body it could not parse back into the
        // same checkpoint (e.g. an origin holding a newline).
        if Checkpoint::parse(&text)? != *self {
            return Err(CheckpointSignError::NotCanonical);
        }
        let mut note = Note::new(&text).map_err(CheckpointError::Text)?;
        note.sign(key)?;
        Ok(note)
    }
}

impl fmt::Display for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.format())
    }
}

/// Why a checkpoint could not be signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointSignError {
    #[error("checkpoint does not format to a valid body: {0}")]
    Checkpoint(#[from] CheckpointError),
    #[error("checkpoint fields do not survive formatting and parsing")]
    NotCanonical,
    #[error(transparent)]
    Sign(#[from] SignError),
}

/// Why a signed checkpoint note was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignedCheckpointError {
    #[error("note: {0}")]
    Note(#[from] NoteError),
    #[error("checkpoint: {0}")]
    Checkpoint(#[from] CheckpointError),
}

/// Parses a signed note and its checkpoint body (form only; no signature is
/// verified here).
pub fn parse_signed(bytes: &[u8]) -> Result<(Note, Checkpoint), SignedCheckpointError> {
    let note = Note::parse(bytes)?;
    let checkpoint = Checkpoint::parse(note.text())?;
    Ok((note, checkpoint))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: &str = "nND/nri/U0xuHUrYSy0HtMeal2vzD9V4k/BO79C+QeI=";

    #[test]
    fn round_trip() {
        for text in [
            format!("o\n0\n{ROOT}\n"),
            format!("example.com/log\n12\n{ROOT}\next a\next b\n"),
        ] {
            let cp = Checkpoint::parse(&text).unwrap();
            assert_eq!(cp.format(), text);
        }
    }

    #[test]
    fn rejects_malformed() {
        let cases = [
            (
                format!("o\n01\n{ROOT}\n"),
                CheckpointError::Size(DecimalError::LeadingZero),
            ),
            (
                format!("o\n-1\n{ROOT}\n"),
                CheckpointError::Size(DecimalError::NotDigits),
            ),
            (
                format!("o\n18446744073709551616\n{ROOT}\n"),
                CheckpointError::Size(DecimalError::Overflow),
            ),
            (format!("\n1\n{ROOT}\n"), CheckpointError::EmptyOrigin),
            ("o\n1\n\n".to_owned(), CheckpointError::Root),
            ("o\n1\nAAAA\n".to_owned(), CheckpointError::Root),
            (
                "o\n1\nnND/nri/U0xuHUrYSy0HtMeal2vzD9V4k/BO79C+QeJ=\n".to_owned(),
                CheckpointError::Root,
            ),
            (
                format!("o\n1\n{}\n", ROOT.trim_end_matches('=')),
                CheckpointError::Root,
            ),
            (
                format!("o\n1\n{ROOT}\n\n"),
                CheckpointError::EmptyExtension(1),
            ),
            ("o\n1\n".to_owned(), CheckpointError::MissingLines),
            (
                format!("o\n1\n{ROOT}"),
                CheckpointError::Text(TextError::NoFinalNewline),
            ),
            (
                format!("o\r\n1\n{ROOT}\n"),
                CheckpointError::Text(TextError::ControlCharacter(1)),
            ),
        ];
        for (text, want) in cases {
            assert_eq!(Checkpoint::parse(&text), Err(want), "{text:?}");
        }
        let many = format!("o\n1\n{ROOT}\n{}", "e\n".repeat(MAX_EXTENSION_LINES + 1));
        assert_eq!(
            Checkpoint::parse(&many),
            Err(CheckpointError::TooManyExtensions)
        );
    }
}
