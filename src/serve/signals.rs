//! Signals and systemd: SIGTERM/SIGINT drain, SIGHUP reloads what can
//! change live, systemd hears about readiness, draining and liveness.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use dialtone_sync::SecretKey;
use dialtone_tftp::Provisioner;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::logging::LogHandle;
pub(super) use running_key::RunningKey;

mod running_key;

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
// What a reload reads and what it compares with, each its own: a struct
// of them would be built once, here, for this one call.
#[allow(clippy::too_many_arguments)]
pub(super) fn signals(
    cancel: CancellationToken,
    config_path: Option<PathBuf>,
    overrides: crate::config::Overrides,
    started_with: Config,
    running_key: &SecretKey,
    log: LogHandle,
    mut hup: Hangup,
    started_whole: bool,
    reload_live: impl Fn(Option<&Config>) -> bool + Send + Sync + 'static,
) -> Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    // The configuration `serve` started with loaded in full, and the
    // shipped templates too unless served as read.
    record_reload(started_whole);
    let reload_state = Arc::new(ReloadState {
        running_key: RunningKey::new(Some(running_key.check_value()), &started_with),
        config_path,
        overrides,
        log: log.clone(),
        started_with,
        reload_live,
    });
    Ok(async move {
        // A SIGHUP heard while a reload ran: one more reload follows it.
        let mut again = false;
        'heard: loop {
            if !again {
                tokio::select! {
                    _ = term.recv() => break,
                    _ = int.recv() => break,
                    _ = hup.0.recv() => {}
                    _ = cancel.cancelled() => {
                        // A drain the node began itself (a listener
                        // stopped): the streams stay, or later signals
                        // would be caught and dropped (tokio never restores
                        // the default). The first stop asks for what runs
                        // already; a second exits at once, as in any drain.
                        stop_signal(&mut term, &mut int).await;
                        tracing::warn!("stop signal while draining; a second one exits at once");
                        break;
                    }
                }
            }
            again = false;
            // Off the async workers: a reload reads files (the config, a
            // certificate, templates, a static folder of up to 100,000
            // files), and one that never returns (a hung mount, a FIFO)
            // held this task, so no stop was heard; one that took half a
            // second held a worker every listener shares. The key check
            // may wait on the database. A stop meanwhile leaves it behind.
            let state = reload_state.clone();
            let runtime = tokio::runtime::Handle::current();
            let mut reloading =
                tokio::task::spawn_blocking(move || runtime.block_on(state.hangup()));
            let mut reopening: Option<tokio::task::JoinHandle<()>> = None;
            loop {
                tokio::select! {
                    applied = &mut reloading => {
                        record_reload(applied.unwrap_or(false));
                        break;
                    }
                    _ = hup.0.recv() => {
                        // However many come, one more reload once this one
                        // ends (a config push signalling every file change
                        // would queue them). The log file is reopened now:
                        // logrotate's SIGHUP behind a reload stuck on a hung
                        // mount left every line going to the rotated file,
                        // deleted at the next rotation, for as long as the
                        // mount hung.
                        again = true;
                        if reopening.as_ref().is_none_or(|r| r.is_finished()) {
                            let log = reload_state.log.clone();
                            reopening = Some(tokio::task::spawn_blocking(move || {
                                reopen_behind_a_reload(&log)
                            }));
                        }
                    }
                    _ = term.recv() => break 'heard,
                    _ = int.recv() => break 'heard,
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

/// A SIGHUP that came while a reload still runs: the log file is reopened
/// at once, the configuration read again once that reload ends.
fn reopen_behind_a_reload(log: &LogHandle) {
    if reopen_log(log) {
        tracing::warn!(
            "SIGHUP while the last reload still runs: the log reopened now, the \
             configuration read again once that reload ends"
        );
    }
}

/// Reopens the log file by name; whether it was. A failure is counted, as
/// every reload that fails, and said on stderr too: the warning goes to
/// the old file, which logrotate has moved away from where it is watched.
fn reopen_log(log: &LogHandle) -> bool {
    let Err(e) = log.reopen() else {
        return true;
    };
    dialtone_sync::watcher::failed("reload");
    eprintln!("dialtone: SIGHUP: log file not reopened ({e}); still writing the old one");
    tracing::warn!(error = %e, "SIGHUP: log file not reopened; still writing the old one");
    false
}

/// What a reload reads and compares with, shared with the thread that
/// runs it.
struct ReloadState<L> {
    running_key: RunningKey,
    config_path: Option<PathBuf>,
    overrides: crate::config::Overrides,
    log: LogHandle,
    started_with: Config,
    reload_live: L,
}

impl<L: Fn(Option<&Config>) -> bool> ReloadState<L> {
    async fn hangup(&self) -> bool {
        hangup(
            || {
                reload(
                    self.config_path.as_deref(),
                    &self.overrides,
                    &self.log,
                    &self.started_with.log.filter,
                )
            },
            &self.started_with,
            &self.reload_live,
            &self.running_key,
        )
        .await
    }
}

/// One SIGHUP: `reread` reads the config again (the new one, or `None`
/// when it is invalid, and whether the log file was reopened), then
/// `reload_live` applies what can change live (and says whether all of it
/// was), and the secrets key the next start would read is checked
/// ([`RunningKey::opens_the_next_start`]). Whether the whole reload
/// applied: an invalid config, any part not applied (a certificate,
/// templates or static files that would not load) or a key the database
/// refuses is one a restart would meet too, and a restart with an invalid
/// config exits 2, which systemd does not retry.
pub(super) async fn hangup(
    reread: impl FnOnce() -> (Option<Config>, bool),
    started_with: &Config,
    reload_live: &impl Fn(Option<&Config>) -> bool,
    running_key: &RunningKey,
) -> bool {
    use futures::FutureExt;
    let (applied, config) = reread_and_apply(reread, started_with, reload_live);
    let Some(new) = &config else {
        return applied;
    };
    // Caught for the same reason as the rest of the reload below.
    let key_kept = std::panic::AssertUnwindSafe(running_key.opens_the_next_start(new))
        .catch_unwind()
        .await
        .unwrap_or_else(|_| {
            dialtone_sync::watcher::failed("reload");
            tracing::error!("SIGHUP: the secrets key check panicked; signals are still heard");
            false
        });
    key_kept && applied
}

/// [`hangup`] up to the key check: whether what it read applied, and the
/// config it read (`None` when invalid, or when the reload panicked).
fn reread_and_apply(
    reread: impl FnOnce() -> (Option<Config>, bool),
    started_with: &Config,
    reload_live: &impl Fn(Option<&Config>) -> bool,
) -> (bool, Option<Config>) {
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
        (reopened && config.is_some() && live, config)
    }));
    reloaded.unwrap_or_else(|_| {
        dialtone_sync::watcher::failed("reload");
        tracing::error!(
            "SIGHUP: the reload panicked; what it had applied stays, and signals are still heard"
        );
        (false, None)
    })
}

/// `dialtone_config_last_reload_successful` and its time: set once at the
/// start (the config `serve` runs with loaded in full), then by each
/// SIGHUP. A failed reload stays 0 until one succeeds, however long after:
/// the bad file is still on disk for the next start.
pub(super) fn record_reload(successful: bool) {
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
pub struct Hangup(tokio::signal::unix::Signal);

impl Hangup {
    /// Within a runtime (`Runtime::enter`).
    pub fn install() -> Result<Hangup> {
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
    let reopened = reopen_log(log);
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
    (config, reopened)
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
pub(super) fn needs_restart(started_with: &Config, new: &Config) -> Vec<String> {
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

/// The condition a node holds while it serves shipped templates that did
/// not read whole at its start (`/readyz` "degraded").
pub(super) const SHIPPED_TEMPLATES: &str = "shipped-templates";

/// What SIGHUP applies without a restart: ban limits and how long known
/// phones are remembered, the render cache's size, the shipped templates,
/// the static files and the HTTPS certificate (read again from its files).
/// Says whether every part that was read again applied.
pub(super) fn reload_live(
    provisioner: Arc<Provisioner>,
    supervisor: crate::supervise::Supervisor,
    static_dir: Option<PathBuf>,
    tls: Option<Arc<crate::http_server::TlsFiles>>,
) -> impl Fn(Option<&Config>) -> bool + Send + 'static {
    move |config: Option<&Config>| {
        let mut applied = true;
        if let Some(tls) = &tls {
            if !tls.reload_logged() {
                applied = false;
                dialtone_sync::watcher::failed("reload");
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
        let reloaded = provisioner.reload_shipped();
        if reloaded.is_ok() && supervisor.hold(SHIPPED_TEMPLATES, false) {
            tracing::info!("SIGHUP: the shipped templates read whole; no longer degraded");
        }
        match reloaded {
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
                    tracing::warn!(error = %e, "SIGHUP: static files not re-indexed; the running index stays, and a file it lists that cannot be opened now is answered not found")
                }
            }
        }
        applied
    }
}
