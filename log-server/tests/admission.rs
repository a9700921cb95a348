//! Admission control end to end: real `bftlog serve` processes on
//! 127.0.0.1 in keys mode. A listed key appends, and over its quota gets
//! `QuotaExceeded`, which the client library waits out; an unlisted key
//! gets `Forbidden` while reads stay open; a key added to the submitters
//! file is admitted after SIGHUP, and a broken file leaves the list as it
//! was.

use std::time::{Duration, Instant};

use bftlog_server::admission::{AdmissionMode, Quota, submitters};
use bftlog_server::client::{Client, ClientError, ClientOptions};
use bftlog_server::config::{Cluster, SUBMITTERS_FILE, init_cluster_admitting};
use bftlog_spec::wire::{BoundedVec, ClientRequest, ClientResponse, Entry, ErrorCode};

#[path = "support/ports.rs"]
mod ports;

#[path = "support/replica_process.rs"]
mod replica_process;
use replica_process::{ReplicaProcess, serve};

#[path = "../src/test_dir.rs"]
mod test_dir;

const BIN: &str = env!("CARGO_BIN_EXE_bftlog");

/// A four-replica cluster made as `bftlog init --admission MODE` makes it.
fn new_cluster(tag: &str, mode: AdmissionMode) -> (test_dir::TestDir, Cluster) {
    let dir = test_dir::TestDir::new(&format!("admission-{tag}-{}", std::process::id()));
    let cluster = init_cluster_admitting(
        &dir,
        "test.example/log",
        4,
        [127, 0, 0, 1].into(),
        ports::free_ports(4),
        mode,
    )
    .unwrap();
    (dir, cluster)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn hangup(replicas: &[ReplicaProcess]) {
    for r in replicas {
        let status = std::process::Command::new("kill")
            .args(["-HUP", &r.0.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

fn with_key(cluster: &Cluster, key: &ed25519_dalek::SigningKey) -> Client {
    let options = ClientOptions {
        submitter_key: Some(key.clone()),
        ..ClientOptions::default()
    };
    Client::new(cluster.clone(), options).unwrap()
}

fn entries(tag: &str, count: usize) -> Vec<Vec<u8>> {
    (0..count)
        .map(|i| format!("{tag} {i}").into_bytes())
        .collect()
}

#[test]
fn keys_mode_admits_listed_keys_within_their_quotas() {
    let (dir, cluster) = new_cluster("keys", AdmissionMode::Keys);
    let file = dir.join(SUBMITTERS_FILE);
    // A slow submitter: 1,000 entries a second, a burst of one full append.
    let slow = ed25519_dalek::SigningKey::from_bytes(&[1; 32]);
    let slow_quota = Quota {
        entries_per_s: 1000,
        burst_entries: 4096,
        bytes_per_day: 1 << 30,
    };
    submitters::append_row(&file, "slow", &slow.verifying_key(), Some(slow_quota)).unwrap();
    let replicas: Vec<ReplicaProcess> = (0..4).map(|i| serve(BIN, &dir, i)).collect();
    let runtime = runtime();
    runtime.block_on(async {
        let client = with_key(&cluster, &slow);
        let deadline = Instant::now() + Duration::from_secs(30);
        while client.append(&entries("warm up", 1)).await.is_err() {
            assert!(Instant::now() < deadline, "the cluster did not start");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // The burst, less the warm-up entry, in one append: admitted.
        let receipts = client.append(&entries("burst", 4095)).await.unwrap();
        assert_eq!(receipts.len(), 4095);
        // Over quota at a replica the burst was charged at: a typed answer
        // with the wait, and nothing submitted.
        let request = ClientRequest::AppendMultiproof {
            entries: BoundedVec::new(vec![Entry::new(b"one too many".to_vec()).unwrap(); 1000])
                .unwrap(),
        };
        let mut refused = None;
        for replica in 0..4 {
            if let ClientResponse::Error {
                code: ErrorCode::QuotaExceeded { retry_after_ms },
                ..
            } = client.request(replica, &request).await.unwrap()
            {
                refused = Some(retry_after_ms);
            }
        }
        let retry_after_ms = refused.expect("some replica charged the burst");
        assert!((1..=1000).contains(&retry_after_ms), "{retry_after_ms}");
        // A full append now fits no replica's bucket (each was charged at
        // least the 1,000 just asked for): the client library waits as
        // asked, then the append goes in. (Without the wait it would
        // spend its rounds on refusals and fail.)
        let started = Instant::now();
        let receipts = client
            .append(&entries("after the wait", 4096))
            .await
            .unwrap();
        assert_eq!(receipts.len(), 4096);
        assert!(started.elapsed() >= Duration::from_millis(500));

        // An unlisted key may read but not append; the library does not
        // retry what every replica would refuse.
        let stranger = with_key(&cluster, &ed25519_dalek::SigningKey::from_bytes(&[2; 32]));
        let checkpoint = stranger.checkpoint().await.unwrap();
        assert!(checkpoint.checkpoint().size >= 5096);
        match stranger.append(&entries("stranger", 1)).await {
            Err(ClientError::Server {
                code: ErrorCode::Forbidden,
                ..
            }) => {}
            other => panic!("expected Forbidden, got {other:?}"),
        }
        // An anonymous client (a fresh key) is a stranger too.
        let anonymous = Client::new(cluster.clone(), ClientOptions::default()).unwrap();
        assert!(anonymous.append(&entries("anonymous", 1)).await.is_err());

        // Listed, then SIGHUP: admitted (each replica reloads on its own).
        let late = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
        submitters::append_row(&file, "late", &late.verifying_key(), None).unwrap();
        hangup(&replicas);
        let late_client = with_key(&cluster, &late);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match late_client.append(&entries("late", 1)).await {
                Ok(_) => break,
                Err(e) => {
                    assert!(Instant::now() < deadline, "not admitted after SIGHUP: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        // A broken file is refused and the list stays as it was.
        std::fs::write(&file, "[[submitter]]\nkey = 7\n").unwrap();
        hangup(&replicas);
        tokio::time::sleep(Duration::from_millis(500)).await;
        late_client.append(&entries("late again", 1)).await.unwrap();
    });
    // Each replica logged the reload it refused.
    for i in 0..4 {
        let log = std::fs::read_to_string(dir.join(format!("replica-{i}.log"))).unwrap();
        assert!(
            log.contains("admission: reload failed"),
            "replica {i}:\n{log}"
        );
    }
    drop(replicas);
}

/// Open mode charges the source address: two clients with different keys
/// on 127.0.0.1 share one quota.
#[test]
fn open_mode_charges_the_source_address() {
    let (dir, cluster) = new_cluster("open", AdmissionMode::Open);
    for i in 0..4 {
        let path = dir.join(format!("replica-{i}.toml"));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("mode = \"open\""), "{text}");
        let slower = text.replace("burst_entries = 8192", "burst_entries = 4096");
        assert_ne!(slower, text);
        std::fs::write(&path, slower).unwrap();
    }
    let _replicas: Vec<ReplicaProcess> = (0..4).map(|i| serve(BIN, &dir, i)).collect();
    let runtime = runtime();
    runtime.block_on(async {
        let first = with_key(&cluster, &ed25519_dalek::SigningKey::from_bytes(&[1; 32]));
        let second = with_key(&cluster, &ed25519_dalek::SigningKey::from_bytes(&[2; 32]));
        // Up: a first entry, charged at replica 3 only.
        let warm_up = ClientRequest::AppendMultiproof {
            entries: BoundedVec::new(vec![Entry::new(b"warm up".to_vec()).unwrap()]).unwrap(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !matches!(
            first.request(3, &warm_up).await,
            Ok(ClientResponse::ReceiptMultiproof { .. })
        ) {
            assert!(Instant::now() < deadline, "the cluster did not start");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // The first client spends 127.0.0.1's burst at replica 0.
        let full = |tag: &str| ClientRequest::AppendMultiproof {
            entries: BoundedVec::new(
                entries(tag, 4096)
                    .into_iter()
                    .map(|e| Entry::new(e).unwrap())
                    .collect(),
            )
            .unwrap(),
        };
        match first.request(0, &full("first")).await.unwrap() {
            ClientResponse::ReceiptMultiproof { indexes, .. } => assert_eq!(indexes.len(), 4096),
            other => panic!("expected receipts, got {other:?}"),
        }
        // The second client, another key from the same address, is over
        // that address's quota there, and not at another replica.
        match second.request(0, &full("second")).await.unwrap() {
            ClientResponse::Error {
                code: ErrorCode::QuotaExceeded { retry_after_ms },
                ..
            } => assert!(retry_after_ms > 3000, "{retry_after_ms}"),
            other => panic!("expected QuotaExceeded, got {other:?}"),
        }
        assert!(matches!(
            second.request(1, &full("second")).await.unwrap(),
            ClientResponse::ReceiptMultiproof { .. }
        ));
    });
}
