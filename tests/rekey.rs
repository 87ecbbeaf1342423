//! `dialtone rekey` through the binary: a fleet's secrets move to a new
//! key (a key file it makes when missing), after which the database takes
//! only the new key; what the command line gets wrong is refused before
//! the database is opened.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;

use common::*;
use dialtone_sync::testing::TestDb;
use dialtone_sync::Backend;

const SOURCES_JSON: &str = r#"{"directory_sources": [{"tenant": "acme", "name": "ad", "kind": "ldap",
  "settings": {"url": "ldap://127.0.0.1:1/", "base_dn": "dc=example,dc=net"}, "secret": "bind-pw"}],
"phones": [{"tenant": "acme", "mac": "00:04:f2:00:00:01", "family": "poly", "model": "VVX 450",
  "http_user": "admin", "http_password": "web-pw",
  "lines": [{"extension": "200", "password": "p,w", "registrar": "sip.example.net"}]}]}"#;

/// `dialtone ARGS` with the secrets key `key` (hex).
fn dt_with_key(dir: &Path, url: &str, key: &str, args: &[&str]) -> Output {
    let mut cmd = dialtone(dir, url);
    cmd.env("DIALTONE_SECRETS__KEY", key).args(args);
    run(cmd)
}

fn succeeded(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn moves_a_fleet_to_a_new_key(url: &str) {
    let dir = tempfile::tempdir().unwrap();
    let files = [
        write_file(dir.path(), "tenants.csv", TENANTS_CSV),
        write_file(dir.path(), "phones.csv", &phones_csv(1, 40)),
        write_file(dir.path(), "more.json", SOURCES_JSON),
    ];
    let mut import = vec!["import"];
    import.extend(files.iter().map(|f| f.to_str().unwrap()));
    succeeded(&dt_with_key(dir.path(), url, TEST_KEY, &import), "import");
    let exported = succeeded(
        &dt_with_key(dir.path(), url, TEST_KEY, &["export", "-"]),
        "export",
    );

    let out = dt_with_key(
        dir.path(),
        url,
        TEST_KEY,
        &["rekey", "--new-key-file", "new.key"],
    );
    let said = succeeded(&out, "rekey");
    assert!(
        said.contains("re-sealed 41 line passwords, 1 phone HTTP passwords, 1 source secrets"),
        "{said}"
    );
    let key_file = dir.path().join("new.key");
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let new_key = std::fs::read_to_string(&key_file)
        .unwrap()
        .trim()
        .to_string();
    assert_eq!(new_key.len(), 64);
    assert!(!text(&out.stdout).contains(&new_key) && !text(&out.stderr).contains(&new_key));

    // The same secrets, opened with the new key.
    let again = succeeded(
        &dt_with_key(dir.path(), url, &new_key, &["export", "-"]),
        "export with the new key",
    );
    assert_eq!(again, exported);
    // The old key is refused, as any other key is.
    let old = dt_with_key(dir.path(), url, TEST_KEY, &["export", "-"]);
    assert_eq!(old.status.code(), Some(1), "{}", text(&old.stderr));
    assert!(
        text(&old.stderr).contains("not the key this database's secrets are sealed with"),
        "{}",
        text(&old.stderr)
    );
    // The file now holds the database's key: naming it again is refused.
    let same = dt_with_key(
        dir.path(),
        url,
        &new_key,
        &["rekey", "--new-key-file", "new.key"],
    );
    assert_eq!(same.status.code(), Some(2), "{}", text(&same.stderr));
    assert!(
        text(&same.stderr).contains("holds the configured secrets key"),
        "{}",
        text(&same.stderr)
    );
}

#[test]
fn a_sqlite_fleet_moves_to_a_new_key() {
    let dir = tempfile::tempdir().unwrap();
    moves_a_fleet_to_a_new_key(&sqlite_url(dir.path()));
}

#[test]
fn a_postgres_fleet_moves_to_a_new_key() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(TestDb::new(Backend::Postgres));
    moves_a_fleet_to_a_new_key(&db.url);
}

/// A database nothing listens for: a refusal that comes before the
/// database is opened says its own reason, not the connection's.
fn unreachable_database() -> String {
    format!("postgres://dialtone@127.0.0.1:{}/none", free_addr().port())
}

#[test]
fn a_new_key_file_without_a_new_key_is_refused_before_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let url = unreachable_database();
    let empty = write_file(dir.path(), "empty.key", "");
    let current = write_file(dir.path(), "current.key", &format!("{TEST_KEY}\n"));
    let malformed = write_file(dir.path(), "short.key", "abcd\n");
    for (file, reason) in [
        (&empty, "empty (left by an interrupted first start)"),
        (&current, "holds the configured secrets key"),
        (&malformed, "expected"),
    ] {
        let before = std::fs::read(file).unwrap();
        let out = dt_with_key(
            dir.path(),
            &url,
            TEST_KEY,
            &["rekey", "--new-key-file", file.to_str().unwrap()],
        );
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{file:?}: {stderr}");
        assert!(stderr.contains(reason), "{file:?}: {stderr}");
        assert!(!stderr.contains("cannot reach database"), "{stderr}");
        assert_eq!(std::fs::read(file).unwrap(), before, "{file:?} was changed");
    }
}

#[test]
fn a_missing_current_key_file_is_not_made_anew() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let mut cmd = dialtone(dir.path(), &url);
    cmd.env_remove("DIALTONE_SECRETS__KEY")
        .env("DIALTONE_SECRETS__KEY_FILE", dir.path().join("gone.key"))
        .args(["rekey", "--new-key-file", "new.key"]);
    let out = run(cmd);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("missing; rekey needs the key the database's secrets are sealed with now"),
        "{stderr}"
    );
    assert!(!dir.path().join("gone.key").exists());
    assert!(!dir.path().join("new.key").exists());
}

/// A key to replace one that may have leaked must reach nobody else: an
/// existing new key file others may read or write is refused, untouched,
/// before the database is opened.
#[test]
fn a_new_key_file_others_can_reach_is_refused_before_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let url = unreachable_database();
    let file = write_file(dir.path(), "new.key", &format!("{OTHER_KEY}\n"));
    for mode in [0o644, 0o640, 0o604, 0o620] {
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
        let out = dt_with_key(
            dir.path(),
            &url,
            TEST_KEY,
            &["rekey", "--new-key-file", file.to_str().unwrap()],
        );
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "mode {mode:o}: {stderr}");
        assert!(stderr.contains("chmod 600"), "mode {mode:o}: {stderr}");
        assert!(!stderr.contains("cannot reach database"), "{stderr}");
        assert!(!stderr.contains(OTHER_KEY), "{stderr}");
        let kept = std::fs::read_to_string(&file).unwrap();
        assert_eq!(kept.trim(), OTHER_KEY);
    }
}

/// A key, not the test key, for a new key file that exists already.
const OTHER_KEY: &str = "c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3";

fn import_a_fleet(dir: &Path, url: &str) {
    let files = [
        write_file(dir, "tenants.csv", TENANTS_CSV),
        write_file(dir, "phones.csv", &phones_csv(1, 5)),
        write_file(dir, "more.json", SOURCES_JSON),
    ];
    let mut import = vec!["import"];
    import.extend(files.iter().map(|f| f.to_str().unwrap()));
    succeeded(&dt_with_key(dir, url, TEST_KEY, &import), "import");
}

/// A refused run leaves no key behind that nothing is sealed with: the
/// file it made is removed; a file that was there before is kept.
#[test]
fn a_refused_run_removes_the_key_file_it_made_and_only_that() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    import_a_fleet(dir.path(), &url);
    let stray = dialtone_sync::SecretKey::parse(&"e7".repeat(32)).unwrap();
    let stray = stray.seal(dialtone_sync::Purpose::LinePassword, "stray-pw");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        use sqlx::Connection;
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query("UPDATE lines SET password = $1 WHERE id = (SELECT min(id) FROM lines)")
            .bind(&*stray.0)
            .execute(&mut conn)
            .await
            .unwrap();
    });

    let out = dt_with_key(
        dir.path(),
        &url,
        TEST_KEY,
        &["rekey", "--new-key-file", "made.key"],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("do not open with the current key"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("made.key").exists(),
        "the refused run left its key file"
    );

    let existing = write_file(dir.path(), "existing.key", &format!("{OTHER_KEY}\n"));
    std::fs::set_permissions(&existing, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = dt_with_key(
        dir.path(),
        &url,
        TEST_KEY,
        &["rekey", "--new-key-file", "existing.key"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let kept = std::fs::read_to_string(&existing).unwrap();
    assert_eq!(
        kept.trim(),
        OTHER_KEY,
        "a file the run did not make was touched"
    );
}

/// A run behind a transaction that keeps a table (an import, a session
/// idle in its transaction) steps back rather than stopping every writer
/// behind its lock request, and after a few tries gives up, saying why;
/// it leaves no key file. Run again once that transaction ends, it passes.
#[test]
fn a_postgres_run_behind_a_long_transaction_gives_up() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(TestDb::new(Backend::Postgres));
    let dir = tempfile::tempdir().unwrap();
    import_a_fleet(dir.path(), &db.url);
    let mut holder = rt.block_on(async {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
        sqlx::query("BEGIN").execute(&mut conn).await.unwrap();
        sqlx::query("LOCK TABLE directory_sources IN ROW EXCLUSIVE MODE")
            .execute(&mut conn)
            .await
            .unwrap();
        conn
    });
    let rekey = || {
        let mut cmd = dialtone(dir.path(), &db.url);
        cmd.env("DIALTONE_DATABASE__MIGRATION_LOCK_WAIT_MS", "200")
            .args(["rekey", "--new-key-file", "new.key"]);
        cmd
    };
    let out = run_within(rekey(), std::time::Duration::from_secs(60));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for said in [
        "could not lock the tables phones, lines and directory_sources",
        "run rekey again when that transaction ends",
    ] {
        assert!(stderr.contains(said), "{stderr}");
    }
    assert!(!dir.path().join("new.key").exists());

    rt.block_on(sqlx::query("COMMIT").execute(&mut holder))
        .unwrap();
    succeeded(&run(rekey()), "rekey once the transaction ended");
    assert!(dir.path().join("new.key").exists());
}
