//! The accept loop of every HTTP listener (the API, HTTP and HTTPS
//! provisioning): HTTP/1.1 only, a bounded number of connections, a
//! deadline on request headers (and on the TLS handshake), and a panicking
//! handler costs its request a 500.
//!
//! Phones speak HTTP/1.x and many open a connection per file. `axum::serve`
//! is built for any client: it sniffs every connection for HTTP/2, wires up
//! upgrades and a shutdown watcher per connection, and has no connection
//! cap. Here a connection costs one task and hyper's HTTP/1 state, a slow or
//! silent client is cut off after `header_timeout`, and past
//! `max_connections` a connection is answered 503 at once instead of queuing
//! without bound.

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use futures::FutureExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
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
}

impl Default for HttpServerOptions {
    fn default() -> Self {
        HttpServerOptions {
            max_connections: 4096,
            header_timeout: Duration::from_secs(10),
            tls: None,
        }
    }
}

/// A TLS acceptor from PEM files, speaking HTTP/1.1 only (ALPN): phones
/// need nothing else, and HTTP/2 would bring limits of its own to set.
pub fn tls_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("{}: no certificate in it", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .map_err(|e| e.to_string())?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Connections being told "503" at once, at most.
const MAX_REFUSALS: usize = 256;

const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 5\r\n\
Content-Type: text/plain\r\nContent-Length: 17\r\n\r\nserver too busy\r\n";

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
    let connections = TaskTracker::new();
    let permits = Arc::new(Semaphore::new(options.max_connections.max(1)));
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_timeout);
    let builder = Arc::new(builder);
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, or the peer gave up before
                    // the accept: pause briefly rather than spin.
                    tracing::warn!(error = %e, "accepting an HTTP connection failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            metrics::counter!("dialtone_http_connections_shed_total").increment(1);
            // Refusals are bounded too: past that, the connection just closes.
            if let Ok(refusal) = refusals.clone().try_acquire_owned() {
                let tls = options.tls.clone();
                connections.spawn(async move {
                    match tls {
                        Some(tls) => {
                            if let Ok(Ok(stream)) =
                                tokio::time::timeout(REFUSAL_TIME, tls.accept(stream)).await
                            {
                                refuse(stream).await;
                            }
                        }
                        None => refuse(stream).await,
                    }
                    drop(refusal);
                });
            }
            continue;
        };
        let router = router.clone();
        let builder = builder.clone();
        let shutdown = shutdown.clone();
        let tls = options.tls.clone();
        let header_timeout = options.header_timeout;
        connections.spawn(async move {
            let service =
                hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
                    request.extensions_mut().insert(ConnectInfo(peer));
                    // Kept for a panic's log line; cloning a Uri copies no bytes.
                    let uri = request.uri().clone();
                    let router = router.clone();
                    async move {
                        // A panicking handler costs its own request a 500,
                        // not the connection, and is counted.
                        match AssertUnwindSafe(router.oneshot(request)).catch_unwind().await {
                            Ok(response) => response,
                            Err(panic) => {
                                metrics::counter!("dialtone_request_panics_total").increment(1);
                                tracing::error!(%peer, path = uri.path(), panic = panic_text(&*panic), "HTTP handler panicked");
                                Ok(axum::response::IntoResponse::into_response((
                                    axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                                    "internal error\n",
                                )))
                            }
                        }
                    }
                });
            match tls {
                None => serve_connection(&builder, stream, service, &shutdown, peer).await,
                Some(tls) => match tokio::time::timeout(header_timeout, tls.accept(stream)).await {
                    Ok(Ok(stream)) => {
                        serve_connection(&builder, stream, service, &shutdown, peer).await
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake not done in time"),
                },
            }
            drop(permit);
        });
    }
    // New connections are refused from now on, not left in the backlog.
    drop(listener);
    connections.close();
    connections.wait().await;
}

/// How long a refused connection may take to be told so.
const REFUSAL_TIME: Duration = Duration::from_secs(1);

async fn serve_connection<S, F>(
    builder: &hyper::server::conn::http1::Builder,
    stream: S,
    service: F,
    shutdown: &CancellationToken,
    peer: SocketAddr,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    F: hyper::service::Service<hyper::Request<Incoming>, Response = axum::response::Response>,
    F::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    F::Future: Send + 'static,
{
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        log_connection_error(peer, &e);
    }
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-text panic".into())
}

/// Answers 503 and closes gently: closing with the client's request still
/// unread would send a reset, and the client might never see the answer.
async fn refuse<S>(mut stream: S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let _ = tokio::time::timeout(REFUSAL_TIME, async {
        stream.write_all(BUSY).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 1024];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    })
    .await;
}

fn log_connection_error(peer: SocketAddr, error: &hyper::Error) {
    // Clients that vanish mid-request are routine on a phone network.
    if error.is_incomplete_message() || error.is_canceled() {
        tracing::debug!(%peer, %error, "HTTP connection ended early");
    } else if error.is_timeout() {
        tracing::debug!(%peer, "HTTP client sent no request in time");
    } else {
        tracing::info!(%peer, %error, "HTTP connection error");
    }
}
