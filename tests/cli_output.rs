//! What the command line writes when its output cannot be written, what
//! `check-config` finds in a database URL, and how an import skips the
//! rows of a tenant that does not exist.

mod common;

use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Stdio;

use common::*;

fn migrated(dir: &std::path::Path) -> String {
    let url = sqlite_url(dir);
    let mut cmd = dialtone(dir, &url);
    cmd.arg("migrate");
    let out = run(cmd);
    assert!(out.status.success(), "{}", text(&out.stderr));
    url
}

/// `dialtone ARGS` writing into a pipe whose reader is gone.
fn into_closed_pipe(dir: &std::path::Path, url: &str, args: &[&str]) -> std::process::Output {
    let mut ends = [0; 2];
    // SAFETY: pipe2(2) fills both descriptors on success; each is owned
    // here alone from then on.
    let (reader, writer) = unsafe {
        assert_eq!(libc::pipe2(ends.as_mut_ptr(), libc::O_CLOEXEC), 0);
        (OwnedFd::from_raw_fd(ends[0]), OwnedFd::from_raw_fd(ends[1]))
    };
    drop(reader);
    let mut cmd = dialtone(dir, url);
    cmd.args(args).stdout(writer).stdin(Stdio::null());
    cmd.output().unwrap()
}

fn token_list(dir: &std::path::Path, url: &str) -> String {
    let mut cmd = dialtone(dir, url);
    cmd.args(["token", "list"]);
    let out = run(cmd);
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
}

/// `token list | head -1`: the reader has what it wanted.
#[test]
fn a_token_list_whose_reader_goes_away_ends_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let url = migrated(dir.path());
    for n in 0..3 {
        create_token(
            dir.path(),
            &url,
            &["--scope", "global-admin", "--name", &format!("ops {n}")],
        );
    }
    let out = into_closed_pipe(dir.path(), &url, &["token", "list"]);
    let err = text(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(err, "");
    assert_eq!(out.status.code(), Some(0), "{err}");
}

/// A token whose value reaches no one is not left active: with standard
/// output closed none is made; into a pipe closed after the write began,
/// the one made is revoked.
#[test]
fn a_token_that_cannot_be_shown_is_not_left_active() {
    let dir = tempfile::tempdir().unwrap();
    let url = migrated(dir.path());
    let create = [
        "token",
        "create",
        "--scope",
        "global-admin",
        "--name",
        "lost",
    ];

    let mut closed = dialtone(dir.path(), &url);
    closed.args(create);
    // SAFETY: close(2) is async-signal-safe, and runs in the child alone.
    unsafe {
        closed.pre_exec(|| {
            libc::close(1);
            Ok(())
        })
    };
    let out = run(closed);
    let err = text(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains("nothing was created"), "{err}");
    assert!(!token_list(dir.path(), &url).contains("lost"));

    let out = into_closed_pipe(dir.path(), &url, &create);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        err.contains("token 1 was revoked because its value could not be shown"),
        "{err}"
    );
    let listed = token_list(dir.path(), &url);
    let lost: Vec<&str> = listed.lines().filter(|l| l.ends_with(" lost")).collect();
    assert_eq!(lost.len(), 1, "{listed}");
    assert!(lost[0].contains("revoked"), "{listed}");
}

/// A token's name is a tenant admin's text: written out, not sent to the
/// terminal, and one row a token whatever it holds.
#[test]
fn token_names_are_listed_with_control_characters_written_out() {
    let dir = tempfile::tempdir().unwrap();
    let url = migrated(dir.path());
    create_token(
        dir.path(),
        &url,
        &["--scope", "global-admin", "--name", "ops\nfake row\x1b[31m"],
    );
    let listed = token_list(dir.path(), &url);
    assert_eq!(listed.lines().count(), 2, "{listed}");
    assert!(
        listed.contains("ops\\nfake row\\u{1b}[31m") && !listed.contains('\x1b'),
        "{listed}"
    );
}

/// `check-config` reads the database URL as `serve` does, and names it
/// without its password.
#[test]
fn check_config_refuses_database_urls_serve_cannot_open() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("d.db");
    for url in [
        format!("sqlite://{}?foo=bar", db.display()),
        "sqlite://".into(),
        "postgres://u:hunter2@[::1:1/db".into(),
        "postgres://u:hunter2@/db?host=/x".into(),
    ] {
        let mut cmd = dialtone(dir.path(), &url);
        cmd.arg("check-config");
        let out = run(cmd);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{url}: {err}");
        assert!(err.contains("database.url"), "{url}: {err}");
        assert!(!err.contains("hunter2"), "{url}: {err}");
    }
    let mut cmd = dialtone(dir.path(), &format!("sqlite://{}", db.display()));
    cmd.arg("check-config");
    let out = run(cmd);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!db.exists(), "check-config created the database");
}

/// Directory entries and sources of a tenant no one created are all
/// skipped in one retry, not one whole retry each (12,000 took 67 s).
#[test]
fn every_entry_of_an_unknown_tenant_is_skipped_in_one_retry() {
    const ENTRIES: usize = 2000;
    let dir = tempfile::tempdir().unwrap();
    let url = migrated(dir.path());
    let entry = |tenant: &str, n: usize| {
        format!(
            r#"{{"tenant": "{tenant}", "external_id": "{n}", "name": "Person {n}", "numbers": [{{"number": "+1 555 {n:07}", "kind": "work"}}]}}"#
        )
    };
    let mut directory: Vec<String> = (0..ENTRIES).map(|n| entry("acme-typo", n)).collect();
    directory.push(entry("acme", 0));
    let json = format!(
        r#"{{"tenants": [{{"slug": "acme", "name": "Acme"}}],
"directory": [{}],
"directory_sources": [{{"tenant": "acme-typo", "name": "ad", "kind": "ldap",
  "settings": {{"url": "ldap://127.0.0.1:1/", "base_dn": "dc=example,dc=net"}}}}]}}"#,
        directory.join(",\n")
    );
    let file = write_file(dir.path(), "directory.json", &json);
    let import = |extra: &[&str]| {
        let mut cmd = dialtone(dir.path(), &url);
        cmd.env("RUST_LOG", "dialtone=debug")
            .args(["import", "--dry-run"])
            .args(extra)
            .arg(&file);
        run(cmd)
    };
    let refused = ENTRIES + 1;

    let started = std::time::Instant::now();
    let out = import(&["--skip-invalid"]);
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    let skipped = err
        .lines()
        .filter(|l| l.ends_with(": unknown tenant \"acme-typo\" (skipped)"))
        .count();
    assert_eq!(skipped, refused, "{err}");
    assert!(
        err.contains("directory.json:3:1 (directory[1]): unknown tenant"),
        "{err}"
    );
    // The first write, refused, and the one without the tenant's rows.
    assert!(err.contains("attempts=2"), "{err}");
    let summary = text(&out.stdout);
    assert!(
        summary.contains("directory entries +1") && summary.contains("directory sources +0"),
        "{summary}"
    );
    assert!(started.elapsed().as_secs() < 30, "{:?}", started.elapsed());

    // Without --skip-invalid every one is named, and nothing written.
    let out = import(&[]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let named = err
        .lines()
        .filter(|l| l.ends_with(": unknown tenant \"acme-typo\""))
        .count();
    assert_eq!(named, refused, "{err}");
    assert!(
        err.contains(&format!(
            "{refused} rows refused by the database; nothing was written"
        )),
        "{err}"
    );
}
