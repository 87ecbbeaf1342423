//! A node whose database is put back to an older copy (a backup restored
//! without `dialtone reload-all`) reloads in full by itself. Before, its
//! catch-up found nothing newer than its cursor: rows the copy lacks
//! stayed in the mirror, and the restored id counters gave a lost
//! tenant's id to a new one, which then owned the lost tenant's phone,
//! line passwords and all.

mod common;

use std::process::Command;
use std::sync::Arc;

use common::*;
use dialtone_sync::testing::TestDb;
use dialtone_sync::*;

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
    let bin = std::path::PathBuf::from(
        std::env::var("DIALTONE_TEST_PG_BIN")
            .expect("DIALTONE_TEST_PG_BIN is not set: run the tests through scripts/test"),
    );
    let backup_dir = tempfile::tempdir().unwrap();
    let backup = backup_dir.path().join("backup.dump");
    run(Command::new(bin.join("pg_dump"))
        .args(["--format=custom", "--file"])
        .arg(&backup)
        .arg(&db.url));
    let mirror = mirror_ahead_of_the_backup(&store).await;

    run(Command::new(bin.join("pg_restore"))
        .args(["--clean", "--if-exists", "--single-transaction", "--dbname"])
        .arg(&db.url)
        .arg(&backup));
    assert_serves_the_restored_database(&mirror, &store).await;
}

fn run(command: &mut Command) {
    let out = command.output().expect("run a PostgreSQL client tool");
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
