//! A node that starts while another transaction holds the mirrored tables
//! exclusively (a large first import, a migration) says what it waits for
//! instead of hanging without a word, and starts once they are free. A
//! migration that cannot lock a busy table gives up after its retries and
//! says why, rather than queue every query on the table behind it.

mod common;

use std::time::Duration;

use common::*;
use dialtone_sync::testing::TestDb;
use dialtone_sync::Backend;
use sqlx::Connection;

#[test]
fn a_start_on_locked_tables_says_so_and_serves_once_they_are_free() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(TestDb::new(Backend::Postgres));
    let dir = tempfile::tempdir().unwrap();
    let mut migrate = dialtone(dir.path(), &db.url);
    migrate.arg("migrate");
    let out = run(migrate);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let mut holder = rt.block_on(sqlx::PgConnection::connect(&db.url)).unwrap();
    for statement in ["BEGIN", "LOCK TABLE phones IN ACCESS EXCLUSIVE MODE"] {
        rt.block_on(sqlx::query(statement).execute(&mut holder))
            .unwrap();
    }
    let server = Server::spawn(dir.path(), &db.url, &[], &[]);
    let told = wait_until(Duration::from_secs(30), || {
        server.stderr().contains("waiting for the mirrored tables")
    });
    assert!(told.is_some(), "nothing said: {}", server.stderr());
    // A SIGHUP in this window (logrotate, systemctl reload) is no death:
    // it is applied as a reload once the node is up.
    server.signal("HUP");
    std::thread::sleep(Duration::from_millis(300));
    assert_ne!(
        server.try_get("/readyz").map(|(status, _)| status),
        Some(200),
        "ready before its mirror could load"
    );

    rt.block_on(sqlx::query("ROLLBACK").execute(&mut holder))
        .unwrap();
    let ready = wait_until(Duration::from_secs(30), || {
        server.try_get("/readyz").map(|(status, _)| status) == Some(200)
    });
    assert!(ready.is_some(), "never ready: {}", server.stderr());
    assert!(server.stderr().contains("the mirrored tables are free"));
    let reloaded = wait_until(Duration::from_secs(10), || {
        server.stderr().contains("SIGHUP")
    });
    assert!(
        reloaded.is_some(),
        "the early SIGHUP was lost: {}",
        server.stderr()
    );
    assert_eq!(server.stop(), 0);
}

#[test]
fn a_migration_kept_off_a_busy_table_exits_with_the_reason() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(TestDb::new(Backend::Postgres));
    let dir = tempfile::tempdir().unwrap();
    let mut migrate = dialtone(dir.path(), &db.url);
    migrate.arg("migrate");
    let out = run(migrate);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let mut conn = rt.block_on(sqlx::PgConnection::connect(&db.url)).unwrap();
    // Migration 0008 sets a collation of phones again: it needs phones
    // exclusively and changes nothing it has not already.
    rt.block_on(sqlx::query("DELETE FROM _sqlx_migrations WHERE version = 8").execute(&mut conn))
        .unwrap();
    for statement in ["BEGIN", "SELECT count(*) FROM phones"] {
        rt.block_on(sqlx::query(statement).execute(&mut conn))
            .unwrap();
    }
    let mut migrate = dialtone(dir.path(), &db.url);
    migrate
        .env("DIALTONE_DATABASE__MIGRATION_LOCK_WAIT_MS", "100")
        .env("DIALTONE_DATABASE__MIGRATION_RETRY_S", "1")
        .arg("migrate");
    let out = run(migrate);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    let last = err.trim().lines().last().unwrap_or("");
    assert!(
        last.starts_with(
            "dialtone: migrating the database: a table the migration alters stayed in use"
        ),
        "{err}"
    );

    rt.block_on(sqlx::query("ROLLBACK").execute(&mut conn))
        .unwrap();
    let mut migrate = dialtone(dir.path(), &db.url);
    migrate.arg("migrate");
    let out = run(migrate);
    assert!(out.status.success(), "{}", text(&out.stderr));
}
