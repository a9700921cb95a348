//! The C2SP tlog-witness behaviours, one test each, against the real HTTP
//! server on 127.0.0.1, plus races, crash recovery and evidence.

use bftlog_spec::checkpoint::Checkpoint;
use bftlog_spec::evidence::{Evidence, Kind};
use bftlog_spec::merkle::{self, Hash, MemoryTree};
use bftlog_spec::note::{KeyType, Note, SignerKey, VerifierKey};
use bftlog_witness::client::{AddOutcome, WitnessClient};
use bftlog_witness::log_config::LogConfig;
use bftlog_witness::request::format_add_checkpoint;
use bftlog_witness::server::{Server, ServerConfig};
use bftlog_witness::store::Store;
use bftlog_witness::witness::{Witness, origin_hash_hex};
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;

const ORIGIN: &str = "example.com/bft-log";

/// A 4-replica log whose replicas sign whatever tree they are shown.
struct TestLog {
    replicas: Vec<SignerKey>,
    tree: MemoryTree,
    /// Which history: forks share keys but not entries.
    fork: u8,
}

impl TestLog {
    fn new(fork: u8) -> Self {
        let replicas = (1..=4)
            .map(|i| {
                SignerKey::new(
                    ORIGIN,
                    KeyType::Ed25519,
                    ed25519_dalek::SigningKey::from_bytes(&[i; 32]),
                )
                .unwrap()
            })
            .collect();
        TestLog {
            replicas,
            tree: MemoryTree::new(),
            fork,
        }
    }

    fn grow_to(&mut self, size: u64) {
        while self.tree.size() < size {
            let i = self.tree.size();
            let entry = format!("entry {i} of fork {}", self.fork);
            self.tree.append(merkle::leaf_hash(entry.as_bytes()));
        }
    }

    fn root(&self, size: u64) -> Hash {
        merkle::tree_root(size, &self.tree).unwrap()
    }

    /// The checkpoint of the first `size` leaves signed by `signers`.
    fn note(&mut self, size: u64, signers: &[usize]) -> Note {
        self.grow_to(size);
        let checkpoint = Checkpoint::new(ORIGIN, size, self.root(size));
        let mut note = Note::new(&checkpoint.format()).unwrap();
        for &i in signers {
            note.sign(&self.replicas[i]).unwrap();
        }
        note
    }

    fn proof(&mut self, old: u64, new: u64) -> Vec<Hash> {
        self.grow_to(new);
        merkle::prove_consistency(old, new, &self.tree).unwrap()
    }

    fn body(&mut self, old: u64, new: u64) -> String {
        let note = self.note(new, &[0, 1, 2]);
        let proof = self.proof(old, new);
        format_add_checkpoint(old, &proof, &note.format())
    }

    fn vkeys(&self) -> Vec<VerifierKey> {
        self.replicas.iter().map(|k| k.verifier()).collect()
    }
}

struct Harness {
    _dir: tempfile::TempDir,
    witness_key: SignerKey,
    _server: Server,
    addr: std::net::SocketAddr,
}

fn witness_key() -> SignerKey {
    SignerKey::new(
        "witness.example/w1",
        KeyType::CosignatureV1,
        ed25519_dalek::SigningKey::from_bytes(&[42; 32]),
    )
    .unwrap()
}

fn open_witness(dir: &std::path::Path, key: &SignerKey) -> Witness {
    let store = Store::open(&dir.join("witness.redb")).unwrap();
    Witness::new(key.clone(), store).unwrap()
}

impl Harness {
    async fn start(logs: &[LogConfig]) -> Harness {
        Self::start_with(logs, ServerConfig::default()).await
    }

    async fn start_with(logs: &[LogConfig], config: ServerConfig) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let dir_path = dir.path().to_owned();
        let key = witness_key();
        {
            let store = Store::open(&dir_path.join("witness.redb")).unwrap();
            for log in logs {
                store.add_log(log).unwrap();
            }
        }
        let witness = Arc::new(open_witness(&dir_path, &key));
        let server = Server::start(witness, "127.0.0.1:0".parse().unwrap(), config)
            .await
            .unwrap();
        let addr = server.local_addr();
        Harness {
            _dir: dir,
            witness_key: key,
            _server: server,
            addr,
        }
    }

    async fn post(&self, body: impl Into<Vec<u8>>) -> (u16, String, String) {
        http(self.addr, "POST", "/add-checkpoint", body.into()).await
    }

    async fn get(&self, path: &str) -> (u16, String, String) {
        http(self.addr, "GET", path, Vec::new()).await
    }
}

/// A raw HTTP/1.1 exchange, independent of the server's library.
async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> (u16, String, String) {
    let method = method.to_owned();
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(&body);
        stream.write_all(&request).unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).unwrap();
        let text = String::from_utf8(response).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
        let content_type = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-type: ")
                    .map(str::to_owned)
            })
            .unwrap_or_default();
        (status, content_type, body.to_owned())
    })
    .await
    .unwrap()
}

fn bft_config(log: &TestLog) -> LogConfig {
    LogConfig::new(ORIGIN, log.vkeys(), None).unwrap()
}

/// An independent check of a cosignature/v1 line: key ID, message layout
/// and Ed25519, with nothing from bftlog-spec.
fn check_cosignature_independently(line: &str, name: &str, public: &VerifyingKey, body: &str) {
    use base64::Engine;
    let rest = line.strip_prefix("\u{2014} ").expect("em dash");
    let (line_name, b64) = rest.split_once(' ').unwrap();
    assert_eq!(line_name, name);
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim_end())
        .unwrap();
    assert_eq!(bytes.len(), 4 + 8 + 64);
    let mut id_input = Vec::new();
    id_input.extend_from_slice(name.as_bytes());
    id_input.push(b'\n');
    id_input.push(0x04);
    id_input.extend_from_slice(public.as_bytes());
    let expected_id = &Sha256::digest(&id_input)[..4];
    assert_eq!(&bytes[..4], expected_id, "key ID");
    let timestamp = u64::from_be_bytes(bytes[4..12].try_into().unwrap());
    let message = format!("cosignature/v1\ntime {timestamp}\n{body}");
    let signature = Signature::from_slice(&bytes[12..]).unwrap();
    public.verify(message.as_bytes(), &signature).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(timestamp <= now && timestamp + 60 > now, "timestamp is now");
}

#[tokio::test]
async fn first_checkpoint_is_cosigned_and_the_cosignature_verifies_independently() {
    let mut log = TestLog::new(1);
    let h = Harness::start(&[bft_config(&log)]).await;
    let (status, content_type, body) = h.post(log.body(0, 5)).await;
    assert_eq!(status, 200, "{body}");
    assert!(content_type.starts_with("text/plain"));
    assert_eq!(body.lines().count(), 1);
    let checkpoint_body = log.note(5, &[]).text().to_owned();
    check_cosignature_independently(
        body.lines().next().unwrap(),
        "witness.example/w1",
        &h.witness_key.signing_key().verifying_key(),
        &checkpoint_body,
    );
    // Monitoring endpoint: the stored note carries the log signatures and
    // the cosignature.
    let (status, _, note) = h
        .get(&format!("/{}/checkpoint", origin_hash_hex(ORIGIN)))
        .await;
    assert_eq!(status, 200);
    let note = Note::parse(note.as_bytes()).unwrap();
    assert_eq!(note.text(), checkpoint_body);
    assert_eq!(note.signatures().len(), 4);
    let (status, _, _) = h.get(&format!("/{}/checkpoint", "00".repeat(32))).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn growth_with_a_valid_proof_is_cosigned() {
    let mut log = TestLog::new(1);
    let h = Harness::start(&[bft_config(&log)]).await;
    assert_eq!(h.post(log.body(0, 5)).await.0, 200);
    assert_eq!(h.post(log.body(5, 13)).await.0, 200);
    assert_eq!(h.post(log.body(13, 64)).await.0, 200);
    // The same checkpoint again is cosigned again.
    assert_eq!(h.post(log.body(64, 64)).await.0, 200);
}

#[tokio::test]
async fn malformed_bodies_and_old_larger_than_size_are_400() {
    let mut log = TestLog::new(1);
    let h = Harness::start(&[bft_config(&log)]).await;
    let good = log.body(0, 5);
    for bad in [
        good.replacen("old 0", "old 00", 1),
        good.replacen("old 0\n", "old 0\r\n", 1),
        good.replacen("old 0\n\n", "old 0\n", 1),
        format!("{good}extra"),
        String::new(),
        "garbage".to_string(),
    ] {
        let (status, _, body) = h.post(bad.clone()).await;
        assert_eq!(status, 400, "{bad:?}: {body}");
    }
    let note = log.note(5, &[0, 1, 2]);
    let (status, _, _) = h.post(format_add_checkpoint(6, &[], &note.format())).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn oversized_body_is_413_and_wrong_method_405() {
    let log = TestLog::new(1);
    let h = Harness::start(&[bft_config(&log)]).await;
    let (status, _, _) = h.post(vec![b'a'; 17 * 1024]).await;
    assert_eq!(status, 413);
    let (status, _, _) = h.get("/add-checkpoint").await;
    assert_eq!(status, 405);
}

#[tokio::test]
async fn untrusted_or_too_few_or_invalid_signatures_are_403() {
    let mut log = TestLog::new(1);
    let h = Harness::start(&[bft_config(&log)]).await;
    // Two of four replicas: below the quorum of three.
    let note = log.note(5, &[0, 1]);
    let (status, _, body) = h.post(format_add_checkpoint(0, &[], &note.format())).await;
    assert_eq!(status, 403, "{body}");
    // Signed only by a key the witness does not know.
    let stranger = SignerKey::new(
        ORIGIN,
        KeyType::Ed25519,
        ed25519_dalek::SigningKey::from_bytes(&[99; 32]),
    )
    .unwrap();
    let mut note = log.note(5, &[]);
    note.sign(&stranger).unwrap();
    let (status, _, _) = h.post(format_add_checkpoint(0, &[], &note.format())).await;
    assert_eq!(status, 403);
    // A known key's signature that does not verify (signed another text).
    let mut note = log.note(5, &[0, 1, 2]);
    let other = log.note(6, &[3]);
    note.add_signature(other.signatures()[0].clone()).unwrap();
    let (status, _, body) = h.post(format_add_checkpoint(0, &[], &note.format())).await;
    assert_eq!(status, 403, "{body}");
    // Nothing was stored.
    assert_eq!(h.post(log.body(0, 5)).await.0, 200);
}

#[tokio::test]
async fn unknown_origin_is_404() {
    let mut log = TestLog::new(1);
    let h = Harness::start(&[]).await;
    let (status, _, _) = h.post(log.body(0, 5)).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn stale_old_size_is_409_with_the_stored_size() {
    let mut log = TestLog::new(1);
    let h = Harness::start(&[bft_config(&log)]).await;
    assert_eq!(h.post(log.body(0, 10)).await.0, 200);
    for (old, new) in [(0, 12), (5, 12), (11, 12)] {
        let (status, content_type, body) = h.post(log.body(old, new)).await;
        assert_eq!(status, 409);
        assert_eq!(content_type, "text/x.tlog.size");
        assert_eq!(body, "10\n");
    }
    // A rollback (smaller tree, even with a correct old size claim) is
    // refused: old 10 > size 7 is 400, old 7 is 409.
    assert_eq!(h.post(log.body(7, 7)).await.0, 409);
}

#[tokio::test]
async fn bad_consistency_proof_is_422_and_kept() {
    let mut log = TestLog::new(1);
    let h = Harness::start(&[bft_config(&log)]).await;
    assert_eq!(h.post(log.body(0, 10)).await.0, 200);
    let note = log.note(20, &[0, 1, 2]);
    let mut proof = log.proof(10, 20);
    proof[0].0[0] ^= 1;
    let (status, _, body) = h
        .post(format_add_checkpoint(10, &proof, &note.format()))
        .await;
    assert_eq!(status, 422, "{body}");
    // Unproven (the proof is garbage), so it is kept as a rejected record.
    let (_, _, listing) = h.get("/evidence").await;
    assert!(
        listing.contains(&format!("rejected 1 {ORIGIN}")),
        "{listing}"
    );
    let (status, _, record) = h.get("/rejected/1").await;
    assert_eq!(status, 200);
    assert!(record.starts_with("bftlog.org/witness-rejected@v1\n"));
    // The state is unchanged: the honest proof is accepted.
    assert_eq!(h.post(log.body(10, 20)).await.0, 200);
}

#[tokio::test]
async fn a_fork_is_refused_and_recorded_as_verifiable_evidence() {
    let mut honest = TestLog::new(1);
    let mut forked = TestLog::new(2);
    let config = bft_config(&honest);
    let h = Harness::start(std::slice::from_ref(&config)).await;
    assert_eq!(h.post(honest.body(0, 10)).await.0, 200);

    // Same size, different root: C2SP says 409.
    let (status, content_type, body) = h.post(forked.body(10, 10)).await;
    assert_eq!(
        (status, content_type.as_str(), body.as_str()),
        (409, "text/x.tlog.size", "10\n")
    );

    // A larger forked tree with its own (valid for it) proof: 422.
    let (status, _, _) = h.post(forked.body(10, 15)).await;
    assert_eq!(status, 422);

    // Replays of the fork, also with a signature line from a key the
    // witness does not know, are refused again and kept once.
    assert_eq!(h.post(forked.body(10, 10)).await.0, 409);
    let mut note = forked.note(10, &[0, 1, 2]);
    let stranger = SignerKey::new(
        "stranger.example/key",
        KeyType::Ed25519,
        ed25519_dalek::SigningKey::from_bytes(&[99; 32]),
    )
    .unwrap();
    note.sign(&stranger).unwrap();
    let (status, _, _) = h.post(format_add_checkpoint(10, &[], &note.format())).await;
    assert_eq!(status, 409);

    let (_, _, listing) = h.get("/evidence").await;
    let lines: Vec<&str> = listing.lines().collect();
    assert_eq!(
        lines,
        [
            format!("split-view 1 same-size {ORIGIN} 10 10 3"),
            format!("split-view 2 inconsistent {ORIGIN} 10 15 3"),
        ]
    );
    for id in [1, 2] {
        let (status, _, text) = h.get(&format!("/evidence/{id}")).await;
        assert_eq!(status, 200);
        let evidence = Evidence::parse(text.as_bytes()).unwrap();
        let verified = evidence.check(&config.policy()).unwrap();
        assert_eq!(verified.signed_both.len(), 3);
        assert!(verified.quorum_a && verified.quorum_b);
        assert_eq!(
            verified.kind,
            if id == 1 {
                Kind::SameSize
            } else {
                Kind::Inconsistent
            }
        );
    }
    // The honest log goes on.
    assert_eq!(h.post(honest.body(10, 11)).await.0, 200);
}

#[tokio::test]
async fn single_key_c2sp_log_needs_one_signature() {
    let mut log = TestLog::new(1);
    let config = LogConfig::new(ORIGIN, vec![log.vkeys()[0].clone()], None).unwrap();
    let h = Harness::start(&[config]).await;
    let note = log.note(3, &[0]);
    let (status, _, body) = h.post(format_add_checkpoint(0, &[], &note.format())).await;
    assert_eq!(status, 200, "{body}");
    // Signatures by keys it does not know are ignored, not errors.
    let note = log.note(4, &[0, 1, 2]);
    let proof = log.proof(3, 4);
    let (status, _, _) = h
        .post(format_add_checkpoint(3, &proof, &note.format()))
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn client_gets_verified_cosignatures_and_conflicts() {
    let mut log = TestLog::new(1);
    let h = Harness::start(&[bft_config(&log)]).await;
    let client = WitnessClient::new(
        &format!("http://{}", h.addr),
        h.witness_key.verifier(),
        5_000,
    )
    .unwrap();
    let note = log.note(8, &[0, 1, 2]);
    match client.add_checkpoint(0, &[], &note).await.unwrap() {
        AddOutcome::Cosigned(sigs) => assert_eq!(sigs.len(), 1),
        other => panic!("{other:?}"),
    }
    let note = log.note(9, &[0, 1, 2]);
    assert_eq!(
        client.add_checkpoint(0, &[], &note).await.unwrap(),
        AddOutcome::Conflict(8)
    );
    let proof = log.proof(8, 9);
    assert!(matches!(
        client.add_checkpoint(8, &proof, &note).await.unwrap(),
        AddOutcome::Cosigned(_)
    ));
    // A client trusting another key rejects the answer.
    let wrong = WitnessClient::new(
        &format!("http://{}", h.addr),
        SignerKey::new(
            "witness.example/w1",
            KeyType::CosignatureV1,
            ed25519_dalek::SigningKey::from_bytes(&[7; 32]),
        )
        .unwrap()
        .verifier(),
        5_000,
    )
    .unwrap();
    assert!(wrong.add_checkpoint(9, &[], &note).await.is_err());
}

/// Many tasks race two forks of one origin against each other. However the
/// requests interleave, the witness never cosigns two roots for one size,
/// and everything it cosigned is one consistent history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_submissions_never_cosign_two_roots_for_a_size() {
    let h = Harness::start(&[bft_config(&TestLog::new(1))]).await;
    let addr = h.addr;
    let mut tasks = Vec::new();
    for task in 0..16u64 {
        tasks.push(tokio::spawn(async move {
            let fork = (task % 2) as u8 + 1;
            let mut log = TestLog::new(fork);
            let mut cosigned = Vec::new();
            let mut old = 0;
            for step in 0..12u64 {
                let size = 1 + step * 3 + task % 3;
                if size < old {
                    continue;
                }
                let note = log.note(size, &[0, 1, 2]);
                let proof = log.proof(old, size);
                let (status, _, body) = http(
                    addr,
                    "POST",
                    "/add-checkpoint",
                    format_add_checkpoint(old, &proof, &note.format()).into_bytes(),
                )
                .await;
                match status {
                    200 => {
                        cosigned.push((size, log.root(size)));
                        old = size;
                    }
                    409 => old = body.trim_end().parse().unwrap(),
                    422 => {}
                    other => panic!("unexpected {other}: {body}"),
                }
            }
            cosigned
        }));
    }
    let mut roots: HashMap<u64, Hash> = HashMap::new();
    for task in tasks {
        for (size, root) in task.await.unwrap() {
            if let Some(previous) = roots.insert(size, root) {
                assert_eq!(previous, root, "two roots cosigned for size {size}");
            }
        }
    }
    // All cosigned roots belong to one of the forks, the first one cosigned.
    let forks: Vec<TestLog> = (1..=2).map(TestLog::new).collect();
    let winners: Vec<u8> = roots
        .iter()
        .map(|(size, root)| {
            let mut matching = forks.iter().filter(|f| {
                let mut f = TestLog::new(f.fork);
                f.grow_to(*size);
                f.root(*size) == *root
            });
            matching.next().unwrap().fork
        })
        .collect();
    assert!(!winners.is_empty());
    assert!(
        winners.iter().all(|w| *w == winners[0]),
        "cosigned both forks"
    );
    // Both forks were tried, so the loser's attempts are kept as evidence.
    let (_, _, listing) = h.get("/evidence").await;
    assert!(!listing.is_empty());
}

/// A crash after the state is stored but before the answer is sent: the
/// next request sees the stored size, and resubmitting from it succeeds.
#[test]
fn crash_between_store_and_response_is_recovered_by_the_next_request() {
    let dir = tempfile::tempdir().unwrap();
    let key = witness_key();
    let mut log = TestLog::new(1);
    {
        let store = Store::open(&dir.path().join("witness.redb")).unwrap();
        store.add_log(&bft_config(&log)).unwrap();
    }
    let body = log.body(0, 7);
    {
        let witness = open_witness(dir.path(), &key);
        let checked = witness.check(body.as_bytes()).unwrap();
        // Stored durably; the answer is lost with the process.
        let _lost = witness.commit(&[checked], 1_700_000_000);
    }
    let witness = open_witness(dir.path(), &key);
    let again = witness.add_checkpoint(body.as_bytes(), 1_700_000_001);
    assert_eq!(again.status, 409);
    assert_eq!(again.body, b"7\n");
    let retry = witness.add_checkpoint(log.body(7, 7).as_bytes(), 1_700_000_002);
    assert_eq!(retry.status, 200);
    let next = witness.add_checkpoint(log.body(7, 9).as_bytes(), 1_700_000_003);
    assert_eq!(next.status, 200);
    drop(witness);
    let reopened = open_witness(dir.path(), &key);
    assert_eq!(reopened.latest(ORIGIN).unwrap().size, 9);
}

/// The same tree again is cosigned (and its note stored) only with the
/// empty proof a size-to-itself consistency proof is.
#[tokio::test]
async fn the_same_tree_again_needs_an_empty_proof() {
    let mut log = TestLog::new(1);
    let h = Harness::start(&[bft_config(&log)]).await;
    assert_eq!(h.post(log.body(0, 10)).await.0, 200);
    let note = log.note(10, &[0, 1, 2]);
    let junk = log.proof(5, 10);
    let (status, _, body) = h
        .post(format_add_checkpoint(10, &junk, &note.format()))
        .await;
    assert_eq!(status, 422, "{body}");
    // Junk for the same tree proves nothing: no rejected record.
    assert_eq!(h.get("/evidence").await.2, "");
    assert_eq!(h.post(log.body(10, 10)).await.0, 200);
    // The same text signed by other replicas is cosigned, but the stored
    // note (replica 0's signature with it) is not replaced.
    let other_signers = log.note(10, &[1, 2, 3]);
    let (status, _, _) = h
        .post(format_add_checkpoint(10, &[], &other_signers.format()))
        .await;
    assert_eq!(status, 200);
    let replica_0_line = log.note(10, &[0]).signatures()[0].line();
    let (_, _, stored) = h
        .get(&format!("/{}/checkpoint", origin_hash_hex(ORIGIN)))
        .await;
    assert!(stored.contains(&replica_0_line), "{stored}");
}

/// The path prefix ends at a segment boundary.
#[tokio::test]
async fn the_prefix_matches_whole_path_segments() {
    let mut log = TestLog::new(1);
    let config = ServerConfig {
        prefix: "/witness".into(),
        ..ServerConfig::default()
    };
    let h = Harness::start_with(&[bft_config(&log)], config).await;
    let body = log.body(0, 3);
    let (status, _, _) = http(
        h.addr,
        "POST",
        "/witnessadd-checkpoint",
        body.clone().into(),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _, _) = http(h.addr, "POST", "/witness/add-checkpoint", body.into()).await;
    assert_eq!(status, 200);
}

/// A request whose body trickles in is answered 408 once the read timeout
/// passes, so it does not hold a connection slot for ever.
#[tokio::test]
async fn a_body_that_does_not_arrive_is_408() {
    let log = TestLog::new(1);
    let config = ServerConfig {
        header_read_timeout_ms: 300,
        ..ServerConfig::default()
    };
    let h = Harness::start_with(&[bft_config(&log)], config).await;
    let addr = h.addr;
    let response = tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let head = format!(
            "POST /add-checkpoint HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 100\r\n\r\nold 0\n"
        );
        stream.write_all(head.as_bytes()).unwrap();
        let mut response = [0u8; 512];
        let n = stream.read(&mut response).unwrap();
        String::from_utf8_lossy(&response[..n]).into_owned()
    })
    .await
    .unwrap();
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
}

/// Cosignature timestamps never go back, even when the clock does, and
/// across a restart (the last one is read back from the stored notes).
#[test]
fn cosignature_timestamps_never_go_back() {
    use base64::Engine;
    let dir = tempfile::tempdir().unwrap();
    let key = witness_key();
    let mut log = TestLog::new(1);
    {
        let store = Store::open(&dir.path().join("witness.redb")).unwrap();
        store.add_log(&bft_config(&log)).unwrap();
    }
    let timestamp = |line: &[u8]| {
        let line = std::str::from_utf8(line).unwrap();
        let b64 = line.trim_end().rsplit(' ').next().unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        u64::from_be_bytes(bytes[4..12].try_into().unwrap())
    };
    let later = 1_800_000_000;
    let earlier = 1_700_000_000;
    {
        let witness = open_witness(dir.path(), &key);
        let first = witness.add_checkpoint(log.body(0, 5).as_bytes(), later);
        assert_eq!(first.status, 200);
        assert_eq!(timestamp(&first.body), later);
        let second = witness.add_checkpoint(log.body(5, 6).as_bytes(), earlier);
        assert_eq!(second.status, 200);
        assert_eq!(timestamp(&second.body), later, "the clock went back");
    }
    let witness = open_witness(dir.path(), &key);
    let third = witness.add_checkpoint(log.body(6, 7).as_bytes(), earlier);
    assert_eq!(third.status, 200);
    assert_eq!(timestamp(&third.body), later, "after a restart");
    let fourth = witness.add_checkpoint(log.body(7, 8).as_bytes(), later + 5);
    assert_eq!(timestamp(&fourth.body), later + 5);
}
