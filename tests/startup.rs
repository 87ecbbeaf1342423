//! Every startup failure `serve` can meet ends with exit code 1 and one last
//! line on stderr naming the cause (and the config key where there is one).
//! The taken port, bad config and unreachable database cases are in cli.rs.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn serve(dir: &std::path::Path, url: &str, extra: &[&str]) -> Command {
    serve_listening(dir, url, &free_addr().to_string(), extra)
}

fn serve_listening(dir: &std::path::Path, url: &str, listen: &str, extra: &[&str]) -> Command {
    let mut cmd = dialtone(dir, url);
    cmd.arg("serve")
        .arg("--listen")
        .arg(listen)
        .arg("--provisioning-listen")
        .arg(free_addr().to_string())
        .args(extra)
        .env("DIALTONE_PROVISIONING__TEMPLATES_DIR", templates_dir());
    cmd
}

/// Runs a start meant to fail (bounded, so one that serves instead fails
/// the test); the exit code and the last stderr line, which must be the
/// error.
fn failure(cmd: Command) -> String {
    let out = run_start_meant_to_fail(cmd);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    let last = stderr.lines().last().unwrap_or_default().to_string();
    assert!(
        last.starts_with("dialtone: "),
        "the error is the last line: {stderr}"
    );
    last
}

#[test]
fn a_privileged_port_without_the_capability_names_it() {
    let lowest = unprivileged_port_start();
    assert!(
        lowest > 69,
        "port 69 is unprivileged here (net.ipv4.ip_unprivileged_port_start = {lowest}): \
         anyone may bind it, so there is no refusal to check"
    );
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let mut cmd = serve(dir.path(), &url, &["--tftp-listen", "127.0.0.1:69"]);
    // As root, drop the capability from the bounding set; as anyone else,
    // it is not there to begin with.
    if is_root() {
        let mut wrapped = std::process::Command::new("setpriv");
        wrapped
            .args([
                "--bounding-set=-net_bind_service",
                "--inh-caps=-net_bind_service",
            ])
            .arg(cmd.get_program())
            .args(cmd.get_args())
            .current_dir(dir.path());
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => wrapped.env(k, v),
                None => wrapped.env_remove(k),
            };
        }
        cmd = wrapped;
    }
    let line = failure(cmd);
    assert!(
        line.contains("127.0.0.1:69") && line.contains("provisioning.tftp_listen"),
        "{line}"
    );
    assert!(line.contains("CAP_NET_BIND_SERVICE"), "{line}");
}

/// The lowest port anyone may bind, per network namespace; without the
/// sysctl, the kernel's fixed 1024.
fn unprivileged_port_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1024)
}

/// The bound on starts meant to fail works on a start that succeeds: the
/// test fails naming the command, and the server is gone (its port free).
#[test]
fn a_start_that_serves_instead_of_failing_is_killed_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let listen = free_addr();
    let cmd = serve_listening(
        dir.path(),
        &url,
        &listen.to_string(),
        &["--tftp-listen", &free_udp_addr().to_string()],
    );
    let started = Instant::now();
    let bound = Duration::from_secs(3);
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_within(cmd, bound)));
    let message = match outcome {
        Ok(out) => panic!("serve exited by itself: {}", text(&out.stderr)),
        Err(panic) => panic.downcast_ref::<String>().cloned().unwrap_or_default(),
    };
    assert!(
        message.contains("did not exit within") && message.contains("serve"),
        "{message}"
    );
    assert!(started.elapsed() < bound + Duration::from_secs(10));
    assert!(
        std::net::TcpListener::bind(listen).is_ok(),
        "the server still holds {listen}"
    );
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_migrated_by_a_newer_binary_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let mut migrate = dialtone(dir.path(), &url);
    migrate.arg("migrate");
    assert!(run(migrate).status.success());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (9999, 'from the future', 1, x'00', 0)",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    let line = failure(serve(
        dir.path(),
        &url,
        &["--tftp-listen", &free_udp_addr().to_string()],
    ));
    assert!(line.contains("9999") && line.contains("newer"), "{line}");
}

#[test]
fn an_unreadable_tls_key_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert_path = write_file(dir.path(), "cert.pem", &cert.cert.pem());
    for (name, key_path) in [
        (
            "garbage",
            write_file(
                dir.path(),
                "garbage.pem",
                "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n",
            ),
        ),
        ("missing", dir.path().join("missing.pem")),
    ] {
        let mut cmd = serve(
            dir.path(),
            &url,
            &["--tftp-listen", &free_udp_addr().to_string()],
        );
        cmd.env(
            "DIALTONE_PROVISIONING__HTTPS_LISTEN",
            free_addr().to_string(),
        )
        .env("DIALTONE_PROVISIONING__TLS_CERT", &cert_path)
        .env("DIALTONE_PROVISIONING__TLS_KEY", &key_path);
        let line = failure(cmd);
        assert!(
            line.contains("tls_key") && line.contains(&key_path.display().to_string()),
            "{name}: {line}"
        );
    }
}

/// A snapshot this binary cannot load (another format, or not a snapshot
/// at all) is logged and ignored: the mirror loads from the database, and
/// the next shutdown writes a current one.
#[test]
fn a_snapshot_of_another_format_falls_back_to_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let server = Server::start(dir.path(), &url, &["--demo"]);
    let counts = server.readyz()["counts"].clone();
    assert_eq!(server.stop(), 0);
    let snapshot = dir.path().join("dialtone.snapshot");
    for (bytes, reason) in [
        (
            &b"DTSNAP\x00\x01 written by an older dialtone"[..],
            "format 1",
        ),
        (
            &b"PK\x03\x04 not a snapshot at all"[..],
            "not a dialtone snapshot",
        ),
    ] {
        std::fs::write(&snapshot, bytes).unwrap();
        let server = Server::start(dir.path(), &url, &[]);
        let ready = server.readyz();
        assert_eq!(ready["loaded_from"], "database");
        assert_eq!(ready["counts"], counts);
        let log = server.stderr();
        assert!(
            log.contains("ignoring the snapshot") && log.contains(reason),
            "{log}"
        );
        assert_eq!(server.stop(), 0);
        // The shutdown replaced it with one this binary reads.
        let server = Server::start(dir.path(), &url, &[]);
        assert_eq!(server.readyz()["loaded_from"], "snapshot");
        assert_eq!(server.stop(), 0);
    }
}
