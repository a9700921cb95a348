//! Publishing tiles to S3-compatible object storage: moto's standalone S3
//! server (`pip install 'moto[server]'`; `.ci/run` installs it), started
//! by the test on 127.0.0.1. Two replicas publish to one bucket prefix;
//! the published checkpoint verifies, and the tiles a reader fetches from
//! the bucket equal what the replicas serve. Without moto the
//! test fails under CI=true and is skipped with a message elsewhere.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bftlog_server::admission::Quota;
use bftlog_server::client::{Client, ClientOptions};
use bftlog_server::config::{PublishTarget, ReplicaConfig, init_cluster};
use bftlog_server::node::{Node, tiles_publish};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[path = "support/ports.rs"]
mod ports;

#[path = "../src/test_dir.rs"]
mod test_dir;

struct Moto(Child);

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One HTTP/1.1 request on a fresh connection: (status, body).
async fn http(addr: SocketAddr, method: &str, path: &str) -> Option<(u16, Vec<u8>)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.ok()?;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let status = head.get(9..12)?.parse().ok()?;
    let mut body = raw[split + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        body = unchunk(&body);
    }
    Some((status, body))
}

fn unchunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = raw.windows(2).position(|w| w == b"\r\n").unwrap();
        let size = usize::from_str_radix(std::str::from_utf8(&raw[..line_end]).unwrap().trim(), 16)
            .unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&raw[line_end + 2..line_end + 2 + size]);
        raw = &raw[line_end + 2 + size + 2..];
    }
}

fn moto_available() -> bool {
    let found = Command::new("python3")
        .args(["-c", "import moto.server"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "moto's server is not installed under CI: pip install 'moto[server]'"
        );
        eprintln!("SKIPPED: moto's server not found; pip install 'moto[server]'");
    }
    found
}

#[test]
fn replicas_publish_tiles_to_an_s3_bucket() {
    if !moto_available() {
        return;
    }
    let port = ports::free_ports(1);
    let dir = test_dir::TestDir::new(&format!("tiles-s3-{}", std::process::id()));
    let log = std::fs::File::create(dir.join("moto.log")).unwrap();
    let _moto = Moto(
        Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    // The replicas take their S3 credentials from the environment, as an
    // operator's would; moto accepts any.
    // SAFETY: this test binary has this one test, and sets the variables
    // before it starts any thread.
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", "bftlog-test");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "bftlog-test");
    }
    let s3: SocketAddr = ([127, 0, 0, 1], port).into();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some((200, _)) = http(s3, "PUT", "/bftlog-tiles").await {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "moto did not start (see moto.log)"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
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
            nodes.push(Node::start(config(&dir, i, port)).await.unwrap());
        }
        let client = Client::new(cluster.clone(), ClientOptions::default()).unwrap();
        let entries: Vec<Vec<u8>> = (0..300)
            .map(|i| format!("to s3 {i}").into_bytes())
            .collect();
        client.append(&entries).await.unwrap();
        // A reader with the bucket's credentials: moto, like S3, keeps
        // objects private unless the bucket's policy says otherwise.
        let (bucket, prefix) = tiles_publish::open(&target(port)).unwrap();
        let read = |path: &str| {
            let mut key = prefix.clone();
            for part in path.split('/') {
                key = key.child(part);
            }
            let bucket = bucket.clone();
            async move { bucket.get(&key).await.ok()?.bytes().await.ok() }
        };
        let policy = cluster.policy();
        let deadline = Instant::now() + Duration::from_secs(30);
        let size = loop {
            if let Some(body) = read("checkpoint").await {
                let verified = policy.verify_checkpoint_bytes(&body).unwrap();
                if verified.checkpoint().size == 300 {
                    break 300;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the checkpoint of 300 was not published"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let endpoint = nodes[3].tiles_addr().unwrap();
        for path in [
            "tile/0/000",
            "tile/0/001.p/44",
            "tile/1/000.p/1",
            "tile/entries/000",
            "tile/entries/001.p/44",
        ] {
            let published = read(path)
                .await
                .unwrap_or_else(|| panic!("{path} missing at size {size}"));
            let (status, served) = http(endpoint, "GET", &format!("/{path}")).await.unwrap();
            assert_eq!(status, 200);
            assert_eq!(published.as_ref(), served.as_slice(), "{path}");
        }
        for node in nodes {
            node.shutdown().await.unwrap();
        }
    });
}

fn config(dir: &Path, i: usize, s3_port: u16) -> ReplicaConfig {
    let mut cfg = ReplicaConfig::load(&dir.join(format!("replica-{i}.toml"))).unwrap();
    cfg.consensus.round_timeout_ms = 300;
    cfg.tiles_listen = Some(([127, 0, 0, 1], 0).into());
    cfg.admission.quota = Quota::UNLIMITED;
    if i < 2 {
        cfg.tiles_publish = Some(target(s3_port));
    }
    cfg
}

fn target(s3_port: u16) -> PublishTarget {
    PublishTarget::S3 {
        bucket: "bftlog-tiles".into(),
        prefix: "logs/test".into(),
        endpoint: Some(format!("http://127.0.0.1:{s3_port}")),
        region: "us-east-1".into(),
        allow_http: true,
    }
}
