//! C2SP signed notes: whatever parses formats back to exactly the input,
//! rebuilding it signature by signature gives the same note, and verifying
//! it against a fixed key ring never panics and only ever credits keys of
//! that ring whose signature lines are in the note.

use std::sync::LazyLock;

use bftlog_spec::note::{KeyRing, Note};

static KEYS: LazyLock<KeyRing> = LazyLock::new(crate::keyring);

/// Runs one `note_parse_verify` input; panics if a property
/// in this file's header fails.
pub fn note_parse_verify(data: &[u8]) {
    let Ok(note) = Note::parse(data) else {
        return;
    };
    assert_eq!(
        note.format().as_bytes(),
        data,
        "note did not format to its input"
    );

    let mut rebuilt = Note::new(note.text()).expect("parsed text is valid note text");
    for signature in note.signatures() {
        rebuilt
            .add_signature(signature.clone())
            .expect("a parsed signature line can be added back");
    }
    assert_eq!(rebuilt, note);

    if let Ok(verified) = note.verify(&KEYS) {
        assert_eq!(verified.text(), note.text());
        assert!(!verified.signatures().is_empty());
        for v in verified.signatures() {
            assert!(KEYS.get(v.key.name(), v.key.key_id()).is_some());
            assert!(
                note.signatures()
                    .iter()
                    .any(|s| s.name == v.key.name() && s.key_id == v.key.key_id()),
                "credited a key with no signature line"
            );
        }
    }
}
