//! On PostgreSQL, a tenant's delete without `force` (`DeleteEmptyTenant`)
//! never takes with it a phone another node writes for the tenant while
//! the delete runs: it locks the tenant's row before counting, and the
//! phone's write (which checks its tenant through the foreign key) waits.
//! Counted without that lock, the uncommitted phone was not seen, and the
//! delete then cascaded to it once it committed. And a delete checked
//! against the tenant's tag does not deadlock with such a write.

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

/// A write holding one of the tenant's phones and then adding another
/// (the foreign key checks the tenant's row) while a delete checked
/// against the tenant's tag (`Expect`) waits for that phone: the delete's
/// lock of the row must not stop the write's check, or each waits for the
/// other and PostgreSQL cancels one as a deadlock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checked_tenant_delete_does_not_deadlock_with_a_write_adding_a_phone() {
    let db = TestDb::postgres().await;
    let store = db.store().await;
    store
        .apply(
            &[tenant("acme", "US"), phone("acme", 1, 1)],
            &audit("setup"),
        )
        .await
        .unwrap();
    let mirror = Mirror::new();
    watcher::full_load(&mirror, &*store).await.unwrap();
    let tag = etag::etag_of(&**mirror.load().tenant_by_slug("acme").unwrap());
    let mut write = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut write).await.unwrap();
    sqlx::query("SELECT id FROM phones WHERE mac = '001565000001' FOR UPDATE")
        .execute(&mut write)
        .await
        .unwrap();
    let delete = vec![
        Mutation::Expect {
            target: Target::Tenant {
                slug: "acme".into(),
            },
            etag: tag,
        },
        Mutation::DeleteTenant {
            slug: "acme".into(),
        },
    ];
    let deleting = {
        let store = store.clone();
        tokio::spawn(async move { store.apply(&delete, &audit("offboard")).await })
    };
    lock_waiters(&db.url, 1, "the delete never waited on the phone").await;
    sqlx::query(
        "INSERT INTO phones (tenant_id, mac, family, updated_at) \
         VALUES ((SELECT id FROM tenants WHERE slug = 'acme'), $1, 'yealink', 0)",
    )
    .bind(MAC)
    .execute(&mut write)
    .await
    .expect("the write's phone was refused (a deadlock?)");
    sqlx::query("COMMIT").execute(&mut write).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), deleting)
        .await
        .expect("the delete ends once the write commits")
        .unwrap()
        .expect("the delete was refused (a deadlock?)");
    assert_eq!(scalar(&db, "SELECT count(*) FROM tenants").await, 0);
}
