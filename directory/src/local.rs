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

use std::sync::atomic::Ordering;
use std::sync::Arc;

use dialtone_sync::stamp::Input;
use dialtone_sync::{ChangeEvent, Entity, Id, Mirror, MirrorState};
use tokio::time::Instant;

pub use crate::tenant_index::Found;
use crate::tenant_index::TenantIndex;
use indexes::Indexes;

/// How many trailing digits identify a number that will not normalize.
pub const DEFAULT_SUFFIX_LEN: usize = 7;

pub use warm::{Warmed, WARM_MIN_ENTRIES};

pub struct LocalDirectory {
    indexes: Arc<Indexes>,
}

/// The tenant's index was not ready by the deadline (or its build failed):
/// the lookup cannot say whether the directory knows the number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotReady;

impl LocalDirectory {
    pub fn new(mirror: Arc<Mirror>, suffix_len: usize, max_tenants: u64) -> LocalDirectory {
        Self::keeping_readings(mirror, suffix_len, max_tenants, None)
    }

    /// [`LocalDirectory::new`], keeping the readings of large directories'
    /// whole builds in `readings_dir` (the node's snapshot's directory), so
    /// that after a restart those builds normalize only numbers added since.
    pub fn keeping_readings(
        mirror: Arc<Mirror>,
        suffix_len: usize,
        max_tenants: u64,
        readings_dir: Option<std::path::PathBuf>,
    ) -> LocalDirectory {
        LocalDirectory {
            indexes: Arc::new(Indexes::new(mirror, suffix_len, max_tenants, readings_dir)),
        }
    }

    /// Whole builds running at once, node-wide (one more place is small
    /// work's alone); for tests.
    pub fn with_build_places(self, places: usize) -> LocalDirectory {
        self.indexes.set_build_places(places);
        self
    }

    /// The most builds that have run at once.
    pub fn most_builds_at_once(&self) -> usize {
        self.indexes.most_running.load(Ordering::Relaxed)
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

    /// Numbers whole builds filed by a reading kept from an earlier build
    /// (across a restart) instead of normalizing them.
    pub fn readings_taken(&self) -> u64 {
        self.indexes.readings_taken.load(Ordering::Relaxed)
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

    /// `find` without a deadline, building on the calling thread when the
    /// index is missing: for the operator's `dialtone lookup` and tests,
    /// never for the lookup service.
    pub fn lookup(&self, state: &MirrorState, tenant_id: Id, number: &str) -> Option<Found> {
        self.index_now(state, tenant_id)?.find(number)
    }

    /// How many entries list `number` as a whole number, when a lookup
    /// finds no name: several that share neither a name nor a company
    /// answer nothing, which `dialtone lookup` says. Built as `lookup`.
    pub fn listed_by(&self, state: &MirrorState, tenant_id: Id, number: &str) -> usize {
        self.index_now(state, tenant_id)
            .map_or(0, |index| index.listed_by(number))
    }

    fn index_now(&self, state: &MirrorState, tenant_id: Id) -> Option<Arc<TenantIndex>> {
        state.tenant(tenant_id)?;
        let stamp = state.stamp(Input::Directory(tenant_id));
        match self.indexes.cached(tenant_id, stamp) {
            Some(index) => Some(index),
            None => self.indexes.build_here(state, tenant_id),
        }
    }

    /// Whether the tenant's index (current or not) is in memory; for
    /// tests and diagnostics.
    pub fn holds_index_of(&self, tenant_id: Id) -> bool {
        self.indexes.tenants.contains_key(&tenant_id)
    }

    /// Drops the indexes of tenants a mirror change removed, and the
    /// readings kept for them (the periodic sweep of the mirror's folder
    /// finds those of tenants removed while the node was down). An index
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
                        self.indexes.forget(*tenant, true);
                    }
                }
            }
            ChangeEvent::Changed { keys, .. } => {
                for (entity, id) in keys.iter() {
                    if *entity == Entity::Tenant && gone(id) {
                        self.indexes.forget(*id, true);
                    }
                }
            }
        }
    }
}

#[path = "local_indexes.rs"]
mod indexes;
#[path = "local_warm.rs"]
mod warm;
