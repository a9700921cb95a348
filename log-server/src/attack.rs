//! Attacks on a running cluster, each as one Byzantine replica or one
//! hostile client would run it: for the hostile-load tests
//! (`log-server/tests/hostile_load.rs`) and `bftlog bench --attack`.
//!
//! A peer attack needs a replica's key: the attacker *is* that replica,
//! authenticated as it, and sends what an honest one never would. A
//! client attack needs nothing but the cluster file.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bftlog_consensus::crypto::{self, Signer};
use bftlog_consensus::genesis_qc;
use bftlog_spec::checkpoint::Checkpoint;
use bftlog_spec::merkle::Hash;
use bftlog_spec::note::{KeyType, SignerKey};
use bftlog_spec::wire::{
    self, Block, BoundedVec, ClientRequest, ConsensusMessage, Entry, Signature64,
};
use tokio::task::JoinSet;

use crate::client::{Client, ClientOptions};
use crate::config::Cluster;
use crate::net;

/// What the attacker does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Attack {
    /// Peer: proposals carrying 512 KiB of entries, correctly signed, for
    /// the rounds it leads round robin far ahead of any certificate.
    FarFuture,
    /// Peer: validly signed checkpoint signatures for sizes no one else
    /// signs.
    SignatureFlood,
    /// Peer: sync requests for everything from height 1, as fast as the
    /// link takes them.
    SyncFlood,
    /// Peer: status messages claiming a committed height far beyond
    /// anyone's, so the others ask it for sync (it never answers).
    LieCommittedHeight,
    /// Peer: frames that declare 16 MiB and send a few bytes, on as many
    /// streams as it may open.
    PeerGiantFrames,
    /// Client: thousands of connections, held open.
    ConnectionFlood,
    /// Client: requests that declare 16 MiB and send 1 KiB, held open.
    HalfSentFrames,
    /// Client: the largest `GetEntries`, never read.
    NeverRead,
    /// Client: the largest `GetEntries`, read, as fast as possible.
    LargestGetEntries,
    /// Client: appends of 4,096 entries of 1 KiB from one submitter key,
    /// sixteen at a time, round robin over the replicas, sent again at
    /// once whatever the answer (a `QuotaExceeded` wait is not honoured),
    /// at the attack's pace in all.
    AppendFlood,
}

impl Attack {
    /// Whether the attacker acts as a replica (needs its key).
    pub fn is_peer_attack(self) -> bool {
        matches!(
            self,
            Attack::FarFuture
                | Attack::SignatureFlood
                | Attack::SyncFlood
                | Attack::LieCommittedHeight
                | Attack::PeerGiantFrames
        )
    }
}

/// Every attack.
pub const ALL_ATTACKS: [Attack; 10] = [
    Attack::FarFuture,
    Attack::SignatureFlood,
    Attack::SyncFlood,
    Attack::LieCommittedHeight,
    Attack::PeerGiantFrames,
    Attack::ConnectionFlood,
    Attack::HalfSentFrames,
    Attack::NeverRead,
    Attack::LargestGetEntries,
    Attack::AppendFlood,
];

/// Who attacks whom.
#[derive(Clone)]
pub struct Attacker {
    pub cluster: Cluster,
    /// For peer attacks: the replica id and key the attacker holds.
    pub replica: Option<(u16, ed25519_dalek::SigningKey)>,
    /// Bytes a second sent to each target by the flooding attacks. On one
    /// machine the attacker shares the replicas' cores: unpaced, it would
    /// measure how much CPU it takes from them, not what its messages do
    /// to them. 0: unpaced.
    pub bytes_per_s_per_target: u64,
    /// For the append flood: the submitter key it appends with (`None`:
    /// an anonymous one, charged by address).
    pub submitter_key: Option<ed25519_dalek::SigningKey>,
}

/// Default of [`Attacker::bytes_per_s_per_target`]: 16 MiB/s, a link of
/// about 130 Mbit/s per replica.
pub const DEFAULT_ATTACK_BYTES_PER_S: u64 = 16 << 20;

/// Keeps a sender at `per_s` bytes a second.
struct Pace {
    per_s: u64,
    started: Instant,
    sent: u64,
}

impl Pace {
    fn new(per_s: u64) -> Self {
        Pace {
            per_s,
            started: Instant::now(),
            sent: 0,
        }
    }

    async fn sent(&mut self, bytes: usize) {
        self.sent += bytes as u64;
        if self.per_s == 0 {
            return;
        }
        let due = Duration::from_secs_f64(self.sent as f64 / self.per_s as f64);
        let elapsed = self.started.elapsed();
        if due > elapsed {
            tokio::time::sleep(due - elapsed).await;
        }
    }
}

/// What the attacker managed to send.
#[derive(Debug, Default)]
pub struct AttackCounts {
    /// Messages, frames, requests or connections sent or opened.
    pub sent: AtomicU64,
    /// Those the target refused or that failed.
    pub failed: AtomicU64,
}

impl Attacker {
    /// Runs `attack` until `until`, against every other replica.
    pub async fn run(&self, attack: Attack, until: Instant) -> Arc<AttackCounts> {
        let counts = Arc::new(AttackCounts::default());
        let mut tasks = JoinSet::new();
        let mut targets: Vec<usize> = (0..self.cluster.n())
            .filter(|i| {
                self.replica
                    .as_ref()
                    .is_none_or(|(id, _)| *id as usize != *i)
            })
            .collect();
        if attack == Attack::AppendFlood {
            // One client key, whichever replicas it picks.
            targets.truncate(1);
        }
        for target in targets {
            let this = self.clone();
            let counts = counts.clone();
            tasks.spawn(async move {
                if attack.is_peer_attack() {
                    this.peer_attack(attack, target, until, &counts).await;
                } else {
                    this.client_attack(attack, target, until, &counts).await;
                }
            });
        }
        while tasks.join_next().await.is_some() {}
        counts
    }

    /// A connection to `target` as the attacker's replica.
    async fn peer_connection(&self, target: usize) -> Option<quinn::Connection> {
        let (_, key) = self.replica.as_ref()?;
        let config = net::client_config(
            key,
            &[*self.cluster.keys[target].public_key()],
            net::ALPN_PEER,
            &net::Limits::default(),
        )
        .ok()?;
        let addr = self.cluster.addresses[target];
        let endpoint = net::client_endpoint(addr).ok()?;
        endpoint
            .connect_with(config, addr, net::SERVER_NAME)
            .ok()?
            .await
            .ok()
    }

    async fn peer_attack(
        &self,
        attack: Attack,
        target: usize,
        until: Instant,
        counts: &AttackCounts,
    ) {
        let Some((id, key)) = self.replica.clone() else {
            return;
        };
        let epoch = self.cluster.epoch;
        let n = self.cluster.n() as u64;
        let signer = Signer::new(key.clone());
        let note_key = SignerKey::new(&self.cluster.origin, KeyType::Ed25519, key)
            .expect("the cluster's origin is a valid key name");
        let mut round = (1u64 << 40) / n * n + id as u64;
        let mut pace = Pace::new(self.bytes_per_s_per_target);
        // Signatures are made ahead and cycled (more rows than a signer
        // may keep, so each evicts one): signing is the attacker's cost,
        // and on one machine it would come out of the replicas' cores.
        let signatures: Vec<ConsensusMessage> = if attack == Attack::SignatureFlood {
            (0..1024u64)
                .map(|k| {
                    let size = (1u64 << 40) + k;
                    let mut root = [0u8; 32];
                    root[..8].copy_from_slice(&k.to_be_bytes());
                    let root = Hash(root);
                    let text = Checkpoint::new(&self.cluster.origin, size, root).format();
                    let signed = note_key.sign_text(&text).expect("a checkpoint is a note");
                    ConsensusMessage::CheckpointSignature {
                        size,
                        root,
                        replica: id,
                        note_signature: Signature64(signed.signature.try_into().expect("Ed25519")),
                    }
                })
                .collect()
        } else {
            Vec::new()
        };
        let mut k = 0usize;
        while Instant::now() < until {
            let Some(connection) = self.peer_connection(target).await else {
                counts.failed.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            if attack == Attack::PeerGiantFrames {
                // As many streams as the target grants, each declaring the
                // largest frame and sending 1 KiB of it.
                let mut held = Vec::new();
                while Instant::now() < until {
                    let opened =
                        tokio::time::timeout(Duration::from_millis(200), connection.open_uni())
                            .await;
                    let Ok(Ok(mut stream)) = opened else {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    };
                    let header = (wire::MAX_MESSAGE_BYTES as u32).to_be_bytes();
                    if stream.write_all(&header).await.is_err()
                        || stream.write_all(&[0u8; 1024]).await.is_err()
                    {
                        counts.failed.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    counts.sent.fetch_add(1, Ordering::Relaxed);
                    held.push(stream);
                }
                return;
            }
            let Ok(mut stream) = connection.open_uni().await else {
                counts.failed.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let mut batch = Vec::with_capacity(128 << 10);
            let mut batched = 0u64;
            while Instant::now() < until {
                let message = match attack {
                    Attack::FarFuture => {
                        round += n;
                        let entries: Vec<Entry> = (0..8u64)
                            .map(|e| {
                                let mut bytes = vec![0u8; wire::MAX_ENTRY_BYTES];
                                bytes[..8].copy_from_slice(&round.to_be_bytes());
                                bytes[8..16].copy_from_slice(&e.to_be_bytes());
                                Entry::new(bytes).expect("the largest entry")
                            })
                            .collect();
                        let block = Block {
                            epoch,
                            round,
                            author: id,
                            parent_id: crypto::genesis_id(epoch),
                            justify: genesis_qc(epoch),
                            entries: BoundedVec::new(entries).expect("eight"),
                        };
                        let signature = signer
                            .sign(&crypto::proposal_message(epoch, &crypto::block_id(&block)));
                        ConsensusMessage::Proposal {
                            block,
                            timeout_cert: None,
                            signature,
                        }
                    }
                    Attack::SignatureFlood => {
                        k += 1;
                        signatures[k % signatures.len()].clone()
                    }
                    Attack::SyncFlood => ConsensusMessage::SyncRequest {
                        from_height: 1,
                        max_blocks: wire::MAX_SYNC_BLOCKS as u16,
                    },
                    Attack::LieCommittedHeight => ConsensusMessage::Certificates {
                        high_qc: genesis_qc(epoch),
                        high_tc: None,
                        committed_height: 1 << 50,
                    },
                    _ => return,
                };
                // Frames go out in writes of 64 KiB or more: one write per
                // tiny frame costs the attacker's QUIC stack more than the
                // frames cost the target, and on one machine that would
                // come out of the replicas' cores.
                batch.extend_from_slice(&wire::encode_frame(&message));
                batched += 1;
                if batch.len() < 64 << 10 && attack != Attack::LieCommittedHeight {
                    continue;
                }
                if stream.write_all(&batch).await.is_err() {
                    counts.failed.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                counts.sent.fetch_add(batched, Ordering::Relaxed);
                pace.sent(batch.len()).await;
                batch.clear();
                batched = 0;
                if attack == Attack::LieCommittedHeight {
                    // Often enough to keep every replica asking it.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }

    /// A fresh client connection to `target` with `transport`.
    async fn client_connection(
        &self,
        target: usize,
        transport: Option<quinn::TransportConfig>,
    ) -> Option<(quinn::Endpoint, quinn::Connection)> {
        let key = ed25519_dalek::SigningKey::generate(&mut crate::system_rng());
        let mut config = net::client_config(
            &key,
            &self.cluster.public_keys(),
            net::ALPN_CLIENT,
            &net::Limits::default(),
        )
        .ok()?;
        if let Some(t) = transport {
            config.transport_config(Arc::new(t));
        }
        let addr = self.cluster.addresses[target];
        let endpoint = net::client_endpoint(addr).ok()?;
        let connection = endpoint
            .connect_with(config, addr, net::SERVER_NAME)
            .ok()?
            .await
            .ok()?;
        Some((endpoint, connection))
    }

    async fn client_attack(
        &self,
        attack: Attack,
        target: usize,
        until: Instant,
        counts: &AttackCounts,
    ) {
        let largest_get = wire::encode_frame(&ClientRequest::GetEntries {
            start: 0,
            count: wire::MAX_GET_ENTRIES as u32,
        });
        match attack {
            Attack::ConnectionFlood => {
                let mut held = Vec::new();
                while Instant::now() < until && held.len() < 4096 {
                    match tokio::time::timeout(
                        Duration::from_secs(2),
                        self.client_connection(target, None),
                    )
                    .await
                    {
                        Ok(Some(c)) => {
                            counts.sent.fetch_add(1, Ordering::Relaxed);
                            held.push(c);
                        }
                        _ => {
                            counts.failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                tokio::time::sleep(until.saturating_duration_since(Instant::now())).await;
            }
            Attack::HalfSentFrames => {
                let mut held = Vec::new();
                let mut connections = Vec::new();
                while Instant::now() < until {
                    let Some((endpoint, connection)) = self.client_connection(target, None).await
                    else {
                        counts.failed.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    };
                    for _ in 0..64 {
                        let Ok(Ok((mut send, recv))) =
                            tokio::time::timeout(Duration::from_millis(200), connection.open_bi())
                                .await
                        else {
                            break;
                        };
                        let header = (wire::MAX_MESSAGE_BYTES as u32).to_be_bytes();
                        if send.write_all(&header).await.is_err()
                            || send.write_all(&[0u8; 1024]).await.is_err()
                        {
                            counts.failed.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        counts.sent.fetch_add(1, Ordering::Relaxed);
                        held.push((send, recv));
                    }
                    // Keep the connection (and its streams) until the end.
                    connections.push((endpoint, connection));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            Attack::NeverRead | Attack::LargestGetEntries => {
                let never_read = attack == Attack::NeverRead;
                let transport = never_read.then(|| {
                    let mut t = quinn::TransportConfig::default();
                    t.stream_receive_window(quinn::VarInt::from_u32(64 << 10));
                    t
                });
                let Some((_endpoint, connection)) = self.client_connection(target, transport).await
                else {
                    counts.failed.fetch_add(1, Ordering::Relaxed);
                    return;
                };
                let mut unread = Vec::new();
                // Paced as if each answer were 1 MiB (what it costs the
                // replica to read and send, more or less).
                let mut pace = Pace::new(self.bytes_per_s_per_target);
                while Instant::now() < until {
                    let Ok(Ok((mut send, mut recv))) =
                        tokio::time::timeout(Duration::from_millis(500), connection.open_bi())
                            .await
                    else {
                        continue;
                    };
                    if send.write_all(&largest_get).await.is_err() {
                        counts.failed.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    let _ = send.finish();
                    counts.sent.fetch_add(1, Ordering::Relaxed);
                    pace.sent(1 << 20).await;
                    if never_read {
                        unread.push(recv);
                    } else if net::read_frame(&mut recv, wire::MAX_MESSAGE_BYTES)
                        .await
                        .is_err()
                    {
                        counts.failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Attack::AppendFlood => {
                // Raw requests, not `Client::append`: a flooder does not
                // wait as `QuotaExceeded` asks, it sends again at once,
                // round robin over the replicas, at the attack's pace in
                // all (each request is 4 MiB of new entries).
                let options = ClientOptions {
                    submitter_key: self.submitter_key.clone(),
                    ..ClientOptions::default()
                };
                let Ok(client) = Client::new(self.cluster.clone(), options) else {
                    return;
                };
                let n = self.cluster.n();
                let pace = Arc::new(tokio::sync::Mutex::new(Pace::new(
                    self.bytes_per_s_per_target,
                )));
                let mut tasks = JoinSet::new();
                for t in 0..16u64 {
                    let (client, pace) = (client.clone(), pace.clone());
                    tasks.spawn(async move {
                        let mut sent = 0u64;
                        let mut failed = 0u64;
                        let mut batch = 0u64;
                        while Instant::now() < until {
                            batch += 1;
                            let entries: Vec<Entry> = (0..4096u64)
                                .map(|i| {
                                    let mut e = vec![0u8; 1024];
                                    e[..8].copy_from_slice(&(target as u64).to_be_bytes());
                                    e[8..16].copy_from_slice(&t.to_be_bytes());
                                    e[16..24].copy_from_slice(&batch.to_be_bytes());
                                    e[24..32].copy_from_slice(&i.to_be_bytes());
                                    Entry::new(e).expect("1 KiB")
                                })
                                .collect();
                            let request = ClientRequest::AppendMultiproof {
                                entries: BoundedVec::new(entries).expect("4096"),
                            };
                            pace.lock().await.sent(4096 * 1024).await;
                            let replica = ((t + batch) % n as u64) as usize;
                            match tokio::time::timeout(
                                until.saturating_duration_since(Instant::now()),
                                client.request(replica, &request),
                            )
                            .await
                            {
                                Ok(Ok(wire::ClientResponse::ReceiptMultiproof { .. })) => sent += 1,
                                _ => failed += 1,
                            }
                        }
                        (sent, failed)
                    });
                }
                while let Some(result) = tasks.join_next().await {
                    if let Ok((sent, failed)) = result {
                        counts.sent.fetch_add(sent, Ordering::Relaxed);
                        counts.failed.fetch_add(failed, Ordering::Relaxed);
                    }
                }
            }
            _ => {}
        }
    }
}
