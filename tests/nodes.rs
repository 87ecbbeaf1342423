//! Several `dialtone serve` processes against real PostgreSQL.

mod common;

use std::time::Duration;

use common::*;
use dialtone_sync::testing::{PrivatePostgres, TestDb};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d_two_nodes_see_each_others_writes() {
    let db = TestDb::postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let a_dir = dir.path().join("a");
    let b_dir = dir.path().join("b");
    std::fs::create_dir_all(&a_dir).unwrap();
    std::fs::create_dir_all(&b_dir).unwrap();
    let a = Server::start(&a_dir, &db.url, &[]);
    let b = Server::start(&b_dir, &db.url, &["--demo"]);
    // B seeded the demo tenant; A sees it without a restart.
    let demo_phones = wait_until(Duration::from_secs(10), || {
        a.phones() > 0 && a.phones() == b.phones()
    });
    assert!(
        demo_phones.is_some(),
        "node A never saw node B's demo seed: A={} B={}",
        a.readyz(),
        b.readyz()
    );

    let before = a.phones();
    let tenants = write_file(dir.path(), "tenants.csv", TENANTS_CSV);
    let phones = write_file(dir.path(), "phones.csv", &phones_csv(1, 3));
    let mut cmd = dialtone(dir.path(), &db.url);
    cmd.arg("import").arg(&tenants).arg(&phones);
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let took = wait_until(Duration::from_secs(10), || {
        a.phones() == before + 3 && b.phones() == before + 3
    })
    .unwrap_or_else(|| {
        panic!(
            "write not seen by both nodes: A={} B={}",
            a.readyz(),
            b.readyz()
        )
    });
    eprintln!("both nodes saw the import after {took:?}");
    assert_eq!(a.stop(), 0);
    assert_eq!(b.stop(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_serves_when_the_database_is_gone() {
    let pg = tokio::task::spawn_blocking(PrivatePostgres::start)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = pg.url();
    let server = Server::start(dir.path(), &url, &["--demo"]);
    let before = server.readyz();
    assert_eq!(before["loaded_from"], "database");
    assert_eq!(server.stop(), 0);

    pg.stop_server();
    let cut_at = dialtone_sync::now_millis();
    let server = Server::start(dir.path(), &url, &[]);
    let after = server.readyz();
    assert_eq!(after["loaded_from"], "snapshot");
    assert_eq!(after["ready"], true);
    assert_eq!(after["counts"], before["counts"]);
    assert_eq!(after["cursor"], before["cursor"]);
    // Stale since the data was last in sync, before the database went,
    // not since this start; and so after another offline restart, though
    // the snapshot was written again meanwhile.
    let stale_since = after["stale_since"].as_i64().expect("stale");
    assert!(stale_since <= cut_at, "{after}");
    assert_eq!(server.stop(), 0);
    let server = Server::start(dir.path(), &url, &[]);
    assert_eq!(
        server.readyz()["stale_since"],
        stale_since,
        "{}",
        server.readyz()
    );

    // When the database returns, the node notices and is current again.
    pg.start_server();
    let fresh = wait_until(Duration::from_secs(30), || {
        server.readyz()["stale_since"].is_null()
    });
    assert!(fresh.is_some(), "never recovered: {}", server.readyz());
    assert_eq!(server.stop(), 0);
}
