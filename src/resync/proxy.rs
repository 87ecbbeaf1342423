//! The proxy's addresses, resolved for many NOTIFYs at once.
//!
//! A name resolution is a blocking `getaddrinfo` on tokio's blocking
//! threads, which the render pool shares, and it cannot be cancelled.
//! Resolving per NOTIFY would let a slow resolver and a full resync queue
//! hold hundreds of those threads at once, and every tenant's renders
//! would wait behind them. So one resolution runs at a time, its answer
//! serves every NOTIFY for a while, and a failed one keeps the last good
//! answer: a resolver outage does not stop resyncs.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

/// How long a resolved answer serves before it is asked again.
const FRESH: Duration = Duration::from_secs(30);
/// How soon a failed resolution is tried again.
const RETRY: Duration = Duration::from_secs(5);
/// Longest a NOTIFY waits for a resolution; the lookup itself may run on.
const WAIT: Duration = Duration::from_secs(5);

pub(super) struct ProxyAddress {
    name: String,
    held: Mutex<Held>,
}

#[derive(Default)]
struct Held {
    found: Vec<SocketAddr>,
    /// When `found` is asked again.
    until: Option<Instant>,
}

impl ProxyAddress {
    pub(super) fn new(name: &str) -> ProxyAddress {
        ProxyAddress {
            name: name.to_string(),
            held: Mutex::new(Held::default()),
        }
    }

    /// The proxy's addresses: the held answer while fresh, else a new one
    /// (or the last good one, if that fails). Empty: never resolved.
    pub(super) async fn addresses(&self) -> Vec<SocketAddr> {
        // An async lock: NOTIFYs waiting for the one resolution hold no
        // thread.
        let mut held = self.held.lock().await;
        if held.until.is_some_and(|until| Instant::now() < until) {
            return held.found.clone();
        }
        let asked = tokio::time::timeout(WAIT, tokio::net::lookup_host(self.name.as_str())).await;
        match asked {
            Ok(Ok(found)) => {
                let found: Vec<SocketAddr> = found.collect();
                if !found.is_empty() {
                    held.found = found;
                    held.until = Some(Instant::now() + FRESH);
                    return held.found.clone();
                }
                tracing::warn!(proxy = %self.name, "resync: the proxy's name has no address");
            }
            Ok(Err(e)) => {
                tracing::warn!(proxy = %self.name, error = %e, "resync: resolving the proxy failed")
            }
            Err(_) => {
                tracing::warn!(proxy = %self.name, wait = ?WAIT, "resync: resolving the proxy timed out")
            }
        }
        metrics::counter!("dialtone_resync_proxy_unresolved_total").increment(1);
        held.until = Some(Instant::now() + RETRY);
        held.found.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_address_resolves_and_is_held() {
        let proxy = ProxyAddress::new("127.0.0.1:5060");
        let first = proxy.addresses().await;
        assert_eq!(first, vec!["127.0.0.1:5060".parse().unwrap()]);
        assert!(proxy.held.lock().await.until.is_some());
        assert_eq!(proxy.addresses().await, first);
    }

    #[tokio::test]
    async fn a_failed_resolution_keeps_the_last_good_answer() {
        let proxy = ProxyAddress::new("a name without a port");
        assert!(proxy.addresses().await.is_empty());
        let good: SocketAddr = "127.0.0.5:5060".parse().unwrap();
        {
            let mut held = proxy.held.lock().await;
            held.found = vec![good];
            held.until = Some(Instant::now() - Duration::from_secs(1));
        }
        assert_eq!(proxy.addresses().await, vec![good]);
        let held = proxy.held.lock().await;
        assert!(held.until.unwrap() <= Instant::now() + RETRY);
    }
}
