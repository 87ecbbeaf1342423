//! A node that starts while another transaction holds the mirrored tables
//! exclusively (a large first import, a migration) says what it waits for
//! instead of hanging without a word, and starts once they are free.

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
    assert_eq!(server.stop(), 0);
}
