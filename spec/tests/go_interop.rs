//! Our signed notes verify with Go's golang.org/x/mod/sumdb/note, and Go's
//! signatures are byte-identical to ours. Needs `go` and Debian's
//! golang-golang-x-mod-dev (.ci/run installs both); without them the test
//! fails under CI=true and is skipped with a message elsewhere.

use bftlog_spec::checkpoint::Checkpoint;
use bftlog_spec::merkle::{self, Hash};
use bftlog_spec::note::{KeyType, Note, SignerKey};
use rand::{RngExt, SeedableRng};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};

const GOPATH: &str = "/usr/share/gocode";

fn build_oracle() -> Option<PathBuf> {
    let have_go = Command::new("go")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    let have_mod = std::path::Path::new(GOPATH)
        .join("src/golang.org/x/mod/sumdb/note")
        .is_dir();
    if !have_go || !have_mod {
        let why = format!("go available: {have_go}; golang.org/x/mod in {GOPATH}: {have_mod}");
        if std::env::var_os("CI").is_some() {
            panic!("Go interop oracle unavailable under CI: {why}");
        }
        eprintln!(
            "SKIPPED: Go interop oracle unavailable ({why}); install golang-go golang-golang-x-mod-dev"
        );
        return None;
    }
    let out_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("go-interop");
    std::fs::create_dir_all(&out_dir).unwrap();
    let binary = out_dir.join("interop");
    let source = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/go/interop.go");
    let status = Command::new("go")
        .args(["build", "-o"])
        .arg(&binary)
        .arg(&source)
        .env("GO111MODULE", "off")
        .env("GOPATH", GOPATH)
        .env("GOCACHE", out_dir.join("cache"))
        .env("GOFLAGS", "")
        .status()
        .unwrap();
    assert!(status.success(), "go build failed");
    Some(binary)
}

struct Oracle {
    child: std::process::Child,
    out: BufReader<std::process::ChildStdout>,
}

impl Oracle {
    fn ask(&mut self, request: Value) -> Value {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{request}").unwrap();
        stdin.flush().unwrap();
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap()
    }
}

#[test]
fn go_verifies_our_notes_and_signs_identically() {
    let Some(binary) = build_oracle() else { return };
    let mut child = Command::new(binary)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    let mut oracle = Oracle { child, out };
    let mut rng = rand::rngs::StdRng::seed_from_u64(6962);
    for round in 0..50u64 {
        let origin = format!("bftlog.example/log{}", round % 3);
        let mut replicas: Vec<SignerKey> = Vec::new();
        for _ in 0..4 {
            let mut seed = [0u8; 32];
            rng.fill(&mut seed);
            replicas.push(
                SignerKey::new(
                    &origin,
                    KeyType::Ed25519,
                    ed25519_dalek::SigningKey::from_bytes(&seed),
                )
                .unwrap(),
            );
        }
        let mut witness_seed = [0u8; 32];
        rng.fill(&mut witness_seed);
        let witness = SignerKey::new(
            "witness.example/w",
            KeyType::CosignatureV1,
            ed25519_dalek::SigningKey::from_bytes(&witness_seed),
        )
        .unwrap();
        let size = rng.random_range(0..1_000_000u64);
        let mut root = [0u8; 32];
        rng.fill(&mut root);
        let mut cp = Checkpoint::new(
            &origin,
            size,
            if size == 0 {
                merkle::empty_root()
            } else {
                Hash(root)
            },
        );
        if round % 5 == 0 {
            cp.extensions.push(format!("ext {round}"));
        }
        let mut note = cp.sign(&replicas[0]).unwrap();
        for r in &replicas[1..] {
            note.sign(r).unwrap();
        }
        note.add_signature(
            witness
                .cosign_text(note.text(), 1_700_000_000 + round)
                .unwrap(),
        )
        .unwrap();
        let text = note.format();
        let vkeys: Vec<String> = replicas.iter().map(|r| r.verifier().to_string()).collect();

        // Go accepts the note and sees all four replica signatures; it
        // ignores the cosignature (type 0x04 is unknown to it).
        let answer = oracle.ask(json!({"op": "verify", "note": text, "vkeys": vkeys}));
        assert_eq!(
            answer["ok"], true,
            "round {round}: Go rejected our note: {answer}"
        );
        assert_eq!(answer["signers"].as_array().unwrap().len(), 4, "{answer}");

        // A tampered note fails in Go too.
        let tampered = text.replacen(&format!("\n{size}\n"), &format!("\n{}\n", size + 1), 1);
        let answer = oracle.ask(json!({"op": "verify", "note": tampered, "vkeys": vkeys}));
        assert_eq!(
            answer["ok"], false,
            "round {round}: Go accepted a tampered note"
        );

        // Go's signature on the same text with the same key is ours, byte
        // for byte.
        let answer = oracle
            .ask(json!({"op": "sign", "text": cp.format(), "skey": replicas[0].to_skey_string()}));
        assert_eq!(answer["ok"], true, "{answer}");
        let go_note = Note::parse(answer["note"].as_str().unwrap().as_bytes()).unwrap();
        assert_eq!(
            go_note.signatures(),
            &note.signatures()[..1],
            "round {round}"
        );
    }
    drop(oracle.child.stdin.take());
    oracle.child.wait().unwrap();
}
