//! SIGHUP and the log: a `log.filter` that `RUST_LOG` keeps from applying
//! is named in a warning, not dropped without a word, and a log file that
//! cannot be reopened is said on stderr and counted as a failed reload.
//! Also SIGHUPs a reload or a start is still reading for.

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
    make_fifo(&config);
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

/// A SIGHUP while `serve` is still reading its config (a logrotate or a
/// config push racing a restart) is a reload once the node runs: its
/// default action killed the node before the handler was installed. The
/// config is a FIFO, so the read is known to be under way when the signal
/// is sent.
#[test]
fn a_sighup_while_the_config_is_read_is_not_fatal() {
    use std::io::Write;

    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let config = dir.path().join("dialtone.toml");
    make_fifo(&config);
    let mut server = Server::spawn(
        dir.path(),
        &url,
        &["--config", config.to_str().unwrap()],
        &[],
    );
    let mut writer = writer_once_read(&config, &server);
    server.signal("HUP");
    std::thread::sleep(Duration::from_millis(200));
    let text = "[log]\nfilter = \"info\"\n";
    // The reload reads the path again: a plain file by then.
    let plain = dir.path().join("dialtone.toml.new");
    std::fs::write(&plain, text).unwrap();
    if let Err(e) = writer.write_all(text.as_bytes()) {
        panic!("serve is gone after the SIGHUP ({e}): {}", server.stderr());
    }
    drop(writer);
    std::fs::rename(&plain, &config).unwrap();

    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(status)) = server.child.try_wait() {
            panic!("serve ended ({status}): {}", server.stderr());
        }
        if server.try_get("/readyz").map(|(s, _)| s) == Some(200)
            && server.stderr().contains("SIGHUP: configuration reloaded")
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never ready and reloaded: {}",
            server.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(server.stop(), 0);
}

/// SIGHUPs that come while a reload runs make one more reload, after it:
/// not one each (a config push signalling every node's file change would
/// queue them), and not none (the config edited and signalled during the
/// reload would never be applied).
#[test]
fn sighups_during_a_reload_make_one_more_reload() {
    use std::io::Write;

    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let text = "[log]\nfilter = \"info\"\n";
    let config = write_file(dir.path(), "dialtone.toml", text);
    let server = Server::start_with_env(
        dir.path(),
        &url,
        &["--config", config.to_str().unwrap()],
        &[],
    );
    let reloads = |server: &Server| {
        server
            .stderr()
            .matches("SIGHUP: configuration reloaded")
            .count()
    };
    std::fs::remove_file(&config).unwrap();
    make_fifo(&config);
    server.signal("HUP");
    let mut writer = writer_once_read(&config, &server);
    for _ in 0..3 {
        server.signal("HUP");
        std::thread::sleep(Duration::from_millis(100));
    }
    let plain = dir.path().join("dialtone.toml.new");
    std::fs::write(&plain, text).unwrap();
    std::fs::rename(&plain, &config).unwrap();
    writer.write_all(text.as_bytes()).unwrap();
    drop(writer);

    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while reloads(&server) < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the stuck reload and one more: {}",
            server.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // A third would follow at once; give it a second to show.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(reloads(&server), 2, "{}", server.stderr());
    assert_eq!(server.stop(), 0);
}

/// The write end of the FIFO at `path`, once `server` has it open for
/// reading: a writer opens without waiting only while a reader has it
/// open, so `serve` is then inside its read of the config.
fn writer_once_read(path: &std::path::Path, server: &Server) -> std::fs::File {
    use std::os::unix::fs::OpenOptionsExt;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
        {
            Ok(writer) => return writer,
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "serve never opened its config: {}",
                    server.stderr()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("opening the FIFO: {e}"),
        }
    }
}

/// A FIFO at `path`: a read of it waits for a writer, as a read on a hung
/// mount waits.
fn make_fifo(path: &std::path::Path) {
    let made = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap();
    assert!(made.success());
}

/// logrotate's SIGHUP behind a reload that never returns (its config on a
/// hung mount; a FIFO stands in) reopens the log file at once: the reload
/// held every later SIGHUP, so the node went on writing the rotated file
/// (deleted at the next rotation) for as long as the mount hung. The
/// config is read again once the stuck reload ends.
#[test]
fn a_log_rotated_behind_a_stuck_reload_is_reopened_at_once() {
    use std::io::Write;

    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let log = dir.path().join("dialtone.log");
    let text = "[log]\nfilter = \"info\"\n";
    let config = write_file(dir.path(), "dialtone.toml", text);
    let server = Server::start_with_env(
        dir.path(),
        &url,
        &["--config", config.to_str().unwrap()],
        &[("DIALTONE_LOG__FILE", log.to_str().unwrap())],
    );
    std::fs::remove_file(&config).unwrap();
    make_fifo(&config);
    server.signal("HUP");
    let mut writer = writer_once_read(&config, &server);
    std::fs::rename(&log, dir.path().join("dialtone.log.1")).unwrap();
    server.signal("HUP");
    let reopened = wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(&log)
            .is_ok_and(|t| t.contains("SIGHUP while the last reload still runs"))
    });
    assert!(
        reopened.is_some(),
        "no new log file while the reload is stuck: {}",
        server.stderr()
    );
    let reloads = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .matches("SIGHUP: configuration reloaded")
            .count()
    };
    assert_eq!(reloads(), 0, "the first reload was meant to be stuck");
    let plain = dir.path().join("dialtone.toml.new");
    std::fs::write(&plain, text).unwrap();
    std::fs::rename(&plain, &config).unwrap();
    writer.write_all(text.as_bytes()).unwrap();
    drop(writer);
    let both = wait_until(Duration::from_secs(30), || reloads() >= 2);
    assert!(
        both.is_some(),
        "the stuck reload and one more: {}",
        server.stderr()
    );
    assert_eq!(server.stop(), 0);
}
