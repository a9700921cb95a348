//! The `bftlog-witness` binary: init, add-log, list-logs, serve and
//! evidence, as an operator runs them.

use bftlog_spec::note::{KeyType, SignerKey};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_bftlog-witness");

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "bftlog-witness {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn operator_commands() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let vkey = ok(&["init", "--dir", d, "--name", "witness.example/cli"]);
    assert!(vkey.starts_with("witness.example/cli+"), "{vkey}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("witness.vkey")).unwrap(),
        vkey
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("witness.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // A second init never replaces the key.
    assert!(
        !run(&["init", "--dir", d, "--name", "witness.example/cli"])
            .status
            .success()
    );

    let keys: Vec<String> = (1..=4u8)
        .map(|i| {
            SignerKey::new(
                "example.com/log",
                KeyType::Ed25519,
                ed25519_dalek::SigningKey::from_bytes(&[i; 32]),
            )
            .unwrap()
            .verifier()
            .to_string()
        })
        .collect();
    let mut args = vec!["add-log", "--dir", d, "--origin", "example.com/log"];
    for k in &keys {
        args.extend(["--vkey", k.as_str()]);
    }
    assert_eq!(ok(&args), "added example.com/log (3 of 4 keys)\n");
    // Logs are never replaced.
    assert!(!run(&args).status.success());
    // A threshold that two disjoint key sets could both meet is refused.
    let mut weak = vec!["add-log", "--dir", d, "--origin", "example.com/other"];
    let other = SignerKey::new(
        "example.com/other",
        KeyType::Ed25519,
        ed25519_dalek::SigningKey::from_bytes(&[9; 32]),
    )
    .unwrap()
    .verifier()
    .to_string();
    weak.extend(["--vkey", other.as_str(), "--threshold", "2"]);
    assert!(!run(&weak).status.success());

    let listing = ok(&["list-logs", "--dir", d]);
    assert!(
        listing.starts_with("example.com/log threshold 3 of 4 latest none\n"),
        "{listing}"
    );
    assert_eq!(listing.matches("  key example.com/log+").count(), 4);
    assert_eq!(ok(&["evidence", "--dir", d]), "");
    assert!(!run(&["evidence", "--dir", d, "--id", "1"]).status.success());
    // Commands on a directory that was never initialised say so.
    let missing = run(&["list-logs", "--dir", "/nonexistent/witness"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("bftlog-witness init"));
}
