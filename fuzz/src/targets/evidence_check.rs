//! Split-view evidence: whatever parses formats back to exactly the input;
//! checking it under the fixed policy never panics; evidence that checks
//! is also what `evidence::compare` concludes from its two notes and path.

use std::sync::LazyLock;

use bftlog_spec::evidence::{self, Comparison, Evidence, Kind};
use bftlog_spec::policy::Policy;

static POLICY: LazyLock<Policy> = LazyLock::new(crate::policy);

/// Runs one `evidence_check` input; panics if a property
/// in this file's header fails.
pub fn evidence_check(data: &[u8]) {
    let Ok(ev) = Evidence::parse(data) else {
        return;
    };
    assert_eq!(
        ev.format().as_bytes(),
        data,
        "evidence did not format to its input"
    );
    let Ok(verified) = ev.check(&POLICY) else {
        return;
    };
    assert_eq!(verified.kind, ev.kind);
    assert_eq!(verified.checkpoint_a.origin, verified.checkpoint_b.origin);
    match ev.kind {
        Kind::SameSize => {
            assert_eq!(verified.checkpoint_a.size, verified.checkpoint_b.size);
            assert_ne!(verified.checkpoint_a.root, verified.checkpoint_b.root);
        }
        Kind::Inconsistent => assert!(verified.checkpoint_a.size < verified.checkpoint_b.size),
    }
    assert_eq!(verified.signed_both.len(), ev.signers.len());
    match evidence::compare(&POLICY, &ev.note_a, &ev.note_b, Some(&ev.path)) {
        Ok(Comparison::SplitView(_, again)) => assert_eq!(again.kind, ev.kind),
        other => panic!("evidence checks but compare says {other:?}"),
    }
}
