//! `bftlog-verify`: the offline verifier CLI. See the crate docs and
//! `verifier/README.md`; exit codes are [`Status::exit_code`].

use std::io::{BufReader, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use bftlog_spec::encoding::parse_decimal;
use bftlog_spec::merkle::{self, Hash};
use bftlog_spec::note::MAX_NOTE_BYTES;
use bftlog_spec::policy::Policy;
use bftlog_spec::{evidence::MAX_EVIDENCE_BYTES, proof::MAX_PROOF_BYTES};
use bftlog_verify::batch::{self, BatchVerifier, ItemReport};
use bftlog_verify::input::{self, MAX_ENTRY_FILE_BYTES, MAX_PROOF_HASHES, display_name};
use bftlog_verify::{Status, audit, check, load_policy, tiles_audit};
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::{Value, json};

#[derive(Parser)]
#[command(
    name = "bftlog-verify",
    version,
    about = "Offline verifier for bftlog checkpoints, receipts, proofs and split-view evidence",
    after_help = "Exit codes: 0 valid, 1 verification failed, 2 usage or malformed/unreadable input, 3 equivocation detected."
)]
struct Cli {
    /// Print a machine-readable JSON result on stdout.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check a signed checkpoint: replica quorum and witness quorum.
    Checkpoint {
        #[arg(long)]
        policy: PathBuf,
        /// The signed checkpoint note (`-` for stdin).
        note: PathBuf,
    },
    /// Check a receipt (C2SP tlog-proof) for an entry, offline.
    Inclusion {
        #[arg(long)]
        policy: PathBuf,
        /// The receipt (`.tlog-proof`).
        #[arg(long)]
        proof: PathBuf,
        /// The entry's bytes (`-` for stdin).
        #[arg(required_unless_present = "leaf_hash", conflicts_with = "leaf_hash")]
        entry: Option<PathBuf>,
        /// The entry's RFC 6962 leaf hash instead of the entry.
        #[arg(long, value_parser = parse_hash)]
        leaf_hash: Option<Hash>,
    },
    /// Check that NEW_NOTE extends OLD_NOTE with a consistency proof.
    Consistency {
        #[arg(long)]
        policy: PathBuf,
        old_note: PathBuf,
        new_note: PathBuf,
        /// Consistency proof: base64 hashes, one per line.
        #[arg(long)]
        proof: PathBuf,
    },
    /// Decide whether two checkpoints can both be honest; exit 3 and write
    /// evidence if not.
    Compare {
        #[arg(long)]
        policy: PathBuf,
        note_a: PathBuf,
        note_b: PathBuf,
        /// Consistency proof (or full path) between the sizes, one base64
        /// hash per line.
        #[arg(long)]
        proof: Option<PathBuf>,
        /// Where to write split-view evidence.
        #[arg(long)]
        evidence_out: Option<PathBuf>,
    },
    /// Check split-view evidence independently; exit 3 if it proves a split view.
    Evidence {
        #[arg(long)]
        policy: PathBuf,
        evidence: PathBuf,
    },
    /// Recompute the tree over an exported entries file and compare it with
    /// a checkpoint; or, with --tiles, check a C2SP tlog-tiles directory
    /// (its checkpoint, every entry bundle and every hash tile).
    Audit {
        #[arg(long)]
        policy: PathBuf,
        #[arg(long, required_unless_present = "tiles", conflicts_with = "tiles")]
        checkpoint: Option<PathBuf>,
        /// Entries: one canonical base64 entry per line (`-` for stdin).
        #[arg(required_unless_present = "tiles", conflicts_with = "tiles")]
        entries: Option<PathBuf>,
        /// A tiles directory: `checkpoint` and `tile/` (a mirror, or a copy
        /// of a publishing bucket).
        #[arg(long, value_name = "DIR")]
        tiles: Option<PathBuf>,
        /// Largest entry accepted, in bytes.
        #[arg(long, default_value_t = audit::DEFAULT_MAX_ENTRY_BYTES)]
        max_entry_bytes: usize,
        /// Progress on stderr: auto shows it when stderr is a terminal.
        #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
        progress: ProgressMode,
    },
    /// Verify many receipts: a directory of NAME + NAME.tlog-proof pairs, or
    /// `-` for a JSON-lines stream on stdin.
    Batch {
        #[arg(long)]
        policy: PathBuf,
        input: PathBuf,
    },
    /// Verify a signed note against explicit keys (no policy).
    Note {
        /// A verifier key (vkey); repeat for several.
        #[arg(long = "key", required = true)]
        keys: Vec<String>,
        /// Also require the body to be a valid checkpoint.
        #[arg(long)]
        checkpoint: bool,
        note: PathBuf,
    },
    /// Low-level Merkle proof checks; proof hashes as base64 lines on stdin.
    #[command(subcommand)]
    Merkle(MerkleCommand),
}

#[derive(Subcommand)]
enum MerkleCommand {
    /// Check an inclusion proof.
    Inclusion {
        #[arg(long, value_parser = parse_u64)]
        size: u64,
        #[arg(long, value_parser = parse_hash)]
        root: Hash,
        #[arg(long, value_parser = parse_u64)]
        index: u64,
        #[arg(long, value_parser = parse_hash)]
        leaf_hash: Hash,
    },
    /// Check a consistency proof.
    Consistency {
        #[arg(long, value_parser = parse_u64)]
        old_size: u64,
        #[arg(long, value_parser = parse_hash)]
        old_root: Hash,
        #[arg(long, value_parser = parse_u64)]
        size: u64,
        #[arg(long, value_parser = parse_hash)]
        root: Hash,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum ProgressMode {
    Auto,
    Always,
    Never,
}

fn parse_u64(s: &str) -> Result<u64, String> {
    parse_decimal(s).map_err(|e| format!("not a canonical decimal: {e}"))
}

fn parse_hash(s: &str) -> Result<Hash, String> {
    Hash::from_base64(s).map_err(|_| "not canonical base64 of 32 bytes".to_owned())
}

/// What a command found: the verdict, text for people, and a JSON result.
struct Outcome {
    status: Status,
    human: String,
    error: Option<String>,
    result: Value,
}

impl Outcome {
    fn valid(human: String, result: impl serde::Serialize) -> Self {
        Outcome {
            status: Status::Valid,
            human,
            error: None,
            result: serde_json::to_value(result).expect("reports serialise"),
        }
    }

    fn failed(status: Status, error: String) -> Self {
        Outcome {
            status,
            human: String::new(),
            error: Some(error),
            result: Value::Null,
        }
    }

    fn malformed(error: impl std::fmt::Display) -> Self {
        Outcome::failed(Status::Malformed, error.to_string())
    }
}

type Run = Result<Outcome, Outcome>;

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion)
                || !args.iter().any(|a| a == "--json")
            {
                e.exit();
            }
            let outcome = Outcome::malformed(e.to_string().trim_end());
            print_json("usage", &outcome);
            return ExitCode::from(Status::Malformed.exit_code());
        }
    };
    let (name, result) = run(&cli);
    let outcome = result.unwrap_or_else(|o| o);
    if cli.json {
        print_json(name, &outcome);
    } else {
        print!("{}", outcome.human);
        if let Some(error) = &outcome.error {
            eprintln!("bftlog-verify {name}: {error}");
        }
    }
    ExitCode::from(outcome.status.exit_code())
}

fn print_json(command: &str, outcome: &Outcome) {
    let doc = json!({
        "command": command,
        "status": outcome.status,
        "exit_code": outcome.status.exit_code(),
        "error": outcome.error,
        "result": outcome.result,
    });
    println!("{doc}");
}

fn run(cli: &Cli) -> (&'static str, Run) {
    match &cli.command {
        Command::Checkpoint { policy, note } => ("checkpoint", cmd_checkpoint(policy, note)),
        Command::Inclusion {
            policy,
            proof,
            entry,
            leaf_hash,
        } => (
            "inclusion",
            cmd_inclusion(policy, proof, entry.as_deref(), leaf_hash.as_ref()),
        ),
        Command::Consistency {
            policy,
            old_note,
            new_note,
            proof,
        } => (
            "consistency",
            cmd_consistency(policy, old_note, new_note, proof),
        ),
        Command::Compare {
            policy,
            note_a,
            note_b,
            proof,
            evidence_out,
        } => (
            "compare",
            cmd_compare(
                policy,
                note_a,
                note_b,
                proof.as_deref(),
                evidence_out.as_deref(),
            ),
        ),
        Command::Evidence { policy, evidence } => ("evidence", cmd_evidence(policy, evidence)),
        Command::Audit {
            policy,
            checkpoint,
            entries,
            tiles,
            max_entry_bytes,
            progress,
        } => (
            "audit",
            match (tiles, checkpoint, entries) {
                (Some(dir), _, _) => cmd_audit_tiles(policy, dir, *progress),
                (None, Some(checkpoint), Some(entries)) => {
                    cmd_audit(policy, checkpoint, entries, *max_entry_bytes, *progress)
                }
                _ => Err(Outcome::malformed(
                    "audit needs --checkpoint FILE and ENTRIES, or --tiles DIR".to_owned(),
                )),
            },
        ),
        Command::Batch { policy, input } => ("batch", cmd_batch(policy, input, cli.json)),
        Command::Note {
            keys,
            checkpoint,
            note,
        } => ("note", cmd_note(keys, *checkpoint, note)),
        Command::Merkle(MerkleCommand::Inclusion {
            size,
            root,
            index,
            leaf_hash,
        }) => (
            "merkle inclusion",
            cmd_merkle_inclusion(*size, root, *index, leaf_hash),
        ),
        Command::Merkle(MerkleCommand::Consistency {
            old_size,
            old_root,
            size,
            root,
        }) => (
            "merkle consistency",
            cmd_merkle_consistency(*old_size, old_root, *size, root),
        ),
    }
}

fn policy(path: &Path) -> Result<Policy, Outcome> {
    load_policy(path).map_err(|e| Outcome::malformed(format!("policy {e}")))
}

fn read(path: &Path, max: usize) -> Result<Vec<u8>, Outcome> {
    input::read_bounded(path, max).map_err(Outcome::malformed)
}

fn read_hashes(path: &Path) -> Result<Vec<Hash>, Outcome> {
    let bytes = read(path, input::MAX_HASH_LINES_BYTES)?;
    input::parse_hash_lines(&bytes, MAX_PROOF_HASHES)
        .map_err(|e| Outcome::malformed(format!("{}: {e}", display_name(path))))
}

fn cmd_checkpoint(policy_path: &Path, note: &Path) -> Run {
    let policy = policy(policy_path)?;
    let bytes = read(note, MAX_NOTE_BYTES)?;
    match check::check_checkpoint(&policy, &bytes) {
        Ok((_, report)) => Ok(Outcome::valid(
            format!("checkpoint: valid\n{}", report.human()),
            report,
        )),
        Err(e) => {
            let mut outcome = Outcome::failed(e.status(), format!("{}: {e}", display_name(note)));
            if let Some(report) = e.report() {
                outcome.human = format!("checkpoint: NOT valid\n{}", report.human());
                outcome.result = serde_json::to_value(report).expect("reports serialise");
            }
            Err(outcome)
        }
    }
}

fn cmd_inclusion(
    policy_path: &Path,
    proof: &Path,
    entry: Option<&Path>,
    leaf_hash: Option<&Hash>,
) -> Run {
    let policy = policy(policy_path)?;
    let proof_bytes = read(proof, MAX_PROOF_BYTES)?;
    let leaf = match (entry, leaf_hash) {
        (_, Some(hash)) => *hash,
        (Some(entry), None) => merkle::leaf_hash(&read(entry, MAX_ENTRY_FILE_BYTES)?),
        (None, None) => unreachable!("clap requires one of them"),
    };
    let report = check::check_receipt(&policy, &proof_bytes, &leaf)
        .map_err(|e| Outcome::failed(e.status(), format!("{}: {e}", display_name(proof))))?;
    Ok(Outcome::valid(
        format!(
            "receipt: valid\nindex: {}\nleaf hash: {}\n{}",
            report.index,
            report.leaf_hash,
            report.checkpoint.human()
        ),
        report,
    ))
}

fn cmd_consistency(policy_path: &Path, old: &Path, new: &Path, proof: &Path) -> Run {
    let policy = policy(policy_path)?;
    let old_bytes = read(old, MAX_NOTE_BYTES)?;
    let new_bytes = read(new, MAX_NOTE_BYTES)?;
    let hashes = read_hashes(proof)?;
    let report =
        check::check_consistency(&policy, &old_bytes, &new_bytes, &hashes).map_err(|e| {
            let name = match &e {
                check::ConsistencyCheckError::Old(_) => display_name(old),
                check::ConsistencyCheckError::New(_) => display_name(new),
                _ => display_name(proof),
            };
            let mut message = format!("{name}: {e}");
            if matches!(e, check::ConsistencyCheckError::Proof(_)) {
                message.push_str(
                    " (this alone does not prove a split view: try `bftlog-verify compare`)",
                );
            }
            Outcome::failed(e.status(), message)
        })?;
    Ok(Outcome::valid(
        format!(
            "consistency: valid\n{} size {} -> {} extends {} ({} proof hashes)\n",
            report.new.origin,
            report.new.size,
            report.new.root,
            report.old.size,
            report.proof_hashes
        ),
        report,
    ))
}

fn cmd_compare(
    policy_path: &Path,
    a: &Path,
    b: &Path,
    proof: Option<&Path>,
    evidence_out: Option<&Path>,
) -> Run {
    let policy = policy(policy_path)?;
    let a_bytes = read(a, MAX_NOTE_BYTES)?;
    let b_bytes = read(b, MAX_NOTE_BYTES)?;
    let hashes = proof.map(read_hashes).transpose()?;
    let report = check::compare_checkpoints(&policy, &a_bytes, &b_bytes, hashes.as_deref())
        .map_err(|e| {
            let name = match &e {
                check::CompareError::Note { which: 'a', .. } => display_name(a),
                check::CompareError::Note { .. } => display_name(b),
                _ => format!("{} vs {}", display_name(a), display_name(b)),
            };
            Outcome::failed(e.status(), format!("{name}: {e}"))
        })?;
    let status = report.status();
    let mut outcome = Outcome::valid(String::new(), &report);
    outcome.status = status;
    match &report {
        check::CompareReport::Consistent {
            checkpoint_a,
            checkpoint_b,
        } => {
            outcome.human = format!(
                "consistent: both can be honest (sizes {} and {})\n",
                checkpoint_a.size, checkpoint_b.size
            );
        }
        check::CompareReport::Undetermined { reason } => {
            outcome.error = Some(format!("undetermined: {reason}"));
        }
        check::CompareReport::SplitView {
            split_view,
            evidence,
        } => {
            outcome.human = format!("EQUIVOCATION: {}", split_view.human());
            match evidence_out {
                Some(path) => {
                    std::fs::write(path, evidence).map_err(|e| {
                        Outcome::malformed(format!(
                            "split view found but writing {} failed: {e}",
                            path.display()
                        ))
                    })?;
                    outcome
                        .human
                        .push_str(&format!("evidence written to {}\n", path.display()));
                }
                None => outcome
                    .human
                    .push_str("pass --evidence-out FILE to save transferable evidence\n"),
            }
        }
    }
    Ok(outcome)
}

fn cmd_evidence(policy_path: &Path, evidence: &Path) -> Run {
    let policy = policy(policy_path)?;
    let bytes = read(evidence, MAX_EVIDENCE_BYTES)?;
    let report = check::check_evidence(&policy, &bytes)
        .map_err(|e| Outcome::failed(e.status(), format!("{}: {e}", display_name(evidence))))?;
    let mut outcome = Outcome::valid(
        format!("evidence: valid, EQUIVOCATION proven\n{}", report.human()),
        report,
    );
    outcome.status = Status::Equivocation;
    Ok(outcome)
}

impl ProgressMode {
    fn shows(self) -> bool {
        match self {
            ProgressMode::Always => true,
            ProgressMode::Never => false,
            ProgressMode::Auto => std::io::stderr().is_terminal(),
        }
    }
}

fn cmd_audit(
    policy_path: &Path,
    checkpoint: &Path,
    entries: &Path,
    max_entry_bytes: usize,
    progress: ProgressMode,
) -> Run {
    let policy = policy(policy_path)?;
    let note = read(checkpoint, MAX_NOTE_BYTES)?;
    let (verified, cp_report) = check::check_checkpoint(&policy, &note)
        .map_err(|e| Outcome::failed(e.status(), format!("{}: {e}", display_name(checkpoint))))?;
    let (size, root) = (verified.checkpoint().size, verified.checkpoint().root);
    let reader: Box<dyn std::io::Read> = if entries.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::fs::File::open(entries).map_err(|e| {
            Outcome::malformed(format!("{}: cannot read: {e}", display_name(entries)))
        })?)
    };
    let show = progress.shows();
    let start = Instant::now();
    let mut shown = false;
    let result = audit::audit_entries(
        BufReader::with_capacity(1 << 20, reader),
        size,
        &root,
        max_entry_bytes,
        |p| {
            if show {
                shown = true;
                let secs = start.elapsed().as_secs_f64().max(1e-9);
                let mut err = std::io::stderr().lock();
                let _ = write!(
                    err,
                    "\raudit: {}/{} entries ({:.1}%), {:.0} entries/s, {:.1} MiB read",
                    p.entries,
                    size,
                    p.entries as f64 * 100.0 / size.max(1) as f64,
                    p.entries as f64 / secs,
                    p.bytes as f64 / (1 << 20) as f64
                );
            }
        },
    );
    if shown {
        eprintln!();
    }
    let report = result
        .map_err(|e| Outcome::failed(e.status(), format!("{}: {e}", display_name(entries))))?;
    let mut human = format!(
        "audit: valid\nthe first {} entries of {} hash to the checkpoint's root\n{}",
        report.entries_checked,
        display_name(entries),
        cp_report.human()
    );
    if report.more_entries {
        human.push_str("note: the export continues past the checkpoint's size (not checked)\n");
    }
    Ok(Outcome::valid(
        human,
        json!({ "audit": report, "checkpoint": cp_report }),
    ))
}

fn cmd_audit_tiles(policy_path: &Path, dir: &Path, progress: ProgressMode) -> Run {
    let policy = policy(policy_path)?;
    let show = progress.shows();
    let start = Instant::now();
    let mut shown = false;
    let result = tiles_audit::audit_tiles_dir(&policy, dir, |entries, size| {
        if show {
            shown = true;
            let secs = start.elapsed().as_secs_f64().max(1e-9);
            let _ = write!(
                std::io::stderr().lock(),
                "\raudit: {entries}/{size} entries ({:.1}%), {:.0} entries/s",
                entries as f64 * 100.0 / size.max(1) as f64,
                entries as f64 / secs,
            );
        }
    });
    if shown {
        eprintln!();
    }
    let report =
        result.map_err(|e| Outcome::failed(e.status(), format!("{}: {e}", display_name(dir))))?;
    let human = format!(
        "audit: valid\n{}: {} entries in {} bundles and {} hash tiles match the checkpoint\n{}",
        display_name(dir),
        report.entries_checked,
        report.bundles_checked,
        report.hash_tiles_checked,
        report.checkpoint.human()
    );
    Ok(Outcome::valid(human, json!({ "audit": report })))
}

fn cmd_batch(policy_path: &Path, input: &Path, json_lines: bool) -> Run {
    let policy = policy(policy_path)?;
    let mut verifier = BatchVerifier::new(&policy);
    let stdout = std::io::stdout();
    let emit = |item: &ItemReport| {
        let mut out = stdout.lock();
        let _ = if json_lines {
            writeln!(
                out,
                "{}",
                serde_json::to_string(item).expect("reports serialise")
            )
        } else {
            writeln!(out, "{}", item.human())
        };
    };
    let summary = if input.as_os_str() == "-" {
        batch::check_stream(
            &mut verifier,
            BufReader::with_capacity(1 << 20, std::io::stdin().lock()),
            emit,
        )
    } else {
        batch::check_directory(&mut verifier, input, emit)
    }
    .map_err(Outcome::malformed)?;
    let mut outcome = Outcome::valid(
        format!(
            "batch: {} valid, {} invalid, {} malformed ({} distinct checkpoints verified)\n",
            summary.valid, summary.invalid, summary.malformed, summary.checkpoints_verified
        ),
        &summary,
    );
    outcome.status = summary.status();
    if outcome.status != Status::Valid {
        outcome.error = Some(format!(
            "{} of {} receipts did not verify",
            summary.invalid + summary.malformed,
            summary.valid + summary.invalid + summary.malformed
        ));
    }
    Ok(outcome)
}

fn cmd_note(keys: &[String], require_checkpoint: bool, note: &Path) -> Run {
    let bytes = read(note, MAX_NOTE_BYTES)?;
    let report = check::check_note(keys, &bytes, require_checkpoint)
        .map_err(|e| Outcome::failed(e.status(), format!("{}: {e}", display_name(note))))?;
    let mut human = format!(
        "note: valid ({} verified signatures, {} from unknown keys ignored)\n",
        report.signatures.len(),
        report.unknown_signatures
    );
    for s in &report.signatures {
        match &s.time {
            Some(time) => human.push_str(&format!("  {} {} at {time}\n", s.key_type, s.key)),
            None => human.push_str(&format!("  {} {}\n", s.key_type, s.key)),
        }
    }
    if let Some(cp) = &report.checkpoint {
        human.push_str(&format!(
            "checkpoint: origin {} size {} root {}\n",
            cp.origin, cp.size, cp.root
        ));
    }
    Ok(Outcome::valid(human, report))
}

fn stdin_proof() -> Result<Vec<Hash>, Outcome> {
    read_hashes(Path::new("-"))
}

fn cmd_merkle_inclusion(size: u64, root: &Hash, index: u64, leaf: &Hash) -> Run {
    let proof = stdin_proof()?;
    merkle::verify_inclusion(index, size, leaf, &proof, root).map_err(|e| {
        Outcome::failed(Status::Invalid, format!("inclusion proof on <stdin>: {e}"))
    })?;
    Ok(Outcome::valid(
        format!("inclusion: valid (leaf {index} of tree size {size})\n"),
        json!({ "index": index, "size": size, "root": root.to_base64(), "proof_hashes": proof.len() }),
    ))
}

fn cmd_merkle_consistency(old_size: u64, old_root: &Hash, size: u64, root: &Hash) -> Run {
    let proof = stdin_proof()?;
    merkle::verify_consistency(old_size, size, old_root, root, &proof).map_err(|e| {
        Outcome::failed(
            Status::Invalid,
            format!("consistency proof on <stdin>: {e}"),
        )
    })?;
    Ok(Outcome::valid(
        format!("consistency: valid (size {old_size} -> {size})\n"),
        json!({ "old_size": old_size, "size": size, "proof_hashes": proof.len() }),
    ))
}
