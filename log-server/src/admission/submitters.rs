//! The submitters file of `mode = "keys"`: the Ed25519 keys allowed to
//! append, each with optional quotas of its own; and submitter key files
//! (a client's persistent TLS identity).
//!
//! ```toml
//! [[submitter]]
//! name = "ci-builder"                                   # for logs
//! key = "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="  # base64, 32 bytes
//! entries_per_s = 500                                   # optional
//! burst_entries = 8192                                  # optional
//! bytes_per_day = 1073741824                            # optional
//! ```

use std::collections::HashMap;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;
use zeroize::Zeroizing;

use super::Quota;
use crate::config::{ConfigError, invalid};

/// Most submitters one file may list (a bound on the replica's table).
pub const MAX_SUBMITTERS: usize = 100_000;

/// Largest submitters file read, in bytes.
pub const MAX_SUBMITTERS_FILE_BYTES: u64 = 32 << 20;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    submitter: Vec<Row>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Row {
    name: String,
    key: String,
    entries_per_s: Option<u64>,
    burst_entries: Option<u64>,
    bytes_per_day: Option<u64>,
}

/// One listed submitter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    pub name: String,
    pub quota: Quota,
}

/// Parses a submitters file: every key exactly 32 bytes of standard
/// base64, listed once; quotas a row leaves out are `defaults`'.
pub fn parse(
    text: &str,
    path: &Path,
    defaults: Quota,
) -> Result<HashMap<[u8; 32], Listed>, ConfigError> {
    let file: File = toml::from_str(text).map_err(|e| invalid(path, e.to_string()))?;
    if file.submitter.len() > MAX_SUBMITTERS {
        return Err(invalid(
            path,
            format!(
                "{} submitters; at most {MAX_SUBMITTERS} may be listed",
                file.submitter.len()
            ),
        ));
    }
    let mut listed = HashMap::with_capacity(file.submitter.len());
    for (i, row) in file.submitter.into_iter().enumerate() {
        let at = |m: String| invalid(path, format!("submitter {i} ({:?}): {m}", row.name));
        let key = public_key(&row.key).map_err(at)?;
        let quota = Quota {
            entries_per_s: row.entries_per_s.unwrap_or(defaults.entries_per_s),
            burst_entries: row.burst_entries.unwrap_or(defaults.burst_entries),
            bytes_per_day: row.bytes_per_day.unwrap_or(defaults.bytes_per_day),
        };
        quota.check().map_err(|m| at(m.to_owned()))?;
        let name = row.name.clone();
        if listed.insert(key, Listed { name, quota }).is_some() {
            return Err(at("this key is listed twice".into()));
        }
    }
    Ok(listed)
}

/// Reads and parses a submitters file.
pub fn load(path: &Path, defaults: Quota) -> Result<HashMap<[u8; 32], Listed>, ConfigError> {
    let read = |source| ConfigError::Read {
        path: path.to_owned(),
        source,
    };
    let len = std::fs::metadata(path).map_err(read)?.len();
    if len > MAX_SUBMITTERS_FILE_BYTES {
        return Err(invalid(
            path,
            format!("{len} bytes; a submitters file may have at most {MAX_SUBMITTERS_FILE_BYTES}"),
        ));
    }
    let text = std::fs::read_to_string(path).map_err(read)?;
    parse(&text, path, defaults)
}

/// A public key as written in the submitters file.
pub fn public_key(text: &str) -> Result<[u8; 32], String> {
    let bytes = B64
        .decode(text.trim())
        .map_err(|e| format!("key is not standard base64: {e}"))?;
    let key: [u8; 32] = bytes
        .try_into()
        .map_err(|b: Vec<u8>| format!("key has {} bytes; an Ed25519 key has 32", b.len()))?;
    ed25519_dalek::VerifyingKey::from_bytes(&key)
        .map_err(|_| "key is not a valid Ed25519 public key".to_owned())?;
    Ok(key)
}

/// How a public key is written in the submitters file.
pub fn format_public_key(key: &ed25519_dalek::VerifyingKey) -> String {
    B64.encode(key.as_bytes())
}

/// Adds a row to a submitters file (creating it if need be): `quota`
/// `None` leaves the row to the `[admission]` section's quota. Replicas
/// see it after their next SIGHUP (or start).
pub fn append_row(
    path: &Path,
    name: &str,
    key: &ed25519_dalek::VerifyingKey,
    quota: Option<Quota>,
) -> std::io::Result<()> {
    use std::io::Write;
    let mut row = format!(
        "\n[[submitter]]\nname = {}\nkey = \"{}\"\n",
        toml::Value::String(name.to_owned()),
        format_public_key(key)
    );
    if let Some(q) = quota {
        row.push_str(&format!(
            "entries_per_s = {}\nburst_entries = {}\nbytes_per_day = {}\n",
            q.entries_per_s, q.burst_entries, q.bytes_per_day
        ));
    }
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)?;
    file.write_all(row.as_bytes())?;
    file.sync_all()
}

/// The first line of a submitter key file.
const KEY_FILE_LABEL: &str = "bftlog submitter key";

/// Creates a submitter key file (readable by its owner only; never
/// overwrites) and returns the key.
pub fn create_key_file(path: &Path) -> Result<ed25519_dalek::SigningKey, ConfigError> {
    let key = ed25519_dalek::SigningKey::generate(&mut crate::system_rng());
    let seed = Zeroizing::new(B64.encode(key.to_bytes()));
    let text = Zeroizing::new(format!("{KEY_FILE_LABEL}\n{}\n", *seed));
    crate::config::write_secret(path, &text).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    Ok(key)
}

/// Loads a submitter key file; refuses one that group or others can read.
pub fn load_key_file(path: &Path) -> Result<ed25519_dalek::SigningKey, ConfigError> {
    let text = bftlog_witness::key_file::read_key_file(path)?;
    let mut lines = text.lines();
    if lines.next() != Some(KEY_FILE_LABEL) {
        return Err(invalid(
            path,
            format!(
                "not a submitter key file (its first line must be {KEY_FILE_LABEL:?}; create one with `bftlog submitter-key`)"
            ),
        ));
    }
    let seed = Zeroizing::new(
        B64.decode(lines.next().unwrap_or("").trim())
            .map_err(|e| invalid(path, format!("the key is not base64: {e}")))?,
    );
    if lines.next().is_some() {
        return Err(invalid(path, "trailing lines after the key"));
    }
    let seed: Zeroizing<[u8; 32]> = Zeroizing::new(
        seed.as_slice()
            .try_into()
            .map_err(|_| invalid(path, format!("the key has {} bytes, not 32", seed.len())))?,
    );
    Ok(ed25519_dalek::SigningKey::from_bytes(&seed))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULTS: Quota = Quota {
        entries_per_s: 10,
        burst_entries: 4096,
        bytes_per_day: 1 << 20,
    };

    fn key(seed: u8) -> String {
        format_public_key(&ed25519_dalek::SigningKey::from_bytes(&[seed; 32]).verifying_key())
    }

    #[test]
    fn rows_take_the_defaults_they_leave_out() {
        let text = format!(
            "[[submitter]]\nname = \"a\"\nkey = \"{}\"\n\n[[submitter]]\nname = \"b\"\nkey = \"{}\"\nentries_per_s = 99\n",
            key(1),
            key(2)
        );
        let listed = parse(&text, Path::new("s.toml"), DEFAULTS).unwrap();
        assert_eq!(listed.len(), 2);
        let b = public_key(&key(2)).unwrap();
        assert_eq!(listed[&b].quota.entries_per_s, 99);
        assert_eq!(listed[&b].quota.bytes_per_day, 1 << 20);
        assert!(parse("", Path::new("s.toml"), DEFAULTS).unwrap().is_empty());
    }

    #[test]
    fn appended_rows_parse() {
        let dir = crate::test_dir::TestDir::new(&format!("submitters-rows-{}", std::process::id()));
        let path = dir.join("submitters.toml");
        let a = ed25519_dalek::SigningKey::from_bytes(&[1; 32]).verifying_key();
        let b = ed25519_dalek::SigningKey::from_bytes(&[2; 32]).verifying_key();
        append_row(&path, "a \"quoted\" name", &a, None).unwrap();
        let q = Quota {
            entries_per_s: 7,
            burst_entries: 5000,
            bytes_per_day: 1 << 40,
        };
        append_row(&path, "b", &b, Some(q)).unwrap();
        let listed = load(&path, DEFAULTS).unwrap();
        assert_eq!(listed[a.as_bytes()].name, "a \"quoted\" name");
        assert_eq!(listed[a.as_bytes()].quota, DEFAULTS);
        assert_eq!(listed[b.as_bytes()].quota, q);
    }

    #[test]
    fn bad_files_are_refused_with_the_row_named() {
        let row =
            |k: &str, extra: &str| format!("[[submitter]]\nname = \"x\"\nkey = \"{k}\"\n{extra}");
        let cases = [
            (row("AAAA", ""), "32"),
            (row("not base64!", ""), "base64"),
            (format!("{}{}", row(&key(1), ""), row(&key(1), "")), "twice"),
            (row(&key(1), "colour = 1\n"), "unknown field"),
            (row(&key(1), "burst_entries = 10\n"), "burst_entries"),
            (row(&key(1), "entries_per_s = 0\n"), "entries_per_s"),
        ];
        for (text, expect) in cases {
            let e = parse(&text, Path::new("s.toml"), DEFAULTS).unwrap_err();
            assert!(e.to_string().contains(expect), "{e} lacks {expect:?}");
        }
    }

    #[test]
    fn key_files_round_trip_and_must_be_private() {
        let dir = crate::test_dir::TestDir::new(&format!("submitter-key-{}", std::process::id()));
        let path = dir.join("me.key");
        let key = create_key_file(&path).unwrap();
        assert_eq!(load_key_file(&path).unwrap().to_bytes(), key.to_bytes());
        assert!(create_key_file(&path).is_err(), "never overwrites");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            let e = load_key_file(&path).unwrap_err().to_string();
            assert!(e.contains("chmod"), "{e}");
        }
    }
}
