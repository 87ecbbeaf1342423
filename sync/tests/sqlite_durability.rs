//! A write SQLite has committed survives a power cut: the store's
//! connections run `synchronous=FULL`, so the WAL reaches the disk before
//! a commit returns (with `NORMAL`, an answered write could be taken back).

use dialtone_sync::store::sqlite::SqliteStore;
use dialtone_sync::store::StoreOptions;
use dialtone_sync::testing::test_key;

#[tokio::test]
async fn every_connection_syncs_each_commit() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("d.db").display());
    let store = SqliteStore::connect(&url, test_key(), &StoreOptions::default())
        .await
        .unwrap();
    // FULL is 2; read on several connections, each set up by the pool.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut conn = store.pool().acquire().await.unwrap();
        let level: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(level, 2, "synchronous=FULL");
        held.push(conn);
    }
}
