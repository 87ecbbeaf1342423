//! SIGHUP and the log: a `log.filter` that `RUST_LOG` keeps from applying
//! is named in a warning, not dropped without a word, and a log file that
//! cannot be reopened is said on stderr and counted as a failed reload.

mod common;

use std::time::Duration;

use common::*;

/// `dialtone_background_failures_total{task="reload"}`, 0 when absent.
fn reload_failures(server: &Server) -> f64 {
    let (status, body) = server.try_get("/metrics").expect("/metrics answers");
    assert_eq!(status, 200);
    body.lines()
        .filter(|l| {
            l.starts_with("dialtone_background_failures_total{") && l.contains("task=\"reload\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn a_log_filter_rust_log_overrides_is_named_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let config = write_file(dir.path(), "dialtone.toml", "[log]\nfilter = \"info\"\n");
    let server = Server::start_with_env(
        dir.path(),
        &url,
        &["--config", config.to_str().unwrap()],
        &[("RUST_LOG", "info")],
    );
    // Unchanged: nothing to say.
    server.signal("HUP");
    let reloaded = wait_until(Duration::from_secs(10), || {
        server.stderr().contains("SIGHUP: configuration reloaded")
    });
    assert!(reloaded.is_some(), "{}", server.stderr());
    assert!(!server.stderr().contains("RUST_LOG"), "{}", server.stderr());

    std::fs::write(&config, "[log]\nfilter = \"debug\"\n").unwrap();
    server.signal("HUP");
    let warned = wait_until(Duration::from_secs(10), || {
        server
            .stderr()
            .contains("log.filter changed but not applied: RUST_LOG is set and overrides it")
    });
    assert!(warned.is_some(), "{}", server.stderr());
    assert_eq!(server.stop(), 0);
}

#[test]
fn a_log_file_not_reopened_is_said_on_stderr_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let log = dir.path().join("dialtone.log");
    let server = Server::start_with_env(
        dir.path(),
        &url,
        &[],
        &[("DIALTONE_LOG__FILE", log.to_str().unwrap())],
    );
    assert_eq!(reload_failures(&server), 0.0);
    // Moved away, and a folder where the new file would go: no reopen
    // works, even for root.
    std::fs::rename(&log, dir.path().join("dialtone.log.1")).unwrap();
    std::fs::create_dir(&log).unwrap();
    server.signal("HUP");
    let said = wait_until(Duration::from_secs(10), || {
        server
            .stderr()
            .contains("dialtone: SIGHUP: log file not reopened")
    });
    assert!(said.is_some(), "{}", server.stderr());
    let counted = wait_until(Duration::from_secs(10), || reload_failures(&server) >= 1.0);
    assert!(counted.is_some(), "not counted as a failed reload");
    assert_eq!(server.stop(), 0);
}

/// A reload that never returns (its config on a hung mount; a FIFO stands
/// in) must not keep a stop waiting: the reload held the one task that
/// hears SIGTERM, so `systemctl stop` ended in SIGKILL, with no drain and
/// no snapshot. Meanwhile the node keeps answering.
#[test]
fn a_reload_stuck_reading_does_not_keep_a_stop_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let config = write_file(dir.path(), "dialtone.toml", "[log]\nfilter = \"info\"\n");
    let server = Server::start_with_env(
        dir.path(),
        &url,
        &["--config", config.to_str().unwrap()],
        &[],
    );
    std::fs::remove_file(&config).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(&config)
        .status()
        .unwrap();
    assert!(made.success());
    server.signal("HUP");
    std::thread::sleep(Duration::from_millis(300));
    let (status, _) = server
        .try_get("/healthz")
        .expect("answers during the reload");
    assert_eq!(status, 200);
    assert!(
        !server.stderr().contains("SIGHUP: configuration reloaded"),
        "the reload was meant to be stuck: {}",
        server.stderr()
    );
    assert_eq!(server.stop(), 0);
}
