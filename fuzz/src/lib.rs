//! The bftlog fuzz targets' bodies ([`targets`], one function per target,
//! also replayed over the checked-in corpora by `tests/corpus.rs`) and the
//! fixtures they share with the corpus generator (`examples/gen_corpus.rs`):
//! fixed keys, the fixed policy, and a byte reader that turns fuzz input
//! into choices.
//!
//! Everything here is deterministic, so a crash file reproduces exactly and
//! the generator's seeds verify under the keys the targets use.

pub mod consensus;
pub mod targets;

use std::sync::LazyLock;

use bftlog_spec::note::{KeyRing, KeyType, SignerKey, VerifierKey};
use bftlog_spec::policy::Policy;

/// Origin of the fuzzed log (also the replicas' note key name).
pub const ORIGIN: &str = "fuzz.bftlog.test/log";
/// Name of the fixed witness.
pub const WITNESS: &str = "witness.fuzz.test/w1";
/// Replicas in the fixed cluster.
pub const REPLICAS: usize = 4;

/// Public keys of `golang.org/x/mod/sumdb/note`'s test vectors in
/// `shared/testdata/note/checkpoints.json`, so those seeds verify.
pub const VECTOR_LOG_VKEY: &str =
    "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
pub const VECTOR_WITNESS_VKEY: &str =
    "witness.example/w1+017f50a1+BD7iqKcoPLL9colD2qEn7wnkgwcai0vGmbpFIvCbFM/e";

// Deriving a public key is a scalar multiplication, which costs far more
// than a whole fuzz iteration under coverage instrumentation: derive each
// key once per process.
static SIGNING_KEYS: LazyLock<Vec<ed25519_dalek::SigningKey>> = LazyLock::new(|| {
    (0..REPLICAS)
        .map(|i| ed25519_dalek::SigningKey::from_bytes(&[0x40 + i as u8; 32]))
        .collect()
});
static NOTE_KEYS: LazyLock<Vec<SignerKey>> = LazyLock::new(|| {
    SIGNING_KEYS
        .iter()
        .map(|k| SignerKey::new(ORIGIN, KeyType::Ed25519, k.clone()).expect("valid name"))
        .collect()
});
static WITNESS_KEY: LazyLock<SignerKey> = LazyLock::new(|| {
    SignerKey::new(
        WITNESS,
        KeyType::CosignatureV1,
        ed25519_dalek::SigningKey::from_bytes(&[0x77; 32]),
    )
    .expect("valid name")
});

/// The Ed25519 signing key of replica `i` (fixed bytes: never a secret).
pub fn replica_signing_key(i: usize) -> ed25519_dalek::SigningKey {
    SIGNING_KEYS[i].clone()
}

/// Replica `i`'s note key: it signs checkpoints under the log's origin.
pub fn replica_note_key(i: usize) -> SignerKey {
    NOTE_KEYS[i].clone()
}

/// The fixed witness's cosignature key.
pub fn witness_key() -> SignerKey {
    WITNESS_KEY.clone()
}

/// The fixed policy: four replica keys with the default 2f+1 replica
/// quorum, and one witness that must cosign.
pub fn policy_text() -> String {
    let mut text = String::new();
    for i in 0..REPLICAS {
        text.push_str(&format!("log {}\n", replica_note_key(i).verifier()));
    }
    text.push_str(&format!("replica-quorum {ORIGIN}\n"));
    text.push_str(&format!(
        "witness w1 {} https://w1.example\n",
        witness_key().verifier()
    ));
    text.push_str("quorum w1\n");
    text
}

pub fn policy() -> Policy {
    Policy::parse(policy_text().as_bytes()).expect("the fixed policy parses")
}

/// Every key the targets know: the replicas, the witness, and the keys of
/// the shared note vectors.
pub fn keyring() -> KeyRing {
    let mut keys: Vec<VerifierKey> = (0..REPLICAS)
        .map(|i| replica_note_key(i).verifier())
        .collect();
    keys.push(witness_key().verifier());
    keys.push(VerifierKey::parse(VECTOR_LOG_VKEY).expect("vector key"));
    keys.push(VerifierKey::parse(VECTOR_WITNESS_VKEY).expect("vector key"));
    KeyRing::from_keys(keys).expect("distinct keys")
}

/// The entry whose receipt the generator writes at `index`, so
/// `tlog_proof_verify` knows which leaf a receipt is for.
pub fn receipt_entry(index: u64) -> Vec<u8> {
    format!("fuzz entry {index}").into_bytes()
}

/// Reads choices from fuzz input. Past the end every read returns zero,
/// so any input is a complete program of choices.
pub struct Input<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Input { data, pos: 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.data.len()
    }

    pub fn u8(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    pub fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    pub fn u64(&mut self) -> u64 {
        let mut b = [0; 8];
        for x in &mut b {
            *x = self.u8();
        }
        u64::from_be_bytes(b)
    }

    /// A u64 that is usually small: one tag byte picks the width.
    pub fn size(&mut self) -> u64 {
        match self.u8() % 8 {
            0..=3 => self.u8() as u64,
            4 | 5 => self.u16() as u64,
            6 => self.u64() >> (self.u8() % 64),
            _ => self.u64(),
        }
    }

    /// `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        if n <= 256 {
            self.u8() as usize % n
        } else {
            self.u16() as usize % n
        }
    }

    /// Up to `max` bytes, length given by the input.
    pub fn bytes(&mut self, max: usize) -> &'a [u8] {
        let want = self.below(max + 1);
        let start = self.pos.min(self.data.len());
        let end = (start + want).min(self.data.len());
        self.pos = start + want;
        &self.data[start..end]
    }

    /// The rest of the input.
    pub fn rest(&mut self) -> &'a [u8] {
        let start = self.pos.min(self.data.len());
        self.pos = self.data.len();
        &self.data[start..]
    }

    pub fn hash(&mut self) -> [u8; 32] {
        let mut h = [0; 32];
        for x in &mut h {
            *x = self.u8();
        }
        h
    }
}

/// Writes choices in the format [`Input`] reads: the generator uses it to
/// build seeds for the structured targets.
#[derive(Default)]
pub struct Output(pub Vec<u8>);

impl Output {
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }

    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// The encoding [`Input::size`] reads back as `v`.
    pub fn size(&mut self, v: u64) -> &mut Self {
        if v < 256 {
            self.u8(0).u8(v as u8)
        } else if v < 65536 {
            self.u8(4).u16(v as u16)
        } else {
            self.u8(7).u64(v)
        }
    }

    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }
}
