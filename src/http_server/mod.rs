//! The accept loop of every HTTP listener (the API, HTTP and HTTPS
//! provisioning): HTTP/1.1 only, a bounded number of connections, a
//! deadline on request headers (and on the TLS handshake), a bound on how
//! long a response may wait for a client that reads none of it, and a
//! panicking handler costs its request a 500.
//!
//! Phones speak HTTP/1.x and many open a connection per file. `axum::serve`
//! is built for any client: it sniffs every connection for HTTP/2, wires up
//! upgrades and a shutdown watcher per connection, and has no connection
//! cap. Here a connection costs one task, a slow or silent client is cut
//! off after `header_timeout`, and past `max_connections` a connection
//! takes the place of one waiting for a request from a source holding
//! more connections than its own (`shares`), or of one idle between
//! requests or still without a whole first request (`idle`), or of one
//! whose client reads too slowly (`slow`), or is answered 503 at once
//! (`refuse`) instead of queuing without bound.
//!
//! Connections are accepted with our own `accept4` (non-blocking, not yet
//! known to tokio's reactor), so a plain first request that has already
//! arrived is answered without registering the socket at all
//! (`first_request`); everything else is hyper's.

mod accept;
mod first_request;
#[cfg(test)]
mod flood_tests;
#[cfg(test)]
mod handshake_tests;
mod idle;
#[cfg(test)]
mod office_tests;
mod refuse;
mod shares;
mod slow;
mod stall;
mod tls;

pub use accept::Listener;
#[cfg(test)]
pub(crate) use shares::exempt;
#[cfg(test)]
pub(crate) use tls::HandshakeFailure;
pub use tls::{tls_acceptor, TlsFiles, EXPIRY_WARNING_DAYS};

use accept::{defer_accept, Accepting};

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::ConnectInfo;
use axum::response::Response;
use axum::Router;
use futures::FutureExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::unix::AsyncFd;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// Limits of one HTTP listener, and its TLS if it is HTTPS.
#[derive(Clone)]
pub struct HttpServerOptions {
    /// Open connections at most; more are answered 503 and closed.
    pub max_connections: usize,
    /// A client must send a request's headers within this time, the first
    /// request and every keep-alive request after it.
    pub header_timeout: Duration,
    /// HTTPS: the handshake must also finish within `header_timeout`.
    pub tls: Option<TlsAcceptor>,
    /// A response that the client reads none of for this long is given up
    /// and its connection closed (`stall.rs`).
    pub write_stall: Duration,
    /// Open connections one source (an IPv4 address, an IPv6 /64) may
    /// have; past it, 503. One host holding every connection slot is
    /// cheap: a byte of header each ten seconds.
    pub max_per_source: usize,
    /// Networks without the per-source cap (an office NAT of many phones).
    pub per_source_exempt: Vec<ipnet::IpNet>,
    /// A connection whose client took less than 4 KiB a second of a
    /// response over this much time spent waiting on it is a slow reader;
    /// a newcomer to a full listener takes the place of the one marked
    /// slowest (`slow.rs`).
    pub slow_window: Duration,
    /// A connection idle this long between requests is closed for a
    /// newcomer to a full listener, before any slow reader (`idle.rs`); one
    /// still without a whole first request, after half of
    /// `header_timeout` (since it was accepted, or its TLS handshake ended),
    /// or after this long if its source holds more connections than the
    /// newcomer's.
    pub evict_idle_after: Duration,
    /// Which listener this is: the `listener` label of its shed counters.
    pub listener: Listener,
}

impl Default for HttpServerOptions {
    fn default() -> Self {
        HttpServerOptions {
            max_connections: 4096,
            header_timeout: Duration::from_secs(10),
            tls: None,
            write_stall: WRITE_STALL,
            max_per_source: 256,
            per_source_exempt: dialtone_tftp::tftp::default_exempt(),
            slow_window: slow::SLOW_WINDOW,
            evict_idle_after: idle::IDLE_BEFORE_EVICTION,
            listener: Listener::Api,
        }
    }
}

/// Panics of handlers and connections, at most a log line a second: a
/// client can ask for the same failing work as fast as it likes.
static PANICS: dialtone_sync::LogLimit = dialtone_sync::LogLimit::new();

/// Refused connections waiting for their clients to close, at most; past
/// it a refusal is still written, and the connection closed at once.
const MAX_REFUSALS: usize = 256;

/// Descriptors a listener may hold at once: a socket per connection, and
/// `files_per_connection` more for a file each streams, and its refusals
/// waiting for their clients to close; for the open-file limit.
pub fn descriptors_needed(max_connections: usize, files_per_connection: usize) -> u64 {
    let per_connection = 1 + files_per_connection as u64;
    max_connections.max(1) as u64 * per_connection + MAX_REFUSALS as u64
}

/// Largest request head (line and headers) read, on every request of a
/// connection: the read buffer's bound, and the header bound that makes it
/// exact. A body is read through the buffer in pieces, so this bounds no
/// upload.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Empty, as a panic's 500 is: a PBX asking `/v1/lookup` on the API
/// listener shows whatever body it gets as the caller's name, whatever
/// the status (mod_cidlookup, Asterisk's `CURL()`), and the refusal is
/// written before the request, and so its path, is read.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 5\r\n\
Content-Length: 0\r\n\r\n";

/// What every connection of one listener shares, behind one `Arc`: a
/// connection costs one reference count, not a clone of each part.
struct Shared {
    router: Router,
    builder: hyper::server::conn::http1::Builder,
    tls: Option<TlsAcceptor>,
    header_timeout: Duration,
    write_stall: Duration,
    max_connections: usize,
    /// Connections being served (refusals not counted).
    open: AtomicUsize,
    /// Connections being served by source (exempt networks' aside).
    shares: shares::Shares,
    /// Set once the listener drains; `drain` wakes the connections that
    /// wait on it. Our own flag and `Notify` rather than a clone of the
    /// process's `CancellationToken` per connection: that token takes a
    /// mutex on every clone, drop and poll, shared by all connections.
    draining: AtomicBool,
    drain: Notify,
    /// Connections idle between requests, the first to go when full.
    idle: idle::Idle,
    /// Connections marked as reading slowly, the next to go.
    readers: Arc<slow::Readers>,
    listener: Listener,
    /// Failed accepts (out of descriptors, mostly) come back every 20 ms
    /// while they last: one line a second says so.
    accept_errors: dialtone_tftp::tftp::LogLimit,
}

/// A connection's place under `max_connections` and its source's share,
/// given back when dropped.
struct Slot(Arc<Shared>, Option<std::net::IpAddr>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
        if let Some(source) = self.1 {
            self.0.shares.give(source);
        }
    }
}

impl Shared {
    /// A place for a newcomer to the full listener: an idle connection's,
    /// or else one that has waited a second for a request from a source
    /// holding more connections than the newcomer's (`shares.rs`), or else
    /// a slow reader's, which is ended. The newcomer keeps the
    /// count it has taken, past `max_connections`, and the victim gives
    /// its own back as it closes (at once: woken, an idle one closes, a
    /// slow one's stream fails), so `open` exceeds the cap by at most the
    /// evictions still closing.
    fn evict_for(&self, peer: SocketAddr, source: Option<std::net::IpAddr>) -> bool {
        let from_heavier = || {
            source.is_some_and(|source| {
                self.shares
                    .heavier_than(source)
                    .into_iter()
                    .any(|heavier| self.idle.evict_from(heavier))
            })
        };
        if self.idle.evict() || from_heavier() {
            metrics::counter!("dialtone_http_idle_evicted_total", "listener" => self.listener.label())
                .increment(1);
            return true;
        }
        let Some(victim) = self.readers.evict() else {
            return false;
        };
        metrics::counter!(
            "dialtone_http_slow_readers_evicted_total",
            "listener" => self.listener.label()
        )
        .increment(1);
        tracing::debug!(peer = %victim, newcomer = %peer, "HTTP client reading too slowly while the listener was full; closed");
        true
    }
}

/// Serves `router` on `listener` until `shutdown`, then lets open
/// connections finish their current request and returns once all are closed
/// (the caller bounds that wait by its grace period). Handlers see the peer
/// as `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    options: HttpServerOptions,
    shutdown: CancellationToken,
) {
    // Small answers go out at once. Linux copies TCP_NODELAY from the
    // listening socket to every accepted one, so it is set here once
    // rather than by a system call per connection.
    let nodelay_inherited = cfg!(target_os = "linux")
        && socket2::SockRef::from(&listener)
            .set_tcp_nodelay(true)
            .is_ok();
    defer_accept(&listener, options.header_timeout);
    let mut builder = hyper::server::conn::http1::Builder::new();
    // hyper's own default lets a request's head reach ~400 KiB, every
    // byte of it a client's; past this it answers 431 and closes. The
    // buffer's bound alone is checked only between reads, and a read fills
    // whatever room the buffer has grown to: on a kept-alive connection a
    // head of up to about twice it got through. The header bound is also
    // checked on a whole head, so it holds to the byte. It bounds a chunked
    // body's trailers as well (hyper's default there: 16 KiB).
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_timeout)
        .max_buf_size(MAX_HEAD_BYTES)
        .max_header_size(MAX_HEAD_BYTES);
    let shared = Arc::new(Shared {
        router,
        builder,
        tls: options.tls,
        header_timeout: options.header_timeout,
        write_stall: options.write_stall,
        max_connections: options.max_connections.max(1),
        open: AtomicUsize::new(0),
        shares: shares::Shares::new(options.max_per_source, options.per_source_exempt),
        draining: AtomicBool::new(false),
        drain: Notify::new(),
        idle: idle::Idle::new(options.evict_idle_after, options.header_timeout / 2),
        readers: Arc::new(slow::Readers::new(options.slow_window)),
        listener: options.listener,
        accept_errors: dialtone_tftp::tftp::LogLimit::new(),
    });
    // SAFETY: a std `TcpListener` owns its descriptor and reports the same
    // one until it is dropped, which is what `register` asks for.
    let listener = match listener
        .into_std()
        .and_then(|listener| unsafe { AsyncFd::register(listener) }.map_err(Into::into))
    {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!(error = %e, "an HTTP listener could not be set up");
            return;
        }
    };
    let connections = TaskTracker::new();
    let listener = Arc::new(listener);
    // A loop answers cache hits on its own task (`serve_plain`'s first
    // poll), so one loop is one core's worth of them (~35,000 connections
    // a second here). More loops wait on the same socket and all wake for
    // each connection: on 2 cores, two loops cost 6% more CPU per
    // connection than one at the same throughput (BENCHMARKS.md). So a
    // loop per four workers: one on small machines, more cores' worth
    // where there are cores to spare.
    let loops = tokio::runtime::Handle::current()
        .metrics()
        .num_workers()
        .div_ceil(4)
        .clamp(1, 16);
    let accepting = Accepting {
        shared: shared.clone(),
        listener: listener.clone(),
        connections: connections.clone(),
        refusals: Arc::new(Semaphore::new(MAX_REFUSALS)),
        shutdown,
        nodelay_inherited,
    };
    let mut others = tokio::task::JoinSet::new();
    for _ in 1..loops {
        others.spawn(accepting.clone().run());
    }
    accepting.run().await;
    while others.join_next().await.is_some() {}
    // New connections are refused from now on, not left in the backlog.
    drop(listener);
    shared.draining.store(true, Ordering::Release);
    shared.drain.notify_waiters();
    connections.close();
    connections.wait().await;
}

/// A phone on a poor link still reads something every few seconds; 30 s
/// of nothing is a client that has stopped reading.
const WRITE_STALL: Duration = Duration::from_secs(30);

async fn serve_plain(stream: std::net::TcpStream, peer: SocketAddr, slot: Slot) {
    let shared = &slot.0;
    let (stream, prefix, answered) = if shared.draining.load(Ordering::Acquire) {
        // hyper answers with `Connection: close` while draining.
        match TcpStream::from_std(stream) {
            Ok(stream) => (stream, Bytes::new(), false),
            Err(_) => return,
        }
    } else {
        match first_request::serve(shared, stream, peer).await {
            first_request::Next::Close => return,
            first_request::Next::Hyper {
                stream,
                prefix,
                answered,
            } => (stream, prefix, answered),
        }
    };
    let listed = shared.idle.enter(answered, slot.1);
    serve_connection(shared, &listed, PlainTcp { stream, prefix }, peer).await;
}

async fn serve_tls(stream: std::net::TcpStream, peer: SocketAddr, slot: Slot) {
    let shared = &slot.0;
    let Some(tls) = &shared.tls else { return };
    let Ok(stream) = TcpStream::from_std(stream) else {
        return;
    };
    // Listed from the handshake on: a handshake left hanging holds a place
    // as a silent plain connection does, and makes room the same way.
    let listed = shared.idle.enter(false, slot.1);
    let handshake = tokio::time::timeout(shared.header_timeout, tls.accept(stream));
    tokio::select! {
        biased;
        done = handshake => match done {
            Ok(Ok(stream)) => {
                listed.lull().handshake_done();
                serve_connection(shared, &listed, stream, peer).await
            }
            Ok(Err(e)) => tls::HandshakeFailure::of(&e).record(peer, Some(&e)),
            Err(_) => tls::HandshakeFailure::Timeout.record(peer, None),
        },
        _ = listed.evicted() => {
            tracing::debug!(%peer, "TLS handshake unfinished while the listener was full; closed");
        }
    }
}

/// Serves a connection hyper takes over, listed in the idle registry.
async fn serve_connection<S>(
    shared: &Shared,
    listed: &idle::Listed<'_>,
    stream: S,
    peer: SocketAddr,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + stall::Socket + Unpin + Send + 'static,
{
    let router = &shared.router;
    let lull = listed.lull();
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        lull.begin();
        async move {
            let response = respond(router, request, peer).await;
            Ok::<_, std::convert::Infallible>(lull.track(response))
        }
    });
    // Around the TLS stream, not its socket: hyper's writes are what wait
    // on the client, and the meter reads the socket's queue through
    // `Socket`, so one mechanism serves plain and TLS connections.
    let stream = stall::Stalling::new(
        stream,
        shared.write_stall,
        slow::Meter::new(shared.readers.clone(), peer),
    );
    let connection = shared
        .builder
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    // Created before the flag is read: `notify_waiters` reaches it even if
    // it has not been polled yet, so a drain between the two is not missed.
    let drain = shared.drain.notified();
    let result = if shared.draining.load(Ordering::Acquire) {
        connection.as_mut().graceful_shutdown();
        connection.await
    } else {
        // The connection first: a request that is already complete is
        // answered without the drain's waiter ever being registered.
        tokio::select! {
            biased;
            result = connection.as_mut() => result,
            _ = drain => {
                connection.as_mut().graceful_shutdown();
                connection.await
            }
            _ = listed.evicted() => {
                // hyper closes a connection it has answered on, once idle,
                // and finishes a request that raced with the eviction; one
                // it has answered nothing on yet it would wait on until the
                // client sent a request, and has nothing of ours to send.
                if listed.lull().untouched() {
                    return;
                }
                connection.as_mut().graceful_shutdown();
                connection.await
            }
        }
    };
    if let Err(e) = result {
        log_connection_error(peer, &e);
    }
}

/// Runs one request through the router, for both the first-request path
/// and hyper. A panicking handler costs its own request a 500, not the
/// connection, and is counted.
async fn respond<B>(router: &Router, request: hyper::Request<B>, peer: SocketAddr) -> Response
where
    B: axum::body::HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    // Kept for a panic's log line; cloning a Uri copies no bytes.
    let uri = request.uri().clone();
    match AssertUnwindSafe(router.clone().oneshot(request))
        .catch_unwind()
        .await
    {
        Ok(Ok(mut response)) => {
            drop_bodiless_length(&mut response);
            response
        }
        Ok(Err(never)) => match never {},
        Err(panic) => {
            metrics::counter!("dialtone_request_panics_total").increment(1);
            if let Some(skipped) = PANICS.allow() {
                tracing::error!(%peer, path = uri.path(), panic = crate::supervise::panic_message(&*panic), skipped, "HTTP handler panicked");
            }
            // No body: see `BUSY`.
            axum::response::IntoResponse::into_response(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            )
        }
    }
}

/// A 304's length would be the 200's (RFC 9110 8.6): a cache that copies
/// the 304's headers onto what it keeps would keep an empty firmware. axum
/// states every empty body's 0, after the router's layers have run, and
/// hyper writes it on the answer to a HEAD; a 1xx or 204 has none at all.
fn drop_bodiless_length(response: &mut Response) {
    let status = response.status();
    if status.is_informational()
        || status == axum::http::StatusCode::NO_CONTENT
        || status == axum::http::StatusCode::NOT_MODIFIED
    {
        response
            .headers_mut()
            .remove(axum::http::header::CONTENT_LENGTH);
    }
}

/// A plain TCP stream whose write shutdown is left to `close`: once hyper
/// has written its last response, the `shutdown` call it makes would send
/// the FIN that closing the socket a moment later sends anyway, at the
/// cost of a system call per connection. (TLS keeps its shutdown: that
/// is its close_notify.) `prefix` is what was read before hyper took over,
/// handed to hyper first.
struct PlainTcp {
    stream: TcpStream,
    prefix: Bytes,
}

impl stall::Socket for PlainTcp {
    fn socket(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.stream)
    }
}

impl tokio::io::AsyncRead for PlainTcp {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            let take = self.prefix.len().min(buf.remaining());
            let head = self.prefix.split_to(take);
            buf.put_slice(&head);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for PlainTcp {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fn log_connection_error(peer: SocketAddr, error: &hyper::Error) {
    // Clients that vanish mid-request are routine on a phone network.
    if error.is_incomplete_message() || error.is_canceled() {
        tracing::debug!(%peer, %error, "HTTP connection ended early");
    } else if error.is_timeout() {
        tracing::debug!(%peer, "HTTP client sent no request in time");
    } else {
        // A malformed request from anyone gets here once per connection,
        // with no ban behind it (it never reaches the provisioner): at most
        // one line a second, and the count of those left out.
        static ERROR_LOG: dialtone_tftp::tftp::LogLimit = dialtone_tftp::tftp::LogLimit::new();
        if let Some(skipped) = ERROR_LOG.allow() {
            tracing::info!(%peer, %error, skipped, "HTTP connection error");
        }
    }
}
