//! The cluster key `bftlog init` deals: any quorum of the replicas' share
//! files signs a checkpoint that Go's golang.org/x/mod/sumdb/note opens
//! with `log.vkey` alone, and whose signature Python's `cryptography`
//! (OpenSSL's Ed25519) verifies as a plain RFC 8032 signature. Needs `go`
//! with Debian's golang-golang-x-mod-dev and `cryptography` (which moto
//! brings); `.ci/run` installs them, and under CI=true their absence fails.
//! A running cluster signs every receipt's checkpoint with the cluster key
//! too, across a replica's restart.

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
#[path = "support/ports.rs"]
mod ports;
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

/// A running cluster: every receipt's checkpoint carries the cluster
/// signature, which the cluster-key policy (`policy.cluster-key`, one
/// `log` line), Go's sumdb/note with `log.vkey` alone and Python's
/// `cryptography` accept, and so does the checkpoint each replica serves;
/// so after a replica restarts from its stored nonces and `last_share`,
/// and with one replica down (any 3 of 4 sign): the first heights after it
/// stops still name it in their signing sets, and recovery sessions sign
/// those checkpoints before their receipts stop waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_cluster_signs_every_receipt_checkpoint_with_the_cluster_key() {
    use bftlog_server::client::{Client, ClientOptions};
    use bftlog_server::config::{CLUSTER_KEY_POLICY_FILE, ReplicaConfig};
    use bftlog_server::node::Node;
    use bftlog_spec::policy::Policy;
    use bftlog_spec::proof::TlogProof;

    let dir = test_dir::TestDir::new(&format!("cluster-key-run-{}", std::process::id()));
    let origin = "run.example/log";
    let cluster =
        init_cluster(&dir, origin, 4, [127, 0, 0, 1].into(), ports::free_ports(4)).unwrap();
    let vkey_line = std::fs::read_to_string(dir.join(CLUSTER_VKEY_FILE)).unwrap();
    let vkey = VerifierKey::parse(vkey_line.trim_end()).unwrap();
    let key_policy =
        Policy::parse(&std::fs::read(dir.join(CLUSTER_KEY_POLICY_FILE)).unwrap()).unwrap();
    let start = |i: usize| {
        let mut cfg = ReplicaConfig::load(&dir.join(format!("replica-{i}.toml"))).unwrap();
        cfg.consensus.round_timeout_ms = 300;
        // Recovery stages of 100, 200, 400 ms: well within the 2 s a
        // receipt waits, even when a stage's coordinator is the stopped
        // replica.
        cfg.consensus.cluster_recovery_ms = 100;
        Node::start(cfg)
    };
    let mut nodes = Vec::new();
    for i in 0..4 {
        nodes.push(Some(start(i).await.unwrap()));
    }
    let client = Client::new(cluster.clone(), ClientOptions::default()).unwrap();
    let oracle = go_oracle();
    let mut checked = std::collections::BTreeSet::new();
    let mut check_batch = async |client: &Client, tag: &str| {
        for batch in 0..3 {
            let entries: Vec<Vec<u8>> = (0..5)
                .map(|i| format!("{tag} {batch} {i}").into_bytes())
                .collect();
            let receipts = client.append(&entries).await.unwrap();
            for (receipt, entry) in receipts.iter().zip(&entries) {
                let proof = TlogProof::parse(receipt.tlog_proof().as_bytes()).unwrap();
                // The replica policy and the cluster key's both accept it.
                proof.verify_entry(&cluster.policy(), entry).unwrap();
                let verified = proof
                    .verify_entry(&key_policy, entry)
                    .unwrap_or_else(|e| panic!("{tag}: no valid cluster signature: {e}"));
                let note = verified.checkpoint().note();
                let size = verified.checkpoint().checkpoint().size;
                if !checked.insert(size) {
                    continue;
                }
                let line = note
                    .signatures()
                    .iter()
                    .find(|s| s.key_id == vkey.key_id())
                    .expect("checked by the policy");
                if let Some(oracle) = &oracle {
                    let answer =
                        go_opens(oracle, &note.format(), &[vkey_line.trim_end().to_owned()]);
                    assert_eq!(answer["ok"], true, "Go refused the checkpoint: {answer}");
                }
                let public_key = vkey.public_key().to_bytes();
                if let Some(valid) =
                    python_verifies(&public_key, &line.signature, note.text().as_bytes())
                {
                    assert!(valid, "cryptography refused the cluster signature");
                }
            }
            // The checkpoint served as the latest carries it too.
            let served = client.checkpoint().await.unwrap();
            key_policy
                .verify_checkpoint(served.note())
                .unwrap_or_else(|e| panic!("{tag}: served checkpoint: {e}"));
        }
    };
    check_batch(&client, "first").await;
    // Replica 2 restarts: it must not sign with a nonce it used, and
    // signs on with those it stored.
    nodes[2].take().unwrap().shutdown().await.unwrap();
    nodes[2] = Some(start(2).await.unwrap());
    check_batch(&client, "after restart").await;
    // Any 3 of 4: replica 0 stops.
    nodes[0].take().unwrap().shutdown().await.unwrap();
    check_batch(&client, "three of four").await;
    assert!(checked.len() >= 3, "distinct checkpoints: {checked:?}");
    for node in nodes.into_iter().flatten() {
        node.shutdown().await.unwrap();
    }
}

/// A C2SP witness that knows the log by its cluster key alone (one key,
/// threshold 1, as for any single-key log) cosigns its checkpoints, and
/// receipts that wait for it verify under `policy.cluster-key`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_witness_configured_with_only_the_cluster_key_cosigns() {
    use bftlog_server::client::{Client, ClientOptions};
    use bftlog_server::config::{CLUSTER_KEY_POLICY_FILE, ReplicaConfig, write_cluster_files};
    use bftlog_server::node::Node;
    use bftlog_spec::policy::Policy;
    use bftlog_witness::log_config::LogConfig;
    use bftlog_witness::server::{Server, ServerConfig};

    let dir = test_dir::TestDir::new(&format!("cluster-key-witness-{}", std::process::id()));
    let origin = "witnessed.example/log";
    let mut cluster =
        init_cluster(&dir, origin, 4, [127, 0, 0, 1].into(), ports::free_ports(4)).unwrap();
    let cluster_key = cluster
        .cluster_key
        .clone()
        .expect("init deals a cluster key");
    let wdir = dir.join("witness");
    let witness_key = bftlog_witness::dir::init(&wdir, "witnessed.example/w").unwrap();
    let log = LogConfig::new(origin, vec![cluster_key], None).unwrap();
    bftlog_witness::dir::open_store(&wdir)
        .unwrap()
        .add_log(&log)
        .unwrap();
    let witness = std::sync::Arc::new(bftlog_witness::dir::open(&wdir).unwrap());
    let server = Server::start(
        witness,
        "127.0.0.1:0".parse().unwrap(),
        ServerConfig::default(),
    )
    .await
    .unwrap();
    cluster.witnesses.push(bftlog_server::config::Witness {
        name: "w".into(),
        key: witness_key,
        url: format!("http://{}", server.local_addr()),
    });
    cluster.witness_quorum = 1;
    write_cluster_files(&dir, &cluster).unwrap();
    let key_policy =
        Policy::parse(&std::fs::read(dir.join(CLUSTER_KEY_POLICY_FILE)).unwrap()).unwrap();
    assert_eq!(key_policy.witnesses().len(), 1);
    let mut nodes = Vec::new();
    for i in 0..4 {
        let mut cfg = ReplicaConfig::load(&dir.join(format!("replica-{i}.toml"))).unwrap();
        cfg.consensus.round_timeout_ms = 300;
        nodes.push(Node::start(cfg).await.unwrap());
    }
    let client = Client::new(cluster.clone(), ClientOptions::default()).unwrap();
    for batch in 0..3 {
        let entries: Vec<Vec<u8>> = (0..4)
            .map(|i| format!("witnessed {batch} {i}").into_bytes())
            .collect();
        let receipts = client.append(&entries).await.unwrap();
        for (r, e) in receipts.iter().zip(&entries) {
            let verified = bftlog_verify::check::check_receipt(
                &key_policy,
                r.tlog_proof().as_bytes(),
                &merkle::leaf_hash(e),
            )
            .unwrap();
            assert_eq!(verified.checkpoint.cosignatures.len(), 1);
            assert!(verified.checkpoint.witness_quorum_met);
        }
    }
    for node in nodes {
        node.shutdown().await.unwrap();
    }
    server.shutdown().await;
}
