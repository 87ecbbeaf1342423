//! The loads misses share: one per number at a time, in its own task with
//! its own deadline, admitted within the tenants' shares of the loads
//! running at once; and what a load leaves in the cache.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use dialtone_sync::{Id, MirrorState};
use futures::future::{BoxFuture, FutureExt, Shared};
use tokio::time::Instant;

use super::{Inner, LookupService};
use crate::admission::{Admission, Admitted};
use crate::cache::{Entry, Freshness, Key, Resolved, Tag};

pub(super) type SharedLoad = Shared<BoxFuture<'static, Resolved>>;

struct Inflight {
    id: u64,
    tag: Tag,
    load: SharedLoad,
}

#[derive(Default)]
pub(super) struct Loads {
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

impl LookupService {
    /// The running load for `key`, or a new one. `None` when too many loads
    /// are running already, in all or for the key's tenant. The flag says
    /// whether this call started it.
    /// The load answers from `state`, the one `tag` was taken from.
    pub(super) fn join_or_start(
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
    pub(super) async fn store(&self, key: &Key, tag: Tag, resolved: &Resolved) {
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
            let (tenant, generation) = (key.0, tag.generation);
            if inner.cache_shares.sweep_due(tenant, generation) {
                // Moka applies it as it maintains the cache; each answer
                // it takes out gives its bytes back (the eviction
                // listener). Only closures it was built without fail.
                let swept = inner.cache.invalidate_entries_if(move |key, entry| {
                    key.0 == tenant && entry.tag.generation < generation
                });
                if let Err(e) = swept {
                    tracing::warn!(error = %e, "the answer cache refused a sweep");
                }
            }
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
}
