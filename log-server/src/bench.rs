//! `bftlog bench`: load a cluster and print what it sustained.
//!
//! Without `--cluster`, it creates a cluster of `--replicas` in a temporary
//! directory and runs each replica as its own `bftlog serve` process (so
//! CPU and memory are per replica, read from /proc). K clients append
//! batches of entries of a given size for T seconds; every receipt is
//! verified by the client library before it counts. Printed: entries/s,
//! commit latency percentiles (submit → verified receipts), CPU% and RSS per
//! replica, disk bytes per entry and bytes written per entry during the
//! run (write amplification), and from each replica's Prometheus endpoint
//! (turned on in the configurations it writes) rounds per second, entries
//! per committed block and durable writes per round, which tell whether
//! the CPU went on rounds or on entries. The replicas it starts get the
//! machine's cores divided among them as tokio workers. `--read` instead
//! fills the log and then measures inclusion proofs served per second.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bftlog_server::admission::{AdmissionMode, Quota, submitters};
use bftlog_server::client::{Client, ClientOptions};
use bftlog_server::config::{
    Cluster, FIRST_SUBMITTER_KEY_FILE, SUBMITTERS_FILE, init_cluster_admitting,
};
use bftlog_spec::wire::{ClientRequest, ClientResponse, LeafRef};
use serde_json::json;

mod attack;
mod read;
mod tiles;
use read::{fill_log, read_bench};

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Replicas of the local cluster it starts (ignored with --cluster).
    #[arg(long, default_value_t = 4)]
    pub replicas: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Entries per append.
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
    #[arg(long, default_value_t = 256)]
    pub entry_bytes: usize,
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Offered load in entries/s, open loop: each client starts an
    /// append every clients×batch/rate seconds whether or not earlier
    /// ones finished, and latency counts from the scheduled start.
    /// Without it each client appends again as soon as it has receipts.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Send every append to f+1 replicas at once instead of one replica
    /// first and f more after the hedge delay (for comparison).
    #[arg(long)]
    pub no_hedge: bool,
    /// Target a running cluster instead of starting one.
    #[arg(long)]
    pub cluster: Option<PathBuf>,
    /// With --cluster: the submitter key file the load presents (one the
    /// replicas list, with a quota that does not throttle the load).
    #[arg(long, requires = "cluster")]
    pub key: Option<PathBuf>,
    /// Measure inclusion proofs served per second instead of appends.
    #[arg(long)]
    pub read: bool,
    /// Measure full hash tiles served per second by one replica's tiles
    /// endpoint (keep-alive HTTP/1.1, --clients connections) instead of
    /// appends; the log is filled to --log-size first.
    #[arg(long, conflicts_with_all = ["cluster", "read", "attack"])]
    pub tiles: bool,
    /// The first REPLICAS replicas (1 if not given) publish their tiles,
    /// each to a directory of its own (`[tiles] publish = "file://…"`);
    /// the run also reports how long after its receipts each append was
    /// in replica 0's published checkpoint.
    #[arg(
        long,
        value_name = "REPLICAS",
        num_args = 0..=1,
        default_missing_value = "1",
        conflicts_with_all = ["cluster", "read", "tiles", "attack"]
    )]
    pub publish: Option<usize>,
    /// With --tiles: requests sent at once on each connection (HTTP/1.1
    /// pipelining); 1 waits for each answer before the next request.
    #[arg(long, default_value_t = 1, requires = "tiles")]
    pub pipeline: usize,
    /// The local cluster's `[storage] cache_mb` (redb's cache); the
    /// replicas' default if not given.
    #[arg(long, conflicts_with = "cluster")]
    pub cache_mb: Option<usize>,
    /// Entries to fill the log to before a --read or --tiles run.
    #[arg(long, default_value_t = 1_000_000)]
    pub log_size: u64,
    /// Runs the cluster without its cluster key (no FROST signing), to
    /// compare with the default run, which has one.
    #[arg(long, conflicts_with = "cluster")]
    pub no_cluster_key: bool,
    /// Inclusion proofs per request in a --read run: 1 uses
    /// `GetInclusionProof`, more `GetInclusionProofs` (at most 1,024).
    #[arg(long, default_value_t = 1)]
    pub proofs_per_request: usize,
    /// Keep the local cluster's directory (configurations, data and each
    /// replica's log, `replica-<i>.log`) instead of deleting it, and print
    /// its path. Replicas log at `RUST_LOG` if set, else `warn`.
    #[arg(long)]
    pub keep: bool,
    /// Measure the honest clients with and without this attack (a local
    /// cluster only; see `bftlog_server::attack` for the kinds): entries/s
    /// and p99 of both, and each replica's peak RSS.
    #[arg(long, value_enum)]
    pub attack: Option<bftlog_server::attack::Attack>,
    /// With --attack: the attacker's bytes a second to each replica, in
    /// MiB (0: unpaced).
    #[arg(long, default_value_t = 16.0)]
    pub attack_mib_per_s: f64,
}

/// A replica process this command started.
struct Replica {
    child: Child,
    data_dir: PathBuf,
    /// Its Prometheus endpoint, for the consensus counters.
    metrics: std::net::SocketAddr,
}

/// A replica's consensus and storage counters at one moment, from its
/// Prometheus endpoint: with them a run shows whether its CPU went on
/// rounds (signatures, durable writes) or on entries.
#[derive(Clone, Copy, Debug, PartialEq)]
struct ConsensusCounters {
    round: f64,
    blocks_committed: f64,
    store_writes: f64,
    store_flushes: f64,
    store_write_us: f64,
    quorum_checkpoints: f64,
    quorum_lag_us: f64,
    cluster_signed: f64,
    cluster_lag_us: f64,
}

impl ConsensusCounters {
    /// From a Prometheus text exposition; `None` if a counter is missing.
    fn parse(text: &str) -> Option<Self> {
        let value = |name: &str| {
            text.lines().find_map(|line| {
                let (metric, value) = line.split_once(' ')?;
                (metric == name).then(|| value.trim().parse::<f64>().ok())?
            })
        };
        Some(ConsensusCounters {
            round: value("bftlog_round")?,
            blocks_committed: value("bftlog_blocks_committed_total")?,
            store_writes: value("bftlog_store_writes_total")?,
            store_flushes: value("bftlog_store_flushes_total")?,
            store_write_us: value("bftlog_store_write_microseconds_total")?,
            quorum_checkpoints: value("bftlog_quorum_checkpoints_total")?,
            quorum_lag_us: value("bftlog_quorum_checkpoint_lag_microseconds_total")?,
            cluster_signed: value("bftlog_cluster_signed_checkpoints_total")?,
            cluster_lag_us: value("bftlog_cluster_signature_lag_microseconds_total")?,
        })
    }

    /// What happened between two readings, per second of `seconds` and
    /// per round; `None` if a counter went backwards (a restart).
    fn between(&self, end: &Self, seconds: f64) -> Option<serde_json::Value> {
        let delta = |a: f64, b: f64| (b >= a).then_some(b - a);
        let rounds = delta(self.round, end.round)?;
        let blocks = delta(self.blocks_committed, end.blocks_committed)?;
        let writes = delta(self.store_writes, end.store_writes)?;
        let flushes = delta(self.store_flushes, end.store_flushes)?;
        let write_us = delta(self.store_write_us, end.store_write_us)?;
        let quorums = delta(self.quorum_checkpoints, end.quorum_checkpoints)?;
        let quorum_lag_us = delta(self.quorum_lag_us, end.quorum_lag_us)?;
        let signed = delta(self.cluster_signed, end.cluster_signed)?;
        let cluster_lag_us = delta(self.cluster_lag_us, end.cluster_lag_us)?;
        let per = |x: f64, y: f64| if y > 0.0 { Some(x / y) } else { None };
        Some(json!({
            "rounds": rounds,
            "rounds_per_second": per(rounds, seconds),
            "blocks_committed": blocks,
            "durable_writes_per_round": per(writes, rounds),
            "flushes_per_round": per(flushes, rounds),
            "ms_per_durable_write": per(write_us / 1000.0, writes),
            "quorum_checkpoints": quorums,
            // From this replica's commit of a size to its quorum
            // checkpoint, and to the checkpoint's cluster signature (the
            // threshold signing time per checkpoint), means.
            "ms_commit_to_quorum_checkpoint": per(quorum_lag_us / 1000.0, quorums),
            "cluster_signed_checkpoints": signed,
            "ms_commit_to_cluster_signature": per(cluster_lag_us / 1000.0, signed),
        }))
    }
}

/// `GET /metrics` from a replica (plain HTTP/1.0, so the server closes
/// the connection after its answer).
async fn scrape_counters(addr: std::net::SocketAddr) -> Option<ConsensusCounters> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fetch = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .await
            .ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.ok()?;
        let text = String::from_utf8(response).ok()?;
        let (_, body) = text.split_once("\r\n\r\n")?;
        ConsensusCounters::parse(body)
    };
    tokio::time::timeout(Duration::from_secs(5), fetch)
        .await
        .ok()
        .flatten()
}

/// A TCP port on 127.0.0.1 free at the time of asking.
fn free_tcp_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free TCP port")?;
    Ok(listener.local_addr()?.port())
}

/// Turns on `replica`'s Prometheus endpoint at `addr` in its configuration
/// file.
fn enable_metrics(config: &Path, addr: std::net::SocketAddr) -> Result<()> {
    let text = std::fs::read_to_string(config)?;
    let mut table: toml::Table = toml::from_str(&text)?;
    table.insert(
        "metrics_listen".into(),
        toml::Value::String(addr.to_string()),
    );
    std::fs::write(config, toml::to_string(&table)?)?;
    Ok(())
}

/// Sets `[storage] cache_mb` in a replica file.
fn set_cache_mb(config: &Path, mb: usize) -> Result<()> {
    let text = std::fs::read_to_string(config)?;
    let mut table: toml::Table = toml::from_str(&text)?;
    let storage = table
        .entry("storage")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    let Some(storage) = storage.as_table_mut() else {
        bail!("[storage] is not a table");
    };
    storage.insert("cache_mb".into(), toml::Value::Integer(mb as i64));
    std::fs::write(config, toml::to_string(&table)?)?;
    Ok(())
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// (utime + stime) of a process, in seconds (USER_HZ = 100).
fn cpu_seconds(pid: u32) -> Option<f64> {
    stat_cpu_seconds(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// CPU seconds of a replica's core thread (named `bftlog-core-<id>`: the
/// consensus core and the database writer), from `/proc/<pid>/task`. The
/// rest of the process is its network and request threads. A lone replica
/// is bound by this one thread; replicas sharing a machine by the total.
fn core_thread_cpu_seconds(pid: u32) -> Option<f64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    for task in tasks.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).ok()?;
        if comm.trim_end().starts_with("bftlog-core-") {
            let tid: u32 = task.file_name().to_str()?.parse().ok()?;
            return task_cpu_seconds(pid, tid);
        }
    }
    None
}

/// (utime + stime) of one thread, in seconds.
fn task_cpu_seconds(pid: u32, tid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?;
    stat_cpu_seconds(&stat)
}

/// (utime + stime) from a `stat` line, in seconds (USER_HZ = 100).
fn stat_cpu_seconds(stat: &str) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// The whole machine's CPU time so far, from the first line of
/// `/proc/stat` (ticks summed over all cores).
#[derive(Clone, Copy)]
struct MachineTicks {
    busy: u64,
    /// Idle and waiting for I/O.
    idle: u64,
    /// Taken by the hypervisor for other guests.
    steal: u64,
}

fn machine_ticks() -> Option<MachineTicks> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat
        .lines()
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal (guest time is
    // counted in user already).
    let at = |i: usize| fields.get(i).copied().unwrap_or(0);
    Some(MachineTicks {
        busy: at(0) + at(1) + at(2) + at(5) + at(6),
        idle: at(3) + at(4),
        steal: at(7),
    })
}

/// (busy, steal) as percentages of the machine's CPU time between two
/// readings.
fn machine_cpu_percent(start: MachineTicks, end: MachineTicks) -> Option<(f64, f64)> {
    let busy = end.busy.checked_sub(start.busy)? as f64;
    let idle = end.idle.checked_sub(start.idle)? as f64;
    let steal = end.steal.checked_sub(start.steal)? as f64;
    let total = busy + idle + steal;
    (total > 0.0).then(|| (busy / total * 100.0, steal / total * 100.0))
}

/// The submitter keys of a bench cluster.
pub(crate) struct BenchKeys {
    /// The measured load's: listed with [`Quota::UNLIMITED`], so that
    /// admission does not throttle what is measured.
    pub load: ed25519_dalek::SigningKey,
    /// `bftlog init`'s first key, with the default quota: the append
    /// flood's.
    pub flooder: ed25519_dalek::SigningKey,
}

/// A local cluster in `dir` as `bftlog init --admission keys` makes it
/// (as an operator on the open internet would run it), with the load's
/// key listed besides.
pub(crate) fn init_bench_cluster(dir: &Path, n: usize) -> Result<(Cluster, BenchKeys)> {
    let cluster = init_cluster_admitting(
        dir,
        "bench.example/log",
        n,
        [127, 0, 0, 1].into(),
        free_port_base(n as u16),
        AdmissionMode::Keys,
    )?;
    let load = ed25519_dalek::SigningKey::generate(&mut bftlog_server::system_rng());
    submitters::append_row(
        &dir.join(SUBMITTERS_FILE),
        "bench load",
        &load.verifying_key(),
        Some(Quota::UNLIMITED),
    )
    .context("listing the bench's key")?;
    let flooder = submitters::load_key_file(&dir.join(FIRST_SUBMITTER_KEY_FILE))?;
    Ok((cluster, BenchKeys { load, flooder }))
}

/// The tree size once every receipted entry is in a checkpoint the
/// replica asked serves. A replica serves the newest checkpoint it holds a
/// quorum of signatures for, and the last signatures may reach it a moment
/// after the receipts reached the clients; so wait (up to 10 s) for it
/// rather than report a size that lags the receipts.
async fn settled_tree_size(client: &Client, at_least: u64) -> Result<u64> {
    let give_up = Instant::now() + Duration::from_secs(10);
    loop {
        let size = client.checkpoint().await?.checkpoint().size;
        if size >= at_least || Instant::now() >= give_up {
            return Ok(size);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One core's speed just before the run: SHA-256 over 32 MiB, in MiB/s.
/// Virtual machines differ from day to day; this lets figures taken on
/// different days be compared, or not.
fn sha256_mib_per_s() -> f64 {
    use sha2::Digest;
    let block = vec![0x5a_u8; 1 << 20];
    let start = Instant::now();
    let mut hasher = sha2::Sha256::new();
    for _ in 0..32 {
        hasher.update(&block);
    }
    std::hint::black_box(hasher.finalize());
    32.0 / start.elapsed().as_secs_f64()
}

/// Bytes a process has passed to `write` and `pwrite` so far
/// (`/proc/<pid>/io` `wchar`): for a replica, what its database wrote,
/// pages and padding included; UDP sends are not counted. The kernel's
/// `write_bytes` is not used: it counted redb's pages more than once.
fn written_bytes(pid: u32) -> Option<u64> {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    io.lines()
        .find_map(|l| l.strip_prefix("wchar:"))
        .and_then(|v| v.trim().parse().ok())
}

/// A `/proc/<pid>/status` field in KiB (`VmRSS`, `VmHWM`).
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
}

/// Starts `bftlog serve` for replica `i` of the cluster in `dir`, with
/// `workers` tokio workers, logging to `replica-<i>.log` at `RUST_LOG`
/// (default `warn`).
fn spawn_replica(exe: &Path, dir: &Path, i: usize, workers: &str) -> Result<Child> {
    let log = std::fs::File::create(dir.join(format!("replica-{i}.log")))?;
    Command::new(exe)
        .args(["serve", "--config"])
        .arg(dir.join(format!("replica-{i}.toml")))
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .env("TOKIO_WORKER_THREADS", workers)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("starting a replica")
}

fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn free_port_base(count: u16) -> u16 {
    loop {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let base = socket.local_addr().expect("addr").port();
        drop(socket);
        if base < 60000
            && (0..count).all(|i| std::net::UdpSocket::bind(("127.0.0.1", base + i)).is_ok())
        {
            return base;
        }
    }
}

/// One second of a run: the appends due in it and their latencies.
struct SecondOfRun {
    second: u64,
    appends: usize,
    p50_ms: f64,
    max_ms: f64,
}

/// Groups `(due, latency)` pairs by the whole second they were due in.
fn latency_timeline(latencies: &[(Duration, Duration)]) -> Vec<SecondOfRun> {
    let mut by_second: std::collections::BTreeMap<u64, Vec<Duration>> = Default::default();
    for (due, latency) in latencies {
        by_second.entry(due.as_secs()).or_default().push(*latency);
    }
    by_second
        .into_iter()
        .map(|(second, mut l)| {
            l.sort();
            SecondOfRun {
                second,
                appends: l.len(),
                p50_ms: percentile(&l, 0.5),
                max_ms: percentile(&l, 1.0),
            }
        })
        .collect()
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e3
}

pub async fn run(args: BenchArgs, json_output: bool) -> Result<()> {
    if args.entry_bytes == 0 || args.entry_bytes > bftlog_spec::wire::MAX_ENTRY_BYTES {
        bail!("--entry-bytes must be 1 to 65535");
    }
    if let Some(kind) = args.attack {
        return attack::run(&args, kind, json_output).await;
    }
    let (cluster, replicas, dir, submitter_key, tiles_addrs) = match &args.cluster {
        Some(path) => {
            let key = args
                .key
                .as_ref()
                .map(|k| submitters::load_key_file(k))
                .transpose()?;
            (Cluster::load(path)?, Vec::new(), None, key, Vec::new())
        }
        None => {
            let dir = std::env::temp_dir().join(format!("bftlog-bench-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            let (cluster, keys) = init_bench_cluster(&dir, args.replicas)?;
            let cluster = if args.no_cluster_key {
                bftlog_server::config::strip_cluster_key(&dir, cluster)?
            } else {
                cluster
            };
            let exe = std::env::current_exe().context("locating the bftlog binary")?;
            // The replicas share this machine's cores: each gets its share
            // of tokio workers (at least one) rather than one per core, so
            // that n runtimes do not each wake a worker per core. Measured
            // in docs/perf/journal.md (2026-12-03). A TOKIO_WORKER_THREADS
            // already set is passed on unchanged.
            let mut tiles_addrs = Vec::new();
            let workers = std::env::var("TOKIO_WORKER_THREADS").unwrap_or_else(|_| {
                let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
                if args.tiles {
                    // Only replica 0 works while tiles are measured: it
                    // gets a worker per core, as a replica on a machine of
                    // its own would.
                    cores.to_string()
                } else {
                    (cores / args.replicas.max(1)).max(1).to_string()
                }
            });
            let mut replicas = Vec::new();
            for i in 0..args.replicas {
                let config = dir.join(format!("replica-{i}.toml"));
                let metrics = std::net::SocketAddr::from(([127, 0, 0, 1], free_tcp_port()?));
                enable_metrics(&config, metrics)
                    .with_context(|| format!("enabling metrics in {}", config.display()))?;
                if let Some(mb) = args.cache_mb {
                    set_cache_mb(&config, mb)
                        .with_context(|| format!("setting cache_mb in {}", config.display()))?;
                }
                if args.tiles || args.publish.is_some() {
                    let listen = std::net::SocketAddr::from(([127, 0, 0, 1], free_tcp_port()?));
                    let publish = dir.join(format!("published-{i}"));
                    let publishes = args.publish.is_some_and(|k| i < k);
                    tiles::enable_tiles(&config, Some(listen), publishes.then_some(&*publish))
                        .with_context(|| format!("enabling tiles in {}", config.display()))?;
                    tiles_addrs.push(listen);
                }
                let child = spawn_replica(&exe, &dir, i, &workers)?;
                replicas.push(Replica {
                    child,
                    data_dir: dir.join(format!("replica-{i}")),
                    metrics,
                });
            }
            if args.keep {
                eprintln!("keeping the cluster directory {}", dir.display());
            }
            (
                cluster,
                replicas,
                Some(TempDir(dir, !args.keep)),
                Some(keys.load),
                tiles_addrs,
            )
        }
    };
    let mut options = ClientOptions {
        submitter_key,
        ..ClientOptions::default()
    };
    if args.no_hedge {
        options.hedge_after_min_ms = 0;
        options.hedge_after_max_ms = 0;
    }
    let client = Client::new(cluster.clone(), options)?;
    tokio::time::timeout(
        Duration::from_secs(60),
        client.append(&[b"bench warm-up".to_vec()]),
    )
    .await
    .context("the cluster did not commit within 60 s")??;
    if args.read || args.tiles {
        let result = match tiles_addrs.first() {
            Some(&addr) if args.tiles => {
                let fill = fill_log(&client, args.log_size, args.entry_bytes).await?;
                let size = client.checkpoint().await?.checkpoint().size;
                tiles::tiles_bench(
                    addr,
                    size,
                    args.clients,
                    args.pipeline.max(1),
                    args.seconds,
                    fill.as_secs_f64(),
                    json_output,
                )
                .await
            }
            _ => read_bench(&args, json_output, &client).await,
        };
        // Stop the replicas before their directory goes.
        drop(replicas);
        drop(dir);
        return result;
    }
    let pids: Vec<u32> = replicas.iter().map(|r| r.child.id()).collect();
    let sha256_speed = sha256_mib_per_s();
    let machine_start = machine_ticks();
    let cpu_start: Vec<Option<f64>> = pids.iter().map(|p| cpu_seconds(*p)).collect();
    let core_cpu_start: Vec<Option<f64>> =
        pids.iter().map(|p| core_thread_cpu_seconds(*p)).collect();
    let written_start: Vec<Option<u64>> = pids.iter().map(|p| written_bytes(*p)).collect();
    let mut counters_start = Vec::new();
    for r in &replicas {
        counters_start.push(scrape_counters(r.metrics).await);
    }
    let size_start = client.checkpoint().await?.checkpoint().size;
    let start = Instant::now();
    let deadline = start + Duration::from_secs(args.seconds);
    let bench_cpu_start = cpu_seconds(std::process::id());
    let stop_watching = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let published_watch = match (&dir, args.publish) {
        (Some(TempDir(path, _)), Some(publishers)) if publishers > 0 => {
            Some(tiles::watch_published(
                path.join("published-0").join("checkpoint"),
                stop_watching.clone(),
            ))
        }
        _ => None,
    };
    // The load generator's own hiccups (how late a 10 ms timer woke): a
    // late wake-up delays every client's appends too, so a latency spike
    // it explains is not the cluster's.
    let client_stall = Arc::new(AtomicU64::new(0));
    let watchdog = {
        let client_stall = client_stall.clone();
        tokio::spawn(bftlog_server::node::report_timer_lateness(move |late| {
            client_stall.fetch_max(late.as_micros() as u64, Ordering::Relaxed);
        }))
    };
    let mut tasks = tokio::task::JoinSet::new();
    // Open loop: the time between one client's appends.
    let period = args
        .rate
        .map(|rate| Duration::from_secs_f64(args.clients as f64 * args.batch as f64 / rate));
    for c in 0..args.clients {
        let client = client.clone();
        let (batch, entry_bytes) = (args.batch, args.entry_bytes);
        // Distinct entries, padded to the size asked for; the common part
        // is formatted once per append, not once per entry (the bench's
        // client shares the machine with the replicas it measures).
        let prefix = format!("bench {} client {c} append ", std::process::id());
        let entries_of = move |n: u64| -> Vec<Vec<u8>> {
            let head = format!("{prefix}{n} entry ");
            (0..batch)
                .map(|i| {
                    // Room for the head, `i` (at most 20 digits) and a space.
                    let mut e = Vec::with_capacity(entry_bytes.max(head.len() + 21));
                    e.extend_from_slice(head.as_bytes());
                    write!(e, "{i} ").expect("writing to a Vec");
                    e.resize(entry_bytes, b'.');
                    e
                })
                .collect()
        };
        let clients = args.clients as u32;
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            let mut entries = 0u64;
            let mut errors = 0u64;
            let mut n = 0u64;
            // When each append's receipts came, and the largest index in
            // them: for the latency to publication.
            let mut receipts: Vec<(Instant, u64)> = Vec::new();
            let mut record =
                |outcome: (Result<(u64, u64), _>, Duration, Duration, Instant)| match outcome {
                    (Ok((count, last)), started, latency, received) => {
                        entries += count;
                        latencies.push((started, latency));
                        receipts.push((received, last));
                    }
                    (Err::<_, bftlog_server::client::ClientError>(_), _, _, _) => errors += 1,
                };
            let summary = |r: Vec<bftlog_server::client::AppendReceipt>| {
                (
                    r.len() as u64,
                    r.iter().map(|x| x.index).max().unwrap_or_default(),
                )
            };
            if let Some(period) = period {
                // Clients start spread over one period; latency counts
                // from the scheduled start, so a slow cluster cannot hide
                // its queueing by delaying the next request.
                let deadline = tokio::time::Instant::from_std(deadline);
                let mut next = tokio::time::Instant::now() + period * c as u32 / clients;
                let mut inflight = tokio::task::JoinSet::new();
                while next < deadline {
                    tokio::time::sleep_until(next).await;
                    let items = entries_of(n);
                    n += 1;
                    let (client, scheduled) = (client.clone(), next);
                    inflight.spawn(async move {
                        let result = client.append(&items).await;
                        let started = scheduled.into_std().saturating_duration_since(start);
                        (
                            result.map(summary),
                            started,
                            scheduled.elapsed(),
                            Instant::now(),
                        )
                    });
                    next += period;
                    while let Some(done) = inflight.try_join_next() {
                        record(done.expect("append task"));
                    }
                }
                while let Some(done) = inflight.join_next().await {
                    record(done.expect("append task"));
                }
            } else {
                while Instant::now() < deadline {
                    let items = entries_of(n);
                    n += 1;
                    let t = Instant::now();
                    let result = client.append(&items).await;
                    record((result.map(summary), t - start, t.elapsed(), Instant::now()));
                }
            }
            (entries, latencies, errors, receipts)
        });
    }
    let (mut total, mut latencies, mut errors) = (0u64, Vec::new(), 0u64);
    let mut receipts = Vec::new();
    while let Some(r) = tasks.join_next().await {
        let (e, l, x, received) = r?;
        total += e;
        latencies.extend(l);
        errors += x;
        receipts.extend(received);
    }
    let elapsed = start.elapsed().as_secs_f64();
    watchdog.abort();
    let client_stall_ms = client_stall.load(Ordering::Relaxed) as f64 / 1000.0;
    let bench_cpu = percent_of_core(bench_cpu_start, cpu_seconds(std::process::id()), elapsed);
    let machine_cpu = match (machine_start, machine_ticks()) {
        (Some(a), Some(b)) => machine_cpu_percent(a, b),
        _ => None,
    };
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let timeline = latency_timeline(&latencies);
    let mut latencies: Vec<Duration> = latencies.into_iter().map(|(_, l)| l).collect();
    latencies.sort();
    let size_end = settled_tree_size(&client, size_start + total).await?;
    let publish_latency = match published_watch {
        Some(watch) => {
            // Give the last appends' publication time to land.
            tokio::time::sleep(Duration::from_secs(3)).await;
            stop_watching.store(true, Ordering::Relaxed);
            let published = watch
                .join()
                .map_err(|_| anyhow::anyhow!("the watcher panicked"))?;
            let (sorted, uncovered) = tiles::publish_latencies(&receipts, &published);
            Some(json!({
                "p50_ms": percentile(&sorted, 0.5),
                "p99_ms": percentile(&sorted, 0.99),
                "max_ms": percentile(&sorted, 1.0),
                "appends": sorted.len(),
                "never_published": uncovered,
            }))
        }
        None => None,
    };
    let mut consensus = Vec::new();
    for (r, start) in replicas.iter().zip(&counters_start) {
        let end = scrape_counters(r.metrics).await;
        consensus.push(match (start, end) {
            (Some(a), Some(b)) => a.between(&b, elapsed),
            _ => None,
        });
    }
    let per_replica: Vec<serde_json::Value> = replicas
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let pid = r.child.id();
            let cpu = percent_of_core(cpu_start[i], cpu_seconds(pid), elapsed);
            let core_cpu =
                percent_of_core(core_cpu_start[i], core_thread_cpu_seconds(pid), elapsed);
            let written = match (written_start[i], written_bytes(pid)) {
                (Some(a), Some(b)) => b.checked_sub(a),
                _ => None,
            };
            json!({
                "replica": i,
                "cpu_percent": cpu,
                // Of which its core thread (consensus and database writes).
                "core_thread_cpu_percent": core_cpu,
                "rss_mib": status_kib(pid, "VmRSS").map(|k| k as f64 / 1024.0),
                "peak_rss_mib": status_kib(pid, "VmHWM").map(|k| k as f64 / 1024.0),
                "disk_bytes": dir_bytes(&r.data_dir),
                // Written during the run (write calls), for write
                // amplification: compare with the entries committed.
                "written_bytes": written,
                // Rounds, durable writes and flushes during the run.
                "consensus": consensus[i],
            })
        })
        .collect();
    let disk_per_entry = replicas
        .first()
        .map(|r| dir_bytes(&r.data_dir) as f64 / size_end.max(1) as f64);
    let committed = size_end.saturating_sub(size_start).max(1) as f64;
    let written_per_entry = per_replica
        .first()
        .and_then(|r| r["written_bytes"].as_u64())
        .map(|w| w as f64 / committed);
    // CPU per acknowledged entry: what one replica spends on an entry does
    // not depend on how many replicas share the machine, so n = 4 against
    // n = 1 reads as the cost of BFT per replica.
    let replica_cpu: Vec<Option<f64>> = per_replica
        .iter()
        .map(|r| cpu_us_per_entry(r["cpu_percent"].as_f64(), elapsed, total))
        .collect();
    let replicas_total_us = replica_cpu.iter().copied().sum::<Option<f64>>();
    let cpu_per_entry = json!({
        "replica_mean_us": replicas_total_us.map(|t| t / replica_cpu.len().max(1) as f64),
        "replicas_total_us": replicas_total_us,
        "bench_process_us": cpu_us_per_entry(bench_cpu, elapsed, total),
    });
    let report = json!({
        "replicas": cluster.n(),
        "clients": args.clients,
        "batch": args.batch,
        "entry_bytes": args.entry_bytes,
        "seconds": elapsed,
        "offered_entries_per_second": args.rate,
        "cpu_per_entry": cpu_per_entry,
        "bench_process_cpu_percent": bench_cpu,
        // The longest the bench process's runtime was late waking a timer.
        "client_stall_ms": client_stall_ms,
        "entries": total,
        "entries_per_second": total as f64 / elapsed,
        "appends": latencies.len(),
        "append_errors": errors,
        // Appends also sent to f more replicas after the hedge delay.
        "hedged_appends": client.hedged_appends(),
        // The latency distribution at each whole percentile, for a CDF.
        "latency_cdf_ms": (0..=100)
            .map(|p| percentile(&latencies, p as f64 / 100.0))
            .collect::<Vec<f64>>(),
        "latency_ms": {
            "p50": percentile(&latencies, 0.5),
            "p90": percentile(&latencies, 0.9),
            "p99": percentile(&latencies, 0.99),
            "max": percentile(&latencies, 1.0),
        },
        // Per second of the run (by when appends were due): appends, p50
        // and max latency, so that a stall shows when it happened.
        "latency_by_second": timeline
            .iter()
            .map(|s| json!({"second": s.second, "appends": s.appends, "p50_ms": s.p50_ms, "max_ms": s.max_ms}))
            .collect::<Vec<_>>(),
        "tree_size": {"start": size_start, "end": size_end},
        // With --publish: from an append's receipts to replica 0's
        // published checkpoint covering it.
        "receipt_to_published_ms": publish_latency,
        "disk_bytes_per_entry": disk_per_entry,
        // Replica 0's writes during the run per entry committed in it.
        "written_bytes_per_entry": written_per_entry,
        "per_replica": per_replica,
        // How busy the whole machine was (a latency figure taken on a
        // saturated machine measures the machine), and how fast one core
        // was just before the run.
        "machine": {
            "cores": cores,
            "cpu_busy_percent": machine_cpu.map(|(busy, _)| busy),
            "cpu_steal_percent": machine_cpu.map(|(_, steal)| steal),
            "sha256_mib_per_second": sha256_speed,
        },
    });
    if json_output {
        println!("{report}");
    } else {
        if let Some(rate) = args.rate {
            println!("offered load: {rate:.0} entries/s (open loop)");
        }
        println!(
            "{} replicas, {} clients x {} entries of {} B, {:.1} s: {} entries, {:.0} entries/s ({} append errors, {} hedged)",
            cluster.n(),
            args.clients,
            args.batch,
            args.entry_bytes,
            elapsed,
            total,
            total as f64 / elapsed,
            errors,
            client.hedged_appends()
        );
        println!(
            "commit latency (submit -> verified receipts): p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.9),
            percentile(&latencies, 0.99),
            percentile(&latencies, 1.0)
        );
        if let Some(p) = report["receipt_to_published_ms"].as_object() {
            let f = |k: &str| p.get(k).and_then(|v| v.as_f64()).unwrap_or(f64::NAN);
            println!(
                "receipt -> published checkpoint (replica 0): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} appends never published)",
                f("p50_ms"),
                f("p99_ms"),
                f("max_ms"),
                p.get("never_published").cloned().unwrap_or_default()
            );
        }
        for r in &report["per_replica"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            println!(
                "replica {}: CPU {:.0}% (core thread {:.0}%), RSS {:.0} MiB (peak {:.0} MiB), disk {} bytes",
                r["replica"],
                r["cpu_percent"].as_f64().unwrap_or(f64::NAN),
                r["core_thread_cpu_percent"].as_f64().unwrap_or(f64::NAN),
                r["rss_mib"].as_f64().unwrap_or(f64::NAN),
                r["peak_rss_mib"].as_f64().unwrap_or(f64::NAN),
                r["disk_bytes"]
            );
        }
        if let Some(c) = report["per_replica"][0]["consensus"].as_object() {
            let f = |k: &str| c.get(k).and_then(|v| v.as_f64()).unwrap_or(f64::NAN);
            let blocks = f("blocks_committed");
            println!(
                "consensus (replica 0): {:.0} rounds/s, {:.0} entries per committed block, {:.2} durable writes ({:.2} flushed) per round, {:.2} ms per write",
                f("rounds_per_second"),
                if blocks > 0.0 {
                    committed / blocks
                } else {
                    f64::NAN
                },
                f("durable_writes_per_round"),
                f("flushes_per_round"),
                f("ms_per_durable_write")
            );
        }
        if let Some(c) = report["per_replica"][0]["consensus"].as_object() {
            let f = |k: &str| c.get(k).and_then(|v| v.as_f64()).unwrap_or(f64::NAN);
            let signed = if cluster.cluster_key.is_some() {
                format!(
                    "; cluster signature {:.1} ms after commit ({:.0} checkpoints signed)",
                    f("ms_commit_to_cluster_signature"),
                    f("cluster_signed_checkpoints"),
                )
            } else {
                "; no cluster key".to_owned()
            };
            println!(
                "checkpoints (replica 0, means): quorum checkpoint {:.1} ms after commit ({:.0} checkpoints){signed}",
                f("ms_commit_to_quorum_checkpoint"),
                f("quorum_checkpoints"),
            );
        }
        if let Some(worst) = timeline.iter().max_by(|a, b| a.max_ms.total_cmp(&b.max_ms)) {
            println!(
                "slowest second: appends due in second {} (of {}) took up to {:.1} ms (p50 {:.1} ms, {} appends)",
                worst.second,
                timeline.len(),
                worst.max_ms,
                worst.p50_ms,
                worst.appends
            );
        }
        if let Some(cpu) = bench_cpu {
            println!(
                "bench process (clients, receipt verification): CPU {cpu:.0}%, longest stall {client_stall_ms:.1} ms"
            );
        }
        if let (Some(mean), Some(all)) = (
            cpu_per_entry["replica_mean_us"].as_f64(),
            cpu_per_entry["replicas_total_us"].as_f64(),
        ) {
            let bench = cpu_per_entry["bench_process_us"]
                .as_f64()
                .map_or(String::new(), |b| format!(", bench process {b:.1} µs"));
            let all = if cluster.n() > 1 {
                format!(" ({all:.1} µs for all {})", cluster.n())
            } else {
                String::new()
            };
            println!("CPU per entry: {mean:.1} µs per replica{all}{bench}");
        }
        if let Some(d) = disk_per_entry {
            let written = written_per_entry.map_or(String::new(), |w| {
                format!("; it wrote {w:.0} bytes per entry committed during the run")
            });
            println!("disk: {d:.0} bytes per entry (replica 0, tree size {size_end}){written}");
        }
        let load = machine_cpu.map_or(String::new(), |(busy, steal)| {
            format!(", CPU {busy:.0}% busy and {steal:.0}% stolen during the run")
        });
        println!(
            "machine: {cores} cores{load}; one core hashed SHA-256 at {sha256_speed:.0} MiB/s before it"
        );
    }
    drop(replicas);
    drop(dir);
    Ok(())
}

/// Percent of one core used between two CPU-time readings (seconds)
/// `elapsed_s` apart; none without both readings.
fn percent_of_core(start_s: Option<f64>, end_s: Option<f64>, elapsed_s: f64) -> Option<f64> {
    Some((end_s? - start_s?) / elapsed_s * 100.0)
}

/// Microseconds of CPU per entry for a process that used `cpu_percent` of
/// one core over `elapsed_s` seconds in which `entries` were acknowledged.
fn cpu_us_per_entry(cpu_percent: Option<f64>, elapsed_s: f64, entries: u64) -> Option<f64> {
    let cpu_percent = cpu_percent?;
    (entries > 0 && elapsed_s > 0.0 && cpu_percent.is_finite())
        .then(|| cpu_percent / 100.0 * elapsed_s * 1e6 / entries as f64)
}

/// The temporary cluster directory, removed when the bench ends unless
/// `--keep` (the flag).
struct TempDir(PathBuf, bool);

impl Drop for TempDir {
    fn drop(&mut self) {
        if self.1 {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPOSITION: &str = "# HELP bftlog_round The current round.\n\
        # TYPE bftlog_round gauge\n\
        bftlog_blocks_committed_total 40\n\
        bftlog_store_writes_total 90\n\
        bftlog_store_flushes_total 60\n\
        bftlog_store_write_microseconds_total 45000\n\
        bftlog_store_writes_slow_total 7\n\
        bftlog_quorum_checkpoints_total 30\n\
        bftlog_quorum_checkpoint_lag_microseconds_total 60000\n\
        bftlog_cluster_signed_checkpoints_total 20\n\
        bftlog_cluster_signature_lag_microseconds_total 50000\n\
        bftlog_rejected_messages_total{reason=\"stale\"} 3\n\
        bftlog_round 45\n";

    #[test]
    fn counters_are_read_by_exact_name() {
        let c = ConsensusCounters::parse(EXPOSITION).unwrap();
        assert_eq!(
            c,
            ConsensusCounters {
                round: 45.0,
                blocks_committed: 40.0,
                store_writes: 90.0,
                store_flushes: 60.0,
                store_write_us: 45000.0,
                quorum_checkpoints: 30.0,
                quorum_lag_us: 60000.0,
                cluster_signed: 20.0,
                cluster_lag_us: 50000.0,
            }
        );
        // A missing counter is no reading, not a zero.
        let without_round: String = EXPOSITION
            .lines()
            .filter(|l| !l.starts_with("bftlog_round "))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(ConsensusCounters::parse(&without_round), None);
    }

    #[test]
    fn cpu_seconds_come_from_utime_and_stime_after_the_name() {
        // A thread name may hold spaces and parentheses; fields count
        // from the last ')'. utime 250 + stime 50 ticks = 3 s.
        let stat =
            "4242 (bftlog-core (0) x) S 1 4242 4242 0 -1 4194560 9 0 0 0 250 50 0 0 20 0 1 0";
        assert_eq!(stat_cpu_seconds(stat), Some(3.0));
        assert_eq!(stat_cpu_seconds("4242 (truncated"), None);
    }

    #[test]
    fn this_process_has_no_core_thread_but_its_own_cpu_reads() {
        let pid = std::process::id();
        assert!(cpu_seconds(pid).is_some());
        assert_eq!(core_thread_cpu_seconds(pid), None);
    }

    #[test]
    fn a_run_is_the_difference_of_two_readings() {
        let start = ConsensusCounters::parse(EXPOSITION).unwrap();
        let end = ConsensusCounters {
            round: 245.0,
            blocks_committed: 240.0,
            store_writes: 490.0,
            store_flushes: 360.0,
            store_write_us: 445_000.0,
            quorum_checkpoints: 130.0,
            quorum_lag_us: 260_000.0,
            cluster_signed: 120.0,
            cluster_lag_us: 350_000.0,
        };
        let run = start.between(&end, 2.0).unwrap();
        assert_eq!(run["rounds"], 200.0);
        assert_eq!(run["rounds_per_second"], 100.0);
        assert_eq!(run["blocks_committed"], 200.0);
        assert_eq!(run["durable_writes_per_round"], 2.0);
        assert_eq!(run["flushes_per_round"], 1.5);
        assert_eq!(run["ms_per_durable_write"], 1.0);
        assert_eq!(run["ms_commit_to_quorum_checkpoint"], 2.0);
        assert_eq!(run["ms_commit_to_cluster_signature"], 3.0);
        // A replica that restarted during the run has no figures.
        assert_eq!(end.between(&start, 2.0), None);
        // No rounds: no per-round figures, still a reading.
        let idle = start.between(&start, 2.0).unwrap();
        assert_eq!(idle["durable_writes_per_round"], serde_json::Value::Null);
    }

    /// CPU per entry: 40% of a core for 10 s over 80,000 entries is 50 µs;
    /// no figure without a CPU reading, entries or time.
    #[test]
    fn cpu_per_entry_is_cpu_seconds_over_entries() {
        assert_eq!(percent_of_core(Some(1.0), Some(4.0), 10.0), Some(30.0));
        assert_eq!(percent_of_core(None, Some(4.0), 10.0), None);
        assert_eq!(cpu_us_per_entry(Some(40.0), 10.0, 80_000), Some(50.0));
        assert_eq!(cpu_us_per_entry(None, 10.0, 80_000), None);
        assert_eq!(cpu_us_per_entry(Some(40.0), 10.0, 0), None);
        assert_eq!(cpu_us_per_entry(Some(40.0), 0.0, 10), None);
        assert_eq!(cpu_us_per_entry(Some(f64::NAN), 1.0, 10), None);
    }
}
