//! The tenants' indexes a node holds and how they are made: one build per
//! tenant at a time, on blocking threads, in the node's build places
//! (whole builds in `build_places`, small work in one more of its own),
//! each made from the tenant's last index when that is cheaper.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use dialtone_sync::stamp::Input;
use dialtone_sync::{Id, Mirror, MirrorState, Tenant};
use futures::future::{BoxFuture, FutureExt, Shared};
use moka::sync::Cache;

use super::{NotReady, WARM_MIN_ENTRIES};
use crate::readings::{KeptReadings, ReadingMap};
use crate::tenant_index::TenantIndex;

/// A build's outcome, shared by every lookup waiting on it; `None` when
/// the build panicked or the node is shutting down (`stop_building`).
type Built = Shared<BoxFuture<'static, Option<Arc<TenantIndex>>>>;

/// The one build a tenant may have running.
struct Building {
    stamp: u64,
    id: u64,
    done: Built,
}

pub(super) struct Indexes {
    pub(super) mirror: Arc<Mirror>,
    suffix_len: usize,
    pub(super) tenants: Cache<Id, Arc<TenantIndex>>,
    building: Mutex<HashMap<Id, Building>>,
    /// Builds started, for tests and diagnostics.
    pub(super) builds: AtomicU64,
    /// Of those, indexes made from the tenant's last one.
    pub(super) updates: AtomicU64,
    /// Readings whole builds took from the kept ones instead of making.
    pub(super) readings_taken: AtomicU64,
    /// Set when the node shuts down: whole builds end early instead of
    /// holding the process's exit for seconds.
    pub(super) stopping: AtomicBool,
    /// Where large directories' whole builds keep their readings for the
    /// next, across restarts; `None` keeps nothing.
    pub(super) kept: Option<KeptReadings>,
    /// Builds running at once, node-wide ([`build_places`] and one more
    /// for small work, `whole_places`), taken in the order asked. One build per tenant bounded a tenant, not tenants: a
    /// tenant editing one entry between lookups walks its whole directory
    /// each time (50 ms at the entry quota), and each tenant doing so took
    /// a core of every node.
    places: Arc<tokio::sync::Semaphore>,
    /// What whole builds may take ([`build_places`]); `places` holds one
    /// more, so work of at most [`QUICK_MOST_NUMBERS`] numbers
    /// ([`Lane::Quick`]) always finds one. Taken in turn with the whole
    /// builds, a one-entry edit or a small tenant's first build waited
    /// behind other tenants' whole builds (minutes at the entry quota with
    /// 16 numbers an entry), and its lookups all that time answered
    /// unavailable.
    whole_places: Arc<tokio::sync::Semaphore>,
    /// Builds running now, and the most there have been at once.
    running: AtomicUsize,
    pub(super) most_running: AtomicUsize,
}

/// The most numbers an update made in the quick lane normalizes (a few
/// tenths of a second at 25–45 µs a number, besides its walk of the
/// directory, 50 ms at the entry quota); a larger change, or a whole
/// build, takes its turn with the whole builds.
const QUICK_MOST_NUMBERS: usize = 10_000;

/// Which places a build runs in.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Lane {
    /// Updates of at most [`QUICK_MOST_NUMBERS`] numbers, and whole builds
    /// of directories that hold no more.
    Quick,
    /// Anything.
    Whole,
}

/// Whether a whole build of the tenant's directory is the quick lane's
/// (the mirror keeps each tenant's count of numbers).
fn fits_quick(state: &MirrorState, tenant_id: Id) -> bool {
    state.directory_len(tenant_id) <= QUICK_MOST_NUMBERS
        && state.directory_numbers(tenant_id) <= QUICK_MOST_NUMBERS as u64
}

/// The change is more than the quick lane makes.
struct TooLarge;

/// All build places, for whole builds' `places`: one more, for work of
/// at most [`QUICK_MOST_NUMBERS`] numbers alone.
fn all_places(places: usize) -> usize {
    places.max(1) + 1
}

/// Half the node's cores, at least 2: a few tenants' builds never take
/// every core from lookups, and a large directory's build (seconds, at a
/// node's start) never holds up every other tenant's first build.
fn build_places() -> usize {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    (cores / 2).max(2)
}

/// One running build, counted down however it ends.
struct Running<'a>(&'a AtomicUsize);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Frees the tenant's build slot however the build ends, a panic included,
/// so a failed build is retried rather than waited on for good.
struct ClearSlot {
    indexes: Arc<Indexes>,
    tenant_id: Id,
    id: u64,
}

impl Drop for ClearSlot {
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
    pub(super) fn cached(&self, tenant_id: Id, stamp: u64) -> Option<Arc<TenantIndex>> {
        self.tenants
            .get(&tenant_id)
            .filter(|index| index.stamp == stamp)
    }

    /// The tenant's index at `state`: made from its last one when there is
    /// one, normalizing what changed, else built whole (25–45 µs a number,
    /// 10–18 s at the entry quota); `None` once the node is stopping. Never
    /// on a runtime worker.
    /// In the quick lane, only an update of at most [`QUICK_MOST_NUMBERS`]
    /// numbers or a whole build of a directory holding no more is made,
    /// and anything else is `Err(TooLarge)`.
    fn build(
        &self,
        state: &MirrorState,
        tenant_id: Id,
        lane: Lane,
    ) -> Result<Option<Arc<TenantIndex>>, TooLarge> {
        let Some(tenant) = state.tenant(tenant_id) else {
            return Ok(None);
        };
        let stamp = state.stamp(Input::Directory(tenant_id));
        let last = self.tenants.get(&tenant_id);
        if let Some(last) = last.as_ref().filter(|last| last.stamp == stamp) {
            return Ok(Some(last.clone()));
        }
        if self.stopping.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let most = match lane {
            Lane::Quick => QUICK_MOST_NUMBERS,
            Lane::Whole => usize::MAX,
        };
        let started = std::time::Instant::now();
        let updated = match &last {
            Some(last) => last.update(state, tenant, stamp, most, &self.stopping),
            None => None,
        };
        let (index, to_keep, taken, kind) = match updated {
            Some(updated) => {
                self.updates.fetch_add(1, Ordering::Relaxed);
                (updated, None, 0, "update")
            }
            None if self.stopping.load(Ordering::Relaxed) => return Ok(None),
            None if lane == Lane::Quick && !fits_quick(state, tenant_id) => return Err(TooLarge),
            None => match self.build_whole(state, tenant, stamp) {
                Some((index, to_keep, taken)) => (index, to_keep, taken, "full"),
                None => return Ok(None),
            },
        };
        // Counted once made: a build the node's stop ended made nothing.
        metrics::counter!("dialtone_directory_local_index_builds_total", "kind" => kind)
            .increment(1);
        let index = Arc::new(index);
        tracing::debug!(
            tenant = tenant_id,
            kind,
            entries = index.entries(),
            kept_readings_taken = taken,
            ms = started.elapsed().as_millis() as u64,
            "local directory index made"
        );
        // Kept unless a newer one is: one made from a state the mirror has
        // since moved past answers no later lookup (`cached` wants the
        // current stamp), but the next index is made from it. Under edits
        // faster than a build, keeping only current ones kept none, and
        // every lookup built whole.
        //
        // Not for a tenant deleted while it was built: put in after
        // `invalidate` ran, its index stayed in memory and its readings on
        // disk. Looked at again once they are in, since the delete may
        // land in between; `invalidate` runs after the mirror shows it.
        let still_there = || {
            self.mirror
                .load()
                .tenant(tenant_id)
                .is_some_and(|now| now.slug == tenant.slug)
        };
        if !still_there() {
            return Ok(None);
        }
        if self
            .tenants
            .get(&tenant_id)
            .is_none_or(|kept| kept.stamp < stamp)
        {
            self.tenants.insert(tenant_id, index.clone());
        }
        let wrote = match (&self.kept, to_keep) {
            (Some(files), Some(readings)) => {
                files.write(tenant_id, &tenant.default_region, &readings);
                true
            }
            _ => false,
        };
        if !still_there() {
            self.forget(tenant_id, wrote);
            return Ok(None);
        }
        Ok(Some(index))
    }

    /// Drops a gone tenant's index, and its kept readings when `files`.
    pub(super) fn forget(&self, tenant_id: Id, files: bool) {
        self.tenants.invalidate(&tenant_id);
        if let (Some(kept), true) = (&self.kept, files) {
            kept.remove(tenant_id);
        }
    }

    /// A whole build; for a directory of [`WARM_MIN_ENTRIES`] or more, from
    /// the readings its last whole build kept, and keeping this one's
    /// (written once the index is in use) unless they are those. Below that a build fits a
    /// lookup's deadline without them.
    fn build_whole(
        &self,
        state: &MirrorState,
        tenant: &Tenant,
        stamp: u64,
    ) -> Option<(TenantIndex, Option<ReadingMap>, usize)> {
        let files = self
            .kept
            .as_ref()
            .filter(|_| state.directory_len(tenant.id) >= WARM_MIN_ENTRIES);
        let kept = |bound| match files {
            Some(files) => files.read(tenant.id, &tenant.default_region, bound),
            None => ReadingMap::new(),
        };
        let built =
            TenantIndex::build_unless(state, tenant, stamp, self.suffix_len, &self.stopping, kept)?;
        self.readings_taken
            .fetch_add(built.taken as u64, Ordering::Relaxed);
        // A restart that changed nothing does not write the same file again.
        let readings = files.filter(|_| !built.as_kept).map(|_| built.readings);
        Some((built.index, readings, built.taken))
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
        // A task of its own, not the lookups' shared future: the build
        // starts, and ends its slot, whether or not anyone still waits.
        let task = tokio::spawn(async move {
            let _slot = ClearSlot {
                indexes: indexes.clone(),
                tenant_id,
                id,
            };
            indexes.builds.fetch_add(1, Ordering::Relaxed);
            // The quick lane first; what is more than it makes waits for a
            // whole build's place.
            match indexes.run_in(Lane::Quick, &state, tenant_id).await {
                Some(Ok(made)) => return made,
                Some(Err(TooLarge)) => {}
                None => return None,
            }
            match indexes.run_in(Lane::Whole, &state, tenant_id).await {
                Some(Ok(made)) => made,
                Some(Err(TooLarge)) | None => None,
            }
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

    /// [`Indexes::build`] in `lane`, once a place of that lane is free, on
    /// a blocking thread; `None` if it panicked.
    async fn run_in(
        self: &Arc<Self>,
        lane: Lane,
        state: &Arc<MirrorState>,
        tenant_id: Id,
    ) -> Option<Result<Option<Arc<TenantIndex>>, TooLarge>> {
        let whole = match lane {
            Lane::Quick => None,
            Lane::Whole => Some(self.whole_places.clone().acquire_owned().await),
        };
        let place = self.places.clone().acquire_owned().await;
        let (indexes, state) = (self.clone(), state.clone());
        tokio::task::spawn_blocking(move || {
            let _places = (place, whole);
            let now = indexes.running.fetch_add(1, Ordering::Relaxed) + 1;
            indexes.most_running.fetch_max(now, Ordering::Relaxed);
            let _running = Running(&indexes.running);
            indexes.build(&state, tenant_id, lane)
        })
        .await
        .ok()
    }

    /// The index at `state`'s stamp, waiting for (or starting) its build.
    pub(super) async fn ready(
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

impl Indexes {
    pub(super) fn new(
        mirror: Arc<Mirror>,
        suffix_len: usize,
        max_tenants: u64,
        readings_dir: Option<std::path::PathBuf>,
    ) -> Indexes {
        Indexes {
            mirror,
            suffix_len: suffix_len.max(4),
            tenants: Cache::builder().max_capacity(max_tenants).build(),
            building: Mutex::default(),
            builds: AtomicU64::new(0),
            updates: AtomicU64::new(0),
            readings_taken: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            kept: readings_dir.map(KeptReadings::new),
            places: Arc::new(tokio::sync::Semaphore::new(all_places(build_places()))),
            whole_places: Arc::new(tokio::sync::Semaphore::new(build_places())),
            running: AtomicUsize::new(0),
            most_running: AtomicUsize::new(0),
        }
    }

    /// Whole builds at once, node-wide, and one place more for small work.
    pub(super) fn set_build_places(&self, places: usize) {
        let places = places.max(1);
        for (free, many) in [
            (&self.places, all_places(places)),
            (&self.whole_places, places),
        ] {
            free.forget_permits(free.available_permits());
            free.add_permits(many);
        }
    }

    /// The tenant's index made on the calling thread, counted as a build.
    pub(super) fn build_here(
        &self,
        state: &MirrorState,
        tenant_id: Id,
    ) -> Option<Arc<TenantIndex>> {
        self.builds.fetch_add(1, Ordering::Relaxed);
        self.build(state, tenant_id, Lane::Whole).ok().flatten()
    }
}
