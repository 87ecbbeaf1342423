//! The local directory source: a tenant's `directory_entries` from the
//! mirror, indexed by normalized number (`TenantIndex`). The index of a
//! tenant is made on its first lookup and used while the mirror's stamp of
//! the tenant's directory (its entries and its region) is the one it was
//! made at, so lookups never scan, never touch SQL and never see an
//! outdated index.
//!
//! An outdated index is kept, not dropped: the next one is made from it,
//! normalizing only the entries that changed (milliseconds for an edit),
//! where a first build normalizes every number (seconds at the entry
//! quota). Either runs on a blocking thread, one per tenant at a time, and
//! a lookup waits for one no longer than its deadline: a tenant's
//! directory never holds a runtime worker that other tenants' lookups (and
//! their deadlines) need.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use dialtone_sync::stamp::Input;
use dialtone_sync::{ChangeEvent, Entity, Id, Mirror, MirrorState};
use futures::future::{BoxFuture, FutureExt, Shared};
use moka::sync::Cache;
use tokio::time::Instant;

pub use crate::tenant_index::Found;
use crate::tenant_index::TenantIndex;

/// How many trailing digits identify a number that will not normalize.
pub const DEFAULT_SUFFIX_LEN: usize = 7;

/// The smallest directory [`LocalDirectory::warm`] builds ahead of its
/// lookups. Below it a first build takes tens of milliseconds (25–45 µs a
/// number), within a lookup's deadline; above a few thousand entries it
/// does not fit the default 300 ms, and the tenant's first lookups after a
/// start answer `NotReady` (no name, not even from the sources after the
/// directory) until the build ends: seconds at the entry quota.
pub const WARM_MIN_ENTRIES: usize = 1_000;

/// What one [`LocalDirectory::warm`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Warmed {
    /// Tenants whose index is ready (built now, or already).
    pub tenants: usize,
    /// Their entries.
    pub entries: usize,
    /// Whether shutdown stopped it before the last tenant.
    pub stopped: bool,
}

/// A build's outcome, shared by every lookup waiting on it; `None` when
/// the build panicked or the node is shutting down (`stop_building`).
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
    /// Of those, indexes made from the tenant's last one.
    updates: AtomicU64,
    /// Set when the node shuts down: whole builds end early instead of
    /// holding the process's exit for seconds.
    stopping: AtomicBool,
}

pub struct LocalDirectory {
    indexes: Arc<Indexes>,
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

    /// The tenant's index at `state`: made from its last one when there is
    /// one, normalizing what changed, else built whole (25–45 µs a number,
    /// 10–18 s at the entry quota). Never on a runtime worker.
    fn build(&self, state: &MirrorState, tenant_id: Id) -> Option<Arc<TenantIndex>> {
        let tenant = state.tenant(tenant_id)?;
        let stamp = state.stamp(Input::Directory(tenant_id));
        self.builds.fetch_add(1, Ordering::Relaxed);
        let last = self.tenants.get(&tenant_id);
        if let Some(last) = last.as_ref().filter(|last| last.stamp == stamp) {
            return Some(last.clone());
        }
        let started = std::time::Instant::now();
        let updated = last.and_then(|last| last.update(state, tenant, stamp));
        let kind = if updated.is_some() {
            self.updates.fetch_add(1, Ordering::Relaxed);
            "update"
        } else {
            "full"
        };
        metrics::counter!("dialtone_directory_local_index_builds_total", "kind" => kind)
            .increment(1);
        let index = Arc::new(match updated {
            Some(updated) => updated,
            None => {
                TenantIndex::build_unless(state, tenant, stamp, self.suffix_len, &self.stopping)?
            }
        });
        tracing::debug!(
            tenant = tenant_id,
            kind,
            entries = index.entries(),
            ms = started.elapsed().as_millis() as u64,
            "local directory index made"
        );
        // Kept unless a newer one is: one made from a state the mirror has
        // since moved past answers no later lookup (`cached` wants the
        // current stamp), but the next index is made from it. Under edits
        // faster than a build, keeping only current ones kept none, and
        // every lookup built whole.
        if self
            .tenants
            .get(&tenant_id)
            .is_none_or(|kept| kept.stamp < stamp)
        {
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
                updates: AtomicU64::new(0),
                stopping: AtomicBool::new(false),
            }),
        }
    }

    /// Index builds started so far.
    pub fn builds(&self) -> u64 {
        self.indexes.builds.load(Ordering::Relaxed)
    }

    /// Of those, indexes made from the tenant's last one (normalizing only
    /// the entries that changed) rather than built whole.
    pub fn updates(&self) -> u64 {
        self.indexes.updates.load(Ordering::Relaxed)
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
        if state.tenant(tenant_id).is_none() {
            return Ok(None);
        }
        let stamp = state.stamp(Input::Directory(tenant_id));
        let index = match self.indexes.cached(tenant_id, stamp) {
            Some(index) => index,
            None => tokio::time::timeout_at(deadline, self.indexes.ready(state, tenant_id))
                .await
                .map_err(|_| NotReady)??,
        };
        Ok(index.find(number))
    }

    /// Ends whole builds early from now on (each checks between entries);
    /// one that ends so answers `NotReady`. For a node shutting down: the
    /// runtime waits for a build's blocking thread before the process
    /// exits, seconds at the entry quota.
    pub fn stop_building(&self) {
        self.indexes.stopping.store(true, Ordering::Relaxed);
    }

    /// Makes ready, one tenant after another, the indexes of every tenant
    /// with at least [`WARM_MIN_ENTRIES`] entries, largest first and no
    /// more than the index cache keeps, so that a node's first lookups
    /// after a start find them built. One build at a time, on a blocking
    /// thread, each the very build a lookup of the tenant would start or
    /// join: a start costs one core for the while, not every core, and a
    /// lookup arriving meanwhile never builds the same index twice. Each
    /// tenant is built at the mirror's state when its turn comes, so edits
    /// made meanwhile are in. Stops between tenants when `shutdown`
    /// resolves (a build already running ends on its own).
    pub async fn warm(&self, shutdown: impl std::future::Future<Output = ()>) -> Warmed {
        let indexes = &self.indexes;
        let state = indexes.mirror.load();
        let mut queue: Vec<(usize, Id)> = state
            .tenants()
            .map(|t| (state.directory_len(t.id), t.id))
            .filter(|(len, _)| *len >= WARM_MIN_ENTRIES)
            .collect();
        queue.sort_unstable_by(|a, b| b.cmp(a));
        let capacity = usize::try_from(indexes.tenants.policy().max_capacity().unwrap_or(0))
            .unwrap_or(usize::MAX);
        queue.truncate(capacity);
        drop(state);
        let mut warmed = Warmed::default();
        tokio::pin!(shutdown);
        for (_, tenant_id) in queue {
            let state = indexes.mirror.load();
            if state.tenant(tenant_id).is_none() {
                continue;
            }
            tokio::select! {
                biased;
                _ = &mut shutdown => {
                    warmed.stopped = true;
                    break;
                }
                built = indexes.ready(&state, tenant_id) => {
                    if let Ok(index) = built {
                        warmed.tenants += 1;
                        warmed.entries += index.entries();
                    }
                }
            }
        }
        warmed
    }

    /// `find` without a deadline, building on the calling thread when the
    /// index is missing: for the operator's `dialtone lookup` and tests,
    /// never for the lookup service.
    pub fn lookup(&self, state: &MirrorState, tenant_id: Id, number: &str) -> Option<Found> {
        state.tenant(tenant_id)?;
        let stamp = state.stamp(Input::Directory(tenant_id));
        let index = match self.indexes.cached(tenant_id, stamp) {
            Some(index) => index,
            None => self.indexes.build(state, tenant_id)?,
        };
        index.find(number)
    }

    /// Drops the indexes of tenants a mirror change removed. An index
    /// that is only outdated stays: the tenant's next one is made from it,
    /// after an edit and after a reload alike (a reload reads every entry
    /// anew, and an entry read the same is not normalized again).
    pub fn invalidate(&self, event: &ChangeEvent) {
        let state = self.indexes.mirror.load();
        let gone = |tenant: &Id| state.tenant(*tenant).is_none();
        match event {
            ChangeEvent::Reset { .. } => {
                for (tenant, _) in self.indexes.tenants.iter() {
                    if gone(&tenant) {
                        self.indexes.tenants.invalidate(&*tenant);
                    }
                }
            }
            ChangeEvent::Changed { keys, .. } => {
                for (entity, id) in keys.iter() {
                    if *entity == Entity::Tenant && gone(id) {
                        self.indexes.tenants.invalidate(id);
                    }
                }
            }
        }
    }
}
