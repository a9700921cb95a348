//! The checks behind the commands, as typed functions over bytes already
//! read. Each error knows its [`Status`] (malformed input vs. input that
//! does not verify), and each report serialises to the `--json` output.

use bftlog_spec::checkpoint::{Checkpoint, CheckpointError};
use bftlog_spec::encoding::encode_base64;
use bftlog_spec::evidence::{
    self, Comparison, Evidence, EvidenceError, EvidenceParseError, Kind, VerifiedEvidence,
};
use bftlog_spec::merkle::{self, ConsistencyError, Hash, InclusionError};
use bftlog_spec::note::{KeyError, KeyRing, KeyRingError, KeyType, Note, NoteError, VerifierKey};
use bftlog_spec::policy::{EvaluateError, Policy, VerifiedCheckpoint, VerifyCheckpointError};
use bftlog_spec::proof::{ProofParseError, ProofVerifyError, TlogProof};
use serde::Serialize;

use crate::report::{CheckpointReport, Status, format_unix_time};

/// Why a signed checkpoint was not accepted under a policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointCheckError {
    #[error("{0}")]
    Note(NoteError),
    #[error("checkpoint body: {0}")]
    Body(CheckpointError),
    #[error("origin {0:?} has no log key in the policy")]
    UnknownOrigin(String),
    #[error("{0}")]
    Signature(NoteError),
    #[error("{signed} valid replica signatures, the policy needs {needed}")]
    ReplicaQuorum {
        signed: usize,
        needed: usize,
        report: Box<CheckpointReport>,
    },
    #[error("witness quorum not met ({} verified cosignatures)", report.cosignatures.len())]
    WitnessQuorum { report: Box<CheckpointReport> },
}

impl CheckpointCheckError {
    pub fn status(&self) -> Status {
        match self {
            CheckpointCheckError::Note(_) | CheckpointCheckError::Body(_) => Status::Malformed,
            _ => Status::Invalid,
        }
    }

    /// What was found, when the checkpoint parsed and its signatures
    /// verified but a quorum was missing.
    pub fn report(&self) -> Option<&CheckpointReport> {
        match self {
            CheckpointCheckError::ReplicaQuorum { report, .. }
            | CheckpointCheckError::WitnessQuorum { report } => Some(report),
            _ => None,
        }
    }
}

/// Parses and verifies signed checkpoint bytes under `policy`.
pub fn check_checkpoint(
    policy: &Policy,
    bytes: &[u8],
) -> Result<(VerifiedCheckpoint, CheckpointReport), CheckpointCheckError> {
    let note = Note::parse(bytes).map_err(CheckpointCheckError::Note)?;
    check_checkpoint_note(policy, &note)
}

/// Verifies a parsed checkpoint note under `policy`.
pub fn check_checkpoint_note(
    policy: &Policy,
    note: &Note,
) -> Result<(VerifiedCheckpoint, CheckpointReport), CheckpointCheckError> {
    // Parse the body first so a malformed body is reported as such, not as
    // a verification failure.
    let body = Checkpoint::parse(note.text()).map_err(CheckpointCheckError::Body)?;
    let listed = policy.log_keys(&body.origin).count();
    match policy.verify_checkpoint(note) {
        Ok(verified) => {
            let report = CheckpointReport::new(verified.evaluation(), listed);
            Ok((verified, report))
        }
        Err(VerifyCheckpointError::Evaluate(e)) => Err(match e {
            EvaluateError::Note(e) => CheckpointCheckError::Signature(e),
            EvaluateError::Checkpoint(e) => CheckpointCheckError::Body(e),
            EvaluateError::UnknownOrigin(o) => CheckpointCheckError::UnknownOrigin(o),
        }),
        Err(VerifyCheckpointError::LogQuorum {
            signed,
            needed,
            evaluation,
        }) => Err(CheckpointCheckError::ReplicaQuorum {
            signed,
            needed,
            report: Box::new(CheckpointReport::new(&evaluation, listed)),
        }),
        Err(VerifyCheckpointError::WitnessQuorum { evaluation }) => {
            Err(CheckpointCheckError::WitnessQuorum {
                report: Box::new(CheckpointReport::new(&evaluation, listed)),
            })
        }
    }
}

/// A verified receipt.
#[derive(Clone, Debug, Serialize)]
pub struct ReceiptReport {
    pub index: u64,
    pub leaf_hash: String,
    /// The proof's `extra` data (base64), unauthenticated.
    pub extra: Option<String>,
    pub checkpoint: CheckpointReport,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    #[error("{0}")]
    Parse(#[from] ProofParseError),
    #[error("checkpoint: {0}")]
    Checkpoint(CheckpointCheckError),
    #[error("inclusion proof: {0}")]
    Inclusion(InclusionError),
    /// The checkpoint handed to [`check_inclusion`] is not the receipt's.
    #[error("{0}")]
    Verify(ProofVerifyError),
}

impl ReceiptError {
    pub fn status(&self) -> Status {
        match self {
            ReceiptError::Parse(_) => Status::Malformed,
            ReceiptError::Checkpoint(e) => e.status(),
            ReceiptError::Inclusion(_) | ReceiptError::Verify(_) => Status::Invalid,
        }
    }
}

/// Checks a tlog-proof receipt for the entry whose leaf hash is `leaf`.
pub fn check_receipt(
    policy: &Policy,
    proof_bytes: &[u8],
    leaf: &Hash,
) -> Result<ReceiptReport, ReceiptError> {
    let proof = TlogProof::parse(proof_bytes)?;
    let (verified, report) =
        check_checkpoint_note(policy, &proof.checkpoint).map_err(ReceiptError::Checkpoint)?;
    check_inclusion(&proof, verified, report, leaf)
}

/// The inclusion half of a receipt check, against a checkpoint already
/// verified (by [`check_checkpoint_note`] or a cache of its results).
pub fn check_inclusion(
    proof: &TlogProof,
    checkpoint: VerifiedCheckpoint,
    report: CheckpointReport,
    leaf: &Hash,
) -> Result<ReceiptReport, ReceiptError> {
    let verified = proof
        .verify_with_checkpoint(checkpoint, leaf)
        .map_err(|e| match e {
            ProofVerifyError::Inclusion(e) => ReceiptError::Inclusion(e),
            other => ReceiptError::Verify(other),
        })?;
    Ok(ReceiptReport {
        index: verified.index(),
        leaf_hash: leaf.to_base64(),
        extra: verified.extra().map(encode_base64),
        checkpoint: report,
    })
}

/// Two checkpoints shown consistent by a proof.
#[derive(Clone, Debug, Serialize)]
pub struct ConsistencyReport {
    pub old: CheckpointReport,
    pub new: CheckpointReport,
    pub proof_hashes: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConsistencyCheckError {
    #[error("old checkpoint: {0}")]
    Old(CheckpointCheckError),
    #[error("new checkpoint: {0}")]
    New(CheckpointCheckError),
    #[error("the checkpoints have different origins {old:?} and {new:?}")]
    OriginsDiffer { old: String, new: String },
    #[error("the old checkpoint (size {old}) is larger than the new one (size {new})")]
    Order { old: u64, new: u64 },
    #[error("consistency proof: {0}")]
    Proof(ConsistencyError),
}

impl ConsistencyCheckError {
    pub fn status(&self) -> Status {
        match self {
            ConsistencyCheckError::Old(e) | ConsistencyCheckError::New(e) => e.status(),
            ConsistencyCheckError::Order { .. } => Status::Malformed,
            _ => Status::Invalid,
        }
    }
}

/// Verifies both checkpoints under the policy, then the RFC 9162
/// consistency proof between them.
pub fn check_consistency(
    policy: &Policy,
    old_bytes: &[u8],
    new_bytes: &[u8],
    proof: &[Hash],
) -> Result<ConsistencyReport, ConsistencyCheckError> {
    let (old, old_report) =
        check_checkpoint(policy, old_bytes).map_err(ConsistencyCheckError::Old)?;
    let (new, new_report) =
        check_checkpoint(policy, new_bytes).map_err(ConsistencyCheckError::New)?;
    let (o, n) = (old.checkpoint(), new.checkpoint());
    if o.origin != n.origin {
        return Err(ConsistencyCheckError::OriginsDiffer {
            old: o.origin.clone(),
            new: n.origin.clone(),
        });
    }
    if o.size > n.size {
        return Err(ConsistencyCheckError::Order {
            old: o.size,
            new: n.size,
        });
    }
    merkle::verify_consistency(o.size, n.size, &o.root, &n.root, proof)
        .map_err(ConsistencyCheckError::Proof)?;
    Ok(ConsistencyReport {
        old: old_report,
        new: new_report,
        proof_hashes: proof.len(),
    })
}

/// Origin, size and root of a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CheckpointSummary {
    pub origin: String,
    pub size: u64,
    pub root: String,
}

impl From<&Checkpoint> for CheckpointSummary {
    fn from(cp: &Checkpoint) -> Self {
        CheckpointSummary {
            origin: cp.origin.clone(),
            size: cp.size,
            root: cp.root.to_base64(),
        }
    }
}

/// A proven split view.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SplitViewReport {
    /// `same-size` or `inconsistent`.
    pub kind: &'static str,
    /// The smaller (or equal) tree.
    pub checkpoint_a: CheckpointSummary,
    pub checkpoint_b: CheckpointSummary,
    /// vkeys of the replica keys whose valid signatures are on both.
    pub signed_both: Vec<String>,
    pub quorum_a: bool,
    pub quorum_b: bool,
}

impl From<&VerifiedEvidence> for SplitViewReport {
    fn from(v: &VerifiedEvidence) -> Self {
        SplitViewReport {
            kind: match v.kind {
                Kind::SameSize => "same-size",
                Kind::Inconsistent => "inconsistent",
            },
            checkpoint_a: (&v.checkpoint_a).into(),
            checkpoint_b: (&v.checkpoint_b).into(),
            signed_both: v.signed_both.iter().map(|k| k.to_string()).collect(),
            quorum_a: v.quorum_a,
            quorum_b: v.quorum_b,
        }
    }
}

impl SplitViewReport {
    pub fn human(&self) -> String {
        let cp = |c: &CheckpointSummary, quorum: bool| {
            format!(
                "{} size {} root {} (replica quorum {})",
                c.origin,
                c.size,
                c.root,
                if quorum { "met" } else { "not met" }
            )
        };
        let mut out = format!(
            "split view ({}):\n  a: {}\n  b: {}\nreplica keys that signed both ({}):\n",
            self.kind,
            cp(&self.checkpoint_a, self.quorum_a),
            cp(&self.checkpoint_b, self.quorum_b),
            self.signed_both.len()
        );
        for key in &self.signed_both {
            out.push_str(&format!("  {key}\n"));
        }
        out
    }
}

/// What comparing two checkpoints decided.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum CompareReport {
    /// Both can be honest.
    Consistent {
        checkpoint_a: CheckpointSummary,
        checkpoint_b: CheckpointSummary,
    },
    /// They cannot both be honest; `evidence` is the evidence file's text.
    SplitView {
        split_view: SplitViewReport,
        evidence: String,
    },
    /// The inputs do not decide (e.g. different sizes and no proof).
    Undetermined { reason: String },
}

impl CompareReport {
    pub fn status(&self) -> Status {
        match self {
            CompareReport::Consistent { .. } => Status::Valid,
            CompareReport::SplitView { .. } => Status::Equivocation,
            CompareReport::Undetermined { .. } => Status::Invalid,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompareError {
    #[error("note {which}: {error}")]
    Note { which: char, error: NoteError },
    #[error(transparent)]
    Evidence(EvidenceError),
}

impl CompareError {
    pub fn status(&self) -> Status {
        match self {
            CompareError::Note { .. }
            | CompareError::Evidence(EvidenceError::Checkpoint { .. }) => Status::Malformed,
            CompareError::Evidence(_) => Status::Invalid,
        }
    }
}

/// Decides whether two signed checkpoints can both be honest, building
/// split-view evidence when they cannot (see `spec/evidence.md`).
pub fn compare_checkpoints(
    policy: &Policy,
    a_bytes: &[u8],
    b_bytes: &[u8],
    proof: Option<&[Hash]>,
) -> Result<CompareReport, CompareError> {
    let parse =
        |bytes, which| Note::parse(bytes).map_err(|error| CompareError::Note { which, error });
    let (a, b) = (parse(a_bytes, 'a')?, parse(b_bytes, 'b')?);
    match evidence::compare(policy, &a, &b, proof).map_err(CompareError::Evidence)? {
        Comparison::Consistent => {
            let summary = |note: &Note| {
                CheckpointSummary::from(&Checkpoint::parse(note.text()).expect("compare parsed it"))
            };
            Ok(CompareReport::Consistent {
                checkpoint_a: summary(&a),
                checkpoint_b: summary(&b),
            })
        }
        Comparison::SplitView(evidence, verified) => Ok(CompareReport::SplitView {
            split_view: (&verified).into(),
            evidence: evidence.format(),
        }),
        Comparison::Undetermined(reason) => Ok(CompareReport::Undetermined { reason }),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvidenceCheckError {
    #[error("{0}")]
    Parse(#[from] EvidenceParseError),
    #[error("does not prove a split view: {0}")]
    Check(EvidenceError),
}

impl EvidenceCheckError {
    pub fn status(&self) -> Status {
        match self {
            EvidenceCheckError::Parse(_) => Status::Malformed,
            EvidenceCheckError::Check(_) => Status::Invalid,
        }
    }
}

/// Checks split-view evidence independently of whoever made it. `Ok` means
/// the equivocation is proven.
pub fn check_evidence(
    policy: &Policy,
    bytes: &[u8],
) -> Result<SplitViewReport, EvidenceCheckError> {
    let evidence = Evidence::parse(bytes)?;
    let verified = evidence.check(policy).map_err(EvidenceCheckError::Check)?;
    Ok((&verified).into())
}

/// One verified signature of a note.
#[derive(Clone, Debug, Serialize)]
pub struct NoteSignatureReport {
    pub key: String,
    /// `ed25519` or `cosignature-v1`.
    pub key_type: &'static str,
    pub timestamp: Option<u64>,
    pub time: Option<String>,
}

/// A signed note verified against explicit keys (no policy).
#[derive(Clone, Debug, Serialize)]
pub struct NoteReport {
    pub signatures: Vec<NoteSignatureReport>,
    /// Signature lines from keys not given (ignored, as C2SP requires).
    pub unknown_signatures: usize,
    /// The body as a checkpoint, when it is one.
    pub checkpoint: Option<CheckpointSummary>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteCheckError {
    #[error("key {position}: {error}")]
    Key { position: usize, error: KeyError },
    #[error("key {position}: {error}")]
    KeyRing {
        position: usize,
        error: KeyRingError,
    },
    #[error("{0}")]
    Parse(NoteError),
    #[error("{0}")]
    Verify(NoteError),
    #[error("checkpoint body: {0}")]
    Body(CheckpointError),
}

impl NoteCheckError {
    pub fn status(&self) -> Status {
        match self {
            // A bad or missing signature.
            NoteCheckError::Verify(_) => Status::Invalid,
            _ => Status::Malformed,
        }
    }
}

/// Verifies a signed note against `vkeys` (C2SP signed-note rules: every
/// signature by a given key must verify, at least one must be present).
/// With `require_checkpoint`, the body must also be a valid checkpoint.
pub fn check_note(
    vkeys: &[String],
    bytes: &[u8],
    require_checkpoint: bool,
) -> Result<NoteReport, NoteCheckError> {
    let mut ring = KeyRing::new();
    for (i, text) in vkeys.iter().enumerate() {
        let key = VerifierKey::parse(text).map_err(|error| NoteCheckError::Key {
            position: i + 1,
            error,
        })?;
        ring.add(key).map_err(|error| NoteCheckError::KeyRing {
            position: i + 1,
            error,
        })?;
    }
    let note = Note::parse(bytes).map_err(NoteCheckError::Parse)?;
    let checkpoint = match Checkpoint::parse(note.text()) {
        Ok(cp) => Some(CheckpointSummary::from(&cp)),
        Err(e) if require_checkpoint => return Err(NoteCheckError::Body(e)),
        Err(_) => None,
    };
    let verified = note.verify(&ring).map_err(NoteCheckError::Verify)?;
    let signatures: Vec<NoteSignatureReport> = verified
        .signatures()
        .iter()
        .map(|s| NoteSignatureReport {
            key: s.key.to_string(),
            key_type: match s.key.key_type() {
                KeyType::Ed25519 => "ed25519",
                KeyType::CosignatureV1 => "cosignature-v1",
            },
            timestamp: s.timestamp,
            time: s.timestamp.map(format_unix_time),
        })
        .collect();
    Ok(NoteReport {
        // Lines by keys not in the ring (a repeated line by a known key is
        // neither verified nor unknown).
        unknown_signatures: note
            .signatures()
            .iter()
            .filter(|s| ring.get(&s.name, s.key_id).is_none())
            .count(),
        signatures,
        checkpoint,
    })
}
