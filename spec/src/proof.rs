//! C2SP tlog-proof v1: offline-verifiable receipts
//! (`c2sp.org/tlog-proof@v1`, optional `extra`, `index N`, inclusion hashes,
//! a blank line, then the signed checkpoint verbatim).
//!
//! Normative description: `spec/tlog-proof.md`.

use std::fmt::Write as _;

use crate::encoding::{decode_base64, encode_base64, parse_decimal};
use crate::merkle::{self, Hash, InclusionError, MAX_PROOF_LEN};
use crate::note::{MAX_NOTE_BYTES, Note, NoteError};
use crate::policy::{Policy, VerifiedCheckpoint, VerifyCheckpointError};

pub const HEADER: &str = "c2sp.org/tlog-proof@v1";
/// Largest `extra` payload accepted, in bytes (decoded).
pub const MAX_EXTRA_BYTES: usize = 64 * 1024;
/// Largest proof file accepted.
pub const MAX_PROOF_BYTES: usize = MAX_NOTE_BYTES + 128 * 1024;

/// A parsed, unverified tlog-proof.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlogProof {
    /// Unauthenticated application data; never trust it implicitly.
    pub extra: Option<Vec<u8>>,
    pub index: u64,
    pub inclusion: Vec<Hash>,
    pub checkpoint: Note,
}

/// Why a tlog-proof was rejected while parsing. `line` is 1-based.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofParseError {
    #[error("proof is larger than {MAX_PROOF_BYTES} bytes")]
    TooLarge,
    #[error("proof is not valid UTF-8")]
    NotUtf8,
    #[error("line 1 must be {HEADER:?}")]
    Header,
    #[error("line {line}: extra data is not canonical base64 or exceeds {MAX_EXTRA_BYTES} bytes")]
    Extra { line: usize },
    #[error("line {line}: expected \"index N\" with a canonical decimal N")]
    Index { line: usize },
    #[error("line {line}: inclusion proof hash is not canonical base64 of 32 bytes")]
    Hash { line: usize },
    #[error("more than {MAX_PROOF_LEN} inclusion proof hashes")]
    TooManyHashes,
    #[error("missing the blank line before the checkpoint")]
    Truncated,
    #[error("checkpoint: {0}")]
    Checkpoint(#[from] NoteError),
}

impl TlogProof {
    pub fn parse(bytes: &[u8]) -> Result<Self, ProofParseError> {
        if bytes.len() > MAX_PROOF_BYTES {
            return Err(ProofParseError::TooLarge);
        }
        let text = std::str::from_utf8(bytes).map_err(|_| ProofParseError::NotUtf8)?;
        Self::parse_text(text, Note::parse)
    }

    /// [`TlogProof::parse`] for receipts that mostly share one checkpoint
    /// (all receipts of one append do): a checkpoint whose bytes equal the
    /// cached one's is cloned instead of parsed again, and the cache keeps
    /// the last checkpoint parsed. Accepts and rejects exactly what
    /// `parse` does.
    pub fn parse_str_cached(
        text: &str,
        cache: &mut Option<(String, Note)>,
    ) -> Result<Self, ProofParseError> {
        if text.len() > MAX_PROOF_BYTES {
            return Err(ProofParseError::TooLarge);
        }
        Self::parse_text(text, |note| {
            if let Some((bytes, parsed)) = cache.as_ref() {
                if bytes.as_bytes() == note {
                    return Ok(parsed.clone());
                }
            }
            let parsed = Note::parse(note)?;
            let text = std::str::from_utf8(note).expect("a slice of a str at a line boundary");
            *cache = Some((text.to_owned(), parsed.clone()));
            Ok(parsed)
        })
    }

    fn parse_text(
        text: &str,
        parse_note: impl FnOnce(&[u8]) -> Result<Note, NoteError>,
    ) -> Result<Self, ProofParseError> {
        let mut rest = text;
        let mut line_no = 0;
        let (_, header) = take_line(&mut rest, &mut line_no).ok_or(ProofParseError::Truncated)?;
        if header != HEADER {
            return Err(ProofParseError::Header);
        }
        let (mut line, mut current) =
            take_line(&mut rest, &mut line_no).ok_or(ProofParseError::Truncated)?;
        let mut extra = None;
        if let Some(data) = current.strip_prefix("extra ") {
            let decoded = decode_base64(data)
                .ok()
                .filter(|d| d.len() <= MAX_EXTRA_BYTES)
                .ok_or(ProofParseError::Extra { line })?;
            extra = Some(decoded);
            (line, current) =
                take_line(&mut rest, &mut line_no).ok_or(ProofParseError::Truncated)?;
        }
        let index = current
            .strip_prefix("index ")
            .and_then(|n| parse_decimal(n).ok())
            .ok_or(ProofParseError::Index { line })?;
        let mut inclusion = Vec::new();
        loop {
            let (line, current) =
                take_line(&mut rest, &mut line_no).ok_or(ProofParseError::Truncated)?;
            if current.is_empty() {
                break;
            }
            if inclusion.len() == MAX_PROOF_LEN {
                return Err(ProofParseError::TooManyHashes);
            }
            inclusion.push(Hash::from_base64(current).map_err(|_| ProofParseError::Hash { line })?);
        }
        let checkpoint = parse_note(rest.as_bytes())?;
        Ok(TlogProof {
            extra,
            index,
            inclusion,
            checkpoint,
        })
    }

    pub fn format(&self) -> String {
        format_parts(
            self.extra.as_deref(),
            self.index,
            &self.inclusion,
            &self.checkpoint.format(),
        )
    }

    /// The receipts of a batch of entries proved against one checkpoint,
    /// each exactly as [`TlogProof::format`] would give it, with the note
    /// formatted once rather than once per receipt.
    pub fn format_batch<'a>(
        checkpoint: &Note,
        proofs: impl IntoIterator<Item = (u64, &'a [Hash])>,
    ) -> Vec<String> {
        let note = checkpoint.format();
        proofs
            .into_iter()
            .map(|(index, inclusion)| Self::format_with_note(index, inclusion, &note))
            .collect()
    }

    /// One receipt without extra data, exactly as [`TlogProof::format`]
    /// would give it, from its parts and the checkpoint note's text
    /// (`Note::format`), so that a holder of many receipts of one
    /// checkpoint keeps the note's text once and formats each on demand.
    pub fn format_with_note(index: u64, inclusion: &[Hash], note_text: &str) -> String {
        format_parts(None, index, inclusion, note_text)
    }

    /// Verifies the receipt for the entry whose leaf hash is `leaf`:
    /// checkpoint signatures under the policy, then inclusion.
    pub fn verify(&self, policy: &Policy, leaf: &Hash) -> Result<VerifiedProof, ProofVerifyError> {
        let checkpoint = policy.verify_checkpoint(&self.checkpoint)?;
        self.verify_with_checkpoint(checkpoint, leaf)
    }

    /// Verifies inclusion against a checkpoint already verified (e.g. one
    /// shared by many receipts in a batch).
    pub fn verify_with_checkpoint(
        &self,
        checkpoint: VerifiedCheckpoint,
        leaf: &Hash,
    ) -> Result<VerifiedProof, ProofVerifyError> {
        if checkpoint.note() != &self.checkpoint {
            return Err(ProofVerifyError::CheckpointMismatch);
        }
        let cp = checkpoint.checkpoint();
        merkle::verify_inclusion(self.index, cp.size, leaf, &self.inclusion, &cp.root)?;
        Ok(VerifiedProof {
            index: self.index,
            leaf: *leaf,
            extra: self.extra.clone(),
            checkpoint,
        })
    }

    /// Verifies the receipt for raw entry bytes (leaf hash computed here).
    pub fn verify_entry(
        &self,
        policy: &Policy,
        entry: &[u8],
    ) -> Result<VerifiedProof, ProofVerifyError> {
        self.verify(policy, &merkle::leaf_hash(entry))
    }
}

/// Splits off one '\n'-terminated line, numbering it.
fn take_line<'a>(rest: &mut &'a str, line_no: &mut usize) -> Option<(usize, &'a str)> {
    let (line, tail) = rest.split_once('\n')?;
    *rest = tail;
    *line_no += 1;
    Some((*line_no, line))
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofVerifyError {
    #[error("checkpoint: {0}")]
    Checkpoint(#[from] VerifyCheckpointError),
    #[error("inclusion: {0}")]
    Inclusion(#[from] InclusionError),
    #[error("the verified checkpoint is not the one in this proof")]
    CheckpointMismatch,
}

/// A receipt whose checkpoint satisfied the policy and whose inclusion proof
/// verified. Only [`TlogProof::verify`] and its variants make one.
#[derive(Clone, Debug)]
pub struct VerifiedProof {
    index: u64,
    leaf: Hash,
    extra: Option<Vec<u8>>,
    checkpoint: VerifiedCheckpoint,
}

impl VerifiedProof {
    pub fn index(&self) -> u64 {
        self.index
    }

    pub fn leaf_hash(&self) -> &Hash {
        &self.leaf
    }

    /// Unauthenticated extra data carried by the proof.
    pub fn extra(&self) -> Option<&[u8]> {
        self.extra.as_deref()
    }

    pub fn checkpoint(&self) -> &VerifiedCheckpoint {
        &self.checkpoint
    }
}

fn format_parts(extra: Option<&[u8]>, index: u64, inclusion: &[Hash], note: &str) -> String {
    let mut out = String::with_capacity(64 + inclusion.len() * 45 + note.len());
    out.push_str(HEADER);
    out.push('\n');
    if let Some(extra) = extra {
        out.push_str("extra ");
        out.push_str(&encode_base64(extra));
        out.push('\n');
    }
    out.push_str("index ");
    write!(out, "{index}").expect("writing to a String");
    out.push('\n');
    for hash in inclusion {
        crate::encoding::push_base64_short(&mut out, &hash.0);
        out.push('\n');
    }
    out.push('\n');
    out.push_str(note);
    out
}
