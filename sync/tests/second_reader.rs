//! The cold load and a large import's read each read one table on a second
//! connection beside a first that already holds its locks. An exclusive
//! lock requested between the two (a migration's `ALTER TABLE` while a
//! node starts or imports) waits for the first connection; a second
//! connection queued behind that request would wait for ever, and so would
//! the migration and every later query on the table. These tests put a
//! request there and expect the reader to go on alone.

mod common;

use std::time::Duration;

use common::*;
use sqlx::{Connection, PgConnection};

/// A connection inside a transaction that has run `lock`.
async fn holding(url: &str, lock: &str) -> PgConnection {
    let mut conn = PgConnection::connect(url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut conn).await.unwrap();
    sqlx::query(lock).execute(&mut conn).await.unwrap();
    conn
}

/// A migration's lock on `table`, requested now and granted later: the
/// task ends with its connection once PostgreSQL grants it.
async fn migration_waiting_on(url: &str, table: &str) -> tokio::task::JoinHandle<PgConnection> {
    let mut conn = PgConnection::connect(url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut conn).await.unwrap();
    let lock = format!("LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE");
    tokio::spawn(async move {
        sqlx::query(&lock).execute(&mut conn).await.unwrap();
        conn
    })
}

async fn let_go(mut conn: PgConnection, how: &str) {
    sqlx::query(how).execute(&mut conn).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_load_goes_on_past_a_migration_queued_behind_it_on_postgres() {
    counters();
    let (db, store) = stored_small_fleet().await;
    // api_tokens is the last table the load locks: it holds lines while it
    // waits here.
    let holder = holding(&db.url, "LOCK TABLE api_tokens IN ACCESS EXCLUSIVE MODE").await;
    let loader = db.store().await;
    let load = tokio::spawn(async move { loader.load_all().await });
    lock_waiters(&db.url, 1, "the reader never waited on the holder").await;
    let migration = migration_waiting_on(&db.url, "lines").await;
    lock_waiters(&db.url, 2, "the migration never queued").await;
    let_go(holder, "COMMIT").await;

    let (mut loaded, _, _) = tokio::time::timeout(Duration::from_secs(60), load)
        .await
        .expect("the load stalled behind the migration's lock request")
        .unwrap()
        .unwrap();
    let migration = tokio::time::timeout(Duration::from_secs(30), migration)
        .await
        .expect("the migration never got its lock")
        .unwrap();
    let_go(migration, "ROLLBACK").await;
    assert_eq!(large_reads("mirror_load", "lock_queued"), 1);
    assert_eq!(large_reads("mirror_load", "two_connections"), 0);
    loaded.sort();
    assert!(!loaded.lines.is_empty());
    assert_eq!(loaded, db_rows(&*store).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_import_goes_on_past_a_migration_queued_behind_it_on_postgres() {
    counters();
    let (db, store, mut batch) = stored_big_fleet().await;
    phone_mut(&mut batch, 7).label = Some("moved to reception".into());
    // The import reads tenants after locking phones and lines: it holds
    // both while it waits here (the batch's tenants, upserted first, are
    // left out).
    let holder = holding(&db.url, "LOCK TABLE tenants IN ACCESS EXCLUSIVE MODE").await;
    let importer = store.clone();
    let import = tokio::spawn({
        let batch = batch[2..].to_vec();
        async move { importer.apply(&batch, &audit("import")).await }
    });
    lock_waiters(&db.url, 1, "the reader never waited on the holder").await;
    let migration = migration_waiting_on(&db.url, "lines").await;
    lock_waiters(&db.url, 2, "the migration never queued").await;
    let_go(holder, "COMMIT").await;

    let report = tokio::time::timeout(Duration::from_secs(120), import)
        .await
        .expect("the import stalled behind the migration's lock request")
        .unwrap()
        .unwrap();
    assert_eq!(report.phones.updated, 1, "{report:?}");
    assert_eq!(large_reads("import", "lock_queued"), 1);
    assert_eq!(large_reads("import", "two_connections"), 0);
    let migration = tokio::time::timeout(Duration::from_secs(30), migration)
        .await
        .expect("the migration never got its lock")
        .unwrap();
    let_go(migration, "ROLLBACK").await;
    let stored = db_rows(&*store).await;
    let phone = stored
        .phones
        .iter()
        .find(|p| p.label.as_deref() == Some("moved to reception"));
    assert!(phone.is_some(), "the change was not stored");
}

/// A busy node's pool can be held by other work (admin requests, the
/// writers): here its other connection is an edit waiting on a lock. The
/// load's lines wait the acquire timeout for a second connection, then
/// come on the first; before, the whole load failed and was tried again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_load_reads_lines_on_one_connection_when_the_pool_has_none_to_spare() {
    counters();
    let db = dialtone_sync::testing::TestDb::new(dialtone_sync::Backend::Postgres).await;
    let options = dialtone_sync::StoreOptions {
        max_connections: 2,
        acquire_timeout: Duration::from_millis(500),
        ..dialtone_sync::StoreOptions::default()
    };
    let store = db.store_with(&options).await;
    store
        .apply(&fleet_of(40, |n| 1 + n as usize % 3), &audit("seed"))
        .await
        .unwrap();
    let want = db_rows(&*store).await;
    let read_on_two = large_reads("mirror_load", "two_connections");
    // audit_log is not mirrored, so the load does not wait on it; the edit
    // writes its audit row last, holding its pooled connection meanwhile.
    let holder = holding(&db.url, "LOCK TABLE audit_log IN ACCESS EXCLUSIVE MODE").await;
    let editing = tokio::spawn({
        let store = store.clone();
        async move { store.apply(&[tenant("gamma", "DE")], &audit("edit")).await }
    });
    lock_waiters(&db.url, 1, "the edit never waited on the audit log").await;

    let loaded = tokio::time::timeout(Duration::from_secs(60), store.load_all())
        .await
        .expect("the load never ended");
    let (mut loaded, _, _) = loaded.expect("the load failed for want of a second connection");
    assert_eq!(large_reads("mirror_load", "no_connection"), 1);
    assert_eq!(large_reads("mirror_load", "two_connections"), read_on_two);
    let_go(holder, "ROLLBACK").await;
    editing.await.unwrap().unwrap();
    loaded.sort();
    assert_eq!(loaded.lines.len(), 79);
    assert_eq!(loaded, want);
}
