//! The local directory source: a tenant's `directory_entries` from the
//! mirror, indexed by normalized number. The index of a tenant is built on
//! its first lookup and used while the mirror's stamp of the tenant's
//! directory (its entries and its region) is the one it was built at, so
//! lookups never scan, never touch SQL and never see an outdated index. The
//! change stream drops outdated indexes early, to free memory.
//!
//! A build is seconds of CPU at the entry quota, and any edit of the
//! tenant's directory starts the next one, so builds run on blocking
//! threads, one per tenant at a time, and a lookup waits for one no longer
//! than its deadline: a tenant's directory never holds a runtime worker
//! that other tenants' lookups (and their deadlines) need.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use dialtone_sync::stamp::Input;
use dialtone_sync::{ChangeEvent, DirectoryEntry, Entity, Id, Mirror, MirrorState};
use futures::future::{BoxFuture, FutureExt, Shared};
use moka::sync::Cache;
use tokio::time::Instant;

use crate::normalize::{normalize, suffix};

/// How many trailing digits identify a number that will not normalize.
pub const DEFAULT_SUFFIX_LEN: usize = 7;

/// Numbers to whoever has them: exact E.164, and the last digits for
/// numbers that do not normalize. Shared by the local directory and the
/// LDAP mirror (`crate::mirror`), so both match a number the same way.
pub struct NumberIndex<T> {
    suffix_len: usize,
    by_e164: HashMap<Box<str>, Vec<T>>,
    by_suffix: HashMap<Box<str>, Vec<T>>,
}

impl<T: Clone> NumberIndex<T> {
    pub fn new(suffix_len: usize) -> NumberIndex<T> {
        NumberIndex {
            suffix_len: suffix_len.max(4),
            by_e164: HashMap::new(),
            by_suffix: HashMap::new(),
        }
    }

    /// Files `item` under a number already normalized (`e164`), or under
    /// the raw spelling's last digits when it would not normalize.
    pub fn insert(&mut self, raw: &str, e164: Option<&str>, item: T) {
        let spelled = e164.unwrap_or(raw);
        if let Some(s) = suffix(spelled, self.suffix_len) {
            self.by_suffix
                .entry(s.into_boxed_str())
                .or_default()
                .push(item.clone());
        }
        if let Some(e164) = e164 {
            self.by_e164.entry(e164.into()).or_default().push(item);
        }
    }

    /// An exact E.164 match wins; otherwise a suffix match counts only
    /// when every item under it is the same one (`same`), since showing
    /// the wrong name is worse than showing none. The flag says "by suffix".
    pub fn find(
        &self,
        e164: Option<&str>,
        raw: &str,
        same: impl Fn(&T, &T) -> bool,
    ) -> Option<(&T, bool)> {
        if let Some(item) = e164
            .and_then(|n| self.by_e164.get(n))
            .and_then(|v| v.first())
        {
            return Some((item, false));
        }
        let key = suffix(e164.unwrap_or(raw), self.suffix_len)?;
        match self.by_suffix.get(key.as_str()).map(Vec::as_slice) {
            Some([first, rest @ ..]) if rest.iter().all(|e| same(first, e)) => Some((first, true)),
            _ => None,
        }
    }

    /// Numbers filed under E.164.
    pub fn numbers(&self) -> usize {
        self.by_e164.len()
    }
}

struct TenantIndex {
    /// The tenant's directory stamp it was built at.
    stamp: u64,
    numbers: NumberIndex<Arc<DirectoryEntry>>,
}

/// A build's outcome, shared by every lookup waiting on it; `None` when
/// the build panicked.
type Built = Shared<BoxFuture<'static, Option<Arc<TenantIndex>>>>;

/// The one build a tenant may have running.
struct Building {
    stamp: u64,
    id: u64,
    done: Built,
}

struct Indexes {
    mirror: Arc<Mirror>,
    suffix_len: usize,
    tenants: Cache<Id, Arc<TenantIndex>>,
    building: Mutex<HashMap<Id, Building>>,
    /// Builds started, for tests and diagnostics.
    builds: AtomicU64,
}

pub struct LocalDirectory {
    indexes: Arc<Indexes>,
}

/// A match: the entry and whether it came from the weaker suffix index.
#[derive(Clone, Debug)]
pub struct Found {
    pub entry: Arc<DirectoryEntry>,
    pub by_suffix: bool,
}

/// The tenant's index was not ready by the deadline (or its build failed):
/// the lookup cannot say whether the directory knows the number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotReady;

/// Frees the tenant's build slot however the build ends, a panic included,
/// so a failed build is retried rather than waited on for good.
struct ClearSlot<'a> {
    indexes: &'a Indexes,
    tenant_id: Id,
    id: u64,
}

impl Drop for ClearSlot<'_> {
    fn drop(&mut self) {
        let mut building = self
            .indexes
            .building
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if building
            .get(&self.tenant_id)
            .is_some_and(|b| b.id == self.id)
        {
            building.remove(&self.tenant_id);
        }
    }
}

impl Indexes {
    fn cached(&self, tenant_id: Id, stamp: u64) -> Option<Arc<TenantIndex>> {
        self.tenants
            .get(&tenant_id)
            .filter(|index| index.stamp == stamp)
    }

    /// Normalizes every number of the tenant's directory: about 20 µs a
    /// number, seconds at the entry quota, so never on a runtime worker.
    fn build(&self, state: &MirrorState, tenant_id: Id) -> Option<Arc<TenantIndex>> {
        let tenant = state.tenant(tenant_id)?;
        let stamp = state.stamp(Input::Directory(tenant_id));
        self.builds.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("dialtone_directory_local_index_builds_total").increment(1);
        let mut index = TenantIndex {
            stamp,
            numbers: NumberIndex::new(self.suffix_len),
        };
        let mut entries = state.directory_of(tenant_id);
        // Stable order: the same number in two entries resolves the same way.
        entries.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
        for entry in entries {
            for n in &entry.numbers {
                let e164 = normalize(&n.number, &tenant.default_region).ok();
                index
                    .numbers
                    .insert(&n.number, e164.as_deref(), entry.clone());
            }
        }
        let index = Arc::new(index);
        // Built from a state that has moved on, it would be outdated the
        // moment it landed: serve the lookups of that state, keep it for none.
        if self.mirror.load().stamp(Input::Directory(tenant_id)) == stamp {
            self.tenants.insert(tenant_id, index.clone());
        }
        Some(index)
    }

    /// The tenant's running build, or a new one on a blocking thread. The
    /// flag says whether it builds `stamp`: one build per tenant at a time,
    /// so a lookup of another stamp waits for it to end before starting its
    /// own, and lookups or edits in a burst cost one core, not one each.
    fn join_or_start(self: &Arc<Self>, state: &Arc<MirrorState>, tenant_id: Id) -> (Built, bool) {
        let stamp = state.stamp(Input::Directory(tenant_id));
        let mut building = self.building.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(running) = building.get(&tenant_id) {
            return (running.done.clone(), running.stamp == stamp);
        }
        static IDS: AtomicU64 = AtomicU64::new(0);
        let id = IDS.fetch_add(1, Ordering::Relaxed);
        let (indexes, state) = (self.clone(), state.clone());
        let task = tokio::task::spawn_blocking(move || {
            let _slot = ClearSlot {
                indexes: &indexes,
                tenant_id,
                id,
            };
            indexes.build(&state, tenant_id)
        });
        let done = async move { task.await.ok().flatten() }.boxed().shared();
        building.insert(
            tenant_id,
            Building {
                stamp,
                id,
                done: done.clone(),
            },
        );
        (done, true)
    }

    /// The index at `state`'s stamp, waiting for (or starting) its build.
    async fn ready(
        self: &Arc<Self>,
        state: &Arc<MirrorState>,
        tenant_id: Id,
    ) -> Result<Arc<TenantIndex>, NotReady> {
        let stamp = state.stamp(Input::Directory(tenant_id));
        loop {
            if let Some(index) = self.cached(tenant_id, stamp) {
                return Ok(index);
            }
            let (done, ours) = self.join_or_start(state, tenant_id);
            let built = done.await;
            if ours {
                return built.ok_or(NotReady);
            }
        }
    }
}

impl LocalDirectory {
    pub fn new(mirror: Arc<Mirror>, suffix_len: usize, max_tenants: u64) -> LocalDirectory {
        LocalDirectory {
            indexes: Arc::new(Indexes {
                mirror,
                suffix_len: suffix_len.max(4),
                tenants: Cache::builder().max_capacity(max_tenants).build(),
                building: Mutex::default(),
                builds: AtomicU64::new(0),
            }),
        }
    }

    /// Index builds started so far.
    pub fn builds(&self) -> u64 {
        self.indexes.builds.load(Ordering::Relaxed)
    }

    /// Who has `number` in the tenant's directory, answered by `deadline`.
    /// A missing or outdated index is built off the runtime's workers, one
    /// build per tenant, shared by the lookups that wait for it; a lookup
    /// it would keep past `deadline` gets `NotReady` while the build goes
    /// on for later ones. Lookups never answer from an outdated index,
    /// since an edit must show at once. Answers from `state`, the one
    /// mirror state the caller works from.
    pub async fn find(
        &self,
        state: &Arc<MirrorState>,
        tenant_id: Id,
        number: &str,
        deadline: Instant,
    ) -> Result<Option<Found>, NotReady> {
        let Some(tenant) = state.tenant(tenant_id) else {
            return Ok(None);
        };
        let stamp = state.stamp(Input::Directory(tenant_id));
        let index = match self.indexes.cached(tenant_id, stamp) {
            Some(index) => index,
            None => tokio::time::timeout_at(deadline, self.indexes.ready(state, tenant_id))
                .await
                .map_err(|_| NotReady)??,
        };
        Ok(found_in(&index, &tenant.default_region, number))
    }

    /// `find` without a deadline, building on the calling thread when the
    /// index is missing: for the operator's `dialtone lookup` and tests,
    /// never for the lookup service.
    pub fn lookup(&self, state: &MirrorState, tenant_id: Id, number: &str) -> Option<Found> {
        let region = &state.tenant(tenant_id)?.default_region;
        let stamp = state.stamp(Input::Directory(tenant_id));
        let index = match self.indexes.cached(tenant_id, stamp) {
            Some(index) => index,
            None => self.indexes.build(state, tenant_id)?,
        };
        found_in(&index, region, number)
    }

    /// Drops the indexes a mirror change makes stale.
    pub fn invalidate(&self, event: &ChangeEvent) {
        match event {
            ChangeEvent::Reset { .. } => self.indexes.tenants.invalidate_all(),
            ChangeEvent::Changed { keys, tenants, .. } => {
                let relevant = keys
                    .iter()
                    .any(|(entity, _)| matches!(entity, Entity::Tenant | Entity::DirectoryEntry));
                if relevant {
                    for tenant in tenants.iter() {
                        self.indexes.tenants.invalidate(tenant);
                    }
                }
            }
        }
    }
}

/// An exact E.164 match wins; otherwise a suffix match counts only when it
/// is unambiguous, since showing the wrong name is worse than showing none.
fn found_in(index: &TenantIndex, region: &str, number: &str) -> Option<Found> {
    let e164 = normalize(number, region).ok();
    let (entry, by_suffix) = index
        .numbers
        .find(e164.as_deref(), number, |a, b| a.id == b.id)?;
    Some(Found {
        entry: entry.clone(),
        by_suffix,
    })
}
