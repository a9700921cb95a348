//! C2SP tlog-proof receipts: whatever parses formats back to exactly the
//! input; verification under the fixed policy never panics; a receipt that
//! verifies for its entry (`bftlog_fuzz::receipt_entry(index)`) agrees with
//! a direct inclusion check and fails for any other entry.

use std::sync::LazyLock;

use bftlog_spec::checkpoint::Checkpoint;
use bftlog_spec::merkle;
use bftlog_spec::policy::Policy;
use bftlog_spec::proof::TlogProof;

static POLICY: LazyLock<Policy> = LazyLock::new(crate::policy);

/// Runs one `tlog_proof_verify` input; panics if a property
/// in this file's header fails.
pub fn tlog_proof_verify(data: &[u8]) {
    let Ok(proof) = TlogProof::parse(data) else {
        return;
    };
    assert_eq!(
        proof.format().as_bytes(),
        data,
        "receipt did not format to its input"
    );
    assert_eq!(
        TlogProof::parse(proof.format().as_bytes()).as_ref(),
        Ok(&proof)
    );

    let entry = crate::receipt_entry(proof.index);
    let leaf = merkle::leaf_hash(&entry);
    let Ok(verified) = proof.verify_entry(&POLICY, &entry) else {
        return;
    };
    assert_eq!(verified.index(), proof.index);
    assert_eq!(verified.leaf_hash(), &leaf);
    assert_eq!(verified.extra(), proof.extra.as_deref());
    let cp = Checkpoint::parse(proof.checkpoint.text()).expect("verified checkpoint parses");
    assert_eq!(verified.checkpoint().checkpoint(), &cp);
    assert!(proof.index < cp.size);
    merkle::verify_inclusion(proof.index, cp.size, &leaf, &proof.inclusion, &cp.root)
        .expect("verified receipt's inclusion proof checks");
    let other = merkle::leaf_hash(&crate::receipt_entry(proof.index ^ 1));
    assert!(
        proof.verify(&POLICY, &other).is_err(),
        "receipt verified for another entry"
    );
    // The same result through an already verified checkpoint.
    let checkpoint = POLICY
        .verify_checkpoint(&proof.checkpoint)
        .expect("verified before");
    proof
        .verify_with_checkpoint(checkpoint, &leaf)
        .expect("verify_with_checkpoint agrees with verify");
}
