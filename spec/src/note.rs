//! C2SP signed-note v1: parse and format notes, verifier keys (vkeys) and
//! signer keys (skeys), Ed25519 note signatures and key IDs.
//!
//! Normative description: `spec/note.md`.
//!
//! Verification follows C2SP exactly: signatures whose (name, key ID) match
//! no known key are ignored; a signature from a known key that fails rejects
//! the whole note; a note with no verified known signature is rejected.
//! Timestamped cosignatures (type 0x04) are verified here too, because a
//! known witness key's failing cosignature must also reject the note.

use crate::cosignature;
use crate::encoding::{decode_base64, encode_base64};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;
use zeroize::Zeroizing;

/// Largest note accepted, in bytes.
pub const MAX_NOTE_BYTES: usize = 1 << 20;
/// Most signature lines accepted in one note (C2SP requires at least 16).
pub const MAX_SIGNATURES: usize = 128;
/// Longest key name accepted, in bytes.
pub const MAX_NAME_BYTES: usize = 512;

const SIGNATURE_PREFIX: &str = "\u{2014} ";

/// Signature types of C2SP signed-note that bftlog implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyType {
    /// `0x01`: Ed25519 over the note text.
    Ed25519,
    /// `0x04`: timestamped Ed25519 witness cosignature (tlog-cosignature v1).
    CosignatureV1,
}

impl KeyType {
    pub fn byte(self) -> u8 {
        match self {
            KeyType::Ed25519 => 0x01,
            KeyType::CosignatureV1 => 0x04,
        }
    }

    pub fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            0x01 => Some(KeyType::Ed25519),
            0x04 => Some(KeyType::CosignatureV1),
            _ => None,
        }
    }

    /// Length of the signature bytes after the 4-byte key ID.
    pub fn signature_len(self) -> usize {
        match self {
            KeyType::Ed25519 => 64,
            KeyType::CosignatureV1 => 8 + 64,
        }
    }
}

/// `SHA-256(name || 0x0A || type || public key)[:4]` as a big-endian u32.
pub fn key_id(name: &str, key_type: KeyType, public_key: &[u8; 32]) -> u32 {
    let mut hasher = Sha256::new();
    hasher.update(name.as_bytes());
    hasher.update([b'\n', key_type.byte()]);
    hasher.update(public_key);
    let digest = hasher.finalize();
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

/// Why a key name was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("key name is empty")]
    Empty,
    #[error("key name is longer than {MAX_NAME_BYTES} bytes")]
    TooLong,
    #[error("key name contains a space, a control character or '+'")]
    BadCharacter,
}

/// Key names of keys we parse or create: non-empty, at most
/// [`MAX_NAME_BYTES`], no Unicode space, no control character, no `+`.
pub fn check_name(name: &str) -> Result<(), NameError> {
    if name.len() > MAX_NAME_BYTES {
        return Err(NameError::TooLong);
    }
    if name.chars().any(char::is_control) {
        return Err(NameError::BadCharacter);
    }
    check_signature_name(name)
}

/// Names on signature lines: C2SP's rule only (non-empty, no Unicode space,
/// no `+`), as Go's note package applies it, so that a line from an unknown
/// signer is ignored rather than rejecting the note. (Controls below U+0020
/// are already excluded from the whole note.)
pub fn check_signature_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.chars().any(|c| c.is_whitespace() || c == '+') {
        return Err(NameError::BadCharacter);
    }
    Ok(())
}

/// Why a verifier or signer key string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("key must have the form name+keyid+base64key")]
    Format,
    #[error("bad key name: {0}")]
    Name(#[from] NameError),
    #[error("key ID must be 8 lowercase hex digits")]
    KeyIdFormat,
    #[error("key data is not canonical base64")]
    Base64,
    #[error("unsupported signature type 0x{0:02x}")]
    UnsupportedType(u8),
    #[error("key data has {0} bytes, expected 33 (type byte and 32-byte key)")]
    KeyLength(usize),
    #[error("not a valid Ed25519 public key")]
    BadPublicKey,
    #[error("Ed25519 public key has small order")]
    WeakPublicKey,
    #[error("key ID {stated:08x} does not match the key (computed {computed:08x})")]
    KeyIdMismatch { stated: u32, computed: u32 },
    #[error("signer key must start with PRIVATE+KEY+")]
    NotPrivate,
}

fn parse_key_id(text: &str) -> Result<u32, KeyError> {
    if text.len() != 8 || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(KeyError::KeyIdFormat);
    }
    u32::from_str_radix(text, 16).map_err(|_| KeyError::KeyIdFormat)
}

/// Splits `name+keyid+data`. Names contain no `+`, but base64 key data may,
/// so only the first two `+` separate fields (as in Go's note package).
/// The parts of key text: name, stated key ID, type and the 32 key bytes
/// (a signer key's seed: wiped, like the decoded copy, when dropped).
type KeyParts<'a> = (&'a str, u32, KeyType, Zeroizing<[u8; 32]>);

fn split_key(text: &str) -> Result<KeyParts<'_>, KeyError> {
    let mut parts = text.splitn(3, '+');
    let (Some(name), Some(id), Some(data)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(KeyError::Format);
    };
    check_name(name)?;
    let stated = parse_key_id(id)?;
    let data = Zeroizing::new(decode_base64(data).map_err(|_| KeyError::Base64)?);
    if data.len() != 33 {
        if let Some(&t) = data.first() {
            if KeyType::from_byte(t).is_none() {
                return Err(KeyError::UnsupportedType(t));
            }
        }
        return Err(KeyError::KeyLength(data.len()));
    }
    let key_type = KeyType::from_byte(data[0]).ok_or(KeyError::UnsupportedType(data[0]))?;
    let key = Zeroizing::new(<[u8; 32]>::try_from(&data[1..]).expect("length checked"));
    Ok((name, stated, key_type, key))
}

/// A public key that verifies note signatures, with its name and key ID:
/// C2SP vkey text `name+keyid+base64(type || key)`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct VerifierKey {
    name: String,
    key_id: u32,
    key_type: KeyType,
    public_key: VerifyingKey,
}

impl VerifierKey {
    /// Builds a key from its parts; the key ID is computed.
    pub fn new(name: &str, key_type: KeyType, public_key: VerifyingKey) -> Result<Self, KeyError> {
        check_name(name)?;
        if public_key.is_weak() {
            return Err(KeyError::WeakPublicKey);
        }
        Ok(VerifierKey {
            name: name.to_owned(),
            key_id: key_id(name, key_type, public_key.as_bytes()),
            key_type,
            public_key,
        })
    }

    /// Parses vkey text, checking that the stated key ID matches the key.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let (name, stated, key_type, key) = split_key(text)?;
        let public_key = VerifyingKey::from_bytes(&key).map_err(|_| KeyError::BadPublicKey)?;
        let parsed = VerifierKey::new(name, key_type, public_key)?;
        if parsed.key_id != stated {
            return Err(KeyError::KeyIdMismatch {
                stated,
                computed: parsed.key_id,
            });
        }
        Ok(parsed)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    pub fn key_type(&self) -> KeyType {
        self.key_type
    }

    pub fn public_key(&self) -> &VerifyingKey {
        &self.public_key
    }

    /// Verifies the signature bytes that follow the key ID in a signature
    /// line. Returns the cosignature timestamp for type 0x04 keys.
    pub fn verify(&self, text: &str, signature: &[u8]) -> Result<Option<u64>, SignatureError> {
        if signature.len() != self.key_type.signature_len() {
            return Err(SignatureError::Length {
                expected: self.key_type.signature_len(),
                actual: signature.len(),
            });
        }
        match self.key_type {
            KeyType::Ed25519 => {
                let sig = Signature::from_slice(signature).map_err(|_| SignatureError::Invalid)?;
                self.public_key
                    .verify_strict(text.as_bytes(), &sig)
                    .map_err(|_| SignatureError::Invalid)?;
                Ok(None)
            }
            KeyType::CosignatureV1 => {
                let (timestamp, sig) = cosignature::split_signature(signature)?;
                let message = cosignature::signed_message(timestamp, text);
                self.public_key
                    .verify_strict(message.as_bytes(), &sig)
                    .map_err(|_| SignatureError::Invalid)?;
                Ok(Some(timestamp))
            }
        }
    }
}

impl fmt::Display for VerifierKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut data = Vec::with_capacity(33);
        data.push(self.key_type.byte());
        data.extend_from_slice(self.public_key.as_bytes());
        write!(
            f,
            "{}+{:08x}+{}",
            self.name,
            self.key_id,
            encode_base64(&data)
        )
    }
}

impl fmt::Debug for VerifierKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VerifierKey({self})")
    }
}

impl FromStr for VerifierKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        VerifierKey::parse(s)
    }
}

/// A private key that signs notes: skey text
/// `PRIVATE+KEY+name+keyid+base64(type || 32-byte seed)`, as Go's
/// golang.org/x/mod/sumdb/note writes it.
#[derive(Clone)]
pub struct SignerKey {
    name: String,
    key_id: u32,
    key_type: KeyType,
    signing_key: SigningKey,
}

impl SignerKey {
    pub fn new(name: &str, key_type: KeyType, signing_key: SigningKey) -> Result<Self, KeyError> {
        check_name(name)?;
        let key_id = key_id(name, key_type, signing_key.verifying_key().as_bytes());
        Ok(SignerKey {
            name: name.to_owned(),
            key_id,
            key_type,
            signing_key,
        })
    }

    /// Generates a fresh key from the given randomness source.
    pub fn generate<R: rand_core::CryptoRng + ?Sized>(
        name: &str,
        key_type: KeyType,
        rng: &mut R,
    ) -> Result<Self, KeyError> {
        SignerKey::new(name, key_type, SigningKey::generate(rng))
    }

    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let rest = text
            .strip_prefix("PRIVATE+KEY+")
            .ok_or(KeyError::NotPrivate)?;
        let (name, stated, key_type, seed) = split_key(rest)?;
        let parsed = SignerKey::new(name, key_type, SigningKey::from_bytes(&seed))?;
        if parsed.key_id != stated {
            return Err(KeyError::KeyIdMismatch {
                stated,
                computed: parsed.key_id,
            });
        }
        Ok(parsed)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    pub fn key_type(&self) -> KeyType {
        self.key_type
    }

    pub fn signing_key(&self) -> &SigningKey {
        &self.signing_key
    }

    pub fn verifier(&self) -> VerifierKey {
        VerifierKey::new(&self.name, self.key_type, self.signing_key.verifying_key())
            .expect("a signing key's own name was checked and its public key is not weak")
    }

    /// The skey text. Treat it as a secret.
    pub fn to_skey_string(&self) -> String {
        let mut data = Vec::with_capacity(33);
        data.push(self.key_type.byte());
        data.extend_from_slice(self.signing_key.as_bytes());
        format!(
            "PRIVATE+KEY+{}+{:08x}+{}",
            self.name,
            self.key_id,
            encode_base64(&data)
        )
    }

    /// Signs note text with an Ed25519 (type 0x01) key.
    pub fn sign_text(&self, text: &str) -> Result<NoteSignature, SignError> {
        if self.key_type != KeyType::Ed25519 {
            return Err(SignError::WrongKeyType(self.key_type));
        }
        check_text(text).map_err(SignError::Text)?;
        let sig = self.signing_key.sign(text.as_bytes());
        Ok(NoteSignature {
            name: self.name.clone(),
            key_id: self.key_id,
            signature: sig.to_bytes().to_vec(),
        })
    }

    /// Signs a cosignature v1 (type 0x04 key) over a checkpoint body.
    pub fn cosign_text(&self, text: &str, timestamp: u64) -> Result<NoteSignature, SignError> {
        if self.key_type != KeyType::CosignatureV1 {
            return Err(SignError::WrongKeyType(self.key_type));
        }
        if timestamp > cosignature::MAX_TIMESTAMP {
            return Err(SignError::Timestamp(timestamp));
        }
        check_text(text).map_err(SignError::Text)?;
        let message = cosignature::signed_message(timestamp, text);
        let sig = self.signing_key.sign(message.as_bytes());
        let mut bytes = Vec::with_capacity(72);
        bytes.extend_from_slice(&timestamp.to_be_bytes());
        bytes.extend_from_slice(&sig.to_bytes());
        Ok(NoteSignature {
            name: self.name.clone(),
            key_id: self.key_id,
            signature: bytes,
        })
    }
}

impl fmt::Debug for SignerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SignerKey({}, {:08x}, <secret>)", self.name, self.key_id)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    #[error("a {0:?} key cannot make this kind of signature")]
    WrongKeyType(KeyType),
    #[error("note text: {0}")]
    Text(TextError),
    #[error("cosignature timestamp {0} exceeds 2^63-1")]
    Timestamp(u64),
}

/// Why a signature from a known key did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("signature has {actual} bytes after the key ID, expected {expected}")]
    Length { expected: usize, actual: usize },
    #[error("cosignature timestamp exceeds 2^63-1")]
    Timestamp,
    #[error("signature does not verify")]
    Invalid,
}

/// One signature line: `— name base64(key ID || signature)`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct NoteSignature {
    pub name: String,
    pub key_id: u32,
    /// The bytes after the key ID.
    pub signature: Vec<u8>,
}

impl NoteSignature {
    /// The signature line, `— name base64(key ID || signature)\n`.
    pub fn line(&self) -> String {
        let mut data = Vec::with_capacity(4 + self.signature.len());
        data.extend_from_slice(&self.key_id.to_be_bytes());
        data.extend_from_slice(&self.signature);
        format!("{SIGNATURE_PREFIX}{} {}\n", self.name, encode_base64(&data))
    }
}

impl fmt::Debug for NoteSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NoteSignature({}, {:08x})", self.name, self.key_id)
    }
}

/// Why note text was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    #[error("note text is empty")]
    Empty,
    #[error("note text must end with a newline")]
    NoFinalNewline,
    #[error("note contains a control character other than newline at byte {0}")]
    ControlCharacter(usize),
    #[error("note is larger than {MAX_NOTE_BYTES} bytes")]
    TooLarge,
}

/// Note text: non-empty, ends in newline, no control characters but newline.
pub fn check_text(text: &str) -> Result<(), TextError> {
    if text.is_empty() {
        return Err(TextError::Empty);
    }
    if text.len() > MAX_NOTE_BYTES {
        return Err(TextError::TooLarge);
    }
    if !text.ends_with('\n') {
        return Err(TextError::NoFinalNewline);
    }
    check_controls(text)
}

fn check_controls(text: &str) -> Result<(), TextError> {
    // U+007F and C1 controls are not "ASCII control characters below U+0020"
    // and C2SP allows them; Go's note package rejects only < 0x20 too.
    match text.bytes().position(|b| b < 0x20 && b != b'\n') {
        Some(at) => Err(TextError::ControlCharacter(at)),
        None => Ok(()),
    }
}

/// Why a note was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    #[error("note is not valid UTF-8")]
    NotUtf8,
    #[error(transparent)]
    Text(#[from] TextError),
    #[error("note has no blank line separating text from signatures")]
    NoSignatureBlock,
    #[error("note has no signatures")]
    NoSignatures,
    #[error("note has more than {MAX_SIGNATURES} signatures")]
    TooManySignatures,
    #[error("signature line {line} is malformed: {reason}")]
    MalformedSignature { line: usize, reason: &'static str },
    #[error("signature line {line}: {error}")]
    SignatureName { line: usize, error: NameError },
    #[error("signature by known key {name}+{key_id:08x} does not verify: {error}")]
    InvalidSignature {
        name: String,
        key_id: u32,
        error: SignatureError,
    },
    #[error("no signature from a known key")]
    NoKnownSignature,
}

/// A signed note: text plus signature lines, as parsed; not yet verified.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Note {
    text: String,
    signatures: Vec<NoteSignature>,
}

impl Note {
    /// An unsigned note with the given text (signatures are added later).
    pub fn new(text: &str) -> Result<Self, TextError> {
        check_text(text)?;
        Ok(Note {
            text: text.to_owned(),
            signatures: Vec::new(),
        })
    }

    /// Parses a signed note. Checks form only: call [`Note::verify`].
    pub fn parse(bytes: &[u8]) -> Result<Self, NoteError> {
        if bytes.len() > MAX_NOTE_BYTES {
            return Err(TextError::TooLarge.into());
        }
        let message = std::str::from_utf8(bytes).map_err(|_| NoteError::NotUtf8)?;
        check_controls(message)?;
        // The text ends at the last blank line; everything after it is
        // signature lines.
        let split = message.rfind("\n\n").ok_or(NoteError::NoSignatureBlock)?;
        let text = &message[..split + 1];
        let block = &message[split + 2..];
        if block.is_empty() {
            return Err(NoteError::NoSignatures);
        }
        if !block.ends_with('\n') {
            return Err(TextError::NoFinalNewline.into());
        }
        let mut signatures = Vec::new();
        for (i, line) in block[..block.len() - 1].split('\n').enumerate() {
            let line_no = i + 1;
            if signatures.len() == MAX_SIGNATURES {
                return Err(NoteError::TooManySignatures);
            }
            signatures.push(parse_signature_line(line, line_no)?);
        }
        Ok(Note {
            text: text.to_owned(),
            signatures,
        })
    }

    /// The signed text, including its final newline.
    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn signatures(&self) -> &[NoteSignature] {
        &self.signatures
    }

    /// Adds a signature line. Fails if the note would exceed the limits.
    pub fn add_signature(&mut self, signature: NoteSignature) -> Result<(), NoteError> {
        if self.signatures.len() == MAX_SIGNATURES {
            return Err(NoteError::TooManySignatures);
        }
        check_signature_name(&signature.name).map_err(|error| NoteError::SignatureName {
            line: self.signatures.len() + 1,
            error,
        })?;
        // A note we build must parse back: keep it within the size limit.
        let size = self.text.len()
            + 1
            + self
                .signatures
                .iter()
                .chain([&signature])
                .map(|s| s.line().len())
                .sum::<usize>();
        if size > MAX_NOTE_BYTES {
            return Err(TextError::TooLarge.into());
        }
        self.signatures.push(signature);
        Ok(())
    }

    /// Signs the text with an Ed25519 key and appends the signature.
    pub fn sign(&mut self, key: &SignerKey) -> Result<(), SignError> {
        let signature = key.sign_text(&self.text)?;
        self.add_signature(signature)
            .map_err(|_| SignError::Text(TextError::TooLarge))
    }

    /// The note as text: body, blank line, signature lines.
    pub fn format(&self) -> String {
        let mut out = String::with_capacity(self.text.len() + 1 + self.signatures.len() * 110);
        out.push_str(&self.text);
        out.push('\n');
        for signature in &self.signatures {
            out.push_str(&signature.line());
        }
        out
    }

    /// Verifies the note against a set of known keys (C2SP rules).
    pub fn verify<'a>(&'a self, keys: &'a KeyRing) -> Result<VerifiedNote<'a>, NoteError> {
        let mut seen = HashSet::new();
        let mut verified = Vec::new();
        for signature in &self.signatures {
            let Some(key) = keys.get(&signature.name, signature.key_id) else {
                continue;
            };
            // A repeated line by one known key is dropped unverified, as
            // Go's note.Open does: the first one counts, so a key counts
            // once (and notes Go accepts are accepted here).
            if !seen.insert((signature.name.as_str(), signature.key_id)) {
                continue;
            }
            let timestamp = key
                .verify(&self.text, &signature.signature)
                .map_err(|error| NoteError::InvalidSignature {
                    name: signature.name.clone(),
                    key_id: signature.key_id,
                    error,
                })?;
            verified.push(VerifiedSignature { key, timestamp });
        }
        if verified.is_empty() {
            return Err(NoteError::NoKnownSignature);
        }
        Ok(VerifiedNote {
            text: &self.text,
            signatures: verified,
        })
    }
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.format())
    }
}

fn parse_signature_line(line: &str, line_no: usize) -> Result<NoteSignature, NoteError> {
    let malformed = |reason| NoteError::MalformedSignature {
        line: line_no,
        reason,
    };
    let rest = line
        .strip_prefix(SIGNATURE_PREFIX)
        .ok_or(malformed("must start with an em dash and a space"))?;
    let (name, data) = rest
        .split_once(' ')
        .ok_or(malformed("missing space between name and signature"))?;
    check_signature_name(name).map_err(|error| NoteError::SignatureName {
        line: line_no,
        error,
    })?;
    let data = decode_base64(data).map_err(|_| malformed("signature is not canonical base64"))?;
    if data.len() < 5 {
        return Err(malformed("signature shorter than a key ID and one byte"));
    }
    let key_id = u32::from_be_bytes(data[..4].try_into().expect("length checked"));
    Ok(NoteSignature {
        name: name.to_owned(),
        key_id,
        signature: data[4..].to_vec(),
    })
}

/// A set of known verifier keys, looked up by (name, key ID).
#[derive(Clone, Debug, Default)]
pub struct KeyRing {
    keys: Vec<VerifierKey>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyRingError {
    #[error("two keys share name and key ID {name}+{key_id:08x}")]
    Collision { name: String, key_id: u32 },
}

impl KeyRing {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a key; two keys with the same name and key ID cannot coexist,
    /// since signatures could not be attributed.
    pub fn add(&mut self, key: VerifierKey) -> Result<(), KeyRingError> {
        if self.get(key.name(), key.key_id()).is_some() {
            return Err(KeyRingError::Collision {
                name: key.name().to_owned(),
                key_id: key.key_id(),
            });
        }
        self.keys.push(key);
        Ok(())
    }

    pub fn from_keys<I: IntoIterator<Item = VerifierKey>>(keys: I) -> Result<Self, KeyRingError> {
        let mut ring = KeyRing::new();
        for key in keys {
            ring.add(key)?;
        }
        Ok(ring)
    }

    pub fn get(&self, name: &str, key_id: u32) -> Option<&VerifierKey> {
        self.keys
            .iter()
            .find(|k| k.key_id == key_id && k.name == name)
    }

    pub fn keys(&self) -> &[VerifierKey] {
        &self.keys
    }
}

/// A signature that verified under a known key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedSignature<'k> {
    pub key: &'k VerifierKey,
    /// The cosignature timestamp, for type 0x04 keys.
    pub timestamp: Option<u64>,
}

/// A note whose text is vouched for by at least one known key. Only
/// [`Note::verify`] makes one.
#[derive(Clone, Debug)]
pub struct VerifiedNote<'a> {
    text: &'a str,
    signatures: Vec<VerifiedSignature<'a>>,
}

impl<'a> VerifiedNote<'a> {
    pub fn text(&self) -> &'a str {
        self.text
    }

    pub fn signatures(&self) -> &[VerifiedSignature<'a>] {
        &self.signatures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosigner_key_id_uses_type_4() {
        let key = VerifierKey::parse(
            "witness.example/w1+017f50a1+BD7iqKcoPLL9colD2qEn7wnkgwcai0vGmbpFIvCbFM/e",
        )
        .unwrap();
        assert_eq!(key.key_id(), 0x017f50a1);
        assert_eq!(key.key_type(), KeyType::CosignatureV1);
    }

    /// A repeated line by one known key is dropped unverified, as Go's
    /// note.Open does: the key counts once, and a garbage repeat does not
    /// reject the note (a garbage *first* line still does).
    #[test]
    fn a_known_key_counts_once_and_its_repeats_are_ignored() {
        let key = SignerKey::new(
            "log.example",
            KeyType::Ed25519,
            SigningKey::from_bytes(&[1; 32]),
        )
        .unwrap();
        let ring = KeyRing::from_keys([key.verifier()]).unwrap();
        let mut note = Note::new("hello\n").unwrap();
        note.sign(&key).unwrap();
        let good = note.signatures()[0].clone();
        let garbage = NoteSignature {
            signature: vec![7; 64],
            ..good.clone()
        };
        let mut twice = note.clone();
        twice.add_signature(good.clone()).unwrap();
        twice.add_signature(garbage.clone()).unwrap();
        let parsed = Note::parse(twice.format().as_bytes()).unwrap();
        assert_eq!(parsed.verify(&ring).unwrap().signatures().len(), 1);
        let mut garbage_first = Note::new("hello\n").unwrap();
        garbage_first.add_signature(garbage).unwrap();
        garbage_first.add_signature(good).unwrap();
        let parsed = Note::parse(garbage_first.format().as_bytes()).unwrap();
        assert!(matches!(
            parsed.verify(&ring),
            Err(NoteError::InvalidSignature { .. })
        ));
    }

    #[test]
    fn unknown_signers_with_odd_names_are_ignored() {
        let key = SignerKey::new(
            "log.example",
            KeyType::Ed25519,
            SigningKey::from_bytes(&[1; 32]),
        )
        .unwrap();
        let mut note = Note::new("hello\n").unwrap();
        note.sign(&key).unwrap();
        let long_name = "n".repeat(MAX_NAME_BYTES + 1);
        let text = format!(
            "{}\u{2014} del\u{7f}name AAAAAAA=\n\u{2014} {long_name} AAAAAAA=\n",
            note.format()
        );
        let parsed = Note::parse(text.as_bytes()).unwrap();
        let ring = KeyRing::from_keys([key.verifier()]).unwrap();
        assert_eq!(parsed.verify(&ring).unwrap().signatures().len(), 1);
        // Malformed lines still reject: a space or '+' in the name.
        for bad in [
            "\u{2014} a+b AAAAAAA=\n",
            "\u{2014} a\u{a0}b AAAAAAA=\n",
            "\u{2014}  AAAAAAA=\n",
            "- a AAAAAAA=\n",
        ] {
            assert!(
                Note::parse(format!("{}{bad}", note.format()).as_bytes()).is_err(),
                "{bad:?}"
            );
        }
        // Signers we create follow the stricter key rule.
        assert!(
            SignerKey::new(
                "del\u{7f}",
                KeyType::Ed25519,
                SigningKey::from_bytes(&[1; 32])
            )
            .is_err()
        );
    }
}
