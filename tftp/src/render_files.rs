//! Where the render cache keeps rendered files, and what each tenant holds
//! there. One cache bounded by bytes bounds the node, not who fills it:
//!
//! - **Models nobody here has.** A common or boot file for a made-up model
//!   (`spaX1.cfg`, a made-up `User-Agent`) is served at a miss
//!   (`models.rs`), but a miss is charged to the source, and over TFTP the
//!   source can be forged: a flood from forged sources, each name asked a
//!   few times so that the cache's frequency sketch rated it above real
//!   phones' files, pushed every tenant's files out. Such renders are kept
//!   in a store of their own, a sixteenth of the bytes: a phone whose model
//!   is in no record still has its common file cached, and a flood churns
//!   only that store.
//! - **One tenant's share.** A tenant's files and directories could take
//!   the whole cache (large directory documents, many phones asked for
//!   again and again so that the cache's frequency sketch rates them above
//!   everyone else's). Once the cache is full, a tenant holding a quarter
//!   of it keeps nothing more while the others hold a quarter or more:
//!   its further renders are served and not kept, so they cost its own
//!   render share and push no one else's file out. A tenant alone (or
//!   nearly: the others under a quarter) is not held back, or a one-tenant
//!   node's full cache would never take a new file. Below full, anyone
//!   fills it; a tenant that filled it first keeps what it has until its
//!   entries are evicted or outdated.
//!
//! The two stores share `render_cache_mb`: the unmodeled one a sixteenth,
//! the main one the rest.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use dialtone_sync::Id;
use moka::sync::Cache;

use crate::provision::Rendered;
use crate::render_cache::RenderKey;

/// The unmodeled store is this part of the cache's bytes.
const UNMODELED_PART: u64 = 16;

/// Once the cache is full, a tenant holds at most this part of its bytes.
const TENANT_PART: u64 = 4;

/// Bytes of the main store's entries, kept as they come and go: moka's own
/// weighted size catches up only at its housekeeping, every 64 writes or
/// so, and a tenant's burst of inserts before it saw a cache that had
/// filled long before.
#[derive(Default)]
struct Bytes {
    total: u64,
    by_tenant: HashMap<Id, u64>,
}

impl Bytes {
    fn add(&mut self, tenant: Option<Id>, bytes: u64) {
        self.total += bytes;
        if let Some(tenant) = tenant {
            *self.by_tenant.entry(tenant).or_default() += bytes;
        }
    }

    fn take(&mut self, tenant: Option<Id>, bytes: u64) {
        self.total = self.total.saturating_sub(bytes);
        let Some(tenant) = tenant else { return };
        if let Some(held) = self.by_tenant.get_mut(&tenant) {
            *held = held.saturating_sub(bytes);
            if *held == 0 {
                self.by_tenant.remove(&tenant);
            }
        }
    }
}

type Held = Arc<Mutex<Bytes>>;

pub(crate) struct Files {
    main: Cache<RenderKey, Rendered>,
    unmodeled: Cache<RenderKey, Rendered>,
    /// What `main`'s entries weigh, in all and by tenant: added before an
    /// insert, taken off by the eviction listener, which moka calls for
    /// every entry leaving (evicted, replaced, invalidated, or refused
    /// admission).
    held: Held,
    /// `render_cache_mb`, both stores.
    capacity: u64,
    main_capacity: u64,
}

pub(crate) fn weight(key: &RenderKey, file: &Rendered) -> u32 {
    // The held rows are shared with the mirror; count their pointers.
    let search = key.directory.as_ref().and_then(|d| d.search.as_ref());
    (file.body.len() + file.etag.len() + key.file.len() + search.map_or(0, |s| s.len()) + 256)
        .try_into()
        .unwrap_or(u32::MAX)
}

/// The tenant whose data a file was rendered from: a phone's, or a
/// directory's. Common files belong to no tenant.
fn owner(file: &Rendered) -> Option<Id> {
    let inputs = file.inputs.as_ref()?;
    inputs
        .directory
        .map(|(tenant, _)| tenant)
        .or_else(|| inputs.phone.as_ref().map(|p| p.tenant_id))
}

fn lock(held: &Held) -> MutexGuard<'_, Bytes> {
    held.lock().unwrap_or_else(|e| e.into_inner())
}

fn store(bytes: u64) -> moka::sync::CacheBuilder<RenderKey, Rendered, Cache<RenderKey, Rendered>> {
    Cache::builder()
        .max_capacity(bytes)
        .weigher(weight)
        .support_invalidation_closures()
}

impl Files {
    pub(crate) fn new(bytes: u64) -> Files {
        let unmodeled = bytes / UNMODELED_PART;
        let main_capacity = bytes - unmodeled;
        let held = Held::default();
        let leaving = held.clone();
        let main = store(main_capacity)
            .eviction_listener(move |key, file, _cause| {
                lock(&leaving).take(owner(&file), weight(&key, &file).into());
            })
            .build();
        Files {
            main,
            unmodeled: store(unmodeled.max(1)).build(),
            held,
            capacity: bytes,
            main_capacity,
        }
    }

    pub(crate) fn capacity(&self) -> u64 {
        self.capacity
    }

    pub(crate) fn get(&self, key: &RenderKey) -> Option<Rendered> {
        self.main.get(key).or_else(|| self.unmodeled.get(key))
    }

    pub(crate) fn contains_key(&self, key: &RenderKey) -> bool {
        self.main.contains_key(key) || self.unmodeled.contains_key(key)
    }

    /// Whether `file` may be kept: not when its tenant already holds its
    /// share of a full cache (the module's comment says when that is).
    /// Asked before anything is dropped to make room for it.
    pub(crate) fn admits(&self, key: &RenderKey, file: &Rendered, unmodeled: bool) -> bool {
        let Some(tenant) = owner(file).filter(|_| !unmodeled) else {
            return true;
        };
        let bytes = u64::from(weight(key, file));
        // What the key holds now is given back by the insert.
        let replaced = self
            .main
            .get(key)
            .filter(|old| owner(old) == Some(tenant))
            .map_or(0, |old| u64::from(weight(key, &old)));
        let (total, mine) = {
            let held = lock(&self.held);
            let mine = held.by_tenant.get(&tenant).copied().unwrap_or(0);
            (held.total, mine)
        };
        let others = total.saturating_sub(mine);
        let share = self.main_capacity / TENANT_PART;
        let full = (total + bytes).saturating_sub(replaced) > self.main_capacity;
        let over = mine.saturating_sub(replaced) + bytes > share;
        if full && over && others >= share {
            metrics::counter!("dialtone_render_cache_over_share_total").increment(1);
            return false;
        }
        true
    }

    /// Keeps `file`, in the unmodeled store if it is for a model nobody
    /// here has (and out of the other store either way).
    pub(crate) fn insert(&self, key: RenderKey, file: Rendered, unmodeled: bool) {
        if unmodeled {
            self.main.invalidate(&key);
            self.unmodeled.insert(key, file);
            return;
        }
        self.unmodeled.invalidate(&key);
        // Not held across the insert: moka runs the listener, which takes
        // this lock, on the inserting thread for a replaced entry.
        lock(&self.held).add(owner(&file), weight(&key, &file).into());
        self.main.insert(key, file);
    }

    pub(crate) fn invalidate(&self, key: &RenderKey) {
        self.main.invalidate(key);
        self.unmodeled.invalidate(key);
    }

    pub(crate) fn invalidate_all(&self) {
        self.main.invalidate_all();
        self.unmodeled.invalidate_all();
    }

    pub(crate) fn invalidate_entries_if(
        &self,
        outdated: impl Fn(&RenderKey, &Rendered) -> bool + Clone + Send + Sync + 'static,
    ) -> Result<(), moka::PredicateError> {
        self.main.invalidate_entries_if(outdated.clone())?;
        self.unmodeled.invalidate_entries_if(outdated)?;
        Ok(())
    }

    pub(crate) fn entry_count(&self) -> u64 {
        self.main.run_pending_tasks();
        self.unmodeled.run_pending_tasks();
        self.main.entry_count() + self.unmodeled.entry_count()
    }

    pub(crate) fn keys(&self) -> Vec<RenderKey> {
        let main = self.main.iter().map(|(k, _)| (*k).clone());
        main.chain(self.unmodeled.iter().map(|(k, _)| (*k).clone()))
            .collect()
    }

    /// Bytes `tenant`'s entries weigh, as the share reckons them.
    #[cfg(test)]
    pub(crate) fn held_by(&self, tenant: Id) -> u64 {
        self.held().get(&tenant).copied().unwrap_or(0)
    }

    /// The bytes of every entry, as the share reckons them.
    #[cfg(test)]
    pub(crate) fn held_total(&self) -> u64 {
        self.main.run_pending_tasks();
        lock(&self.held).total
    }

    #[cfg(test)]
    pub(crate) fn held(&self) -> HashMap<Id, u64> {
        self.main.run_pending_tasks();
        lock(&self.held).by_tenant.clone()
    }

    #[cfg(test)]
    pub(crate) fn peek_main(&self, key: &RenderKey) -> Option<Rendered> {
        self.main.iter().find(|(k, _)| **k == *key).map(|(_, v)| v)
    }

    #[cfg(test)]
    pub(crate) fn weighted_size(&self) -> u64 {
        self.main.run_pending_tasks();
        self.main.weighted_size()
    }
}
