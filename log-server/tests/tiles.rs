//! The C2SP tlog-tiles read path of in-process replicas: the checkpoint,
//! hash tiles and entry bundles over HTTP agree with the quorum
//! checkpoint and with each other across replicas; bad paths get 400,
//! paths beyond the tree 404.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use bftlog_server::client::{Client, ClientOptions};
use bftlog_server::config::{ReplicaConfig, init_cluster};
use bftlog_server::node::Node;
use bftlog_spec::merkle::{self, Hash};
use bftlog_spec::tiles::{self, Tile, TileKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[path = "support/ports.rs"]
mod ports;

#[path = "../src/test_dir.rs"]
mod test_dir;

/// One HTTP/1.1 request on a fresh connection: (status, headers, body).
async fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, String, Vec<u8>) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("{method} {path} HTTP/1.1\r\nHost: tiles\r\nConnection: close\r\n\r\n");
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

fn start_config(dir: &Path, i: usize) -> ReplicaConfig {
    let mut cfg = ReplicaConfig::load(&dir.join(format!("replica-{i}.toml"))).unwrap();
    cfg.consensus.round_timeout_ms = 300;
    cfg.tiles_listen = Some(([127, 0, 0, 1], 0).into());
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_serve_identical_tiles_that_prove_the_quorum_checkpoint() {
    let dir = test_dir::TestDir::new(&format!("tiles-{}", std::process::id()));
    let cluster = init_cluster(
        &dir,
        "test.example/log",
        4,
        [127, 0, 0, 1].into(),
        ports::free_ports(4),
    )
    .unwrap();
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

    for node in nodes {
        node.shutdown().await.unwrap();
    }
}
