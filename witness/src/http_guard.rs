//! What an HTTP server facing the internet needs besides hyper's header
//! timeout: a cap on connections per client address (so one client cannot
//! hold every slot), and a write timeout (so a client that never reads
//! its response cannot hold a connection and its buffers for ever).
//! Used by the witness server and by a replica's metrics endpoint.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Open connections per client address.
#[derive(Debug)]
pub struct ConnectionCaps {
    per_ip: Arc<Mutex<HashMap<IpAddr, usize>>>,
    max_per_ip: usize,
}

/// One counted connection; dropping it frees the slot.
#[derive(Debug)]
pub struct ConnectionGuard {
    per_ip: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl ConnectionCaps {
    pub fn new(max_per_ip: usize) -> Self {
        ConnectionCaps {
            per_ip: Arc::default(),
            max_per_ip,
        }
    }

    /// A slot for a connection from `ip`, unless it has `max_per_ip`.
    pub fn try_take(&self, ip: IpAddr) -> Option<ConnectionGuard> {
        let mut per_ip = self.per_ip.lock().expect("connection caps lock");
        let open = per_ip.entry(ip).or_default();
        if *open >= self.max_per_ip {
            return None;
        }
        *open += 1;
        Some(ConnectionGuard {
            per_ip: self.per_ip.clone(),
            ip,
        })
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        let mut per_ip = self.per_ip.lock().expect("connection caps lock");
        if let Some(open) = per_ip.get_mut(&self.ip) {
            *open -= 1;
            if *open == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

/// A stream whose writes fail with `TimedOut` once one has made no
/// progress for `timeout`: the peer stopped reading.
pub struct WriteTimeout<S> {
    inner: S,
    timeout: Duration,
    /// Running while a write is pending; reset by any progress.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> WriteTimeout<S> {
    pub fn new(inner: S, timeout: Duration) -> Self {
        WriteTimeout {
            inner,
            timeout,
            stalled: None,
        }
    }

    /// Checks the stall timer after the inner write returned `Pending`.
    fn pending<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let timeout = self.timeout;
        let sleep = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if sleep.as_mut().poll(cx).is_ready() {
            self.stalled = None;
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client did not read the response in time",
            )));
        }
        Poll::Pending
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteTimeout<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteTimeout<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Pending => self.pending(cx),
            ready => {
                self.stalled = None;
                ready
            }
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Pending => self.pending(cx),
            ready => {
                self.stalled = None;
                ready
            }
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[test]
    fn caps_connections_per_address() {
        let caps = ConnectionCaps::new(2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = caps.try_take(a).unwrap();
        let _second = caps.try_take(a).unwrap();
        assert!(caps.try_take(a).is_none());
        assert!(caps.try_take(b).is_some());
        drop(first);
        assert!(caps.try_take(a).is_some());
    }

    #[tokio::test]
    async fn a_write_the_reader_never_takes_times_out() {
        // A 1 KiB pipe nobody reads from.
        let (writer, _reader) = tokio::io::duplex(1024);
        let mut timed = WriteTimeout::new(writer, Duration::from_millis(50));
        let err = timed.write_all(&[0u8; 4096]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        // While the reader keeps up, nothing times out.
        let (writer, mut reader) = tokio::io::duplex(1024);
        let drain = tokio::spawn(async move {
            let mut sink = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut reader, &mut sink)
                .await
                .map(|_| sink.len())
        });
        let mut timed = WriteTimeout::new(writer, Duration::from_millis(50));
        timed.write_all(&[0u8; 64 << 10]).await.unwrap();
        timed.shutdown().await.unwrap();
        drop(timed);
        assert_eq!(drain.await.unwrap().unwrap(), 64 << 10);
    }
}
