//! In-process clusters of real replicas (redb + QUIC on 127.0.0.1).

use std::path::{Path, PathBuf};
use std::time::Duration;

use bftlog_server::client::{Client, ClientOptions};
use bftlog_server::config::{ReplicaConfig, init_cluster};
use bftlog_server::node::Node;
use bftlog_spec::merkle;
use bftlog_spec::proof::TlogProof;
use bftlog_spec::wire::{self, ClientRequest, ClientResponse, ErrorCode};

fn tempdir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bftlog-cluster-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn free_port_base() -> u16 {
    // Four consecutive free UDP ports on 127.0.0.1.
    loop {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let base = socket.local_addr().unwrap().port();
        if base > 60000 {
            continue;
        }
        drop(socket);
        if (0..4).all(|i| std::net::UdpSocket::bind(("127.0.0.1", base + i)).is_ok()) {
            return base;
        }
    }
}

fn fast(dir: &Path, i: usize) -> ReplicaConfig {
    let mut cfg = ReplicaConfig::load(&dir.join(format!("replica-{i}.toml"))).unwrap();
    cfg.consensus.round_timeout_ms = 300;
    cfg
}

async fn start(dir: &Path, n: usize) -> Vec<Option<Node>> {
    let mut nodes = Vec::new();
    for i in 0..n {
        nodes.push(Some(Node::start(fast(dir, i)).await.unwrap()));
    }
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_commit_with_verifiable_receipts_and_survive_a_restart() {
    let dir = tempdir("basic");
    let cluster = init_cluster(
        &dir,
        "test.example/log",
        4,
        [127, 0, 0, 1].into(),
        free_port_base(),
    )
    .unwrap();
    let mut nodes = start(&dir, 4).await;
    let client = Client::new(cluster.clone(), ClientOptions::default()).unwrap();
    let policy = cluster.policy();

    let entries: Vec<Vec<u8>> = (0..20)
        .map(|i| format!("record {i}").into_bytes())
        .collect();
    let receipts = client.append(&entries).await.unwrap();
    assert_eq!(receipts.len(), 20);
    let mut indexes: Vec<u64> = receipts.iter().map(|r| r.index).collect();
    for (r, e) in receipts.iter().zip(&entries) {
        let proof = TlogProof::parse(r.proof.as_bytes()).unwrap();
        proof.verify_entry(&policy, e).unwrap();
    }
    indexes.sort();
    indexes.dedup();
    assert_eq!(indexes.len(), 20, "distinct indexes");

    // Appending the same entry again returns its first index.
    let again = client.append(&entries[3..4]).await.unwrap();
    assert_eq!(again[0].index, receipts[3].index);

    // Restart one replica: the log continues and it catches up.
    nodes[2].take().unwrap().shutdown().await.unwrap();
    let more: Vec<Vec<u8>> = (0..5)
        .map(|i| format!("while down {i}").into_bytes())
        .collect();
    client.append(&more).await.unwrap();
    nodes[2] = Some(Node::start(fast(&dir, 2)).await.unwrap());
    let later = client.append(&[b"after restart".to_vec()]).await.unwrap();
    assert_eq!(later[0].index, 25);

    // Every replica serves a checkpoint that covers the log, eventually.
    let checkpoint = client.checkpoint().await.unwrap();
    assert!(checkpoint.checkpoint().size >= 20);
    let mut caught_up = false;
    for _ in 0..100 {
        if let ClientResponse::Checkpoint { note } = client
            .request(2, &ClientRequest::GetCheckpoint)
            .await
            .unwrap()
        {
            let c = policy.verify_checkpoint_bytes(&note).unwrap();
            if c.checkpoint().size >= 26 {
                caught_up = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(caught_up, "the restarted replica caught up");

    // Proofs and entries.
    let leaf = merkle::leaf_hash(b"record 7");
    let (index, _) = client
        .prove_inclusion(leaf, None, &checkpoint)
        .await
        .unwrap();
    assert_eq!(index, receipts[7].index);
    let got = client.entries(index, 1).await.unwrap();
    assert_eq!(got, vec![b"record 7".to_vec()]);

    // Malformed frames get typed errors; the connection keeps working.
    let garbage = wire::frame(&[0xff, 0x00, 0x13]);
    match client.exchange_raw(0, garbage).await.unwrap() {
        ClientResponse::Error { code, .. } => assert_eq!(code, ErrorCode::Malformed),
        other => panic!("{other:?}"),
    }
    let non_canonical = wire::frame(&[0x18, 0x01]); // 1 in long form
    match client.exchange_raw(0, non_canonical).await.unwrap() {
        ClientResponse::Error { code, .. } => assert_eq!(code, ErrorCode::Malformed),
        other => panic!("{other:?}"),
    }
    match client.exchange_raw(0, vec![0, 0]).await.unwrap() {
        ClientResponse::Error { code, .. } => assert_eq!(code, ErrorCode::Malformed),
        other => panic!("{other:?}"),
    }
    let mut truncated_body = 10u32.to_be_bytes().to_vec();
    truncated_body.extend_from_slice(&[0xa1, 0x00]);
    match client.exchange_raw(0, truncated_body).await.unwrap() {
        ClientResponse::Error { code, .. } => assert_eq!(code, ErrorCode::Malformed),
        other => panic!("{other:?}"),
    }
    let mut oversized = (64u32 << 20).to_be_bytes().to_vec();
    oversized.extend_from_slice(&[0; 16]);
    match client.exchange_raw(0, oversized).await.unwrap() {
        ClientResponse::Error { code, .. } => assert_eq!(code, ErrorCode::TooLarge),
        other => panic!("{other:?}"),
    }
    match client
        .request(
            0,
            &ClientRequest::GetEntries {
                start: 1 << 40,
                count: 1,
            },
        )
        .await
        .unwrap()
    {
        ClientResponse::Error { code, .. } => assert_eq!(code, ErrorCode::NotFound),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        client
            .request(0, &ClientRequest::GetCheckpoint)
            .await
            .unwrap(),
        ClientResponse::Checkpoint { .. }
    ));

    // A peer connection with a key that is not in the cluster is closed.
    let stranger = ed25519_dalek::SigningKey::from_bytes(&[0x5a; 32]);
    let config = bftlog_server::net::client_config(
        &stranger,
        &cluster.public_keys(),
        bftlog_server::net::ALPN_PEER,
        &bftlog_server::net::Limits::default(),
    )
    .unwrap();
    let endpoint = bftlog_server::net::client_endpoint(cluster.addresses[0]).unwrap();
    let connection = endpoint
        .connect_with(
            config,
            cluster.addresses[0],
            bftlog_server::net::SERVER_NAME,
        )
        .unwrap()
        .await
        .unwrap();
    match tokio::time::timeout(Duration::from_secs(10), connection.closed()).await {
        Ok(quinn::ConnectionError::ApplicationClosed(close)) => {
            assert_eq!(&close.reason[..], b"unknown replica key");
        }
        other => panic!("expected the replica to close the connection, got {other:?}"),
    }
    assert_eq!(
        nodes[0]
            .as_ref()
            .unwrap()
            .metrics()
            .peers_rejected
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );

    for node in nodes.into_iter().flatten() {
        node.shutdown().await.unwrap();
    }
}
