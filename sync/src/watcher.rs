//! Keeps the mirror current. Woken by the backend's notifier (LISTEN/NOTIFY,
//! or SQLite's data_version and our own commits) and by a periodic poll that
//! doubles as a heartbeat; either way it catches up by cursor, so a lost
//! notification costs latency, never data.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::error::SyncError;
use crate::mirror::{LoadedFrom, Mirror};
use crate::store::{Notifier, Store};

#[derive(Clone, Debug)]
pub struct WatchOptions {
    /// Catch up at least this often even without a notification.
    pub poll_interval: Duration,
    /// Longest wait between attempts to rebuild a failed listener.
    pub max_backoff: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            poll_interval: Duration::from_secs(5),
            max_backoff: Duration::from_secs(10),
        }
    }
}

/// Loads the mirror from the database (cold start or forced reload).
pub async fn full_load(mirror: &Mirror, store: &dyn Store) -> Result<(), SyncError> {
    let started = std::time::Instant::now();
    let (data, cursor, meta) = store.load_all().await?;
    let rows = data.row_count();
    mirror.reset(data, cursor, meta, LoadedFrom::Database);
    tracing::info!(rows, %cursor, elapsed_ms = started.elapsed().as_millis() as u64, "mirror loaded from the database");
    Ok(())
}

/// Brings the mirror up to date with the change log. Returns how many rows
/// changed in the mirror.
/// Safe to call from anywhere (the admin API calls it after a write, to
/// read its own write): catch-ups take turns.
pub async fn catch_up(mirror: &Mirror, store: &dyn Store) -> Result<usize, SyncError> {
    let _turn = mirror.lock_catch_up().await;
    let state = mirror.load();
    let batch = store.changes_since(state.cursor()).await?;
    let reason = if batch.meta.database_id != state.meta().database_id {
        Some("the database is not the one the mirror was loaded from")
    } else if batch.meta.epoch != state.meta().epoch {
        Some("schema epoch changed")
    } else if batch.meta.pruned_through > state.cursor() {
        Some("change log pruned past our cursor")
    } else if batch.too_far_behind {
        Some("too far behind to catch up row by row")
    } else {
        None
    };
    if let Some(reason) = reason {
        tracing::info!(reason, cursor = %state.cursor(), "full reload");
        full_load(mirror, store).await?;
        return Ok(mirror.load().counts().phones);
    }
    Ok(mirror.apply(batch.changes, batch.next_cursor, batch.meta))
}

/// The watcher loop. Runs until `cancel`; never returns an error, because a
/// database outage is a state to report, not a reason to stop.
pub async fn run(
    mirror: Arc<Mirror>,
    store: Arc<dyn Store>,
    options: WatchOptions,
    cancel: CancellationToken,
) {
    let mut notifier: Option<Box<dyn Notifier>> = None;
    let mut backoff = Duration::from_millis(100);
    let mut next_listener_attempt = tokio::time::Instant::now();
    loop {
        if notifier.is_none() && tokio::time::Instant::now() >= next_listener_attempt {
            match store.notifier().await {
                Ok(n) => {
                    notifier = Some(n);
                    backoff = Duration::from_millis(100);
                }
                Err(e) => {
                    // Once per outage at warn; the mirror's health carries it after that.
                    if backoff == Duration::from_millis(100) {
                        tracing::warn!(error = %e, "change listener unavailable; retrying with backoff");
                    } else {
                        tracing::debug!(error = %e, retry_in_ms = backoff.as_millis() as u64, "change listener unavailable");
                    }
                    next_listener_attempt = tokio::time::Instant::now() + backoff;
                    backoff = (backoff * 2).min(options.max_backoff);
                }
            }
        }
        // Catch up after every wake, including right after a (re)connect:
        // whatever happened while the listener was down is in the log.
        let caught_up = if mirror.is_loaded() {
            catch_up(&mirror, &*store).await.map(|_| ())
        } else {
            full_load(&mirror, &*store).await
        };
        match caught_up {
            Ok(()) => mirror.mark_synced(),
            Err(e) => mirror.mark_unreachable(&e.to_string()),
        }

        let poll = if notifier.is_some() {
            options.poll_interval
        } else {
            // Without a listener, poll at the listener's retry pace.
            options
                .poll_interval
                .min(backoff.max(Duration::from_millis(250)))
        };
        let woke = tokio::select! {
            _ = cancel.cancelled() => break,
            result = wait(&mut notifier) => result,
            _ = tokio::time::sleep(poll) => Ok(()),
        };
        if let Err(e) = woke {
            tracing::warn!(error = %e, "change listener failed; rebuilding it");
            notifier = None;
        }
    }
    tracing::debug!("watcher stopped");
}

async fn wait(notifier: &mut Option<Box<dyn Notifier>>) -> Result<(), SyncError> {
    match notifier {
        Some(n) => n.wait().await,
        None => std::future::pending().await,
    }
}

/// Periodically bounds the change log and the boot history.
pub async fn run_pruner(
    store: Arc<dyn Store>,
    interval: Duration,
    retain: Duration,
    max_rows: i64,
    history_retain: Duration,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(interval) => {}
        }
        match store.prune_change_log(retain, max_rows).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(rows = n, "pruned change log"),
            Err(e) => tracing::warn!(error = %e, "pruning the change log failed"),
        }
        if let Err(e) = store.prune_boots(history_retain).await {
            tracing::warn!(error = %e, "pruning provisioning history failed");
        }
    }
}
