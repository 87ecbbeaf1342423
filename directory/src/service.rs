//! The lookup service: normalize, answer from the cache, or run the tenant's
//! sources in priority order within one deadline.
//!
//! Concurrent misses on one number share one load. The load runs in its own
//! spawned task with its own deadline, so a caller that gives up (the PBX
//! hung up, the HTTP client went away) never stalls the others: the shared
//! future outlives any one waiter (moka's `get_with` would not; see its
//! issue 240). A tenant whose sources all answer from memory has nothing
//! to wait for but its directory index's build (on a blocking thread, and
//! for no longer than the deadline) and is resolved on the caller's task.
//!
//! - `options`: what the operator's `lookup` section sets.
//! - `lookup`: one lookup, from the caller's number to its answer: the
//!   cache, the normalization memo, the sources in priority order.
//! - `loads`: the loads misses share, and what they leave in the cache.
//! - `changes`: the mirror's changes, which drop a tenant's answers.

mod changes;
mod loads;
mod lookup;
mod options;

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};

use dialtone_sync::{Id, Mirror, SecretKey};
use moka::future::Cache;
use tokio_util::sync::CancellationToken;

use crate::cache::{self, Entry, Generations, Key, Resolved};
use crate::clock::Clock;
use crate::local::LocalDirectory;
use crate::networks::SourceNetworks;
use crate::sources::{BreakerOptions, RemoteSource, SourceRegistry};
use loads::Loads;
pub use options::{default_mirror_threads, LookupOptions};

/// The local directory's priority: remote sources with a lower number run
/// before it, the rest after it.
pub const LOCAL_PRIORITY: i32 = 0;
pub const LOCAL_SOURCE: &str = "local";
/// Bytes the normalization memo may hold: about 200,000 (region, spelling)
/// pairs as PBXes send them. Weighed rather than counted, so the memo's
/// cost does not depend on what callers send.
const NORMALIZED_BYTES: u64 = 32 << 20;

/// How the answer was obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheStatus {
    Hit,
    /// Expired answer served while a refresh runs.
    Stale,
    /// This caller started the load.
    Miss,
    /// Joined a load another caller started.
    Coalesced,
    /// Not answered: the deadline passed or too many loads were running.
    Shed,
}

impl CacheStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "hit",
            CacheStatus::Stale => "stale",
            CacheStatus::Miss => "miss",
            CacheStatus::Coalesced => "coalesced",
            CacheStatus::Shed => "shed",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Answer {
    /// The number in E.164.
    pub number: Arc<str>,
    pub resolved: Resolved,
    pub cache: CacheStatus,
}

impl Answer {
    pub fn name(&self) -> Option<&str> {
        self.resolved.name.as_deref()
    }
}

pub(crate) struct Inner {
    pub(crate) mirror: Arc<Mirror>,
    pub(crate) options: LookupOptions,
    clock: Clock,
    pub(crate) local: LocalDirectory,
    pub(crate) sources: SourceRegistry,
    cache: Cache<Key, Arc<Entry>>,
    /// Each tenant's bytes in `cache` (`cache.rs`).
    cache_shares: Arc<crate::cache::TenantShares>,
    generations: Generations,
    inflight: Mutex<Loads>,
    load_ids: AtomicU64,
    /// Set once a change follower has run.
    followed: AtomicBool,
    /// (region, input) to E.164, for inputs that normalize.
    /// Keyed by `region NUL number`, so a hit allocates nothing (a region
    /// is an ISO code and never holds a NUL).
    normalized: moka::sync::Cache<String, Arc<str>>,
    /// Per tenant, when its mirrored sources may start their next sync
    /// (`mirror/gates.rs`).
    pub(crate) sync_gates: crate::mirror::gates::SyncGates,
    /// Where mirrors' CPU work runs (`mirror/work.rs`).
    pub(crate) mirror_work: crate::mirror::work::MirrorWork,
}

/// Cheap to clone; every clone shares the cache and the sources.
#[derive(Clone)]
pub struct LookupService {
    pub(crate) inner: Arc<Inner>,
}

impl LookupService {
    pub fn new(
        mirror: Arc<Mirror>,
        key: Option<SecretKey>,
        options: LookupOptions,
    ) -> LookupService {
        Self::with_clock(mirror, key, options, Clock::system())
    }

    pub fn with_clock(
        mirror: Arc<Mirror>,
        key: Option<SecretKey>,
        options: LookupOptions,
        clock: Clock,
    ) -> LookupService {
        let breaker = BreakerOptions {
            threshold: options.breaker_threshold,
            cooldown: options.breaker_cooldown,
            deadline: options.deadline,
        };
        let cache_shares = Arc::new(crate::cache::TenantShares::new(options.cache_bytes));
        LookupService {
            inner: Arc::new(Inner {
                local: LocalDirectory::keeping_readings(
                    mirror.clone(),
                    options.suffix_len,
                    options.max_indexed_tenants,
                    options.mirror_dir.clone(),
                ),
                sources: SourceRegistry::new(
                    key,
                    breaker,
                    clock.clone(),
                    options.source_networks.clone(),
                ),
                cache: cache::build(options.cache_bytes, options.max_stale, cache_shares.clone()),
                cache_shares,
                generations: Generations::default(),
                inflight: Mutex::default(),
                load_ids: AtomicU64::new(0),
                followed: AtomicBool::new(false),
                normalized: moka::sync::Cache::builder()
                    // moka's own per-entry overhead, roughly, plus the strings.
                    .weigher(|key: &String, e164: &Arc<str>| (128 + key.len() + e164.len()) as u32)
                    .max_capacity(NORMALIZED_BYTES)
                    .build(),
                sync_gates: Default::default(),
                mirror_work: crate::mirror::work::MirrorWork::new(options.mirror_threads),
                mirror,
                options,
                clock,
            }),
        }
    }

    /// Where this service's sources may connect (the admin API's source
    /// test builds its sources under the same rule).
    pub fn source_networks(&self) -> &Arc<SourceNetworks> {
        &self.inner.options.source_networks
    }

    pub fn mirror(&self) -> &Arc<Mirror> {
        &self.inner.mirror
    }

    /// The tenant directories' indexes, for tests and diagnostics.
    pub fn local(&self) -> &LocalDirectory {
        &self.inner.local
    }

    /// A tenant's built remote source, for tests and diagnostics.
    pub fn source(&self, tenant: Id, name: &str) -> Option<Arc<RemoteSource>> {
        self.inner
            .sources
            .get(&self.inner.mirror.load(), tenant, name)
    }

    /// For a node's life, from its start: builds the local directory
    /// indexes of the tenants whose first build would not fit a lookup's
    /// deadline, one at a time (see [`LocalDirectory::warm`]), unless the
    /// options turn it off, since the index cache is empty at a start and
    /// a restart would otherwise leave those tenants without caller names
    /// for seconds; then, at `shutdown`, ends every whole build still
    /// running, so none holds the process's exit.
    pub async fn warm_directories(&self, shutdown: CancellationToken) {
        if self.inner.options.warm_directories {
            let started = std::time::Instant::now();
            let warmed = self.inner.local.warm(shutdown.cancelled()).await;
            if warmed.tenants > 0 || warmed.stopped {
                tracing::info!(
                    tenants = warmed.tenants,
                    entries = warmed.entries,
                    stopped = warmed.stopped,
                    ms = started.elapsed().as_millis() as u64,
                    "local directory indexes built ahead of lookups"
                );
            }
        }
        shutdown.cancelled().await;
        self.inner.local.stop_building();
    }
}

#[cfg(test)]
#[path = "deleted_tenant_tests.rs"]
mod deleted_tenant_tests;
