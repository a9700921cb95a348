//! The bounded HTTP/1.1 accept loop shared by the replica's plain-HTTP
//! endpoints (metrics, tiles): at most `connections` at once and
//! `per_ip` from one address, a request head within `timeout` and a
//! response taken within it too.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bftlog_witness::http_guard::{ConnectionCaps, WriteTimeout};
use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// An endpoint's connection bounds.
pub(crate) struct HttpLimits {
    pub connections: usize,
    pub per_ip: usize,
    pub timeout: Duration,
}

/// Serves `handle` on `listener` until the task is aborted; calls
/// `refused` for each connection closed over the per-address cap.
pub(crate) async fn serve<H, F>(
    listener: TcpListener,
    limits: HttpLimits,
    refused: impl Fn(),
    handle: H,
) where
    H: Fn(Request<hyper::body::Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.connections));
    let caps = ConnectionCaps::new(limits.per_ip);
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let Ok((stream, remote)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let Some(guard) = caps.try_take(remote.ip()) else {
            refused();
            continue;
        };
        let _ = stream.set_nodelay(true);
        let stream = WriteTimeout::new(stream, limits.timeout);
        let handle = handle.clone();
        let timeout = limits.timeout;
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let response = handle(req);
                async move { Ok::<_, std::convert::Infallible>(response.await) }
            });
            let _ = http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                // Answers to pipelined requests leave in one write.
                .pipeline_flush(true)
                .header_read_timeout(timeout)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            drop((permit, guard));
        });
    }
}
