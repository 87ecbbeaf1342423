//! The binary's contract with operators: exit codes, one-line errors, import
//! behaviour, snapshot starts and clean shutdown.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// Keeps tests that start `serve` by hand off the default phone-facing ports.
fn free_phone_listeners(cmd: &mut std::process::Command) {
    cmd.arg("--provisioning-listen")
        .arg(free_addr().to_string())
        .arg("--tftp-listen")
        .arg(free_udp_addr().to_string());
}

/// `serve` with every listener on a free port: for a start that is meant
/// to fail before it binds anything.
fn serve_on_free_ports(cmd: &mut std::process::Command) {
    cmd.arg("serve")
        .arg("--listen")
        .arg(free_addr().to_string());
    free_phone_listeners(cmd);
}

#[test]
fn invalid_config_names_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_file(
        dir.path(),
        "dialtone.toml",
        "[database]\nurl = \"sqlite://x.db\"\n\n[mirror]\npoll_intervall_ms = 5\n",
    );
    let mut cmd = dialtone(dir.path(), "sqlite://x.db");
    cmd.env_remove("DIALTONE_DATABASE__URL")
        .arg("--config")
        .arg(&config)
        .arg("check-config");
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("line 5") && err.contains("poll_intervall_ms"),
        "{err}"
    );
}

/// `serve` needs a key: a configuration that gives none and leaves it no
/// place (a database URL without a file), or gives one that does not
/// parse, fails `check-config` and the start alike, as a configuration
/// error (exit 2), without creating a key file.
#[test]
fn a_key_serve_could_not_have_fails_check_config() {
    let dir = tempfile::tempdir().unwrap();
    for (url, key, wanted) in [
        ("sqlite://", None, "no key configured"),
        ("sqlite://x.db", Some("not-a-key"), "secrets.key"),
    ] {
        for command in ["check-config", "serve"] {
            let mut cmd = dialtone(dir.path(), url);
            cmd.env_remove("DIALTONE_SECRETS__KEY");
            if let Some(key) = key {
                cmd.env("DIALTONE_SECRETS__KEY", key);
            }
            if command == "serve" {
                serve_on_free_ports(&mut cmd);
            } else {
                cmd.arg(command);
            }
            let out = run_start_meant_to_fail(cmd);
            let err = text(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{url} {command:?}: {err}");
            assert!(err.contains(wanted), "{url} {command:?}: {err}");
        }
    }
    assert!(!dir.path().join("x.key").exists());
}

#[test]
fn check_config_masks_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = dialtone(
        dir.path(),
        "postgres://dialtone:hunter2@db.example.net/dialtone",
    );
    cmd.arg("check-config");
    let out = run(cmd);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(
        shown.contains("[database]") && shown.contains("dialtone:********@db.example.net"),
        "{shown}"
    );
    assert!(
        !shown.contains("hunter2") && !shown.contains(TEST_KEY),
        "{shown}"
    );
}

/// A log file that cannot be opened stops `serve` with the reason, rather
/// than a node logging somewhere nobody watches.
#[test]
fn an_unwritable_log_file_stops_serve_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("no-such-folder").join("dialtone.log");
    let mut cmd = dialtone(dir.path(), &sqlite_url(dir.path()));
    cmd.env("DIALTONE_LOG__FILE", &log);
    serve_on_free_ports(&mut cmd);
    let out = run_start_meant_to_fail(cmd);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.trim().starts_with("dialtone: cannot open the log file") && err.contains("(log.file)"),
        "{err}"
    );
}

#[test]
fn unreachable_database_without_snapshot_exits_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_addr().port();
    let mut cmd = dialtone(
        dir.path(),
        &format!("postgres://dialtone@127.0.0.1:{port}/none"),
    );
    serve_on_free_ports(&mut cmd);
    let out = run_start_meant_to_fail(cmd);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    let last = err.trim().lines().last().unwrap_or("");
    assert!(
        last.starts_with("dialtone: ")
            && last.contains("unreachable")
            && last.contains("no snapshot"),
        "{err}"
    );
    assert!(
        last.contains("Connection refused"),
        "the real cause should be named: {err}"
    );
}

/// A command that needs the database names why it cannot reach it, not
/// the pool's "timed out while waiting for an open connection".
#[test]
fn commands_name_why_the_database_is_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("postgres://dialtone@127.0.0.1:{}/none", free_addr().port());
    for command in [&["migrate"][..], &["token", "list"], &["export", "-"]] {
        let mut cmd = dialtone(dir.path(), &url);
        cmd.args(command);
        let out = run(cmd);
        assert_eq!(out.status.code(), Some(1), "{command:?}");
        let err = text(&out.stderr);
        assert!(
            err.contains("cannot reach database") && err.contains("Connection refused"),
            "{command:?}: {err}"
        );
    }
}

#[test]
fn taken_port_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    for (flag, key) in [
        ("--listen", "(http.listen)"),
        ("--monitoring-listen", "(http.monitoring_listen)"),
    ] {
        let mut cmd = dialtone(dir.path(), &sqlite_url(dir.path()));
        cmd.arg("serve").arg(flag).arg(addr.to_string());
        if flag != "--listen" {
            cmd.arg("--listen").arg(free_addr().to_string());
        }
        free_phone_listeners(&mut cmd);
        let out = run_start_meant_to_fail(cmd);
        assert_eq!(out.status.code(), Some(1), "{flag}");
        let err = text(&out.stderr);
        assert!(
            err.contains(&addr.to_string()) && err.contains("cannot listen") && err.contains(key),
            "{flag}: {err}"
        );
    }
}

#[test]
fn malformed_import_names_position_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let tenants = write_file(dir.path(), "tenants.csv", TENANTS_CSV);
    let mut bad = phones_csv(1, 3);
    bad.push_str("acme,00:15:65:zz:00:09,yealink,T46S,1,109,Desk,pw,sip.example.net\n");
    let phones = write_file(dir.path(), "phones.csv", &bad);
    let mut cmd = dialtone(dir.path(), &url);
    cmd.arg("import").arg(&tenants).arg(&phones);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("phones.csv:5:2 (mac)"), "{err}");
    assert!(err.contains("nothing was written"), "{err}");

    // The tenant from the same failed run was not written either.
    let mut cmd = dialtone(dir.path(), &url);
    cmd.arg("import").arg(&tenants);
    let out = run(cmd);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("tenants +1 ~0 =0"),
        "{}",
        text(&out.stdout)
    );

    // --skip-invalid imports the valid rows.
    let mut cmd = dialtone(dir.path(), &url);
    cmd.arg("import").arg("--skip-invalid").arg(&phones);
    let out = run(cmd);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("phones +3"),
        "{}",
        text(&out.stdout)
    );
}

/// Through the binary, as an operator runs it: a relabelling CSV keeps
/// the lines and SIP passwords its header leaves out, and the export shows
/// them as they were.
#[test]
fn a_relabelling_csv_keeps_lines_and_passwords() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let tenants = write_file(dir.path(), "tenants.csv", TENANTS_CSV);
    let phones = write_file(dir.path(), "phones.csv", &phones_csv(1, 3));
    let mut cmd = dialtone(dir.path(), &url);
    cmd.arg("import").arg(&tenants).arg(&phones);
    let out = run(cmd);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let labels = write_file(
        dir.path(),
        "labels.csv",
        "tenant,mac,family,label\nacme,00:15:65:00:00:02,yealink,Front desk\n",
    );
    let mut cmd = dialtone(dir.path(), &url);
    cmd.arg("import").arg(&labels);
    let out = run(cmd);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut cmd = dialtone(dir.path(), &url);
    cmd.args(["export", "-", "--format", "csv"]);
    let out = run(cmd);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let exported = text(&out.stdout);
    let row = (exported.lines())
        .find(|l| l.contains("001565000002") || l.contains("00:15:65:00:00:02"))
        .unwrap_or_else(|| panic!("no row for the phone: {exported}"));
    for kept in [
        "Front desk",
        "T46S",
        "102",
        "Desk 2",
        "pw2",
        "sip.example.net",
    ] {
        assert!(row.contains(kept), "{kept} missing from {row}");
    }
}

/// `--skip-invalid` skips rows, never a whole file: a JSON document that
/// does not parse, or a CSV whose header has a misspelt column, stops the
/// run and nothing of it is written.
#[test]
fn skip_invalid_does_not_skip_a_whole_file() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let tenants = write_file(dir.path(), "tenants.csv", TENANTS_CSV);
    let phones = write_file(dir.path(), "phones.csv", &phones_csv(1, 3));
    let broken_json = write_file(
        dir.path(),
        "more.json",
        r#"{"phones": [{"tenant": "acme", "mac": "001565000042", "family": "yealink", "lines": 7}]}"#,
    );
    let misspelt = write_file(
        dir.path(),
        "misspelt.csv",
        &phones_csv(40, 2).replacen("display_name", "dispaly_name", 1),
    );
    for spoiled in [&broken_json, &misspelt] {
        let mut cmd = dialtone(dir.path(), &url);
        cmd.arg("import")
            .arg("--skip-invalid")
            .arg(&tenants)
            .arg(&phones)
            .arg(spoiled);
        let out = run(cmd);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
        let err = text(&out.stderr);
        assert!(
            err.contains("skips rows, not files") && err.contains("nothing was written"),
            "{err}"
        );
    }
    // Nothing of either run was written: the tenant is new now.
    let mut cmd = dialtone(dir.path(), &url);
    cmd.arg("import").arg(&tenants);
    let out = run(cmd);
    assert!(
        text(&out.stdout).contains("tenants +1 ~0 =0"),
        "{}",
        text(&out.stdout)
    );
}

/// Phones naming tenants that do not exist are every one reported, and
/// `--skip-invalid` skips them all and imports the rest, on the bulk path
/// (thousands of phones) as on the row-by-row one.
#[test]
fn every_phone_of_an_unknown_tenant_is_reported_and_skipped() {
    for phones in [3000u32, 40] {
        let dir = tempfile::tempdir().unwrap();
        let url = sqlite_url(dir.path());
        let tenants = write_file(dir.path(), "tenants.csv", TENANTS_CSV);
        let mut csv = phones_csv(1, phones);
        let mut lines: Vec<String> = csv.lines().map(str::to_string).collect();
        // Every third phone names a tenant no one created, one a second.
        for (n, line) in lines.iter_mut().enumerate().skip(1) {
            if n % 3 == 0 {
                *line = line.replacen("acme,", "acne,", 1);
            }
        }
        lines[2] = lines[2].replacen("acme,", "acme-typo,", 1);
        csv = lines.join("\n") + "\n";
        let refused = (1..=phones as usize).filter(|n| n % 3 == 0).count() + 1;
        let path = write_file(dir.path(), "phones.csv", &csv);
        let mut cmd = dialtone(dir.path(), &url);
        cmd.arg("import").arg(&tenants).arg(&path);
        let out = run(cmd);
        assert_eq!(out.status.code(), Some(1));
        let err = text(&out.stderr);
        // One run names them all, each tenant that does not exist.
        let reported = err.lines().filter(|l| l.contains("unknown tenant")).count();
        assert_eq!(reported, refused, "{phones}: {err}");
        assert!(
            err.contains("phones.csv:4:1: unknown tenant \"acne\""),
            "{err}"
        );
        assert!(
            err.contains("phones.csv:3:1: unknown tenant \"acme-typo\""),
            "{err}"
        );
        assert!(err.contains(&format!("{refused} phones refused")), "{err}");
        assert!(err.contains("nothing was written"), "{err}");
        // Nothing of it was written: the tenant file's tenant is new now.
        let mut cmd = dialtone(dir.path(), &url);
        cmd.arg("import").arg(&tenants);
        assert!(text(&run(cmd).stdout).contains("tenants +1"));

        let mut cmd = dialtone(dir.path(), &url);
        cmd.arg("import").arg("--skip-invalid").arg(&path);
        let out = run(cmd);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let err = text(&out.stderr);
        let skipped = err.lines().filter(|l| l.ends_with("(skipped)")).count();
        assert_eq!(skipped, refused, "{err}");
        assert!(
            err.contains("unknown tenant \"acme-typo\" (skipped)"),
            "{err}"
        );
        let imported = format!("phones +{}", phones as usize - refused);
        assert!(
            text(&out.stdout).contains(&imported),
            "{imported}: {}",
            text(&out.stdout)
        );
    }
}

#[test]
fn unknown_tenant_rejected_by_the_database_is_located() {
    let dir = tempfile::tempdir().unwrap();
    let phones = write_file(dir.path(), "phones.csv", &phones_csv(1, 2));
    let mut cmd = dialtone(dir.path(), &sqlite_url(dir.path()));
    cmd.arg("import").arg(&phones);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("phones.csv:2:1") && err.contains("unknown tenant \"acme\""),
        "{err}"
    );
}

#[test]
fn import_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let tenants = write_file(dir.path(), "tenants.csv", TENANTS_CSV);
    let phones = write_file(dir.path(), "phones.csv", &phones_csv(1, 20));
    let json = write_file(
        dir.path(),
        "directory.json",
        r#"{"directory": [{"tenant": "acme", "name": "Alice Example", "numbers": [{"number": "+1 (555) 010-1234", "kind": "work"}]}]}"#,
    );
    for round in 0..2 {
        let mut cmd = dialtone(dir.path(), &url);
        cmd.arg("import").arg(&tenants).arg(&phones).arg(&json);
        let out = run(cmd);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let summary = text(&out.stdout);
        if round == 0 {
            assert!(
                summary.contains("phones +20 ~0 =0") && summary.contains("directory entries +1"),
                "{summary}"
            );
        } else {
            assert!(
                summary.contains("phones +0 ~0 =20") && summary.contains("lines +0 ~0 =20"),
                "{summary}"
            );
        }
    }
}

#[test]
fn demo_serve_and_clean_shutdown_with_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    // No key configured: the embedded default generates one.
    let no_key = [("DIALTONE_SECRETS__KEY", "")];
    let server = Server::start_with_env(dir.path(), &url, &["--demo"], &no_key);
    let ready = server.readyz();
    assert_eq!(ready["loaded_from"], "database");
    assert_eq!(ready["counts"]["tenants"], 1);
    assert!(ready["counts"]["phones"].as_u64().unwrap() >= 8);
    assert_eq!(server.try_get("/healthz").map(|(s, _)| s), Some(200));
    assert_eq!(server.stop(), 0);
    assert!(
        dir.path().join("dialtone.snapshot").exists(),
        "no snapshot written at shutdown"
    );
    // The key file for the embedded default is private.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("dialtone.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // The next start takes the fast path: snapshot, then catch up.
    let server = Server::start_with_env(dir.path(), &url, &[], &no_key);
    assert_eq!(server.readyz()["loaded_from"], "snapshot");
    assert_eq!(server.readyz()["counts"], ready["counts"]);
    assert_eq!(server.stop(), 0);
}

/// Another process's write reaches a running node through SQLite's
/// `data_version` (checked every 0.5 s), not the heartbeat: the heartbeat
/// (`mirror.poll_interval_ms`, here at its 10 s maximum) syncs no sooner
/// than 10 s after the previous sync, so a sync bringing the write before
/// then was woken, and nothing else in this test wakes it.
#[test]
fn f_sqlite_write_from_another_process_appears() {
    const HEARTBEAT: Duration = Duration::from_secs(10);
    // Time the import may take and still leave a woken sync clearly apart
    // from the heartbeat's; a slower one (a busy machine) goes again.
    const IMPORT_WINDOW: Duration = Duration::from_secs(6);
    const ATTEMPTS: u32 = 3;
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let tenants = write_file(dir.path(), "tenants.csv", TENANTS_CSV);
    let mut cmd = dialtone(dir.path(), &url);
    cmd.arg("import").arg(&tenants);
    assert!(run(cmd).status.success());
    let server = Server::start_with_env(
        dir.path(),
        &url,
        &[],
        &[(
            "DIALTONE_MIRROR__POLL_INTERVAL_MS",
            &HEARTBEAT.as_millis().to_string(),
        )],
    );
    assert_eq!(server.phones(), 0);
    let last_sync = || {
        let lag = server.readyz()["lag_ms"]
            .as_u64()
            .expect("readyz has lag_ms");
        Instant::now() - Duration::from_millis(lag)
    };
    for attempt in 1..=ATTEMPTS {
        // Start right after a sync, so the import has most of a heartbeat.
        let recent = wait_until(HEARTBEAT + Duration::from_secs(5), || {
            last_sync().elapsed() < Duration::from_secs(1)
        });
        assert!(recent.is_some(), "no heartbeat sync: {}", server.stderr());
        let synced = last_sync();
        let phones = write_file(dir.path(), "phones.csv", &phones_csv(attempt * 10, 5));
        let mut cmd = dialtone(dir.path(), &url);
        cmd.arg("import").arg(&phones);
        let out = run(cmd);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let imported = synced.elapsed();
        let arrived = wait_until(Duration::from_secs(30), || {
            server.phones() == u64::from(attempt) * 5
        });
        assert!(
            arrived.is_some(),
            "write from another process never appeared: {}",
            server.stderr()
        );
        if imported > IMPORT_WINDOW && attempt < ATTEMPTS {
            eprintln!("the import took {imported:?} after the sync; again");
            continue;
        }
        let brought_by = last_sync().saturating_duration_since(synced);
        eprintln!("import done {imported:?}, synced {brought_by:?} after the previous sync");
        assert!(
            brought_by < HEARTBEAT - Duration::from_secs(1),
            "the write came only with the heartbeat ({brought_by:?} after the previous \
             sync): data_version did not wake the mirror"
        );
        assert_eq!(server.stop(), 0);
        return;
    }
}

#[test]
fn reload_all_makes_a_running_node_reload() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let server = Server::start(dir.path(), &url, &["--demo"]);
    assert_eq!(server.readyz()["full_reloads"], 0);
    let mut cmd = dialtone(dir.path(), &url);
    cmd.arg("reload-all");
    let out = run(cmd);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let epoch: i64 = stdout
        .split("epoch is now ")
        .nth(1)
        .and_then(|rest| rest.split(';').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no epoch in {stdout}"));
    assert!(epoch > 1, "{stdout}");
    let reloaded = wait_until(Duration::from_secs(20), || {
        server.readyz()["full_reloads"] == 1
    });
    assert!(reloaded.is_some(), "{}", server.readyz());
    assert_eq!(server.readyz()["epoch"], epoch);
    // The log it emptied is no gap to the node: one reload, not one a poll.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(server.readyz()["full_reloads"], 1, "{}", server.readyz());
    assert_eq!(server.stop(), 0);
}

/// Defaults < config file < DIALTONE_* environment < flags, as
/// `check-config` shows the effective configuration.
#[test]
fn configuration_precedence_is_defaults_file_environment_flags() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_file(
        dir.path(),
        "dialtone.toml",
        "[provisioning]\nrender_cache_mb = 10\nban_burst = 7\n\n[log]\nfilter = \"debug\"\n",
    );
    let mut cmd = dialtone(dir.path(), "sqlite://from-environment.db");
    cmd.arg("--config")
        .arg(&config)
        .env("DIALTONE_PROVISIONING__RENDER_CACHE_MB", "20")
        .arg("--database-url")
        .arg("sqlite://from-flag.db")
        .arg("check-config");
    let out = run(cmd);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    let line = |key: &str| {
        shown
            .lines()
            .find(|l| l.starts_with(&format!("{key} =")))
            .unwrap_or_else(|| panic!("{key} missing: {shown}"))
            .to_string()
    };
    assert_eq!(
        line("render_cache_mb"),
        "render_cache_mb = 20",
        "environment beats file"
    );
    assert_eq!(line("ban_burst"), "ban_burst = 7", "file beats default");
    assert_eq!(line("ban_per_minute"), "ban_per_minute = 10", "default");
    assert_eq!(line("filter"), "filter = \"debug\"");
    assert!(
        line("url").contains("from-flag.db"),
        "flag beats environment: {shown}"
    );
}

/// `token create --expires-days` takes 1 to 36500: 0 or a count whose
/// milliseconds overflow would have created a token already expired (or
/// panicked) and exited 0.
#[test]
fn token_expiry_out_of_range_is_refused_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    for days in [
        "0",
        "36501",
        "4294967296",
        "106751991167",
        "18446744073709551615",
    ] {
        let mut cmd = dialtone(dir.path(), &url);
        cmd.args([
            "token",
            "create",
            "--scope",
            "global-admin",
            "--name",
            "ops",
            "--expires-days",
            days,
        ]);
        let out = run(cmd);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "--expires-days {days}: {err}");
        assert!(err.contains("--expires-days"), "{days}: {err}");
        assert!(
            text(&out.stdout).trim().is_empty(),
            "{days}: a token was printed"
        );
    }
    // The longest allowed is a token that is active now.
    create_token(
        dir.path(),
        &url,
        &[
            "--scope",
            "global-admin",
            "--name",
            "ops",
            "--expires-days",
            "36500",
        ],
    );
    let mut list = dialtone(dir.path(), &url);
    list.args(["token", "list"]);
    let out = run(list);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert_eq!(shown.lines().count(), 2, "one token only: {shown}");
    assert!(shown.contains("active"), "{shown}");
}

/// The CLI holds a token's name to the API's bounds: the name is what
/// lists and the audit log show.
#[test]
fn a_token_name_out_of_bounds_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let long = "n".repeat(101);
    for name in ["", "  ", long.as_str()] {
        let mut cmd = dialtone(dir.path(), &url);
        cmd.args(["token", "create", "--scope", "global-admin", "--name", name]);
        let out = run(cmd);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name:?}: {err}");
        assert!(err.contains("--name must be 1 to 100 characters"), "{err}");
        assert!(text(&out.stdout).trim().is_empty(), "a token was printed");
    }
}

/// A setting in the environment that is not UTF-8 is named, not a panic;
/// anyone else's such variable is none of ours.
#[test]
fn a_setting_not_in_utf8_is_named() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let bad = std::ffi::OsStr::from_bytes(b"info\xff");
    let mut cmd = dialtone(dir.path(), &url);
    cmd.env("DIALTONE_LOG__FILTER", bad).arg("check-config");
    let out = run(cmd);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("DIALTONE_LOG__FILTER") && err.contains("not UTF-8"),
        "{err}"
    );
    let mut cmd = dialtone(dir.path(), &url);
    cmd.env("SOMEONE_ELSES", bad).arg("check-config");
    let out = run(cmd);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// A tenant's token made and revoked on the command line is in that
/// tenant's audit view, as one the API makes and revokes.
#[test]
fn a_tenant_tokens_create_and_revoke_are_audited_under_its_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let tenants = write_file(dir.path(), "tenants.csv", TENANTS_CSV);
    let mut cmd = dialtone(dir.path(), &url);
    cmd.arg("import").arg(&tenants);
    let out = run(cmd);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let args = [
        "--scope",
        "tenant-admin",
        "--tenant",
        "acme",
        "--name",
        "acme ops",
    ];
    create_token(dir.path(), &url, &args);
    let mut cmd = dialtone(dir.path(), &url);
    cmd.args(["token", "revoke", "1"]);
    let out = run(cmd);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let audited: Vec<(String, Option<String>)> =
        tokio::runtime::Runtime::new().unwrap().block_on(async {
            use sqlx::Connection;
            let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
            sqlx::query_as(
                "SELECT action, tenant FROM audit_log WHERE entity = 'api_token' ORDER BY id",
            )
            .fetch_all(&mut conn)
            .await
            .unwrap()
        });
    let acme = Some("acme".to_string());
    assert_eq!(
        audited,
        [("create".into(), acme.clone()), ("revoke".into(), acme)]
    );
}

/// A database password never reaches the output, wherever the URL holds it
/// and whatever its scheme: `check-config`, a configuration error, and a
/// failed start.
#[test]
fn database_passwords_are_masked_in_every_form() {
    let dir = tempfile::tempdir().unwrap();
    for url in [
        "postgres://dialtone@db.example.net/dialtone?password=s3cret",
        "postgres://dialtone:hunter@s3cret@db.example.net/dialtone",
    ] {
        let mut cmd = dialtone(dir.path(), url);
        cmd.arg("check-config");
        let out = run(cmd);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let shown = text(&out.stdout);
        assert!(
            shown.contains("db.example.net") && shown.contains("********"),
            "{shown}"
        );
        assert!(
            !shown.contains("s3cret") && !shown.contains("hunter"),
            "{shown}"
        );
    }
    let mut cmd = dialtone(
        dir.path(),
        "postgress://dialtone:s3cret@db.example.net/dialtone",
    );
    cmd.arg("check-config");
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("database.url"), "{err}");
    assert!(!err.contains("s3cret"), "{err}");

    let port = free_addr().port();
    let mut cmd = dialtone(
        dir.path(),
        &format!("postgres://dialtone@127.0.0.1:{port}/none?password=s3cret"),
    );
    serve_on_free_ports(&mut cmd);
    let out = run_start_meant_to_fail(cmd);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("unreachable"), "{err}");
    assert!(!err.contains("s3cret"), "{err}");
}

/// `dialtone lookup` runs with `serve`'s lookup options: a tenant's source
/// pointed at this node's own API listener is refused there too, though
/// `lookup.source_networks` allows its network.
#[test]
fn the_operators_lookup_refuses_the_nodes_own_listeners() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    // Stands for this node's API (a `serve` running beside): it answers.
    let own = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let api = own.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in own.incoming().take(4) {
            let Ok(mut stream) = stream else { return };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 7\r\nconnection: close\r\n\r\nMallory",
            );
        }
    });
    let data = write_file(
        dir.path(),
        "acme.json",
        &serde_json::json!({
            "tenants": [{ "slug": "acme", "name": "Acme", "default_region": "US" }],
            "directory_sources": [{
                "tenant": "acme", "name": "self", "kind": "http", "timeout_ms": 1000,
                "settings": { "url": format!("http://{api}/cnam/{{e164}}") }
            }]
        })
        .to_string(),
    );
    let mut import = dialtone(dir.path(), &url);
    import.arg("import").arg(&data);
    let out = run(import);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut cli = dialtone(dir.path(), &url);
    cli.args(["lookup", "+1 555 010 1299", "--tenant", "acme"])
        .env("DIALTONE_HTTP__LISTEN", api.to_string())
        .env("DIALTONE_LOOKUP__SOURCE_NETWORKS", r#"["127.0.0.0/8"]"#);
    let out = run(cli);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(
        shown.contains("not an address sources may reach") && !shown.contains("Mallory"),
        "{shown}"
    );
}

/// `serve --demo` seeds the demo tenant only when it is absent: a restart
/// keeps what was changed since.
#[test]
fn serve_demo_keeps_an_edited_demo_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    assert_eq!(Server::start(dir.path(), &url, &["--demo"]).stop(), 0);
    let tenants = write_file(
        dir.path(),
        "tenants.csv",
        "slug,name,default_region,settings\ndemo,Renamed Demo,US,{}\n",
    );
    let mut import = dialtone(dir.path(), &url);
    import.arg("import").arg(&tenants);
    let out = run(import);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(Server::start(dir.path(), &url, &["--demo"]).stop(), 0);
    let mut export = dialtone(dir.path(), &url);
    export.args(["export", "-", "--kind", "tenants", "--format", "csv"]);
    let out = run(export);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("demo,Renamed Demo,US,{}"),
        "{}",
        text(&out.stdout)
    );
}

/// The rendered files hold line passwords in clear: owner-only, as
/// `export`'s file, in a folder only its owner may enter when `render`
/// makes it. A file an earlier run left readable by all is narrowed.
#[test]
fn render_all_writes_owner_only_files() {
    use std::os::unix::fs::PermissionsExt;
    let mode =
        |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let mut demo = dialtone(dir.path(), &url);
    demo.arg("demo");
    let out = run(demo);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let made = dir.path().join("review").join("configs");
    let mut render = dialtone(dir.path(), &url);
    render.args(["render", "--all", "--out"]).arg(&made);
    let out = run(render);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for folder in [&made, &dir.path().join("review")] {
        assert_eq!(mode(folder), 0o700, "{}", folder.display());
    }
    let files: Vec<_> = std::fs::read_dir(&made)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(files.len() > 5, "{files:?}");
    for file in &files {
        assert_eq!(mode(file), 0o600, "{}", file.display());
    }

    // A folder that exists is left as it is; a file in it from before,
    // readable by all, is not.
    let kept = dir.path().join("kept");
    std::fs::create_dir(&kept).unwrap();
    std::fs::set_permissions(&kept, std::fs::Permissions::from_mode(0o755)).unwrap();
    let old = kept.join("0015654aa937.cfg");
    std::fs::write(&old, "old").unwrap();
    std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut render = dialtone(dir.path(), &url);
    render.args(["render", "--all", "--out"]).arg(&kept);
    let out = run(render);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(mode(&kept), 0o755);
    assert_eq!(mode(&old), 0o600);
    assert_ne!(std::fs::read_to_string(&old).unwrap(), "old");
}

/// A `--hold` past what a wait can be is refused with the flag named,
/// before any phone boots, not a panic. The largest `--timeout-ms` is a
/// wait (five times it too, for HTTP): it runs.
#[test]
fn phlem_refuses_a_hold_past_a_wait() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let target = format!("tftp://{}", free_udp_addr());
    let proxy = free_udp_addr().to_string();
    let runs: [(&[&str], &str); 3] = [
        (
            &["--sip-proxy", &proxy, "--hold", "1e20"],
            "--hold 100000000000000000000: must be between 0 and 10000000 seconds",
        ),
        (
            &["--sip-proxy", &proxy, "--hold", "NaN"],
            "--hold NaN: must be between",
        ),
        (&["--hold", "5"], "--hold needs --sip-proxy"),
    ];
    for (args, said) in runs {
        let mut cmd = dialtone(dir.path(), &url);
        cmd.args(["phlem", "run", "--quiet", "--target", &target])
            .args(args);
        let out = run(cmd);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.trim().lines().count() == 1 && err.starts_with(&format!("dialtone: {said}")),
            "{args:?}: {err}"
        );
    }
    let mut cmd = dialtone(dir.path(), &url);
    cmd.args([
        "phlem",
        "run",
        "--quiet",
        "--timeout-ms",
        &u64::MAX.to_string(),
    ])
    .arg("--target")
    .arg(format!("http://{}", free_addr()));
    let out = run(cmd);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("transfers failed"), "{err}");
}

/// The demo's MACs are real vendors': `demo` and `serve --demo` refuse to
/// take one another tenant holds, or a tenant `demo` they did not make,
/// naming it, and write nothing.
#[test]
fn demo_refuses_another_tenants_phone_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let tenants = write_file(dir.path(), "tenants.csv", "slug,name\nacme,Acme\n");
    let phones = write_file(
        dir.path(),
        "phones.csv",
        "tenant,mac,family,model,label\nacme,00:15:65:4a:a9:37,yealink,T46S,Front desk\n",
    );
    let mut import = dialtone(dir.path(), &url);
    import.arg("import").arg(&tenants).arg(&phones);
    let out = run(import);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let fleet = || {
        let mut export = dialtone(dir.path(), &url);
        export.args(["export", "-"]);
        let out = run(export);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    let before = fleet();

    let mut demo = dialtone(dir.path(), &url);
    demo.arg("demo");
    let out = run(demo);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("0015654aa937 (tenant acme)") && err.contains("nothing was written"),
        "{err}"
    );
    assert_eq!(fleet(), before);

    let server = Server::spawn(dir.path(), &url, &["--demo"], &[]);
    let log = dir.path().join(format!("serve-{}.log", server.addr.port()));
    let code = server.wait_exit();
    let said = std::fs::read_to_string(log).unwrap();
    assert_eq!(code, 1, "{said}");
    assert!(said.contains("0015654aa937 (tenant acme)"), "{said}");
    assert_eq!(fleet(), before);

    // A tenant `demo` of a customer's: named otherwise than the seed's.
    let other = tempfile::tempdir().unwrap();
    let url = sqlite_url(other.path());
    let tenants = write_file(other.path(), "tenants.csv", "slug,name\ndemo,Demo Motors\n");
    let mut import = dialtone(other.path(), &url);
    import.arg("import").arg(&tenants);
    assert!(run(import).status.success());
    let mut demo = dialtone(other.path(), &url);
    demo.arg("demo");
    let out = run(demo);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("tenant demo exists and is not the seed's (named \"Demo Motors\")"),
        "{err}"
    );
}

/// Seeding again on a database the demo seeded changes nothing, and
/// succeeds.
#[test]
fn demo_twice_on_a_fresh_database_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    for changed in ["(25 rows changed)", "(0 rows changed)"] {
        let mut demo = dialtone(dir.path(), &url);
        demo.arg("demo");
        let out = run(demo);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(text(&out.stdout).contains(changed), "{}", text(&out.stdout));
    }
}

/// `render MAC FILE` prints only that phone's files (its own, and the
/// common files of its model, as it would get them), never another
/// phone's file by name.
#[test]
fn render_prints_only_the_phones_own_files() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let mut demo = dialtone(dir.path(), &url);
    demo.arg("demo");
    assert!(run(demo).status.success());
    let render = |args: &[&str]| {
        let mut cmd = dialtone(dir.path(), &url);
        cmd.arg("render").args(args);
        run(cmd)
    };

    let out = render(&["0015654aa937", "SEP001B54AA0003.cnf.xml"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("SEP001B54AA0003.cnf.xml is not a file of phone 0015654aa937")
            && err.contains("0015654aa937.cfg"),
        "{err}"
    );
    assert_eq!(text(&out.stdout), "");

    for (mac, file, holds) in [
        ("0015654aa937", "0015654aa937.cfg", "demo101"),
        ("0015654aa937", "y000000000066.cfg", "#!version"),
        ("001b54aa0003", "sep001b54aa0003.cnf.xml", "demo123"),
        ("001b54aa0003", "XMLDefault.cnf.xml", "<"),
    ] {
        let out = render(&[mac, file]);
        assert!(out.status.success(), "{mac} {file}: {}", text(&out.stderr));
        assert!(text(&out.stdout).contains(holds), "{mac} {file}");
    }
}

/// A reader that stops early (`render MAC | head -1`) ends `render`
/// quietly, as a listing or as a file.
#[test]
fn render_ends_quietly_when_its_reader_goes_away() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let mut demo = dialtone(dir.path(), &url);
    demo.arg("demo");
    assert!(run(demo).status.success());
    for args in [&["0015654aa937"][..], &["0015654aa937", "0015654aa937.cfg"]] {
        // Closed long before `render` has read the database and writes.
        let mut cmd = dialtone(dir.path(), &url);
        let mut child = cmd
            .arg("render")
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
        assert_eq!(err, "", "{args:?}");
    }
}
