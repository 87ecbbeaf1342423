//! Startup: the key and the store, the listeners (bound before anything
//! slow, so a taken port fails fast with its own message), the shipped
//! templates and the mirror. Every failure here is one line and a non-zero
//! exit.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use dialtone_sync::store::{masked_url, StoreOptions};
use dialtone_sync::{snapshot, watcher, LoadedFrom, Mirror, SecretKey, Store, SyncError};
use std::sync::Arc;

use crate::config::Config;

mod key;
mod listeners;
mod recheck;
pub(super) use recheck::DATABASE_STANDBY;

use key::{key_and_whether_made, refuse_a_made_key};
pub(super) use key::{read_key, KeyFile};
pub(super) use listeners::{raise_open_file_limit, Sockets};
pub(super) use recheck::check_when_reachable;

/// [`open_store`] for a command that needs the database now: it is
/// reached first, so an unreachable one is named with the cause
/// ("connection refused", a bad password) rather than the pool's
/// "timed out while waiting for an open connection".
pub async fn open_reached_store(config: &Config) -> Result<(Arc<dyn Store>, SecretKey)> {
    let (store, key) = open_store(config).await?;
    store
        .ping()
        .await
        .with_context(|| format!("cannot reach database {}", masked_url(&config.database.url)))?;
    Ok((store, key))
}

pub async fn open_store(config: &Config) -> Result<(Arc<dyn Store>, SecretKey)> {
    let (key, made) = key_and_whether_made(config)?;
    let store = dialtone_sync::open(&config.database.url, key.clone(), &store_options(config))
        .await
        .with_context(|| cannot_open(config))?;
    refuse_a_made_key(&*store, made).await?;
    Ok((store, key))
}

/// [`open_store`] for `serve`: a SQLite file that does not open for a
/// cause outside its data (a full disk, a read-only mount) is an outage,
/// as a PostgreSQL server that does not answer is, and the store it gives
/// opens the file at each use until it opens. [`load_mirror`] then serves
/// the snapshot, or stops the start when there is none.
pub(super) async fn open_serving_store(config: &Config) -> Result<(Arc<dyn Store>, SecretKey)> {
    let (key, made) = key_and_whether_made(config)?;
    let options = store_options(config);
    let store =
        dialtone_sync::store::open_through_outage(&config.database.url, key.clone(), &options)
            .await
            .with_context(|| cannot_open(config))?;
    refuse_a_made_key(&*store, made).await?;
    Ok((store, key))
}

fn store_options(config: &Config) -> StoreOptions {
    StoreOptions {
        max_connections: config.database.max_connections,
        acquire_timeout: config.database.acquire_timeout(),
        max_catch_up_rows: config.mirror.max_catch_up_rows,
        migration_lock_wait: Duration::from_millis(config.database.migration_lock_wait_ms),
        migration_retry_for: Duration::from_secs(config.database.migration_retry_s),
        ..Default::default()
    }
}

/// "cannot open database URL", with what the SQLite database's folder
/// says (no space left, read-only): SQLite's own text for a full disk
/// is often only "disk I/O error".
fn cannot_open(config: &Config) -> String {
    format!(
        "cannot open database {}{}",
        masked_url(&config.database.url),
        super::local_disk::database_folder_note(config)
    )
}

fn unreachable(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| cause.is::<TooSlow>()) || sync_cause(e, SyncError::is_transient)
}

/// Whether `e` is a PostgreSQL load refused for a restore not yet done.
fn half_restored(e: &anyhow::Error) -> bool {
    sync_cause(e, |e| matches!(e, SyncError::SchemaIncomplete(_)))
}

/// Whether `e` is PostgreSQL in recovery: an outage of the primary as far
/// as a node with a snapshot goes, since a failover's new primary (or
/// this one promoted) takes the node back without a restart.
fn standby(e: &anyhow::Error) -> bool {
    sync_cause(e, |e| matches!(e, SyncError::Standby(_)))
}

/// Whether any `SyncError` in `e`'s chain is `what`.
fn sync_cause(e: &anyhow::Error, what: impl Fn(&SyncError) -> bool) -> bool {
    e.chain()
        .any(|cause| cause.downcast_ref::<SyncError>().is_some_and(&what))
}

/// How long a start that has a snapshot waits on a database that takes
/// its connection but does not answer (a lock held, a stopped server, a
/// network black hole) before serving the snapshot: a node restarted
/// during trouble serves phones, as it would with the database refused.
/// Without a snapshot there is nothing else to serve, and it waits.
const PATIENCE_WITH_SNAPSHOT: Duration = Duration::from_secs(10);

#[derive(Debug)]
struct TooSlow {
    step: &'static str,
    after: Duration,
}

impl std::fmt::Display for TooSlow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the database did not finish {} within {} s",
            self.step,
            self.after.as_secs()
        )
    }
}

impl std::error::Error for TooSlow {}

/// `work`, given up as [`TooSlow`] past `patience` when there is one.
async fn within<T>(
    patience: Option<Duration>,
    step: &'static str,
    work: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    let Some(after) = patience else {
        return work.await;
    };
    match tokio::time::timeout(after, work).await {
        Ok(done) => done,
        Err(_) => Err(TooSlow { step, after }.into()),
    }
}

/// The start's schema and key check, run apart from the start: a
/// migration is never cut off half-way by a start that stops waiting.
type Preparing = tokio::task::JoinHandle<Result<()>>;

/// Whether startup checked the database's schema and key.
#[derive(Debug)]
pub(super) enum Checked {
    Yes,
    /// Served from the snapshot with the database unreachable (or a
    /// standby), or too slow to finish the check (still running: given
    /// here): the checks wait for it ([`check_when_reachable`]).
    Deferred(Option<Preparing>),
}

/// Reaches the database, then migrates or checks its schema and the key,
/// as a start does: an unreachable database is an error `unreachable`
/// tells apart.
async fn reach_and_prepare(config: &Config, store: &dyn Store) -> Result<()> {
    store.ping().await.context("connecting")?;
    crate::prepare_schema(config, store).await
}

/// Loads the mirror: from the snapshot plus a catch-up when both exist and
/// agree, from the database alone otherwise, and from the snapshot alone
/// when the database is unreachable.
pub(super) async fn load_mirror(
    config: &Config,
    shared_store: &Arc<dyn Store>,
    key: &SecretKey,
    mirror: &Mirror,
    demo: bool,
) -> Result<Checked> {
    let store = &**shared_store;
    let path = config.snapshot_path();
    let started = Instant::now();
    // Decoded on blocking threads while the database is reached and its
    // schema checked, which are round trips that need no CPU here.
    let reading = tokio::task::spawn_blocking({
        let path = path.clone();
        move || snapshot::load(&path)
    });
    let mut preparing: Preparing = tokio::spawn({
        let (config, store) = (config.clone(), shared_store.clone());
        async move { reach_and_prepare(&config, &*store).await }
    });
    let snap = match reading.await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "ignoring the snapshot; the mirror loads from the database");
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "reading the snapshot failed; the mirror loads from the database");
            None
        }
    };
    let source = snapshot::source_id(&config.database.url);
    let snap = match snap {
        Some((header, _)) if header.source != source => {
            tracing::warn!(snapshot = %path.display(), "the snapshot was taken from another database URL; ignoring it");
            None
        }
        other => other,
    };
    // Only a snapshot that can serve stops the wait for a database that
    // hangs; without one there is nothing else to serve, and it waits.
    let patience = snap.is_some().then_some(PATIENCE_WITH_SNAPSHOT);
    let left = |patience: Option<Duration>| patience.map(|p| p.saturating_sub(started.elapsed()));
    let prepared = match left(patience) {
        None => Some((&mut preparing).await),
        Some(left) => tokio::time::timeout(left, &mut preparing).await.ok(),
    };
    let mut pending = None;
    let reached = match prepared {
        Some(Ok(Ok(()))) => {
            within(left(patience), "reading its meta row", async {
                store
                    .meta()
                    .await
                    .context("reading the database's meta row")
            })
            .await
        }
        Some(Ok(Err(e))) => Err(e),
        Some(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Some(Err(e)) => Err(anyhow::anyhow!("the schema check stopped: {e}")),
        None => {
            pending = Some(preparing);
            Err(TooSlow {
                step: "checking the schema",
                after: PATIENCE_WITH_SNAPSHOT,
            }
            .into())
        }
    };
    let meta = match reached {
        Ok(meta) => meta,
        Err(e) => {
            // Without a snapshot a standby still stops the start: there
            // is nothing to serve, and the refusal names the remedy.
            let on_standby = standby(&e) && snap.is_some();
            if !unreachable(&e) && !on_standby {
                return Err(e);
            }
            let state = if on_standby {
                "is a standby in recovery".to_string()
            } else {
                outage_state(config)
            };
            let Some(snap) = snap else {
                bail!(
                "database {} {state} and there is no snapshot at {} it can serve from (one that could not be read is named in a warning above): {e:#}",
                masked_url(&config.database.url),
                path.display()
            );
            };
            serve_snapshot(config, key, mirror, snap, &state, &e)?;
            return Ok(Checked::Deferred(pending));
        }
    };
    match snap {
        Some((header, data)) if header.meta.database_id == meta.database_id => {
            let synced_at = header.synced_at;
            mirror.reset_loaded(data, header.cursor, header.meta, LoadedFrom::Snapshot);
            let caught_up = within(left(patience), "the catch-up after the snapshot", async {
                watcher::catch_up(mirror, store)
                    .await
                    .context("catching up after the snapshot")
            })
            .await;
            match caught_up {
                Ok(changed) => {
                    mirror.mark_synced();
                    tracing::info!(
                        changed,
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "mirror loaded from snapshot and caught up"
                    );
                }
                // The schema and key are checked: the watcher catches up
                // once the database answers, stale since the snapshot's
                // own sync until then.
                Err(e) if unreachable(&e) => {
                    mirror.synced_at_least_at(synced_at);
                    mirror.mark_unreachable(&format!("{e:#}"));
                    tracing::warn!(snapshot = %path.display(), synced_at, error = %e, "serving from the snapshot; the watcher catches up when the database answers");
                }
                Err(e) => return Err(e),
            }
        }
        other => {
            if other.is_some() {
                tracing::warn!("the snapshot belongs to another database; loading the database");
            }
            let loaded = watcher::full_load(mirror, store)
                .await
                .context("loading the mirror");
            match (loaded, other) {
                (Ok(()), _) => {}
                // A restore in progress gives the database its new id
                // before its schema is whole, and is not loaded from until
                // it is: served meanwhile is what was, as while the
                // database is unreachable. The watcher loads it when done.
                // Only then: any other failure of a database that has just
                // answered stops the start, as before, rather than serve
                // another database's snapshot.
                (Err(e), Some(snap)) if half_restored(&e) => {
                    serve_snapshot(config, key, mirror, snap, "cannot be loaded", &e)?;
                    return Ok(Checked::Yes);
                }
                (Err(e), _) => return Err(e),
            }
        }
    }
    // Only when absent: a restart with `--demo` keeps what was edited
    // since (`dialtone demo` seeds it again on purpose). A refused seed (a
    // demo MAC is another tenant's) stops the start rather than leaving a
    // node without the demo that `--demo` asked for and only a log line,
    // easily missed, to say so.
    if demo && mirror.load().tenant_by_slug(crate::demo::TENANT).is_none() {
        let report = crate::demo::seed_over(store, key, &mirror.load()).await?;
        watcher::catch_up(mirror, store)
            .await
            .context("reading the demo tenant back")?;
        tracing::info!(changed = report.changed(), "demo tenant seeded");
    }
    Ok(Checked::Yes)
}

/// How an outage reads: a server "is unreachable"; a SQLite file (which
/// did not open, or cannot be written to migrate it) "cannot be used",
/// with what its folder says (no space left, read-only).
fn outage_state(config: &Config) -> String {
    match config.sqlite_path() {
        Some(_) => format!(
            "cannot be used{}",
            super::local_disk::database_folder_note(config)
        ),
        None => "is unreachable".into(),
    }
}

/// Serves the snapshot while the database `state` (`why`), stale since the
/// snapshot's own sync.
fn serve_snapshot(
    config: &Config,
    key: &SecretKey,
    mirror: &Mirror,
    (header, data): (snapshot::SnapshotHeader, dialtone_sync::mirror::Loading),
    state: &str,
    why: &anyhow::Error,
) -> Result<()> {
    let path = config.snapshot_path();
    mirror.reset_loaded(data, header.cursor, header.meta, LoadedFrom::Snapshot);
    // The database's check of the key waits for it to answer; until
    // then a wrong key would report ready and fail every phone with
    // a password. Nothing serves yet: refused now, the start exits 1.
    snapshot::check_key(&mirror.load(), key).with_context(|| {
        format!(
            "cannot serve the snapshot {} while database {} {state}",
            path.display(),
            masked_url(&config.database.url)
        )
    })?;
    // Stale since the snapshot's data was last in sync, not since this
    // start: `max_staleness_s` and the stale-seconds gauge count from
    // there, however many restarts later.
    mirror.synced_at_least_at(header.synced_at);
    mirror.mark_unreachable(&format!("{why:#}"));
    if config.sqlite_path().is_some() {
        // A server's outage is often someone else's to mend, and passes;
        // this node's own disk is its operator's to free or remount.
        tracing::error!(snapshot = %path.display(), synced_at = header.synced_at, error = %format!("{why:#}"), "database {state}; serving from the snapshot, admin writes refused, opening it again every few seconds");
    } else {
        tracing::warn!(snapshot = %path.display(), synced_at = header.synced_at, error = %format!("{why:#}"), "database {state}; serving from the snapshot");
    }
    Ok(())
}
