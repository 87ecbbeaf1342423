//! One mirrored source's sync task: the source's file loaded, then a sync
//! each time one is due and its tenant's gate lets it start, within the
//! source's share of the tenant's entry quota.

use std::sync::Arc;
use std::time::Duration;

use dialtone_sync::{now_millis, Id};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::leftovers::still_mirrored;
use super::one_sync::sync_once;
use super::publish::SyncTiming;
use super::schedule::{forget_future_syncs, next_sync, not_in_future};
use super::tasks::RECONCILE;
use super::{entry_quota, store, MirrorData, SourceMirror};
use crate::error::DirectoryError;
use crate::ldap::LdapSource;
use crate::service::LookupService;
use crate::sources::{Remote, RemoteSource};

/// A whole sync at most, whatever the server does.
const MAX_FULL_SYNC: Duration = Duration::from_secs(15 * 60);
const MAX_INCREMENTAL_SYNC: Duration = Duration::from_secs(5 * 60);
/// First wait after a failed sync; doubles up to the full-sync interval.
const RETRY: Duration = Duration::from_secs(30);

impl LookupService {
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
                tracing::warn!(tenant = mirror.tenant_id, source_id = id, error = %e, "ignoring the mirror file");
                None
            }
            Err(e) => {
                tracing::error!(tenant = mirror.tenant_id, source_id = id, error = %e, "loading the mirror file failed");
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
            tracing::error!(tenant = source.tenant_id, source_id = source.id, source = ?source.name, "a mirror's sync task panicked; it starts again within 30 s");
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
        let mut data = super::FreedOffWorker(loaded.unwrap_or_default());
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
                let mut taken = std::mem::take(&mut *data);
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
                *data = renormalized.unwrap_or_else(|e| {
                    tracing::error!(tenant = source.tenant_id, source_id = source.id, source = ?source.name, error = &*e.to_string(), "renormalizing the mirror failed");
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
                    let (published, took) = self
                        .publish(mirror, std::mem::take(&mut *data), outcome.changed, timing)
                        .await;
                    *data = published;
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
                tracing::warn!(tenant = source.tenant_id, source_id = source.id, source = ?source.name, kind, error = &*e.to_string(), "mirror sync failed");
                // Before the error, which readers wait for.
                mirror.set_sync_failed(true);
                mirror.set_error(Some((e.shown_to_tenant(), e.to_string())));
            }
        }
    }
}

/// One of `sources` mirrored sources' share of a tenant's entry quota: at
/// least one entry each.
pub(super) fn quota_share(quota: u64, sources: usize) -> u64 {
    (quota / sources.max(1) as u64).max(1)
}
