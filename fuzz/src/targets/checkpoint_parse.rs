//! C2SP checkpoints: a body that parses formats back to exactly the input
//! and can be signed and parsed back as a signed checkpoint; a signed note
//! that parses (`checkpoint::parse_signed`) formats back to the input and
//! its body to the note text.

use std::sync::LazyLock;

use bftlog_spec::checkpoint::{self, Checkpoint};
use bftlog_spec::note::{KeyRing, SignerKey};

static KEYS: LazyLock<KeyRing> = LazyLock::new(crate::keyring);
static SIGNER: LazyLock<SignerKey> = LazyLock::new(|| crate::replica_note_key(0));

/// Runs one `checkpoint_parse` input; panics if a property
/// in this file's header fails.
pub fn checkpoint_parse(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(cp) = Checkpoint::parse(text)
    {
        assert_eq!(cp.format(), text, "checkpoint did not format to its input");
        assert_eq!(cp.to_string(), text);
        let mut rebuilt = Checkpoint::new(&cp.origin, cp.size, cp.root);
        rebuilt.extensions = cp.extensions.clone();
        assert_eq!(rebuilt, cp);
        // Anything that parses can be signed, and the signed note parses
        // back to the same checkpoint and verifies.
        let note = cp.sign(&SIGNER).expect("a parsed checkpoint can be signed");
        let (again_note, again) =
            checkpoint::parse_signed(note.format().as_bytes()).expect("signed note parses");
        assert_eq!(again, cp);
        assert_eq!(again_note, note);
        note.verify(&KEYS).expect("fresh signature verifies");
    }
    if let Ok((note, cp)) = checkpoint::parse_signed(data) {
        assert_eq!(note.format().as_bytes(), data);
        assert_eq!(cp.format(), note.text());
        let _ = note.verify(&KEYS);
    }
}
