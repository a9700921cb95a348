//! The cluster key `bftlog init` deals: any quorum of the replicas' share
//! files signs a checkpoint that Go's golang.org/x/mod/sumdb/note opens
//! with `log.vkey` alone, and whose signature Python's `cryptography`
//! (OpenSSL's Ed25519) verifies as a plain RFC 8032 signature. Needs `go`
//! with Debian's golang-golang-x-mod-dev and `cryptography` (which moto
//! brings); `.ci/run` installs them, and under CI=true their absence fails.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use base64::Engine;
use bftlog_server::cluster_key::{ClusterShare, load_share};
use bftlog_server::config::{CLUSTER_VKEY_FILE, cluster_share_file, init_cluster};
use bftlog_spec::checkpoint::Checkpoint;
use bftlog_spec::merkle;
use bftlog_spec::note::{Note, NoteSignature, VerifierKey};
use frost_ed25519 as frost;

#[path = "support/go.rs"]
mod go;
#[path = "../src/test_dir.rs"]
mod test_dir;

fn unavailable(why: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("interop oracle unavailable under CI: {why}");
    }
    eprintln!("SKIPPED: {why}");
}

/// Builds the spec crate's Go note oracle (`spec/tests/go/interop.go`).
fn go_oracle() -> Option<PathBuf> {
    go::go_build("../spec/tests/go/interop.go", "note_interop", "sumdb/note")
}

/// Asks the Go oracle to open `note` with `vkeys` only.
fn go_opens(oracle: &PathBuf, note: &str, vkeys: &[String]) -> serde_json::Value {
    let mut child = Command::new(oracle)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let request = serde_json::json!({"op": "verify", "note": note, "vkeys": vkeys});
    writeln!(child.stdin.take().unwrap(), "{request}").unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    child.wait().unwrap();
    serde_json::from_str(&line).unwrap()
}

/// Whether Python's `cryptography` accepts `signature` by `public_key` over
/// `message` (`None` if it cannot run).
fn python_verifies(public_key: &[u8], signature: &[u8], message: &[u8]) -> Option<bool> {
    let script = "import sys, base64\n\
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey\n\
from cryptography.exceptions import InvalidSignature\n\
key = Ed25519PublicKey.from_public_bytes(base64.b64decode(sys.argv[1]))\n\
try:\n    key.verify(base64.b64decode(sys.argv[2]), base64.b64decode(sys.argv[3]))\n    print('valid')\n\
except InvalidSignature:\n    print('invalid')\n";
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let out = Command::new("python3")
        .args([
            "-c",
            script,
            &b64(public_key),
            &b64(signature),
            &b64(message),
        ])
        .output()
        .ok()?;
    match String::from_utf8_lossy(&out.stdout).trim() {
        "valid" => Some(true),
        "invalid" => Some(false),
        _ => {
            unavailable(&format!(
                "python3 with cryptography: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
            None
        }
    }
}

/// The shares `which` sign `text` together (FROST's two rounds and the
/// aggregation); returns the 64 signature bytes.
fn threshold_sign(shares: &[ClusterShare], which: &[usize], text: &str) -> Vec<u8> {
    let mut rng = rand_core06::OsRng;
    let mut nonces = BTreeMap::new();
    let mut commitments = BTreeMap::new();
    for &i in which {
        let kp = &shares[i].key_package;
        let (n, c) = frost::round1::commit(kp.signing_share(), &mut rng);
        nonces.insert(*kp.identifier(), n);
        commitments.insert(*kp.identifier(), c);
    }
    let package = frost::SigningPackage::new(commitments, text.as_bytes());
    let signature_shares = which
        .iter()
        .map(|&i| {
            let kp = &shares[i].key_package;
            let share = frost::round2::sign(&package, &nonces[kp.identifier()], kp).unwrap();
            (*kp.identifier(), share)
        })
        .collect();
    frost::aggregate(&package, &signature_shares, &shares[0].public)
        .unwrap()
        .serialize()
        .unwrap()
}

#[test]
fn a_quorum_of_shares_signs_checkpoints_go_and_openssl_verify_with_log_vkey() {
    let dir = test_dir::TestDir::new(&format!("cluster-key-{}", std::process::id()));
    let origin = "example.org/log";
    init_cluster(&dir, origin, 4, [127, 0, 0, 1].into(), 7300).unwrap();
    let vkey_line = std::fs::read_to_string(dir.join(CLUSTER_VKEY_FILE)).unwrap();
    let vkey = VerifierKey::parse(vkey_line.trim_end()).unwrap();
    let shares: Vec<ClusterShare> = (0..4)
        .map(|i| load_share(&dir.join(cluster_share_file(i)), origin).unwrap())
        .collect();
    let oracle = go_oracle();
    for (size, which) in [(1u64, [0, 1, 2]), (2, [1, 2, 3]), (3, [3, 0, 2])] {
        let root = merkle::root_from_leaf_hashes(
            &(0..size)
                .map(|i| merkle::leaf_hash(&i.to_be_bytes()))
                .collect::<Vec<_>>(),
        );
        let text = Checkpoint::new(origin, size, root).format();
        let signature = threshold_sign(&shares, &which, &text);
        let mut note = Note::new(&text).unwrap();
        note.add_signature(NoteSignature {
            name: vkey.name().to_owned(),
            key_id: vkey.key_id(),
            signature: signature.clone(),
        })
        .unwrap();
        let formatted = note.format();
        if let Some(oracle) = &oracle {
            let answer = go_opens(oracle, &formatted, &[vkey_line.trim_end().to_owned()]);
            assert_eq!(
                answer["ok"], true,
                "Go refused the cluster signature: {answer}"
            );
            assert_eq!(
                answer["signers"],
                serde_json::json!([format!("{origin}+{:08x}", vkey.key_id())])
            );
            let tampered = formatted.replacen(&format!("\n{size}\n"), "\n99\n", 1);
            let answer = go_opens(oracle, &tampered, &[vkey_line.trim_end().to_owned()]);
            assert_eq!(answer["ok"], false, "Go accepted a tampered note");
        }
        let public_key = vkey.public_key().to_bytes();
        if let Some(valid) = python_verifies(&public_key, &signature, text.as_bytes()) {
            assert!(valid, "cryptography refused the cluster signature");
            assert_eq!(
                python_verifies(&public_key, &signature, b"another text\n"),
                Some(false)
            );
        }
    }
}
