//! The witness's add-checkpoint path: the strict body parser and the
//! check-and-store core (in-memory redb, so no fsync per iteration).
//!
//! The input's first byte picks a mode:
//! - raw: the rest is one request body. It never panics; a body that
//!   parses re-formats to exactly the input bytes; a 200 is only ever given
//!   to a correctly signed checkpoint.
//! - sequence: the rest chooses a run of submissions from two forks of one
//!   log (sizes, old sizes, signer sets, proofs intact or corrupted). After
//!   every step: no size was ever cosigned with two roots, the stored size
//!   never decreases, and only checkpoints extending the stored one (or
//!   equal to it) are cosigned.

use std::collections::HashMap;
#[cfg(fuzzing)]
use std::sync::LazyLock;

use crate::{Input, ORIGIN, REPLICAS, replica_note_key};
use bftlog_spec::checkpoint::Checkpoint;
use bftlog_spec::merkle::{self, Hash, MemoryTree};
use bftlog_spec::note::{KeyType, Note, SignerKey};
use bftlog_witness::log_config::LogConfig;
use bftlog_witness::request::{format_add_checkpoint, parse_add_checkpoint};
use bftlog_witness::store::Store;
use bftlog_witness::witness::Witness;

/// One witness per process (a redb database costs milliseconds to
/// create); every iteration starts from its reset, empty state.
#[cfg(fuzzing)]
static WITNESS: LazyLock<Witness> = LazyLock::new(make_witness);

#[cfg(fuzzing)]
fn witness() -> &'static Witness {
    WITNESS.reset_for_fuzzing();
    &WITNESS
}

/// Outside fuzz builds (`--cfg fuzzing`, which cargo-fuzz sets) the
/// witness has no `reset_for_fuzzing`: the corpus replay (`cargo test`)
/// gives every input a new, empty witness instead, the same starting state.
#[cfg(not(fuzzing))]
fn witness() -> Witness {
    make_witness()
}

fn make_witness() -> Witness {
    let key = SignerKey::new(
        "witness.fuzz.test/add",
        KeyType::CosignatureV1,
        ed25519_dalek::SigningKey::from_bytes(&[0x77; 32]),
    )
    .expect("valid name");
    let store = Store::in_memory().expect("in-memory redb");
    let keys = (0..REPLICAS)
        .map(|i| replica_note_key(i).verifier())
        .collect();
    store
        .add_log(&LogConfig::new(ORIGIN, keys, None).expect("valid log"))
        .expect("add log");
    Witness::new(key, store).expect("witness")
}

fn raw(body: &[u8]) {
    if let Ok(parsed) = parse_add_checkpoint(body) {
        let again = format_add_checkpoint(parsed.old_size, &parsed.proof, &parsed.note.format());
        assert_eq!(
            again.as_bytes(),
            body,
            "parse then format must give the input"
        );
    }
    let response = witness().add_checkpoint(body, 1);
    if response.status == 200 {
        // Only a body whose note carries a replica quorum gets here.
        let parsed = parse_add_checkpoint(body).expect("200 for an unparsable body");
        assert!(parsed.note.signatures().len() >= 3);
    }
}

fn sequence(input: &mut Input) {
    let witness = witness();
    let mut forks = [MemoryTree::new(), MemoryTree::new()];
    let mut cosigned: HashMap<u64, Hash> = HashMap::new();
    let mut stored: Option<(u64, Hash)> = None;
    for _ in 0..8 {
        if input.is_empty() {
            break;
        }
        let fork = input.below(2);
        let size = input.below(40) as u64;
        while forks[fork].size() < size {
            let n = forks[fork].size();
            forks[fork].append(merkle::leaf_hash(
                format!("fork {fork} entry {n}").as_bytes(),
            ));
        }
        let tree = &forks[fork];
        let root = merkle::tree_root(size, tree).expect("size within tree");
        let old = match input.below(3) {
            0 => stored.map_or(0, |s| s.0),
            1 => input.below(41) as u64,
            _ => 0,
        };
        let mut proof = if old <= size {
            merkle::prove_consistency(old, size, tree).expect("old <= size")
        } else {
            Vec::new()
        };
        if !proof.is_empty() && input.bool() {
            let i = input.below(proof.len());
            proof[i].0[input.below(32)] ^= 1 | input.u8();
        }
        let mut note = Note::new(&Checkpoint::new(ORIGIN, size, root).format()).expect("text");
        let signers = input.u8();
        for i in 0..REPLICAS {
            if signers & (1 << i) != 0 {
                note.sign(&replica_note_key(i)).expect("sign");
            }
        }
        if note.signatures().is_empty() {
            note.sign(&replica_note_key(0)).expect("sign");
        }
        let body = format_add_checkpoint(old, &proof, &note.format());
        let response = witness.add_checkpoint(body.as_bytes(), 1_700_000_000);
        if response.status == 200 {
            if let Some(previous) = cosigned.insert(size, root) {
                assert_eq!(previous, root, "two roots cosigned for size {size}");
            }
            if let Some((s, r)) = stored {
                assert!(size >= s, "rolled back from {s} to {size}");
                assert_eq!(Some(&r), cosigned.get(&s));
                if size == s {
                    assert_eq!(root, r);
                } else {
                    let proof = merkle::prove_consistency(s, size, tree).expect("sizes");
                    assert!(
                        merkle::verify_consistency(s, size, &r, &root, &proof).is_ok(),
                        "cosigned a checkpoint that does not extend the stored one"
                    );
                }
            }
            stored = Some((size, root));
        }
        let latest = witness.latest(ORIGIN).map(|l| (l.size, l.root));
        assert_eq!(
            latest, stored,
            "the witness state is the last cosigned checkpoint"
        );
    }
}

/// Runs one `witness_add_checkpoint` input; panics if a property
/// in this file's header fails.
pub fn witness_add_checkpoint(data: &[u8]) {
    let mut input = Input::new(data);
    if input.bool() {
        raw(input.rest());
    } else {
        sequence(&mut input);
    }
}
