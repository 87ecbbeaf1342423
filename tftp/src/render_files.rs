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
//!   everyone else's). Once the cache is full, a tenant past its fair part
//!   (a quarter, or an equal share of the tenants holding any when that is
//!   more) keeps a new file in the place of its own oldest entries, not
//!   anyone else's: it still caches what it asks for again, and pushes no
//!   other tenant below its part. Refusing such files instead left two big
//!   tenants' full cache taking no new file at all. A tenant alone is left
//!   to moka's own policy. Below full, anyone fills it; a tenant that
//!   filled it first keeps what it has until others grow to their parts.
//!
//! The two stores share `render_cache_mb`: the unmodeled one a sixteenth,
//! the main one the rest.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use dialtone_sync::Id;
use moka::sync::Cache;

use crate::provision::Rendered;
use crate::render_cache::RenderKey;

/// The unmodeled store is this part of the cache's bytes.
const UNMODELED_PART: u64 = 16;

/// Once the cache is full, a tenant's fair part of it is at least this
/// part of its bytes (more when fewer tenants hold any).
const TENANT_PART: u64 = 4;

/// A tenant's own entries dropped for one new one, and keys of its order
/// list looked at, at most: the work of a fill stays bounded whatever the
/// list holds.
const MOST_DROPPED: usize = 64;
const MOST_LOOKED: usize = 256;

/// Bytes of the main store's entries, kept as they come and go: moka's own
/// weighted size catches up only at its housekeeping, every 64 writes or
/// so, and a tenant's burst of inserts before it saw a cache that had
/// filled long before.
#[derive(Default)]
struct Bytes {
    total: u64,
    by_tenant: HashMap<Id, Holding>,
}

#[derive(Default)]
struct Holding {
    bytes: u64,
    entries: u64,
    /// Its keys in the order they were kept (repeats and keys gone since
    /// included, until compacted): which of its own entries make room
    /// when it is over its part of a full cache.
    order: VecDeque<RenderKey>,
    /// How many times each key is in `order`: whether a key popped is
    /// there again later, answered without a walk of the list under the
    /// lock every tenant's fill takes (a walk per pop was tens of millions
    /// of comparisons for a tenant of 100,000 entries).
    times: HashMap<RenderKey, u32>,
}

impl Holding {
    fn push_back(&mut self, key: RenderKey) {
        *self.times.entry(key.clone()).or_default() += 1;
        self.order.push_back(key);
    }

    fn push_front(&mut self, key: RenderKey) {
        *self.times.entry(key.clone()).or_default() += 1;
        self.order.push_front(key);
    }

    /// The oldest key, and whether it is in the order again later.
    fn pop_front(&mut self) -> Option<(RenderKey, bool)> {
        let key = self.order.pop_front()?;
        let later = match self.times.get_mut(&key) {
            Some(n) if *n > 1 => {
                *n -= 1;
                true
            }
            _ => {
                self.times.remove(&key);
                false
            }
        };
        Some((key, later))
    }
}

impl Bytes {
    fn add(&mut self, tenant: Option<Id>, key: &RenderKey, bytes: u64) {
        self.total += bytes;
        let Some(tenant) = tenant else { return };
        let holding = self.by_tenant.entry(tenant).or_default();
        holding.bytes += bytes;
        holding.entries += 1;
        holding.push_back(key.clone());
    }

    fn take(&mut self, tenant: Option<Id>, bytes: u64) {
        self.total = self.total.saturating_sub(bytes);
        let Some(tenant) = tenant else { return };
        if let Some(holding) = self.by_tenant.get_mut(&tenant) {
            holding.bytes = holding.bytes.saturating_sub(bytes);
            holding.entries = holding.entries.saturating_sub(1);
            if holding.entries == 0 {
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

/// Keeps a tenant's order list within twice its entries (and some): its
/// keys still cached, each once, oldest first. moka's `contains_key` runs
/// no listener, so it is called under the lock.
fn compact(holding: &mut Holding, main: &Cache<RenderKey, Rendered>) {
    if (holding.order.len() as u64) <= 2 * holding.entries + 16 {
        return;
    }
    let mut seen = HashSet::new();
    let mut kept: VecDeque<RenderKey> = holding
        .order
        .drain(..)
        .rev()
        .filter(|key| main.contains_key(key) && seen.insert(key.clone()))
        .collect();
    kept.make_contiguous().reverse();
    holding.times = kept.iter().map(|key| (key.clone(), 1)).collect();
    holding.order = kept;
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

    /// Whether `file` may be kept, making room for it first when its
    /// tenant is over its fair part of a full cache: then its own oldest
    /// entries go, not anyone else's (the module's comment says why). The
    /// fair part is a quarter, or an equal share of the tenants holding
    /// any when that is more: a tenant alone may fill it all. False when
    /// its own entries could not make the room.
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
        let (total, mine, holders) = {
            let held = lock(&self.held);
            let mine = held.by_tenant.get(&tenant).map_or(0, |h| h.bytes);
            let holders = held.by_tenant.len() as u64 + u64::from(mine == 0);
            (held.total, mine, holders)
        };
        let fair = (self.main_capacity / TENANT_PART).max(self.main_capacity / holders.max(1));
        let after = (total + bytes).saturating_sub(replaced);
        let full = after > self.main_capacity;
        // Alone, nobody else's files are at stake: moka's own policy
        // (frequency, then recency) chooses better than oldest-first.
        if !full || holders <= 1 || mine.saturating_sub(replaced) + bytes <= fair {
            return true;
        }
        // Our total counts inserts moka has yet to evict for: the tenant
        // pays for its own file, not for everyone's overshoot.
        let needed = (after - self.main_capacity).min(bytes.saturating_sub(replaced));
        let made_room = self.drop_own(tenant, key, needed);
        let outcome = if made_room { "own_dropped" } else { "not_kept" };
        metrics::counter!("dialtone_render_cache_over_share_total", "outcome" => outcome)
            .increment(1);
        made_room
    }

    /// Drops `tenant`'s oldest entries (not `keep`) to free `needed`
    /// bytes: all of them or none, so a file too large for what its
    /// tenant's oldest can free costs nobody an entry. At most
    /// `MOST_DROPPED` go, and `MOST_LOOKED` keys are looked at.
    fn drop_own(&self, tenant: Id, keep: &RenderKey, needed: u64) -> bool {
        let mut chosen = Vec::new();
        let mut skipped = Vec::new();
        let mut freed = 0;
        for _ in 0..MOST_LOOKED {
            if freed >= needed || chosen.len() >= MOST_DROPPED {
                break;
            }
            let popped = {
                let mut held = lock(&self.held);
                let Some(holding) = held.by_tenant.get_mut(&tenant) else {
                    break;
                };
                // Kept again since: its later place stands for it.
                let Some(popped) = holding.pop_front() else {
                    break;
                };
                popped
            };
            match popped {
                (_, true) => continue,
                (next, false) if next == *keep => skipped.push(next),
                (next, false) => {
                    // Not under the lock: moka may run the listener.
                    let Some(old) = self.main.get(&next).filter(|o| owner(o) == Some(tenant))
                    else {
                        // Gone already (or not in yet: then it is left
                        // to moka's policy).
                        continue;
                    };
                    freed += u64::from(weight(&next, &old));
                    chosen.push(next);
                }
            }
        }
        let enough = freed >= needed;
        if enough {
            for key in &chosen {
                self.main.invalidate(key);
            }
        }
        // What stays goes back to the front, in its order.
        let back = if enough {
            skipped
        } else {
            [chosen, skipped].concat()
        };
        if !back.is_empty() {
            let mut held = lock(&self.held);
            if let Some(holding) = held.by_tenant.get_mut(&tenant) {
                for key in back.into_iter().rev() {
                    holding.push_front(key);
                }
            }
        }
        enough
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
        {
            // Not held across the insert: moka runs the listener, which
            // takes this lock, on the inserting thread for a replaced entry.
            let mut held = lock(&self.held);
            let tenant = owner(&file);
            // Before the key is listed: it is not in `main` yet, and
            // compacting would drop it. (Another fill's key listed and not
            // yet inserted can be dropped so: that entry is then left to
            // moka's policy.)
            if let Some(holding) = tenant.and_then(|t| held.by_tenant.get_mut(&t)) {
                compact(holding, &self.main);
            }
            held.add(tenant, &key, weight(&key, &file).into());
        }
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
        // A predicate (and the rows it captured: a template of up to 256
        // KiB) is freed once moka's housekeeping has applied it, which a
        // store runs when it is used; the unmodeled one may go unused for
        // long while edits register one each. It is small: applied now,
        // and not registered at all while it is empty (reads check inputs
        // anyway; this only frees memory early).
        if self.unmodeled.entry_count() > 0 {
            self.unmodeled.invalidate_entries_if(outdated)?;
            self.unmodeled.run_pending_tasks();
        }
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
        let held = lock(&self.held);
        held.by_tenant.iter().map(|(t, h)| (*t, h.bytes)).collect()
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
