//! Client-side attacks on one in-process replica (n = 1, QUIC on
//! 127.0.0.1), each with the limit that stops it set low: too many
//! connections from one address, a half-sent giant frame, unidirectional
//! streams, a client that never reads its answer, a silent connection.
//! After each, a well-behaved client is still served.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bftlog_server::client::{Client, ClientOptions};
use bftlog_server::config::{Cluster, ReplicaConfig, init_cluster};
use bftlog_server::net;
use bftlog_server::node::Node;
use bftlog_spec::wire::{self, ClientRequest, ClientResponse, ErrorCode};

#[path = "support/ports.rs"]
mod ports;

#[path = "../src/test_dir.rs"]
mod test_dir;

/// A replica with low client limits, and its cluster.
async fn replica(tag: &str) -> (test_dir::TestDir, Cluster, Node) {
    let dir = test_dir::TestDir::new(&format!("hostile-{tag}-{}", std::process::id()));
    let cluster = init_cluster(
        &dir,
        "test.example/log",
        1,
        [127, 0, 0, 1].into(),
        ports::free_ports(1),
    )
    .unwrap();
    let mut cfg = ReplicaConfig::load(&dir.join("replica-0.toml")).unwrap();
    cfg.consensus.round_timeout_ms = 300;
    cfg.limits.max_connections_per_ip = 4;
    cfg.limits.retry_above_connections = 2;
    cfg.limits.request_read_timeout_ms = 500;
    cfg.limits.response_write_timeout_ms = 500;
    cfg.limits.max_inflight_request_bytes = wire::MAX_MESSAGE_BYTES;
    cfg.limits.idle_timeout_ms = 1000;
    let node = Node::start(cfg).await.unwrap();
    (dir, cluster, node)
}

/// A client connection with its own transport settings.
async fn connect(
    cluster: &Cluster,
    transport: quinn::TransportConfig,
) -> Result<quinn::Connection, quinn::ConnectionError> {
    let key = ed25519_dalek::SigningKey::generate(&mut bftlog_server::system_rng());
    let mut config = net::client_config(
        &key,
        &cluster.public_keys(),
        net::ALPN_CLIENT,
        &net::Limits::default(),
    )
    .unwrap();
    config.transport_config(Arc::new(transport));
    let endpoint = net::client_endpoint(cluster.addresses[0]).unwrap();
    endpoint
        .connect_with(config, cluster.addresses[0], net::SERVER_NAME)
        .unwrap()
        .await
}

/// One request on a fresh stream of `connection`, and its answer.
async fn ask(connection: &quinn::Connection, request: &ClientRequest) -> ClientResponse {
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    send.write_all(&wire::encode_frame(request)).await.unwrap();
    send.finish().unwrap();
    let frame = net::read_frame(&mut recv, wire::MAX_MESSAGE_BYTES)
        .await
        .unwrap()
        .unwrap();
    wire::decode(&frame).unwrap()
}

/// The well-behaved client's check: an append that commits.
async fn still_served(cluster: &Cluster) {
    let client = Client::new(cluster.clone(), ClientOptions::default()).unwrap();
    let receipts = tokio::time::timeout(
        Duration::from_secs(20),
        client.append(&[format!("still served {:?}", std::time::Instant::now()).into_bytes()]),
    )
    .await
    .expect("the append is answered")
    .unwrap();
    assert_eq!(receipts.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_from_one_address_are_capped_and_retry_is_transparent() {
    let (_dir, cluster, node) = replica("connections").await;
    let mut open = Vec::new();
    for _ in 0..4 {
        open.push(
            connect(&cluster, quinn::TransportConfig::default())
                .await
                .unwrap(),
        );
    }
    // Above two, new connections were asked to prove their address.
    assert!(node.metrics().connections_retried.load(Ordering::Relaxed) >= 2);
    // The fifth from this address is refused.
    assert!(
        connect(&cluster, quinn::TransportConfig::default())
            .await
            .is_err()
    );
    assert_eq!(
        node.metrics().connections_refused.load(Ordering::Relaxed),
        1
    );
    // One closes: its slot is free again.
    let first = open.remove(0);
    first.close(0u32.into(), b"done");
    drop(first);
    let mut reconnected = None;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if let Ok(c) = connect(&cluster, quinn::TransportConfig::default()).await {
            reconnected = Some(c);
            break;
        }
    }
    let again = reconnected.expect("a freed slot takes a new connection");
    assert!(matches!(
        ask(&again, &ClientRequest::GetCheckpoint).await,
        ClientResponse::Checkpoint { .. } | ClientResponse::Error { .. }
    ));
    drop(again);
    for c in open {
        c.close(0u32.into(), b"done");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    still_served(&cluster).await;
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_frames_hold_only_what_arrived_and_only_until_their_deadline() {
    let (_dir, cluster, node) = replica("giant").await;
    let connection = connect(&cluster, quinn::TransportConfig::default())
        .await
        .unwrap();
    let declared = (wire::MAX_MESSAGE_BYTES as u32).to_be_bytes();
    // A frame that declares 16 MiB and sends 100 bytes costs 100 bytes:
    // a normal request beside it is served.
    let (mut tiny, mut tiny_recv) = connection.open_bi().await.unwrap();
    tiny.write_all(&declared).await.unwrap();
    tiny.write_all(&[0u8; 100]).await.unwrap();
    assert!(matches!(
        ask(&connection, &ClientRequest::GetCheckpoint).await,
        ClientResponse::Checkpoint { .. } | ClientResponse::Error { .. }
    ));
    // One that sends 15 MiB of it holds 15 MiB of the in-flight budget
    // (set to 16 MiB here): a request of 2 MiB beside it is answered
    // Overloaded.
    let (mut big, mut big_recv) = connection.open_bi().await.unwrap();
    big.write_all(&declared).await.unwrap();
    big.write_all(&vec![0u8; 15 << 20]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (mut other, mut other_recv) = connection.open_bi().await.unwrap();
    other
        .write_all(&((2u32 << 20).to_be_bytes()))
        .await
        .unwrap();
    other.write_all(&vec![0u8; 2 << 20]).await.unwrap();
    let frame = net::read_frame(&mut other_recv, wire::MAX_MESSAGE_BYTES)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(
        wire::decode::<ClientResponse>(&frame).unwrap(),
        ClientResponse::Error {
            code: ErrorCode::Overloaded { .. },
            ..
        }
    ));
    assert!(
        node.metrics()
            .requests_over_byte_budget
            .load(Ordering::Relaxed)
            >= 1
    );
    // At their read deadline both half-sent streams are reset, and what
    // they held is freed.
    for recv in [&mut tiny_recv, &mut big_recv] {
        let mut buf = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(5), recv.read(&mut buf)).await;
        assert!(
            matches!(read, Ok(Err(quinn::ReadError::Reset(_)))),
            "{read:?}"
        );
    }
    assert!(
        node.metrics()
            .client_requests_timed_out
            .load(Ordering::Relaxed)
            >= 2
    );
    drop((tiny, big, other));
    still_served(&cluster).await;
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unidirectional_streams_are_stopped_and_silent_connections_idle_out() {
    let (_dir, cluster, node) = replica("streams").await;
    // No keep-alives from this client: with none from the replica either,
    // the connection idles out.
    let mut silent = quinn::TransportConfig::default();
    silent.keep_alive_interval(None);
    let connection = connect(&cluster, silent).await.unwrap();
    let mut uni = connection.open_uni().await.unwrap();
    // The replica stops it; writing on soon fails.
    let mut stopped = false;
    for _ in 0..100 {
        if uni.write_all(&[0u8; 1024]).await.is_err() {
            stopped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(stopped, "the replica stops unidirectional streams");
    let closed = tokio::time::timeout(Duration::from_secs(10), connection.closed()).await;
    assert!(
        matches!(closed, Ok(quinn::ConnectionError::TimedOut)),
        "{closed:?}"
    );
    still_served(&cluster).await;
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_its_answer_is_cut_off_at_the_write_deadline() {
    let (_dir, cluster, node) = replica("never-reads").await;
    // Entries to read back: 64 of 60 KiB.
    let client = Client::new(cluster.clone(), ClientOptions::default()).unwrap();
    let entries: Vec<Vec<u8>> = (0..64u8).map(|i| vec![i; 60 << 10]).collect();
    client.append(&entries).await.unwrap();
    // A client whose stream window is 64 KiB and that never reads: the
    // replica's answer (about 3.8 MB) cannot be taken.
    let mut small_window = quinn::TransportConfig::default();
    small_window.stream_receive_window(quinn::VarInt::from_u32(64 << 10));
    let connection = connect(&cluster, small_window).await.unwrap();
    let (mut send, recv) = connection.open_bi().await.unwrap();
    let request = ClientRequest::GetEntries {
        start: 0,
        count: 64,
    };
    send.write_all(&wire::encode_frame(&request)).await.unwrap();
    send.finish().unwrap();
    let before = node
        .metrics()
        .client_requests_timed_out
        .load(Ordering::Relaxed);
    let mut cut_off = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if node
            .metrics()
            .client_requests_timed_out
            .load(Ordering::Relaxed)
            > before
        {
            cut_off = true;
            break;
        }
    }
    assert!(cut_off, "the replica gives up on a response nobody takes");
    drop(recv);
    still_served(&cluster).await;
    node.shutdown().await.unwrap();
}
