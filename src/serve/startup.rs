//! Startup: the key and the store, the listeners (bound before anything
//! slow, so a taken port fails fast with its own message), the shipped
//! templates and the mirror. Every failure here is one line and a non-zero
//! exit.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use dialtone_sync::store::{masked_url, StoreOptions};
use dialtone_sync::{snapshot, watcher, LoadedFrom, Mirror, SecretKey, Store, SyncError};
use dialtone_tftp::tftp::TftpOptions;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::config::Config;

pub fn load_key(config: &Config) -> Result<SecretKey> {
    key_and_whether_made(config).map(|(key, _)| key)
}

/// The key as a start reads it, and the key file when this call made it.
fn key_and_whether_made(config: &Config) -> Result<(SecretKey, Option<std::path::PathBuf>)> {
    if let Some(key) = &config.secrets.key {
        return Ok((SecretKey::parse(key).context("secrets.key")?, None));
    }
    let path = config
        .key_file()
        .context("secrets.key: no key configured")?;
    let (key, made) =
        SecretKey::load_or_create_reporting(&path).map_err(|e| key_file_error(&path, e))?;
    Ok((key, made.then_some(path)))
}

/// What [`read_key`] does with a key file that does not exist.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum KeyFile {
    /// A start's: makes a new key there.
    CreateIfMissing,
    /// A SIGHUP's look at what the next start would read: a missing file
    /// is an error, since a new key opens no database's secrets.
    MustExist,
}

/// The key `config` names: `secrets.key`, or the key file.
pub(super) fn read_key(config: &Config, missing: KeyFile) -> Result<SecretKey> {
    if missing == KeyFile::CreateIfMissing {
        return load_key(config);
    }
    if let Some(key) = &config.secrets.key {
        return SecretKey::parse(key).context("secrets.key");
    }
    let path = config
        .key_file()
        .context("secrets.key: no key configured")?;
    SecretKey::load(&path)
        .map_err(|e| key_file_error(&path, e))?
        .with_context(|| {
            format!(
                "secret key file {}: missing; the next start would create a new key",
                path.display()
            )
        })
}

/// Where systemd puts a unit's credentials (`LoadCredential=`).
const CREDENTIALS: &str = "/run/credentials/";

/// `e`, from reading or making the key file at `path`, named with it. A
/// credential's folder exists only while its unit runs: the package's
/// example key_file is one, and a CLI command (or a `serve` started by
/// hand) run beside a stopped unit meets it missing, where the remedy is
/// the key's own file, not a new key.
fn key_file_error(path: &std::path::Path, e: SyncError) -> anyhow::Error {
    let folder_missing = path.parent().is_some_and(|folder| !folder.exists());
    let named = format!("secret key file {}", path.display());
    // The sync crate names the file too: once is enough.
    let e = match &e {
        SyncError::Key(why) => match why.strip_prefix(&format!("{}: ", path.display())) {
            Some(why) => anyhow::anyhow!("{named}: {why}"),
            None => anyhow::Error::new(e).context(named),
        },
        _ => anyhow::Error::new(e).context(named),
    };
    if folder_missing && path.starts_with(CREDENTIALS) {
        return anyhow::anyhow!(
            "{e:#}; a path under {CREDENTIALS} is a systemd credential, which exists only \
             while its unit runs: a command run outside the unit needs \
             DIALTONE_SECRETS__KEY_FILE set to the key's real file (the one LoadCredential= \
             names, e.g. /etc/dialtone/key)"
        );
    }
    e
}

/// Refuses a key file this start made when the database's secrets are
/// sealed with another key, and removes it: with PostgreSQL (and a copied
/// SQLite database) a missing key_file is no first start, and a new key
/// left there would be taken for the real one later. A database that is
/// new, not migrated yet or not reachable says nothing here; the start's
/// own checks follow.
async fn refuse_a_made_key(store: &dyn Store, made: Option<std::path::PathBuf>) -> Result<()> {
    let Some(path) = made else {
        return Ok(());
    };
    let checked = tokio::time::timeout(MADE_KEY_CHECK_WAIT, store.check_schema()).await;
    if let Ok(Err(SyncError::Key(_))) = checked {
        let removed = match std::fs::remove_file(&path) {
            Ok(()) => "removed it again".to_string(),
            Err(e) => format!("could not remove it ({e}); remove it by hand"),
        };
        bail!(
            "secret key file {}: it did not exist, so a new key was made there, but this \
             database's secrets are sealed with another key; {removed}: point \
             secrets.key_file at the database's own key",
            path.display()
        );
    }
    Ok(())
}

/// How long [`refuse_a_made_key`] waits for the database: a start during
/// an outage goes on to its snapshot rather than wait here.
const MADE_KEY_CHECK_WAIT: Duration = Duration::from_secs(5);

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
    /// Served from the snapshot with the database unreachable, or too slow
    /// to finish the check (still running: given here): the checks wait
    /// for it ([`check_when_reachable`]).
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
            if !unreachable(&e) {
                return Err(e);
            }
            let state = outage_state(config);
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

/// First wait between tries of a deferred check; doubled up to the last.
const RECHECK_FIRST: Duration = Duration::from_millis(500);
const RECHECK_MOST: Duration = Duration::from_secs(5);

/// Whether `e` is a migration that waited past `migration_retry_s` for
/// its turn (another node migrating) or for a table in use: no refusal of
/// this node, only work it must wait for.
fn migration_kept_waiting(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<SyncError>(),
            Some(SyncError::MigrationLocked { .. })
        )
    })
}

/// The checks a start from the snapshot could not make, made once the
/// database answers: the schema (migrated where a start would migrate
/// it) and the key. A node with a key the database's secrets are not
/// sealed with, or a schema it cannot use, would have been refused at
/// start; it stops now with the same message (returned here; the caller
/// shuts the node down), and `serve` exits non-zero so the service
/// manager's restart meets the start's own refusal. A migration that
/// waits for another node's (or a busy table) is no refusal: the node
/// serves on and waits, where stopping would only restart it into the
/// same wait, over and over, for as long as the other migration runs.
/// Until the check the store refuses writes on its own (`KeyChecked` in
/// `dialtone-sync`).
pub(super) async fn check_when_reachable(
    config: &Config,
    store: &dyn Store,
    cancel: &tokio_util::sync::CancellationToken,
    mut pending: Option<Preparing>,
) -> Option<String> {
    let mut wait = RECHECK_FIRST;
    let mut told_migration_waits = false;
    loop {
        let checked = match pending.take() {
            // The start's own check, still running: its outcome first.
            Some(preparing) => tokio::select! {
                _ = cancel.cancelled() => return None,
                done = preparing => done.unwrap_or_else(|e| Err(anyhow::anyhow!("the schema check stopped: {e}"))),
            },
            None => {
                tokio::select! {
                    _ = cancel.cancelled() => return None,
                    _ = tokio::time::sleep(wait) => {}
                }
                let check = reach_and_prepare(config, store);
                // A migration waiting on another node's lock must not hold
                // the drain up.
                tokio::select! {
                    _ = cancel.cancelled() => return None,
                    checked = check => checked,
                }
            }
        };
        match checked {
            Ok(()) => {
                tracing::info!(
                    "the database answers again; its schema and this node's key are checked"
                );
                return None;
            }
            Err(e) if unreachable(&e) => wait = (wait * 2).min(RECHECK_MOST),
            // The migration logs its own wait as it goes; this says once
            // why the node does not stop.
            Err(e) if migration_kept_waiting(&e) => {
                if !told_migration_waits {
                    tracing::warn!(
                        error = %format!("{e:#}"),
                        "the schema migration is still waiting; serving on from the snapshot \
                         and trying again"
                    );
                    told_migration_waits = true;
                }
                wait = RECHECK_FIRST;
            }
            Err(e) => {
                let message = format!("the database came back and refuses this node: {e:#}");
                tracing::error!("{message}; shutting down");
                return Some(message);
            }
        }
    }
}

/// Every TFTP transfer and HTTP connection is an open file, and a boot
/// storm needs thousands; the usual soft limit is 1024. Raise it to the
/// hard limit (as Go and nginx do), and say so when even that is short.
pub(super) fn raise_open_file_limit(config: &Config) {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let limit = getrlimit(Resource::Nofile);
    let (Some(current), maximum) = (limit.current, limit.maximum) else {
        return; // unlimited
    };
    let target = maximum.unwrap_or(u64::MAX).min(1 << 20);
    let mut effective = current;
    if target > current {
        let raised = rustix::process::Rlimit {
            current: Some(target),
            maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => effective = target,
            Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
        }
    }
    let needed = open_files_needed(config);
    if effective < needed {
        tracing::warn!(
            limit = effective,
            needed,
            "open-file limit below what provisioning.tftp_max_transfers and the HTTP listeners' \
             connection caps need; raise LimitNOFILE"
        );
    }
}

/// Descriptors the node may hold at once: every TFTP transfer (its socket,
/// and a static file's own while it sends one: `tftp/src/tftp/read_ahead.rs`),
/// every HTTP listener's connections (a provisioning download may stream a static
/// file, one more descriptor each) and refusals, and 1024 for the rest
/// (database pool, LDAP, logs).
fn open_files_needed(config: &Config) -> u64 {
    use crate::http_server::{descriptors_needed, HttpServerOptions};
    let p = &config.provisioning;
    let api = HttpServerOptions::default().max_connections;
    let monitoring = config
        .http
        .monitoring_listen
        .map_or(0, |_| descriptors_needed(api, 0));
    let provisioning = descriptors_needed(p.http_max_connections, 1);
    let https = p.https_listen.map_or(0, |_| provisioning);
    let per_transfer = if p.static_dir.is_some() { 2 } else { 1 };
    p.tftp_max_transfers as u64 * per_transfer
        + descriptors_needed(api, 0)
        + monitoring
        + provisioning
        + https
        + 1024
}

/// Every socket `serve` listens on, bound.
pub(super) struct Sockets {
    pub api: TcpListener,
    pub monitoring: Option<TcpListener>,
    pub provisioning: TcpListener,
    pub https: Option<(TcpListener, TlsAcceptor, Arc<crate::http_server::TlsFiles>)>,
    pub tftp: Option<dialtone_tftp::tftp::Bound>,
    pub tftp_options: TftpOptions,
}

impl Sockets {
    pub async fn bind(config: &Config) -> Result<Sockets> {
        let api = bind_tcp(config.http.listen, "http.listen").await?;
        let monitoring = match config.http.monitoring_listen {
            Some(addr) => Some(bind_tcp(addr, "http.monitoring_listen").await?),
            None => None,
        };
        let provisioning =
            bind_tcp(config.provisioning.http_listen, "provisioning.http_listen").await?;
        let p = &config.provisioning;
        let tftp_options = TftpOptions {
            max_transfers: p.tftp_max_transfers,
            blksize_limit: p.tftp_blksize_limit,
            windowsize_limit: p.tftp_windowsize_limit,
            timeout: Duration::from_millis(p.tftp_timeout_ms),
            max_send_retries: p.tftp_max_send_retries,
            max_timeout: Duration::from_secs(p.tftp_max_timeout_s.into()),
            stall: Duration::from_secs(p.tftp_stall_s),
            min_rate: p.tftp_min_rate,
            min_rate_slack: Duration::from_secs(p.tftp_min_rate_slack_s),
            max_per_source: p.tftp_max_per_source,
            max_unacked_per_source: p.tftp_max_unacked_per_source,
            // Checked by Config::validate.
            per_source_exempt: dialtone_tftp::tftp::parse_networks(&p.tftp_per_source_exempt)
                .unwrap_or_default(),
            shutdown_grace: Duration::from_secs(config.http.shutdown_grace_s),
            single_port: p.tftp_single_port,
            listeners: p.tftp_listeners,
            ..Default::default()
        };
        let tftp = match p.tftp_listen {
            Some(addr) => Some(dialtone_tftp::tftp::bind(addr, &tftp_options).with_context(
                || format!("cannot listen on {addr}/udp (provisioning.tftp_listen)"),
            )?),
            None => None,
        };
        let https = match (p.https_listen, &p.tls_cert, &p.tls_key) {
            (Some(addr), Some(cert), Some(key)) => {
                let (tls, files) = crate::http_server::tls_acceptor(cert, key).map_err(|e| {
                    anyhow::anyhow!(
                        "cannot use the TLS certificate {} with key {} (provisioning.tls_cert/tls_key): {e}",
                        cert.display(),
                        key.display()
                    )
                })?;
                Some((
                    bind_tcp(addr, "provisioning.https_listen").await?,
                    tls,
                    files,
                ))
            }
            _ => None,
        };
        Ok(Sockets {
            api,
            monitoring,
            provisioning,
            https,
            tftp,
            tftp_options,
        })
    }
}

/// Binds a TCP listener, dual-stack on `[::]`; the error names the config
/// key, and for a privileged port the capability that is missing.
async fn bind_tcp(addr: SocketAddr, key: &str) -> Result<TcpListener> {
    let listener = dialtone_tftp::dual_stack::listen_tcp(addr).and_then(TcpListener::from_std);
    listener.map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::PermissionDenied && addr.port() < 1024 {
            format!(
                ": port {} is privileged: run with CAP_NET_BIND_SERVICE \
                 (systemd: AmbientCapabilities=CAP_NET_BIND_SERVICE) or use a port above 1023",
                addr.port()
            )
        } else {
            String::new()
        };
        anyhow::anyhow!("cannot listen on {addr} ({key}): {e}{hint}")
    })
}

#[cfg(test)]
mod open_file_tests {
    use super::*;

    /// Every HTTP listener's cap counts, not only TFTP's: at the defaults
    /// the API and provisioning listeners alone hold 12,288 descriptors.
    #[test]
    fn the_open_file_need_counts_every_listeners_connections() {
        let mut config = Config::default();
        let tftp = config.provisioning.tftp_max_transfers as u64;
        let base = open_files_needed(&config);
        assert!(base >= tftp + 1024 + 4096 + 2 * 4096, "{base}");
        config.provisioning.https_listen = Some("127.0.0.1:8443".parse().unwrap());
        config.http.monitoring_listen = Some("127.0.0.1:9100".parse().unwrap());
        let with_all = open_files_needed(&config);
        assert!(with_all >= base + 2 * 4096 + 4096, "{with_all}");
        // A static file's transfer holds the file open besides its socket.
        config.provisioning.static_dir = Some("/srv/firmware".into());
        assert_eq!(open_files_needed(&config), with_all + tftp);
    }
}

#[cfg(test)]
mod listener_tests {
    /// `[::]` serves IPv4 clients too whatever the host's
    /// `net.ipv6.bindv6only`: read back, not left to the host, where at 1
    /// every IPv4 phone was shut out.
    #[tokio::test]
    async fn an_ipv6_wildcard_listener_is_dual_stack() {
        let listener = super::bind_tcp("[::]:0".parse().unwrap(), "http.listen")
            .await
            .unwrap_or_else(|e| panic!("is IPv6 available on this machine (`ip -6 addr`)? {e:#}"));
        assert!(!socket2::SockRef::from(&listener).only_v6().unwrap());
    }
}
