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

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dialtone_sync::{ChangeEvent, Entity, Id, Mirror, MirrorState, SecretKey};
use futures::future::{BoxFuture, FutureExt, Shared};
use moka::future::Cache;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::admission::{Admission, Admitted};
use crate::cache::{self, Entry, Freshness, Generations, Key, Resolved, Tag};
use crate::clock::Clock;
use crate::error::DirectoryError;
use crate::local::{LocalDirectory, NotReady};
use crate::name::clean_name;
use crate::networks::SourceNetworks;
use crate::normalize::{check_lookup_len, normalize};
use crate::sources::{BreakerOptions, RemoteSource, SourceRegistry};

/// The local directory's priority: remote sources with a lower number run
/// before it, the rest after it.
pub const LOCAL_PRIORITY: i32 = 0;
pub const LOCAL_SOURCE: &str = "local";
/// Bytes the normalization memo may hold: about 200,000 (region, spelling)
/// pairs as PBXes send them. Weighed rather than counted, so the memo's
/// cost does not depend on what callers send.
const NORMALIZED_BYTES: u64 = 32 << 20;

#[derive(Clone, Debug)]
pub struct LookupOptions {
    /// Hard limit for one lookup, all sources together.
    pub deadline: Duration,
    pub positive_ttl: Duration,
    pub negative_ttl: Duration,
    /// How long a miss is cached when a source failed (so it is not a real
    /// miss). Short, so a recovered source is asked again soon.
    pub failure_ttl: Duration,
    /// How long past its TTL an answer may still be served while a refresh runs.
    pub max_stale: Duration,
    pub cache_bytes: u64,
    /// Loads running at once; lookups beyond it answer "unavailable" at once.
    /// One tenant may hold at most a quarter of them (at least one), less
    /// as more tenants load at once, and a tenant holding fewer than four
    /// may start one from a reserve of a quarter more when all are taken:
    /// tenants whose sources are slow to answer cannot shed everyone else's
    /// (see `admission`).
    pub max_inflight: usize,
    pub breaker_threshold: u32,
    pub breaker_cooldown: Duration,
    pub suffix_len: usize,
    /// Tenants whose local directory index is kept in memory.
    pub max_indexed_tenants: u64,
    /// Whether a node builds the large directories' indexes when it starts
    /// ([`LookupService::warm_directories`]) rather than on their first
    /// lookups.
    pub warm_directories: bool,
    /// Where tenant-configured sources may connect (public addresses only
    /// by default).
    pub source_networks: Arc<SourceNetworks>,
    /// Where mirrored LDAP sources keep their files, and large local
    /// directories their numbers' readings (beside the node's snapshot);
    /// `None` keeps both in memory only.
    pub mirror_dir: Option<std::path::PathBuf>,
    /// The default `directory_entries` quota, which also caps a tenant's
    /// mirrored entries per source.
    pub mirror_entry_quota: u64,
    /// Blocking threads mirrored sources' work (normalizing, merging,
    /// indexing, their files) takes at most, node-wide.
    pub mirror_threads: usize,
    /// Lookups a second one tenant's keys may make through the lookup
    /// routes, cache hits included, and how many at once past that rate;
    /// past both, 429 (`rate`).
    pub tenant_rate: u32,
    pub tenant_burst: u32,
}

impl Default for LookupOptions {
    fn default() -> Self {
        LookupOptions {
            deadline: Duration::from_millis(300),
            positive_ttl: Duration::from_secs(3600),
            negative_ttl: Duration::from_secs(300),
            failure_ttl: Duration::from_secs(10),
            max_stale: Duration::from_secs(24 * 3600),
            cache_bytes: 64 << 20,
            max_inflight: 1024,
            breaker_threshold: 3,
            breaker_cooldown: Duration::from_secs(10),
            suffix_len: crate::local::DEFAULT_SUFFIX_LEN,
            max_indexed_tenants: 10_000,
            warm_directories: true,
            source_networks: SourceNetworks::default().shared(),
            mirror_dir: None,
            mirror_entry_quota: 200_000,
            mirror_threads: default_mirror_threads(),
            // A 1,000-seat tenant at its busy hour makes under 20 a second.
            tenant_rate: 200,
            tenant_burst: 2000,
        }
    }
}

/// Half the node's cores, at least one: mirror work is background work,
/// and the other half is left to answering phones and lookups.
pub fn default_mirror_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

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

type SharedLoad = Shared<BoxFuture<'static, Resolved>>;

struct Inflight {
    id: u64,
    tag: Tag,
    load: SharedLoad,
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
    /// (`mirror/tasks.rs`).
    pub(crate) sync_gates: crate::mirror::tasks::SyncGates,
    /// Where mirrors' CPU work runs (`mirror/work.rs`).
    pub(crate) mirror_work: crate::mirror::work::MirrorWork,
}

#[derive(Default)]
struct Loads {
    by_key: HashMap<Key, Inflight>,
    /// Load tasks running per tenant, counted until they end: a load an
    /// invalidation replaced in `by_key` still holds a connection.
    by_tenant: HashMap<Id, usize>,
    /// The sum of `by_tenant`.
    running: usize,
}

struct LoadDone<'a> {
    inner: &'a Inner,
    key: &'a Key,
    id: u64,
}

impl Drop for LoadDone<'_> {
    fn drop(&mut self) {
        let mut loads = self
            .inner
            .inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if loads
            .by_key
            .get(self.key)
            .is_some_and(|running| running.id == self.id)
        {
            loads.by_key.remove(self.key);
        }
        let tenant = self.key.0;
        if let Some(running) = loads.by_tenant.get_mut(&tenant) {
            *running -= 1;
            if *running == 0 {
                loads.by_tenant.remove(&tenant);
            }
            loads.running -= 1;
        }
        metrics::gauge!("dialtone_lookup_inflight").set(loads.by_key.len() as f64);
    }
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

    /// Who is calling from `number`, for `tenant`. Errors only for input
    /// the caller must fix (bad number, unknown tenant); a source failure
    /// is an answer without a name.
    pub async fn lookup(&self, tenant: Id, number: &str) -> Result<Answer, DirectoryError> {
        self.lookup_at(self.inner.mirror.load(), tenant, number)
            .await
    }

    /// `lookup` from `state`, the mirror state the caller already holds
    /// (the API authorizes and looks up from one load).
    pub async fn lookup_at(
        &self,
        state: Arc<MirrorState>,
        tenant: Id,
        number: &str,
    ) -> Result<Answer, DirectoryError> {
        let started = Instant::now();
        let result = self.lookup_inner(state, tenant, number, started).await;
        let elapsed = started.elapsed().as_secs_f64();
        match &result {
            Ok(answer) => {
                let found = if answer.resolved.name.is_some() {
                    "found"
                } else if answer.resolved.definitive {
                    "not_found"
                } else {
                    "unavailable"
                };
                metrics::counter!("dialtone_lookups_total", "cache" => answer.cache.as_str(), "result" => found)
                    .increment(1);
                metrics::histogram!("dialtone_lookup_duration_seconds").record(elapsed);
            }
            Err(e) => {
                metrics::counter!("dialtone_lookups_total", "cache" => "none", "result" => e.kind())
                    .increment(1)
            }
        }
        result
    }

    async fn lookup_inner(
        &self,
        state: Arc<MirrorState>,
        tenant: Id,
        number: &str,
        started: Instant,
    ) -> Result<Answer, DirectoryError> {
        let inner = &self.inner;
        let tag = Tag::of(&inner.generations, &state, tenant);
        let region = state
            .tenant(tenant)
            .ok_or(DirectoryError::UnknownTenant)?
            .default_region
            .clone();
        let e164 = self.normalized(number, &region)?;
        let key: Key = (tenant, e164.clone());
        let answer = |resolved, cache| Answer {
            number: e164.clone(),
            resolved,
            cache,
        };
        let cached = inner.cache.get(&key).await.filter(|entry| entry.tag == tag);
        if let Some(entry) = &cached {
            match entry.freshness(inner.clock.now(), inner.options.max_stale) {
                Freshness::Fresh => return Ok(answer(entry.resolved.clone(), CacheStatus::Hit)),
                Freshness::Stale => {
                    // Refresh in the background; the caller does not wait.
                    let _ = self.join_or_start(&key, tag, &state);
                    return Ok(answer(entry.resolved.clone(), CacheStatus::Stale));
                }
                Freshness::Expired => {}
            }
        }
        if self.answers_from_memory(&state, tenant) {
            // Nothing to wait for (the local directory and mirrored sources
            // without a live fallback): resolved on this task. A spawned,
            // coalesced load costs more than such an answer (a worker
            // hand-off: 0.15 ms a miss against 0.06 ms inline).
            let deadline = started + inner.options.deadline;
            let Ok(resolved) = self.resolve(&state, tenant, &e164, deadline).await else {
                return Ok(answer(Resolved::unavailable(), CacheStatus::Shed));
            };
            self.store(&key, tag, &resolved).await;
            return Ok(answer(resolved, CacheStatus::Miss));
        }
        let Some((load, started_here)) = self.join_or_start(&key, tag, &state) else {
            return Ok(answer(Resolved::unavailable(), CacheStatus::Shed));
        };
        let deadline = started + inner.options.deadline;
        match tokio::time::timeout_at(deadline, load).await {
            Ok(resolved) => {
                let status = if started_here {
                    CacheStatus::Miss
                } else {
                    CacheStatus::Coalesced
                };
                Ok(answer(resolved, status))
            }
            Err(_) => Ok(answer(Resolved::unavailable(), CacheStatus::Shed)),
        }
    }

    /// Whether every source of `tenant` answers from memory: none would
    /// search a server or fetch a URL.
    fn answers_from_memory(&self, state: &MirrorState, tenant: Id) -> bool {
        self.inner
            .sources
            .sources_of(state, tenant)
            .iter()
            .all(|s| s.mirror.as_ref().is_some_and(|m| !m.live_fallback))
    }

    /// `normalize`, memoized: libphonenumber's rules cost about 9 µs a
    /// number, most of a cache hit, and PBXes ask about the same callers
    /// over and over in the same few spellings.
    fn normalized(&self, number: &str, region: &str) -> Result<Arc<str>, DirectoryError> {
        // Before the memo key is built: the key is the raw input.
        check_lookup_len(number)?;
        thread_local! {
            static KEY: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
        }
        KEY.with_borrow_mut(|key| {
            key.clear();
            key.push_str(region);
            key.push('\0');
            key.push_str(number);
            if let Some(known) = self.inner.normalized.get(key.as_str()) {
                return Ok(known);
            }
            let e164: Arc<str> = normalize(number, region)?.into();
            self.inner.normalized.insert(key.clone(), e164.clone());
            Ok(e164)
        })
    }

    /// The running load for `key`, or a new one. `None` when too many loads
    /// are running already, in all or for the key's tenant. The flag says
    /// whether this call started it.
    /// The load answers from `state`, the one `tag` was taken from.
    fn join_or_start(
        &self,
        key: &Key,
        tag: Tag,
        state: &Arc<MirrorState>,
    ) -> Option<(SharedLoad, bool)> {
        let inner = &self.inner;
        let mut loads = inner.inflight.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(running) = loads.by_key.get(key) {
            // A load from before an invalidation does not answer for after it.
            if running.tag == tag {
                return Some((running.load.clone(), false));
            }
        }
        let own = loads.by_tenant.get(&key.0).copied().unwrap_or(0);
        // Counted by tasks, not keys: a load an invalidation replaced in
        // `by_key` still runs, and still holds a connection.
        let admission = Admission::new(inner.options.max_inflight);
        match admission.admit(own, loads.running, loads.by_tenant.len()) {
            Ok(Admitted::Slot) => {}
            Ok(Admitted::Reserve) => {
                metrics::counter!("dialtone_lookup_reserve_loads_total").increment(1);
            }
            Err(refusal) => {
                metrics::counter!("dialtone_lookup_shed_total", "reason" => refusal.label())
                    .increment(1);
                return None;
            }
        }
        let id = inner.load_ids.fetch_add(1, Ordering::Relaxed);
        *loads.by_tenant.entry(key.0).or_default() += 1;
        loads.running += 1;
        let task = tokio::spawn(self.clone().load(key.clone(), tag, state.clone(), id));
        let load = async move { task.await.unwrap_or_else(|_| Resolved::unavailable()) }
            .boxed()
            .shared();
        loads.by_key.insert(
            key.clone(),
            Inflight {
                id,
                tag,
                load: load.clone(),
            },
        );
        metrics::gauge!("dialtone_lookup_inflight").set(loads.by_key.len() as f64);
        Some((load, true))
    }

    async fn load(self, key: Key, tag: Tag, state: Arc<MirrorState>, id: u64) -> Resolved {
        // Leaves the in-flight map however the load ends, a panic included
        // (a malformed server reply can panic inside ldap3); otherwise the
        // key would stay joined to a dead load and its tenant would lose
        // one of its slots for good.
        let _done = LoadDone {
            inner: &self.inner,
            key: &key,
            id,
        };
        let deadline = Instant::now() + self.inner.options.deadline;
        let resolved = self.resolve(&state, key.0, &key.1, deadline).await;
        drop(state);
        let Ok(resolved) = resolved else {
            return Resolved::unavailable();
        };
        self.store(&key, tag, &resolved).await;
        resolved
    }

    /// Caches a load's result unless the tenant was invalidated or its
    /// inputs changed while it ran (the answer may predate the change), and
    /// never lets a failed refresh replace a name we still know.
    async fn store(&self, key: &Key, tag: Tag, resolved: &Resolved) {
        let inner = &self.inner;
        if Tag::of(&inner.generations, &inner.mirror.load(), key.0) != tag {
            metrics::counter!("dialtone_lookup_stale_fills_dropped_total").increment(1);
            return;
        }
        let now = inner.clock.now();
        let ttl = match (&resolved.name, resolved.definitive) {
            (Some(_), _) => inner.options.positive_ttl,
            (None, true) => inner.options.negative_ttl,
            (None, false) => {
                let known = inner.cache.get(key).await.filter(|e| {
                    e.tag == tag
                        && e.resolved.name.is_some()
                        && e.freshness(now, inner.options.max_stale) != Freshness::Expired
                });
                if known.is_some() {
                    return;
                }
                inner.options.failure_ttl
            }
        };
        let entry = Entry {
            resolved: resolved.clone(),
            stored_at: now,
            ttl,
            tag,
        };
        let entry = Arc::new(entry);
        let replacing = inner.cache.contains_key(key);
        if !inner
            .cache_shares
            .take(key.0, crate::cache::weight(key, &entry), replacing)
        {
            metrics::counter!("dialtone_lookup_cache_share_full_total").increment(1);
            return;
        }
        inner.cache.insert(key.clone(), entry).await;
    }

    /// Bytes of cached answers by tenant, counted from the cache itself
    /// (for tests of the tenants' shares).
    #[doc(hidden)]
    pub async fn cached_bytes_by_tenant(&self) -> HashMap<Id, u64> {
        let cache = &self.inner.cache;
        cache.run_pending_tasks().await;
        let mut bytes = HashMap::new();
        for (key, entry) in cache.iter() {
            *bytes.entry(key.0).or_default() += u64::from(crate::cache::weight(&key, &entry));
        }
        bytes
    }

    /// Runs the tenant's sources in priority order until one knows the
    /// number or the deadline passes. Sources run one after another, not
    /// all at once: an upstream CNAM dip often costs money, and asking it
    /// for numbers the directory knows would waste it. `NotReady` when the
    /// tenant's directory index was still building at the deadline: that
    /// answer is not cached, so the index answers as soon as it is built.
    async fn resolve(
        &self,
        state: &Arc<MirrorState>,
        tenant: Id,
        e164: &str,
        deadline: Instant,
    ) -> Result<Resolved, NotReady> {
        let inner = &self.inner;
        let remotes = inner.sources.sources_of(state, tenant);
        let region = state
            .tenant(tenant)
            .map(|t| t.default_region.clone())
            .unwrap_or_default();
        let (before, after): (Vec<_>, Vec<_>) = remotes
            .into_iter()
            .partition(|s| s.priority < LOCAL_PRIORITY);
        let mut definitive = true;
        for source in &before {
            match self.ask(source, e164, &region, deadline).await {
                Ok(Some(found)) => return Ok(found),
                Ok(None) => {}
                Err(()) => definitive = false,
            }
        }
        let local = inner.local.find(state, tenant, e164, deadline).await;
        if local.is_err() {
            metrics::counter!("dialtone_lookup_source_requests_total", "kind" => "local", "outcome" => "deadline")
                .increment(1);
        }
        if let Some(found) = local? {
            if let Some(name) = clean_name(&found.entry.name) {
                metrics::counter!("dialtone_lookup_source_requests_total", "kind" => "local", "outcome" => "found")
                    .increment(1);
                return Ok(Resolved {
                    name: Some(name.into()),
                    source: Some(LOCAL_SOURCE.into()),
                    definitive: true,
                });
            }
        }
        for source in &after {
            match self.ask(source, e164, &region, deadline).await {
                Ok(Some(found)) => return Ok(found),
                Ok(None) => {}
                Err(()) => definitive = false,
            }
        }
        Ok(Resolved {
            name: None,
            source: None,
            definitive,
        })
    }

    /// One remote source, within its own timeout and what is left of the
    /// deadline, behind its breaker. `Err` when it could not answer.
    async fn ask(
        &self,
        source: &RemoteSource,
        e164: &str,
        region: &str,
        deadline: Instant,
    ) -> Result<Option<Resolved>, ()> {
        let kind = source.kind();
        let outcome = |o: &'static str| {
            metrics::counter!("dialtone_lookup_source_requests_total", "kind" => kind, "outcome" => o).increment(1)
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            outcome("deadline");
            return Err(());
        }
        // A mirrored source's breaker guards only its live fallback.
        let mirrored = source.mirror.is_some();
        if !mirrored && source.breaker.permit().is_none() {
            outcome("breaker_open");
            return Err(());
        }
        let started = Instant::now();
        let budget = source.timeout.min(left);
        let result = source.lookup(e164, region, budget).await;
        metrics::histogram!("dialtone_lookup_source_duration_seconds", "kind" => kind)
            .record(started.elapsed().as_secs_f64());
        match result {
            Ok(found) => {
                if !mirrored {
                    source.breaker.success();
                }
                match found.as_deref().and_then(clean_name) {
                    Some(name) => {
                        outcome("found");
                        Ok(Some(Resolved {
                            name: Some(name.into()),
                            source: Some(source.name.clone()),
                            definitive: true,
                        }))
                    }
                    None => {
                        outcome("not_found");
                        Ok(None)
                    }
                }
            }
            Err(e) => {
                if !mirrored {
                    source.failed(&e, budget);
                }
                outcome(e.kind());
                if let Some(skipped) = source.failure_log.allow() {
                    tracing::warn!(source = %source.name, kind, error = %e, skipped, "directory source failed");
                }
                Err(())
            }
        }
    }

    /// Drops every cached answer of `tenant`, and makes running loads for
    /// it unable to fill the cache.
    pub fn invalidate_tenant(&self, tenant: Id) {
        let generations = &self.inner.generations;
        generations.bump(tenant);
        // A deleted tenant keeps no generation. Looked at after the bump: a
        // sync publishing as its tenant is deleted would otherwise put the
        // entry back after the delete's change had dropped it.
        if self.inner.mirror.load().tenant(tenant).is_none() {
            generations.forget(tenant);
        }
    }

    /// Applies one mirror change: a tenant's directory, sources or region
    /// changed, so its answers may be wrong now.
    pub fn apply_change(&self, event: &ChangeEvent) {
        let inner = &self.inner;
        inner.local.invalidate(event);
        match event {
            ChangeEvent::Reset { .. } => {
                inner.generations.bump_all();
                inner.sources.retain_current(&inner.mirror.load());
            }
            ChangeEvent::Changed { keys, tenants, .. } => {
                let relevant = keys.iter().any(|(entity, _)| {
                    matches!(
                        entity,
                        Entity::Tenant | Entity::DirectoryEntry | Entity::DirectorySource
                    )
                });
                if relevant {
                    for tenant in tenants.iter() {
                        self.invalidate_tenant(*tenant);
                    }
                }
                if keys
                    .iter()
                    .any(|(entity, _)| *entity == Entity::DirectorySource)
                {
                    inner.sources.retain_current(&inner.mirror.load());
                }
            }
        }
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

    /// Follows the mirror's change stream until `shutdown` resolves. A
    /// lagging receiver missed events, so it drops everything.
    pub async fn follow(self, shutdown: impl std::future::Future<Output = ()>) {
        let mut events = self.inner.mirror.subscribe();
        // A restarted follower may have missed events while it was down;
        // the first one starts with an empty cache and has missed nothing.
        if self.inner.followed.swap(true, Ordering::AcqRel) {
            self.apply_change(&ChangeEvent::Reset { version: 0 });
        }
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                event = events.recv() => match event {
                    Ok(event) => self.apply_change(&event),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        self.apply_change(&ChangeEvent::Reset { version: 0 });
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    }
}

#[cfg(test)]
#[path = "deleted_tenant_tests.rs"]
mod deleted_tenant_tests;
