//! The proxy's addresses, resolved for many NOTIFYs at once, and which of
//! them the next NOTIFY goes to.
//!
//! A name resolution is a blocking `getaddrinfo` on tokio's blocking
//! threads, which the render pool shares, and it cannot be cancelled.
//! Resolving per NOTIFY would let a slow resolver and a full resync queue
//! hold hundreds of those threads at once, and every tenant's renders
//! would wait behind them. So one resolution runs at a time, its answer
//! serves every NOTIFY for a while, and a failed one keeps the last good
//! answer: a resolver outage does not stop resyncs. Once there is an
//! answer, a stale one is refreshed in the background and NOTIFYs go on
//! with it meanwhile: a lookup that takes seconds used to stall every
//! NOTIFY behind the lock it held.
//!
//! A name with several addresses is a set of proxies: NOTIFYs go to one
//! until one sent to it goes unanswered, then to the next.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;

/// How long a resolved answer serves before it is asked again.
const FRESH: Duration = Duration::from_secs(30);
/// How soon a failed resolution is tried again.
const RETRY: Duration = Duration::from_secs(5);
/// Longest a resolution is waited for; the lookup itself may run on.
const WAIT: Duration = Duration::from_secs(5);

/// Resolves a `host:port`: `tokio::net::lookup_host`, or a test's own.
type Lookup = Arc<dyn Fn(String) -> BoxFuture<'static, io::Result<Vec<SocketAddr>>> + Send + Sync>;

pub(super) struct ProxyAddress {
    shared: Arc<Shared>,
}

struct Shared {
    name: String,
    lookup: Lookup,
    /// Locked only to read or replace the answer, never across a lookup.
    held: Mutex<Held>,
    /// Held by the one resolution running. Only a NOTIFY with no answer
    /// to go on ever waits for it.
    resolving: Arc<tokio::sync::Mutex<()>>,
    rotation: Mutex<Rotation>,
}

#[derive(Default)]
struct Held {
    found: Vec<SocketAddr>,
    /// When `found` is asked again.
    until: Option<Instant>,
}

#[derive(Default)]
struct Rotation {
    /// Where the last NOTIFY went.
    current: Option<SocketAddr>,
    /// Its unanswered NOTIFYs when it was picked: more since, and the next
    /// address takes over.
    unanswered_then: u64,
}

impl ProxyAddress {
    pub(super) fn new(name: &str) -> ProxyAddress {
        let lookup: Lookup = Arc::new(|name: String| {
            Box::pin(async move { tokio::net::lookup_host(name).await.map(Iterator::collect) })
        });
        ProxyAddress::with_lookup(name, lookup)
    }

    fn with_lookup(name: &str, lookup: Lookup) -> ProxyAddress {
        ProxyAddress {
            shared: Arc::new(Shared {
                name: name.to_string(),
                lookup,
                held: Mutex::default(),
                resolving: Arc::default(),
                rotation: Mutex::default(),
            }),
        }
    }

    /// The proxy's addresses: the held answer, refreshed in the background
    /// once stale. Only before the first answer does a NOTIFY wait for a
    /// resolution (at most `WAIT`). Empty: never resolved.
    pub(super) async fn addresses(&self) -> Vec<SocketAddr> {
        let (found, due) = self.shared.held_answer();
        if !due {
            return found;
        }
        if !found.is_empty() {
            self.refresh_in_background();
            return found;
        }
        let Ok(_turn) = tokio::time::timeout(WAIT, self.shared.resolving.lock()).await else {
            return Vec::new();
        };
        // Another NOTIFY's resolution may have ended while this one waited.
        let (found, due) = self.shared.held_answer();
        if !due {
            return found;
        }
        self.shared.resolve().await
    }

    fn refresh_in_background(&self) {
        let Ok(turn) = self.shared.resolving.clone().try_lock_owned() else {
            return;
        };
        let shared = self.shared.clone();
        tokio::spawn(async move {
            shared.resolve().await;
            drop(turn);
        });
    }

    /// Where the next NOTIFY goes among `set` (the addresses usable now):
    /// where the last went, or the address after it in the resolver's
    /// order once `unanswered` (per address, a running count) grew for it
    /// since it was picked; the first when it is not in `set`.
    pub(super) fn pick(
        &self,
        set: &[SocketAddr],
        unanswered: impl Fn(SocketAddr) -> u64,
    ) -> Option<SocketAddr> {
        let mut rotation = lock(&self.shared.rotation);
        let at_current = rotation
            .current
            .and_then(|c| set.iter().position(|a| *a == c));
        let index = match at_current {
            Some(at) if unanswered(set[at]) > rotation.unanswered_then => (at + 1) % set.len(),
            Some(at) => at,
            None => 0,
        };
        let chosen = *set.get(index)?;
        rotation.current = Some(chosen);
        rotation.unanswered_then = unanswered(chosen);
        Some(chosen)
    }
}

impl Shared {
    /// The answer held, and whether it is due to be asked again.
    fn held_answer(&self) -> (Vec<SocketAddr>, bool) {
        let held = lock(&self.held);
        let due = held.until.is_none_or(|until| Instant::now() >= until);
        (held.found.clone(), due)
    }

    /// Asks the resolver once; keeps the last good answer if that fails.
    async fn resolve(&self) -> Vec<SocketAddr> {
        let asked = tokio::time::timeout(WAIT, (self.lookup)(self.name.clone())).await;
        let found = match asked {
            Ok(Ok(found)) if !found.is_empty() => Some(found),
            Ok(Ok(_)) => {
                tracing::warn!(proxy = %self.name, "resync: the proxy's name has no address");
                None
            }
            Ok(Err(e)) => {
                tracing::warn!(proxy = %self.name, error = %e, "resync: resolving the proxy failed");
                None
            }
            Err(_) => {
                tracing::warn!(proxy = %self.name, wait = ?WAIT, "resync: resolving the proxy timed out");
                None
            }
        };
        let mut held = lock(&self.held);
        match found {
            Some(found) => {
                held.found = found;
                held.until = Some(Instant::now() + FRESH);
            }
            None => {
                metrics::counter!("dialtone_resync_proxy_unresolved_total").increment(1);
                held.until = Some(Instant::now() + RETRY);
            }
        }
        held.found.clone()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
#[path = "proxy_tests.rs"]
mod tests;
