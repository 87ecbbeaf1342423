//! `dialtone serve`: open the store, load the mirror (snapshot first when it
//! belongs to this database), start the supervised background tasks and the
//! API listener, and shut all of it down cleanly on SIGTERM or Ctrl-C.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use dialtone_sync::store::StoreOptions;
use dialtone_sync::{snapshot, watcher, LoadedFrom, Mirror, SecretKey, Store, SyncError};
use dialtone_tftp::{ProvisionOptions, Provisioner, Shipped};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::http::{app, AppState};
use crate::logging::LogHandle;
use crate::supervise::{Intensity, Supervisor};
use dialtone_directory::LookupService;

pub fn load_key(config: &Config) -> Result<SecretKey> {
    if let Some(key) = &config.secrets.key {
        return SecretKey::parse(key).context("secrets.key");
    }
    let path = config
        .key_file()
        .context("secrets.key: no key configured")?;
    SecretKey::load_or_create(&path).with_context(|| format!("secret key file {}", path.display()))
}

pub async fn open_store(config: &Config) -> Result<(Arc<dyn Store>, SecretKey)> {
    let key = load_key(config)?;
    let options = StoreOptions {
        max_connections: config.database.max_connections,
        acquire_timeout: Duration::from_millis(config.database.acquire_timeout_ms),
        max_catch_up_rows: config.mirror.max_catch_up_rows,
        ..Default::default()
    };
    let store = dialtone_sync::open(&config.database.url, key.clone(), &options)
        .await
        .with_context(|| format!("cannot open database {}", masked(&config.database.url)))?;
    Ok((store, key))
}

fn masked(url: &str) -> String {
    match url
        .split_once("://")
        .and_then(|(s, rest)| rest.split_once('@').map(|(_, h)| (s, h)))
    {
        Some((scheme, host)) => format!("{scheme}://…@{host}"),
        None => url.to_string(),
    }
}

fn unreachable(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<SyncError>()
            .is_some_and(SyncError::is_transient)
    })
}

/// Loads the mirror: from the snapshot plus a catch-up when both exist and
/// agree, from the database alone otherwise, and from the snapshot alone
/// when the database is unreachable.
async fn load_mirror(
    config: &Config,
    store: &dyn Store,
    key: &SecretKey,
    mirror: &Mirror,
    demo: bool,
) -> Result<()> {
    let path = config.snapshot_path();
    let started = Instant::now();
    let snap = match snapshot::read(&path) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "ignoring the snapshot");
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
    let schema = match store.ping().await {
        Ok(()) => crate::prepare_schema(config, store).await,
        Err(e) => Err(anyhow::Error::new(e).context("connecting")),
    };
    if let Err(e) = schema {
        if !unreachable(&e) {
            return Err(e);
        }
        let Some((header, data)) = snap else {
            bail!(
                "database {} is unreachable and there is no snapshot at {} to serve from: {e:#}",
                masked(&config.database.url),
                path.display()
            );
        };
        mirror.reset(data, header.cursor, header.meta, LoadedFrom::Snapshot);
        mirror.mark_unreachable(&format!("{e:#}"));
        tracing::warn!(snapshot = %path.display(), written_at = header.written_at, "database unreachable; serving from the snapshot");
        return Ok(());
    }
    if demo {
        let report = crate::demo::seed(store, key).await?;
        tracing::info!(changed = report.changed(), "demo tenant seeded");
    }
    let meta = store
        .meta()
        .await
        .context("reading the database's meta row")?;
    match snap {
        Some((header, data)) if header.meta.database_id == meta.database_id => {
            mirror.reset(data, header.cursor, header.meta, LoadedFrom::Snapshot);
            let changed = watcher::catch_up(mirror, store)
                .await
                .context("catching up after the snapshot")?;
            mirror.mark_synced();
            tracing::info!(
                changed,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "mirror loaded from snapshot and caught up"
            );
        }
        other => {
            if other.is_some() {
                tracing::warn!("the snapshot belongs to another database; ignoring it");
            }
            watcher::full_load(mirror, store)
                .await
                .context("loading the mirror")?;
        }
    }
    Ok(())
}

/// Every TFTP transfer and HTTP connection is an open file, and a boot
/// storm needs thousands; the usual soft limit is 1024. Raise it to the
/// hard limit (as Go and nginx do), and say so when even that is short.
fn raise_open_file_limit(config: &Config) {
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
    let needed = config.provisioning.tftp_max_transfers as u64 + 1024;
    if effective < needed {
        tracing::warn!(
            limit = effective,
            needed,
            "open-file limit below what provisioning.tftp_max_transfers needs; raise LimitNOFILE"
        );
    }
}

pub async fn run(
    config: Config,
    config_path: Option<PathBuf>,
    demo: bool,
    log: LogHandle,
) -> Result<()> {
    raise_open_file_limit(&config);
    let (store, key) = open_store(&config).await?;
    // Bind before the load so a taken port fails fast, with its own message.
    let listener = bind_tcp(config.http.listen, "http.listen").await?;
    let provisioning_listener =
        bind_tcp(config.provisioning.http_listen, "provisioning.http_listen").await?;
    let p = &config.provisioning;
    let tftp_options = dialtone_tftp::tftp::TftpOptions {
        max_transfers: p.tftp_max_transfers,
        blksize_limit: p.tftp_blksize_limit,
        windowsize_limit: p.tftp_windowsize_limit,
        timeout: Duration::from_millis(p.tftp_timeout_ms),
        max_send_retries: p.tftp_max_send_retries,
        shutdown_grace: Duration::from_secs(config.http.shutdown_grace_s),
        ..Default::default()
    };
    let tftp_socket = match p.tftp_listen {
        Some(addr) => Some(
            dialtone_tftp::tftp::bind(addr, tftp_options.recv_buffer, false).with_context(
                || format!("cannot listen on {addr}/udp (provisioning.tftp_listen)"),
            )?,
        ),
        None => None,
    };
    let https = match (p.https_listen, &p.tls_cert, &p.tls_key) {
        (Some(addr), Some(cert), Some(key)) => {
            let tls = crate::http_server::tls_acceptor(cert, key).map_err(|e| {
                anyhow::anyhow!(
                    "cannot use the TLS certificate {} with key {} (provisioning.tls_cert/tls_key): {e}",
                    cert.display(),
                    key.display()
                )
            })?;
            let listener = bind_tcp(addr, "provisioning.https_listen").await?;
            Some((listener, tls))
        }
        _ => None,
    };
    let source = config.provisioning.shipped_source();
    let shipped = Shipped::from_source(&source, 1)
        .with_context(|| format!("reading shipped templates ({source:?})"))?;
    let mirror = Arc::new(Mirror::new());
    load_mirror(&config, &*store, &key, &mirror, demo).await?;
    let (history, history_writer) =
        dialtone_sync::history::channel(store.clone(), config.mirror.history_queue);
    let provisioner = Arc::new(
        Provisioner::new(
            mirror.clone(),
            key.clone(),
            shipped,
            ProvisionOptions {
                base_url: config.provisioning.base_url(),
                render_cache_bytes: config.provisioning.render_cache_mb << 20,
                budget: config.provisioning.render_options().0,
                pool: config.provisioning.render_options().1,
                guard: dialtone_tftp::guard::GuardOptions {
                    burst: config.provisioning.ban_burst,
                    per_minute: config.provisioning.ban_per_minute,
                    ban: Duration::from_secs(config.provisioning.ban_s),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .with_history(history),
    );

    // Sources tenants configure may never reach this node's own listeners.
    let own = [
        Some(config.http.listen),
        Some(config.provisioning.http_listen),
        config.provisioning.https_listen,
        config.provisioning.tftp_listen,
    ];
    let lookups = LookupService::new(
        mirror.clone(),
        Some(key.clone()),
        config.lookup.options(own.into_iter().flatten())?,
    );

    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let supervisor = Supervisor::new(
        &tracker,
        &cancel,
        Intensity {
            max_restarts: config.supervision.max_restarts,
            window: Duration::from_secs(config.supervision.window_s.max(1)),
        },
    );
    let metrics = match crate::prometheus::install() {
        Ok(handle) => {
            let (h, cancel2) = (handle.clone(), cancel.clone());
            supervisor.spawn("metrics-upkeep", move || {
                crate::prometheus::upkeep(h.clone(), cancel2.clone())
            });
            Some(handle)
        }
        Err(e) => {
            tracing::warn!(error = %e, "metrics recorder not installed; /metrics is off");
            None
        }
    };
    // Flushes what is queued when cancelled, so it runs to the end on its own.
    tracker.spawn(history_writer.run(cancel.clone()));
    {
        // Two tasks: the change listener holds a database connection and
        // fails when it drops (counted, restarted); the watcher catches up
        // on each wake and polls regardless, so it never waits on the
        // listener's recovery.
        let wake = Arc::new(tokio::sync::Notify::new());
        let (store2, wake2, cancel2) = (store.clone(), wake.clone(), cancel.clone());
        supervisor.spawn("change-listener", move || {
            watcher::listen(store2.clone(), wake2.clone(), cancel2.clone())
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
                Duration::from_secs(m.change_log_retention_s),
                m.change_log_max_rows,
                Duration::from_secs(m.history_retention_days * 86_400),
                cancel2.clone(),
            )
        });
    }
    let snapshot_path = config.snapshot_path();
    if config.mirror.snapshot_interval_s > 0 {
        let (mirror, path, cancel2) = (mirror.clone(), snapshot_path.clone(), cancel.clone());
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
        let (lookups, cancel2) = (lookups.clone(), cancel.clone());
        supervisor.spawn("lookup-cache-invalidator", move || {
            lookups.clone().follow(cancel2.clone().cancelled_owned())
        });
    }
    // Not tracked: after the first signal it waits for a second one.
    let static_dir = config.provisioning.static_dir.clone();
    if let Some(dir) = &static_dir {
        let files = provisioner.reload_static(dir).with_context(|| {
            format!(
                "indexing static files in {} (provisioning.static_dir)",
                dir.display()
            )
        })?;
        tracing::info!(files, dir = %dir.display(), "static files indexed");
    }
    let reload_live = {
        let provisioner = provisioner.clone();
        move |config: Option<&Config>| {
            if let Some(config) = config {
                let p = &config.provisioning;
                provisioner
                    .guard()
                    .set_limits(p.ban_burst, p.ban_per_minute);
                if provisioner.resize_render_cache(p.render_cache_mb << 20) {
                    tracing::info!(
                        mb = p.render_cache_mb,
                        "SIGHUP: render cache resized (and emptied)"
                    );
                }
            }
            match provisioner.reload_shipped() {
                Ok(n) => tracing::info!(templates = n, "SIGHUP: shipped templates reloaded"),
                Err(e) => {
                    tracing::warn!(error = %e, "SIGHUP: shipped templates not reloaded; keeping the running set")
                }
            }
            if let Some(dir) = &static_dir {
                match provisioner.reload_static(dir) {
                    Ok(n) => tracing::info!(files = n, "SIGHUP: static files re-indexed"),
                    Err(e) => {
                        tracing::warn!(error = %e, "SIGHUP: static files not re-indexed; keeping the running index")
                    }
                }
            }
        }
    };
    tokio::spawn(signals(cancel.clone(), config_path, log, reload_live)?);

    let state = AppState {
        mirror: mirror.clone(),
        max_staleness: config.mirror.max_staleness_s.map(Duration::from_secs),
        degraded: {
            let supervisor = supervisor.clone();
            Arc::new(move || supervisor.degraded())
        },
    };
    let metrics_routes = match metrics {
        Some(handle) => axum::Router::new()
            .route("/metrics", axum::routing::get(crate::prometheus::render))
            .with_state(crate::prometheus::MetricsState {
                handle,
                mirror: mirror.clone(),
                provisioner: provisioner.clone(),
                supervisor: supervisor.clone(),
            }),
        None => axum::Router::new(),
    };
    tracing::info!(
        listen = %config.http.listen,
        provisioning = %config.provisioning.http_listen,
        tftp = ?config.provisioning.tftp_listen,
        templates = provisioner.shipped_count(),
        counts = ?mirror.load().counts(),
        "dialtone ready"
    );
    let source_networks = lookups.source_networks().clone();
    let server = tokio::spawn(crate::http_server::serve(
        listener,
        app(state)
            .merge(metrics_routes)
            .merge(dialtone_directory::http::router(lookups))
            .merge(crate::admin::router(crate::admin::AdminState {
                mirror: mirror.clone(),
                store: store.clone(),
                provisioner: provisioner.clone(),
                key: key.clone(),
                source_networks,
                quotas: Arc::new(config.quotas.clone()),
            })),
        crate::http_server::HttpServerOptions::default(),
        cancel.clone(),
    ));
    let grace = Duration::from_secs(config.http.shutdown_grace_s);
    let provisioning_options = crate::http_server::HttpServerOptions {
        max_connections: config.provisioning.http_max_connections,
        header_timeout: Duration::from_secs(config.provisioning.http_header_timeout_s),
        tls: None,
    };
    let provisioning = tokio::spawn(crate::http_server::serve(
        provisioning_listener,
        dialtone_tftp::http::router(provisioner.clone()),
        provisioning_options.clone(),
        cancel.clone(),
    ));
    let https = https.map(|(listener, tls)| {
        tokio::spawn(crate::http_server::serve(
            listener,
            dialtone_tftp::http::router_with(provisioner.clone(), true),
            crate::http_server::HttpServerOptions {
                tls: Some(tls),
                ..provisioning_options.clone()
            },
            cancel.clone(),
        ))
    });
    // TFTP runs on a runtime of its own, on a thread of its own, so a flood
    // of UDP never competes with the API's workers.
    let tftp = match tftp_socket {
        Some(socket) => Some(
            dialtone_tftp::tftp::spawn(
                socket,
                provisioner.clone(),
                tftp_options,
                cancel.clone().cancelled_owned(),
            )
            .context("starting the TFTP server")?,
        ),
        None => None,
    };
    // Every listener is bound and serving, and the mirror is loaded.
    notify_systemd(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status("serving"),
    ]);
    if let Some(period) = sd_notify::watchdog_enabled() {
        // Pings come from the runtime itself: if it wedges, they stop and
        // systemd restarts the service.
        let cancel2 = cancel.clone();
        tracker.spawn(async move {
            let mut tick = tokio::time::interval(period / 2);
            loop {
                tokio::select! {
                    _ = cancel2.cancelled() => return,
                    _ = tick.tick() => notify_systemd(&[sd_notify::NotifyState::Watchdog]),
                }
            }
        });
    }
    cancel.cancelled().await;
    tracing::info!("shutting down");
    notify_systemd(&[
        sd_notify::NotifyState::Stopping,
        sd_notify::NotifyState::Status("draining"),
    ]);
    let listeners = [
        ("API", Some(server)),
        ("provisioning", Some(provisioning)),
        ("HTTPS", https),
    ];
    for (name, task) in listeners.into_iter().filter_map(|(n, t)| Some((n, t?))) {
        match tokio::time::timeout(grace, task).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(listener = name, error = %e, "HTTP server task failed"),
            Err(_) => tracing::warn!(
                listener = name,
                "in-flight requests did not finish within the grace period"
            ),
        }
    }
    if let Some(tftp) = tftp {
        // Refuses new requests at once (an error packet) and lets running
        // transfers finish within their grace period.
        match tokio::task::spawn_blocking(move || tftp.join()).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "TFTP server error"),
            _ => tracing::warn!("TFTP server thread failed"),
        }
    }
    tracker.close();
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!("background tasks did not stop within the grace period");
    }
    if mirror.is_loaded() {
        let m = mirror.clone();
        let path = snapshot_path.clone();
        let source = snapshot::source_id(&config.database.url);
        match tokio::task::spawn_blocking(move || snapshot::write(&m, &path, &source)).await {
            Ok(Ok(h)) => {
                tracing::info!(cursor = %h.cursor, path = %snapshot_path.display(), "snapshot written")
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "writing the final snapshot failed"),
            Err(e) => tracing::warn!(error = %e, "snapshot task failed"),
        }
    }
    store.close().await;
    Ok(())
}

/// Binds a TCP listener; the error names the config key, and for a
/// privileged port the capability that is missing.
async fn bind_tcp(addr: std::net::SocketAddr, key: &str) -> Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
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

/// Tells systemd (when `NOTIFY_SOCKET` is set; a no-op otherwise).
fn notify_systemd(state: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// First SIGTERM/SIGINT: graceful shutdown. A second: exit at once.
/// SIGHUP: re-read the config file and apply what can change live, and
/// re-read the shipped templates.
///
/// The handlers are installed before this returns, not when the task first
/// runs: a signal that arrives as soon as the listeners answer must not meet
/// the default action (death by SIGTERM, skipping the drain).
fn signals(
    cancel: CancellationToken,
    config_path: Option<PathBuf>,
    log: LogHandle,
    reload_live: impl Fn(Option<&Config>) + Send + 'static,
) -> Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(async move {
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => {
                    let config = reload(config_path.as_deref(), &log);
                    reload_live(config.as_ref());
                }
                _ = cancel.cancelled() => return,
            }
        }
        cancel.cancel();
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        eprintln!("dialtone: second signal, exiting immediately");
        std::process::exit(130);
    })
}

/// Re-reads the config and applies the log settings; the new config, or
/// `None` when it is invalid (the running one stays).
fn reload(path: Option<&std::path::Path>, log: &LogHandle) -> Option<Config> {
    // First, so the lines below land in the new file.
    if let Err(e) = log.reopen() {
        tracing::warn!(error = %e, "SIGHUP: log file not reopened; still writing the old one");
    }
    match Config::load(path) {
        Ok(config) => {
            if std::env::var_os("RUST_LOG").is_none() {
                if let Err(e) = log.set_filter(&config.log.filter) {
                    tracing::warn!(error = %e, "SIGHUP: log filter not changed");
                }
            }
            tracing::info!("SIGHUP: configuration reloaded");
            Some(config)
        }
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "SIGHUP: configuration invalid; keeping the running one");
            None
        }
    }
}
