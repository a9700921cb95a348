//! The opt-in Prometheus endpoint (`metrics_listen` in `replica-N.toml`):
//! `GET /metrics` in the Prometheus text format, over plain HTTP.
//!
//! The core loop publishes a [`CoreStatus`] snapshot after every step; the
//! driver's own counters are atomics. A scrape reads both and never waits
//! for the core.

use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::Arc;

use std::sync::atomic::Ordering;

use bytes::Bytes;
use http_body_util::Full;
use tokio::net::TcpListener;

use std::time::{Duration, Instant};

use tracing::warn;

use super::core_loop::SLOW_STEP;
use super::http_server::{self, HttpLimits};
use super::shared::Shared;

fn metric(out: &mut String, name: &str, kind: &str, help: &str, value: u64) {
    let _ = write!(
        out,
        "# HELP bftlog_{name} {help}\n# TYPE bftlog_{name} {kind}\nbftlog_{name} {value}\n"
    );
}

/// Renders every metric of a replica.
pub(crate) fn render(shared: &Shared) -> String {
    let status = shared.status.lock().expect("status lock").clone();
    let c = &status.consensus;
    let d = &shared.metrics;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let mut out = String::with_capacity(4096);
    let counters: [(&str, &str, u64); 58] = [
        (
            "blocks_committed_total",
            "blocks committed",
            c.blocks_committed,
        ),
        (
            "entries_committed_total",
            "entries committed",
            c.entries_committed,
        ),
        (
            "proposals_sent_total",
            "blocks proposed as leader",
            c.proposals_sent,
        ),
        ("votes_sent_total", "votes sent", c.votes_sent),
        (
            "timeouts_sent_total",
            "round timeouts sent (local timer expired)",
            c.timeouts_sent,
        ),
        (
            "qcs_formed_total",
            "quorum certificates formed",
            c.qcs_formed,
        ),
        (
            "tcs_formed_total",
            "timeout certificates formed",
            c.tcs_formed,
        ),
        (
            "view_changes_total",
            "rounds entered through a timeout certificate",
            c.view_changes,
        ),
        (
            "proposals_incomplete_total",
            "proposals by leaf hash that named entries this replica lacked",
            c.proposals_incomplete,
        ),
        (
            "entries_requested_total",
            "entries asked of a leader because its proposal named them",
            c.entries_requested,
        ),
        (
            "entries_served_total",
            "entries sent in answer to other replicas' entry requests",
            c.entries_served,
        ),
        (
            "sync_requests_sent_total",
            "state sync requests sent",
            c.sync_requests_sent,
        ),
        (
            "store_writes_total",
            "write transactions of the core loop (votes wait for them)",
            load(&d.store_writes),
        ),
        (
            "store_flushes_total",
            "those write transactions flushed to disk (safety state or voted blocks; commits alone wait for the next)",
            load(&d.store_flushes),
        ),
        (
            "store_write_microseconds_total",
            "time spent in those writes, in microseconds",
            load(&d.store_write_micros),
        ),
        (
            "store_writes_slow_total",
            "durable writes that took 100 ms or longer (each is also logged)",
            load(&d.store_writes_slow),
        ),
        (
            "runtime_stalls_total",
            "times the network runtime woke a 10 ms timer 100 ms or more late (each is also logged)",
            load(&d.runtime_stalls),
        ),
        (
            "quorum_checkpoints_total",
            "quorum checkpoints stored",
            load(&d.quorum_checkpoints),
        ),
        (
            "quorum_checkpoint_lag_microseconds_total",
            "microseconds from this replica's commit of a size to storing its quorum checkpoint, summed",
            load(&d.quorum_checkpoint_lag_micros),
        ),
        (
            "cluster_signed_checkpoints_total",
            "stored checkpoints that got the cluster signature",
            load(&d.cluster_signed_checkpoints),
        ),
        (
            "cluster_signature_lag_microseconds_total",
            "microseconds from this replica's commit of a size to its checkpoint's cluster signature, summed",
            load(&d.cluster_signature_lag_micros),
        ),
        (
            "core_steps_slow_total",
            "core loop steps (inputs handled, writes included) that took 100 ms or longer (each is also logged)",
            load(&d.core_steps_slow),
        ),
        (
            "peer_connects_total",
            "connections to peers established (reconnections included)",
            load(&d.peer_connects),
        ),
        (
            "sync_served_from_storage_total",
            "sync requests answered from redb",
            load(&d.sync_served_from_storage),
        ),
        (
            "checkpoints_signed_total",
            "checkpoints this replica signed",
            c.checkpoints_signed,
        ),
        (
            "checkpoints_refused_total",
            "checkpoints refused as contradicting one signed before (safety alarm)",
            c.checkpoints_refused,
        ),
        (
            "cluster_key_shares_sent_total",
            "cluster-key signature shares this replica sent",
            c.threshold_shares_sent,
        ),
        (
            "cluster_signatures_total",
            "cluster signatures this replica combined from a signing set's shares",
            c.cluster_signatures,
        ),
        (
            "cluster_key_bad_shares_total",
            "cluster-key shares found invalid by FROST's identifiable abort (their signers are also counted in invalid signatures)",
            c.bad_threshold_shares,
        ),
        (
            "cluster_key_nonces_generated_total",
            "cluster-key nonces generated (each made durable before its commitment was published)",
            c.nonces_generated,
        ),
        (
            "cluster_recovery_sessions_total",
            "recovery sessions this replica started as a coordinator for a checkpoint whose signing set did not deliver",
            c.recovery_sessions,
        ),
        (
            "cluster_recovery_shares_sent_total",
            "cluster-key shares this replica sent in recovery sessions",
            c.recovery_shares_sent,
        ),
        (
            "cluster_signatures_received_total",
            "cluster signatures a peer sent this replica and it verified",
            c.cluster_signatures_received,
        ),
        (
            "cluster_signatures_abandoned_total",
            "committed checkpoints that left the recovery window without their cluster signature",
            c.cluster_signatures_abandoned,
        ),
        (
            "client_requests_total",
            "client requests received",
            load(&d.client_requests),
        ),
        (
            "client_errors_total",
            "client requests answered with an error",
            load(&d.client_errors),
        ),
        (
            "proof_requests_total",
            "inclusion and consistency proof requests",
            load(&d.proof_requests),
        ),
        (
            "proofs_requested_total",
            "inclusion and consistency proofs asked for (a batched request counts each)",
            load(&d.proofs_requested),
        ),
        (
            "appends_overloaded_total",
            "appends answered Overloaded (inbox lane, mempool or waiting entries full)",
            load(&d.appends_overloaded),
        ),
        (
            "appends_over_quota_total",
            "appends answered QuotaExceeded (the submitter's admission quota)",
            load(&d.appends_over_quota),
        ),
        (
            "appends_forbidden_total",
            "appends answered Forbidden (keys mode, the client's key is not listed)",
            load(&d.appends_forbidden),
        ),
        (
            "appends_larger_than_quota_total",
            "appends answered TooLarge for exceeding the submitter's burst or daily bytes",
            load(&d.appends_larger_than_quota),
        ),
        (
            "appends_over_share_total",
            "appends answered Overloaded because their client held its share of the mempool or of the waiting entries",
            load(&d.appends_over_share),
        ),
        (
            "admission_reloads_total",
            "submitters-file reloads that took",
            load(&d.admission_reloads),
        ),
        (
            "admission_reload_failures_total",
            "submitters-file reloads that failed (the previous list stays in force)",
            load(&d.admission_reload_failures),
        ),
        (
            "tile_requests_total",
            "tiles HTTP requests (checkpoint, tiles, entry bundles)",
            load(&d.tile_requests),
        ),
        (
            "tile_requests_failed_total",
            "tiles HTTP requests answered with an error status (malformed path, beyond the tree, storage)",
            load(&d.tile_requests_failed),
        ),
        (
            "tiles_connections_refused_total",
            "tiles HTTP connections refused over the per-address cap",
            load(&d.tiles_connections_refused),
        ),
        (
            "tiles_uploaded_total",
            "tiles and entry bundles published",
            load(&d.tiles_uploaded),
        ),
        (
            "tiles_publish_errors_total",
            "publishing rounds that failed (retried with a backoff)",
            load(&d.tiles_publish_errors),
        ),
        (
            "peer_inputs_dropped_total",
            "peer messages dropped because that peer's lane of the core loop's inbox was full",
            load(&d.peer_inputs_dropped),
        ),
        (
            "connections_refused_total",
            "client connection attempts refused (over the total or per-address cap)",
            load(&d.connections_refused),
        ),
        (
            "connections_retried_total",
            "client connection attempts asked to prove their address (QUIC Retry)",
            load(&d.connections_retried),
        ),
        (
            "client_requests_timed_out_total",
            "client requests reset for missing their read or write deadline",
            load(&d.client_requests_timed_out),
        ),
        (
            "requests_over_byte_budget_total",
            "client requests answered Overloaded for the in-flight request byte budget",
            load(&d.requests_over_byte_budget),
        ),
        (
            "sync_storage_errors_total",
            "sync requests from storage whose read failed (left unanswered)",
            load(&d.sync_storage_errors),
        ),
        (
            "sync_rate_limited_total",
            "sync requests from storage dropped over the per-peer rate",
            load(&d.sync_rate_limited),
        ),
        (
            "witness_cosignatures_total",
            "verified witness cosignatures received",
            load(&d.witness_cosignatures),
        ),
    ];
    for (name, help, value) in counters {
        metric(&mut out, name, "counter", help, value);
    }
    metric(
        &mut out,
        "witness_failures_total",
        "counter",
        "witness submissions that failed",
        load(&d.witness_failures),
    );
    metric(
        &mut out,
        "peer_frames_dropped_total",
        "counter",
        "outgoing peer frames dropped because a peer queue was full",
        load(&d.peer_frames_dropped),
    );
    metric(
        &mut out,
        "messages_oversized_total",
        "counter",
        "outgoing peer messages dropped for exceeding the frame limit (a bug if ever non-zero)",
        load(&d.messages_oversized),
    );
    out.push_str(
        "# HELP bftlog_rejected_messages_total peer messages rejected, by reason\n# TYPE bftlog_rejected_messages_total counter\n",
    );
    for (reason, value) in [
        ("undecodable", load(&d.peer_messages_malformed)),
        ("malformed", c.malformed_messages),
        ("invalid_signature", c.invalid_signatures),
        ("invalid_certificate", c.invalid_certificates),
        ("equivocation", c.equivocations),
        ("stale", c.stale_messages),
        ("ahead", c.ahead_messages),
        ("rate_limited", c.rate_limited_messages),
        ("unknown_peer", load(&d.peers_rejected)),
        ("forward_dropped", c.forwarded_dropped),
    ] {
        let _ = writeln!(
            out,
            "bftlog_rejected_messages_total{{reason=\"{reason}\"}} {value}"
        );
    }
    let (inbox_peer_bytes, inbox_client_bytes) = shared.inbox.queued_bytes();
    let gauges: [(&str, &str, u64); 13] = [
        ("round", "current consensus round", status.round),
        (
            "leader",
            "the current round's leader as this replica sees it (replica id)",
            status.leader,
        ),
        (
            "peers_connected",
            "peers this replica has a connection to for sending",
            load(&d.peers_connected),
        ),
        (
            "committed_height",
            "height of the last committed block",
            status.committed_height,
        ),
        (
            "tree_size",
            "entries in the committed tree",
            status.tree_size,
        ),
        (
            "mempool_entries",
            "entries waiting in the mempool",
            status.mempool_entries as u64,
        ),
        (
            "waiting_entries",
            "appended entries waiting for receipts",
            status.waiting_entries as u64,
        ),
        (
            "latest_checkpoint_size",
            "size of the latest stored quorum checkpoint",
            status.latest_checkpoint_size,
        ),
        (
            "latest_witnessed_size",
            "size of the latest checkpoint meeting the witness quorum",
            status.latest_witnessed_size,
        ),
        (
            "tiles_published_size",
            "size of the latest checkpoint published with its tiles ([tiles] publish)",
            shared.metrics.tiles_published_size.load(Ordering::Relaxed),
        ),
        (
            "client_connections",
            "client connections open or in their handshake",
            shared.connections.open() as u64,
        ),
        (
            "inbox_peer_bytes",
            "bytes of peers' messages queued for the core loop",
            inbox_peer_bytes as u64,
        ),
        (
            "inbox_client_bytes",
            "bytes of clients' appends queued for the core loop",
            inbox_client_bytes as u64,
        ),
    ];
    for (name, help, value) in gauges {
        metric(&mut out, name, "gauge", help, value);
    }
    out
}

/// Connections to the metrics endpoint served at once; more wait in the
/// kernel's backlog.
pub const METRICS_CONNECTIONS: usize = 64;
/// Connections one address may hold to the metrics endpoint.
pub const METRICS_CONNECTIONS_PER_IP: usize = 8;
/// Time to send a request head, and to take a response.
pub const METRICS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves `GET /metrics` on `listener` until the task is aborted.
///
/// Bounded like the witness server: at most [`METRICS_CONNECTIONS`] at
/// once and [`METRICS_CONNECTIONS_PER_IP`] per address, a request head
/// within [`METRICS_TIMEOUT`], a response taken within it too.
pub(crate) async fn serve(shared: Arc<Shared>, listener: TcpListener) {
    let limits = HttpLimits {
        connections: METRICS_CONNECTIONS,
        per_ip: METRICS_CONNECTIONS_PER_IP,
        timeout: METRICS_TIMEOUT,
    };
    let handle = move |req: hyper::Request<hyper::body::Incoming>| {
        let shared = shared.clone();
        async move {
            let response = if req.method() == hyper::Method::GET && req.uri().path() == "/metrics" {
                hyper::Response::builder()
                    .header("content-type", "text/plain; version=0.0.4")
                    .body(Full::new(Bytes::from(render(&shared))))
            } else {
                hyper::Response::builder()
                    .status(404)
                    .body(Full::new(Bytes::from_static(b"not found\n")))
            };
            response.expect("static response")
        }
    };
    http_server::serve(listener, limits, || {}, handle).await;
}

/// Binds the metrics listener (so a bad address fails at start).
pub(crate) async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Sleeps 10 ms at a time, forever, and reports how late each wake-up
/// was: a late timer means every other task of the runtime waited too.
pub async fn report_timer_lateness(mut report: impl FnMut(Duration)) {
    let tick = Duration::from_millis(10);
    loop {
        let asleep = Instant::now();
        tokio::time::sleep(tick).await;
        report(asleep.elapsed().saturating_sub(tick));
    }
}

/// Logs and counts when the network runtime falls behind by [`SLOW_STEP`]
/// or more: every peer message and client request of this replica waited.
pub(super) async fn runtime_watchdog(shared: Arc<Shared>) {
    report_timer_lateness(|late| {
        if late >= SLOW_STEP {
            shared
                .metrics
                .runtime_stalls
                .fetch_add(1, Ordering::Relaxed);
            warn!(
                replica = shared.cfg.id,
                late_ms = late.as_millis() as u64,
                "network runtime stalled: peer messages and client requests waited"
            );
        }
    })
    .await
}
