//! Split-view evidence: two signed checkpoints of one origin that cannot
//! both be honest, with the replica keys that signed both.
//!
//! Normative description: `spec/evidence.md`.
//!
//! Two kinds exist. `same-size`: equal sizes, different roots. `inconsistent`:
//! sizes `m < n` and a full consistency path (RFC 9162 §2.1.4.2 after step 2,
//! its first hash taken from the larger tree) that reconstructs the larger
//! root but not the smaller one. Because SHA-256 is collision resistant, a
//! path that reconstructs root `n` consists of the larger tree's real
//! hashes, so the prefix root it yields is the real root of the first `m`
//! leaves: if that differs from the smaller checkpoint's root, no
//! consistency proof can exist. The evidence is transferable: anyone with
//! the policy can check it offline.

use crate::checkpoint::{Checkpoint, CheckpointError};
use crate::encoding::parse_decimal;
use crate::merkle::{self, Hash, MAX_PROOF_LEN};
use crate::note::{KeyType, MAX_NOTE_BYTES, Note, NoteError, VerifierKey};
use crate::policy::Policy;

pub const HEADER: &str = "bftlog.org/split-view@v1";
pub const MAX_EVIDENCE_BYTES: usize = 2 * MAX_NOTE_BYTES + 256 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    SameSize,
    Inconsistent,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::SameSize => "same-size",
            Kind::Inconsistent => "inconsistent",
        }
    }
}

/// Parsed, unchecked evidence. `note_a` is the smaller (or equal) tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Evidence {
    pub kind: Kind,
    /// Replica keys that signed both checkpoints, as claimed.
    pub signers: Vec<VerifierKey>,
    /// Full consistency path from `note_a`'s size to `note_b`'s; empty for
    /// `same-size`.
    pub path: Vec<Hash>,
    pub note_a: Note,
    pub note_b: Note,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvidenceParseError {
    #[error("evidence is larger than {MAX_EVIDENCE_BYTES} bytes")]
    TooLarge,
    #[error("line {line}: {reason}")]
    Line { line: usize, reason: &'static str },
    #[error("line {line}: bad signer key: {error}")]
    Key {
        line: usize,
        error: crate::note::KeyError,
    },
    #[error("note {which}: {error}")]
    Note { which: char, error: NoteError },
    #[error("trailing bytes after note b")]
    Trailing,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvidenceError {
    #[error("note {which}: {error}")]
    Note { which: char, error: NoteError },
    #[error("note {which}: {error}")]
    Checkpoint { which: char, error: CheckpointError },
    #[error("the checkpoints have different origins")]
    OriginsDiffer,
    #[error("origin {0:?} has no log key in the policy")]
    UnknownOrigin(String),
    #[error("note {0} carries no valid signature from a replica of the origin")]
    NoReplicaSignature(char),
    #[error("same size and same root: not a split view")]
    SameTree,
    #[error("note a must be the smaller tree")]
    Order,
    #[error("same-size evidence needs equal sizes and no path")]
    SameSizeShape,
    #[error("consistency path: {0}")]
    Path(merkle::ConsistencyError),
    #[error("the path does not reconstruct note b's root, so it proves nothing")]
    PathNotFromNewTree,
    #[error("the path shows the trees are consistent")]
    Consistent,
    #[error("listed signers differ from the replica keys that signed both")]
    SignerMismatch,
}

impl Evidence {
    pub fn parse(bytes: &[u8]) -> Result<Self, EvidenceParseError> {
        if bytes.len() > MAX_EVIDENCE_BYTES {
            return Err(EvidenceParseError::TooLarge);
        }
        let mut pos = 0usize;
        let mut line_no = 0usize;
        // Reads one '\n'-terminated UTF-8 line.
        let mut line = |pos: &mut usize| -> Result<(usize, &str), EvidenceParseError> {
            line_no += 1;
            let err = |reason| EvidenceParseError::Line {
                line: line_no,
                reason,
            };
            let end = bytes[*pos..]
                .iter()
                .position(|&b| b == b'\n')
                .ok_or(err("missing newline"))?;
            let text =
                std::str::from_utf8(&bytes[*pos..*pos + end]).map_err(|_| err("not UTF-8"))?;
            *pos += end + 1;
            Ok((line_no, text))
        };
        let (n, header) = line(&mut pos)?;
        if header != HEADER {
            return Err(EvidenceParseError::Line {
                line: n,
                reason: "bad header",
            });
        }
        let (n, kind) = line(&mut pos)?;
        let kind = match kind {
            "kind same-size" => Kind::SameSize,
            "kind inconsistent" => Kind::Inconsistent,
            _ => {
                return Err(EvidenceParseError::Line {
                    line: n,
                    reason: "expected \"kind same-size\" or \"kind inconsistent\"",
                });
            }
        };
        let mut signers: Vec<VerifierKey> = Vec::new();
        let mut path = Vec::new();
        let mut notes = Vec::new();
        while notes.len() < 2 {
            let (n, text) = line(&mut pos)?;
            let want = if notes.is_empty() {
                "note-a "
            } else {
                "note-b "
            };
            if let Some(key) = text.strip_prefix("signer ") {
                if !path.is_empty() || !notes.is_empty() {
                    return Err(EvidenceParseError::Line {
                        line: n,
                        reason: "signer lines come before path and notes",
                    });
                }
                let key = VerifierKey::parse(key)
                    .map_err(|error| EvidenceParseError::Key { line: n, error })?;
                if signers.iter().any(|s| s == &key) {
                    return Err(EvidenceParseError::Line {
                        line: n,
                        reason: "duplicate signer",
                    });
                }
                signers.push(key);
            } else if let Some(hash) = text.strip_prefix("path ") {
                if !notes.is_empty() {
                    return Err(EvidenceParseError::Line {
                        line: n,
                        reason: "path lines come before the notes",
                    });
                }
                if path.len() == MAX_PROOF_LEN + 1 {
                    return Err(EvidenceParseError::Line {
                        line: n,
                        reason: "path too long",
                    });
                }
                path.push(
                    Hash::from_base64(hash).map_err(|_| EvidenceParseError::Line {
                        line: n,
                        reason: "bad path hash",
                    })?,
                );
            } else if let Some(len) = text.strip_prefix(want) {
                let len = parse_decimal(len)
                    .ok()
                    .and_then(|l| usize::try_from(l).ok())
                    .filter(|&l| l <= MAX_NOTE_BYTES);
                let len = len.ok_or(EvidenceParseError::Line {
                    line: n,
                    reason: "bad note length",
                })?;
                let which = if notes.is_empty() { 'a' } else { 'b' };
                let end = pos.checked_add(len).filter(|&e| e <= bytes.len()).ok_or(
                    EvidenceParseError::Line {
                        line: n,
                        reason: "note truncated",
                    },
                )?;
                let note = Note::parse(&bytes[pos..end])
                    .map_err(|error| EvidenceParseError::Note { which, error })?;
                pos = end;
                notes.push(note);
            } else {
                return Err(EvidenceParseError::Line {
                    line: n,
                    reason: "unexpected line",
                });
            }
        }
        if pos != bytes.len() {
            return Err(EvidenceParseError::Trailing);
        }
        let note_b = notes.pop().expect("two notes");
        let note_a = notes.pop().expect("two notes");
        Ok(Evidence {
            kind,
            signers,
            path,
            note_a,
            note_b,
        })
    }

    pub fn format(&self) -> String {
        let a = self.note_a.format();
        let b = self.note_b.format();
        let mut out = format!("{HEADER}\nkind {}\n", self.kind.as_str());
        for key in &self.signers {
            out.push_str(&format!("signer {key}\n"));
        }
        for hash in &self.path {
            out.push_str(&format!("path {hash}\n"));
        }
        out.push_str(&format!("note-a {}\n{a}note-b {}\n{b}", a.len(), b.len()));
        out
    }

    /// Checks the evidence under a policy, independently of whoever made it.
    pub fn check(&self, policy: &Policy) -> Result<VerifiedEvidence, EvidenceError> {
        let a = CheckedNote::new(policy, &self.note_a, 'a')?;
        let b = CheckedNote::new(policy, &self.note_b, 'b')?;
        if a.checkpoint.origin != b.checkpoint.origin {
            return Err(EvidenceError::OriginsDiffer);
        }
        match self.kind {
            Kind::SameSize => {
                if a.checkpoint.size != b.checkpoint.size || !self.path.is_empty() {
                    return Err(EvidenceError::SameSizeShape);
                }
                if a.checkpoint.root == b.checkpoint.root {
                    return Err(EvidenceError::SameTree);
                }
            }
            Kind::Inconsistent => {
                if a.checkpoint.size >= b.checkpoint.size {
                    return Err(EvidenceError::Order);
                }
                check_inconsistent(&a.checkpoint, &b.checkpoint, &self.path)?;
            }
        }
        let both: Vec<VerifierKey> = a
            .signers
            .iter()
            .filter(|k| b.signers.contains(k))
            .cloned()
            .collect();
        if both.len() != self.signers.len() || !self.signers.iter().all(|k| both.contains(k)) {
            return Err(EvidenceError::SignerMismatch);
        }
        let threshold = policy.log_threshold(&a.checkpoint.origin);
        Ok(VerifiedEvidence {
            kind: self.kind,
            quorum_a: a.signers.len() >= threshold,
            quorum_b: b.signers.len() >= threshold,
            checkpoint_a: a.checkpoint,
            checkpoint_b: b.checkpoint,
            signed_both: both,
        })
    }
}

fn check_inconsistent(a: &Checkpoint, b: &Checkpoint, path: &[Hash]) -> Result<(), EvidenceError> {
    if a.size == 0 {
        // Every tree extends the empty tree; only a wrong empty root lies.
        if !path.is_empty() {
            return Err(EvidenceError::Path(
                merkle::ConsistencyError::WrongProofLength {
                    old_size: 0,
                    new_size: b.size,
                    expected: 0,
                    actual: path.len(),
                },
            ));
        }
        return if a.root != merkle::empty_root() {
            Ok(())
        } else {
            Err(EvidenceError::Consistent)
        };
    }
    let (prefix_root, new_root) =
        merkle::roots_from_consistency_path(a.size, b.size, path).map_err(EvidenceError::Path)?;
    if new_root != b.root {
        return Err(EvidenceError::PathNotFromNewTree);
    }
    if prefix_root == a.root {
        return Err(EvidenceError::Consistent);
    }
    Ok(())
}

struct CheckedNote {
    checkpoint: Checkpoint,
    signers: Vec<VerifierKey>,
}

impl CheckedNote {
    fn new(policy: &Policy, note: &Note, which: char) -> Result<Self, EvidenceError> {
        let checkpoint = Checkpoint::parse(note.text())
            .map_err(|error| EvidenceError::Checkpoint { which, error })?;
        if policy.log_keys(&checkpoint.origin).next().is_none() {
            return Err(EvidenceError::UnknownOrigin(checkpoint.origin));
        }
        let verified = note
            .verify(policy.keys())
            .map_err(|error| EvidenceError::Note { which, error })?;
        let signers: Vec<VerifierKey> = verified
            .signatures()
            .iter()
            .filter(|s| s.key.key_type() == KeyType::Ed25519 && s.key.name() == checkpoint.origin)
            .map(|s| s.key.clone())
            .collect();
        if signers.is_empty() {
            return Err(EvidenceError::NoReplicaSignature(which));
        }
        Ok(CheckedNote {
            checkpoint,
            signers,
        })
    }
}

/// Evidence that passed [`Evidence::check`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedEvidence {
    pub kind: Kind,
    pub checkpoint_a: Checkpoint,
    pub checkpoint_b: Checkpoint,
    /// Replica keys whose valid signatures are on both checkpoints.
    pub signed_both: Vec<VerifierKey>,
    /// Whether each checkpoint met the policy's replica threshold.
    pub quorum_a: bool,
    pub quorum_b: bool,
}

/// The outcome of comparing two checkpoints of one origin.
#[derive(Clone, Debug)]
pub enum Comparison {
    /// Both can be honest (equal trees, or a valid consistency proof).
    Consistent,
    /// They cannot both be honest.
    SplitView(Box<Evidence>, VerifiedEvidence),
    /// Different sizes and no proof that decides: fetch a consistency proof.
    Undetermined(String),
}

/// Decides whether two signed checkpoints can both be honest. `proof` is an
/// RFC 6962 consistency proof between their sizes (as a log serves it), or
/// for a power-of-two smaller size that proof with `MTH(D[0:m])` prepended
/// (the full path, which a log can serve as split-view evidence).
pub fn compare(
    policy: &Policy,
    first: &Note,
    second: &Note,
    proof: Option<&[Hash]>,
) -> Result<Comparison, EvidenceError> {
    let a = CheckedNote::new(policy, first, 'a')?;
    let b = CheckedNote::new(policy, second, 'b')?;
    if a.checkpoint.origin != b.checkpoint.origin {
        return Err(EvidenceError::OriginsDiffer);
    }
    let (small, large, small_note, large_note) = if a.checkpoint.size <= b.checkpoint.size {
        (&a, &b, first, second)
    } else {
        (&b, &a, second, first)
    };
    let (cs, cl) = (&small.checkpoint, &large.checkpoint);
    let path: Vec<Hash> = if cs.size == cl.size {
        if cs.root == cl.root {
            return Ok(Comparison::Consistent);
        }
        Vec::new()
    } else if cs.size == 0 {
        if cs.root == merkle::empty_root() {
            return Ok(Comparison::Consistent);
        }
        Vec::new()
    } else {
        let Some(proof) = proof else {
            return Ok(Comparison::Undetermined(format!(
                "sizes {} and {} differ: a consistency proof is needed",
                cs.size, cl.size
            )));
        };
        if merkle::verify_consistency(cs.size, cl.size, &cs.root, &cl.root, proof).is_ok() {
            return Ok(Comparison::Consistent);
        }
        if cs.size.is_power_of_two()
            && proof.len() == merkle::consistency_proof_len(cs.size, cl.size)
        {
            // A standard proof for a power-of-two size omits the prefix
            // root, so a failure cannot tell a lie from a bad proof.
            return Ok(Comparison::Undetermined(
                "the proof fails, but for a power-of-two smaller size it must include the prefix root to prove a split view".into(),
            ));
        }
        proof.to_vec()
    };
    let kind = if cs.size == cl.size {
        Kind::SameSize
    } else {
        Kind::Inconsistent
    };
    if kind == Kind::Inconsistent {
        match check_inconsistent(cs, cl, &path) {
            Ok(()) => {}
            Err(EvidenceError::Consistent) => return Ok(Comparison::Consistent),
            Err(e) => {
                return Ok(Comparison::Undetermined(format!(
                    "the proof neither verifies nor proves a split view: {e}"
                )));
            }
        }
    }
    let signers = small
        .signers
        .iter()
        .filter(|k| large.signers.contains(k))
        .cloned()
        .collect();
    let evidence = Evidence {
        kind,
        signers,
        path,
        note_a: small_note.clone(),
        note_b: large_note.clone(),
    };
    let verified = evidence.check(policy)?;
    Ok(Comparison::SplitView(Box::new(evidence), verified))
}
