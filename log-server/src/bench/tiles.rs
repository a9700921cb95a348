//! `bftlog bench --tiles` (hash tiles served per second by one replica,
//! over keep-alive HTTP/1.1 connections) and `--publish` (the latency from
//! an append's receipt to the published checkpoint that covers it).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// Adds `tiles_listen = addr` and, with `publish_dir`, `[tiles] publish =
/// "file://DIR"` to a replica file.
pub(crate) fn enable_tiles(
    config: &Path,
    listen: Option<SocketAddr>,
    publish_dir: Option<&Path>,
) -> Result<()> {
    let text = std::fs::read_to_string(config)?;
    let mut table: toml::Table = toml::from_str(&text)?;
    if let Some(addr) = listen {
        table.insert("tiles_listen".into(), toml::Value::String(addr.to_string()));
    }
    if let Some(dir) = publish_dir {
        let mut tiles = toml::Table::new();
        tiles.insert(
            "publish".into(),
            toml::Value::String(format!("file://{}", dir.display())),
        );
        table.insert("tiles".into(), toml::Value::Table(tiles));
    }
    std::fs::write(config, toml::to_string(&table)?)?;
    Ok(())
}

/// One keep-alive HTTP/1.1 connection that GETs paths and reads whole
/// answers: the least a load generator can spend per request, since it
/// shares the machine with the replica it measures.
struct Connection {
    stream: BufReader<tokio::net::TcpStream>,
    line: String,
    body: Vec<u8>,
}

impl Connection {
    async fn open(addr: SocketAddr) -> Result<Self> {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(Connection {
            stream: BufReader::new(stream),
            line: String::new(),
            body: Vec::new(),
        })
    }

    /// Sends GETs for `paths` in one write (HTTP/1.1 pipelining when more
    /// than one).
    async fn send(&mut self, paths: &[String]) -> Result<()> {
        let mut requests = String::new();
        for path in paths {
            requests.push_str(&format!("GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n"));
        }
        self.stream.get_mut().write_all(requests.as_bytes()).await?;
        Ok(())
    }

    /// Reads one answer; returns the status, with the body in `self.body`.
    async fn receive(&mut self) -> Result<u16> {
        self.line.clear();
        self.stream.read_line(&mut self.line).await?;
        let status: u16 = self
            .line
            .get(9..12)
            .and_then(|s| s.parse().ok())
            .context("a malformed status line")?;
        let mut length = None;
        loop {
            self.line.clear();
            if self.stream.read_line(&mut self.line).await? == 0 {
                bail!("the connection closed inside a response head");
            }
            let header = self.line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = Some(value.trim().parse::<usize>()?);
            }
        }
        let length = length.context("an answer without Content-Length")?;
        self.body.resize(length, 0);
        self.stream.read_exact(&mut self.body).await?;
        Ok(status)
    }
}

/// `clients` connections GET random full level-0 hash tiles of a tree of
/// `tree_size` from `addr` for `seconds`, `pipeline` requests at a time on
/// each; prints tiles per second.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn tiles_bench(
    addr: SocketAddr,
    tree_size: u64,
    clients: usize,
    pipeline: usize,
    seconds: u64,
    fill_seconds: f64,
    json_output: bool,
) -> Result<()> {
    let full_tiles = tree_size / 256;
    if full_tiles == 0 {
        bail!("the log has no full tile: fill it with --log-size");
    }
    let served = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + Duration::from_secs(seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        let served = served.clone();
        tasks.spawn(async move {
            let mut connection = Connection::open(addr).await?;
            let mut x = (c as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let mut paths = Vec::with_capacity(pipeline);
            while Instant::now() < deadline {
                paths.clear();
                for _ in 0..pipeline {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let tile = bftlog_spec::tiles::Tile::full(
                        bftlog_spec::tiles::TileKind::Hashes { level: 0 },
                        x % full_tiles,
                    );
                    paths.push(format!("/{}", tile.path()));
                }
                connection.send(&paths).await?;
                for path in &paths {
                    let status = connection.receive().await?;
                    if status != 200 || connection.body.len() != bftlog_spec::tiles::FULL_TILE_BYTES
                    {
                        bail!("{path}: status {status}, {} bytes", connection.body.len());
                    }
                    served.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let total = served.load(Ordering::Relaxed);
    let report = json!({
        "mode": "tiles",
        "tree_size": tree_size,
        "fill_seconds": fill_seconds,
        "connections": clients,
        "pipelined_requests": pipeline,
        "seconds": elapsed,
        "tiles": total,
        "tiles_per_second": total as f64 / elapsed,
    });
    if json_output {
        println!("{report}");
    } else {
        println!(
            "tiles: {total} full level-0 hash tiles from one replica of a {tree_size}-entry log in {elapsed:.1} s = {:.0} tiles/s ({clients} keep-alive connections, {pipeline} request(s) in flight on each; filling took {fill_seconds:.0} s)",
            total as f64 / elapsed
        );
    }
    Ok(())
}

/// Watches a published checkpoint file: every change of its size, with
/// when it was seen (polled every millisecond).
pub(crate) fn watch_published(
    checkpoint: std::path::PathBuf,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<Vec<(Instant, u64)>> {
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut last = 0;
        while !stop.load(Ordering::Relaxed) {
            if let Ok(text) = std::fs::read_to_string(&checkpoint)
                && let Some(size) = text.lines().nth(1).and_then(|l| l.parse::<u64>().ok())
                && size > last
            {
                last = size;
                seen.push((Instant::now(), size));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        seen
    })
}

/// For each append (when its receipts came, the largest index they
/// hold), how long until a published checkpoint covered it; appends never
/// covered are counted apart. Returns (sorted latencies, uncovered).
pub(crate) fn publish_latencies(
    receipts: &[(Instant, u64)],
    published: &[(Instant, u64)],
) -> (Vec<Duration>, usize) {
    let mut latencies = Vec::with_capacity(receipts.len());
    let mut uncovered = 0;
    for &(at, index) in receipts {
        // The first publication covering `index`: sizes only grow.
        let first = published.partition_point(|&(_, size)| size <= index);
        match published.get(first) {
            Some(&(when, _)) => latencies.push(when.saturating_duration_since(at)),
            None => uncovered += 1,
        }
    }
    latencies.sort();
    (latencies, uncovered)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_receipt_waits_for_the_first_checkpoint_covering_it() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let published = [(ms(100), 10), (ms(250), 30)];
        let receipts = [
            (ms(50), 9),
            (ms(60), 10),
            (ms(120), 29),
            (ms(300), 25),
            (ms(90), 30),
        ];
        let (latencies, uncovered) = publish_latencies(&receipts, &published);
        // Index 9 is in size 10 (published at 100): 50 ms. Index 10 needs
        // size 30: 190 ms. 29: 130 ms. 25, received after size 30 was
        // already out: 0. 30: never.
        assert_eq!(
            latencies,
            [0, 50, 130, 190].map(Duration::from_millis).to_vec()
        );
        assert_eq!(uncovered, 1);
    }
}
