//! The sync tasks: one per mirrored source, following the source's row.
//! A changed row builds a new source (`sources.rs`) with a new, empty
//! mirror; its old task is cancelled and a new one starts, which loads
//! the file if the settings it was read with are still the source's.
//! Here, the supervisor that starts and cancels them (`run_mirrors`) and
//! their status for the admin API; one task's run is `source_task.rs`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use dialtone_sync::{now_millis, Entity, Id, MirrorState};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::gates::SYNC_SPACING;
use super::leftovers::still_mirrored;
use super::store;
use crate::service::LookupService;
use crate::sources::{Remote, RemoteSource};

/// Running tasks are checked (and dead ones restarted) at least this often.
pub(super) const RECONCILE: Duration = Duration::from_secs(30);

pub(super) struct Running {
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

    pub(super) fn reconcile(
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
}
