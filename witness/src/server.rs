//! The HTTP/1.1 server (hyper).
//!
//! Routes, under a configurable prefix (empty by default):
//!
//! | method | path | answer |
//! |---|---|---|
//! | POST | `/add-checkpoint` | C2SP tlog-witness |
//! | GET | `/<hex SHA-256(origin)>/checkpoint` | latest cosigned checkpoint |
//! | GET | `/evidence` | one line per kept item |
//! | GET | `/evidence/<id>` | split-view evidence (`spec/evidence.md`) |
//! | GET | `/rejected/<id>` | a kept unproven inconsistent submission |
//! | GET | `/metrics` | Prometheus text counters |
//!
//! Signature checks run on the request tasks; decisions and storage run on
//! one writer thread that takes every queued submission as one batch and
//! one durable transaction (group commit). When the writer's queue is full
//! the server answers 429 with `Retry-After`.

use crate::witness::{Checked, Response, Witness, evidence_listing};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, oneshot};

use crate::http_guard::{ConnectionCaps, WriteTimeout};
use crate::request::MAX_BODY_BYTES;

/// Submissions waiting for the writer; beyond this the server sheds load.
pub const WRITER_QUEUE: usize = 4096;
/// Most submissions decided in one transaction.
pub const MAX_BATCH: usize = 512;
/// Most connections served at once; more wait in the kernel backlog.
pub const MAX_CONNECTIONS: usize = 4096;

#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// URL path prefix, e.g. `/witness` (no trailing slash); empty for none.
    pub prefix: String,
    /// A connection that does not send a full request head within this
    /// long (including an idle keep-alive connection) is closed, and a
    /// request whose body has not fully arrived this long after its head
    /// is answered 408: a client trickling bytes must not hold one of the
    /// `MAX_CONNECTIONS` slots for ever.
    pub header_read_timeout_ms: u64,
    /// Connections one client address may hold open. Beyond it a new one
    /// is closed at once, so one client cannot take every slot.
    pub max_connections_per_ip: usize,
    /// A response the client has not taken within this long (no write
    /// progress) ends its connection.
    pub write_timeout_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            prefix: String::new(),
            header_read_timeout_ms: 30_000,
            max_connections_per_ip: 32,
            write_timeout_ms: 30_000,
        }
    }
}

/// Counters exported at `GET /metrics`.
#[derive(Default, Debug)]
pub struct Metrics {
    pub requests: AtomicU64,
    pub cosigned: AtomicU64,
    pub conflicts: AtomicU64,
    pub inconsistent: AtomicU64,
    pub rejected_malformed: AtomicU64,
    pub rejected_forbidden: AtomicU64,
    pub rejected_unknown_origin: AtomicU64,
    pub overloaded: AtomicU64,
    pub internal_errors: AtomicU64,
    pub batches: AtomicU64,
    /// Connections closed at once: their address had too many open.
    pub connections_refused: AtomicU64,
}

impl Metrics {
    fn render(&self) -> String {
        let counters = [
            ("requests", &self.requests, "HTTP requests received"),
            ("cosigned", &self.cosigned, "checkpoints cosigned (200)"),
            ("conflicts", &self.conflicts, "409 answers"),
            ("inconsistent", &self.inconsistent, "422 answers"),
            (
                "rejected_malformed",
                &self.rejected_malformed,
                "400 and 413 answers",
            ),
            (
                "rejected_forbidden",
                &self.rejected_forbidden,
                "403 answers",
            ),
            (
                "rejected_unknown_origin",
                &self.rejected_unknown_origin,
                "404 answers for add-checkpoint",
            ),
            ("overloaded", &self.overloaded, "429 answers"),
            ("internal_errors", &self.internal_errors, "500 answers"),
            ("batches", &self.batches, "durable write transactions"),
            (
                "connections_refused",
                &self.connections_refused,
                "connections closed at once: their address had too many open",
            ),
        ];
        let mut out = String::new();
        for (name, value, help) in counters {
            out.push_str(&format!(
                "# HELP bftlog_witness_{name}_total {help}\n# TYPE bftlog_witness_{name}_total counter\nbftlog_witness_{name}_total {}\n",
                value.load(Ordering::Relaxed)
            ));
        }
        out
    }

    fn count(&self, status: u16) {
        let counter = match status {
            200 => &self.cosigned,
            409 => &self.conflicts,
            422 => &self.inconsistent,
            400 | 413 => &self.rejected_malformed,
            403 => &self.rejected_forbidden,
            404 => &self.rejected_unknown_origin,
            429 => &self.overloaded,
            _ => &self.internal_errors,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

struct Submission {
    checked: Checked,
    reply: oneshot::Sender<Response>,
}

struct Shared {
    witness: Arc<Witness>,
    config: ServerConfig,
    writer: SyncSender<Submission>,
    metrics: Arc<Metrics>,
}

fn now_unix_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn writer_loop(witness: Arc<Witness>, queue: Receiver<Submission>, metrics: Arc<Metrics>) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(s) => batch.push(s),
                Err(_) => break,
            }
        }
        let checked: Vec<Checked> = batch.iter().map(|s| s.checked.clone()).collect();
        let outcomes = witness.commit(&checked, now_unix_s());
        metrics.batches.fetch_add(1, Ordering::Relaxed);
        for (submission, outcome) in batch.into_iter().zip(outcomes) {
            let _ = submission.reply.send(outcome.response());
        }
    }
}

/// A running witness server.
pub struct Server {
    local_addr: SocketAddr,
    metrics: Arc<Metrics>,
    shutdown: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Binds `addr` and serves until [`Server::shutdown`].
    pub async fn start(
        witness: Arc<Witness>,
        addr: SocketAddr,
        config: ServerConfig,
    ) -> std::io::Result<Server> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        let metrics = Arc::new(Metrics::default());
        let (writer, queue) = sync_channel(WRITER_QUEUE);
        {
            let witness = witness.clone();
            let metrics = metrics.clone();
            std::thread::Builder::new()
                .name("witness-writer".into())
                .spawn(move || writer_loop(witness, queue, metrics))?;
        }
        let shared = Arc::new(Shared {
            witness,
            config,
            writer,
            metrics: metrics.clone(),
        });
        let (shutdown, mut stop) = oneshot::channel();
        // Connection tasks end when this flips, so a stopped server also
        // stops answering on kept-alive connections.
        let (closing_tx, closing) = tokio::sync::watch::channel(false);
        let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let caps = ConnectionCaps::new(shared.config.max_connections_per_ip);
        let task = tokio::spawn(async move {
            loop {
                let permit = tokio::select! {
                    _ = &mut stop => break,
                    permit = connections.clone().acquire_owned() => permit.expect("never closed"),
                };
                let (stream, remote) = tokio::select! {
                    _ = &mut stop => break,
                    accepted = listener.accept() => match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                let Some(guard) = caps.try_take(remote.ip()) else {
                    shared
                        .metrics
                        .connections_refused
                        .fetch_add(1, Ordering::Relaxed);
                    drop(stream);
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let stream = WriteTimeout::new(
                    stream,
                    Duration::from_millis(shared.config.write_timeout_ms),
                );
                let shared = shared.clone();
                let closing = closing.clone();
                let header_timeout = Duration::from_millis(shared.config.header_read_timeout_ms);
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let shared = shared.clone();
                        async move { Ok::<_, std::convert::Infallible>(handle(&shared, req).await) }
                    });
                    let mut builder = http1::Builder::new();
                    builder
                        .timer(hyper_util::rt::TokioTimer::new())
                        .header_read_timeout(header_timeout);
                    let mut closing = closing;
                    tokio::select! {
                        served = builder.serve_connection(TokioIo::new(stream), service) => {
                            if let Err(e) = served {
                                tracing::debug!(error = %e, "connection ended");
                            }
                        }
                        _ = closing.wait_for(|c| *c) => {}
                    }
                    drop(permit);
                    drop(guard);
                });
            }
            let _ = closing_tx.send(true);
        });
        Ok(Server {
            local_addr,
            metrics,
            shutdown: Some(shutdown),
            task,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Stops accepting connections and closes the open ones.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
    }
}

fn reply(response: Response) -> hyper::Response<Full<Bytes>> {
    hyper::Response::builder()
        .status(StatusCode::from_u16(response.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", response.content_type)
        .body(Full::new(Bytes::from(response.body)))
        .expect("static headers are valid")
}

async fn handle(shared: &Shared, req: Request<Incoming>) -> hyper::Response<Full<Bytes>> {
    shared.metrics.requests.fetch_add(1, Ordering::Relaxed);
    let path = req.uri().path().to_owned();
    // The prefix ends at a path segment: `/witnessadd-checkpoint` is not
    // under `/witness`.
    let Some(route) = path
        .strip_prefix(shared.config.prefix.as_str())
        .filter(|route| route.is_empty() || route.starts_with('/'))
    else {
        return reply(Response::text(404, "not found"));
    };
    let method = req.method().clone();
    let segments: Vec<&str> = route.trim_start_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        (Method::POST, ["add-checkpoint"]) => {
            let response = add_checkpoint(shared, req).await;
            shared.metrics.count(response.status);
            let mut http = reply(response.clone());
            if response.status == 429 {
                http.headers_mut()
                    .insert("retry-after", hyper::header::HeaderValue::from_static("1"));
            }
            http
        }
        (Method::GET, [hash, "checkpoint"]) => match shared.witness.latest_by_hash(hash) {
            Some(latest) => reply(Response::text(200, latest.note.as_str())),
            None => reply(Response::text(
                404,
                "no cosigned checkpoint for this origin",
            )),
        },
        (Method::GET, ["evidence"]) => {
            let witness = shared.witness.clone();
            match tokio::task::spawn_blocking(move || evidence_listing(witness.store())).await {
                Ok(Ok(list)) => reply(Response {
                    status: 200,
                    content_type: crate::witness::TEXT_CONTENT_TYPE,
                    body: list.into_bytes(),
                }),
                _ => reply(Response::text(500, "reading evidence failed")),
            }
        }
        (Method::GET, [kind @ ("evidence" | "rejected"), id]) => {
            let Ok(id) = bftlog_spec::encoding::parse_decimal(id) else {
                return reply(Response::text(400, "bad id"));
            };
            let witness = shared.witness.clone();
            let evidence = *kind == "evidence";
            let item = tokio::task::spawn_blocking(move || {
                if evidence {
                    witness.store().evidence_item(id)
                } else {
                    witness.store().rejected_item(id)
                }
            })
            .await;
            match item {
                Ok(Ok(Some(bytes))) => reply(Response {
                    status: 200,
                    content_type: crate::witness::TEXT_CONTENT_TYPE,
                    body: bytes,
                }),
                Ok(Ok(None)) => reply(Response::text(404, "no such item")),
                _ => reply(Response::text(500, "reading evidence failed")),
            }
        }
        (Method::GET, ["metrics"]) => reply(Response {
            status: 200,
            content_type: "text/plain; version=0.0.4",
            body: shared.metrics.render().into_bytes(),
        }),
        (_, ["add-checkpoint"]) => reply(Response::text(405, "use POST")),
        _ => reply(Response::text(404, "not found")),
    }
}

async fn add_checkpoint(shared: &Shared, req: Request<Incoming>) -> Response {
    let declared = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Response::text(413, format!("body larger than {MAX_BODY_BYTES} bytes"));
    }
    let read = Limited::new(req.into_body(), MAX_BODY_BYTES).collect();
    let timeout = Duration::from_millis(shared.config.header_read_timeout_ms);
    let Ok(read) = tokio::time::timeout(timeout, read).await else {
        return Response::text(408, "the request body did not arrive in time");
    };
    let body = match read {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            return if e
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                Response::text(413, format!("body larger than {MAX_BODY_BYTES} bytes"))
            } else {
                Response::text(400, "reading the body failed")
            };
        }
    };
    let checked = match shared.witness.check(&body) {
        Ok(c) => c,
        Err(rejection) => {
            tracing::debug!(reason = rejection.reason(), error = %rejection, "add-checkpoint rejected");
            return rejection.response();
        }
    };
    let (tx, rx) = oneshot::channel();
    match shared.writer.try_send(Submission { checked, reply: tx }) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => return Response::text(429, "witness is busy, retry"),
        Err(TrySendError::Disconnected(_)) => return Response::text(500, "writer stopped"),
    }
    rx.await
        .unwrap_or_else(|_| Response::text(500, "writer dropped the request"))
}
