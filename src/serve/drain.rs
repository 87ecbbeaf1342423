//! The drain after SIGTERM/SIGINT: listeners, then the writers of what
//! they recorded, then the final snapshot, within a budget systemd is told.

use std::sync::Arc;
use std::time::Duration;

use dialtone_sync::{snapshot, Mirror, Store};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::signals::notify_systemd;
use super::Listeners;
use crate::config::Config;

/// How long the history and unclaimed-devices writers may take over their
/// last batch: the drain's grace period.
pub(super) fn final_write_limit(config: &Config) -> Duration {
    Duration::from_secs(config.http.shutdown_grace_s)
}

/// The longest a drain takes: the listeners' grace period, the writers'
/// last batch, the final snapshot (a million phones is written in a few
/// seconds) and the wait for database connections. systemd hears it with STOPPING=1, so a grace period
/// raised past the unit's `TimeoutStopSec` does not end in a SIGKILL that
/// loses the snapshot.
fn drain_budget(config: &Config) -> Duration {
    let grace = Duration::from_secs(config.http.shutdown_grace_s);
    grace
        + TFTP_CUT_WAIT
        + grace.max(final_write_limit(config))
        + Duration::from_secs(1)
        + SNAPSHOT_ALLOWANCE
        + STORE_CLOSE_WAIT
}

const SNAPSHOT_ALLOWANCE: Duration = Duration::from_secs(15);

/// How long past the grace period the TFTP thread is waited for: at its
/// end the server tells each client still in a transfer that it is cut,
/// which takes it up to a second more.
const TFTP_CUT_WAIT: Duration = Duration::from_secs(1);

/// Listeners first (they refuse new work and let what runs finish within
/// the grace period), then the writers of what they recorded, with the
/// other background tasks, then the final snapshot.
pub(super) async fn drain(
    config: &Config,
    listeners: Listeners,
    writers_stop: CancellationToken,
    tracker: TaskTracker,
    mirror: &Arc<Mirror>,
    store: &dyn Store,
) {
    tracing::info!("shutting down");
    let budget = u32::try_from(drain_budget(config).as_micros()).unwrap_or(u32::MAX);
    notify_systemd(&[
        sd_notify::NotifyState::Stopping,
        sd_notify::NotifyState::Status("draining"),
        sd_notify::NotifyState::ExtendTimeoutUsec(budget),
    ]);
    let grace = Duration::from_secs(config.http.shutdown_grace_s);
    // Every listener began draining at the same cancel, so they share one
    // deadline: a grace period each, one after another, would let three
    // slow listeners and the writers' last batch outlast the unit's
    // `TimeoutStopSec` (30 s), and systemd's SIGKILL would lose the
    // snapshot.
    let listeners_done = tokio::time::Instant::now() + grace;
    for (name, task) in listeners.http {
        match tokio::time::timeout_at(listeners_done, task).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(listener = name, error = %e, "HTTP server task failed"),
            Err(_) => tracing::warn!(
                listener = name,
                "in-flight requests did not finish within the grace period"
            ),
        }
    }
    if let Some(tftp) = listeners.tftp {
        // Refuses new requests at once (an error packet) and lets running
        // transfers finish within their grace period. A thread that has
        // not ended by then is stuck (in a read the kernel does not give
        // back): it is left behind, as the snapshot is worth more.
        match tokio::time::timeout_at(listeners_done + TFTP_CUT_WAIT, tftp).await {
            Ok(Ok(Ok(Ok(())))) => {}
            Ok(Ok(Ok(Err(e)))) => tracing::warn!(error = %e, "TFTP server error"),
            Ok(_) => tracing::warn!("TFTP server thread failed"),
            Err(_) => tracing::warn!(
                "the TFTP server did not stop within the grace period; going on without it"
            ),
        }
    }
    // Nothing records any more (a request still running past its grace
    // period may, and its records are dropped as `shutdown`).
    writers_stop.cancel();
    tracker.close();
    // Longer than the writers' own bound, so that a last batch the
    // database did not take is dropped, counted and logged by its writer,
    // not cut off unseen by the exit.
    let wait = grace.max(final_write_limit(config)) + Duration::from_secs(1);
    if tokio::time::timeout(wait, tracker.wait()).await.is_err() {
        tracing::warn!("background tasks did not stop within the grace period");
    }
    if mirror.is_loaded() {
        let (m, path) = (mirror.clone(), config.snapshot_path());
        let source = snapshot::source_id(&config.database.url);
        let written = path.clone();
        // Bounded here too, not only in what systemd is told: a hung disk
        // held the exit until SIGKILL, and the log's last lines with it. A
        // write cut off leaves its temporary file, never a half snapshot.
        let writing = tokio::task::spawn_blocking(move || snapshot::write(&m, &path, &source));
        match tokio::time::timeout(SNAPSHOT_ALLOWANCE, writing).await {
            Err(_) => final_snapshot_failed(
                config,
                "the final snapshot was not written in time; exiting without it",
                &format!("{} s", SNAPSHOT_ALLOWANCE.as_secs()),
            ),
            Ok(Ok(Ok(h))) => {
                tracing::info!(cursor = %h.cursor, path = %written.display(), "snapshot written")
            }
            // An error, not a warning: the next start has no snapshot to
            // serve from while the database is down, or an older one. The
            // exit stays 0, the drain having done all else: systemd counts
            // a stop's non-zero exit as the unit failing.
            Ok(Ok(Err(e))) => {
                final_snapshot_failed(config, "writing the final snapshot failed", &e)
            }
            Ok(Err(e)) => final_snapshot_failed(config, "the final snapshot's task failed", &e),
        }
    }
    // sqlx's close waits for every connection lent out to come back, and
    // one a stuck query holds (or one whose return pings a database that
    // no longer answers) would keep the process until TCP gives up.
    if tokio::time::timeout(STORE_CLOSE_WAIT, store.close())
        .await
        .is_err()
    {
        tracing::warn!(
            wait_s = STORE_CLOSE_WAIT.as_secs(),
            "database connections were still in use; exiting without them"
        );
    }
}

/// Counted as the periodic writer's failures are, and said on stderr too
/// when the log goes to a file: the stop is where an operator looks, and
/// with `snapshot_interval_s = 0` this write is the only one.
fn final_snapshot_failed(config: &Config, what: &str, e: &dyn std::fmt::Display) {
    dialtone_sync::watcher::failed("snapshot");
    tracing::error!(error = %e, "{what}");
    if config.log.file.is_some() {
        eprintln!("dialtone: {what}: {e}");
    }
}

/// How long the exit waits for database connections to come back.
const STORE_CLOSE_WAIT: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::test_support::{start_on_empty_sqlite, Started};

    /// A TFTP thread that never ends (stuck in a read) holds the drain no
    /// longer than the grace period: the final snapshot is still written.
    #[tokio::test]
    async fn a_tftp_thread_that_never_ends_does_not_hold_the_drain() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.http.shutdown_grace_s = 1;
        config.mirror.snapshot_path = Some(dir.path().join("final.snapshot"));
        let Started { store, mirror, .. } = start_on_empty_sqlite(&mut config, dir.path()).await;
        let stuck = tokio::spawn(std::future::pending::<
            std::thread::Result<std::io::Result<()>>,
        >());
        let listeners = Listeners {
            http: Vec::new(),
            tftp: Some(stuck),
        };
        let drained = drain(
            &config,
            listeners,
            CancellationToken::new(),
            TaskTracker::new(),
            &mirror,
            &*store,
        );
        // Far past the grace period and the cut's second, short of never.
        let limit = Duration::from_secs(30);
        assert!(
            tokio::time::timeout(limit, drained).await.is_ok(),
            "the drain waited for the TFTP thread"
        );
        assert!(config.snapshot_path().exists(), "no final snapshot");
    }

    /// A final snapshot that cannot be written counts as the periodic
    /// writer's failures do; the exit stays the drain's (0).
    #[tokio::test]
    async fn a_final_snapshot_not_written_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.http.shutdown_grace_s = 1;
        config.mirror.snapshot_path = Some(dir.path().join("gone").join("final.snapshot"));
        let Started { store, mirror, .. } = start_on_empty_sqlite(&mut config, dir.path()).await;
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        // This test's runtime has one thread: the drain counts on it.
        let _local = metrics::set_default_local_recorder(&recorder);
        let listeners = Listeners {
            http: Vec::new(),
            tftp: None,
        };
        drain(
            &config,
            listeners,
            CancellationToken::new(),
            TaskTracker::new(),
            &mirror,
            &*store,
        )
        .await;
        let counted = handle.render();
        assert!(
            counted.contains("dialtone_background_failures_total{task=\"snapshot\"} 1"),
            "{counted}"
        );
    }
}
