//! A sync's result made current: the index swapped in and the file
//! written, both on the node's mirror work, and the sync's duration
//! recorded with all of that in it.

use std::time::Duration;

use tokio::time::Instant;

use super::{store, MirrorData, SourceMirror};
use crate::service::LookupService;

impl LookupService {
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
    pub(super) async fn publish(
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
        let (tenant, id) = (mirror.tenant_id, mirror.source_id);
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
                        tracing::warn!(tenant, source_id = id, error = %e, "writing the mirror file failed");
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
                tracing::error!(tenant, source_id = id, error = %e, "building the mirror index failed");
                (MirrorData::default(), timing.started.elapsed())
            }
        }
    }
}

/// When a sync started, and its kind: what its recorded duration is of.
#[derive(Clone, Copy)]
pub(super) struct SyncTiming {
    pub(super) started: Instant,
    pub(super) full: bool,
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

#[cfg(test)]
#[path = "publish_timing_tests.rs"]
mod publish_timing_tests;
