//! The sync tasks: one per mirrored source, following the source's row.
//! A changed row builds a new source (`sources.rs`) with a new, empty
//! mirror; its old task is cancelled and a new one starts, which loads
//! the file if the settings it was read with are still the source's.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use dialtone_sync::{now_millis, Entity, Id, MirrorState};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::leftovers::still_mirrored;
use super::schedule::{forget_future_syncs, next_sync, not_in_future};
use super::sync::{filter, read_all, root_dse, since_on_this_server, Limits, Read, RootDse};
use super::work::MirrorWork;
use super::{entry_quota, from_full, merge, store, MirrorData, SourceMirror, Watermark};
use crate::error::DirectoryError;
use crate::ldap::LdapSource;
use crate::service::LookupService;
use crate::sources::{Remote, RemoteSource};

/// Each LDAP operation of a sync (connect, bind, one page) at most.
const OP_TIMEOUT: Duration = Duration::from_secs(60);
/// A whole sync at most, whatever the server does.
const MAX_FULL_SYNC: Duration = Duration::from_secs(15 * 60);
const MAX_INCREMENTAL_SYNC: Duration = Duration::from_secs(5 * 60);
/// First wait after a failed sync; doubles up to the full-sync interval.
const RETRY: Duration = Duration::from_secs(30);
/// Running tasks are checked (and dead ones restarted) at least this often.
const RECONCILE: Duration = Duration::from_secs(30);
/// A sync starts no sooner after the previous one of its kind than this
/// many times that one's duration, whatever the source's interval says.
/// The interval is the tenant's (10 s at least), and a full read of
/// 96,000 entries took 2.9 s (BENCHMARKS.md, mirrored LDAP sources): at
/// 10 s a tenant's sources would keep a thread busy for good. Spaced, a
/// source's syncs take a twentieth of the time at most, and a directory
/// that takes 3 s to read is read in full at most once a minute.
pub(super) const SYNC_SPACING: i64 = 20;

struct Running {
    source: Arc<RemoteSource>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// However `run_mirrors` ends (a panic included, after which the
/// supervisor starts a new one), its sync tasks end with it, so a source
/// never has two.
impl Drop for Running {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Per tenant, the earliest a sync of any of its mirrored sources may start
/// (Unix ms). A source's own spacing is lost when its row changes: the new
/// task starts with an empty mirror and syncs at once. So every sync also
/// moves its tenant's gate [`SYNC_SPACING`] times its duration on, and a
/// tenant editing its sources again and again gets no more syncs than one
/// left alone. One sync of a tenant's runs at a time ([`SyncGates::start`]):
/// checked and moved only at the end, the gate let all of a tenant's due
/// sources (up to ten) start together. One entry per tenant that has
/// mirrored a source here and still exists ([`SyncGates::forget_gone`]).
#[derive(Default)]
pub(crate) struct SyncGates(std::sync::Mutex<HashMap<Id, Gate>>);

#[derive(Default)]
struct Gate {
    open_at: i64,
    /// What the last sync added to `open_at`.
    wait: i64,
    busy: bool,
}

impl Gate {
    /// `open_at`, but no later than the last wait from `now`, kept: moved
    /// on by a clock that has stepped back since, the gate held the
    /// tenant's syncs for the step's length.
    fn open_at(&mut self, now: i64) -> i64 {
        self.open_at = self.open_at.min(now.saturating_add(self.wait));
        self.open_at
    }
}

/// How often a source whose tenant has a sync running looks again.
const BUSY_RETRY_MS: i64 = 1000;

impl SyncGates {
    fn gates(&self) -> std::sync::MutexGuard<'_, HashMap<Id, Gate>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// When a sync of the tenant's may start: its gate, or soon if one of
    /// its syncs runs now.
    pub(super) fn open_at(&self, tenant: Id) -> i64 {
        let now = now_millis();
        match self.gates().get_mut(&tenant) {
            Some(gate) if gate.busy => now.saturating_add(BUSY_RETRY_MS),
            Some(gate) => gate.open_at(now),
            None => 0,
        }
    }

    /// The tenant's turn to sync, if its gate is open and none of its
    /// syncs runs; held until the sync ends (or its task does).
    pub(super) fn start(&self, tenant: Id, now: i64) -> Option<SyncTurn<'_>> {
        let mut gates = self.gates();
        let gate = gates.entry(tenant).or_default();
        if gate.busy || gate.open_at(now) > now {
            return None;
        }
        gate.busy = true;
        Some(SyncTurn {
            gates: self,
            tenant,
        })
    }

    /// A sync of `tenant`'s that ended at `ended` after `took` ms.
    pub(super) fn synced(&self, tenant: Id, ended: i64, took: u64) {
        let mut gates = self.gates();
        let gate = gates.entry(tenant).or_default();
        let wait = (took as i64).saturating_mul(SYNC_SPACING - 1);
        gate.wait = wait;
        gate.open_at = gate.open_at.max(ended).saturating_add(wait);
    }

    /// Drops the gates of deleted tenants, kept otherwise for the node's
    /// life. A live tenant keeps its gate with no mirrored source left:
    /// dropped, turning its sources' mirroring off and on would skip the
    /// spacing.
    fn forget_gone(&self, state: &MirrorState) {
        self.gates()
            .retain(|tenant, _| state.tenant(*tenant).is_some());
    }
}

/// A tenant's one running sync; ends its turn when dropped, however the
/// sync ends (a panic included, or the tenant's syncs would stop for good).
pub(super) struct SyncTurn<'a> {
    gates: &'a SyncGates,
    tenant: Id,
}

impl Drop for SyncTurn<'_> {
    fn drop(&mut self) {
        if let Some(gate) = self.gates.gates().get_mut(&self.tenant) {
            gate.busy = false;
        }
    }
}

impl LookupService {
    /// Runs a sync task for every enabled source in mirror mode until
    /// `cancel`, starting, stopping and rebuilding them as rows change.
    /// Mirror files live in `lookup` options' `mirror_dir` (none: memory only).
    pub async fn run_mirrors(self, tracker: TaskTracker, cancel: CancellationToken) {
        let mut events = self.inner.mirror.subscribe();
        let mut running: HashMap<Id, Running> = HashMap::new();
        let mut tick = tokio::time::interval(RECONCILE);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // One at a time: it waits for a place behind the syncs' work.
        let mut removing: Option<tokio::task::JoinHandle<()>> = None;
        loop {
            let (due, periodic) = tokio::select! {
                _ = cancel.cancelled() => break,
                // The first tick is at once: at start.
                _ = tick.tick() => (true, true),
                event = events.recv() => (match event {
                    Ok(dialtone_sync::ChangeEvent::Changed { keys, .. }) => keys
                        .iter()
                        .any(|(e, _)| matches!(e, Entity::DirectorySource | Entity::Tenant)),
                    Ok(dialtone_sync::ChangeEvent::Reset { .. }) => true,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => true,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                }, false),
            };
            if due {
                self.reconcile(&mut running, &tracker, &cancel);
            }
            if periodic && removing.as_ref().is_none_or(|r| r.is_finished()) {
                removing = Some(tracker.spawn(self.clone().remove_leftovers()));
            }
        }
    }

    fn reconcile(
        &self,
        running: &mut HashMap<Id, Running>,
        tracker: &TaskTracker,
        cancel: &CancellationToken,
    ) {
        let state = self.inner.mirror.load();
        // Here, run on a tenant's delete and every period, it also catches
        // a sync of the tenant's that ended after the delete (its gate put
        // back by `synced`).
        self.inner.sync_gates.forget_gone(&state);
        let mut wanted: HashMap<Id, Arc<RemoteSource>> = HashMap::new();
        for tenant in state.tenants() {
            for source in self.inner.sources.sources_of(&state, tenant.id) {
                if source.mirror.is_some() {
                    wanted.insert(source.id, source);
                }
            }
        }
        running.retain(|id, r| {
            let keep =
                !r.task.is_finished() && wanted.get(id).is_some_and(|w| Arc::ptr_eq(w, &r.source));
            if !keep {
                r.cancel.cancel();
                let tenant = r.source.mirror.as_ref().map_or(0, |m| m.tenant_id);
                let mirrored = still_mirrored(&state, tenant, *id);
                if let (false, Some(dir)) = (mirrored, &self.inner.options.mirror_dir) {
                    store::remove(dir, *id);
                }
            }
            keep
        });
        for (id, source) in wanted {
            if running.contains_key(&id) {
                continue;
            }
            let token = cancel.child_token();
            let task = tracker.spawn(self.clone().run_source(source.clone(), token.clone()));
            running.insert(
                id,
                Running {
                    source,
                    cancel: token,
                    task,
                },
            );
        }
    }

    /// A mirrored source's status, for the admin API and `dialtone lookup`:
    /// entries, the last full and incremental syncs (Unix ms) and their
    /// durations (ms), the last error, the age and the incremental method.
    /// `None` for a source that is not mirrored (or not built on this node).
    pub fn mirror_status(&self, source_id: Id) -> Option<super::MirrorStatus> {
        let source = self.inner.sources.built(source_id)?;
        source.mirror.as_ref().map(|m| m.status())
    }

    /// `dialtone_directory_mirror_sources_behind`: the mirrored sources on
    /// this node (those `reconcile` runs a sync task for) whose last sync
    /// failed, or whose data was last known current longer ago than twice
    /// their `sync_interval_s`, spaced as their syncs are by the last full
    /// one's duration ([`SYNC_SPACING`]). Lookups go on answering from such
    /// a mirror, so no lookup alert sees it. A count without a source or
    /// tenant label: read at scrape time, one pass over the built sources,
    /// as a reconcile makes every 30 s.
    pub fn mirror_sources_behind(&self) -> usize {
        let state = self.inner.mirror.load();
        let now = now_millis();
        let millis = |s: u64| i64::try_from(s).unwrap_or(i64::MAX).saturating_mul(1000);
        state
            .tenants()
            .flat_map(|tenant| self.inner.sources.sources_of(&state, tenant.id))
            .filter(|source| match (&source.mirror, &source.remote) {
                (Some(mirror), Remote::Ldap(ldap)) => {
                    let took = mirror.last_full_ms().unwrap_or(0) as i64;
                    let every = millis(ldap.settings().sync_interval_s)
                        .max(took.saturating_mul(SYNC_SPACING));
                    mirror.behind(now, every)
                }
                _ => false,
            })
            .count()
    }

    /// The entries `tenant`'s mirrored sources hold on this node: with its
    /// own entries, what its `directory_entries` quota bounds.
    pub fn mirrored_entries(&self, state: &MirrorState, tenant: Id) -> u64 {
        self.inner
            .sources
            .sources_of(state, tenant)
            .iter()
            .filter_map(|s| s.mirror.as_ref())
            .map(|m| m.status().entries)
            .sum()
    }

    /// Loads a mirrored source's file if it has none in memory yet (for
    /// `dialtone lookup`, which runs no sync tasks).
    pub async fn load_mirror(&self, source: &RemoteSource) {
        let (Some(mirror), Remote::Ldap(ldap)) = (&source.mirror, &source.remote) else {
            return;
        };
        if !mirror.is_loaded() {
            self.load_file(mirror, ldap).await;
        }
    }

    async fn load_file(&self, mirror: &SourceMirror, ldap: &LdapSource) -> Option<MirrorData> {
        let dir = self.inner.options.mirror_dir.clone()?;
        let region = self.region(mirror.tenant_id)?;
        let max = self.max_entries(mirror.tenant_id, ldap);
        let (id, fp) = (mirror.source_id, mirror.fingerprint.clone());
        let suffix_len = self.inner.options.suffix_len;
        let read = self
            .inner
            .mirror_work
            .run(move || {
                let mut data = store::read(&store::path(&dir, id), &fp, max)?;
                let loaded = data.as_mut().map(|d| {
                    d.renormalize(&region);
                    d.index(suffix_len)
                });
                Ok::<_, DirectoryError>(data.zip(loaded))
            })
            .await;
        match read {
            Ok(Ok(Some((data, loaded)))) => {
                mirror.publish(Some(loaded), &data);
                Some(data)
            }
            Ok(Ok(None)) => None,
            Ok(Err(e)) => {
                tracing::warn!(source = id, error = %e, "ignoring the mirror file");
                None
            }
            Err(e) => {
                tracing::error!(source = id, error = %e, "loading the mirror file failed");
                None
            }
        }
    }

    fn region(&self, tenant: Id) -> Option<Box<str>> {
        Some(
            self.inner
                .mirror
                .load()
                .tenant(tenant)?
                .default_region
                .clone(),
        )
    }

    /// The source's own `max_entries`, within its share of the tenant's
    /// `directory_entries` quota: what the tenant's own entries leave of
    /// it, split evenly over the tenant's mirrored sources, so that ten of
    /// them hold no more than one would, and mirrored and own entries
    /// together no more than the quota.
    pub(super) fn max_entries(&self, tenant: Id, ldap: &LdapSource) -> usize {
        let state = self.inner.mirror.load();
        let quota = state
            .tenant(tenant)
            .map_or(self.inner.options.mirror_entry_quota, |t| {
                entry_quota(&t.settings, self.inner.options.mirror_entry_quota)
            })
            .saturating_sub(state.directory_len(tenant) as u64);
        let mirrored = self
            .inner
            .sources
            .sources_of(&state, tenant)
            .iter()
            .filter(|s| s.mirror.is_some())
            .count();
        ldap.settings()
            .max_entries
            .min(quota_share(quota, mirrored)) as usize
    }

    /// Syncs `source` until `cancel`; then, if its row is gone, disabled or
    /// live again, removes its file. `reconcile` removes it too, when it
    /// cancels the task, but a sync that was publishing then writes the
    /// file again after that: deleted sources' directories stayed on disk
    /// for good, one file per source a tenant created and deleted.
    pub(super) async fn run_source(self, source: Arc<RemoteSource>, cancel: CancellationToken) {
        use futures::FutureExt;
        // The reconcile restarts a task that ended; a panic must also be
        // told, not dropped with the task's handle.
        let synced = std::panic::AssertUnwindSafe(self.sync_source(&source, cancel))
            .catch_unwind()
            .await;
        if synced.is_err() {
            dialtone_sync::watcher::failed("ldap_mirror");
            tracing::error!(source = %source.name, "a mirror's sync task panicked; it starts again within 30 s");
            return;
        }
        let (Some(mirror), Some(dir)) = (&source.mirror, &self.inner.options.mirror_dir) else {
            return;
        };
        let state = self.inner.mirror.load();
        if !still_mirrored(&state, mirror.tenant_id, source.id) {
            store::remove(dir, source.id);
        }
    }

    async fn sync_source(&self, source: &RemoteSource, cancel: CancellationToken) {
        let (Some(mirror), Remote::Ldap(ldap)) = (&source.mirror, &source.remote) else {
            return;
        };
        let settings = ldap.settings();
        // The load waits for a place in the node's mirror work, first come
        // first served. A source edited again meanwhile has this task
        // cancelled: it must leave the queue then, not hold its built
        // source (a CA of up to 64 KiB, a TLS config) until its turn comes
        // to read a file another task reads again. A tenant editing a
        // mirrored source in a loop piled up a task a write, for good.
        let loaded = tokio::select! {
            _ = cancel.cancelled() => return,
            loaded = self.load_file(mirror, ldap) => loaded,
        };
        let mut data = loaded.unwrap_or_default();
        let millis = |s: u64| i64::try_from(s).unwrap_or(i64::MAX).saturating_mul(1000);
        let full_every = millis(settings.sync_interval_s);
        let incremental_every = millis(settings.incremental_interval_s);
        let mut failures = 0u32;
        let mut failed_at = 0i64;
        loop {
            let now = now_millis();
            if forget_future_syncs(&mut data, now) {
                // Its status said "just synced" all along.
                mirror.publish(None, &data);
            }
            failed_at = not_in_future(failed_at, now);
            // A share that shrank (another of the tenant's sources added,
            // or its quota lowered) is applied by a full sync as soon as
            // the gate allows: an incremental one caps only new entries,
            // and the next full one may be a month away, so ten sources
            // added one by one held three quotas.
            let over_share = data.entries.len() > self.max_entries(mirror.tenant_id, ldap);
            let (full, due) = match next_sync(&data, full_every, incremental_every) {
                _ if over_share => (true, 0),
                next => next,
            };
            let due = due.max(self.inner.sync_gates.open_at(mirror.tenant_id));
            let backoff = (RETRY.as_millis() as i64)
                .saturating_mul(1 << failures.min(10))
                .min(full_every);
            let due = due.max(if failures > 0 { failed_at + backoff } else { 0 });
            let wait = Duration::from_millis(due.saturating_sub(now_millis()).max(0) as u64);
            // Woken each reconcile period to see a share that shrank.
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(wait.min(RECONCILE)) => {}
            }
            if wait > RECONCILE {
                continue;
            }
            // Another of the tenant's sources may have synced meanwhile, or
            // be syncing now.
            let Some(_turn) = self.inner.sync_gates.start(mirror.tenant_id, now_millis()) else {
                continue;
            };
            let Some(region) = self.region(mirror.tenant_id) else {
                return;
            };
            let max = self.max_entries(mirror.tenant_id, ldap);
            let mut kind = if full { "full" } else { "incremental" };
            // Counted in the sync's time (and so in its spacing): a tenant
            // switching its region back and forth renormalizes every entry
            // each time.
            let started = Instant::now();
            if data.readings_stale(&region) {
                let mut taken = std::mem::take(&mut data);
                let to = region.clone();
                let renormalized = self
                    .inner
                    .mirror_work
                    .run(move || {
                        taken.renormalize(&to);
                        taken
                    })
                    .await;
                // Lost on a panic: the mirror starts again with a full sync.
                data = renormalized.unwrap_or_else(|e| {
                    tracing::error!(source = %source.name, error = %e, "renormalizing the mirror failed");
                    MirrorData {
                        region: region.clone(),
                        ..MirrorData::default()
                    }
                });
            }
            // A USN read turns full when another domain controller answers
            // (`sync::usn_mismatch`), which is decided only once the read
            // has begun: it gets a full read's time.
            let may_turn_full = matches!(
                data.watermark,
                Some(super::Watermark::Usn(_) | super::Watermark::DcUsn { .. })
            );
            let limit = if full || may_turn_full {
                MAX_FULL_SYNC
            } else {
                MAX_INCREMENTAL_SYNC
            };
            // A cancel (an edit of the source) cuts the read short, but
            // not the normalizing or merging it started, which runs to its
            // end anyway: the sync is charged to the tenant's gate for all
            // of it, or editing a source again and again would start a
            // sync each time, each holding a place for minutes.
            let result = sync_once(
                ldap,
                &self.inner.mirror_work,
                &mut data,
                full,
                max,
                limit,
                &cancel,
            )
            .await;
            let (failed, took) = match result {
                Ok(outcome) if !cancel.is_cancelled() => {
                    failures = 0;
                    mirror.set_sync_failed(false);
                    if incremental_every == 0 {
                        data.watermark = None;
                    }
                    mirror.set_error(outcome.capped.then(|| {
                        ("mirror_limit", format!("over {max} entries (max_entries or the tenant's directory_entries quota); the rest were not mirrored"))
                    }));
                    if outcome.full {
                        kind = "full";
                    }
                    let timing = SyncTiming {
                        started,
                        full: outcome.full,
                    };
                    let (published, took) =
                        self.publish(mirror, data, outcome.changed, timing).await;
                    data = published;
                    (None, took)
                }
                Ok(_) => (None, started.elapsed()),
                Err(e) => (Some(e), started.elapsed()),
            };
            // No source label: ids never repeat, so a tenant churning
            // sources would grow every node's registry for good, and
            // `/metrics` would show other tenants' directories.
            metrics::histogram!("dialtone_directory_mirror_sync_seconds", "kind" => kind)
                .record(took.as_secs_f64());
            self.inner
                .sync_gates
                .synced(mirror.tenant_id, now_millis(), took.as_millis() as u64);
            if cancel.is_cancelled() {
                return;
            }
            if let Some(e) = failed {
                failures = failures.saturating_add(1);
                failed_at = now_millis();
                metrics::counter!("dialtone_directory_mirror_sync_errors_total", "kind" => kind)
                    .increment(1);
                tracing::warn!(source = %source.name, tenant = mirror.tenant_id, kind, error = %e, "mirror sync failed");
                // Before the error, which readers wait for.
                mirror.set_sync_failed(true);
                mirror.set_error(Some((e.shown_to_tenant(), e.to_string())));
            }
        }
    }

    /// Swaps in a new index when something changed (dropping the tenant's
    /// cached answers) and rewrites the file when something changed or a
    /// full sync ran (so its time survives a restart); otherwise only the
    /// status moves on. Returns the data and the sync's duration, which
    /// takes in the file and the index: BENCHMARKS.md reports
    /// `last_full_ms` as the whole sync, and the spacing of the next one
    /// must pay for all of it.
    ///
    /// The data goes to the job and comes back, uncopied: a copy of a
    /// quota's entries (their DNs) on the runtime's workers held them up.
    async fn publish(
        &self,
        mirror: &SourceMirror,
        mut data: MirrorData,
        changed: bool,
        timing: SyncTiming,
    ) -> (MirrorData, Duration) {
        let rebuild = changed || !mirror.is_loaded();
        let dir = self
            .inner
            .options
            .mirror_dir
            .clone()
            .filter(|_| changed || timing.full);
        if !rebuild && dir.is_none() {
            let took = timing.record(&mut data);
            mirror.publish(None, &data);
            return (data, took);
        }
        let suffix_len = self.inner.options.suffix_len;
        let fp = mirror.fingerprint.clone();
        let id = mirror.source_id;
        let built = self
            .inner
            .mirror_work
            .run(move || {
                // A file cannot hold the time of its own write: it keeps
                // the time up to it, and memory the whole.
                timing.record(&mut data);
                if let Some(dir) = dir {
                    if let Err(e) = store::write(&store::path(&dir, id), &fp, &data) {
                        // Served from memory all the same; counted, since on a
                        // full disk the log line may be lost too, and the next
                        // start would sync the source again in full.
                        dialtone_sync::watcher::failed("directory_files");
                        tracing::warn!(source = id, error = %e, "writing the mirror file failed");
                    }
                }
                let loaded = rebuild.then(|| data.index(suffix_len));
                (data, loaded)
            })
            .await;
        match built {
            Ok((mut data, loaded)) => {
                let took = timing.record(&mut data);
                mirror.publish(loaded, &data);
                if changed {
                    self.invalidate_tenant(mirror.tenant_id);
                }
                (data, took)
            }
            Err(e) => {
                // Lost with the job: the next sync starts from nothing, as
                // after a panic while merging.
                tracing::error!(source = id, error = %e, "building the mirror index failed");
                (MirrorData::default(), timing.started.elapsed())
            }
        }
    }
}

/// When a sync started, and its kind: what its recorded duration is of.
#[derive(Clone, Copy)]
struct SyncTiming {
    started: Instant,
    full: bool,
}

impl SyncTiming {
    /// The sync's duration so far, recorded in `data` as its kind's.
    fn record(self, data: &mut MirrorData) -> Duration {
        let took = self.started.elapsed();
        let ms = Some(took.as_millis() as u64);
        if self.full {
            data.last_full_ms = ms;
        } else {
            data.last_incremental_ms = ms;
        }
        took
    }
}

pub(super) struct Outcome {
    pub changed: bool,
    pub capped: bool,
    /// Read in full: asked for, or the watermark did not hold.
    pub full: bool,
}

/// One sync on its own connection, closed at the end.
/// One of `sources` mirrored sources' share of a tenant's entry quota: at
/// least one entry each.
pub(super) fn quota_share(quota: u64, sources: usize) -> u64 {
    (quota / sources.max(1) as u64).max(1)
}

/// One sync: the read on its own connection (closed at the end) within
/// `limit`, then the merge, which is bounded by the entries read. The
/// limit is the read's alone: cut short while the merge held the data
/// taken out of `data`, a sync lost the mirror it had (its entries,
/// watermark and timings), and a merge may wait for a place.
#[allow(clippy::too_many_arguments)]
pub(super) async fn sync_once(
    ldap: &LdapSource,
    work: &MirrorWork,
    data: &mut MirrorData,
    full: bool,
    max: usize,
    limit: Duration,
    cancel: &CancellationToken,
) -> Result<Outcome, DirectoryError> {
    let started_at = now_millis();
    let since = if full { None } else { data.watermark.clone() };
    let read = tokio::select! {
        _ = cancel.cancelled() => {
            return Err(DirectoryError::Ldap("the source changed during its sync".into()))
        }
        read = tokio::time::timeout(limit, read_source(ldap, since, max)) => read,
    };
    let (root, since, read) = read.unwrap_or_else(|_| {
        Err(DirectoryError::MirrorLimit(format!(
            "took over {} s",
            limit.as_secs()
        )))
    })?;
    // Read in full when the watermark did not hold on this server (another
    // DC's USN, `sync::usn_mismatch`): the entries are replaced.
    let full = since.is_none();
    let Read {
        entries,
        capped,
        newest,
    } = read;
    let region = data.region.clone();
    let outcome = if full {
        // Compared (and the old entries freed) on the job's thread: two
        // quotas of entries, deep. Lost on a panic, with the rest of the
        // data, as a merge's are: the next sync is a full one.
        let old = std::mem::take(&mut data.entries);
        let (entries, changed) = work
            .run(move || {
                let entries = from_full(entries, &region);
                let changed = entries != old;
                drop(old);
                (entries, changed)
            })
            .await
            .map_err(|e| {
                *data = MirrorData::default();
                DirectoryError::Ldap(format!("normalizing: {e}"))
            })?;
        data.entries = entries;
        data.last_full_sync = Some(started_at);
        data.watermark = root.watermark(newest);
        Outcome {
            changed,
            capped,
            full,
        }
    } else {
        let mut taken = std::mem::take(data);
        let (back, changed, merge_capped) = work
            .run(move || {
                let (changed, capped) = merge(&mut taken, entries, max);
                (taken, changed, capped)
            })
            .await
            .map_err(|e| DirectoryError::Ldap(format!("merging: {e}")))?;
        *data = back;
        data.last_incremental_sync = Some(started_at);
        // A read cut short at the cap has not seen every change: start the
        // next one where this one started.
        if !capped {
            data.watermark = since.map(|since| root.watermark_after(since, newest));
        }
        Outcome {
            changed,
            capped: capped || merge_capped,
            full,
        }
    };
    Ok(outcome)
}

/// The directory's root DSE (its change counter and DC, if any) and the
/// entries the source's filter finds, or those changed `since` if that
/// holds on this server; with the watermark the read started from.
async fn read_source(
    ldap: &LdapSource,
    since: Option<Watermark>,
    max: usize,
) -> Result<(RootDse, Option<Watermark>, Read), DirectoryError> {
    let settings = ldap.settings();
    let mut conn = ldap
        .open(OP_TIMEOUT, super::sync::search_bounds(max))
        .await?;
    // Read before the search: a change made during it is read again next
    // time rather than missed. A root DSE that cannot be read means full
    // syncs only.
    let root = match root_dse(&mut conn, OP_TIMEOUT).await {
        Ok(root) => root,
        // Not merely unreadable: a server that floods its root DSE would
        // flood the search too.
        Err(e @ DirectoryError::MirrorLimit(_)) => {
            let _ = conn.unbind().await;
            return Err(e);
        }
        Err(e) => {
            tracing::debug!(source = ldap.name(), error = %e, "no root DSE");
            RootDse::default()
        }
    };
    let since = since_on_this_server(ldap.name(), since, &root);
    let search = filter(
        settings.filter.as_deref(),
        &settings.number_attributes,
        since.as_ref(),
    );
    let limits = Limits {
        max_entries: max,
        page_size: settings.page_size,
        op_timeout: OP_TIMEOUT,
    };
    let read = read_all(ldap, &mut conn, &search, limits).await;
    let _ = conn.unbind().await;
    Ok((root, since, read?))
}

#[cfg(test)]
#[path = "publish_timing_tests.rs"]
mod publish_timing_tests;

#[cfg(test)]
#[path = "gates_tests.rs"]
mod gates_tests;
