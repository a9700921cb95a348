//! The C2SP tlog-tiles read path over HTTP (`tiles_listen`): `/checkpoint`,
//! hash tiles `/tile/<L>/<N>[.p/<W>]` and entry bundles
//! `/tile/entries/<N>[.p/<W>]`, read from storage. Tiles are a function
//! of the committed tree, so every replica serves the same bytes and any
//! of them can stand behind a CDN.
//!
//! Bounded like the metrics endpoint: [`TILES_CONNECTIONS`] at once and
//! [`TILES_CONNECTIONS_PER_IP`] per address, a request head within
//! [`TILES_TIMEOUT`] and a response taken within it too; entry bundles
//! (up to 16 MiB each) are built at most [`BUNDLES_AT_ONCE`] at a time.
//! Bundles are gzip-compressed for clients that accept it.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bftlog_spec::tiles::{Tile, TileKind};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Response, StatusCode};
use tokio::net::TcpListener;

use super::client_api::served_checkpoint;
use super::http_server::{self, HttpLimits};
use super::shared::Shared;

/// Tiles connections open at once.
pub const TILES_CONNECTIONS: usize = 1024;
/// Tiles connections from one address.
pub const TILES_CONNECTIONS_PER_IP: usize = 64;
/// Time to send a request head, and to take a response.
pub const TILES_TIMEOUT: Duration = Duration::from_secs(10);
/// Entry bundles being read or sent at once (each up to 256 × 65,535
/// bytes): at most 256 MiB of bundles in memory.
pub const BUNDLES_AT_ONCE: usize = 16;
/// How long a bundle request waits for its turn before 503.
const BUNDLE_WAIT: Duration = Duration::from_secs(5);

/// `Cache-Control` of tiles and bundles: a tile's bytes never change.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// `Cache-Control` of the checkpoint: "SHOULD prevent caching beyond a
/// few seconds".
const CHECKPOINT_CACHE: &str = "public, max-age=2";

/// Serves tiles on `listener` until the task is aborted.
pub(crate) async fn serve(shared: Arc<Shared>, listener: TcpListener) {
    let limits = HttpLimits {
        connections: TILES_CONNECTIONS,
        per_ip: TILES_CONNECTIONS_PER_IP,
        timeout: TILES_TIMEOUT,
    };
    let bundles = Arc::new(tokio::sync::Semaphore::new(BUNDLES_AT_ONCE));
    let refused = {
        let shared = shared.clone();
        move || {
            shared
                .metrics
                .tiles_connections_refused
                .fetch_add(1, Ordering::Relaxed);
        }
    };
    let handle = move |req: hyper::Request<hyper::body::Incoming>| {
        let (shared, bundles) = (shared.clone(), bundles.clone());
        let gzip = accepts_gzip(req.headers().get_all(hyper::header::ACCEPT_ENCODING));
        async move { respond(&shared, &bundles, req.method(), req.uri().path(), gzip).await }
    };
    http_server::serve(listener, limits, refused, handle).await;
}

/// Binds the tiles listener (so a bad address fails at start).
pub(crate) async fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// An error answer. Never cached: a tile missing at a lagging replica
/// behind a CDN must not stay missing once that replica catches up.
fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .header("cache-control", "no-store");
    if status == StatusCode::METHOD_NOT_ALLOWED {
        response = response.header("allow", "GET, HEAD");
    }
    response
        .body(Full::new(Bytes::from_static(text.as_bytes())))
        .expect("static response")
}

/// A bundle's bytes with its share of [`BUNDLES_AT_ONCE`]: the permit is
/// held until the response body is dropped (sent, or the connection
/// gone), so at most that many bundles are in memory at once, however
/// slowly clients read.
struct HeldBundle {
    bytes: Vec<u8>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl AsRef<[u8]> for HeldBundle {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

/// Whether `Accept-Encoding` admits gzip: a `gzip` or `*` coding whose
/// q-value is not zero. Anything unparsable counts as not admitting it.
fn accepts_gzip(values: hyper::header::GetAll<'_, hyper::header::HeaderValue>) -> bool {
    let mut gzip = None;
    let mut any = None;
    for value in values {
        let Ok(text) = value.to_str() else { continue };
        for item in text.split(',') {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let mut q_nonzero = true;
            for param in parts {
                if let Some((name, q)) = param.trim().split_once('=')
                    && name.trim().eq_ignore_ascii_case("q")
                {
                    q_nonzero = q.trim().parse::<f32>().is_ok_and(|q| q > 0.0);
                }
            }
            match coding.as_str() {
                "gzip" | "x-gzip" => gzip = Some(q_nonzero),
                "*" => any = Some(q_nonzero),
                _ => {}
            }
        }
    }
    gzip.or(any).unwrap_or(false)
}

/// Compresses a bundle for `Content-Encoding: gzip`. The fastest level:
/// entries are often already compressed or random (keys, signatures, hashes),
/// so higher levels buy little and cost the replica CPU on every miss of a
/// cache in front.
fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(bytes.len() / 2 + 64),
        flate2::Compression::fast(),
    );
    encoder.write_all(bytes).expect("writing to memory");
    encoder.finish().expect("writing to memory")
}

async fn respond(
    shared: &Arc<Shared>,
    bundles: &Arc<tokio::sync::Semaphore>,
    method: &Method,
    path: &str,
    gzip: bool,
) -> Response<Full<Bytes>> {
    let metrics = &shared.metrics;
    metrics.tile_requests.fetch_add(1, Ordering::Relaxed);
    let response = answer(shared, bundles, method, path, gzip).await;
    if !response.status().is_success() {
        metrics.tile_requests_failed.fetch_add(1, Ordering::Relaxed);
    }
    // For HEAD, hyper sends the headers (the length included) and not
    // the body.
    response
}

async fn answer(
    shared: &Arc<Shared>,
    bundles: &Arc<tokio::sync::Semaphore>,
    method: &Method,
    path: &str,
    accepts_gzip: bool,
) -> Response<Full<Bytes>> {
    if method != Method::GET && method != Method::HEAD {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "GET or HEAD\n");
    }
    if path == "/checkpoint" {
        return match served_checkpoint(shared) {
            Ok(Some((_, note))) => Response::builder()
                .header("content-type", "text/plain; charset=utf-8")
                .header("cache-control", CHECKPOINT_CACHE)
                .body(Full::new(Bytes::from(note)))
                .expect("valid headers"),
            Ok(None) => plain(StatusCode::NOT_FOUND, "no quorum checkpoint yet\n"),
            Err(_) => plain(StatusCode::INTERNAL_SERVER_ERROR, "storage error\n"),
        };
    }
    if !path.starts_with("/tile/") {
        return plain(StatusCode::NOT_FOUND, "not found\n");
    }
    let tile = match Tile::parse_path(path) {
        Ok(tile) => tile,
        Err(_) => return plain(StatusCode::BAD_REQUEST, "malformed tile path\n"),
    };
    let store = shared.store.clone();
    let tile_kind = tile.kind;
    let read = match tile_kind {
        // A hash tile is a few pages, almost always in redb's cache:
        // read inline, as proofs are.
        TileKind::Hashes { .. } => store.tile(&tile).map(|t| t.map(Bytes::from)),
        TileKind::Entries => {
            let permit =
                match tokio::time::timeout(BUNDLE_WAIT, bundles.clone().acquire_owned()).await {
                    Ok(Ok(permit)) => permit,
                    Ok(Err(_)) => return plain(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n"),
                    Err(_) => return plain(StatusCode::SERVICE_UNAVAILABLE, "busy: try again\n"),
                };
            // Bundles SHOULD be compressed at the HTTP layer (C2SP
            // tlog-tiles): gzip when the client accepts it.
            tokio::task::spawn_blocking(move || {
                store
                    .tile(&tile)
                    .map(|t| t.map(|b| if accepts_gzip { gzip(&b) } else { b }))
            })
            .await
            .expect("bundle read panicked")
            .map(|t| {
                t.map(|bytes| {
                    Bytes::from_owner(HeldBundle {
                        bytes,
                        _permit: permit,
                    })
                })
            })
        }
    };
    match read {
        Ok(Some(bytes)) => {
            let mut response = Response::builder()
                .header("content-type", "application/octet-stream")
                .header("cache-control", IMMUTABLE);
            if tile_kind == TileKind::Entries {
                // A cache in front keeps the two encodings apart.
                response = response.header("vary", "accept-encoding");
                if accepts_gzip {
                    response = response.header("content-encoding", "gzip");
                }
            }
            response.body(Full::new(bytes)).expect("valid headers")
        }
        Ok(None) => plain(StatusCode::NOT_FOUND, "beyond the committed tree\n"),
        Err(e) => {
            tracing::error!(error = %e, %tile, "reading a tile failed");
            plain(StatusCode::INTERNAL_SERVER_ERROR, "storage error\n")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepts(values: &[&str]) -> bool {
        let mut headers = hyper::HeaderMap::new();
        for v in values {
            headers.append(
                hyper::header::ACCEPT_ENCODING,
                hyper::header::HeaderValue::from_str(v).unwrap(),
            );
        }
        accepts_gzip(headers.get_all(hyper::header::ACCEPT_ENCODING))
    }

    #[test]
    fn gzip_is_used_when_accept_encoding_admits_it() {
        assert!(accepts(&["gzip"]));
        assert!(accepts(&["identity, gzip"]));
        assert!(accepts(&["br;q=1.0, GZIP;q=0.5"]));
        assert!(accepts(&["br", "gzip"]));
        assert!(accepts(&["*"]));
        assert!(!accepts(&[]));
        assert!(!accepts(&["identity"]));
        assert!(!accepts(&["gzip;q=0"]));
        assert!(!accepts(&["gzip;q=0.000"]));
        assert!(
            !accepts(&["*, gzip;q=0"]),
            "an explicit gzip;q=0 wins over *"
        );
        assert!(!accepts(&["gzip;q=bogus"]));
    }

    #[test]
    fn gzip_round_trips() {
        use std::io::Read;
        let bytes: Vec<u8> = (0..70_000u32)
            .flat_map(|i| (i % 251).to_be_bytes())
            .collect();
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(gzip(&bytes).as_slice())
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, bytes);
    }
}
