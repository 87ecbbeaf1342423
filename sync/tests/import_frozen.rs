//! A large first import into empty tables on PostgreSQL truncates them and
//! writes its rows frozen (`store/postgres/bulk_quiet.rs`), so the key
//! checks that end it read indexes alone; a run whose transaction holds
//! exported snapshots must not try, as PostgreSQL would refuse the `COPY`.
//! A node loading meanwhile waits for the import before its snapshot. A
//! first import cut off before its commit leaves the tables, their keys
//! and triggers as they were.

mod common;

use common::*;
use dialtone_sync::*;
use sqlx::Connection;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

/// Pages of `table` and how many of them the visibility map marks
/// all-visible, as `ANALYZE` counts them.
async fn visible_pages(url: &str, table: &str) -> (i32, i32) {
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::query(&format!("ANALYZE {table}"))
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query_as("SELECT relpages, relallvisible FROM pg_class WHERE oid = $1::regclass")
        .bind(table)
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

/// The two tables' indexes and foreign keys, by name.
async fn keys_and_indexes(url: &str) -> Vec<String> {
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::query_scalar(
        "SELECT indexrelid::regclass::text FROM pg_index \
         WHERE indrelid IN ('phones'::regclass, 'lines'::regclass) \
         UNION ALL SELECT conname::text FROM pg_constraint \
         WHERE contype = 'f' AND conrelid IN ('phones'::regclass, 'lines'::regclass) \
         ORDER BY 1",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_first_import_is_written_frozen_on_postgres() {
    let (db, store, _) = stored_big_fleet().await;
    for table in ["phones", "lines"] {
        let (pages, visible) = visible_pages(&db.url, table).await;
        assert!(pages > 0, "{table} has no pages");
        assert_eq!(visible, pages, "{table}: rows not written frozen");
    }
    assert_eq!(
        keys_and_indexes(&db.url).await,
        [
            "lines_phone_id_fkey",
            "lines_phone_id_position_key",
            "lines_pkey",
            "phones_mac_key",
            "phones_pkey",
            "phones_tenant",
            "phones_tenant_id_fkey",
        ]
    );
    let stored = db_rows(&*store).await;
    assert_eq!(stored.phones.len(), BIG as usize);
}

/// One apply: the stored fleet twice, apart (large runs with nothing to
/// write, each read on two connections through a snapshot exported and
/// held to the end), its tenant deleted and created anew (phones and lines
/// now empty), then the fleet again: a first import into empty tables in a
/// transaction holding two exports, where PostgreSQL refuses `FREEZE`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_after_exported_snapshots_is_written_unfrozen_on_postgres() {
    let (db, store, fleet) = stored_big_fleet().await;
    let phones = &fleet[2..];
    let mut batch = phones.to_vec();
    batch.push(tenant("gamma", "DE"));
    batch.extend(phones.iter().cloned());
    batch.push(Mutation::DeleteTenant {
        slug: "acme".into(),
    });
    batch.push(tenant("acme", "US"));
    batch.extend(phones.iter().cloned());
    let report = store.apply(&batch, &audit("import")).await.unwrap();
    assert_eq!(report.phones.inserted, u64::from(BIG), "{report:?}");
    let stored = db_rows(&*store).await;
    assert_eq!(stored.phones.len(), BIG as usize);
    assert_eq!(stored.lines.len(), (BIG + BIG / 4) as usize);
    assert_eq!(keys_and_indexes(&db.url).await.len(), 7);
}

type HeldImport = (
    std::thread::JoinHandle<Result<store::WriteReport, SyncError>>,
    mpsc::Sender<()>,
);

/// Starts a first import of `batch` into the database at `url` and returns
/// once it is held at its last progress report, which comes once every row
/// is written, the keys are back and the epoch is bumped, before the
/// commit: the import holds its exclusive locks there until the sender is
/// sent to (or 60 s pass). The import runs on a thread and runtime of its
/// own, with a store of its own: the hold blocks a worker in the progress
/// callback, and a connection the test made on a runtime with a blocked
/// worker stalled until the callback returned (that worker can be the one
/// driving the runtime's I/O).
async fn import_held_before_commit(url: &str, batch: Vec<Mutation>) -> HeldImport {
    let (written_tx, written_rx) = mpsc::channel::<()>();
    let (go_on_tx, go_on_rx) = mpsc::channel::<()>();
    let go_on_rx = Mutex::new(go_on_rx);
    let progress: store::Progress = Arc::new(move |n| {
        if n >= u64::from(BIG) {
            let _ = written_tx.send(());
            let _ = go_on_rx
                .lock()
                .unwrap()
                .recv_timeout(Duration::from_secs(60));
        }
    });
    let url = url.to_string();
    let import = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let store = store::open(&url, testing::test_key(), &Default::default()).await?;
            store
                .apply_with_progress(
                    &batch,
                    &audit("import"),
                    Some(progress),
                    store::Ending::Commit,
                )
                .await
        })
    });
    tokio::task::spawn_blocking(move || written_rx.recv_timeout(Duration::from_secs(120)))
        .await
        .unwrap()
        .expect("the import reached its last progress report");
    (import, go_on_tx)
}

/// The end of a [`HeldImport`], waited for off the test's runtime.
async fn outcome(
    import: std::thread::JoinHandle<Result<store::WriteReport, SyncError>>,
) -> Result<store::WriteReport, SyncError> {
    let joined = tokio::task::spawn_blocking(move || import.join());
    tokio::time::timeout(Duration::from_secs(60), joined)
        .await
        .expect("the import ended")
        .unwrap()
        .expect("the import did not panic")
}

/// A node's cold load that begins while a first import is writing frozen
/// rows, and waits on the import's locks, must see all of the import or
/// none of it. Frozen rows are visible to a snapshot taken before their
/// commit, while the tenants created in the same run are not: a load whose
/// snapshot predated the commit held every new phone without its tenant.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_load_waiting_on_a_first_import_sees_all_of_it_on_postgres() {
    let db = dialtone_sync::testing::TestDb::new(Backend::Postgres).await;
    let store = db.store().await;
    let batch = big_fleet();
    let (import, go_on_tx) = import_held_before_commit(&db.url, batch).await;

    let loader = db.store().await;
    let load = tokio::spawn(async move { loader.load_all().await });
    // The load is under way once one of its connections waits on a lock.
    lock_waiters(&db.url, 1, "the load never waited on the import").await;
    assert!(
        !load.is_finished(),
        "the load ended under the import's locks"
    );
    go_on_tx.send(()).unwrap();
    let report = outcome(import).await.unwrap();
    assert_eq!(report.phones.inserted, u64::from(BIG), "{report:?}");

    let (mut loaded, _, _) = load.await.unwrap().unwrap();
    loaded.sort();
    let tenants: std::collections::HashSet<_> = loaded.tenants.iter().map(|t| t.id).collect();
    let orphans = loaded
        .phones
        .iter()
        .filter(|p| !tenants.contains(&p.tenant_id))
        .count();
    assert_eq!(orphans, 0, "phones loaded without their tenant");
    assert_eq!(loaded, db_rows(&*store).await);
}

/// The two tables' triggers that are not enabled, by name.
async fn triggers_off(url: &str) -> Vec<String> {
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::query_scalar(
        "SELECT tgname::text FROM pg_trigger \
         WHERE tgrelid IN ('phones'::regclass, 'lines'::regclass) \
         AND NOT tgisinternal AND tgenabled <> 'O' ORDER BY 1",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap()
}

/// Rows of every table a first import writes, and the epoch it bumps.
async fn written_rows(url: &str) -> Vec<(String, i64)> {
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    let mut counts = Vec::new();
    for table in ["tenants", "phones", "lines", "change_log", "audit_log"] {
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(&mut conn)
            .await
            .unwrap();
        counts.push((table.to_string(), n));
    }
    let epoch: i64 = sqlx::query_scalar("SELECT epoch FROM dialtone_meta")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    counts.push(("epoch".to_string(), epoch));
    counts
}

/// A first import whose connection dies after it has truncated the
/// tables, dropped and rebuilt their keys, turned the change log's
/// triggers off and on and written every row frozen, but before its
/// commit: PostgreSQL must undo all of it (the DDL is the transaction's),
/// the store must answer with an error rather than hang or panic, and the
/// same import must then go through, frozen again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_first_import_cut_off_before_its_commit_changes_nothing_on_postgres() {
    let db = dialtone_sync::testing::TestDb::new(Backend::Postgres).await;
    let store = db.store().await;
    let keys_before = keys_and_indexes(&db.url).await;
    assert_eq!(keys_before.len(), 7, "{keys_before:?}");
    let rows_before = written_rows(&db.url).await;
    let batch = big_fleet();

    let (import, go_on_tx) = import_held_before_commit(&db.url, batch.clone()).await;

    let mut admin = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let ended: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid() \
         AND state = 'idle in transaction'",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert_eq!(ended, [true], "the import's connection, and only it");
    go_on_tx.send(()).unwrap();
    let error = outcome(import)
        .await
        .expect_err("a commit on a dead connection succeeded");
    assert!(!matches!(error, SyncError::Rejected { .. }), "{error:?}");

    assert_eq!(keys_and_indexes(&db.url).await, keys_before);
    assert_eq!(triggers_off(&db.url).await, Vec::<String>::new());
    assert_eq!(written_rows(&db.url).await, rows_before);

    let report = store.apply(&batch, &audit("import")).await.unwrap();
    assert_eq!(report.phones.inserted, u64::from(BIG), "{report:?}");
    for table in ["phones", "lines"] {
        let (pages, visible) = visible_pages(&db.url, table).await;
        assert_eq!(visible, pages, "{table}: the retry was not written frozen");
    }
    assert_eq!(keys_and_indexes(&db.url).await, keys_before);
    assert_eq!(db_rows(&*store).await.phones.len(), BIG as usize);
}
