//! `bftlog-witness`: set up, configure and run a witness.

use anyhow::{Context, Result, bail};
use bftlog_spec::note::VerifierKey;
use bftlog_witness::dir;
use bftlog_witness::log_config::LogConfig;
use bftlog_witness::server::{Server, ServerConfig};
use bftlog_witness::store::Store;
use bftlog_witness::witness::{Witness, evidence_listing};
use clap::{Parser, Subcommand};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Parser)]
#[command(name = "bftlog-witness", version, about = "A C2SP tlog-witness")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a witness directory: a new key and an empty database.
    Init {
        #[arg(long)]
        dir: PathBuf,
        /// The witness name, e.g. witness.example.com/w1.
        #[arg(long)]
        name: String,
    },
    /// Trust a log (never replaced or removed). Run while the witness is stopped.
    AddLog {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        origin: String,
        /// A log verifier key (repeat for each replica of a bftlog cluster).
        #[arg(long = "vkey", required = true)]
        vkeys: Vec<String>,
        /// Distinct log signatures required (default: the BFT quorum, 1 for one key).
        #[arg(long)]
        threshold: Option<usize>,
    },
    /// List trusted logs and their latest cosigned sizes.
    ListLogs {
        #[arg(long)]
        dir: PathBuf,
    },
    /// List kept split-view evidence, or print one item.
    Evidence {
        #[arg(long)]
        dir: PathBuf,
        /// Print this split-view evidence item (bftlog-verify can check it).
        #[arg(long, conflicts_with = "rejected")]
        id: Option<u64>,
        /// Print this rejected (unproven) submission.
        #[arg(long)]
        rejected: Option<u64>,
    },
    /// Serve the witness over HTTP.
    Serve {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value = "127.0.0.1:7380")]
        listen: SocketAddr,
        /// URL path prefix for every route, e.g. /witness.
        #[arg(long, default_value = "")]
        prefix: String,
    },
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Init { dir, name } => init(&dir, &name),
        Command::AddLog {
            dir,
            origin,
            vkeys,
            threshold,
        } => {
            let keys = vkeys
                .iter()
                .map(|v| VerifierKey::parse(v).with_context(|| format!("bad vkey {v:?}")))
                .collect::<Result<Vec<_>>>()?;
            let config = LogConfig::new(&origin, keys, threshold)?;
            open_store(&dir)?.add_log(&config)?;
            println!(
                "added {} ({} of {} keys)",
                config.origin(),
                config.threshold(),
                config.keys().len()
            );
            Ok(())
        }
        Command::ListLogs { dir } => {
            let witness = open(&dir)?;
            for log in witness.logs() {
                let size = log
                    .latest
                    .map_or("none".to_string(), |l| format!("size {}", l.size));
                println!(
                    "{} threshold {} of {} latest {size}",
                    log.config.origin(),
                    log.config.threshold(),
                    log.config.keys().len()
                );
                for key in log.config.keys() {
                    println!("  key {key}");
                }
            }
            Ok(())
        }
        Command::Evidence { dir, id, rejected } => {
            let store = open_store(&dir)?;
            let mut out = std::io::stdout().lock();
            match (id, rejected) {
                (Some(id), _) => match store.evidence_item(id)? {
                    Some(bytes) => out.write_all(&bytes)?,
                    None => bail!("no evidence item {id}"),
                },
                (None, Some(id)) => match store.rejected_item(id)? {
                    Some(bytes) => out.write_all(&bytes)?,
                    None => bail!("no rejected item {id}"),
                },
                (None, None) => out.write_all(evidence_listing(&store)?.as_bytes())?,
            }
            Ok(())
        }
        Command::Serve {
            dir,
            listen,
            prefix,
        } => serve(&dir, listen, prefix),
    }
}

fn init(dir: &Path, name: &str) -> Result<()> {
    println!("{}", dir::init(dir, name)?);
    Ok(())
}

fn open_store(dir: &Path) -> Result<Store> {
    Ok(dir::open_store(dir)?)
}

fn open(dir: &Path) -> Result<Witness> {
    Ok(dir::open(dir)?)
}

fn serve(dir: &Path, listen: SocketAddr, prefix: String) -> Result<()> {
    let witness = Arc::new(open(dir)?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let config = ServerConfig {
            prefix: prefix.trim_end_matches('/').to_owned(),
            ..ServerConfig::default()
        };
        let key = witness.verifier_key();
        let server = Server::start(witness, listen, config).await?;
        tracing::info!(addr = %server.local_addr(), vkey = %key, "witness serving");
        println!("listening on {}", server.local_addr());
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        server.shutdown().await;
        Ok(())
    })
}
