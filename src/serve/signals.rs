//! Signals and systemd: SIGTERM/SIGINT drain, SIGHUP reloads what can
//! change live, systemd hears about readiness, draining and liveness.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use dialtone_tftp::Provisioner;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::logging::LogHandle;

/// Tells systemd (when `NOTIFY_SOCKET` is set; a no-op otherwise).
pub(super) fn notify_systemd(state: &[sd_notify::NotifyState]) {
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
pub(super) fn signals(
    cancel: CancellationToken,
    config_path: Option<PathBuf>,
    overrides: crate::config::Overrides,
    started_with: Config,
    log: LogHandle,
    mut hup: Hangup,
    reload_live: impl Fn(Option<&Config>) -> bool + Send + 'static,
) -> Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    // The configuration `serve` started with loaded in full.
    record_reload(true);
    Ok(async move {
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.0.recv() => {
                    let applied = hangup(
                        || reload(
                            config_path.as_deref(),
                            &overrides,
                            &log,
                            &started_with.log.filter,
                        ),
                        &started_with,
                        &reload_live,
                    );
                    record_reload(applied);
                }
                _ = cancel.cancelled() => {
                    // A drain the node began itself (a listener stopped):
                    // the streams stay, or later signals would be caught
                    // and dropped (tokio never restores the default). The
                    // first stop asks for what runs already; a second
                    // exits at once, as in any drain.
                    stop_signal(&mut term, &mut int).await;
                    tracing::warn!("stop signal while draining; a second one exits at once");
                    break;
                }
            }
        }
        cancel.cancel();
        stop_signal(&mut term, &mut int).await;
        // What the drain logged so far is in the log queue, and exit skips
        // the guard in main that writes it out; at most the queue's exit
        // wait when the output is stalled.
        drop(log.flush_at_exit());
        eprintln!("dialtone: second signal, exiting immediately");
        std::process::exit(130);
    })
}

/// One SIGHUP: `reread` reads the config again (the new one, or `None`
/// when it is invalid, and whether the log file was reopened), then
/// `reload_live` applies what can change live (and says whether all of it
/// was). Whether the whole reload applied: an invalid config, or any part
/// not applied (a certificate, templates or static files that would not
/// load), is one a restart would meet too, and a restart with an invalid
/// config exits 2, which systemd does not retry.
fn hangup(
    reread: impl FnOnce() -> (Option<Config>, bool),
    started_with: &Config,
    reload_live: &impl Fn(Option<&Config>) -> bool,
) -> bool {
    // This task alone hears SIGTERM: a reload that panicked and ended it
    // would leave the process deaf to a stop.
    let reloaded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let (config, reopened) = reread();
        if let Some(new) = &config {
            // Against the running `ban_s`, which waits for a restart.
            crate::config::warn_if_one_address_closes_a_phone(
                &new.provisioning,
                started_with.provisioning.ban_s,
            );
            let waiting = needs_restart(started_with, new);
            if !waiting.is_empty() {
                tracing::warn!(
                    settings = %waiting.join(", "),
                    "SIGHUP: these settings changed but apply only after a restart; the running values stay"
                );
            }
        }
        let live = reload_live(config.as_ref());
        reopened && config.is_some() && live
    }));
    reloaded.unwrap_or_else(|_| {
        dialtone_sync::watcher::failed("reload");
        tracing::error!(
            "SIGHUP: the reload panicked; what it had applied stays, and signals are still heard"
        );
        false
    })
}

/// `dialtone_config_last_reload_successful` and its time: set once at the
/// start (the config `serve` runs with loaded in full), then by each
/// SIGHUP. A failed reload stays 0 until one succeeds, however long after:
/// the bad file is still on disk for the next start.
fn record_reload(successful: bool) {
    metrics::gauge!("dialtone_config_last_reload_successful").set(if successful {
        1.0
    } else {
        0.0
    });
    metrics::gauge!("dialtone_config_last_reload_timestamp_seconds")
        .set(dialtone_sync::now_millis() as f64 / 1000.0);
}

/// The next SIGTERM or SIGINT.
async fn stop_signal(
    term: &mut tokio::signal::unix::Signal,
    int: &mut tokio::signal::unix::Signal,
) {
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// SIGHUP heard from the first moment of `serve`. Startup can take long
/// (migration retries, a load waiting behind an import's lock), and
/// SIGHUP's default action is death: a logrotate or `systemctl reload` in
/// that window killed the node, and systemd counts a death by SIGHUP as a
/// clean stop, so it was not restarted. One that arrives then is applied
/// as a reload once the node is up.
pub(super) struct Hangup(tokio::signal::unix::Signal);

impl Hangup {
    pub(super) fn install() -> Result<Hangup> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Hangup(
            signal(SignalKind::hangup()).context("installing the SIGHUP handler")?,
        ))
    }
}

/// Re-reads the config and applies the log settings; the new config, or
/// `None` when it is invalid (the running one stays), and whether the log
/// file was reopened. `started_filter`: `log.filter` as `serve` started
/// with it.
fn reload(
    path: Option<&std::path::Path>,
    overrides: &crate::config::Overrides,
    log: &LogHandle,
    started_filter: &str,
) -> (Option<Config>, bool) {
    // First, so the lines below land in the new file.
    let reopened = log.reopen();
    if let Err(e) = &reopened {
        // Counted, as every reload that fails, and said on stderr too: the
        // warning goes to the old file, which logrotate has moved away
        // from where it is watched.
        dialtone_sync::watcher::failed("reload");
        eprintln!("dialtone: SIGHUP: log file not reopened ({e}); still writing the old one");
        tracing::warn!(error = %e, "SIGHUP: log file not reopened; still writing the old one");
    }
    let config = match Config::load(path).and_then(|mut config| {
        overrides.apply(&mut config);
        config.validate()?;
        config.check_base_url()?;
        Ok(config)
    }) {
        Ok(config) => {
            if std::env::var_os("RUST_LOG").is_none() {
                if let Err(e) = log.set_filter(&config.log.filter) {
                    tracing::warn!(error = %e, "SIGHUP: log filter not changed");
                }
            } else if config.log.filter != started_filter {
                // Without a word, an operator who edited the filter reads
                // "reloaded" and wonders why the log does not change.
                tracing::warn!(
                    filter = %config.log.filter,
                    "SIGHUP: log.filter changed but not applied: RUST_LOG is set and overrides it"
                );
            }
            tracing::info!("SIGHUP: configuration reloaded");
            Some(config)
        }
        Err(e) => {
            // Counted as a failed task: `systemctl reload` succeeds either
            // way, and a typo that applies nothing must reach an alert.
            dialtone_sync::watcher::failed("reload");
            tracing::warn!(error = %format!("{e:#}"), "SIGHUP: configuration invalid; keeping the running one");
            None
        }
    };
    (config, reopened.is_ok())
}

/// The settings SIGHUP applies (with the log file, reopened by name, and
/// the shipped templates and static files, re-read whatever changed).
const LIVE: &[&str] = &[
    "log.filter",
    "provisioning.ban_burst",
    "provisioning.ban_per_minute",
    "provisioning.ban_known_ttl_s",
    "provisioning.ban_phone_failures",
    "provisioning.render_cache_mb",
];

/// Settings that differ between the config `serve` started with and `new`
/// but only take effect on a restart, by dotted name. Without this an
/// operator who tightens, say, `lookup.source_networks` and sends SIGHUP
/// reads "reloaded" while tenants still reach the old networks.
fn needs_restart(started_with: &Config, new: &Config) -> Vec<String> {
    let (mut before, mut after) = (Vec::new(), Vec::new());
    flatten(
        "",
        &serde_json::to_value(started_with).unwrap_or_default(),
        &mut before,
    );
    flatten(
        "",
        &serde_json::to_value(new).unwrap_or_default(),
        &mut after,
    );
    let before: std::collections::BTreeMap<_, _> = before.into_iter().collect();
    let after: std::collections::BTreeMap<_, _> = after.into_iter().collect();
    let mut changed: Vec<String> = before
        .keys()
        .chain(after.keys())
        .filter(|k| before.get(*k) != after.get(*k) && !LIVE.contains(&k.as_str()))
        .cloned()
        .collect();
    changed.sort_unstable();
    changed.dedup();
    changed
}

/// Every leaf of `value` (arrays count as one) with its dotted path.
fn flatten(prefix: &str, value: &serde_json::Value, out: &mut Vec<(String, serde_json::Value)>) {
    match value {
        serde_json::Value::Object(fields) => {
            for (name, field) in fields {
                let path = if prefix.is_empty() {
                    name.clone()
                } else {
                    format!("{prefix}.{name}")
                };
                flatten(&path, field, out);
            }
        }
        leaf => out.push((prefix.to_string(), leaf.clone())),
    }
}

/// What SIGHUP applies without a restart: ban limits and how long known
/// phones are remembered, the render cache's size, the shipped templates,
/// the static files and the HTTPS certificate (read again from its files).
/// Says whether every part that was read again applied.
pub(super) fn reload_live(
    provisioner: Arc<Provisioner>,
    static_dir: Option<PathBuf>,
    tls: Option<Arc<crate::http_server::TlsFiles>>,
) -> impl Fn(Option<&Config>) -> bool + Send + 'static {
    move |config: Option<&Config>| {
        let mut applied = true;
        if let Some(tls) = &tls {
            match tls.reload() {
                Ok(()) => {
                    tracing::info!(cert = %tls.cert_path().display(), "SIGHUP: TLS certificate reloaded")
                }
                Err(e) => {
                    applied = false;
                    dialtone_sync::watcher::failed("reload");
                    tracing::warn!(error = %e, "SIGHUP: TLS certificate not reloaded; serving the running one")
                }
            }
        }
        if let Some(config) = config {
            let p = &config.provisioning;
            provisioner
                .guard()
                .set_limits(p.ban_burst, p.ban_per_minute);
            provisioner
                .guard()
                .set_known_ttl(std::time::Duration::from_secs(p.ban_known_ttl_s));
            provisioner.guard().set_phone_failures(p.ban_phone_failures);
            if provisioner.resize_render_cache(p.render_cache_mb << 20) {
                tracing::info!(
                    mb = p.render_cache_mb,
                    "SIGHUP: render cache resized (and emptied)"
                );
            }
        }
        match provisioner.reload_shipped() {
            Ok((n, true)) => tracing::info!(
                templates = n,
                "SIGHUP: shipped templates reloaded (rendered files dropped)"
            ),
            Ok((n, false)) => tracing::info!(
                templates = n,
                "SIGHUP: shipped templates unchanged; rendered files kept"
            ),
            Err(e) => {
                applied = false;
                dialtone_sync::watcher::failed("reload");
                tracing::warn!(error = %e, "SIGHUP: shipped templates not reloaded; keeping the running set")
            }
        }
        if let Some(dir) = &static_dir {
            match provisioner.reload_static(dir) {
                Ok(n) => tracing::info!(files = n, "SIGHUP: static files re-indexed"),
                Err(e) => {
                    applied = false;
                    dialtone_sync::watcher::failed("reload");
                    tracing::warn!(error = %e, "SIGHUP: static files not re-indexed; keeping the running index")
                }
            }
        }
        applied
    }
}

#[cfg(test)]
mod tests {
    use super::{hangup, needs_restart, record_reload};
    use crate::config::{Config, Overrides};

    /// The gauge a scrape would show for `name`, from a local recorder.
    fn gauge(handle: &metrics_exporter_prometheus::PrometheusHandle, name: &str) -> Option<f64> {
        handle
            .render()
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    /// A reload that fails in any part leaves the gauge at 0 until one
    /// succeeds: unlike a counter's increase, it does not age out while
    /// the bad file waits on disk for the next start.
    #[test]
    fn the_last_reload_gauge_stays_failed_until_a_reload_succeeds() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let running = Config::default();
        let ok = |_: Option<&Config>| true;
        let successful = "dialtone_config_last_reload_successful";
        let at = "dialtone_config_last_reload_timestamp_seconds";
        metrics::with_local_recorder(&recorder, || record_reload(true));
        assert_eq!(gauge(&handle, successful), Some(1.0));
        let started = gauge(&handle, at).unwrap();
        assert!(started > 1.7e9, "{started}");

        // An invalid config; a part not applied; the log not reopened; a
        // panic: each a failed reload.
        type Reread = Box<dyn FnOnce() -> (Option<Config>, bool)>;
        let failures: [(Reread, bool); 4] = [
            (Box::new(|| (None, true)), true),
            (Box::new(|| (Some(Config::default()), true)), false),
            (Box::new(|| (Some(Config::default()), false)), true),
            (Box::new(|| panic!("a reload that panics")), true),
        ];
        for (reread, live) in failures {
            metrics::with_local_recorder(&recorder, || {
                record_reload(hangup(reread, &running, &|_: Option<&Config>| live))
            });
            assert_eq!(gauge(&handle, successful), Some(0.0));
        }
        assert!(gauge(&handle, at).unwrap() >= started);

        metrics::with_local_recorder(&recorder, || {
            record_reload(hangup(|| (Some(Config::default()), true), &running, &ok))
        });
        assert_eq!(gauge(&handle, successful), Some(1.0));
    }

    /// Listeners and the database given on the command line win over the
    /// file at start and at each reload, so a reload does not name them
    /// as changes awaiting a restart (it did, on every SIGHUP).
    #[test]
    fn command_line_settings_are_not_changes_awaiting_a_restart() {
        let overrides = Overrides {
            database_url: Some("sqlite:///var/lib/other.db".into()),
            listen: Some("127.0.0.1:9999".parse().unwrap()),
            ..Overrides::default()
        };
        let mut running = Config::default();
        overrides.apply(&mut running);
        let mut reread = Config::default();
        let before = needs_restart(&running, &reread);
        assert!(
            before.contains(&"http.listen".to_string()) && before.len() == 2,
            "{before:?}"
        );
        overrides.apply(&mut reread);
        assert!(needs_restart(&running, &reread).is_empty());
    }

    #[test]
    fn a_reload_names_the_changes_that_wait_for_a_restart() {
        let running = Config::default();
        let mut new = running.clone();
        assert!(needs_restart(&running, &new).is_empty());
        new.provisioning.ban_burst += 1;
        new.log.filter = "debug".into();
        assert!(needs_restart(&running, &new).is_empty(), "both apply live");
        new.lookup.source_networks = vec!["10.0.0.0/8".into()];
        new.quotas.phones += 1;
        assert_eq!(
            needs_restart(&running, &new),
            ["lookup.source_networks", "quotas.phones"]
        );
    }
}
