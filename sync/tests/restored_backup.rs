//! A node whose database is put back to an older copy (a backup restored
//! without `dialtone reload-all`) reloads in full by itself. Before, its
//! catch-up found nothing newer than its cursor: rows the copy lacks
//! stayed in the mirror, and the restored id counters gave a lost
//! tenant's id to a new one, which then owned the lost tenant's phone,
//! line passwords and all. And a restore still running is not loaded
//! until its schema is whole.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use dialtone_sync::testing::{eventually, TestDb};
use dialtone_sync::*;
use tokio_util::sync::CancellationToken;

const LOST_MAC: &str = "001565000b01";

/// The mirror after `vanish` (and its phone) was added on top of the
/// backup's data, caught up as a running node would be.
async fn mirror_ahead_of_the_backup(store: &Arc<dyn Store>) -> Arc<Mirror> {
    let mirror = Arc::new(Mirror::new());
    watcher::full_load(&mirror, &**store).await.unwrap();
    store
        .apply(
            &[tenant("vanish", "US"), phone("vanish", 0xb01, 1)],
            &audit("after the backup"),
        )
        .await
        .unwrap();
    watcher::catch_up(&mirror, &**store).await.unwrap();
    assert!(
        mirror
            .load()
            .phone_by_mac(&LOST_MAC.parse().unwrap())
            .is_some(),
        "the node holds the phone added after the backup"
    );
    mirror
}

/// After the restore, a new customer's tenant takes the next id the
/// restored counters issue; the node must serve the database's rows only.
async fn assert_serves_the_restored_database(mirror: &Mirror, store: &Arc<dyn Store>) {
    watcher::catch_up(mirror, &**store).await.unwrap();
    store
        .apply(&[tenant("newco", "US")], &audit("a new customer"))
        .await
        .unwrap();
    watcher::catch_up(mirror, &**store).await.unwrap();
    let state = mirror.load();
    let newco = state
        .tenant_by_slug("newco")
        .expect("the new tenant is served");
    assert_eq!(
        state.phones_of(newco.id).count(),
        0,
        "the new customer owns no phone of the lost tenant"
    );
    assert!(state.phone_by_mac(&LOST_MAC.parse().unwrap()).is_none());
    assert!(state.tenant_by_slug("vanish").is_none());
    assert!(state.tenant_by_slug("acme").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_sqlite_file_is_reloaded_in_full() {
    let db = TestDb::sqlite();
    let store = db.store().await;
    store
        .apply(&[tenant("acme", "US")], &audit("setup"))
        .await
        .unwrap();
    let backup_dir = tempfile::tempdir().unwrap();
    let backup = backup_dir.path().join("backup.db");
    execute(&db, &format!("VACUUM INTO '{}'", backup.display())).await;
    let mirror = mirror_ahead_of_the_backup(&store).await;

    // The node's next start meets the backup where its database was.
    let restored_store = store::open(
        &format!("sqlite://{}", backup.display()),
        dialtone_sync::testing::test_key(),
        &StoreOptions::default(),
    )
    .await
    .unwrap();
    restored_store.migrate().await.unwrap();
    assert_serves_the_restored_database(&mirror, &restored_store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pg_restore_is_reloaded_in_full() {
    let db = TestDb::postgres().await;
    let store = db.store().await;
    store
        .apply(&[tenant("acme", "US")], &audit("setup"))
        .await
        .unwrap();
    let backup = db.pg_dump();
    let mirror = mirror_ahead_of_the_backup(&store).await;

    db.pg_restore(&backup, &["--clean", "--if-exists", "--single-transaction"]);
    assert_serves_the_restored_database(&mirror, &store).await;
}

/// A restore without `--single-transaction` copies every row before it
/// makes the change-log triggers and the keys (its post-data section),
/// while the database id a node compares names the restored change log
/// from the start. A node that reloaded in between served the rows copied
/// so far, none of those copied later (they logged no change), and wrote
/// its snapshot so: no tenants, or phones without them, until a
/// `reload-all`. The restore stops here after its data, so the node meets
/// that moment for certain: it keeps serving what it had and says why,
/// and loads the database once the post-data section has run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pg_restore_in_progress_is_loaded_once_its_schema_is_whole() {
    let db = TestDb::postgres().await;
    let store = db.store().await;
    store
        .apply(
            &[tenant("acme", "US"), phone("acme", 0xa01, 2)],
            &audit("setup"),
        )
        .await
        .unwrap();
    let backup = db.pg_dump();
    let mirror = mirror_ahead_of_the_backup(&store).await;
    let served = mirror.load().to_dataset();
    let cancel = CancellationToken::new();
    let options = watcher::WatchOptions {
        poll_interval: Duration::from_millis(50),
        ..Default::default()
    };
    let watching = tokio::spawn(watcher::run(
        mirror.clone(),
        store.clone(),
        options,
        cancel.clone(),
    ));

    db.recreate().await;
    db.pg_restore(&backup, &["--section=pre-data", "--section=data"]);
    let told = eventually(Duration::from_secs(20), || {
        mirror
            .health()
            .last_error
            .is_some_and(|e| e.contains("schema is incomplete"))
    })
    .await;
    assert!(
        told,
        "the node says why it loads nothing: {:?}",
        mirror.health()
    );
    let refused = watcher::catch_up(&mirror, &*store)
        .await
        .expect_err("a half-restored database is not loaded");
    assert!(
        matches!(&refused, SyncError::SchemaIncomplete(what) if what.starts_with("trigger ")),
        "{refused}"
    );
    assert_eq!(
        mirror.load().to_dataset(),
        served,
        "the node keeps what it served"
    );
    assert!(mirror.health().stale_since.is_some());

    db.pg_restore(&backup, &["--section=post-data"]);
    let loaded = eventually(Duration::from_secs(20), || {
        mirror.health().last_error.is_none() && mirror.load().tenant_by_slug("vanish").is_none()
    })
    .await;
    assert!(loaded, "the whole restore is loaded: {:?}", mirror.health());
    assert_eq!(mirror.load().to_dataset(), db_rows(&*store).await);
    assert!(mirror
        .load()
        .phone_by_mac(&"001565000a01".parse().unwrap())
        .is_some());
    assert_serves_the_restored_database(&mirror, &store).await;
    cancel.cancel();
    watching.await.unwrap();
}
