//! `check-config` vouches for `serve`: what `serve` would refuse at start
//! (a clash of its own listeners, files it cannot use) fails `check-config`
//! as a configuration error, exit 2, every problem listed. And what the
//! drain and the log file leave behind.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

/// `check-config` on a SQLite database in `dir`, with the key left to the
/// key file beside it.
fn check_config(dir: &Path) -> Command {
    let mut cmd = dialtone(dir, &sqlite_url(dir));
    cmd.env_remove("DIALTONE_SECRETS__KEY").arg("check-config");
    cmd
}

fn issue_tls(dir: &Path, name: &str) -> (String, String) {
    let issued = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = write_file(dir, &format!("{name}.crt"), &issued.cert.pem());
    let key = write_file(
        dir,
        &format!("{name}.key"),
        &issued.signing_key.serialize_pem(),
    );
    (cert.display().to_string(), key.display().to_string())
}

/// Each problem on its own line, the start's error for it; nothing
/// written: no key file made for the one that does not parse to be
/// replaced, no log file.
#[test]
fn check_config_lists_every_file_serve_could_not_use() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, _) = issue_tls(dir.path(), "a");
    let (_, other_key) = issue_tls(dir.path(), "b");
    write_file(dir.path(), "dialtone.key", "too short\n");
    let not_a_folder = write_file(dir.path(), "firmware", "");
    // Below a file, not a folder: a log folder not there yet is no
    // problem (systemd's LogsDirectory= makes it at the start).
    let log = not_a_folder.join("dialtone.log");
    let mut cmd = check_config(dir.path());
    cmd.env(
        "DIALTONE_PROVISIONING__HTTPS_LISTEN",
        free_addr().to_string(),
    )
    .env("DIALTONE_PROVISIONING__TLS_CERT", &cert)
    .env("DIALTONE_PROVISIONING__TLS_KEY", &other_key)
    .env("DIALTONE_PROVISIONING__STATIC_DIR", &not_a_folder)
    .env("DIALTONE_LOG__FILE", &log);
    let out = run(cmd);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 4, "{err}");
    for (line, names) in lines.iter().zip([
        "provisioning.tls_cert/tls_key",
        "secret key file",
        "provisioning.static_dir",
        "log.file",
    ]) {
        assert!(
            line.starts_with("dialtone: invalid configuration: ") && line.contains(names),
            "{names}: {err}"
        );
    }
    assert!(text(&out.stdout).is_empty());
    assert_eq!(
        std::fs::read_to_string(dir.path().join("dialtone.key")).unwrap(),
        "too short\n"
    );
}

/// A key file not made yet is `serve`'s to make: `check-config` passes
/// and makes none.
#[test]
fn check_config_passes_without_creating_the_key_or_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = issue_tls(dir.path(), "a");
    let log = dir.path().join("dialtone.log");
    let mut cmd = check_config(dir.path());
    cmd.env(
        "DIALTONE_PROVISIONING__HTTPS_LISTEN",
        free_addr().to_string(),
    )
    .env("DIALTONE_PROVISIONING__TLS_CERT", &cert)
    .env("DIALTONE_PROVISIONING__TLS_KEY", &key)
    .env("DIALTONE_PROVISIONING__STATIC_DIR", dir.path())
    .env("DIALTONE_LOG__FILE", &log);
    let out = run(cmd);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!dir.path().join("dialtone.key").exists());
    assert!(!log.exists());
}

/// Two listeners on one address were a start that failed with "Address
/// already in use", as if another program held the port, after
/// `check-config` passed. Both keys are named, from the file or the
/// command line, by `check-config` and `serve` alike.
#[test]
fn listeners_sharing_an_address_fail_check_config_and_serve_alike() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let shared = free_addr().to_string();
    let mut cmd = dialtone(dir.path(), &url);
    cmd.env("DIALTONE_HTTP__LISTEN", &shared)
        .env("DIALTONE_HTTP__MONITORING_LISTEN", &shared)
        .arg("check-config");
    let out = run(cmd);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("http.listen") && err.contains("http.monitoring_listen"),
        "{err}"
    );
    let mut cmd = dialtone(dir.path(), &url);
    cmd.args([
        "serve",
        "--listen",
        &shared,
        "--provisioning-listen",
        &shared,
    ])
    .args(["--tftp-listen", &free_udp_addr().to_string()]);
    let out = run(cmd);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("http.listen") && err.contains("provisioning.http_listen"),
        "{err}"
    );
    assert!(!err.contains("Address already in use"), "{err}");
}

/// A provisioning port of 0 in the URL phones keep is refused by name; a
/// connection wait no connection opens within, and two keys of which one
/// would silently win, are said and the node still starts.
#[test]
fn settings_serve_cannot_run_with_are_configuration_errors() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let mut cmd = dialtone(dir.path(), &url);
    cmd.env("DIALTONE_PROVISIONING__HTTP_LISTEN", "127.0.0.1:0")
        .arg("check-config");
    let out = run(cmd);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("provisioning.base_url"), "{err}");
    // Too short a wait for a connection is raised and said, not refused.
    let mut cmd = dialtone(dir.path(), &url);
    cmd.env("DIALTONE_DATABASE__ACQUIRE_TIMEOUT_MS", "0")
        .arg("check-config");
    let out = run(cmd);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("database.acquire_timeout_ms"), "{err}");
    // Both keys: `key` is used, said, and the node still starts.
    let mut cmd = dialtone(dir.path(), &url);
    cmd.env("DIALTONE_SECRETS__KEY_FILE", "/etc/dialtone/key")
        .arg("check-config");
    let out = run(cmd);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("secrets.key and secrets.key_file"), "{err}");
    let mut cmd = dialtone(dir.path(), &url);
    cmd.args(["serve", "--provisioning-listen", "127.0.0.1:0"])
        .args(["--listen", &free_addr().to_string(), "--tftp-listen", "off"]);
    let out = run(cmd);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("http://127.0.0.1:0"), "{err}");
}

/// TLS files without the HTTPS listener that reads them are accepted
/// and said to be unused.
#[test]
fn tls_files_without_https_are_warned_of() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = dialtone(dir.path(), &sqlite_url(dir.path()));
    cmd.env("DIALTONE_PROVISIONING__TLS_CERT", "/etc/dialtone/cert.pem")
        .env("DIALTONE_PROVISIONING__TLS_KEY", "/etc/dialtone/key.pem")
        .arg("check-config");
    let out = run(cmd);
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("WARN") && err.contains("tls_cert and tls_key are ignored"),
        "{err}"
    );
}

/// A final snapshot that could not be written leaves the next start with
/// none (or an older one) while the database is down: an error in the
/// log, not a warning. Its folder is checked before: `check-config`
/// names it, and `serve` starts (the snapshot is insurance) but warns at
/// once and counts it as the snapshot's failure, where the first word
/// used to come a minute later, or, as here, only at the stop.
#[test]
fn a_final_snapshot_not_written_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let snapshot = dir.path().join("no-such-folder").join("dialtone.snapshot");
    let mut cmd = check_config(dir.path());
    cmd.env("DIALTONE_MIRROR__SNAPSHOT_PATH", &snapshot);
    let out = run(cmd);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.lines()
            .any(|l| l.starts_with("dialtone: invalid configuration: ")
                && l.contains("mirror.snapshot_path")
                && l.contains("no such folder")),
        "{err}"
    );
    let server = Server::start_with_env(
        dir.path(),
        &sqlite_url(dir.path()),
        &[],
        &[
            ("DIALTONE_MIRROR__SNAPSHOT_PATH", snapshot.to_str().unwrap()),
            ("DIALTONE_MIRROR__SNAPSHOT_INTERVAL_S", "0"),
        ],
    );
    let warned = |log: &str| {
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("cannot write the snapshot"))
    };
    // Lines reach stderr from the log's own thread.
    let said = wait_until(Duration::from_secs(10), || warned(&server.stderr()));
    assert!(said.is_some(), "{}", server.stderr());
    let failures: f64 = {
        let (_, metrics) = server.try_get("/metrics").expect("/metrics answers");
        metrics
            .lines()
            .filter(|l| l.starts_with("dialtone_background_failures_total{task=\"snapshot\"}"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert_eq!(failures, 1.0);
    // Where `Server` sends the child's stderr, read after it exits.
    let stderr = dir.path().join(format!("serve-{}.log", server.addr.port()));
    assert_eq!(server.stop(), 0);
    let log = std::fs::read_to_string(stderr).unwrap();
    let line = log
        .lines()
        .find(|l| l.contains("writing the final snapshot failed"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(line.contains("ERROR"), "{log}");
}

/// `snapshot_path` naming a folder (`/var/lib/dialtone`) passed: its
/// parent is writable, and then every snapshot write failed renaming onto
/// the folder, so the node never had a snapshot to start from.
#[test]
fn a_snapshot_path_naming_a_folder_fails_check_config() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("state");
    std::fs::create_dir(&folder).unwrap();
    let mut cmd = check_config(dir.path());
    cmd.env("DIALTONE_MIRROR__SNAPSHOT_PATH", &folder);
    let out = run(cmd);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.lines().any(|l| l.contains("mirror.snapshot_path")
            && l.contains("is not a file")
            && l.contains("not its folder")),
        "{err}"
    );
}
