//! Keeps the mirror current. Woken by the backend's notifier (LISTEN/NOTIFY,
//! or SQLite's data_version and our own commits) and by a periodic poll that
//! doubles as a heartbeat; either way it catches up by cursor, so a lost
//! notification costs latency, never data.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::error::SyncError;
use crate::mirror::{LoadedFrom, Mirror};
use crate::model::{Cursor, Meta};
use crate::store::{Backend, ChangeBatch, Store};

#[derive(Clone, Debug)]
pub struct WatchOptions {
    /// Catch up at least this often even without a notification.
    pub poll_interval: Duration,
    /// Longest wait between attempts to rebuild a failed listener.
    pub max_backoff: Duration,
    /// Longest one catch-up or full load may take. A query that never
    /// returns (a lock held by someone, a connection gone silent with no
    /// keepalive) would otherwise freeze the mirror while the node reports
    /// itself current; past this it is an outage like any other.
    pub catch_up_limit: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            poll_interval: Duration::from_secs(5),
            max_backoff: Duration::from_secs(10),
            catch_up_limit: Duration::from_secs(120),
        }
    }
}

/// Loads the mirror from the database (cold start or forced reload).
pub async fn full_load(mirror: &Mirror, store: &dyn Store) -> Result<(), SyncError> {
    let started = std::time::Instant::now();
    let (loading, cursor, meta) = store.load_tables().await?;
    let rows = loading.row_count();
    mirror.reset_loaded(loading, cursor, meta, LoadedFrom::Database);
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
    let mut batch = store
        .changes_since(state.cursor(), state.seen_above())
        .await?;
    if let Some(reason) = reload_reason(state.meta(), state.cursor(), &batch) {
        tracing::info!(reason, cursor = %state.cursor(), "full reload");
        full_load(mirror, store).await?;
        return Ok(mirror.load().counts().phones);
    }
    // A read that could not tell the timeline keeps the one known, which
    // the next read that can is compared with; one it adopted instead
    // would pass a failover made meanwhile.
    if batch.meta.timeline.is_none() {
        batch.meta.timeline = state.meta().timeline;
    }
    let rows = batch.changes.len();
    let apply = move || {
        mirror.apply_read(
            batch.changes,
            batch.next_cursor,
            batch.seen_above,
            batch.meta,
        )
    };
    Ok(if rows >= APPLY_OFF_THE_WORKER_ROWS {
        crate::blocking::blocking_here(apply)
    } else {
        apply()
    })
}

/// Why a catch-up that read `batch` for a mirror at `meta` and `cursor`
/// must reload in full instead of applying it, if it must.
fn reload_reason(meta: &Meta, cursor: Cursor, batch: &ChangeBatch) -> Option<&'static str> {
    // A timeline unknown on either side (SQLite, a snapshot older than
    // format 6, a read that failed) is no evidence: the mirror adopts the
    // batch's as it applies it.
    let timeline_changed = matches!(
        (meta.timeline, batch.meta.timeline),
        (Some(had), Some(now)) if had != now
    );
    if batch.meta.database_id != meta.database_id {
        Some("the database is not the one the mirror was loaded from")
    } else if timeline_changed {
        Some("the database's timeline changed (a failover or restore); reloading in full")
    } else if batch.meta.epoch != meta.epoch {
        Some("schema epoch changed")
    } else if batch.meta.pruned_through > cursor {
        Some("change log pruned past our cursor")
    } else if batch.rewound {
        Some("the change log is behind this node's cursor: the database is an older copy (a restored backup?)")
    } else if batch.too_far_behind {
        Some("too far behind to catch up row by row")
    } else {
        None
    }
}

/// A catch-up of this many rows or more is applied with the worker's other
/// tasks moved elsewhere first. Applying is synchronous, and copies each
/// shard the batch touches: on a table of 1,000,000 rows, 1,000 changed
/// rows took 52 ms (every shard copied) and 100,000 (`max_catch_up_rows`)
/// 278 ms, while the lookups, fetches and health checks queued on that
/// worker waited. A few rows copy a few shards, less than moving the
/// tasks costs.
const APPLY_OFF_THE_WORKER_ROWS: usize = 64;

/// The watcher loop with its own change listener, rebuilt after failures:
/// for tools and tests. `serve` runs [`listen`] and [`run_woken`] as two
/// supervised tasks instead, so listener failures are counted.
pub async fn run(
    mirror: Arc<Mirror>,
    store: Arc<dyn Store>,
    options: WatchOptions,
    cancel: CancellationToken,
) {
    let wake = Arc::new(Notify::new());
    let listener = {
        let (store, wake, cancel) = (store.clone(), wake.clone(), cancel.clone());
        let max_backoff = options.max_backoff;
        async move {
            let mut backoff = Duration::from_millis(100);
            while !cancel.is_cancelled() {
                let started = tokio::time::Instant::now();
                let _ = listen(store.clone(), wake.clone(), cancel.clone(), || {}).await;
                if started.elapsed() > Duration::from_secs(30) {
                    backoff = Duration::from_millis(100);
                }
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(max_backoff);
            }
        }
    };
    tokio::join!(listener, run_woken(mirror, store, options, wake, cancel));
}

/// Why [`listen`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListenEnd {
    Cancelled,
    /// The listener failed while the database could be reached (its
    /// connection was killed, LISTEN was refused): a fault of its own.
    Failed,
    /// The database could not be reached: an outage, which the watcher
    /// reports as staleness, and no fault of the listener's.
    Unreachable,
    /// The database answers as a standby in recovery, which refuses
    /// `LISTEN` (a failover half done): no fault of the listener's either;
    /// the watcher's polls keep the mirror current meanwhile.
    Standby,
}

/// Holds the change listener (PostgreSQL LISTEN, SQLite's file watch) and
/// wakes the watcher on each notification. Returns when the listener fails
/// (after logging why) or on `cancel`; its supervisor restarts it. A
/// PostgreSQL listener also fails when it stops hearing its own heartbeat
/// (`store/postgres/notifier.rs`): a connection gone silent is given up
/// within seconds, not kept for ever. `listening` is called once the
/// listener is in place: a standby its last run met is no longer one.
pub async fn listen(
    store: Arc<dyn Store>,
    wake: Arc<Notify>,
    cancel: CancellationToken,
    listening: impl FnOnce(),
) -> ListenEnd {
    let mut notifier = match store.notifier().await {
        Ok(n) => n,
        // Said by the caller when it begins, not at every try: a failover
        // left half done can last hours.
        Err(e) if e.is_read_only() => {
            tracing::debug!(error = %e, "change listener refused by a standby");
            return ListenEnd::Standby;
        }
        Err(e) => {
            tracing::warn!(error = %e, "change listener unavailable");
            return if e.is_transient() {
                ListenEnd::Unreachable
            } else {
                ListenEnd::Failed
            };
        }
    };
    listening();
    // Whatever happened while the listener was down is in the log.
    wake.notify_one();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return ListenEnd::Cancelled,
            woke = notifier.wait() => match woke {
                Ok(()) => wake.notify_one(),
                Err(e) => {
                    tracing::warn!(error = %e, "change listener failed");
                    // The watcher's next catch-up notices an outage now, not
                    // at its next poll.
                    wake.notify_one();
                    break;
                }
            },
        }
    }
    // A lost connection reads the same whether the database went away or
    // only this connection did; a fresh one tells them apart.
    match store.ping().await {
        Err(e) if e.is_transient() => ListenEnd::Unreachable,
        _ => ListenEnd::Failed,
    }
}

/// The watcher loop: catches up on every wake from [`listen`], and polls
/// every `poll_interval` whether or not a listener runs. Never returns an
/// error before `cancel`, because a database outage is a state to report,
/// not a reason to stop.
pub async fn run_woken(
    mirror: Arc<Mirror>,
    store: Arc<dyn Store>,
    options: WatchOptions,
    wake: Arc<Notify>,
    cancel: CancellationToken,
) {
    loop {
        let attempt = async {
            if mirror.is_loaded() {
                catch_up(&mirror, &*store).await.map(|_| ())
            } else {
                full_load(&mirror, &*store).await
            }
        };
        // A catch-up that panics (a row `apply` cannot take, say) would end
        // this task before marking anything, and every restart panic the
        // same way: the node would look current, and ready past
        // `max_staleness_s`, while its mirror stood still. So it counts as
        // the database being unreachable, and the panic goes on to the
        // supervisor.
        let attempt =
            std::panic::AssertUnwindSafe(tokio::time::timeout(options.catch_up_limit, attempt));
        let attempt = match futures::FutureExt::catch_unwind(attempt).await {
            Ok(attempt) => attempt,
            Err(panic) => {
                mirror.mark_unreachable("the catch-up panicked; the log says where");
                std::panic::resume_unwind(panic)
            }
        };
        match attempt {
            Ok(Ok(())) => mirror.mark_synced(),
            Ok(Err(e)) => mirror.mark_unreachable(&e.to_string()),
            Err(_) => mirror.mark_unreachable(&format!(
                "the database did not answer a catch-up within {} s",
                options.catch_up_limit.as_secs()
            )),
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(options.poll_interval) => {}
        }
    }
    tracing::debug!("watcher stopped");
}

/// How long the tables that only grow keep their rows.
#[derive(Clone, Debug)]
pub struct Retention {
    pub change_log: Duration,
    pub change_log_max_rows: i64,
    pub boots: Duration,
    /// Every tenant's writes add audit rows; without a limit a tenant that
    /// keeps editing grows the table, and its own filtered audit reads,
    /// for ever.
    pub audit: Duration,
}

/// Counts a background job's failure (`dialtone_background_failures_total`):
/// the loops go on after one, so without the count a snapshot that never
/// gets written, or a table that stopped being pruned, shows only in logs.
pub fn failed(task: &'static str) {
    metrics::counter!(BACKGROUND_FAILURES, "task" => task).increment(1);
}

pub const BACKGROUND_FAILURES: &str = "dialtone_background_failures_total";

/// The `task` label's values.
pub const BACKGROUND_TASKS: &[&str] = &[
    "snapshot",
    "prune_change_log",
    "prune_history",
    "prune_audit",
    "prune_tokens",
    "reload",
    "ldap_mirror",
    "directory_files",
];

/// Longest one prune may take on PostgreSQL. A prune caught on a connection
/// gone silent would otherwise never return, and that node would prune
/// nothing again. PostgreSQL prunes go in committed batches and start none
/// after a minute, so a healthy one ends well within this.
pub const PRUNE_LIMIT: Duration = Duration::from_secs(300);

/// Periodically bounds the change log, the boot history and the audit log.
pub async fn run_pruner(
    store: Arc<dyn Store>,
    interval: Duration,
    retention: Retention,
    cancel: CancellationToken,
) {
    // SQLite's prunes wait on no network, and on another process's lock
    // only for busy_timeout; each is one DELETE, which a limit could cut
    // off at every round.
    let postgres = store.backend() == Backend::Postgres;
    let limit = postgres.then_some(PRUNE_LIMIT);
    // On PostgreSQL, history and audit at once: their prunes are what
    // measure this node's clock against the database's (the skew warning
    // and the offset gauge), and a node with a wrong clock said nothing of
    // it for the first interval. Their cutoffs are the database's clock.
    // Not on SQLite, whose cutoffs are this node's clock as it read at
    // start: a node booted before NTP set its clock would delete its whole
    // history at once, where the first interval gives NTP its time. Not
    // the change log: a node started from a snapshot is catching up from
    // it meanwhile, and a prune now could cut away the rows it is about to
    // read and force a full reload. A start during an outage fails this
    // pass: not counted, since the outage is said elsewhere and the next
    // round tries again. Every pass gives way to shutdown, so one at start
    // holds up no quick stop (a cut-off prune leaves nothing behind;
    // `within` relies on it too).
    if postgres {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            _ = prune_aged(&*store, &retention, limit, Failures::AtStart) => {}
        }
    }
    loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(interval) => {}
        }
        tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            _ = prune_once(&*store, &retention, limit) => {}
        }
    }
}

/// One round of the pruner. A prune that fails, or has not returned within
/// `limit`, is logged and counted, and the next round tries again.
pub async fn prune_once(store: &dyn Store, retention: &Retention, limit: Option<Duration>) {
    let change_log = store.prune_change_log(retention.change_log, retention.change_log_max_rows);
    match within(limit, change_log).await {
        Ok(0) => {}
        Ok(n) => tracing::debug!(rows = n, "pruned change log"),
        Err(e) => {
            failed("prune_change_log");
            tracing::warn!(error = %e, "pruning the change log failed")
        }
    }
    prune_aged(store, retention, limit, Failures::Counted).await;
}

/// Whether a failed prune counts as a background failure.
#[derive(Clone, Copy, PartialEq)]
enum Failures {
    Counted,
    /// The pass at start, which a start during an outage fails.
    AtStart,
}

/// The tables pruned by age alone: boot history, the audit log and ended
/// API tokens.
async fn prune_aged(
    store: &dyn Store,
    retention: &Retention,
    limit: Option<Duration>,
    failures: Failures,
) {
    let failed = |task: &'static str, what: &str, e: &str| match failures {
        Failures::Counted => {
            failed(task);
            tracing::warn!(error = %e, "pruning {what} failed");
        }
        Failures::AtStart => {
            tracing::info!(error = %e, "pruning {what} at start failed; tried again next round")
        }
    };
    if let Err(e) = within(limit, store.prune_boots(retention.boots)).await {
        failed("prune_history", "provisioning history", &e);
    }
    match within(limit, store.prune_audit(retention.audit)).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(rows = n, "pruned audit log"),
        Err(e) => failed("prune_audit", "the audit log", &e),
    }
    // As long as the audit rows that say who made and revoked them.
    match within(limit, store.prune_tokens(retention.audit)).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            tokens = n,
            "pruned API tokens revoked or expired past the audit retention"
        ),
        Err(e) => failed("prune_tokens", "ended API tokens", &e),
    }
}

async fn within<T>(
    limit: Option<Duration>,
    prune: impl std::future::Future<Output = Result<T, SyncError>>,
) -> Result<T, String> {
    let Some(limit) = limit else {
        return prune.await.map_err(|e| e.to_string());
    };
    match tokio::time::timeout(limit, prune).await {
        Ok(pruned) => pruned.map_err(|e| e.to_string()),
        Err(_) => Err(format!(
            "the database did not answer within {} s; given up until the next round",
            limit.as_secs()
        )),
    }
}

#[cfg(test)]
#[path = "watcher_tests.rs"]
mod tests;
