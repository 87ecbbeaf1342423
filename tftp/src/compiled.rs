//! The compiled-template cache, and what each tenant holds there.
//!
//! Compiling is the costly part of a render that misses the render cache,
//! and shipped templates (every tenant's phones use them) are compiled once
//! and kept. One cache bounded by bytes bounds the node, not who fills it:
//! a tenant may save 500 templates of 256 KiB, each counted at ~6 MB
//! compiled, and fetch its phones' files until its entries had pushed out
//! every other tenant's and the shipped ones, so that everyone else's
//! render misses compiled again. So once the cache is full, a tenant past
//! its fair part (a quarter, or an equal share of the tenants holding any
//! when that is more) compiles its new templates for the render at hand
//! and keeps none: it pays for its own size in its own renders (under its
//! own share of the render pool), and nobody else's entries go for it. A
//! tenant alone, and the operator's model and family templates, are left
//! to moka's policy.
//!
//! A stored template is kept under its id, not its version: a new version
//! takes the old one's place, where a tenant saving one template again and
//! again otherwise filled its part with versions nobody renders any more.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use dialtone_sync::{Family, Id};
use moka::sync::Cache;

use crate::engine::Engine;

/// Once the cache is full, a tenant's fair part of it is at least this
/// part of its bytes (more when fewer tenants hold any).
const TENANT_PART: u64 = 4;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum CompiledKey {
    Stored {
        id: Id,
    },
    Shipped {
        generation: u64,
        family: Family,
        name: &'static str,
    },
}

/// A compiled template and the body it was compiled from: a key names a
/// template, the body proves the version.
pub(crate) struct Compiled {
    pub(crate) body: Arc<str>,
    pub(crate) engine: Engine,
    /// The tenant whose template it is: a phone- or tenant-scope one's.
    pub(crate) owner: Option<Id>,
}

/// What a compiled template holds, at most: an engine is ~16.5 KiB before
/// its template, and a template ~1.1 to 23 times its body (plain text to
/// a body of nothing but `{{1}}`, measured with a counting allocator).
/// Counted at the most, since a tenant picks the body: 2,048 entries
/// counted by number could hold ~12 GB of 256 KiB bodies.
const ENGINE_BYTES: usize = 16 * 1024 + 512;
const COMPILED_PER_BODY_BYTE: usize = 24;

impl Compiled {
    pub(crate) fn weight(&self) -> u32 {
        ENGINE_BYTES
            .saturating_add(self.body.len().saturating_mul(COMPILED_PER_BODY_BYTE))
            .try_into()
            .unwrap_or(u32::MAX)
    }
}

/// Bytes of the entries, in all and by tenant, kept as they come and go:
/// added before an insert, taken off by the eviction listener, which moka
/// calls for every entry leaving (evicted, replaced, invalidated, or
/// refused admission). moka's own weighted size catches up only at its
/// housekeeping.
#[derive(Default)]
struct Held {
    total: u64,
    by_tenant: HashMap<Id, u64>,
}

impl Held {
    fn add(&mut self, owner: Option<Id>, bytes: u64) {
        self.total += bytes;
        if let Some(tenant) = owner {
            *self.by_tenant.entry(tenant).or_default() += bytes;
        }
    }

    fn take(&mut self, owner: Option<Id>, bytes: u64) {
        self.total = self.total.saturating_sub(bytes);
        let Some(tenant) = owner else { return };
        if let Some(held) = self.by_tenant.get_mut(&tenant) {
            *held = held.saturating_sub(bytes);
            if *held == 0 {
                self.by_tenant.remove(&tenant);
            }
        }
    }
}

pub(crate) struct CompiledCache {
    cache: Cache<CompiledKey, Arc<Compiled>>,
    held: Arc<Mutex<Held>>,
    capacity: u64,
}

fn lock(held: &Mutex<Held>) -> MutexGuard<'_, Held> {
    held.lock().unwrap_or_else(|e| e.into_inner())
}

impl CompiledCache {
    pub(crate) fn new(capacity: u64) -> CompiledCache {
        let held = Arc::new(Mutex::new(Held::default()));
        let leaving = held.clone();
        let cache = Cache::builder()
            .max_capacity(capacity)
            .weigher(|_, compiled: &Arc<Compiled>| compiled.weight())
            .eviction_listener(move |_, compiled: Arc<Compiled>, _| {
                lock(&leaving).take(compiled.owner, compiled.weight().into());
            })
            .build();
        CompiledCache {
            cache,
            held,
            capacity,
        }
    }

    /// The entry compiled from `body`, if one is kept.
    pub(crate) fn get(&self, key: &CompiledKey, body: &str) -> Option<Arc<Compiled>> {
        self.cache.get(key).filter(|c| &*c.body == body)
    }

    /// Keeps `compiled` unless its tenant is past its fair part of a full
    /// cache (the module's comment says why); returns whether it was kept.
    pub(crate) fn keep(&self, key: CompiledKey, compiled: Arc<Compiled>) -> bool {
        let bytes = u64::from(compiled.weight());
        if let Some(tenant) = compiled.owner {
            // What the key holds now is given back by the insert.
            let replaced = self
                .cache
                .get(&key)
                .filter(|old| old.owner == Some(tenant))
                .map_or(0, |old| u64::from(old.weight()));
            let held = lock(&self.held);
            let mine = held.by_tenant.get(&tenant).copied().unwrap_or(0);
            let holders = held.by_tenant.len() as u64 + u64::from(mine == 0);
            let fair = (self.capacity / TENANT_PART).max(self.capacity / holders.max(1));
            let full = (held.total + bytes).saturating_sub(replaced) > self.capacity;
            // A new version no larger than the one it replaces is kept:
            // the tenant's holding does not grow.
            let grows = bytes > replaced;
            if full && holders > 1 && grows && mine.saturating_sub(replaced) + bytes > fair {
                metrics::counter!("dialtone_compiled_cache_over_share_total").increment(1);
                return false;
            }
        }
        lock(&self.held).add(compiled.owner, bytes);
        self.cache.insert(key, compiled);
        true
    }

    #[cfg(test)]
    pub(crate) fn settled(&self) -> &Cache<CompiledKey, Arc<Compiled>> {
        self.cache.run_pending_tasks();
        &self.cache
    }

    #[cfg(test)]
    fn held_by(&self, tenant: Id) -> u64 {
        lock(&self.held)
            .by_tenant
            .get(&tenant)
            .copied()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Budget, Escape};

    fn compiled(owner: Option<Id>, body: &str) -> Arc<Compiled> {
        Arc::new(Compiled {
            body: body.into(),
            engine: Engine::compile("t", "t", body, Escape::Text, &Budget::default())
                .expect("compiles"),
            owner,
        })
    }

    /// Once full, a tenant past its part keeps nothing new, and another
    /// tenant's and the shipped entries stay; below full anyone fills it.
    #[test]
    fn a_tenant_past_its_part_of_a_full_cache_keeps_nothing_new() {
        let one = compiled(None, "x").weight() as u64;
        let cache = CompiledCache::new(20 * one);
        let shipped = CompiledKey::Shipped {
            generation: 1,
            family: Family::Yealink,
            name: "y000000000000.cfg",
        };
        assert!(cache.keep(shipped.clone(), compiled(None, "x")));
        assert!(cache.keep(CompiledKey::Stored { id: 1 }, compiled(Some(7), "x")));
        // The hostile tenant fills the rest of the cache while nobody else
        // holds any: its own part is then the whole.
        for id in 100..118 {
            assert!(cache.keep(CompiledKey::Stored { id }, compiled(Some(9), "x")));
        }
        // Full now: past a half (two tenants hold entries), it keeps none.
        for id in 200..240 {
            assert!(!cache.keep(CompiledKey::Stored { id }, compiled(Some(9), "x")));
        }
        let settled = cache.settled();
        assert!(settled.contains_key(&shipped));
        assert!(settled.contains_key(&CompiledKey::Stored { id: 1 }));
        assert_eq!(cache.held_by(9), 18 * one);
        // The other tenant, under its part, still keeps a new one.
        assert!(cache.keep(CompiledKey::Stored { id: 2 }, compiled(Some(7), "x")));
        // A new version takes its own entry's place, and is kept unless
        // it is larger.
        assert!(!cache.keep(CompiledKey::Stored { id: 100 }, compiled(Some(9), "x ")));
        assert!(cache.keep(CompiledKey::Stored { id: 100 }, compiled(Some(9), "y")));
        assert!(cache.get(&CompiledKey::Stored { id: 100 }, "y").is_some());
        assert!(cache.get(&CompiledKey::Stored { id: 100 }, "x").is_none());
        cache.settled();
        assert_eq!(cache.held_by(9), 18 * one);
    }
}
