//! In-process clusters of real replicas (redb + QUIC on 127.0.0.1).

use std::path::Path;
use std::time::Duration;

use bftlog_server::client::{Client, ClientOptions};
use bftlog_server::config::{ReplicaConfig, init_cluster};
use bftlog_server::node::Node;
use bftlog_spec::merkle;
use bftlog_spec::proof::TlogProof;
use bftlog_spec::wire::{self, BoundedVec, ClientRequest, ClientResponse, ErrorCode};

#[path = "support/ports.rs"]
mod ports;

#[path = "../src/test_dir.rs"]
mod test_dir;

fn tempdir(tag: &str) -> test_dir::TestDir {
    test_dir::TestDir::new(&format!("cluster-{tag}-{}", std::process::id()))
}

fn free_port_base() -> u16 {
    ports::free_ports(4)
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
        let proof = TlogProof::parse(r.tlog_proof().as_bytes()).unwrap();
        proof.verify_entry(&policy, e).unwrap();
    }
    indexes.sort();
    indexes.dedup();
    assert_eq!(indexes.len(), 20, "distinct indexes");

    // Appending the same entry again returns its first index.
    let again = client.append(&entries[3..4]).await.unwrap();
    assert_eq!(again[0].index, receipts[3].index);
    // Also when one append names it twice beside others: the multiproof
    // covers each index once and every receipt still verifies.
    let picks = [3usize, 7, 3, 12];
    let repeated: Vec<Vec<u8>> = picks.iter().map(|&i| entries[i].clone()).collect();
    let again = client.append(&repeated).await.unwrap();
    for (r, &i) in again.iter().zip(&picks) {
        assert_eq!(r.index, receipts[i].index);
        let proof = TlogProof::parse(r.tlog_proof().as_bytes()).unwrap();
        proof.verify_entry(&policy, &entries[i]).unwrap();
    }

    // Requests retired before 0.1.0 get a typed answer that tells an old
    // client to upgrade; the connection carries on.
    let five = BoundedVec::new(
        entries[..5]
            .iter()
            .map(|e| wire::Entry::new(e.clone()).unwrap())
            .collect::<Vec<_>>(),
    )
    .unwrap();
    for retired in [
        ClientRequest::RetiredAppend {
            entries: five.clone(),
        },
        ClientRequest::RetiredAppendBatch {
            entries: five.clone(),
        },
    ] {
        let answer = client.request(0, &retired).await.unwrap();
        let ClientResponse::Error { code, message } = answer else {
            panic!("a retired request is answered with an error, not {answer:?}");
        };
        assert_eq!(code, wire::ErrorCode::Unsupported);
        assert!(String::from_utf8_lossy(&message).contains("upgrade the client"));
    }

    // An `AppendMultiproof` naming committed entries (entry 2 twice: one
    // index) is answered with their first indexes, and the paths derived
    // from its multiproof are the replica's inclusion proofs at the
    // checkpoint's size, so the receipts are those of any other answer.
    let six = BoundedVec::new(
        [0, 1, 2, 3, 4, 2]
            .iter()
            .map(|&i| wire::Entry::new(entries[i].clone()).unwrap())
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let ClientResponse::ReceiptMultiproof {
        checkpoint,
        indexes: multi_indexes,
        proof: multi_proof,
    } = client
        .request(0, &ClientRequest::AppendMultiproof { entries: six })
        .await
        .unwrap()
    else {
        panic!("an AppendMultiproof is answered with a ReceiptMultiproof");
    };
    let first_indexes: Vec<u64> = receipts[..5].iter().map(|r| r.index).collect();
    assert_eq!(multi_indexes[..5], first_indexes[..]);
    assert_eq!(multi_indexes[5], multi_indexes[2]);
    let (_, tree) = bftlog_spec::checkpoint::parse_signed(&checkpoint).unwrap();
    policy.verify_checkpoint_bytes(&checkpoint).unwrap();
    let mut pairs: Vec<(u64, merkle::Hash)> = multi_indexes[..5]
        .iter()
        .zip(&entries[..5])
        .map(|(&i, e)| (i, merkle::leaf_hash(e)))
        .collect();
    pairs.sort();
    let paths = merkle::verify_multiproof(tree.size, &tree.root, &pairs, &multi_proof).unwrap();
    let ClientResponse::InclusionProofs { proofs, .. } = client
        .request(
            0,
            &ClientRequest::GetInclusionProofs {
                indexes: BoundedVec::new(pairs.iter().map(|(i, _)| *i).collect()).unwrap(),
                tree_size: tree.size,
            },
        )
        .await
        .unwrap()
    else {
        panic!("inclusion proofs");
    };
    for (path, served) in paths.iter().zip(proofs.iter()) {
        assert_eq!(path[..], served[..]);
    }

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

/// Witnesses end to end: receipts carry cosignatures that meet the policy's
/// witness quorum, a witness that was down catches up from its own size,
/// and a forged fork signed by replica keys is refused and recorded as
/// evidence naming those replicas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_carry_witness_cosignatures_and_a_forged_fork_is_recorded() {
    use bftlog_spec::checkpoint::Checkpoint;
    use bftlog_spec::evidence::Evidence;
    use bftlog_spec::note::{KeyType, Note, SignerKey};
    use bftlog_witness::log_config::LogConfig;
    use bftlog_witness::server::{Server, ServerConfig};

    let dir = tempdir("witnessed");
    let mut cluster = init_cluster(
        &dir,
        "test.example/witnessed",
        4,
        [127, 0, 0, 1].into(),
        free_port_base(),
    )
    .unwrap();
    let mut servers = Vec::new();
    for i in 1..=2 {
        let wdir = dir.join(format!("witness-{i}"));
        let key = bftlog_witness::dir::init(&wdir, &format!("test.example/w{i}")).unwrap();
        let log = LogConfig::new(&cluster.origin, cluster.keys.clone(), None).unwrap();
        bftlog_witness::dir::open_store(&wdir)
            .unwrap()
            .add_log(&log)
            .unwrap();
        let witness = std::sync::Arc::new(bftlog_witness::dir::open(&wdir).unwrap());
        let server = Server::start(
            witness,
            "127.0.0.1:0".parse().unwrap(),
            ServerConfig::default(),
        )
        .await
        .unwrap();
        cluster.witnesses.push(bftlog_server::config::Witness {
            name: format!("w{i}"),
            key,
            url: format!("http://{}", server.local_addr()),
        });
        servers.push(server);
    }
    cluster.witness_quorum = 2;
    bftlog_server::config::write_cluster_files(&dir, &cluster).unwrap();
    let nodes = start(&dir, 4).await;
    let client = Client::new(cluster.clone(), ClientOptions::default()).unwrap();
    let policy = cluster.policy();
    assert_eq!(policy.witnesses().len(), 2);

    let entries: Vec<Vec<u8>> = (0..10).map(|i| format!("w {i}").into_bytes()).collect();
    let receipts = client.append(&entries).await.unwrap();
    for (r, e) in receipts.iter().zip(&entries) {
        let verified = bftlog_verify::check::check_receipt(
            &policy,
            r.tlog_proof().as_bytes(),
            &merkle::leaf_hash(e),
        )
        .unwrap();
        assert_eq!(verified.checkpoint.cosignatures.len(), 2);
        assert!(verified.checkpoint.witness_quorum_met);
    }
    // Witness 2 goes down: with a 2-of-2 quorum, receipts wait for it. It
    // comes back on the same address with its state; the replicas resubmit
    // from its size and the waiting append completes.
    let w2_addr = servers[1].local_addr();
    servers.pop().unwrap().shutdown().await;
    let pending = {
        let client = client.clone();
        tokio::spawn(async move { client.append(&[b"second batch".to_vec()]).await })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !pending.is_finished(),
        "a receipt did not wait for the witness quorum"
    );
    let wdir = dir.join("witness-2");
    let witness = loop {
        // The stopped server's last connection tasks may still hold the
        // database for a moment.
        match bftlog_witness::dir::open(&wdir) {
            Ok(w) => break w,
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    servers.push(
        Server::start(
            std::sync::Arc::new(witness),
            w2_addr,
            ServerConfig::default(),
        )
        .await
        .unwrap(),
    );
    let more = tokio::time::timeout(Duration::from_secs(30), pending)
        .await
        .expect("the append completes once the witness is back")
        .unwrap()
        .unwrap();
    // Each replica collects its own cosignatures, so the one asked may
    // serve an older witnessed checkpoint for a moment.
    let mut checkpoint = client.checkpoint().await.unwrap();
    for _ in 0..100 {
        if checkpoint.checkpoint().size > more[0].index {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        checkpoint = client.checkpoint().await.unwrap();
    }
    assert!(checkpoint.checkpoint().size > more[0].index);
    assert!(checkpoint.evaluation().witness_quorum_met);

    // A fork: the replica keys (all four: more than f are compromised) sign
    // a different tree of the same size.
    let size = checkpoint.checkpoint().size;
    let forged = Checkpoint::new(&cluster.origin, size, merkle::leaf_hash(b"forged root"));
    let mut note = Note::new(&forged.format()).unwrap();
    for i in 0..4 {
        let text = std::fs::read_to_string(dir.join(format!("replica-{i}.key"))).unwrap();
        let key = SignerKey::parse(text.trim_end()).unwrap();
        assert_eq!(key.key_type(), KeyType::Ed25519);
        note.sign(&key).unwrap();
    }
    // The witness has cosigned `size` (the served checkpoint says so).
    let witness_client = bftlog_witness::client::WitnessClient::new(
        &cluster.witnesses[0].url,
        cluster.witnesses[0].key.clone(),
        5_000,
    )
    .unwrap();
    let outcome = witness_client
        .add_checkpoint(size, &[], &note)
        .await
        .unwrap();
    assert_eq!(
        outcome,
        bftlog_witness::client::AddOutcome::Conflict(size),
        "a fork at the cosigned size is refused"
    );
    let listing = http_get(&format!("{}/evidence", cluster.witnesses[0].url)).await;
    assert!(listing.starts_with("split-view 1 same-size"), "{listing}");
    let evidence = http_get(&format!("{}/evidence/1", cluster.witnesses[0].url)).await;
    let verified = Evidence::parse(evidence.as_bytes())
        .unwrap()
        .check(&policy)
        .unwrap();
    // Everyone who signed the honest checkpoint also signed the fork.
    assert_eq!(
        verified.signed_both.len(),
        checkpoint.evaluation().log_signers.len(),
        "names the replicas that signed both"
    );
    assert!(verified.signed_both.len() >= 3);

    for node in nodes.into_iter().flatten() {
        node.shutdown().await.unwrap();
    }
    for server in servers {
        server.shutdown().await;
    }
}

/// A plain HTTP GET over a fresh TCP connection (the test's own client).
async fn http_get(url: &str) -> String {
    let rest = url.strip_prefix("http://").unwrap();
    let (authority, path) = rest.split_at(rest.find('/').unwrap());
    let authority = authority.to_owned();
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(&authority).unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        body.to_owned()
    })
    .await
    .unwrap()
}

/// The opt-in Prometheus endpoint reports commits, rounds, proof requests
/// and rejected messages by reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_reports_the_replica() {
    let dir = tempdir("metrics");
    let cluster = init_cluster(
        &dir,
        "test.example/metrics",
        4,
        [127, 0, 0, 1].into(),
        free_port_base(),
    )
    .unwrap();
    let mut nodes = Vec::new();
    for i in 0..4 {
        let mut cfg = fast(&dir, i);
        if i == 0 {
            cfg.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
        }
        nodes.push(Node::start(cfg).await.unwrap());
    }
    assert!(nodes[1].metrics_addr().is_none(), "off unless configured");
    let url = format!("http://{}/metrics", nodes[0].metrics_addr().unwrap());
    let client = Client::new(cluster.clone(), ClientOptions::default()).unwrap();
    let entries: Vec<Vec<u8>> = (0..50).map(|i| format!("m {i}").into_bytes()).collect();
    let receipts = client.append(&entries).await.unwrap();
    let checkpoint = client.checkpoint().await.unwrap();
    for _ in 0..3 {
        client
            .request(
                0,
                &ClientRequest::GetInclusionProof {
                    leaf: wire::LeafRef::Index { index: 1 },
                    tree_size: checkpoint.checkpoint().size,
                },
            )
            .await
            .unwrap();
    }
    // A batch of proofs, in request order (repeats allowed), each verifying
    // for its entry.
    let (size, root) = (checkpoint.checkpoint().size, checkpoint.checkpoint().root);
    let picks = [0usize, 1, 49, 1];
    let indexes: Vec<u64> = picks.iter().map(|&k| receipts[k].index).collect();
    let proofs = client.inclusion_proofs(0, &indexes, size).await.unwrap();
    assert_eq!(proofs.len(), 4);
    for ((&k, &index), proof) in picks.iter().zip(&indexes).zip(&proofs) {
        let leaf = merkle::leaf_hash(&entries[k]);
        merkle::verify_inclusion(index, size, &leaf, proof, &root).unwrap();
    }
    let batch = |indexes: Vec<u64>, tree_size: u64| ClientRequest::GetInclusionProofs {
        indexes: wire::BoundedVec::new(indexes).unwrap(),
        tree_size,
    };
    for (request, want) in [
        (batch(vec![], size), ErrorCode::Malformed),
        (batch(vec![0, size], size), ErrorCode::Malformed),
        (batch(vec![0], size + 1000), ErrorCode::NotFound),
    ] {
        match client.request(0, &request).await.unwrap() {
            ClientResponse::Error { code, .. } => assert_eq!(code, want),
            other => panic!("{other:?}"),
        }
    }
    let value = |text: &str, name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from:\n{text}"))
    };
    let mut text = String::new();
    for _ in 0..50 {
        text = http_get(&url).await;
        if value(&text, "bftlog_tree_size") >= 50 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(value(&text, "bftlog_entries_committed_total") >= 50);
    assert!(value(&text, "bftlog_blocks_committed_total") >= 1);
    assert!(value(&text, "bftlog_tree_size") >= 50);
    assert!(value(&text, "bftlog_round") >= 1);
    assert!(value(&text, "bftlog_latest_checkpoint_size") >= 50);
    // 3 single requests, then batches of 4, 2 and 1 index (the empty one
    // asks for no proof).
    assert_eq!(value(&text, "bftlog_proof_requests_total"), 6);
    assert_eq!(value(&text, "bftlog_proofs_requested_total"), 10);
    for name in [
        "bftlog_timeouts_sent_total",
        "bftlog_tcs_formed_total",
        "bftlog_view_changes_total",
        "bftlog_sync_requests_sent_total",
        "bftlog_mempool_entries",
        "bftlog_rejected_messages_total{reason=\"invalid_signature\"}",
        "bftlog_rejected_messages_total{reason=\"undecodable\"}",
    ] {
        value(&text, name);
    }
    for node in nodes {
        node.shutdown().await.unwrap();
    }
}
