//! The answer cache: a moka cache bounded by weight, plus the generation
//! counters that make invalidation cheap and stale fills impossible.
//!
//! Freshness is decided here, against [`Clock`], rather than by moka's own
//! expiry, so that tests can move time. Moka only evicts entries once they
//! are too old to be served even stale.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use dialtone_sync::stamp::Input;
use dialtone_sync::{Id, MirrorState};
use moka::future::Cache;
use moka::Expiry;

/// Tenant and E.164 number.
pub type Key = (Id, Arc<str>);

/// What the sources said about one number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub name: Option<Arc<str>>,
    /// The source that answered (`local` for the tenant's directory).
    pub source: Option<Arc<str>>,
    /// Every source answered. A miss while a source failed is not a real
    /// miss: it is cached briefly and never replaces a known name.
    pub definitive: bool,
}

impl Resolved {
    pub fn unavailable() -> Resolved {
        Resolved {
            name: None,
            source: None,
            definitive: false,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Entry {
    pub resolved: Resolved,
    /// Clock time when the answer was stored.
    pub stored_at: Duration,
    pub ttl: Duration,
    pub tag: Tag,
}

/// What an answer was computed under: the tenant's generation (bumped by
/// the change stream and by hand) and the mirror's stamps of the tenant's
/// directory and sources. An entry or a running load answers only for the
/// same tag, and the stamps make that hold even if the change stream is
/// late or its follower down.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tag {
    pub generation: u64,
    pub directory: u64,
    pub sources: u64,
}

impl Tag {
    /// Takes the generation first: a load that sees a generation from after
    /// an invalidation also sees the state it was made for.
    pub fn of(generations: &Generations, state: &MirrorState, tenant: Id) -> Tag {
        let generation = generations.current(tenant);
        Tag {
            generation,
            directory: state.stamp(Input::Directory(tenant)),
            sources: state.stamp(Input::Sources(tenant)),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Freshness {
    Fresh,
    /// Expired but within the max-stale window: serve it and refresh.
    Stale,
    Expired,
}

impl Entry {
    pub fn freshness(&self, now: Duration, max_stale: Duration) -> Freshness {
        let age = now.saturating_sub(self.stored_at);
        if age < self.ttl {
            Freshness::Fresh
        } else if age < self.ttl + self.stale_window(max_stale) {
            Freshness::Stale
        } else {
            Freshness::Expired
        }
    }

    /// How long past its TTL the entry is still served while a refresh
    /// runs. A failure is no answer: served stale, it would only hide a
    /// source that has recovered from the first caller after it did, who
    /// should wait (within the deadline) for the retry instead.
    ///
    /// A known name is worth the whole window: it keeps answering while
    /// the source is down. A "not found" is not: anyone can make endless
    /// ones by asking for random numbers, and kept for `max_stale` (a day
    /// by default) they sat in the cache long after their TTL, holding
    /// their tenant's share and other tenants' room. So its window is at
    /// most its own TTL (the negative TTL it was stored with).
    fn stale_window(&self, max_stale: Duration) -> Duration {
        match (&self.resolved.name, self.resolved.definitive) {
            (Some(_), _) => max_stale,
            (None, true) => max_stale.min(self.ttl),
            (None, false) => Duration::ZERO,
        }
    }

    /// When moka may drop the entry: once it cannot be served even stale.
    fn lifetime(&self, max_stale: Duration) -> Duration {
        self.ttl.saturating_add(self.stale_window(max_stale))
    }
}

struct Lifetime {
    max_stale: Duration,
}

impl Expiry<Key, Arc<Entry>> for Lifetime {
    fn expire_after_create(&self, _: &Key, entry: &Arc<Entry>, _: Instant) -> Option<Duration> {
        Some(entry.lifetime(self.max_stale))
    }
    fn expire_after_update(
        &self,
        _: &Key,
        entry: &Arc<Entry>,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(entry.lifetime(self.max_stale))
    }
}

/// Bytes an entry costs, roughly: moka's own overhead plus the strings.
pub fn weight(key: &Key, entry: &Arc<Entry>) -> u32 {
    let strings = key.1.len()
        + entry.resolved.name.as_ref().map_or(0, |n| n.len())
        + entry.resolved.source.as_ref().map_or(0, |s| s.len());
    (160 + strings) as u32
}

pub fn build(
    max_bytes: u64,
    max_stale: Duration,
    shares: Arc<TenantShares>,
) -> Cache<Key, Arc<Entry>> {
    Cache::builder()
        .weigher(weight)
        .max_capacity(max_bytes)
        .expire_after(Lifetime { max_stale })
        // A tenant past its share sweeps out its obsolete answers.
        .support_invalidation_closures()
        // Every entry put in is taken out once, whatever the cause (expired,
        // replaced, evicted, or refused by moka's admission after the put).
        .eviction_listener(move |key: Arc<Key>, entry: Arc<Entry>, _| {
            shares.release(key.0, weight(&key, &entry));
        })
        .build()
}

/// However many tenants hold answers, one may hold this part of the
/// answer cache: a quarter once four or more tenants hold answers, an
/// equal share among fewer.
const TENANT_SHARE_DIVISOR: u64 = 4;

/// The bytes of cached answers each tenant holds. The cache is the node's:
/// without a share, a tenant looking up endless distinct numbers (each
/// twice, to pass moka's admission) pushed every other tenant's answers
/// out, and they paid again in upstream dips and post-dial delay.
///
/// A tenant's share is the cache divided among the tenants holding
/// answers (itself counted), at most four ways: a node serving one tenant
/// uses the whole cache, two tenants half each, four or more a quarter
/// each. Past its share a tenant's new answers are served but not cached,
/// however empty the cache is. Holding a tenant to a quarter only once the
/// cache was three quarters full let the first tenant to fill it keep
/// most of it while later tenants' new answers went uncached; a fixed
/// quarter left three quarters of a one-tenant node's cache unused. A
/// tenant under its share is always cached, even when the cache is full:
/// moka then evicts by its own policy. What a flooding tenant keeps past
/// a newcomer's arrival is bounded in time: its misses ("no such number")
/// live at most twice their TTL.
pub struct TenantShares {
    cache_bytes: u64,
    held: std::sync::Mutex<HashMap<Id, Held>>,
    /// When the node last swept (`sweep_due`): moka keeps each sweep's
    /// predicate until it has scanned the whole cache, and every read of
    /// an entry older than a predicate runs it, every tenant's reads.
    last_sweep: std::sync::Mutex<Option<Instant>>,
}

/// At most one sweep this often on a node, and one a tenant this often.
const NODE_SWEEP_EVERY: Duration = Duration::from_secs(5);
const TENANT_SWEEP_EVERY: Duration = Duration::from_secs(60);

/// One tenant's part of the cache.
#[derive(Default)]
struct Held {
    bytes: u64,
    /// The generation its obsolete answers were last swept out for, and
    /// when ([`TenantShares::sweep_due`]).
    swept: u64,
    swept_at: Option<Instant>,
}

impl TenantShares {
    pub fn new(cache_bytes: u64) -> TenantShares {
        TenantShares {
            cache_bytes: cache_bytes.max(1),
            held: Default::default(),
            last_sweep: Default::default(),
        }
    }

    /// The share of each of `holders` tenants.
    fn share(&self, holders: usize) -> u64 {
        let ways = (holders as u64).clamp(1, TENANT_SHARE_DIVISOR);
        (self.cache_bytes / ways).max(1)
    }

    /// Counts `bytes` more for `tenant` and says to cache them, unless they
    /// are a new answer past the tenant's share. A `replacing` answer is
    /// always counted: moka gives back the one it replaces.
    pub fn take(&self, tenant: Id, bytes: u32, replacing: bool) -> bool {
        let bytes = u64::from(bytes);
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let now = held.get(&tenant).map(|h| h.bytes);
        let after = now.unwrap_or(0).saturating_add(bytes);
        let holders = held.len() + usize::from(now.is_none());
        if !replacing && after > self.share(holders) {
            return false;
        }
        held.entry(tenant).or_default().bytes = after;
        true
    }

    /// Whether `tenant`, refused past its share, should have its answers
    /// of generations before `generation` swept out now: once per
    /// generation, at most once a minute per tenant and once in five
    /// seconds per node, so that a tenant editing as fast as it may keeps
    /// few sweeps pending for everyone's reads. Invalidating a tenant only
    /// moves its generation, so its obsolete answers went on counting
    /// toward its share until they expired (a name after its TTL and
    /// `max_stale`, a day by default): after an edit, a tenant near its
    /// share had its new answers served uncached, each repeat caller
    /// another upstream query.
    pub fn sweep_due(&self, tenant: Id, generation: u64) -> bool {
        let now = Instant::now();
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let Some(h) = held.get_mut(&tenant) else {
            return false;
        };
        let tenant_due = h.swept_at.is_none_or(|at| now - at >= TENANT_SWEEP_EVERY);
        if h.swept >= generation || !tenant_due {
            return false;
        }
        let mut last = self.last_sweep.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|at| now - at < NODE_SWEEP_EVERY) {
            return false;
        }
        *last = Some(now);
        h.swept = generation;
        h.swept_at = Some(now);
        true
    }

    fn release(&self, tenant: Id, bytes: u32) {
        let bytes = u64::from(bytes);
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(now) = held.get_mut(&tenant) {
            now.bytes = now.bytes.saturating_sub(bytes);
            if now.bytes == 0 {
                held.remove(&tenant);
            }
        }
    }
}

/// Invalidation by generation: every entry and every load remembers the
/// tenant's generation it started under; bumping the generation makes them
/// all obsolete at once, with no scan of the cache. One entry per tenant
/// changed since the last full reload that still exists ([`Generations::forget`]).
#[derive(Default)]
pub struct Generations {
    counter: AtomicU64,
    /// Applies to every tenant (full reloads).
    floor: AtomicU64,
    tenants: RwLock<HashMap<Id, u64>>,
}

impl Generations {
    pub fn current(&self, tenant: Id) -> u64 {
        let floor = self.floor.load(Ordering::Acquire);
        let own = self
            .tenants
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&tenant)
            .copied()
            .unwrap_or(0);
        floor.max(own)
    }

    pub fn bump(&self, tenant: Id) {
        let next = self.counter.fetch_add(1, Ordering::AcqRel) + 1;
        self.tenants
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(tenant, next);
    }

    /// Drops a deleted tenant's entry, which nothing would read again:
    /// kept, every tenant ever changed held one for the node's life. Its
    /// generation reads as the floor again, which answers cached before
    /// its first bump carry, and that is safe: a lookup for a tenant the
    /// mirror lacks fails before the cache is read, ids are never reused,
    /// and were one reused, a tenant row's change (its creation included)
    /// moves the stamps in [`Tag`] to a version no earlier answer carries.
    /// Raising the floor instead would drop every tenant's answers at each
    /// tenant's delete.
    pub fn forget(&self, tenant: Id) {
        self.tenants
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&tenant);
    }

    #[cfg(test)]
    pub(crate) fn holds(&self, tenant: Id) -> bool {
        self.tenants
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&tenant)
    }

    pub fn bump_all(&self) {
        let next = self.counter.fetch_add(1, Ordering::AcqRel) + 1;
        let mut tenants = self.tenants.write().unwrap_or_else(|e| e.into_inner());
        self.floor.store(next, Ordering::Release);
        tenants.clear();
    }
}

#[cfg(test)]
#[path = "cache_tests.rs"]
mod tests;
