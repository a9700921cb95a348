//! # bftlog-spec
//!
//! Every bftlog format, implemented once: the log server, witness, verifier
//! and fuzz targets all use this crate, and `spec/*.md` describes the same
//! formats normatively (see `spec/README.md`).
//!
//! - [`merkle`]: RFC 6962 / RFC 9162 trees, compact ranges, proofs over a
//!   [`merkle::HashReader`].
//! - [`note`]: C2SP signed-note (Ed25519, vkeys, skeys, key IDs).
//! - [`checkpoint`]: C2SP tlog-checkpoint bodies.
//! - [`cosignature`]: C2SP tlog-cosignature v1 (timestamped Ed25519).
//! - [`proof`]: C2SP tlog-proof receipts.
//! - [`policy`]: C2SP tlog-policy plus the `replica-quorum` extension.
//! - [`evidence`]: split-view evidence naming replicas that signed both sides.
//! - [`wire`]: canonical CBOR messages and framing (the only user of
//!   serde_cbor).
//!
//! No async, no network, no unsafe code.
//!
//! ```
//! use bftlog_spec::{checkpoint::Checkpoint, merkle, note::{KeyType, SignerKey}, policy::Policy, proof::TlogProof};
//!
//! // A one-replica log with three entries.
//! let mut tree = merkle::MemoryTree::new();
//! for entry in [b"a".as_slice(), b"b", b"c"] {
//!     tree.append(merkle::leaf_hash(entry));
//! }
//! let key = SignerKey::new("example.com/log", KeyType::Ed25519, ed25519_dalek::SigningKey::from_bytes(&[7; 32])).unwrap();
//! let note = Checkpoint::new("example.com/log", tree.size(), tree.root()).sign(&key).unwrap();
//! let receipt = TlogProof {
//!     extra: None,
//!     index: 1,
//!     inclusion: merkle::prove_inclusion(1, tree.size(), &tree).unwrap(),
//!     checkpoint: note,
//! };
//! let text = receipt.format();
//!
//! // Offline, with nothing but the policy:
//! let policy = Policy::parse(format!("log {}\nquorum none\n", key.verifier()).as_bytes()).unwrap();
//! let verified = TlogProof::parse(text.as_bytes()).unwrap().verify_entry(&policy, b"b").unwrap();
//! assert_eq!(verified.index(), 1);
//! ```
#![forbid(unsafe_code)]

pub mod checkpoint;
pub mod cosignature;
pub mod encoding;
pub mod evidence;
pub mod merkle;
pub mod note;
pub mod policy;
pub mod proof;
pub mod tiles;
pub mod wire;

pub use ed25519_dalek;
