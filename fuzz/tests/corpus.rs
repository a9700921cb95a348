//! Replays every checked-in input in `fuzz/corpus/<target>/` through its
//! target's properties (`bftlog_fuzz::targets::<target>`), one test per
//! target, on stable Rust without libFuzzer or sanitizers. The seeds and
//! every crash input kept after a fix are regression tests this way; CI
//! runs them (`.ci/run`), fuzzing itself is `fuzz/run.sh`.
//!
//! A test fails if its corpus directory is missing or empty, so it cannot
//! pass by replaying nothing, and it names every input that failed a
//! property with the panic message. Each test reports on stderr how many
//! inputs it ran and how long they took.

use std::io::Write;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::Instant;

macro_rules! targets {
    ($($name:ident),* $(,)?) => {
        /// Every target this file replays.
        const TARGETS: &[&str] = &[$(stringify!($name)),*];
        $(
            #[test]
            fn $name() {
                replay(stringify!($name), bftlog_fuzz::targets::$name);
            }
        )*
    };
}

targets!(
    wire_decode,
    note_parse_verify,
    checkpoint_parse,
    tlog_proof_verify,
    policy_parse,
    tiles_parse,
    evidence_check,
    merkle_proofs,
    consensus_core,
    consensus_sim,
    witness_add_checkpoint,
);

fn fuzz_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The regular files in `dir`, sorted by name.
fn files(dir: &Path) -> Vec<PathBuf> {
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn replay(target: &str, run: fn(&[u8])) {
    let dir = fuzz_dir().join("corpus").join(target);
    assert!(
        dir.is_dir(),
        "{target}: no corpus directory {}",
        dir.display()
    );
    let inputs = files(&dir);
    assert!(!inputs.is_empty(), "{target}: {} is empty", dir.display());

    let started = Instant::now();
    let mut bytes = 0;
    let mut failures = Vec::new();
    for path in &inputs {
        let data =
            std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        bytes += data.len();
        if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(|| run(&data))) {
            let message = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or("(non-string panic payload)");
            let name = path.file_name().expect("file name").to_string_lossy();
            failures.push(format!("  {name}: {message}"));
        }
    }
    // Straight to stderr, past the test harness's output capture, so the
    // counts and times show in CI logs.
    let _ = writeln!(
        std::io::stderr(),
        "corpus replay: {target}: {} inputs ({bytes} bytes) in {:.2} s",
        inputs.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{target}: {} of {} inputs in {} failed a property:\n{}",
        failures.len(),
        inputs.len(),
        dir.display(),
        failures.join("\n")
    );
}

/// Every target in `fuzz_targets/` has a corpus and a test here, and every
/// corpus directory belongs to a target: a new target cannot go unreplayed.
#[test]
fn every_target_is_replayed() {
    let names = |dir: &str, files: bool| {
        let mut names: Vec<String> = std::fs::read_dir(fuzz_dir().join(dir))
            .unwrap_or_else(|e| panic!("cannot read fuzz/{dir}: {e}"))
            .map(|e| e.expect("directory entry").path())
            .filter(|p| if files { p.is_file() } else { p.is_dir() })
            .map(|p| {
                let name = p.file_name().expect("name").to_string_lossy();
                name.strip_suffix(".rs").unwrap_or(&name).to_string()
            })
            .collect();
        names.sort();
        names
    };
    let mut tested: Vec<String> = TARGETS.iter().map(|t| t.to_string()).collect();
    tested.sort();
    assert_eq!(
        names("fuzz_targets", true),
        tested,
        "fuzz_targets/ vs tests/corpus.rs"
    );
    assert_eq!(names("corpus", false), tested, "corpus/ vs tests/corpus.rs");
    // This replay builds without the `libfuzzer` feature, so not the
    // binaries: check that each one runs the function replayed here.
    for target in TARGETS {
        let path = fuzz_dir().join("fuzz_targets").join(format!("{target}.rs"));
        let source = std::fs::read_to_string(&path).expect("read fuzz target");
        let call = format!("fuzz_target!(|data: &[u8]| bftlog_fuzz::targets::{target}(data));");
        assert!(
            source.contains(&call),
            "{} does not contain `{call}`",
            path.display()
        );
    }
}
