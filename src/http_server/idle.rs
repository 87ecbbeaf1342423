//! Who makes room first when a listener is full: a keep-alive connection
//! that has been answered and sits idle, waiting for a next request that
//! may never come.
//!
//! Many phones keep a connection open after their last file until
//! `header_timeout` ends it. In a boot storm those lingering connections
//! fill the listener while phones still to boot are answered 503. Closing
//! one costs its client nothing it asked for: an HTTP/1.1 client must be
//! ready for the server to close an idle connection (and retries an
//! idempotent request that raced with the close on a new one), which is
//! what other servers do when out of connections. So a newcomer to a full
//! listener takes the place of the connection idle the longest, if it has
//! been idle for at least `after`; only then of a slow reader (`slow.rs`).
//!
//! A connection that has not yet sent a whole first request (a TLS
//! handshake not finished, headers trickling in) counts as idle since it
//! was accepted, and since its handshake ended, and is taken once it has
//! waited `first_after`: half of `header_timeout` (5 s), which ends such a
//! connection anyway. A phone sends its request as soon as it connects,
//! but on a long or lossy link a TLS handshake alone takes a few round
//! trips: at a second, such phones were cut by each newcomer in a storm.
//!
//! When no connection is that idle, and before any slow reader, a newcomer
//! whose source holds fewer connections than another source takes the
//! place of one of that source's (`shares.rs`), found among its own
//! entries: one still without a whole first request after `after`
//! (headers trickling, a handshake hanging), or one between requests
//! idle for `after`. When any waiting connection of the busiest source
//! went, however young, an office behind one NAT (the busiest source in a
//! boot storm) lost a phone to each home phone arriving, 50 ms into its
//! fetches.
//!
//! A connection costs the registry's lock twice (when hyper takes it over
//! and when it ends); each request costs two atomic additions, a clock read
//! and a store, on the connection's own state.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes, HttpBody};
use tokio::sync::Notify;

/// How long a connection must have been idle to be closed for a newcomer:
/// a phone fetching its files one after another on one connection asks for
/// the next within milliseconds, and is not cut between two of them.
pub(super) const IDLE_BEFORE_EVICTION: Duration = Duration::from_secs(1);

/// The connections hyper serves, by the address of their `Lull` (unique
/// while listed: the entry holds it).
pub(super) struct Idle {
    after: Duration,
    /// For a connection still without a whole first request.
    first_after: Duration,
    epoch: Instant,
    open: Mutex<Registry>,
}

#[derive(Default)]
struct Registry {
    listed: HashMap<usize, Arc<Lull>>,
    /// The keys of `listed` by source (exempt networks' aside).
    by_source: HashMap<IpAddr, HashSet<usize>>,
}

impl Registry {
    fn insert(&mut self, lull: Arc<Lull>) {
        let key = key(&lull);
        if let Some(source) = lull.source {
            self.by_source.entry(source).or_default().insert(key);
        }
        self.listed.insert(key, lull);
    }

    fn remove(&mut self, key: usize) -> Option<Arc<Lull>> {
        let lull = self.listed.remove(&key)?;
        if let Some(source) = lull.source {
            if let Some(keys) = self.by_source.get_mut(&source) {
                keys.remove(&key);
                if keys.is_empty() {
                    self.by_source.remove(&source);
                }
            }
        }
        Some(lull)
    }
}

/// One connection's requests, as the listener sees them.
pub(super) struct Lull {
    epoch: Instant,
    /// Requests hyper has handed to the router on this connection.
    started: AtomicU32,
    /// Of those, the ones whose response body hyper has taken to its end
    /// (or dropped).
    ended: AtomicU32,
    /// When the connection was listed or its last response ended,
    /// whichever came later, in milliseconds since `epoch`, plus one.
    ended_at: AtomicU64,
    /// Listed before any request of its own was answered: until one
    /// reaches the router, it waits for its first.
    first: bool,
    /// Its source's share (`shares.rs`), `None` for an exempt network.
    source: Option<IpAddr>,
    evicted: AtomicBool,
    wake: Notify,
}

impl Idle {
    pub(super) fn new(after: Duration, first_after: Duration) -> Self {
        Idle {
            after,
            first_after: first_after.max(after),
            epoch: Instant::now(),
            open: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Lists a connection hyper (or the TLS handshake) takes over: idle from
    /// now until a request reaches the router. `answered`: its first
    /// request was answered before (`first_request`); if not, it is still
    /// to come. `source`: its share's, so that its source's connections can
    /// be found.
    pub(super) fn enter(&self, answered: bool, source: Option<IpAddr>) -> Listed<'_> {
        self.enter_at(answered, source, Instant::now())
    }

    /// `enter` with the clock read by the caller (tests pass their own).
    fn enter_at(&self, answered: bool, source: Option<IpAddr>, now: Instant) -> Listed<'_> {
        let lull = Arc::new(Lull {
            epoch: self.epoch,
            started: AtomicU32::new(0),
            ended: AtomicU32::new(0),
            ended_at: AtomicU64::new(0),
            first: !answered,
            source,
            evicted: AtomicBool::new(false),
            wake: Notify::new(),
        });
        lull.mark_ended_at(now);
        self.lock().insert(lull.clone());
        Listed { idle: self, lull }
    }

    /// Ends the connection idle the longest, if one has been idle for
    /// `after`: its place is the caller's, as with a slow reader's.
    pub(super) fn evict(&self) -> bool {
        self.evict_at(Instant::now())
    }

    fn evict_at(&self, now: Instant) -> bool {
        let now = since(self.epoch, now);
        let (after, first_after) = (
            self.after.as_millis() as u64,
            self.first_after.as_millis() as u64,
        );
        let lull = {
            let mut open = self.lock();
            let oldest = open
                .listed
                .iter()
                .filter_map(|(key, lull)| {
                    let (ended_at, first) = lull.idle_since()?;
                    let after = if first { first_after } else { after };
                    (now.saturating_sub(ended_at) >= after).then_some((ended_at, *key))
                })
                .min();
            let Some((_, key)) = oldest else {
                return false;
            };
            let Some(lull) = open.remove(key) else {
                return false;
            };
            lull
        };
        lull.end();
        true
    }

    /// Ends the connection of `source` idle the longest, if it has been
    /// idle (or waited for its first request) for `after`: sooner than
    /// `evict` would take one still without a first request, never one
    /// with a request in the router or a response going out.
    pub(super) fn evict_from(&self, source: IpAddr) -> bool {
        self.evict_from_at(source, Instant::now())
    }

    fn evict_from_at(&self, source: IpAddr, now: Instant) -> bool {
        let now = since(self.epoch, now);
        let after = self.after.as_millis() as u64;
        let lull = {
            let mut open = self.lock();
            let Some(keys) = open.by_source.get(&source) else {
                return false;
            };
            let oldest = keys
                .iter()
                .filter_map(|key| {
                    let (ended_at, _) = open.listed.get(key)?.idle_since()?;
                    (now.saturating_sub(ended_at) >= after).then_some((ended_at, *key))
                })
                .min();
            let Some((_, key)) = oldest else {
                return false;
            };
            let Some(lull) = open.remove(key) else {
                return false;
            };
            lull
        };
        lull.end();
        true
    }
}

fn key(lull: &Arc<Lull>) -> usize {
    Arc::as_ptr(lull) as usize
}

/// Milliseconds from `epoch` to `now` (none for a `now` before it).
fn since(epoch: Instant, now: Instant) -> u64 {
    now.saturating_duration_since(epoch).as_millis() as u64
}

impl Lull {
    fn end(&self) {
        self.evicted.store(true, Ordering::Release);
        // A permit is kept if the connection is not waiting yet.
        self.wake.notify_one();
    }

    /// When it went idle, if it is: no request in the router or its body
    /// still being sent.
    /// and whether it is still waiting for its first request.
    fn idle_since(&self) -> Option<(u64, bool)> {
        let ended = self.ended.load(Ordering::Acquire);
        let started = self.started.load(Ordering::Acquire);
        let ended_at = self.ended_at.load(Ordering::Acquire);
        (started == ended).then(|| (ended_at.saturating_sub(1), self.first && started == 0))
    }

    /// Its TLS handshake ended: the wait for its first request starts now.
    pub(super) fn handshake_done(&self) {
        self.mark_ended_at(Instant::now());
    }

    fn mark_ended_at(&self, now: Instant) {
        self.ended_at
            .store(since(self.epoch, now) + 1, Ordering::Release);
    }

    /// A request's response, to go out as [`Tracked`], which marks its
    /// end; [`Lull::begin`] was called as the request reached the router.
    pub(super) fn track(
        self: &Arc<Self>,
        response: axum::response::Response,
    ) -> axum::http::Response<Tracked> {
        response.map(|body| Tracked {
            body,
            lull: self.clone(),
        })
    }

    /// A request reaches the router.
    pub(super) fn begin(&self) {
        self.started.fetch_add(1, Ordering::AcqRel);
    }

    /// Whether hyper has started no request of its own on this connection:
    /// then it has nothing of ours to finish sending, and may be dropped.
    pub(super) fn untouched(&self) -> bool {
        self.started.load(Ordering::Acquire) == 0
    }
}

/// A connection's place in the registry, given up when dropped.
pub(super) struct Listed<'a> {
    idle: &'a Idle,
    lull: Arc<Lull>,
}

impl Listed<'_> {
    pub(super) fn lull(&self) -> &Arc<Lull> {
        &self.lull
    }

    /// Resolves once a newcomer has taken this connection's place.
    pub(super) async fn evicted(&self) {
        loop {
            let notified = self.lull.wake.notified();
            if self.lull.evicted.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for Listed<'_> {
    fn drop(&mut self) {
        if !self.lull.evicted.load(Ordering::Acquire) {
            self.idle.lock().remove(key(&self.lull));
        }
    }
}

/// A response body that tells its connection's `Lull` when hyper is done
/// with it, whether sent to its end or dropped with the connection.
pub(super) struct Tracked {
    body: Body,
    lull: Arc<Lull>,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.lull.mark_ended_at(Instant::now());
        self.lull.ended.fetch_add(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests;
