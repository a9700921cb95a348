//! The C2SP tlog-tiles read path of in-process replicas: the checkpoint,
//! hash tiles and entry bundles over HTTP agree with the quorum
//! checkpoint and with each other across replicas; bad paths get 400,
//! paths beyond the tree 404.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bftlog_server::admission::Quota;
use bftlog_server::client::{Client, ClientOptions};
use bftlog_server::config::{Cluster, PublishTarget, ReplicaConfig, init_cluster};
use bftlog_server::node::Node;
use bftlog_spec::merkle::{self, Hash};
use bftlog_spec::tiles::{self, Tile, TileKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[path = "support/go.rs"]
mod go;
#[path = "support/ports.rs"]
mod ports;

#[path = "../src/test_dir.rs"]
mod test_dir;

/// One HTTP/1.1 request on a fresh connection: (status, headers, body).
async fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, String, Vec<u8>) {
    http_with(addr, method, path, "").await
}

/// [`http`] with extra header lines (each ending in `\r\n`).
async fn http_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &str,
) -> (u16, String, Vec<u8>) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request =
        format!("{method} {path} HTTP/1.1\r\nHost: tiles\r\nConnection: close\r\n{headers}\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let status = head[9..12].parse().unwrap();
    (status, head.to_ascii_lowercase(), raw[split + 4..].to_vec())
}

async fn get_ok(addr: SocketAddr, path: &str) -> Vec<u8> {
    let (status, head, body) = http(addr, "GET", path).await;
    assert_eq!(status, 200, "{path}: {head}");
    body
}

/// A four-replica cluster's files in a fresh directory.
fn new_cluster(tag: &str) -> (test_dir::TestDir, Cluster) {
    let dir = test_dir::TestDir::new(&format!("tiles-{tag}-{}", std::process::id()));
    let cluster = init_cluster(
        &dir,
        "test.example/log",
        4,
        [127, 0, 0, 1].into(),
        ports::free_ports(4),
    )
    .unwrap();
    (dir, cluster)
}

fn start_config(dir: &Path, i: usize) -> ReplicaConfig {
    let mut cfg = ReplicaConfig::load(&dir.join(format!("replica-{i}.toml"))).unwrap();
    cfg.consensus.round_timeout_ms = 300;
    cfg.tiles_listen = Some(([127, 0, 0, 1], 0).into());
    // The test appends from one address faster than open mode's default
    // quota allows.
    cfg.admission.quota = Quota::UNLIMITED;
    cfg
}

/// Builds the Go tiles reader (`tests/go/tiles_reader.go`, Go's
/// golang.org/x/mod/sumdb/tlog), or says why it cannot: it needs `go`
/// and Debian's golang-golang-x-mod-dev (.ci/run installs both); without
/// them the test fails under CI=true and skips the Go part elsewhere.
fn go_tiles_reader() -> Option<PathBuf> {
    go::go_build("tests/go/tiles_reader.go", "tiles_reader", "sumdb/tlog")
}

/// Go's TileHashReader reads the tiles at `addr` for a tree of `size`
/// with `root`: the tree hash, each record's proof and the tree proof
/// from `old` must check.
fn go_reads(
    binary: &Path,
    addr: SocketAddr,
    size: u64,
    root: Hash,
    old: u64,
    records: &[(u64, Hash)],
) {
    let mut command = Command::new(binary);
    command
        .arg(format!("http://{addr}"))
        .arg(size.to_string())
        .arg(root.to_base64())
        .arg(old.to_string());
    for (index, leaf) in records {
        command.arg(format!("{index}:{}", leaf.to_base64()));
    }
    let out = command.output().unwrap();
    assert!(
        out.status.success() && out.stdout == b"ok\n",
        "Go's tlog on {size} leaves: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_serve_identical_tiles_that_prove_the_quorum_checkpoint() {
    let (dir, cluster) = new_cluster("serve");
    let mut nodes = Vec::new();
    for i in 0..4 {
        nodes.push(Node::start(start_config(&dir, i)).await.unwrap());
    }
    let endpoints: Vec<SocketAddr> = nodes.iter().map(|n| n.tiles_addr().unwrap()).collect();
    // Nothing committed yet: no checkpoint.
    assert_eq!(http(endpoints[0], "GET", "/checkpoint").await.0, 404);

    // 300 entries: one full level-0 tile, a partial one of 44, and a
    // partial level-1 tile of width 1.
    let client = Client::new(cluster.clone(), ClientOptions::default()).unwrap();
    let entries: Vec<Vec<u8>> = (0..300)
        .map(|i| format!("tiled {i}").into_bytes())
        .collect();
    client.append(&entries[..200]).await.unwrap();
    client.append(&entries[200..]).await.unwrap();

    // Each endpoint's checkpoint verifies under the policy; wait for each
    // to reach 300.
    let policy = cluster.policy();
    let mut notes = Vec::new();
    for &addr in &endpoints {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (status, head, body) = http(addr, "GET", "/checkpoint").await;
            if status == 200 {
                assert!(
                    head.contains("content-type: text/plain; charset=utf-8"),
                    "{head}"
                );
                assert!(head.contains("cache-control: public, max-age=2"), "{head}");
                let verified = policy.verify_checkpoint_bytes(&body).unwrap();
                if verified.checkpoint().size >= 300 {
                    notes.push(verified);
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "replica at {addr} did not reach 300"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let size = notes[0].checkpoint().size;
    assert_eq!(size, 300, "only these entries were appended");
    let root = notes[0].checkpoint().root;

    // Every tile a checkpoint of 300 needs, byte-identical on every
    // replica, with immutable cache headers.
    let needed = [
        "/tile/0/000",
        "/tile/0/001.p/44",
        "/tile/1/000.p/1",
        "/tile/entries/000",
        "/tile/entries/001.p/44",
    ];
    let mut bodies = Vec::new();
    for path in needed {
        let (status, head, body) = http(endpoints[0], "GET", path).await;
        assert_eq!(status, 200, "{path}");
        assert!(
            head.contains("content-type: application/octet-stream"),
            "{head}"
        );
        assert!(
            head.contains("cache-control: public, max-age=31536000, immutable"),
            "{head}"
        );
        for &other in &endpoints[1..] {
            assert_eq!(get_ok(other, path).await, body, "{path} differs");
        }
        bodies.push(body);
    }
    // The level-0 tiles are the entries' leaf hashes; the bundles hold
    // the entries; the level-1 tile is the hash of the first 256 leaves;
    // together they give the checkpoint's root.
    let mut leaves: Vec<Hash> = Vec::new();
    for (tile, bundle, width) in [(&bodies[0], &bodies[3], 256), (&bodies[1], &bodies[4], 44)] {
        assert_eq!(tile.len(), 32 * width);
        let got = tiles::parse_bundle(bundle, width).unwrap();
        for (i, entry) in got.iter().enumerate() {
            let leaf = merkle::leaf_hash(entry);
            assert_eq!(&tile[32 * i..32 * (i + 1)], &leaf.0);
            leaves.push(leaf);
        }
    }
    let by_index: Vec<Vec<u8>> = (0..300)
        .map(|i| format!("tiled {i}").into_bytes())
        .collect();
    for (i, leaf) in leaves.iter().enumerate() {
        // Indexes follow commit order; every appended entry is there once.
        assert!(
            by_index.iter().any(|e| merkle::leaf_hash(e) == *leaf),
            "leaf {i}"
        );
    }
    assert_eq!(
        bodies[2],
        merkle::root_from_leaf_hashes(&leaves[..256]).0.to_vec()
    );
    assert_eq!(merkle::root_from_leaf_hashes(&leaves), root);

    // Bundles are gzip-compressed for clients that accept it; hash tiles
    // (random bytes) never are.
    let (status, head, gzipped) = http_with(
        endpoints[0],
        "GET",
        "/tile/entries/000",
        "Accept-Encoding: gzip, identity\r\n",
    )
    .await;
    assert_eq!(status, 200);
    assert!(head.contains("content-encoding: gzip"), "{head}");
    assert!(head.contains("vary: accept-encoding"), "{head}");
    let mut unzipped = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(gzipped.as_slice()),
        &mut unzipped,
    )
    .unwrap();
    assert_eq!(unzipped, bodies[3]);
    assert!(
        gzipped.len() < bodies[3].len() / 2,
        "entries of text compress"
    );
    let (_, head, _) = http(endpoints[0], "GET", "/tile/entries/000").await;
    assert!(!head.contains("content-encoding"), "{head}");
    let (_, head, _) = http_with(
        endpoints[0],
        "GET",
        "/tile/0/000",
        "Accept-Encoding: gzip\r\n",
    )
    .await;
    assert!(!head.contains("content-encoding"), "{head}");

    // Beyond the tree: 404; malformed: 400; other paths 404; HEAD has
    // the headers and no body; writes are refused.
    for path in [
        "/tile/0/001",
        "/tile/0/001.p/45",
        "/tile/1/000",
        "/tile/entries/002.p/1",
    ] {
        assert_eq!(http(endpoints[0], "GET", path).await.0, 404, "{path}");
    }
    for path in [
        "/tile/0/1",
        "/tile/00/000",
        "/tile/0/000.p/0",
        "/tile/0/000.p/256",
        "/tile/x",
    ] {
        assert_eq!(http(endpoints[0], "GET", path).await.0, 400, "{path}");
    }
    assert_eq!(http(endpoints[0], "GET", "/").await.0, 404);
    let (status, head, body) = http(endpoints[0], "HEAD", "/tile/0/000").await;
    assert_eq!(status, 200);
    assert!(head.contains("content-length: 8192"), "{head}");
    assert!(body.is_empty());
    assert_eq!(http(endpoints[0], "POST", "/checkpoint").await.0, 405);
    assert!(Tile::parse_path("/tile/0/000").unwrap().kind == TileKind::Hashes { level: 0 });

    // Go's reference tiles client reads the same tiles: at 300 leaves,
    // and at 65,836, where a level-1 tile is full and level 2 appears.
    if let Some(go) = go_tiles_reader() {
        let records: Vec<(u64, Hash)> = [0u64, 255, 256, 299]
            .iter()
            .map(|&i| (i, leaves[i as usize]))
            .collect();
        go_reads(&go, endpoints[1], 300, root, 1, &records);
        for chunk in 0..16u64 {
            let more: Vec<Vec<u8>> = (0..4096)
                .map(|i| format!("more {chunk} {i}").into_bytes())
                .collect();
            client.append(&more).await.unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        let big = loop {
            let (status, _, body) = http(endpoints[2], "GET", "/checkpoint").await;
            if status == 200 {
                let verified = policy.verify_checkpoint_bytes(&body).unwrap();
                if verified.checkpoint().size == 65_836 {
                    break verified;
                }
            }
            assert!(Instant::now() < deadline, "65,836 not reached");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        go_reads(
            &go,
            endpoints[2],
            65_836,
            big.checkpoint().root,
            300,
            &records,
        );
    }

    for node in nodes {
        node.shutdown().await.unwrap();
    }
}

/// Two replicas publish to one directory: every tile a checkpoint needs is
/// there before the checkpoint, the files equal what the replicas serve,
/// and the published checkpoint only grows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_publish_tiles_then_the_checkpoint_to_a_directory() {
    let (dir, cluster) = new_cluster("publish");
    let published = dir.join("published");
    let mut nodes = Vec::new();
    for i in 0..4 {
        let mut cfg = start_config(&dir, i);
        if i < 2 {
            cfg.tiles_publish = Some(PublishTarget::Directory(published.clone()));
        }
        nodes.push(Node::start(cfg).await.unwrap());
    }
    let client = Client::new(cluster.clone(), ClientOptions::default()).unwrap();
    let policy = cluster.policy();
    let mut last_size = 0;
    for (round, count) in [(0, 3usize), (1, 297), (2, 700)] {
        let entries: Vec<Vec<u8>> = (0..count)
            .map(|i| format!("published {round} {i}").into_bytes())
            .collect();
        client.append(&entries).await.unwrap();
        let target = last_size + count as u64;
        let deadline = Instant::now() + Duration::from_secs(20);
        let size = loop {
            // Whenever a checkpoint is there, so is every tile it needs.
            if let Ok(bytes) = std::fs::read(published.join("checkpoint")) {
                let verified = policy.verify_checkpoint_bytes(&bytes).unwrap();
                let size = verified.checkpoint().size;
                assert!(size >= last_size, "the published checkpoint went back");
                for tile in needed_tiles(size) {
                    let file = published.join(tile.path());
                    assert!(file.is_file(), "{tile} missing at size {size}");
                }
                if size >= target {
                    break size;
                }
            }
            assert!(Instant::now() < deadline, "size {target} not published");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        last_size = size;
    }
    // The files are what the replicas serve.
    let endpoint = nodes[3].tiles_addr().unwrap();
    for tile in needed_tiles(last_size) {
        let file = std::fs::read(published.join(tile.path())).unwrap();
        assert_eq!(
            get_ok(endpoint, &format!("/{}", tile.path())).await,
            file,
            "{tile}"
        );
    }
    for node in nodes {
        node.shutdown().await.unwrap();
    }
}

/// Every tile a tree of `size` leaves has, hash tiles and bundles, full
/// and partial.
fn needed_tiles(size: u64) -> Vec<Tile> {
    let mut out = Vec::new();
    let mut per_hash = 1u64;
    let mut level = 0u8;
    while size / per_hash > 0 {
        for index in 0..size / per_hash / 256 {
            out.push(Tile::full(TileKind::Hashes { level }, index));
            if level == 0 {
                out.push(Tile::full(TileKind::Entries, index));
            }
        }
        per_hash *= 256;
        level += 1;
    }
    for tile in tiles::partial_tiles(size) {
        if tile.level() == 0 {
            out.push(Tile {
                kind: TileKind::Entries,
                ..tile
            });
        }
        out.push(tile);
    }
    out
}
