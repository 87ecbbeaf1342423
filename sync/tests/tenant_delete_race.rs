//! On PostgreSQL, a tenant's delete without `force` (`DeleteEmptyTenant`)
//! never takes with it a phone another node writes for the tenant while
//! the delete runs: it locks the tenant's row before counting, and the
//! phone's write (which checks its tenant through the foreign key) waits.
//! Counted without that lock, the uncommitted phone was not seen, and the
//! delete then cascaded to it once it committed.

mod common;

use std::time::Duration;

use common::*;
use dialtone_sync::testing::TestDb;
use dialtone_sync::*;
use sqlx::Connection;

const MAC: &str = "0015650000ab";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_written_during_an_unforced_delete_stays_and_refuses_it() {
    let db = TestDb::postgres().await;
    let store = db.store().await;
    store
        .apply(&[tenant("acme", "US")], &audit("setup"))
        .await
        .unwrap();
    // Another node's phone for acme, its transaction still open.
    let mut open = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut open).await.unwrap();
    sqlx::query(
        "INSERT INTO phones (tenant_id, mac, family, updated_at) \
         VALUES ((SELECT id FROM tenants WHERE slug = 'acme'), $1, 'yealink', 0)",
    )
    .bind(MAC)
    .execute(&mut open)
    .await
    .unwrap();
    let delete = vec![Mutation::DeleteEmptyTenant {
        slug: "acme".into(),
    }];
    let writing = {
        let store = store.clone();
        tokio::spawn(async move { store.apply(&delete, &audit("offboard")).await })
    };
    lock_waiters(&db.url, 1, "the delete never waited on the phone's write").await;
    sqlx::query("COMMIT").execute(&mut open).await.unwrap();
    let result = tokio::time::timeout(Duration::from_secs(10), writing)
        .await
        .expect("the delete ends once the phone's write commits")
        .unwrap();
    match result {
        Err(SyncError::NotEmpty(what)) => {
            assert!(what.contains("1 phones"), "{what}")
        }
        other => panic!("the delete was not refused: {other:?}"),
    }
    let phones = scalar(
        &db,
        &format!("SELECT count(*) FROM phones WHERE mac = '{MAC}'"),
    )
    .await;
    assert_eq!(phones, 1, "the phone written meanwhile was deleted");
    // Empty once more, the same delete goes through.
    execute(&db, &format!("DELETE FROM phones WHERE mac = '{MAC}'")).await;
    store
        .apply(
            &[Mutation::DeleteEmptyTenant {
                slug: "acme".into(),
            }],
            &audit("offboard"),
        )
        .await
        .unwrap();
    assert_eq!(scalar(&db, "SELECT count(*) FROM tenants").await, 0);
}
