//! Migrations take turns across processes and nodes. On SQLite sqlx's
//! migration lock does nothing, and processes migrating one file at once (a
//! service restarted during an operator's `import` or `token create`, which
//! migrate SQLite too) failed on what the other had just made. On
//! PostgreSQL a wait for another node's migration is named as such, and a
//! process that waited its turn while a newer dialtone migrated is told it
//! is the older one, not sqlx's "previously applied but missing".

mod common;

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use common::{execute, lock_waiters, scalar};
use dialtone_sync::store::{self, Store, StoreOptions};
use dialtone_sync::testing::{test_key, TestDb};
use dialtone_sync::{Backend, SyncError};
use sqlx::migrate::Migrate;
use sqlx::{Connection, PgConnection};

/// Enough to fail nearly every run before the turns (four at once
/// collided in the first round or two); each round is a new file.
const ROUNDS: usize = 12;
const AT_ONCE: usize = 4;

/// Pretends a newer dialtone applied a migration this one does not know.
const NEWER: i64 = 9999;

async fn open_and_migrate(url: String) -> Result<(), SyncError> {
    let store = store::open(&url, test_key(), &StoreOptions::default()).await?;
    let migrated = store.migrate().await;
    store.close().await;
    migrated
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn migrations_of_a_new_sqlite_file_at_once_all_succeed() {
    for round in 0..ROUNDS {
        let db = TestDb::sqlite();
        let migrating: Vec<_> = (0..AT_ONCE)
            .map(|_| tokio::spawn(open_and_migrate(db.url.clone())))
            .collect();
        for (n, migration) in migrating.into_iter().enumerate() {
            let outcome = tokio::time::timeout(Duration::from_secs(60), migration)
                .await
                .unwrap_or_else(|_| panic!("round {round}: migration {n} hung"))
                .unwrap();
            if let Err(e) = outcome {
                panic!("round {round}: migration {n} failed: {e}");
            }
        }
        let store = store::open(&db.url, test_key(), &StoreOptions::default())
            .await
            .unwrap();
        store
            .check_schema()
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        store.close().await;
    }
}

fn newer_migration_row(backend: Backend) -> String {
    let checksum = match backend {
        Backend::Sqlite => "X'00'",
        Backend::Postgres => "'\\x00'::bytea",
    };
    format!(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES ({NEWER}, 'from a newer dialtone', TRUE, {checksum}, 1)"
    )
}

fn assert_told_it_is_older(outcome: Result<(), SyncError>) {
    let err = outcome.expect_err("migrated under a newer dialtone's schema");
    assert!(
        matches!(err, SyncError::SchemaTooNew { found: NEWER, .. }),
        "{err}"
    );
}

/// The turn another SQLite process holds while it migrates.
fn sqlite_turn(db: &TestDb) -> std::fs::File {
    let database = db.url.strip_prefix("sqlite://").unwrap();
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(format!("{database}.migrate-lock"))
        .unwrap();
    // SAFETY: a valid descriptor, borrowed from `file` for the call.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(locked, 0, "{}", std::io::Error::last_os_error());
    file
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_migration_that_waited_for_a_newer_dialtones_is_told_it_is_older() {
    let db = TestDb::sqlite();
    let store: Arc<dyn Store> = db.store().await;
    // A migration to apply, so it waits for its turn: the latest, kept
    // aside for the newer dialtone to record.
    let latest = scalar(&db, "SELECT MAX(version) FROM _sqlx_migrations").await;
    execute(
        &db,
        &format!(
            "CREATE TABLE newer_took AS SELECT * FROM _sqlx_migrations WHERE version = {latest}"
        ),
    )
    .await;
    execute(
        &db,
        &format!("DELETE FROM _sqlx_migrations WHERE version = {latest}"),
    )
    .await;
    let turn = sqlite_turn(&db);
    let migrating = tokio::spawn({
        let store = store.clone();
        async move { store.migrate().await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !migrating.is_finished(),
        "migrated during another process's turn: {:?}",
        migrating.await.unwrap()
    );
    // What the newer dialtone did in its turn: that migration, then one more.
    execute(&db, "INSERT INTO _sqlx_migrations SELECT * FROM newer_took").await;
    execute(&db, &newer_migration_row(Backend::Sqlite)).await;
    drop(turn);
    let outcome = tokio::time::timeout(Duration::from_secs(30), migrating)
        .await
        .expect("the migration never took its turn")
        .unwrap();
    assert_told_it_is_older(outcome);
}

/// sqlx's migration lock, taken by a session of the test's own as another
/// node's migration would hold it.
async fn another_nodes_migration(db: &TestDb) -> PgConnection {
    let mut conn = PgConnection::connect(&db.url).await.unwrap();
    conn.lock().await.unwrap();
    conn
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_for_another_nodes_migration_says_so_on_postgres() {
    let db = TestDb::postgres().await;
    let options = StoreOptions {
        migration_lock_wait: Duration::from_millis(100),
        migration_retry_for: Duration::from_secs(1),
        ..StoreOptions::default()
    };
    let store = db.store_with(&options).await;
    let _migrating = another_nodes_migration(&db).await;
    let outcome = tokio::time::timeout(Duration::from_secs(30), store.migrate())
        .await
        .expect("the wait went on past its budget");
    let err = outcome.expect_err("migrated while another node held the migration lock");
    assert!(matches!(err, SyncError::MigrationLocked { .. }), "{err:?}");
    assert!(
        err.to_string().contains("another node's migration"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_that_waited_for_a_newer_dialtones_is_told_it_is_older_on_postgres() {
    let db = TestDb::postgres().await;
    let options = StoreOptions {
        migration_lock_wait: Duration::from_millis(100),
        migration_retry_for: Duration::from_secs(60),
        ..StoreOptions::default()
    };
    let store = db.store_with(&options).await;
    let mut newer_node = another_nodes_migration(&db).await;
    let migrating = tokio::spawn({
        let store = store.clone();
        async move { store.migrate().await }
    });
    lock_waiters(&db.url, 1, "the migration never waited for its turn").await;
    sqlx::query(&newer_migration_row(Backend::Postgres))
        .execute(&mut newer_node)
        .await
        .unwrap();
    newer_node.unlock().await.unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(30), migrating)
        .await
        .expect("the migration never took its turn")
        .unwrap();
    assert_told_it_is_older(outcome);
}
