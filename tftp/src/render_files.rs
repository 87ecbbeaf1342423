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
//!   once). Once the cache is full, a tenant holding a quarter of its bytes
//!   keeps nothing more: its further renders are served and not kept, so
//!   they cost its own render share and push no one else's file out.
//!   Below full, anyone fills it; a tenant that filled it first keeps what
//!   it has until its entries are evicted or outdated.

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

type Held = Arc<Mutex<HashMap<Id, u64>>>;

pub(crate) struct Files {
    main: Cache<RenderKey, Rendered>,
    unmodeled: Cache<RenderKey, Rendered>,
    /// Bytes each tenant's entries weigh in `main`: added before an insert,
    /// taken off by the eviction listener, which moka calls for every entry
    /// leaving (evicted, replaced, invalidated, or refused admission).
    held: Held,
    capacity: u64,
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

fn lock(held: &Held) -> MutexGuard<'_, HashMap<Id, u64>> {
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
        let held = Held::default();
        let leaving = held.clone();
        let main = store(bytes)
            .eviction_listener(move |key, file, _cause| {
                let Some(tenant) = owner(&file) else { return };
                let mut held = lock(&leaving);
                if let Some(bytes) = held.get_mut(&tenant) {
                    *bytes = bytes.saturating_sub(weight(&key, &file).into());
                    if *bytes == 0 {
                        held.remove(&tenant);
                    }
                }
            })
            .build();
        Files {
            main,
            unmodeled: store((bytes / UNMODELED_PART).max(1)).build(),
            held,
            capacity: bytes,
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

    /// Keeps `file`, in the unmodeled store if it is for a model nobody
    /// here has; false when its tenant already holds its share of a full
    /// cache and it is not kept.
    pub(crate) fn insert(&self, key: RenderKey, file: Rendered, unmodeled: bool) -> bool {
        if unmodeled {
            self.unmodeled.insert(key, file);
            return true;
        }
        if let Some(tenant) = owner(&file) {
            let bytes = u64::from(weight(&key, &file));
            let full = self.main.weighted_size() + bytes > self.capacity;
            let mut held = lock(&self.held);
            let mine = held.entry(tenant).or_default();
            if full && *mine + bytes > self.capacity / TENANT_PART {
                if *mine == 0 {
                    held.remove(&tenant);
                }
                metrics::counter!("dialtone_render_cache_over_share_total").increment(1);
                return false;
            }
            *mine += bytes;
            // Not held across the insert: moka may run the listener,
            // which takes this lock, on the inserting thread.
        }
        self.main.insert(key, file);
        true
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

    #[cfg(test)]
    pub(crate) fn held(&self) -> HashMap<Id, u64> {
        self.main.run_pending_tasks();
        lock(&self.held).clone()
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
