//! A migration waiting for a table's lock holds up every later query on
//! that table. On PostgreSQL it steps back after `migration_lock_wait`,
//! tries again, and past `migration_retry_for` fails with a reason. The
//! pending migration here is 0008 (a column's collation set again to what
//! it is: it locks phones exclusively and changes nothing).

mod common;

use std::time::Duration;

use common::lock_waiters;
use dialtone_sync::testing::TestDb;
use dialtone_sync::*;
use sqlx::{Connection, PgConnection};

const PENDING: i64 = 8;

/// A migrated store with migration [`PENDING`] to run again.
async fn store_with_a_pending_migration(
    db: &TestDb,
    options: &StoreOptions,
) -> std::sync::Arc<dyn store::Store> {
    let store = db.store_with(options).await;
    let mut conn = PgConnection::connect(&db.url).await.unwrap();
    sqlx::query("DELETE FROM _sqlx_migrations WHERE version = $1")
        .bind(PENDING)
        .execute(&mut conn)
        .await
        .unwrap();
    store
}

/// A transaction that has read phones, so holds a lock the migration waits for.
async fn reading_phones(url: &str) -> PgConnection {
    let mut conn = PgConnection::connect(url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut conn).await.unwrap();
    sqlx::query("SELECT count(*) FROM phones")
        .execute(&mut conn)
        .await
        .unwrap();
    conn
}

async fn applied(url: &str) -> bool {
    let mut conn = PgConnection::connect(url).await.unwrap();
    sqlx::query_scalar("SELECT EXISTS (SELECT FROM _sqlx_migrations WHERE version = $1)")
        .bind(PENDING)
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_waiting_for_a_lock_lets_queries_through_on_postgres() {
    let db = TestDb::new(Backend::Postgres).await;
    let options = StoreOptions {
        migration_lock_wait: Duration::from_millis(200),
        migration_retry_for: Duration::from_secs(60),
        ..StoreOptions::default()
    };
    let store = store_with_a_pending_migration(&db, &options).await;
    let mut long_read = reading_phones(&db.url).await;
    let migrating = tokio::spawn({
        let store = store.clone();
        async move { store.migrate().await }
    });
    // The migration is under way once it waits for the lock.
    lock_waiters(&db.url, 1, "the migration never waited").await;
    // Queued behind a migration that waited on, this read would wait for
    // the long one to end.
    let mut reader = PgConnection::connect(&db.url).await.unwrap();
    let read = tokio::time::timeout(
        Duration::from_secs(15),
        sqlx::query("SELECT count(*) FROM phones").execute(&mut reader),
    )
    .await;
    assert!(
        read.is_ok(),
        "a read of phones waited behind the migration's lock request"
    );
    assert!(
        !migrating.is_finished(),
        "the migration ended under the lock"
    );
    sqlx::query("COMMIT").execute(&mut long_read).await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), migrating)
        .await
        .expect("the migration did not go on once the table was free")
        .unwrap()
        .expect("the migration ran");
    assert!(applied(&db.url).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_locked_out_for_too_long_fails_with_a_reason_on_postgres() {
    let db = TestDb::new(Backend::Postgres).await;
    let options = StoreOptions {
        migration_lock_wait: Duration::from_millis(100),
        migration_retry_for: Duration::from_secs(1),
        ..StoreOptions::default()
    };
    let store = store_with_a_pending_migration(&db, &options).await;
    let mut long_read = reading_phones(&db.url).await;
    let refused = tokio::time::timeout(Duration::from_secs(30), store.migrate())
        .await
        .expect("the migration waited on past its budget");
    let error = refused.expect_err("migrated under another transaction's lock");
    assert!(
        matches!(error, SyncError::MigrationLocked { .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains("stayed in use"), "{message}");
    assert!(
        !applied(&db.url).await,
        "a stepped-back migration was recorded"
    );
    sqlx::query("ROLLBACK")
        .execute(&mut long_read)
        .await
        .unwrap();
    store
        .migrate()
        .await
        .expect("migrates once the table is free");
    assert!(applied(&db.url).await);
}
