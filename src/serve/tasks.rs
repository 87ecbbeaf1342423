//! The supervised background tasks of `serve`: the change listener and the
//! mirror watcher, the change-log pruner, the snapshot writer, the cache
//! invalidators and the render self-check, metrics upkeep, and the two
//! writers of what provisioning records (history, unclaimed devices).

use std::sync::Arc;
use std::time::Duration;

use dialtone_directory::LookupService;
use dialtone_sync::history::HistoryWriter;
use dialtone_sync::unclaimed::UnclaimedWriter;
use dialtone_sync::{snapshot, watcher, Mirror, Store};
use dialtone_tftp::Provisioner;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::startup::DATABASE_STANDBY;
use crate::config::Config;
use crate::supervise::Supervisor;

/// What the tasks work on.
pub(super) struct Parts<'a> {
    pub history_writer: HistoryWriter,
    pub unclaimed_writer: UnclaimedWriter,
    /// Stops the two writers; the drain cancels it once the listeners have
    /// stopped, so what they record while draining is written.
    pub writers_stop: &'a CancellationToken,
    pub config: &'a Config,
    pub store: &'a Arc<dyn Store>,
    pub mirror: &'a Arc<Mirror>,
    pub provisioner: &'a Arc<Provisioner>,
    pub lookups: &'a LookupService,
    /// The recorder, installed before the mirror's first load ([`recorder`]).
    pub metrics: Option<PrometheusHandle>,
}

/// The metrics recorder, installed before anything records: what the
/// mirror's first load counts (a large read on one connection, which the
/// connections-short alert watches for) was lost when it came later.
pub(super) fn recorder() -> Option<PrometheusHandle> {
    match crate::prometheus::install() {
        Ok(handle) => Some(handle),
        Err(e) => {
            tracing::warn!(error = %e, "metrics recorder not installed; /metrics is off");
            None
        }
    }
}

/// Starts every background task; returns the metrics handle when the
/// recorder could be installed.
pub(super) fn spawn(
    parts: Parts<'_>,
    supervisor: &Supervisor,
    tracker: &TaskTracker,
    cancel: &CancellationToken,
) -> Option<PrometheusHandle> {
    let Parts {
        history_writer,
        unclaimed_writer,
        writers_stop,
        config,
        store,
        mirror,
        provisioner,
        lookups,
        metrics,
    } = parts;
    if let Some(handle) = &metrics {
        let (h, cancel2) = (handle.clone(), cancel.clone());
        supervisor.spawn("metrics-upkeep", move || {
            crate::prometheus::upkeep(h.clone(), cancel2.clone())
        });
    }
    {
        // A writer contains a panic in a batch's write itself and goes on;
        // a restart is for anything else. Its clones share one queue, so a
        // restarted run resumes on it. The writers outlive the node's
        // cancel: the listeners still answer (and record) what was in
        // flight, so they stop on their own token, and their last batch
        // gets the drain's grace period, a database that does not answer
        // costing that batch, not the shutdown.
        let final_limit = super::drain::final_write_limit(config);
        let stop = writers_stop.clone();
        supervisor.spawn_until("history-writer", stop.clone(), move || {
            history_writer.clone().run(stop.clone(), final_limit)
        });
        let stop = writers_stop.clone();
        supervisor.spawn_until("unclaimed-writer", stop.clone(), move || {
            unclaimed_writer.clone().run(stop.clone(), final_limit)
        });
    }
    {
        // Two tasks: the change listener holds a database connection and
        // fails when it drops (restarted; counted toward `degraded` unless
        // the database is unreachable, which the watcher reports as
        // staleness); the watcher catches up on each wake and polls
        // regardless, so it never waits on the listener's recovery.
        // A standby refuses the listener: a node already checked meets one
        // when its database is demoted under it (a failover half done), and
        // only the listener sees it before an admin write is refused.
        // `/readyz` names it until a listener is in place again or the
        // database stops answering (then an outage, said as staleness).
        let wake = Arc::new(tokio::sync::Notify::new());
        let (store2, wake2, cancel2) = (store.clone(), wake.clone(), cancel.clone());
        let holder = supervisor.clone();
        supervisor.spawn("change-listener", move || {
            let (store, wake, cancel, holder) =
                (store2.clone(), wake2.clone(), cancel2.clone(), holder.clone());
            async move {
                let listening = || {
                    if holder.hold(DATABASE_STANDBY, false) {
                        tracing::info!("the database takes the change listener again: no longer a standby");
                    }
                };
                let end = watcher::listen(store, wake, cancel, listening).await;
                match end {
                    watcher::ListenEnd::Standby => {
                        if holder.hold(DATABASE_STANDBY, true) {
                            tracing::warn!(
                                "the database answers as a standby in recovery (it refused the change \
                                 listener); serving on, the mirror polled, admin writes refused, until \
                                 it is a primary"
                            );
                        }
                    }
                    watcher::ListenEnd::Unreachable => {
                        holder.hold(DATABASE_STANDBY, false);
                    }
                    watcher::ListenEnd::Cancelled | watcher::ListenEnd::Failed => {}
                }
                end
            }
        });
        let (mirror, store, cancel2) = (mirror.clone(), store.clone(), cancel.clone());
        let options = watcher::WatchOptions {
            poll_interval: Duration::from_millis(config.mirror.poll_interval_ms),
            ..Default::default()
        };
        supervisor.spawn("mirror-watcher", move || {
            watcher::run_woken(
                mirror.clone(),
                store.clone(),
                options.clone(),
                wake.clone(),
                cancel2.clone(),
            )
        });
    }
    {
        let (store, cancel2, m) = (store.clone(), cancel.clone(), config.mirror.clone());
        supervisor.spawn("change-log-pruner", move || {
            watcher::run_pruner(
                store.clone(),
                Duration::from_secs(m.prune_interval_s.max(1)),
                watcher::Retention {
                    change_log: Duration::from_secs(m.change_log_retention_s),
                    change_log_max_rows: m.change_log_max_rows,
                    boots: Duration::from_secs(m.history_retention_days.saturating_mul(86_400)),
                    audit: Duration::from_secs(m.audit_retention_days.saturating_mul(86_400)),
                },
                cancel2.clone(),
            )
        });
    }
    if config.mirror.snapshot_interval_s > 0 {
        let (mirror, path, cancel2) = (mirror.clone(), config.snapshot_path(), cancel.clone());
        let source = snapshot::source_id(&config.database.url);
        let interval = Duration::from_secs(config.mirror.snapshot_interval_s);
        supervisor.spawn("snapshot-writer", move || {
            snapshot::run_writer(
                mirror.clone(),
                path.clone(),
                source.clone(),
                interval,
                cancel2.clone(),
            )
        });
    }
    {
        let (provisioner, mirror, cancel2) = (provisioner.clone(), mirror.clone(), cancel.clone());
        supervisor.spawn("render-cache-invalidator", move || {
            provisioner
                .clone()
                .follow(mirror.subscribe(), cancel2.clone().cancelled_owned())
        });
    }
    {
        let (provisioner, cancel2) = (provisioner.clone(), cancel.clone());
        let per_second = config.provisioning.render_self_check_per_s;
        supervisor.spawn("render-self-check", move || {
            provisioner
                .clone()
                .run_self_check(per_second, cancel2.clone().cancelled_owned())
        });
    }
    {
        // Each mirrored LDAP source's sync runs as its own tracked task,
        // cancelled with the node (or when its row changes).
        let (lookups, tracker2, cancel2) = (lookups.clone(), tracker.clone(), cancel.clone());
        supervisor.spawn("ldap-mirrors", move || {
            lookups
                .clone()
                .run_mirrors(tracker2.clone(), cancel2.clone())
        });
    }
    {
        // Not supervised: it runs once, and a build that panics is
        // contained by its blocking task (the tenant's next lookup builds
        // again).
        let (lookups, cancel2) = (lookups.clone(), cancel.clone());
        tracker.spawn(async move { lookups.warm_directories(cancel2).await });
    }
    {
        let (lookups, cancel2) = (lookups.clone(), cancel.clone());
        supervisor.spawn("lookup-cache-invalidator", move || {
            lookups.clone().follow(cancel2.clone().cancelled_owned())
        });
    }
    metrics
}
