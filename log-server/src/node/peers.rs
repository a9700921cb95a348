//! The peer network: one task per peer that keeps a connection and writes
//! the core loop's frames to it, and the accept loop that authenticates
//! incoming connections (peer or client, by ALPN) and reads peers'
//! messages into the core loop's queue.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bftlog_spec::wire::{self, ConsensusMessage};
use tracing::{debug, error, warn};

use super::client_api;
use super::connections::Admit;
use super::queues::PeerOutboxReceiver;
use super::shared::{CoreInput, Shared};
use super::sync_from_storage;
use crate::net;

/// How long a link to a peer must have lasted for a redial after it breaks
/// to start without a backoff.
const PEER_LINK_STABLE: Duration = Duration::from_secs(1);

/// Keeps a connection to one peer and writes its queued frames on a
/// long-lived unidirectional stream, reconnecting with backoff.
pub(super) async fn peer_sender(
    shared: Arc<Shared>,
    endpoint: quinn::Endpoint,
    peer: u16,
    mut rx: PeerOutboxReceiver,
) {
    let cluster = &shared.cfg.cluster;
    let addr = cluster.addresses[peer as usize];
    let config = match net::client_config(
        &shared.cfg.key,
        &[*cluster.keys[peer as usize].public_key()],
        net::ALPN_PEER,
        &shared.cfg.limits,
    ) {
        Ok(c) => c,
        Err(e) => {
            error!(peer, error = %e, "cannot build the peer TLS configuration");
            return;
        }
    };
    let mut backoff = Duration::from_millis(50);
    let mut logged = false;
    loop {
        let connecting = match endpoint.connect_with(config.clone(), addr, net::SERVER_NAME) {
            Ok(connecting) => connecting,
            Err(e) => {
                error!(peer, error = %e, "cannot dial peer");
                return;
            }
        };
        // An attempt whose first packet found no listener (the peer not
        // started yet, or restarting) waits for the handshake's
        // retransmissions, which back off; a fresh attempt every
        // PEER_CONNECT_ATTEMPT brings the link up soon after the peer is.
        let failure = match tokio::time::timeout(net::PEER_CONNECT_ATTEMPT, connecting).await {
            Ok(Ok(connection)) => {
                let connected_at = tokio::time::Instant::now();
                logged = false;
                debug!(replica = shared.cfg.id, peer, "connected to peer");
                shared.metrics.peer_connects.fetch_add(1, Ordering::Relaxed);
                shared
                    .metrics
                    .peers_connected
                    .fetch_add(1, Ordering::Relaxed);
                if let Ok(mut stream) = connection.open_uni().await {
                    while let Some(frame) = rx.recv().await {
                        if stream.write_all(&frame).await.is_err() {
                            break;
                        }
                    }
                }
                shared
                    .metrics
                    .peers_connected
                    .fetch_sub(1, Ordering::Relaxed);
                if rx.is_closed() && rx.is_empty() {
                    return;
                }
                // A link that worked for a while is dialled again at once;
                // one that broke right after its handshake (a peer that
                // closes what it accepted) is retried with the backoff, not
                // at the handshake's pace.
                if connected_at.elapsed() >= PEER_LINK_STABLE {
                    backoff = Duration::from_millis(50);
                    continue;
                }
                Some("the link broke right after its handshake".to_owned())
            }
            Ok(Err(e)) => Some(e.to_string()),
            // The attempt itself took its time: dial again at once.
            Err(_) => None,
        };
        if !logged {
            debug!(
                replica = shared.cfg.id,
                peer,
                error = failure.as_deref().unwrap_or("no answer"),
                "peer unreachable; retrying"
            );
            logged = true;
        }
        // Drop what piles up while the peer is away: sync repairs it.
        rx.clear();
        if rx.is_closed() {
            return; // the replica is stopping
        }
        if failure.is_some() {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }
}

pub(super) async fn accept_loop(shared: Arc<Shared>, endpoint: quinn::Endpoint) {
    while let Some(incoming) = endpoint.accept().await {
        let remote = incoming.remote_address();
        let slot = match shared
            .connections
            .admit(remote, incoming.remote_address_validated())
        {
            Admit::Take(slot) => slot,
            Admit::Retry if incoming.may_retry() => {
                shared
                    .metrics
                    .connections_retried
                    .fetch_add(1, Ordering::Relaxed);
                let _ = incoming.retry();
                continue;
            }
            Admit::Retry => {
                // A Retry token that did not validate: refuse.
                incoming.refuse();
                continue;
            }
            Admit::Refuse(why) => {
                shared
                    .metrics
                    .connections_refused
                    .fetch_add(1, Ordering::Relaxed);
                debug!(replica = shared.cfg.id, %remote, why, "refused a connection");
                incoming.refuse();
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let Ok(connection) = incoming.await else {
                return;
            };
            match net::alpn(&connection).as_deref() {
                Some(net::ALPN_PEER) => {
                    // Peers are not clients: their connections do not count.
                    drop(slot);
                    let replicas = shared.cfg.cluster.public_keys();
                    match net::peer_replica(&connection, &replicas, shared.cfg.id) {
                        Some(peer) => serve_peer(shared, connection, peer).await,
                        None => {
                            shared
                                .metrics
                                .peers_rejected
                                .fetch_add(1, Ordering::Relaxed);
                            warn!(
                                replica = shared.cfg.id,
                                remote = %connection.remote_address(),
                                "rejected a peer connection with an unknown key"
                            );
                            connection.close(1u32.into(), b"unknown replica key");
                        }
                    }
                }
                Some(net::ALPN_CLIENT) => {
                    client_api::serve_client(shared, connection).await;
                    drop(slot);
                }
                _ => connection.close(1u32.into(), b"unknown protocol"),
            }
        });
    }
}

/// Reads consensus messages from one authenticated peer.
async fn serve_peer(shared: Arc<Shared>, connection: quinn::Connection, peer: u16) {
    while let Ok(mut stream) = connection.accept_uni().await {
        let shared = shared.clone();
        let connection = connection.clone();
        tokio::spawn(async move {
            loop {
                // At most `peer_messages_per_s` from one peer: past it the
                // stream waits unread, and flow control holds the peer
                // back (a flood of small messages would otherwise cost
                // the replica's network threads and core loop a few
                // microseconds each, without bound).
                shared.peer_message_rate.wait_for_one(peer).await;
                match net::read_frame(&mut stream, shared.cfg.limits.max_frame_bytes).await {
                    Ok(Some(frame)) => match wire::decode::<ConsensusMessage>(&frame) {
                        Ok(message) => {
                            // Sync below the core's in-memory window is
                            // served here, from a read snapshot, not by
                            // the core loop.
                            if sync_from_storage::wanted(&shared, &message) {
                                sync_from_storage::serve(&shared, peer, message).await;
                                continue;
                            }
                            let input = CoreInput::Peer {
                                from: peer,
                                message: Box::new(message),
                            };
                            // Waits while this peer's lane is full: the
                            // stream is not read meanwhile, and QUIC flow
                            // control holds the peer back.
                            let bytes = frame.len();
                            drop(frame);
                            if shared
                                .inbox
                                .push_peer_waiting(peer, input, bytes)
                                .await
                                .is_err()
                            {
                                shared
                                    .metrics
                                    .peer_inputs_dropped
                                    .fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Err(e) => {
                            shared
                                .metrics
                                .peer_messages_malformed
                                .fetch_add(1, Ordering::Relaxed);
                            debug!(replica = shared.cfg.id, peer, error = %e, "malformed peer message");
                        }
                    },
                    Ok(None) => return,
                    Err(e) => {
                        // A framing error desynchronises the stream: close it.
                        shared
                            .metrics
                            .peer_messages_malformed
                            .fetch_add(1, Ordering::Relaxed);
                        debug!(replica = shared.cfg.id, peer, error = %e, "peer stream failed");
                        connection.close(2u32.into(), b"bad frame");
                        return;
                    }
                }
            }
        });
    }
}
