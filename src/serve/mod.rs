//! `dialtone serve`, in the order it happens: startup (`startup.rs`: key,
//! store, sockets, shipped templates, mirror), the services (provisioning
//! and lookups over one mirror), the background tasks (`tasks.rs`), the API
//! routers (`router.rs`, which tests can `oneshot`), the listeners, and the
//! drain on SIGTERM or Ctrl-C (`signals.rs` for signals and systemd).

mod drain;
mod local_disk;
#[cfg(test)]
mod restore_start_tests;
mod router;
mod signals;
#[cfg(test)]
mod signals_tests;
#[cfg(test)]
mod snapshot_key_tests;
mod startup;
mod tasks;
#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use dialtone_directory::LookupService;
use dialtone_sync::Mirror;
use dialtone_tftp::{ProvisionOptions, Provisioner, Shipped};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::http_server::{serve, HttpServerOptions, Listener};
use crate::logging::LogHandle;
use crate::supervise::{Intensity, Supervisor};
use drain::drain;
pub use router::{api_router, ApiParts, Routers};
use signals::notify_systemd;
pub use startup::open_reached_store;
use startup::Sockets;

pub use signals::Hangup;

pub async fn run(
    config: Config,
    config_path: Option<PathBuf>,
    overrides: crate::config::Overrides,
    demo: bool,
    log: LogHandle,
    hangup: Hangup,
) -> Result<()> {
    let starting = Starting::begin(start_budget(&config));
    let metrics = tasks::recorder();
    crate::config::warn_if_one_address_closes_a_phone(
        &config.provisioning,
        config.provisioning.ban_s,
    );
    startup::raise_open_file_limit(&config);
    local_disk::warn_of_snapshot_folder(&config);
    let (store, key) = startup::open_serving_store(&config).await?;
    let sockets = Sockets::bind(&config).await?;
    let source = config.provisioning.shipped_source();
    let (shipped, shipped_whole) = Shipped::from_source_at_start(&source, 1)
        .with_context(|| format!("reading shipped templates ({source:?})"))?;
    let mirror = Arc::new(Mirror::new());
    let checked = startup::load_mirror(&config, &store, &key, &mirror, demo).await?;

    let (history, history_writer) =
        dialtone_sync::history::channel(store.clone(), config.mirror.history_queue);
    // Bound before anything serves, so a bad `resync.listen` stops startup;
    // it also sees this node's history sink, so a phone's fetch after a
    // resync is recorded even if it repeats one from moments before.
    let resync = if config.resync.enabled() {
        Some(crate::resync::ResyncService::new(
            &config.resync,
            store.clone(),
            Some(history.clone()),
        )?)
    } else {
        None
    };
    let (unclaimed, unclaimed_writer) =
        dialtone_sync::unclaimed::channel(store.clone(), config.provisioning.unclaimed_queue);
    let provisioner = Arc::new(
        Provisioner::new(
            mirror.clone(),
            key.clone(),
            shipped,
            provision_options(&config),
        )
        .with_history(history)
        .with_unclaimed(unclaimed, config.provisioning.record_unclaimed_anywhere),
    );
    // Sources tenants configure may never reach this node's own listeners.
    let lookups = LookupService::new(mirror.clone(), Some(key.clone()), config.lookup_options()?);
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

    let cancel = CancellationToken::new();
    // Cancelled by the drain after the listeners, not with `cancel`.
    let writers_stop = CancellationToken::new();
    let tracker = TaskTracker::new();
    let supervisor = Supervisor::new(
        &tracker,
        &cancel,
        Intensity {
            max_restarts: config.supervision.max_restarts,
            window: Duration::from_secs(config.supervision.window_s.max(1)),
        },
    );
    // Served as read (`from_source_at_start`): the node says so until a
    // SIGHUP reads the set whole.
    if !shipped_whole {
        supervisor.hold(signals::SHIPPED_TEMPLATES, true);
        dialtone_sync::watcher::failed("reload");
    }
    let metrics = tasks::spawn(
        tasks::Parts {
            history_writer,
            unclaimed_writer,
            writers_stop: &writers_stop,
            config: &config,
            store: &store,
            mirror: &mirror,
            provisioner: &provisioner,
            lookups: &lookups,
            metrics,
        },
        &supervisor,
        &tracker,
        &cancel,
    );
    let refused = Arc::new(std::sync::OnceLock::new());
    if let startup::Checked::Deferred(pending) = checked {
        let (config, store, cancel, refused, supervisor) = (
            config.clone(),
            store.clone(),
            cancel.clone(),
            refused.clone(),
            supervisor.clone(),
        );
        tracker.spawn(async move {
            if let Some(message) =
                startup::check_when_reachable(&config, &*store, &cancel, pending, &supervisor).await
            {
                let _ = refused.set(message);
                cancel.cancel();
            }
        });
    }
    if let Some(resync) = &resync {
        let (resync, cancel2) = (resync.clone(), cancel.clone());
        supervisor.spawn("resync", move || resync.clone().run(cancel2.clone()));
    }
    // Not tracked: after the first signal it waits for a second one.
    tokio::spawn(signals::signals(
        cancel.clone(),
        config_path,
        overrides,
        config.clone(),
        &key,
        log,
        hangup,
        shipped_whole,
        signals::reload_live(
            provisioner.clone(),
            supervisor.clone(),
            static_dir,
            sockets.https.as_ref().map(|(_, _, files)| files.clone()),
        ),
    )?);

    let routers = api_router(ApiParts {
        config: &config,
        mirror: &mirror,
        store: &store,
        key: &key,
        provisioner: &provisioner,
        lookups,
        supervisor: &supervisor,
        metrics,
        resync,
    });
    tracing::info!(
        listen = %config.http.listen,
        monitoring = ?config.http.monitoring_listen,
        provisioning = %config.provisioning.http_listen,
        tftp = ?config.provisioning.tftp_listen,
        templates = provisioner.shipped_count(),
        counts = ?mirror.load().counts(),
        "dialtone ready"
    );
    let mut listeners = Listeners::start(&config, sockets, routers, &provisioner, &cancel)?;
    // Every listener is bound and serving, and the mirror is loaded.
    drop(starting);
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
    // A listener that ends by itself (a setup error after start, a panic
    // on its thread) would leave a node that answers /readyz but not
    // phones: stop, and let the service manager start it afresh.
    let stopped = tokio::select! {
        biased;
        _ = cancel.cancelled() => None,
        // Listeners end on the cancel too: only one that ended first counts.
        name = listeners.first_to_stop() => (!cancel.is_cancelled()).then_some(name),
    };
    if let Some(name) = stopped {
        tracing::error!(
            listener = name,
            "a listener stopped by itself; shutting down"
        );
        cancel.cancel();
    }
    drain(&config, listeners, writers_stop, tracker, &mirror, &*store).await;
    match (stopped, refused.get()) {
        (Some(name), _) => anyhow::bail!("the {name} listener stopped by itself"),
        (None, Some(message)) => anyhow::bail!("{message}"),
        (None, None) => Ok(()),
    }
}

fn provision_options(config: &Config) -> ProvisionOptions {
    let p = &config.provisioning;
    let (budget, pool) = p.render_options();
    ProvisionOptions {
        base_url: p.base_url(),
        host_names: p.host_names.clone(),
        render_cache_bytes: p.render_cache_mb << 20,
        budget,
        pool,
        guard: dialtone_tftp::guard::GuardOptions {
            burst: p.ban_burst,
            per_minute: p.ban_per_minute,
            ban: Duration::from_secs(p.ban_s),
            max_sources: p.ban_sources,
            known_ttl: Duration::from_secs(p.ban_known_ttl_s),
            known_phones: p.ban_known_phones,
            phone_failures: p.ban_phone_failures,
        },
        sites_exclusive: p.sites_exclusive,
        ..Default::default()
    }
}

/// The running listeners, for the drain.
struct Listeners {
    http: Vec<(&'static str, JoinHandle<()>)>,
    /// The TFTP thread's join, waited for on a blocking thread.
    tftp: Option<JoinHandle<std::thread::Result<std::io::Result<()>>>>,
}

impl Listeners {
    /// The name of the first listener to end, taken out of the set (a
    /// finished task is not awaited twice); pending while all run.
    async fn first_to_stop(&mut self) -> &'static str {
        use std::future::Future;
        use std::task::Poll;
        let stopped = std::future::poll_fn(|cx| {
            for (i, (_, task)) in self.http.iter_mut().enumerate() {
                if std::pin::Pin::new(task).poll(cx).is_ready() {
                    return Poll::Ready(Some(i));
                }
            }
            if let Some(tftp) = &mut self.tftp {
                if std::pin::Pin::new(tftp).poll(cx).is_ready() {
                    return Poll::Ready(None);
                }
            }
            Poll::Pending
        })
        .await;
        match stopped {
            Some(i) => self.http.remove(i).0,
            None => {
                self.tftp = None;
                "TFTP"
            }
        }
    }
}

impl Listeners {
    fn start(
        config: &Config,
        sockets: Sockets,
        routers: Routers,
        provisioner: &Arc<Provisioner>,
        cancel: &CancellationToken,
    ) -> Result<Listeners> {
        let provisioning = HttpServerOptions {
            max_connections: config.provisioning.http_max_connections,
            header_timeout: Duration::from_secs(config.provisioning.http_header_timeout_s),
            max_per_source: config.provisioning.http_max_per_source,
            // Checked when the configuration was read.
            per_source_exempt: dialtone_tftp::tftp::parse_networks(
                &config.provisioning.http_per_source_exempt,
            )
            .unwrap_or_default(),
            listener: Listener::Provisioning,
            ..HttpServerOptions::default()
        };
        let mut http = vec![
            (
                "API",
                tokio::spawn(serve(
                    sockets.api,
                    routers.api,
                    HttpServerOptions {
                        listener: Listener::Api,
                        ..HttpServerOptions::default()
                    },
                    cancel.clone(),
                )),
            ),
            (
                "provisioning",
                tokio::spawn(serve(
                    sockets.provisioning,
                    dialtone_tftp::http::router_exempting(
                        provisioner.clone(),
                        false,
                        provisioning.per_source_exempt.clone(),
                    ),
                    provisioning.clone(),
                    cancel.clone(),
                )),
            ),
        ];
        if let (Some(listener), Some(router)) = (sockets.monitoring, routers.monitoring) {
            http.push((
                "monitoring",
                tokio::spawn(serve(
                    listener,
                    router,
                    HttpServerOptions {
                        listener: Listener::Monitoring,
                        ..HttpServerOptions::default()
                    },
                    cancel.clone(),
                )),
            ));
        }
        if let Some((listener, tls, files)) = sockets.https {
            files.record_expiry();
            let options = HttpServerOptions {
                tls: Some(tls),
                listener: Listener::ProvisioningTls,
                ..provisioning
            };
            let router = dialtone_tftp::http::router_exempting(
                provisioner.clone(),
                true,
                options.per_source_exempt.clone(),
            );
            http.push((
                "HTTPS",
                tokio::spawn(serve(listener, router, options, cancel.clone())),
            ));
        }
        // TFTP runs on a runtime of its own, on a thread of its own, so a
        // flood of UDP never competes with the API's workers.
        let tftp = match sockets.tftp {
            Some(socket) => {
                let thread = dialtone_tftp::tftp::spawn(
                    socket,
                    provisioner.clone(),
                    sockets.tftp_options,
                    cancel.clone().cancelled_owned(),
                )
                .context("starting the TFTP server")?;
                Some(tokio::task::spawn_blocking(move || thread.join()))
            }
            None => None,
        };
        Ok(Listeners { http, tftp })
    }
}

/// How far each start notice moves systemd's start timeout on.
const START_EXTENSION: Duration = Duration::from_secs(60);

/// How long a start may go on being extended: the wait for a migration's
/// turn and a connection, and a budget for loading the mirror. Past it the
/// last extension runs out and systemd ends a start that hangs (a lock
/// held for good, a database that stopped answering).
fn start_budget(config: &Config) -> Duration {
    const LOAD: Duration = Duration::from_secs(600);
    Duration::from_secs(config.database.migration_retry_s)
        + config.database.acquire_timeout()
        + LOAD
}

/// Tells systemd the start is still going, until dropped (just before
/// READY) or `budget` has passed. systemd kills a start after 90 s by default, and a start may
/// wait longer, legitimately: for the database to let a migration through
/// (`database.migration_retry_s`, up to a day), or loading a large mirror.
/// Killed, it never printed why it failed, and `Restart=on-failure` began
/// the same wait again.
struct Starting(Option<(Arc<std::sync::Mutex<bool>>, tokio::task::JoinHandle<()>)>);

impl Starting {
    fn begin(budget: Duration) -> Starting {
        if std::env::var_os("NOTIFY_SOCKET").is_none() {
            return Starting(None);
        }
        let extension = u32::try_from(START_EXTENSION.as_micros()).unwrap_or(u32::MAX);
        // Held while a notice is sent: once `drop` has set it, no notice
        // of a start can follow READY.
        let ended = Arc::new(std::sync::Mutex::new(false));
        let task = tokio::spawn({
            let ended = ended.clone();
            async move {
                let until = tokio::time::Instant::now() + budget;
                while tokio::time::Instant::now() < until {
                    {
                        let ended = ended.lock().unwrap_or_else(|e| e.into_inner());
                        if *ended {
                            return;
                        }
                        notify_systemd(&[
                            sd_notify::NotifyState::Status("starting"),
                            sd_notify::NotifyState::ExtendTimeoutUsec(extension),
                        ]);
                    }
                    tokio::time::sleep(START_EXTENSION / 3).await;
                }
            }
        });
        Starting(Some((ended, task)))
    }
}

impl Drop for Starting {
    fn drop(&mut self) {
        if let Some((ended, task)) = self.0.take() {
            *ended.lock().unwrap_or_else(|e| e.into_inner()) = true;
            task.abort();
        }
    }
}
