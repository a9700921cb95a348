//! `bftlog`: run replicas, a local development cluster, and talk to a
//! cluster as a client. See `docs/operating.md`.

mod bench;
mod follow_cli;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use base64::Engine;
use bftlog_server::admission::{AdmissionMode, submitters};
use bftlog_server::client::{AppendReceipt, Client, ClientOptions};
use bftlog_server::config::{
    Cluster, ReplicaConfig, edit_replica_file, init_cluster, init_cluster_admitting,
};
use bftlog_server::node::Node;
use bftlog_spec::merkle;
use clap::{Parser, Subcommand};
use serde_json::json;

#[derive(Parser)]
#[command(
    name = "bftlog",
    version,
    about = "bftlog: a BFT transparency log (replicas, dev cluster, client)"
)]
struct Cli {
    /// Print machine-readable JSON where the output is data.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

/// One step of `bftlog dkg`; each reads `DIR/cluster.toml` and
/// `DIR/replica-ID.toml` with its key.
#[derive(Subcommand)]
enum DkgStep {
    /// Commit to this replica's secret: writes DIR/dkg/round1-ID.txt.
    Round1 {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        id: u16,
    },
    /// Check everyone's round-1 files and send each replica its share,
    /// sealed: writes DIR/dkg/round2-ID-to-J.txt for every other J.
    Round2 {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        id: u16,
    },
    /// Open the round-2 files for this replica: writes its share file,
    /// log.vkey and the key into cluster.toml, and prints the key (every
    /// operator must print the same).
    Finish {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        id: u16,
    },
}

fn dkg_step(step: DkgStep, json: bool) -> Result<()> {
    use bftlog_server::dkg;
    match step {
        DkgStep::Round1 { dir, id } => {
            let path = dkg::round1(&dir, id)?;
            if json {
                println!("{}", json!({"published": path}));
            } else {
                println!(
                    "wrote {}: give it to every other operator (to put in their {}/ folder), then run round2 once you hold theirs",
                    path.display(),
                    dkg::DKG_DIR
                );
            }
        }
        DkgStep::Round2 { dir, id } => {
            let paths = dkg::round2(&dir, id)?;
            if json {
                println!("{}", json!({"published": paths}));
            } else {
                for path in &paths {
                    println!("wrote {}", path.display());
                }
                println!(
                    "give each round2-{id}-to-J.txt to operator J only (its share is sealed to J), then run finish once you hold the files addressed to replica {id}"
                );
            }
        }
        DkgStep::Finish { dir, id } => {
            let finished = dkg::finish(&dir, id)?;
            let (vkey, digest) = (finished.key, finished.public_package_sha256);
            if json {
                println!(
                    "{}",
                    json!({"cluster_key": vkey.to_string(), "public_package_sha256": digest})
                );
            } else {
                println!("cluster key: {vkey}");
                println!("public package (every replica's verifying share), SHA-256: {digest}");
                println!(
                    "replica {id}'s share is in {}; compare both lines above with every other operator's before starting the replicas",
                    dir.join(bftlog_server::config::cluster_share_file(id as usize))
                        .display()
                );
            }
        }
    }
    Ok(())
}

#[derive(Subcommand)]
enum Command {
    /// Create keys and configuration for a new cluster.
    Init {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 4)]
        replicas: usize,
        /// The log's origin (checkpoint origin line and key name).
        #[arg(long)]
        origin: String,
        /// Address the replicas listen on.
        #[arg(long, default_value = "127.0.0.1")]
        host: IpAddr,
        /// UDP port of replica 0; replica i uses base-port + i.
        #[arg(long, default_value_t = 7400)]
        base_port: u16,
        /// Who may append: `open` (anyone, with a quota per source
        /// address) or `keys` (only the keys in DIR/submitters.toml, which
        /// starts with one new key, DIR/submitter.key). Asked for when
        /// left out on a terminal.
        #[arg(long, value_enum)]
        admission: Option<AdmissionArg>,
        /// Deal no cluster key: the replicas' operators make one with
        /// `bftlog dkg` instead, so that no one ever holds it whole.
        #[arg(long)]
        no_cluster_key: bool,
    },
    /// Make the cluster key with the other operators, without anyone
    /// holding it whole (FROST's distributed key generation): each
    /// operator runs `round1`, publishes `DIR/dkg/round1-I.txt`, copies
    /// everyone else's into `DIR/dkg/`, runs `round2`, gives each operator
    /// J the file `DIR/dkg/round2-I-to-J.txt`, and runs `finish` once it
    /// holds those addressed to it. docs/operating.md, "The cluster key".
    Dkg {
        #[command(subcommand)]
        step: DkgStep,
    },
    /// Create a submitter key file (the client's identity for appends
    /// where replicas admit listed keys only) and print its public key.
    SubmitterKey {
        /// The key file to create (readable by its owner only).
        file: PathBuf,
    },
    /// Run one replica.
    Serve {
        #[arg(long)]
        config: PathBuf,
    },
    /// Run a local cluster on 127.0.0.1 (created on first use, resumed
    /// after), append sample records, verify a receipt, then serve.
    Dev {
        #[arg(long, default_value = "bftlog-dev")]
        dir: PathBuf,
        #[arg(long, default_value_t = 4)]
        replicas: usize,
        #[arg(long, default_value_t = 7400)]
        base_port: u16,
        /// Local C2SP witnesses to start (DIR/witness-N); checkpoints need
        /// a majority of them. Only used when DIR is created.
        #[arg(long, default_value_t = 2)]
        witnesses: usize,
        /// HTTP port of the first witness; the others follow.
        #[arg(long, default_value_t = 7380)]
        witness_base_port: u16,
        /// HTTP port of replica 0's C2SP tlog-tiles endpoint; the others
        /// follow. Only used when DIR is created.
        #[arg(long, default_value_t = 7480)]
        tiles_base_port: u16,
        /// Exit after the demonstration instead of serving until Ctrl-C.
        #[arg(long)]
        no_serve: bool,
    },
    /// Append files as entries; prints `index N` and writes FILE.tlog-proof.
    Append {
        #[arg(long)]
        cluster: PathBuf,
        /// Each certificate in each PEM file is one entry (its DER bytes);
        /// receipts go to FILE.receipts.jsonl (`bftlog-verify batch` input).
        #[arg(long, conflicts_with = "sha256sums")]
        pem: bool,
        /// Each line of each checksum file is one entry; receipts go to
        /// FILE.receipts.jsonl.
        #[arg(long)]
        sha256sums: bool,
        /// Submitter key file (from `bftlog submitter-key` or `bftlog init
        /// --admission keys`) to present; default: a fresh anonymous key.
        #[arg(long)]
        key: Option<PathBuf>,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print the latest quorum checkpoint (verified).
    Checkpoint {
        #[arg(long)]
        cluster: PathBuf,
    },
    /// Print a receipt (tlog-proof) for an entry against the latest checkpoint.
    Prove {
        #[arg(long)]
        cluster: PathBuf,
        #[arg(long, conflicts_with = "entry", required_unless_present = "entry")]
        index: Option<u64>,
        /// The entry's bytes, to look up by leaf hash.
        #[arg(long)]
        entry: Option<PathBuf>,
    },
    /// Print a consistency proof (base64 lines) between two tree sizes.
    Consistency {
        #[arg(long)]
        cluster: PathBuf,
        #[arg(long)]
        old: u64,
        /// Default: the latest checkpoint's size.
        #[arg(long)]
        new: Option<u64>,
    },
    /// Print entries (base64 lines, the spec's entries export format).
    Get {
        #[arg(long)]
        cluster: PathBuf,
        #[arg(long)]
        start: u64,
        #[arg(long, default_value_t = 1)]
        count: u32,
    },
    /// Follow a log through its C2SP tlog-tiles: verify each checkpoint
    /// under a policy, prove it extends the last one from the log's hash
    /// tiles, download and check every entry bundle and hash tile, and
    /// report a split view with evidence. Exit codes as bftlog-verify's.
    Monitor(follow_cli::MonitorArgs),
    /// Make a verified copy of a tiles log that is itself a tiles log
    /// (serve the directory with any static web server).
    Mirror(follow_cli::MirrorArgs),
    /// Load a cluster and print entries/s, commit latency, CPU, RSS and
    /// disk per entry (or, with --read, inclusion proofs served per second).
    Bench(bench::BenchArgs),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Serve { .. } => "info",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> Result<()> {
    let json = cli.json;
    match cli.command {
        Command::Init {
            dir,
            replicas,
            origin,
            host,
            base_port,
            admission,
            no_cluster_key,
        } => {
            let mode = match admission {
                Some(a) => a.into(),
                None => ask_admission_mode()?,
            };
            let mut cluster =
                init_cluster_admitting(&dir, &origin, replicas, host, base_port, mode)?;
            if no_cluster_key {
                cluster = bftlog_server::config::strip_cluster_key(&dir, cluster)?;
            }
            if json {
                println!(
                    "{}",
                    json!({"dir": dir, "origin": cluster.origin, "replicas": cluster.n(),
                           "vkeys": cluster.keys.iter().map(|k| k.to_string()).collect::<Vec<_>>()})
                );
            } else {
                println!(
                    "created a {}-replica cluster for {} in {}",
                    cluster.n(),
                    cluster.origin,
                    dir.display()
                );
                println!(
                    "start each replica with: bftlog serve --config {}/replica-N.toml",
                    dir.display()
                );
                if mode == AdmissionMode::Keys {
                    println!(
                        "appends are admitted from the keys in {0}/{1} (send SIGHUP to the replicas after editing it); append with: bftlog append --key {0}/{2} …",
                        dir.display(),
                        bftlog_server::config::SUBMITTERS_FILE,
                        bftlog_server::config::FIRST_SUBMITTER_KEY_FILE
                    );
                }
            }
            Ok(())
        }
        Command::Dkg { step } => dkg_step(step, json),
        Command::SubmitterKey { file } => {
            let key = submitters::create_key_file(&file)?;
            let public = submitters::format_public_key(&key.verifying_key());
            if json {
                println!("{}", json!({"file": file, "key": public}));
            } else {
                println!(
                    "created {}; list it in the submitters file as:",
                    file.display()
                );
                println!("\n[[submitter]]\nname = \"…\"\nkey = \"{public}\"");
            }
            Ok(())
        }
        Command::Serve { config } => {
            let cfg = ReplicaConfig::load(&config)?;
            let id = cfg.id;
            let node = Node::start(cfg).await?;
            let mut hangups = hangups();
            loop {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => break,
                    _ = terminate() => break,
                    reason = node.stopped() => bail!("replica {id} stopped: {reason}"),
                    // Logged and counted by the node; a failed reload
                    // keeps the previous list and the replica serving.
                    Some(()) = hangups.recv() => {
                        let _ = node.reload_admission();
                    }
                }
            }
            node.shutdown().await?;
            Ok(())
        }
        Command::Dev {
            dir,
            replicas,
            base_port,
            witnesses,
            witness_base_port,
            tiles_base_port,
            no_serve,
        } => {
            let ports = DevPorts {
                replicas: base_port,
                witnesses: witness_base_port,
                tiles: tiles_base_port,
            };
            dev(&dir, replicas, witnesses, ports, no_serve, json).await
        }
        Command::Append {
            cluster,
            pem,
            sha256sums,
            key,
            files,
        } => {
            let submitter_key = key
                .map(|path| submitters::load_key_file(&path))
                .transpose()?;
            let cluster = Cluster::load(&cluster)?;
            let client = Client::new(
                cluster,
                ClientOptions {
                    submitter_key,
                    ..ClientOptions::default()
                },
            )?;
            append(&client, &files, pem, sha256sums, json).await
        }
        Command::Checkpoint { cluster } => {
            let client = client(&cluster)?;
            let verified = client.checkpoint().await?;
            let note = verified.note().format();
            if json {
                let c = verified.checkpoint();
                println!(
                    "{}",
                    json!({"origin": c.origin, "size": c.size, "root": c.root.to_base64(), "note": note})
                );
            } else {
                print!("{note}");
            }
            Ok(())
        }
        Command::Prove {
            cluster,
            index,
            entry,
        } => {
            let client = client(&cluster)?;
            let verified = client.checkpoint().await?;
            let (leaf, index) = match (&entry, index) {
                (Some(path), _) => {
                    let bytes = std::fs::read(path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    (Some(merkle::leaf_hash(&bytes)), None)
                }
                (None, Some(i)) => (None, Some(i)),
                (None, None) => bail!("give --index or --entry"),
            };
            let leaf = match leaf {
                Some(l) => l,
                None => {
                    let index = index.expect("set");
                    let entries = client.entries(index, 1).await?;
                    let entry = entries.first().context("no such entry")?;
                    merkle::leaf_hash(entry)
                }
            };
            let (index, inclusion) = client.prove_inclusion(leaf, index, &verified).await?;
            let proof = bftlog_spec::proof::TlogProof {
                extra: None,
                index,
                inclusion,
                checkpoint: verified.note().clone(),
            };
            if json {
                println!(
                    "{}",
                    json!({"index": index, "tree_size": verified.checkpoint().size, "proof": proof.format()})
                );
            } else {
                print!("{}", proof.format());
            }
            Ok(())
        }
        Command::Consistency { cluster, old, new } => {
            let client = client(&cluster)?;
            let latest = client.checkpoint().await?;
            let latest_cp = latest.checkpoint().clone();
            let new_size = new.unwrap_or(latest_cp.size);
            if new_size > latest_cp.size || old > new_size {
                bail!(
                    "need old ≤ new ≤ the latest checkpoint size {}",
                    latest_cp.size
                );
            }
            // Printed as served: the user checks it with `bftlog-verify
            // consistency` against the two checkpoints they hold (we hold
            // no verified root for the old size).
            let hashes = client.consistency_hashes(old, new_size).await?;
            if old == 0 && !hashes.is_empty() {
                bail!("a replica sent a non-empty proof from size 0");
            }
            if json {
                println!(
                    "{}",
                    json!({"old_size": old, "new_size": new_size,
                           "proof": hashes.iter().map(|h| h.to_base64()).collect::<Vec<_>>()})
                );
            } else {
                for h in hashes {
                    println!("{}", h.to_base64());
                }
            }
            Ok(())
        }
        Command::Bench(args) => bench::run(args, json).await,
        Command::Monitor(args) => follow_cli::monitor(args, json).await,
        Command::Mirror(args) => follow_cli::mirror(args, json).await,
        Command::Get {
            cluster,
            start,
            count,
        } => {
            let client = client(&cluster)?;
            let entries = client.entries(start, count).await?;
            let b64 = base64::engine::general_purpose::STANDARD;
            if json {
                println!(
                    "{}",
                    json!({"start": start, "entries": entries.iter().map(|e| b64.encode(e)).collect::<Vec<_>>()})
                );
            } else {
                for e in entries {
                    println!("{}", b64.encode(e));
                }
            }
            Ok(())
        }
    }
}

fn client(cluster: &Path) -> Result<Client> {
    let cluster = Cluster::load(cluster)?;
    Ok(Client::new(cluster, ClientOptions::default())?)
}

/// SIGHUPs, one message each (none where there are no signals).
fn hangups() -> tokio::sync::mpsc::Receiver<()> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut s) = signal(SignalKind::hangup()) {
            tokio::spawn(async move {
                while s.recv().await.is_some() {
                    // Hangups while a reload waits are one reload.
                    let _ = tx.try_send(());
                }
            });
        }
    }
    #[cfg(not(unix))]
    drop(tx);
    rx
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum AdmissionArg {
    Open,
    Keys,
}

impl From<AdmissionArg> for AdmissionMode {
    fn from(a: AdmissionArg) -> Self {
        match a {
            AdmissionArg::Open => AdmissionMode::Open,
            AdmissionArg::Keys => AdmissionMode::Keys,
        }
    }
}

/// Asks on the terminal who may append; refuses to guess elsewhere.
fn ask_admission_mode() -> Result<AdmissionMode> {
    use std::io::{BufRead, IsTerminal, Write};
    if !std::io::stdin().is_terminal() {
        bail!(
            "pass --admission open (anyone may append, with a quota per source address) or --admission keys (only listed submitter keys)"
        );
    }
    loop {
        print!(
            "Who may append? open = anyone, with a quota per source address; keys = only listed submitter keys [open/keys]: "
        );
        std::io::stdout().flush()?;
        let mut line = String::new();
        if std::io::stdin().lock().read_line(&mut line)? == 0 {
            bail!("no answer: pass --admission open or --admission keys");
        }
        match line.trim() {
            "open" => return Ok(AdmissionMode::Open),
            "keys" => return Ok(AdmissionMode::Keys),
            _ => println!("answer open or keys"),
        }
    }
}

async fn terminate() {
    #[cfg(unix)]
    {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
            return;
        }
    }
    std::future::pending::<()>().await
}

/// Entries from the files, with a label for each.
fn collect_entries(
    files: &[PathBuf],
    pem: bool,
    sha256sums: bool,
) -> Result<Vec<(PathBuf, String, Vec<u8>)>> {
    let mut out = Vec::new();
    for path in files {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        if pem {
            let text = std::str::from_utf8(&bytes)
                .with_context(|| format!("{} is not PEM text", path.display()))?;
            let certs = pem_certificates(text).with_context(|| format!("{}", path.display()))?;
            if certs.is_empty() {
                bail!("{}: no CERTIFICATE blocks", path.display());
            }
            for (i, der) in certs.into_iter().enumerate() {
                out.push((path.clone(), format!("{}#{}", path.display(), i + 1), der));
            }
        } else if sha256sums {
            let text = std::str::from_utf8(&bytes)
                .with_context(|| format!("{} is not text", path.display()))?;
            for (i, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let (digest, _name) = line.split_once(' ').with_context(|| {
                    format!("{}:{}: expected \"<sha256> <name>\"", path.display(), i + 1)
                })?;
                if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
                    bail!("{}:{}: not a SHA-256 checksum line", path.display(), i + 1);
                }
                out.push((
                    path.clone(),
                    format!("{}:{}", path.display(), i + 1),
                    line.as_bytes().to_vec(),
                ));
            }
        } else {
            out.push((path.clone(), path.display().to_string(), bytes));
        }
    }
    Ok(out)
}

/// The DER bytes of each `CERTIFICATE` block, strictly decoded.
fn pem_certificates(text: &str) -> Result<Vec<Vec<u8>>> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        match (&mut current, line) {
            (None, "-----BEGIN CERTIFICATE-----") => current = Some(String::new()),
            (None, _) => {}
            (Some(body), "-----END CERTIFICATE-----") => {
                let der = b64
                    .decode(body.as_bytes())
                    .with_context(|| format!("line {}: bad base64 in certificate", i + 1))?;
                out.push(der);
                current = None;
            }
            (Some(body), l) => body.push_str(l.trim()),
        }
    }
    if current.is_some() {
        bail!("unterminated CERTIFICATE block");
    }
    Ok(out)
}

async fn append(
    client: &Client,
    files: &[PathBuf],
    pem: bool,
    sha256sums: bool,
    json: bool,
) -> Result<()> {
    let items = collect_entries(files, pem, sha256sums)?;
    let entries: Vec<Vec<u8>> = items.iter().map(|(_, _, e)| e.clone()).collect();
    let mut receipts: Vec<AppendReceipt> = Vec::with_capacity(entries.len());
    // Requests stay well under the 16 MiB frame: at most 4096 entries and
    // about 8 MiB each.
    let mut start = 0;
    while start < entries.len() {
        let mut end = start;
        let mut bytes = 0;
        while end < entries.len()
            && end - start < bftlog_spec::wire::MAX_APPEND_ENTRIES
            && (end == start || bytes + entries[end].len() <= 8 << 20)
        {
            bytes += entries[end].len();
            end += 1;
        }
        receipts.extend(client.append(&entries[start..end]).await?);
        start = end;
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut jsonl: std::collections::BTreeMap<PathBuf, String> = Default::default();
    for ((path, label, entry), receipt) in items.iter().zip(&receipts) {
        if pem || sha256sums {
            let line =
                json!({"name": label, "entry": b64.encode(entry), "proof": receipt.tlog_proof()});
            let buf = jsonl.entry(path.clone()).or_default();
            buf.push_str(&line.to_string());
            buf.push('\n');
        } else {
            let out = proof_path(path);
            std::fs::write(&out, receipt.tlog_proof())
                .with_context(|| format!("writing {}", out.display()))?;
        }
        if json {
            println!(
                "{}",
                json!({"name": label, "index": receipt.index, "tree_size": receipt.tree_size})
            );
        } else {
            println!("index {} {}", receipt.index, label);
        }
    }
    for (path, text) in jsonl {
        let mut out = path.into_os_string();
        out.push(".receipts.jsonl");
        std::fs::write(&out, text)
            .with_context(|| format!("writing {}", PathBuf::from(&out).display()))?;
    }
    Ok(())
}

fn proof_path(path: &Path) -> PathBuf {
    let mut out = path.as_os_str().to_owned();
    out.push(".tlog-proof");
    PathBuf::from(out)
}

/// First ports of the replicas and witnesses `bftlog dev` starts.
struct DevPorts {
    replicas: u16,
    witnesses: u16,
    tiles: u16,
}

/// The directory of the dev cluster's witness `w{i}`.
fn dev_witness_dir(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("witness-{}", name.trim_start_matches('w')))
}

/// Creates `count` witnesses trusting the cluster and lists them in
/// `cluster.toml` and `policy`.
fn dev_init_witnesses(
    dir: &Path,
    cluster: &mut Cluster,
    count: usize,
    first_port: u16,
) -> Result<()> {
    for i in 1..=count {
        let name = format!("w{i}");
        let witness_dir = dev_witness_dir(dir, &name);
        let key =
            bftlog_witness::dir::init(&witness_dir, &format!("localhost/bftlog-dev-witness-{i}"))?;
        let log = bftlog_witness::log_config::LogConfig::new(
            &cluster.origin,
            cluster.keys.clone(),
            None,
        )?;
        bftlog_witness::dir::open_store(&witness_dir)?.add_log(&log)?;
        let port = first_port
            .checked_add(i as u16 - 1)
            .context("witness port range overflows")?;
        cluster.witnesses.push(bftlog_server::config::Witness {
            name,
            key,
            url: format!("http://127.0.0.1:{port}"),
        });
    }
    cluster.witness_quorum = count / 2 + 1;
    bftlog_server::config::write_cluster_files(dir, cluster)?;
    Ok(())
}

async fn dev(
    dir: &Path,
    replicas: usize,
    witnesses: usize,
    ports: DevPorts,
    no_serve: bool,
    json: bool,
) -> Result<()> {
    let cluster_path = dir.join("cluster.toml");
    let created = !cluster_path.exists();
    if created {
        let mut cluster = init_cluster(
            dir,
            "localhost/bftlog-dev",
            replicas,
            [127, 0, 0, 1].into(),
            ports.replicas,
        )?;
        dev_init_witnesses(dir, &mut cluster, witnesses, ports.witnesses)?;
        for i in 0..replicas {
            let port = ports
                .tiles
                .checked_add(i as u16)
                .context("tiles port range overflows")?;
            // Every replica serves tiles; replica 0 publishes them to
            // DIR/tiles (one publisher: a directory has no conditional
            // writes to order several).
            edit_replica_file(&dir.join(format!("replica-{i}.toml")), |file| {
                file.tiles_listen = Some(([127, 0, 0, 1], port).into());
                if i == 0 {
                    file.tiles.publish = Some("file://tiles".into());
                }
            })?;
        }
    }
    let cluster = Cluster::load(&cluster_path)?;
    // Keep DIR/policy and DIR/log.vkeys in step with the cluster file.
    std::fs::write(dir.join("policy"), cluster.policy_text())?;
    std::fs::write(dir.join("log.vkeys"), cluster.vkeys_text())?;
    let mut witness_servers = Vec::new();
    for w in &cluster.witnesses {
        let witness = bftlog_witness::dir::open(&dev_witness_dir(dir, &w.name))
            .with_context(|| format!("opening witness {}", w.name))?;
        let addr: std::net::SocketAddr = w
            .url
            .trim_start_matches("http://")
            .parse()
            .with_context(|| format!("witness {} URL {}", w.name, w.url))?;
        let server = bftlog_witness::server::Server::start(
            std::sync::Arc::new(witness),
            addr,
            bftlog_witness::server::ServerConfig::default(),
        )
        .await
        .with_context(|| format!("starting witness {} on {addr}", w.name))?;
        witness_servers.push(server);
    }
    let mut nodes = Vec::new();
    for i in 0..cluster.n() {
        let cfg = ReplicaConfig::load(&dir.join(format!("replica-{i}.toml")))?;
        nodes.push(
            Node::start(cfg)
                .await
                .with_context(|| format!("starting replica {i}"))?,
        );
    }
    // Each replica's tiles base URL, one per line, for any tiles client.
    let tiles_urls: Vec<String> = nodes
        .iter()
        .filter_map(|n| n.tiles_addr())
        .map(|a| format!("http://{a}"))
        .collect();
    let mut urls_text = tiles_urls.join("\n");
    if !urls_text.is_empty() {
        urls_text.push('\n');
    }
    std::fs::write(dir.join("tiles-urls"), urls_text)?;
    let client = Client::new(cluster.clone(), ClientOptions::default())?;
    // To the nanosecond: two runs within one second must still append
    // distinct records (an equal one would get its first index back).
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let stamp = format!(
        "{}.{:09}",
        since_epoch.as_secs(),
        since_epoch.subsec_nanos()
    );
    let samples: Vec<Vec<u8>> = vec![
        b"certificate: CN=example.org serial=01 (sample record)".to_vec(),
        b"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855  empty.tar (sample build record)"
            .to_vec(),
        format!("bftlog dev started at unix time {stamp}").into_bytes(),
    ];
    let receipts = tokio::time::timeout(Duration::from_secs(60), client.append(&samples))
        .await
        .context("the local cluster did not commit within 60 s")??;
    let sample = dir.join("sample-record");
    std::fs::write(&sample, &samples[2])?;
    let sample_proof = receipts[2].tlog_proof();
    std::fs::write(proof_path(&sample), &sample_proof)?;
    let policy = cluster.policy();
    let report = bftlog_verify::check::check_receipt(
        &policy,
        sample_proof.as_bytes(),
        &merkle::leaf_hash(&samples[2]),
    )
    .map_err(|e| anyhow::anyhow!("the receipt does not verify: {e}"))?;
    let verified = client.checkpoint().await?;
    // The published tiles catch up with the checkpoint (so that DIR/tiles
    // is current even with --no-serve).
    let published = dir.join("tiles").join("checkpoint");
    if nodes.iter().any(|n| n.tiles_addr().is_some()) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let size = std::fs::read(&published)
                .ok()
                .and_then(|b| bftlog_spec::checkpoint::parse_signed(&b).ok())
                .map_or(0, |(_, c)| c.size);
            if size >= verified.checkpoint().size {
                break;
            }
            if std::time::Instant::now() >= deadline {
                eprintln!(
                    "warning: {} did not catch up within 10 s",
                    published.display()
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    if json {
        println!(
            "{}",
            json!({
                "dir": dir, "created": created, "replicas": cluster.n(),
                "addresses": cluster.addresses.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                "witnesses": cluster.witnesses.iter().map(|w| w.url.clone()).collect::<Vec<_>>(),
                "tiles": tiles_urls,
                "appended": receipts.iter().map(|r| r.index).collect::<Vec<_>>(),
                "checkpoint": verified.note().format(),
                "receipt": {"index": report.index, "tree_size": report.checkpoint.size, "valid": true},
            })
        );
    } else {
        println!(
            "bftlog dev: {} replicas on {} ({} {})",
            cluster.n(),
            cluster
                .addresses
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            if created { "created" } else { "resumed" },
            dir.display()
        );
        for w in &cluster.witnesses {
            println!("witness {} at {} ({})", w.name, w.url, w.key);
        }
        if !tiles_urls.is_empty() {
            println!(
                "C2SP tlog-tiles at {} (listed in {})",
                tiles_urls.join(", "),
                dir.join("tiles-urls").display()
            );
        }
        let vkey_path = dir.join(bftlog_server::config::CLUSTER_VKEY_FILE);
        if let Ok(vkey) = std::fs::read_to_string(&vkey_path) {
            println!(
                "cluster key (FROST, any {} of {} replicas sign together): {} ({}; policy {})",
                cluster.quorum(),
                cluster.n(),
                vkey.trim_end(),
                vkey_path.display(),
                dir.join(bftlog_server::config::CLUSTER_KEY_POLICY_FILE)
                    .display()
            );
        }
        if !cluster.witnesses.is_empty() {
            println!(
                "checkpoints need {} of {} replica signatures and {} of {} witness cosignatures",
                cluster.quorum(),
                cluster.n(),
                cluster.witness_quorum,
                cluster.witnesses.len()
            );
        }
        for (r, s) in receipts.iter().zip(&samples) {
            println!("appended index {}: {}", r.index, String::from_utf8_lossy(s));
        }
        println!("\nlatest quorum checkpoint:\n{}", verified.note().format());
        println!(
            "receipt verified: index {} in the tree of size {} (written to {})",
            report.index,
            report.checkpoint.size,
            proof_path(&sample).display()
        );
        println!("check it offline:");
        println!(
            "  cargo run --release --bin bftlog-verify -- inclusion --policy {} --proof {} {}",
            dir.join("policy").display(),
            proof_path(&sample).display(),
            sample.display()
        );
        println!(
            "append more:  cargo run --release --bin bftlog -- append --cluster {} FILE...",
            cluster_path.display()
        );
    }
    if !no_serve {
        if !json {
            println!("\nserving; Ctrl-C stops the cluster (re-running resumes the same log)");
        }
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate() => {}
        }
    }
    for node in nodes {
        node.shutdown().await?;
    }
    for server in witness_servers {
        server.shutdown().await;
    }
    Ok(())
}
