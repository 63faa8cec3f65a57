//! Serving HTTP with the bounds every public listener needs against slow or hoarding clients:
//! a deadline for every request head — the first one included, so a socket that sends nothing
//! is closed, and the next one on a kept-alive connection, so an idle connection is closed too;
//! a cap on open connections (past it, accepting waits) and a smaller one per peer address, so
//! one client cannot take every slot; a body that goes quiet or trickles is cut off
//! ([`IdleBody`]); and a graceful stop that lets requests in flight finish. The API and the
//! embedded store both serve through here.
//!
//! HTTP/1.1 only. Browsers speak HTTP/2 only over TLS (terminated in front of tcoder), the
//! S3 SDKs speak HTTP/1.1 to an `http://` endpoint, and a cleartext HTTP/2 listener needs its
//! own preface, keep-alive and idle deadlines: a partial preface or an idle HTTP/2 connection
//! was held open for good.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::body::{Body, Incoming};
use hyper::service::Service;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Bounds of one listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// How long a client may take to send a request's head (line and headers), counted from
    /// the connection's start or the end of its previous response.
    pub header_timeout: Duration,
    /// Connections open at once; a client past it waits in the kernel's backlog.
    pub max_connections: usize,
    /// Connections open at once from one peer address; past it a new one is closed at once.
    pub max_connections_per_peer: usize,
    /// How long a request body may send nothing ([`IdleBody`]).
    pub body_idle_timeout: Duration,
    /// The slowest average a request body may keep once `body_idle_timeout` has passed.
    pub min_body_bytes_per_second: u64,
}

/// Open connections per peer address.
#[derive(Debug, Default)]
struct Peers(Mutex<HashMap<IpAddr, usize>>);

/// One peer's hold on a connection; released when dropped.
#[derive(Debug)]
struct PeerSlot {
    peers: Arc<Peers>,
    address: IpAddr,
}

impl Peers {
    fn take(self: &Arc<Peers>, address: IpAddr, cap: usize) -> Option<PeerSlot> {
        let mut open = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = open.entry(address).or_default();
        if *count >= cap {
            return None;
        }
        *count += 1;
        Some(PeerSlot { peers: self.clone(), address })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut open = self.peers.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.address);
            }
        }
    }
}

/// Serves `service` on `listener` within `limits` until `stop`, then lets open requests
/// finish.
pub async fn serve<S, B>(
    listener: TcpListener,
    service: S,
    limits: Limits,
    stop: CancellationToken,
) -> std::io::Result<()>
where
    S: Service<hyper::Request<IdleBody<Incoming>>, Response = hyper::Response<B>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
    let graceful = GracefulShutdown::new();
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        service.call(request.map(|body| IdleBody::new(body, &limits)))
    });
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let peers = Arc::new(Peers::default());
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            () = stop.cancelled() => break,
        };
        let (socket, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // E.g. out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = stop.cancelled() => break,
        };
        let Some(peer_slot) = peers.take(peer.ip(), limits.max_connections_per_peer.max(1)) else {
            // Closed at once (dropped): this peer holds its share of the listener already.
            tracing::debug!(%peer, "connection refused: too many open from this address");
            continue;
        };
        // Small responses (a HEAD, a short GET) must not wait on Nagle + delayed ACK.
        let _ = socket.set_nodelay(true);
        let conn = http.serve_connection(TokioIo::new(socket), service.clone());
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
            drop((slot, peer_slot));
        });
    }
    graceful.shutdown().await;
    Ok(())
}

/// A request body that fails when no bytes arrive for `idle`, or when, after `idle`, it has
/// averaged less than a minimum rate: a client that sends its head and then stalls or trickles
/// its body (a byte every 20 s) is cut off instead of holding a connection and a handler.
/// Uploads at any real network's speed are not affected.
#[derive(Debug)]
pub struct IdleBody<B> {
    inner: B,
    idle: Duration,
    timer: std::pin::Pin<Box<tokio::time::Sleep>>,
    started: tokio::time::Instant,
    received: u64,
    min_bytes_per_second: u64,
}

impl<B> IdleBody<B> {
    /// With the idle timeout and minimum rate of `limits`.
    pub fn new(inner: B, limits: &Limits) -> IdleBody<B> {
        let idle = limits.body_idle_timeout;
        IdleBody {
            inner,
            idle,
            timer: Box::pin(tokio::time::sleep(idle)),
            started: tokio::time::Instant::now(),
            received: 0,
            min_bytes_per_second: limits.min_body_bytes_per_second,
        }
    }

    /// Whether the body, `received` bytes so far, is below its minimum average.
    fn too_slow(&self) -> bool {
        let elapsed = self.started.elapsed();
        elapsed > self.idle
            && (self.received as f64) < self.min_bytes_per_second as f64 * elapsed.as_secs_f64()
    }
}

/// The error of a body that went quiet for too long.
#[derive(Debug, thiserror::Error)]
#[error("the request body sent nothing for {0:?}")]
pub struct BodyIdle(Duration);

/// The error of a body that arrives slower than the listener's minimum rate.
#[derive(Debug, thiserror::Error)]
#[error("the request body arrives slower than {0} bytes per second")]
pub struct BodyTooSlow(u64);

impl<B> Body for IdleBody<B>
where
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        use std::future::Future as _;
        use std::task::Poll;
        let this = &mut *self;
        match std::pin::Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                if let Some(Ok(data)) = frame.as_ref().map(|f| f.as_ref().map(|f| f.data_ref())) {
                    this.received += data.map_or(0, |d| bytes::Buf::remaining(d) as u64);
                    if this.too_slow() {
                        return Poll::Ready(Some(Err(Box::new(BodyTooSlow(
                            this.min_bytes_per_second,
                        )))));
                    }
                }
                let deadline = tokio::time::Instant::now() + this.idle;
                this.timer.as_mut().reset(deadline);
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => match this.timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyIdle(this.idle))))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}
