//! Migrations of several processes at once. A node serving from its
//! snapshot while another node's migration holds the migration lock used to
//! stop once `migration_retry_s` had passed ("the database came back and
//! refuses this node"), and its service manager restarted it into the same
//! wait every few seconds for as long as the migration ran; it serves on and
//! waits instead. `dialtone migrate` run at once on a new SQLite file used
//! to fail at random on what the other had just made.

mod common;

use std::time::Duration;

use common::*;
use dialtone_sync::testing::TestDb;
use sqlx::migrate::Migrate;
use sqlx::Connection;

#[test]
fn a_node_serving_its_snapshot_waits_out_another_nodes_migration() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let db = runtime.block_on(TestDb::postgres());
    let dir = tempfile::tempdir().unwrap();
    let first = Server::start(dir.path(), &db.url, &["--demo"]);
    assert_eq!(first.stop(), 0);

    // Another node's migration: sqlx's migration lock, held by a session
    // of the test's own.
    let mut other_node = runtime.block_on(async {
        let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
        conn.lock().await.unwrap();
        conn
    });
    // Longer than the 10 s a start waits before it serves its snapshot, so
    // the node serves first; then the wait runs out soon after.
    let second = Server::start_with_env(
        dir.path(),
        &db.url,
        &[],
        &[
            ("DIALTONE_DATABASE__MIGRATION_RETRY_S", "12"),
            ("DIALTONE_DATABASE__MIGRATION_LOCK_WAIT_MS", "200"),
        ],
    );
    assert_eq!(second.readyz()["loaded_from"], "snapshot");
    let decided = wait_until(Duration::from_secs(40), || {
        let log = second.stderr();
        log.contains("serving on from the snapshot") || log.contains("shutting down")
    });
    let log = second.stderr();
    assert!(
        decided.is_some(),
        "the migration's wait never ran out: {log}"
    );
    assert!(!log.contains("shutting down"), "{log}");
    assert!(
        log.contains("another node is migrating the schema"),
        "{log}"
    );
    assert!(!log.contains("a table it alters is in use"), "{log}");
    assert_eq!(
        http_get(second.prov_addr, "/0015654aa937.cfg").map(|(s, _)| s),
        Some(200)
    );

    runtime.block_on(async {
        other_node.unlock().await.unwrap();
        other_node.close().await.unwrap();
    });
    let checked = wait_until(Duration::from_secs(60), || {
        second.stderr().contains("the database answers again")
    });
    assert!(
        checked.is_some(),
        "never checked once the migration was done: {}",
        second.stderr()
    );
    assert_eq!(second.stop(), 0);
}

/// Three at once failed about every other round before the turns.
#[test]
fn migrate_run_at_once_on_a_new_sqlite_file_always_succeeds() {
    const ROUNDS: usize = 8;
    const AT_ONCE: usize = 3;
    for round in 0..ROUNDS {
        let dir = tempfile::tempdir().unwrap();
        let url = sqlite_url(dir.path());
        let running: Vec<_> = (0..AT_ONCE)
            .map(|_| {
                let mut migrate = dialtone(dir.path(), &url);
                migrate
                    .arg("migrate")
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped());
                migrate.spawn().expect("spawn dialtone migrate")
            })
            .collect();
        for child in running {
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "round {round}: {}", text(&out.stderr));
        }
    }
}
