//! The accept loops of a listener: each connection is counted against the
//! cap and its source's share, makes room or is refused, and is served
//! on a task of its own, or within the loop's own poll when its first
//! request is answered at once (`first_request.rs`).

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::io::unix::AsyncFd;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{refuse, serve_plain, serve_tls, Shared, Slot};

/// One accept loop of a listener; all of them share everything here.
#[derive(Clone)]
pub(super) struct Accepting {
    pub(super) shared: Arc<Shared>,
    pub(super) listener: Arc<AsyncFd<std::net::TcpListener>>,
    pub(super) connections: TaskTracker,
    pub(super) refusals: Arc<Semaphore>,
    pub(super) shutdown: CancellationToken,
    pub(super) nodelay_inherited: bool,
}

impl Accepting {
    pub(super) async fn run(self) {
        let Accepting {
            shared,
            listener,
            connections,
            refusals,
            shutdown,
            nodelay_inherited,
        } = self;
        let cancelled = shutdown.cancelled();
        tokio::pin!(cancelled);
        loop {
            // Accepting comes first, so `cancelled` (a mutex per poll) is only
            // polled when no connection is waiting; a flood of connections
            // still sees the shutdown, by the check after each accept.
            let (stream, peer) = tokio::select! {
                biased;
                accepted = accept(&listener) => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors, or the peer gave up before
                        // the accept: pause briefly rather than spin.
                        if let Some(skipped) = shared.accept_errors.allow() {
                            tracing::warn!(
                                error = %e,
                                skipped,
                                listener = shared.listener.label(),
                                "accepting an HTTP connection failed"
                            );
                        }
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_millis(20)) => continue,
                            _ = &mut cancelled => break,
                        }
                    }
                },
                _ = &mut cancelled => break,
            };
            if shutdown.is_cancelled() {
                break;
            }
            let stream = std::net::TcpStream::from(stream);
            if !nodelay_inherited {
                let _ = stream.set_nodelay(true);
            }
            let over_all = shared.open.fetch_add(1, Ordering::AcqRel) >= shared.max_connections;
            // The share first: no one is evicted for a newcomer its own
            // source's share would refuse.
            let share = match shared.shares.take(peer.ip()) {
                Ok(source) if over_all && !shared.evict_for(peer, source) => {
                    if let Some(source) = source {
                        shared.shares.give(source);
                    }
                    Err(Refused::Full)
                }
                Ok(source) => Ok(source),
                Err(()) => Err(Refused::SourceShare),
            };
            let source = match share {
                Ok(source) => source,
                Err(refused) => {
                    shared.open.fetch_sub(1, Ordering::AcqRel);
                    let counter = match refused {
                        Refused::Full => "dialtone_http_connections_shed_total",
                        Refused::SourceShare => "dialtone_http_source_connections_shed_total",
                    };
                    metrics::counter!(counter, "listener" => shared.listener.label()).increment(1);
                    // A handshake is a few milliseconds of CPU, and a source
                    // over its share could otherwise have one made for each
                    // new connection it opens, however fast: over TLS it is
                    // closed without one. (Its connections in place are its
                    // phones' way in.)
                    match &shared.tls {
                        None => refuse::plain(stream, &refusals, &connections),
                        Some(tls) if refused == Refused::Full => {
                            refuse::tls(stream, tls.clone(), &refusals, &connections)
                        }
                        Some(_) => drop(stream),
                    }
                    continue;
                }
            };
            let slot = Slot(shared.clone(), source);
            // Two tasks of their own types: the plain one carries no TLS state,
            // so the future a connection costs (allocated and moved into its
            // task) is no bigger than hyper's connection.
            if shared.tls.is_some() {
                connections.spawn(serve_tls(stream, peer, slot));
            } else {
                // Polled here once before it gets a task: a request already in
                // (deferred accept) with its file in the render cache is
                // answered and closed within this poll, and a task, its
                // scheduling and the wake-up of another worker were a tenth
                // of such a connection's CPU. Anything that waits (a render in
                // the pool, a slow reader, keep-alive, hyper) is spawned and
                // re-polled by its own task, which takes over its wakers. Only
                // hits run here, so the accept loop is never held by a render.
                // A panic in it must not end the loop: it is caught and ends
                // only its connection, as it would in a task of its own.
                let mut connection = Box::pin(
                    std::panic::AssertUnwindSafe(serve_plain(stream, peer, slot))
                        .catch_unwind()
                        .map(move |served| {
                            if served.is_err() {
                                if let Some(skipped) = super::PANICS.allow() {
                                    tracing::error!(%peer, skipped, "an HTTP connection panicked; closed");
                                }
                            }
                        }),
                );
                if futures::poll!(connection.as_mut()).is_pending() {
                    connections.spawn(connection);
                }
            }
        }
    }
}

/// Connections reach `accept` once their first bytes are in
/// (TCP_DEFER_ACCEPT), so the first read finds the request and the
/// first-request path serves it; woken by the bare handshake instead, the
/// read came too early for a share of connections, which then went through
/// the reactor and hyper. A connection that stays silent waits in the
/// kernel's bounded queue of half-open ones, not in a slot, and is
/// accepted after about `wait` (then the header deadline runs as before).
pub(super) fn defer_accept(listener: &TcpListener, wait: Duration) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let seconds = wait.as_secs().clamp(1, 30) as libc::c_int;
        // SAFETY: the descriptor is the listener's, open for this call, and
        // the option reads exactly one `c_int` from a live local.
        let set = unsafe {
            libc::setsockopt(
                listener.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_DEFER_ACCEPT,
                (&seconds as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if set != 0 {
            tracing::debug!(error = %std::io::Error::last_os_error(), "TCP_DEFER_ACCEPT not set");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (listener, wait);
}

/// Which of the node's listeners an accept loop serves: the `listener`
/// label of the shed counters, so that the API listener's refusals (PBXs
/// asking for caller names) are told apart from phones' (provisioning).
/// A fixed set, never a value from a request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Listener {
    /// `http.listen`: the API, lookups, and `/metrics` unless monitoring
    /// has a listener of its own.
    #[default]
    Api,
    /// `provisioning.http_listen`: phones over plain HTTP.
    Provisioning,
    /// `provisioning.https_listen`: phones over HTTPS.
    ProvisioningTls,
    /// `http.monitoring_listen`.
    Monitoring,
}

impl Listener {
    /// Every one, for the test that each starts at zero (`metric_help.rs`).
    #[cfg(test)]
    pub const ALL: [Listener; 4] = [
        Listener::Api,
        Listener::Provisioning,
        Listener::ProvisioningTls,
        Listener::Monitoring,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            Listener::Api => "api",
            Listener::Provisioning => "provisioning",
            Listener::ProvisioningTls => "provisioning_tls",
            Listener::Monitoring => "monitoring",
        }
    }
}

/// Why a newcomer was not given a place.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Refused {
    /// The listener is full and no place could be made.
    Full,
    /// Its source already holds `max_per_source` connections.
    SourceShare,
}

/// The next connection: non-blocking and close-on-exec from the start
/// (no extra system calls), and not registered with the reactor.
async fn accept(
    listener: &AsyncFd<std::net::TcpListener>,
) -> std::io::Result<(OwnedFd, SocketAddr)> {
    use rustix::net::{acceptfrom_with, SocketFlags};
    loop {
        let mut ready = listener.readable().await?;
        let accepted = ready.try_io(|listener| {
            Ok(acceptfrom_with(
                listener,
                SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
            )?)
        });
        let Ok(accepted) = accepted else { continue };
        let (stream, peer) = accepted?;
        let peer = peer
            .and_then(|peer| SocketAddr::try_from(peer).ok())
            .ok_or_else(|| std::io::Error::other("accepted a connection without an IP peer"))?;
        return Ok((stream, peer));
    }
}
