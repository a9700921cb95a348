//! C2SP tlog-policy with the replica-quorum extension: whatever parses
//! prints (`to_text`) as a policy that parses to the same logs, witnesses,
//! groups, quorum and replica quorums, and prints identically; the parsed
//! policy judges a fixed set of signed checkpoints without panicking.

use std::sync::LazyLock;

use bftlog_spec::checkpoint::Checkpoint;
use bftlog_spec::merkle;
use bftlog_spec::note::{Note, SignerKey};
use bftlog_spec::policy::Policy;

/// Checkpoints signed by every replica and the witness, by two replicas,
/// and by the shared vector key.
static NOTES: LazyLock<Vec<Note>> = LazyLock::new(|| {
    let cp = Checkpoint::new(crate::ORIGIN, 3, merkle::leaf_hash(b"policy"));
    let text = cp.format();
    let mut all = Note::new(&text).expect("text");
    for i in 0..crate::REPLICAS {
        all.sign(&crate::replica_note_key(i)).expect("sign");
    }
    all.add_signature(
        crate::witness_key()
            .cosign_text(&text, 1_700_000_000)
            .expect("cosign"),
    )
    .expect("fits");
    let mut two = Note::new(&text).expect("text");
    for i in 0..2 {
        two.sign(&crate::replica_note_key(i)).expect("sign");
    }
    let vector = SignerKey::new(
        "PeterNeumann",
        bftlog_spec::note::KeyType::Ed25519,
        bftlog_spec::ed25519_dalek::SigningKey::from_bytes(&[9; 32]),
    )
    .expect("name");
    let mut other =
        Note::new(&Checkpoint::new("example.com/log", 2, merkle::empty_root()).format())
            .expect("text");
    other.sign(&vector).expect("sign");
    vec![all, two, other]
});

/// Runs one `policy_parse` input; panics if a property
/// in this file's header fails.
pub fn policy_parse(data: &[u8]) {
    let Ok(policy) = Policy::parse(data) else {
        return;
    };
    let text = policy.to_text();
    let again = Policy::parse(text.as_bytes())
        .unwrap_or_else(|e| panic!("to_text output does not parse: {e}\n{text}"));
    assert_eq!(again.logs(), policy.logs());
    assert_eq!(again.witnesses(), policy.witnesses());
    assert_eq!(again.groups(), policy.groups());
    assert_eq!(again.quorum(), policy.quorum());
    assert_eq!(again.replica_quorums(), policy.replica_quorums());
    assert_eq!(again.keys().keys(), policy.keys().keys());
    assert_eq!(again.to_text(), text, "to_text is not a fixed point");
    for note in NOTES.iter() {
        let evaluation = policy.evaluate(note);
        let verified = policy.verify_checkpoint(note);
        if verified.is_ok() {
            assert!(evaluation.is_ok());
        }
    }
}
