//! Every case in shared/testdata/note/checkpoints.json (generated with Go's
//! golang.org/x/mod/sumdb/note and a cosignature v1 signer), plus
//! byte-identical signatures for the same key and text.

mod common;

use bftlog_spec::checkpoint::Checkpoint;
use bftlog_spec::note::{KeyRing, KeyType, Note, SignerKey, VerifierKey};
use serde_json::Value;

fn load() -> Value {
    let path = common::testdata().join("note/checkpoints.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

/// Verifies a vector note the way the vectors define validity: a strict
/// checkpoint body, a verified signature from a log key, and every
/// signature from a listed witness key verified. (The vectors name the log
/// key `PeterNeumann` for origin `example.com/log`, which signed-note
/// allows; tlog-policy requires name = origin, so policies are tested in
/// policy.rs rather than here.)
fn verify_case(case: &Value, note: &Note) -> Result<(Checkpoint, Vec<(String, u64)>), String> {
    // A vkey whose key ID does not match its name and key is itself
    // invalid (as in Go), which leaves the note with no known signer.
    let parse = |field: &str| -> Result<Vec<VerifierKey>, String> {
        strings(&case[field])
            .iter()
            .map(|k| VerifierKey::parse(k).map_err(|e| format!("{field}: {e}")))
            .collect()
    };
    let (logs, witnesses) = (parse("log_vkeys")?, parse("witness_vkeys")?);
    let ring = KeyRing::from_keys(logs.iter().chain(&witnesses).cloned()).unwrap();
    let checkpoint = Checkpoint::parse(note.text()).map_err(|e| e.to_string())?;
    let verified = note.verify(&ring).map_err(|e| e.to_string())?;
    if !verified
        .signatures()
        .iter()
        .any(|s| s.key.key_type() == KeyType::Ed25519)
    {
        return Err("no log signature".into());
    }
    let cosigners = verified
        .signatures()
        .iter()
        .filter_map(|s| s.timestamp.map(|t| (s.key.name().to_owned(), t)))
        .collect();
    Ok((checkpoint, cosigners))
}

#[test]
fn checkpoint_vectors() {
    let data = load();
    let cases = data["cases"].as_array().unwrap();
    assert!(cases.len() >= 10);
    let (mut valid, mut invalid) = (0, 0);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let note_text = case["note"].as_str().unwrap();
        let result = Note::parse(note_text.as_bytes())
            .map_err(|e| e.to_string())
            .and_then(|note| {
                // Parsing is strict: format(parse(x)) == x.
                assert_eq!(note.format(), note_text, "{name}: note does not round-trip");
                verify_case(case, &note)
            });
        if case["valid"].as_bool().unwrap() {
            let (checkpoint, cosigners) = result.unwrap_or_else(|e| panic!("{name}: {e}"));
            if let Some(size) = case["size"].as_u64() {
                assert_eq!(checkpoint.size, size, "{name}");
            }
            let want_by: Vec<String> = case.get("cosigned_by").map(strings).unwrap_or_default();
            let got_by: Vec<String> = cosigners.iter().map(|c| c.0.clone()).collect();
            assert_eq!(got_by, want_by, "{name}");
            let want_at: Vec<u64> = case
                .get("cosigned_at")
                .map(|v| {
                    v.as_array()
                        .unwrap()
                        .iter()
                        .map(|t| t.as_u64().unwrap())
                        .collect()
                })
                .unwrap_or_default();
            let got_at: Vec<u64> = cosigners.iter().map(|c| c.1).collect();
            assert_eq!(got_at, want_at, "{name}");
            valid += 1;
        } else {
            assert!(result.is_err(), "{name}: accepted an invalid note");
            eprintln!("{name}: rejected: {}", result.unwrap_err());
            invalid += 1;
        }
    }
    assert!(
        valid >= 4 && invalid >= 5,
        "{valid} valid, {invalid} invalid"
    );
}

/// Ed25519 is deterministic: signing the vectors' texts with the vectors'
/// key must reproduce Go's signature lines byte for byte.
#[test]
fn signatures_identical_to_go() {
    let data = load();
    let key = SignerKey::parse(data["log_skey"].as_str().unwrap()).unwrap();
    assert_eq!(
        key.verifier().to_string(),
        data["log_vkey"].as_str().unwrap()
    );
    assert_eq!(key.to_skey_string(), data["log_skey"].as_str().unwrap());
    let mut compared = 0;
    for case in data["cases"].as_array().unwrap() {
        if !case["valid"].as_bool().unwrap() {
            continue;
        }
        let note = Note::parse(case["note"].as_str().unwrap().as_bytes()).unwrap();
        let go_sig = note
            .signatures()
            .iter()
            .find(|s| s.name == key.name())
            .unwrap();
        let ours = key.sign_text(note.text()).unwrap();
        assert_eq!(&ours, go_sig, "{}", case["name"]);
        // And through the checkpoint API.
        let cp = Checkpoint::parse(note.text()).unwrap();
        let signed = cp.sign(&key).unwrap();
        assert_eq!(&signed.signatures()[0], go_sig);
        compared += 1;
    }
    assert!(compared >= 4);
}

#[test]
fn vkeys_round_trip_and_reject_garbage() {
    let data = load();
    let vkey = data["log_vkey"].as_str().unwrap();
    assert_eq!(VerifierKey::parse(vkey).unwrap().to_string(), vkey);
    let bad = [
        "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", // wrong key ID
        "PeterNeumann+C74F20A3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", // uppercase ID
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10T",  // bad base64
        "PeterNeumann+c74f20a3+AhpcZQcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", // type 0x02
        "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+c74f20a3",
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW+x",
        "PeterNeumann+c74f20a3+AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", // small-order key
    ];
    for text in bad {
        assert!(VerifierKey::parse(text).is_err(), "{text}");
    }
}
