//! `bftlog monitor` and `bftlog mirror`: following a tiles log from the
//! command line (the engine is `bftlog_server::follow`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use bftlog_server::follow::mirror::MirrorDir;
use bftlog_server::follow::monitor::{load_state, save_evidence, save_state};
use bftlog_server::follow::{Discard, FollowError, Follower, Sink, StepReport, TilesSource};
use bftlog_verify::{Status, load_policy};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

#[derive(clap::Args)]
pub struct MonitorArgs {
    /// The log's tiles base URL (what `checkpoint` and `tile/` are under).
    #[arg(long, value_name = "URL")]
    tiles: String,
    #[command(flatten)]
    trust: Trust,
    /// Where the verified state is kept between runs; without it every run
    /// verifies the log from its first entry.
    #[arg(long, value_name = "DIR")]
    state: Option<PathBuf>,
    /// Keep following: check for a new checkpoint every --poll-ms.
    #[arg(long)]
    follow: bool,
    #[arg(long, default_value_t = 5_000)]
    poll_ms: u64,
}

#[derive(clap::Args)]
pub struct MirrorArgs {
    /// The log's tiles base URL.
    #[arg(long, value_name = "URL")]
    tiles: String,
    #[command(flatten)]
    trust: Trust,
    /// The mirror: a tiles directory any static web server can serve.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Keep following: check for a new checkpoint every --poll-ms.
    #[arg(long)]
    follow: bool,
    #[arg(long, default_value_t = 5_000)]
    poll_ms: u64,
}

/// What the checkpoints must satisfy: a tlog-policy, or the log's one key.
#[derive(clap::Args)]
#[group(required = true, multiple = false)]
struct Trust {
    /// The trust policy the checkpoints must satisfy.
    #[arg(long)]
    policy: Option<PathBuf>,
    /// The log's verifier key alone (a file holding one C2SP vkey line,
    /// such as a bftlog cluster's `log.vkey`): the policy `log <vkey>`,
    /// no witnesses.
    #[arg(long, value_name = "FILE")]
    log_key: Option<PathBuf>,
}

impl Trust {
    fn policy(&self) -> Result<bftlog_spec::policy::Policy> {
        if let Some(path) = &self.policy {
            return load_policy(path).map_err(|e| anyhow::anyhow!("{e}"));
        }
        let path = self.log_key.as_ref().expect("clap requires one of the two");
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the log key {}", path.display()))?;
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
        let (Some(vkey), None) = (lines.next(), lines.next()) else {
            anyhow::bail!("{}: expected one C2SP vkey line", path.display());
        };
        bftlog_spec::policy::Policy::parse(format!("log {vkey}\nquorum none\n").as_bytes())
            .map_err(|e| anyhow::anyhow!("{}: not a C2SP vkey: {e}", path.display()))
    }
}

pub async fn monitor(args: MonitorArgs, json: bool) -> Result<()> {
    let policy = args.trust.policy()?;
    let source = TilesSource::new(&args.tiles)?;
    let verified = match &args.state {
        Some(dir) => load_state(dir, &policy)?,
        None => None,
    };
    let mut follower = Follower::new(policy, verified);
    let state = args.state.clone();
    let status = follow_loop(
        &mut follower,
        &source,
        &mut Discard,
        args.follow,
        args.poll_ms,
        json,
        |follower| match (&state, follower.verified()) {
            (Some(dir), Some(verified)) => save_state(dir, verified)
                .with_context(|| format!("saving the state in {}", dir.display())),
            _ => Ok(()),
        },
        args.state.as_deref(),
    )
    .await?;
    exit_with(status)
}

pub async fn mirror(args: MirrorArgs, json: bool) -> Result<()> {
    let policy = args.trust.policy()?;
    let source = TilesSource::new(&args.tiles)?;
    let mut dir = MirrorDir::new(&args.out);
    let verified = dir.load(&policy)?;
    let mut follower = Follower::new(policy, verified);
    let status = follow_loop(
        &mut follower,
        &source,
        &mut dir,
        args.follow,
        args.poll_ms,
        json,
        |_| Ok(()),
        None,
    )
    .await?;
    exit_with(status)
}

fn exit_with(status: Status) -> Result<()> {
    if status == Status::Valid {
        return Ok(());
    }
    std::process::exit(i32::from(status.exit_code()));
}

/// Steps until done (or, with `follow`, until the log misbehaves): prints
/// each step, keeps the state after each advance, and saves split-view
/// evidence under `evidence_dir`.
#[allow(clippy::too_many_arguments)]
async fn follow_loop(
    follower: &mut Follower,
    source: &TilesSource,
    sink: &mut dyn Sink,
    follow: bool,
    poll_ms: u64,
    json: bool,
    mut keep: impl FnMut(&Follower) -> Result<()>,
    evidence_dir: Option<&Path>,
) -> Result<Status> {
    loop {
        let bar = if json {
            ProgressBar::hidden()
        } else {
            // Drawn only when stderr is a terminal.
            ProgressBar::new(0).with_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:30}] {human_pos}/{human_len} entries, {per_sec}, {eta} left",
                )
                .expect("a valid template")
                .progress_chars("=> "),
            )
        };
        bar.set_message(format!("verifying {}", source.base()));
        let result = follower
            .step(source, sink, |done, total| {
                bar.set_length(total);
                bar.set_position(done);
            })
            .await;
        bar.finish_and_clear();
        match result {
            Ok(report) => {
                if matches!(report, StepReport::Advanced { .. }) {
                    keep(follower)?;
                }
                print_report(&report, json, follow);
            }
            Err(FollowError::SplitView(message, evidence)) => {
                let saved = match evidence_dir {
                    Some(dir) => Some(save_evidence(dir, &evidence)?),
                    None => None,
                };
                if json {
                    println!(
                        "{}",
                        json!({
                            "event": "split-view",
                            "status": Status::Equivocation,
                            "message": message,
                            "evidence_file": saved.as_ref().map(|p| p.display().to_string()),
                            "evidence": evidence.format(),
                        })
                    );
                } else {
                    println!("SPLIT VIEW: {message}");
                    if let Some(path) = &saved {
                        println!("evidence saved to {}", path.display());
                    }
                    print!("{}", evidence.format());
                }
                return Ok(Status::Equivocation);
            }
            Err(e) => {
                let status = e.status();
                if json {
                    println!(
                        "{}",
                        json!({"event": "error", "status": status, "message": e.to_string()})
                    );
                } else {
                    eprintln!("error ({status:?}): {e}");
                }
                if !(follow && e.is_transient()) {
                    return Ok(status);
                }
            }
        }
        if !follow {
            return Ok(Status::Valid);
        }
        tokio::time::sleep(Duration::from_millis(poll_ms)).await;
    }
}

fn print_report(report: &StepReport, json: bool, follow: bool) {
    if json {
        if !(follow && matches!(report, StepReport::Unchanged { .. })) {
            println!("{}", serde_json::to_string(report).expect("serialisable"));
        }
        return;
    }
    match report {
        StepReport::Advanced {
            from_size,
            checkpoint,
            entries_verified,
            bundles,
            hash_tiles,
            bytes_fetched,
        } => println!(
            "verified {} from {from_size} to {}: {}, {}, {}, {:.1} MiB; root {}; {} of {} replicas signed, {} witness cosignatures",
            checkpoint.origin,
            checkpoint.size,
            count(*entries_verified, "entry", "entries"),
            count(*bundles, "bundle", "bundles"),
            count(*hash_tiles, "hash tile", "hash tiles"),
            *bytes_fetched as f64 / (1 << 20) as f64,
            checkpoint.root,
            checkpoint.replica_signers.len(),
            checkpoint.replicas_listed,
            checkpoint.cosignatures.len(),
        ),
        StepReport::Unchanged { size } => {
            if !follow {
                println!("no new checkpoint: size {size} was verified before");
            }
        }
        StepReport::Behind {
            served_size,
            verified_size,
        } => println!(
            "the log serves size {served_size}, smaller than {verified_size} verified before (a lagging cache?); nothing to do"
        ),
    }
}

/// "1 entry", "2 entries".
fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}
