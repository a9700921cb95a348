//! C2SP tlog-policy, plus bftlog's replica-quorum extension, and checkpoint
//! verification under a policy.
//!
//! Normative description: `spec/policy.md`.
//!
//! The extension line `replica-quorum <origin> [<k>]` says that a checkpoint
//! of `origin` is valid only with signatures from at least `k` distinct log
//! keys named `origin` (the replicas of a BFT log). Without `<k>` the
//! threshold is `2f+1` for `n = 3f+1` log keys (`f = (n-1)/3`). Other
//! tlog-policy implementations reject the unknown keyword, which fails
//! closed, instead of accepting one replica's signature.

use crate::checkpoint::{Checkpoint, CheckpointError};
use crate::encoding::parse_decimal;
use crate::note::{KeyRing, KeyType, Note, NoteError, VerifierKey};
use std::fmt::Write as _;

/// Most logs (replica keys), witnesses and groups a policy may define.
pub const MAX_ENTRIES: usize = 256;
/// Largest policy file accepted, in bytes.
pub const MAX_POLICY_BYTES: usize = 1 << 20;

/// Why a policy file was rejected. `line` is 1-based.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("policy is larger than {MAX_POLICY_BYTES} bytes")]
    TooLarge,
    #[error("policy is not valid UTF-8")]
    NotUtf8,
    #[error("line {line}: control character other than tab or newline")]
    ControlCharacter { line: usize },
    #[error("line {line}: unknown keyword {keyword:?}")]
    UnknownKeyword { line: usize, keyword: String },
    #[error("line {line}: wrong number of fields for {keyword}")]
    Arity { line: usize, keyword: &'static str },
    #[error("line {line}: bad verifier key: {error}")]
    Key {
        line: usize,
        error: crate::note::KeyError,
    },
    #[error("line {line}: a {role} key must have signature type {expected:?}")]
    KeyType {
        line: usize,
        role: &'static str,
        expected: KeyType,
    },
    #[error("line {line}: the same public key is listed twice")]
    DuplicateKey { line: usize },
    #[error("line {line}: name {name:?} is already defined")]
    DuplicateName { line: usize, name: String },
    #[error("line {line}: name {name:?} is reserved")]
    ReservedName { line: usize, name: String },
    #[error("line {line}: {name:?} is not defined on an earlier line")]
    UndefinedName { line: usize, name: String },
    /// tlog-policy: "Each defined name can be listed as a group member at
    /// most once", in the whole policy, so that a witness counts towards
    /// the quorum in one way only.
    #[error("line {line}: {name:?} is already a member of a group (a name may be a member once)")]
    DuplicateMember { line: usize, name: String },
    #[error("line {line}: threshold must be all, any or a decimal k with 1 <= k <= members")]
    Threshold { line: usize },
    #[error("line {line}: replica-quorum for {origin:?}, which has no log key")]
    NoReplicas { line: usize, origin: String },
    #[error("line {line}: replica threshold {k} of {n}: need 2k > n and k <= n")]
    ReplicaThreshold { line: usize, k: usize, n: usize },
    #[error("line {line}: second replica-quorum for {origin:?}")]
    DuplicateReplicaQuorum { line: usize, origin: String },
    #[error("line {line}: second quorum line")]
    DuplicateQuorum { line: usize },
    #[error("policy has no quorum line")]
    NoQuorum,
    #[error("policy defines more than {MAX_ENTRIES} {0}")]
    TooMany(&'static str),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEntry {
    pub key: VerifierKey,
    pub url: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WitnessEntry {
    pub name: String,
    pub key: VerifierKey,
    pub url: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Member {
    Witness(usize),
    Group(usize),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupEntry {
    pub name: String,
    pub threshold: usize,
    pub members: Vec<Member>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quorum {
    None,
    Witness(usize),
    Group(usize),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaQuorum {
    pub origin: String,
    /// Distinct replica signatures needed.
    pub threshold: usize,
    /// Whether the threshold was written out (else it is the 2f+1 default).
    pub explicit: bool,
}

/// A parsed policy.
#[derive(Clone, Debug)]
pub struct Policy {
    logs: Vec<LogEntry>,
    witnesses: Vec<WitnessEntry>,
    groups: Vec<GroupEntry>,
    quorum: Quorum,
    replica_quorums: Vec<ReplicaQuorum>,
    keys: KeyRing,
}

/// The BFT threshold `2f+1` for `n` replicas, `f = (n-1)/3`.
pub fn bft_threshold(n: usize) -> usize {
    assert!(n > 0, "a replica set is never empty");
    2 * ((n - 1) / 3) + 1
}

fn fields(line: &str) -> Vec<&str> {
    line.split([' ', '\t']).filter(|f| !f.is_empty()).collect()
}

impl Policy {
    pub fn parse(bytes: &[u8]) -> Result<Self, PolicyError> {
        if bytes.len() > MAX_POLICY_BYTES {
            return Err(PolicyError::TooLarge);
        }
        let text = std::str::from_utf8(bytes).map_err(|_| PolicyError::NotUtf8)?;
        let mut logs: Vec<LogEntry> = Vec::new();
        let mut witnesses: Vec<WitnessEntry> = Vec::new();
        let mut groups: Vec<GroupEntry> = Vec::new();
        let mut quorum = None;
        // Names listed as a group member so far, in any group.
        let mut used_members: Vec<Member> = Vec::new();
        let mut pending_replicas: Vec<(usize, String, Option<usize>)> = Vec::new();
        // Witness and group names share one namespace.
        let lookup =
            |witnesses: &[WitnessEntry], groups: &[GroupEntry], name: &str| -> Option<Member> {
                if let Some(i) = witnesses.iter().position(|w| w.name == name) {
                    return Some(Member::Witness(i));
                }
                groups
                    .iter()
                    .position(|g| g.name == name)
                    .map(Member::Group)
            };
        for (i, raw) in text.split('\n').enumerate() {
            let line = i + 1;
            if raw.bytes().any(|b| b < 0x20 && b != b'\t' || b == 0x7f) {
                return Err(PolicyError::ControlCharacter { line });
            }
            let f = fields(raw);
            if f.is_empty() || f[0].starts_with('#') {
                continue;
            }
            match f[0] {
                "log" => {
                    if !(2..=3).contains(&f.len()) {
                        return Err(PolicyError::Arity {
                            line,
                            keyword: "log",
                        });
                    }
                    let key = VerifierKey::parse(f[1])
                        .map_err(|error| PolicyError::Key { line, error })?;
                    if key.key_type() != KeyType::Ed25519 {
                        return Err(PolicyError::KeyType {
                            line,
                            role: "log",
                            expected: KeyType::Ed25519,
                        });
                    }
                    if logs.iter().any(|l| l.key.public_key() == key.public_key()) {
                        return Err(PolicyError::DuplicateKey { line });
                    }
                    if logs.len() == MAX_ENTRIES {
                        return Err(PolicyError::TooMany("logs"));
                    }
                    logs.push(LogEntry {
                        key,
                        url: f.get(2).map(|s| s.to_string()),
                    });
                }
                "witness" => {
                    if !(3..=4).contains(&f.len()) {
                        return Err(PolicyError::Arity {
                            line,
                            keyword: "witness",
                        });
                    }
                    let name = f[1];
                    if name == "none" {
                        return Err(PolicyError::ReservedName {
                            line,
                            name: name.into(),
                        });
                    }
                    if lookup(&witnesses, &groups, name).is_some() {
                        return Err(PolicyError::DuplicateName {
                            line,
                            name: name.into(),
                        });
                    }
                    let key = VerifierKey::parse(f[2])
                        .map_err(|error| PolicyError::Key { line, error })?;
                    if key.key_type() != KeyType::CosignatureV1 {
                        return Err(PolicyError::KeyType {
                            line,
                            role: "witness",
                            expected: KeyType::CosignatureV1,
                        });
                    }
                    if witnesses
                        .iter()
                        .any(|w| w.key.public_key() == key.public_key())
                    {
                        return Err(PolicyError::DuplicateKey { line });
                    }
                    if witnesses.len() == MAX_ENTRIES {
                        return Err(PolicyError::TooMany("witnesses"));
                    }
                    witnesses.push(WitnessEntry {
                        name: name.into(),
                        key,
                        url: f.get(3).map(|s| s.to_string()),
                    });
                }
                "group" => {
                    if f.len() < 4 {
                        return Err(PolicyError::Arity {
                            line,
                            keyword: "group",
                        });
                    }
                    let name = f[1];
                    if name == "none" {
                        return Err(PolicyError::ReservedName {
                            line,
                            name: name.into(),
                        });
                    }
                    if lookup(&witnesses, &groups, name).is_some() {
                        return Err(PolicyError::DuplicateName {
                            line,
                            name: name.into(),
                        });
                    }
                    let mut members = Vec::new();
                    for &m in &f[3..] {
                        let member = lookup(&witnesses, &groups, m).ok_or_else(|| {
                            PolicyError::UndefinedName {
                                line,
                                name: m.into(),
                            }
                        })?;
                        if used_members.contains(&member) {
                            return Err(PolicyError::DuplicateMember {
                                line,
                                name: m.into(),
                            });
                        }
                        used_members.push(member);
                        members.push(member);
                    }
                    let n = members.len();
                    let threshold = match f[2] {
                        "all" => n,
                        "any" => 1,
                        k => parse_decimal(k)
                            .ok()
                            .and_then(|k| usize::try_from(k).ok())
                            .filter(|k| (1..=n).contains(k))
                            .ok_or(PolicyError::Threshold { line })?,
                    };
                    if groups.len() == MAX_ENTRIES {
                        return Err(PolicyError::TooMany("groups"));
                    }
                    groups.push(GroupEntry {
                        name: name.into(),
                        threshold,
                        members,
                    });
                }
                "quorum" => {
                    if f.len() != 2 {
                        return Err(PolicyError::Arity {
                            line,
                            keyword: "quorum",
                        });
                    }
                    if quorum.is_some() {
                        return Err(PolicyError::DuplicateQuorum { line });
                    }
                    quorum = Some(match f[1] {
                        "none" => Quorum::None,
                        name => match lookup(&witnesses, &groups, name) {
                            Some(Member::Witness(i)) => Quorum::Witness(i),
                            Some(Member::Group(i)) => Quorum::Group(i),
                            None => {
                                return Err(PolicyError::UndefinedName {
                                    line,
                                    name: name.into(),
                                });
                            }
                        },
                    });
                }
                "replica-quorum" => {
                    if !(2..=3).contains(&f.len()) {
                        return Err(PolicyError::Arity {
                            line,
                            keyword: "replica-quorum",
                        });
                    }
                    let k = match f.get(2) {
                        None => None,
                        Some(k) => Some(
                            parse_decimal(k)
                                .ok()
                                .and_then(|k| usize::try_from(k).ok())
                                .ok_or(PolicyError::Threshold { line })?,
                        ),
                    };
                    if pending_replicas.iter().any(|(_, o, _)| o == f[1]) {
                        return Err(PolicyError::DuplicateReplicaQuorum {
                            line,
                            origin: f[1].into(),
                        });
                    }
                    pending_replicas.push((line, f[1].to_owned(), k));
                }
                other => {
                    return Err(PolicyError::UnknownKeyword {
                        line,
                        keyword: other.into(),
                    });
                }
            }
        }
        let quorum = quorum.ok_or(PolicyError::NoQuorum)?;
        // Log lines may follow the replica-quorum line, so thresholds are
        // resolved once every line is read.
        let mut replica_quorums = Vec::new();
        for (line, origin, k) in pending_replicas {
            let n = logs.iter().filter(|l| l.key.name() == origin).count();
            if n == 0 {
                return Err(PolicyError::NoReplicas { line, origin });
            }
            let threshold = k.unwrap_or_else(|| bft_threshold(n));
            if threshold > n || 2 * threshold <= n {
                return Err(PolicyError::ReplicaThreshold {
                    line,
                    k: threshold,
                    n,
                });
            }
            replica_quorums.push(ReplicaQuorum {
                origin,
                threshold,
                explicit: k.is_some(),
            });
        }
        let mut keys = KeyRing::new();
        for key in logs
            .iter()
            .map(|l| &l.key)
            .chain(witnesses.iter().map(|w| &w.key))
        {
            // Distinct public keys were checked per role; a name and key ID
            // collision across roles would make signatures ambiguous.
            keys.add(key.clone())
                .map_err(|_| PolicyError::DuplicateKey { line: 0 })?;
        }
        Ok(Policy {
            logs,
            witnesses,
            groups,
            quorum,
            replica_quorums,
            keys,
        })
    }

    pub fn logs(&self) -> &[LogEntry] {
        &self.logs
    }

    pub fn witnesses(&self) -> &[WitnessEntry] {
        &self.witnesses
    }

    pub fn groups(&self) -> &[GroupEntry] {
        &self.groups
    }

    pub fn quorum(&self) -> Quorum {
        self.quorum
    }

    pub fn replica_quorums(&self) -> &[ReplicaQuorum] {
        &self.replica_quorums
    }

    /// Every log and witness key.
    pub fn keys(&self) -> &KeyRing {
        &self.keys
    }

    /// Log keys named `origin`: a BFT log's replica set.
    pub fn log_keys(&self, origin: &str) -> impl Iterator<Item = &VerifierKey> {
        self.logs
            .iter()
            .map(|l| &l.key)
            .filter(move |k| k.name() == origin)
    }

    /// Log signatures a checkpoint of `origin` needs: the replica-quorum
    /// threshold, or 1 (any listed log key) without such a line.
    pub fn log_threshold(&self, origin: &str) -> usize {
        self.replica_quorums
            .iter()
            .find(|r| r.origin == origin)
            .map_or(1, |r| r.threshold)
    }

    /// Canonical policy text with the same meaning.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for log in &self.logs {
            let _ = write!(out, "log {}", log.key);
            if let Some(url) = &log.url {
                let _ = write!(out, " {url}");
            }
            out.push('\n');
        }
        for r in &self.replica_quorums {
            if r.explicit {
                let _ = writeln!(out, "replica-quorum {} {}", r.origin, r.threshold);
            } else {
                let _ = writeln!(out, "replica-quorum {}", r.origin);
            }
        }
        // Groups may reference earlier groups and witnesses only, so the
        // original order (witnesses, then groups in definition order) is kept.
        for w in &self.witnesses {
            let _ = write!(out, "witness {} {}", w.name, w.key);
            if let Some(url) = &w.url {
                let _ = write!(out, " {url}");
            }
            out.push('\n');
        }
        for g in &self.groups {
            let _ = write!(out, "group {} {}", g.name, g.threshold);
            for m in &g.members {
                out.push(' ');
                out.push_str(self.member_name(*m));
            }
            out.push('\n');
        }
        let quorum = match self.quorum {
            Quorum::None => "none",
            Quorum::Witness(i) => &self.witnesses[i].name,
            Quorum::Group(i) => &self.groups[i].name,
        };
        let _ = writeln!(out, "quorum {quorum}");
        out
    }

    fn member_name(&self, member: Member) -> &str {
        match member {
            Member::Witness(i) => &self.witnesses[i].name,
            Member::Group(i) => &self.groups[i].name,
        }
    }

    /// Verifies a signed checkpoint note's signatures and reports what the
    /// policy requires and what was met, without deciding validity.
    pub fn evaluate(&self, note: &Note) -> Result<Evaluation, EvaluateError> {
        let checkpoint = Checkpoint::parse(note.text())?;
        let threshold = self.log_threshold(&checkpoint.origin);
        if self.log_keys(&checkpoint.origin).next().is_none() {
            return Err(EvaluateError::UnknownOrigin(checkpoint.origin));
        }
        let verified = note.verify(&self.keys)?;
        let mut log_signers = Vec::new();
        let mut cosigned = vec![None; self.witnesses.len()];
        for sig in verified.signatures() {
            match sig.key.key_type() {
                KeyType::Ed25519 if sig.key.name() == checkpoint.origin => {
                    log_signers.push(sig.key.clone())
                }
                // Another log's key signing this origin's checkpoint counts
                // for nothing (C2SP: the key name must match the origin).
                KeyType::Ed25519 => {}
                KeyType::CosignatureV1 => {
                    let i = self
                        .witnesses
                        .iter()
                        .position(|w| &w.key == sig.key)
                        .expect("witness keys come from the policy");
                    cosigned[i] = sig.timestamp;
                }
            }
        }
        let mut group_met = vec![false; self.groups.len()];
        for (i, group) in self.groups.iter().enumerate() {
            let met = group
                .members
                .iter()
                .filter(|m| match m {
                    Member::Witness(w) => cosigned[*w].is_some(),
                    Member::Group(g) => group_met[*g],
                })
                .count();
            group_met[i] = met >= group.threshold;
        }
        let quorum_met = match self.quorum {
            Quorum::None => true,
            Quorum::Witness(i) => cosigned[i].is_some(),
            Quorum::Group(i) => group_met[i],
        };
        let cosigners = self
            .witnesses
            .iter()
            .zip(&cosigned)
            .filter_map(|(w, t)| {
                t.map(|timestamp| Cosigner {
                    name: w.name.clone(),
                    key: w.key.clone(),
                    timestamp,
                })
            })
            .collect();
        let groups_met = self
            .groups
            .iter()
            .zip(&group_met)
            .filter(|(_, m)| **m)
            .map(|(g, _)| g.name.clone())
            .collect();
        Ok(Evaluation {
            checkpoint,
            log_signers,
            log_threshold: threshold,
            cosigners,
            groups_met,
            witness_quorum_met: quorum_met,
        })
    }

    /// Verifies a signed checkpoint: enough log (replica) signatures and the
    /// witness quorum.
    pub fn verify_checkpoint(
        &self,
        note: &Note,
    ) -> Result<VerifiedCheckpoint, VerifyCheckpointError> {
        let evaluation = self.evaluate(note)?;
        if evaluation.log_signers.len() < evaluation.log_threshold {
            return Err(VerifyCheckpointError::LogQuorum {
                signed: evaluation.log_signers.len(),
                needed: evaluation.log_threshold,
                evaluation: Box::new(evaluation),
            });
        }
        if !evaluation.witness_quorum_met {
            return Err(VerifyCheckpointError::WitnessQuorum {
                evaluation: Box::new(evaluation),
            });
        }
        Ok(VerifiedCheckpoint {
            note: note.clone(),
            evaluation,
        })
    }

    /// Parses and verifies signed checkpoint bytes.
    pub fn verify_checkpoint_bytes(
        &self,
        bytes: &[u8],
    ) -> Result<VerifiedCheckpoint, VerifyCheckpointError> {
        let note = Note::parse(bytes).map_err(EvaluateError::Note)?;
        self.verify_checkpoint(&note)
    }
}

/// A witness cosignature that verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cosigner {
    /// The witness's name in the policy.
    pub name: String,
    pub key: VerifierKey,
    pub timestamp: u64,
}

/// What a policy found in a checkpoint note.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Evaluation {
    pub checkpoint: Checkpoint,
    /// Log (replica) keys named after the origin whose signatures verified.
    pub log_signers: Vec<VerifierKey>,
    pub log_threshold: usize,
    pub cosigners: Vec<Cosigner>,
    /// Names of the groups whose thresholds were met.
    pub groups_met: Vec<String>,
    pub witness_quorum_met: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvaluateError {
    #[error("note: {0}")]
    Note(#[from] NoteError),
    #[error("checkpoint: {0}")]
    Checkpoint(#[from] CheckpointError),
    #[error("origin {0:?} has no log key in the policy")]
    UnknownOrigin(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyCheckpointError {
    #[error(transparent)]
    Evaluate(#[from] EvaluateError),
    #[error("{signed} valid log signatures, the policy needs {needed}")]
    LogQuorum {
        signed: usize,
        needed: usize,
        evaluation: Box<Evaluation>,
    },
    #[error("witness quorum not met")]
    WitnessQuorum { evaluation: Box<Evaluation> },
}

/// A checkpoint that satisfied a policy. Only
/// [`Policy::verify_checkpoint`] makes one.
#[derive(Clone, Debug)]
pub struct VerifiedCheckpoint {
    note: Note,
    evaluation: Evaluation,
}

impl VerifiedCheckpoint {
    pub fn checkpoint(&self) -> &Checkpoint {
        &self.evaluation.checkpoint
    }

    pub fn note(&self) -> &Note {
        &self.note
    }

    pub fn evaluation(&self) -> &Evaluation {
        &self.evaluation
    }
}
