//! On PostgreSQL, a phone-scope template written while its phone moves to
//! another tenant (or its tenant is deleted) never stays on the phone: the
//! template's write locks the phone, and so does every write that deletes
//! a phone's templates, before it deletes them. Without that, the delete
//! missed a template whose write was still open, which then committed onto
//! the phone under its new tenant (whose admin could read it, line
//! passwords and all), or onto a MAC with no phone, for its next owner.

mod common;

use std::time::Duration;

use common::*;
use dialtone_sync::testing::TestDb;
use dialtone_sync::*;
use sqlx::Connection;

const MAC: &str = "001565000001";

/// A template for `MAC` written the way a store writes one (its phone
/// locked first), left open until the returned connection commits.
async fn open_template_write(db: &TestDb) -> sqlx::PgConnection {
    let mut open = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut open).await.unwrap();
    let locked: Option<i64> = sqlx::query_scalar("SELECT id FROM phones WHERE mac = $1 FOR UPDATE")
        .bind(MAC)
        .fetch_optional(&mut open)
        .await
        .unwrap();
    assert!(locked.is_some());
    sqlx::query(
        "INSERT INTO templates (scope, family, scope_key, file_pattern, body, updated_by, updated_at) \
         VALUES ('phone', 'yealink', $1, '{mac}.cfg', 'line password {{ line.password }}', 'acme', 0)",
    )
    .bind(MAC)
    .execute(&mut open)
    .await
    .unwrap();
    open
}

/// Runs `write` while a template write for `MAC` is open, then commits
/// that write, and answers how many templates `MAC` is left with.
async fn templates_left_after(
    db: &TestDb,
    store: std::sync::Arc<dyn Store>,
    write: Vec<Mutation>,
) -> i64 {
    let mut open = open_template_write(db).await;
    let writing = tokio::spawn(async move { store.apply(&write, &audit("race")).await });
    // The race is only run once the write waits on the phone's row (the
    // lock it must take before deleting the templates); a write that got
    // past it unblocked would test nothing.
    lock_waiters(
        &db.url,
        1,
        "the write never waited on the open template write",
    )
    .await;
    sqlx::query("COMMIT").execute(&mut open).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), writing)
        .await
        .expect("the write ends once the template's write commits")
        .unwrap()
        .unwrap();
    scalar(
        db,
        &format!("SELECT count(*) FROM templates WHERE scope = 'phone' AND scope_key = '{MAC}'"),
    )
    .await
}

async fn two_tenants(phones: u32) -> (TestDb, std::sync::Arc<dyn Store>) {
    let db = TestDb::postgres().await;
    let store = db.store().await;
    let mut setup = vec![tenant("acme", "US"), tenant("globex", "US")];
    setup.extend((1..=phones).map(|n| phone("acme", n, 1)));
    store.apply(&setup, &audit("setup")).await.unwrap();
    (db, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_moved_meanwhile_leaves_the_template_behind() {
    let (db, store) = two_tenants(1).await;
    let left = templates_left_after(&db, store, vec![phone("globex", 1, 1)]).await;
    assert_eq!(left, 0, "the old tenant's template moved with the phone");
}

/// An import's run of phones (the bulk path) moving the phone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phones_an_import_moves_meanwhile_leave_the_template_behind() {
    let (db, store) = two_tenants(250).await;
    let moved: Vec<Mutation> = (1..=250).map(|n| phone("globex", n, 1)).collect();
    let left = templates_left_after(&db, store, moved).await;
    assert_eq!(left, 0, "the old tenant's template moved with the phone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_deleted_meanwhile_leaves_no_template_for_the_mac() {
    let (db, store) = two_tenants(1).await;
    let deleted = vec![Mutation::DeleteTenant {
        slug: "acme".into(),
    }];
    let left = templates_left_after(&db, store, deleted).await;
    assert_eq!(left, 0, "a template of the deleted tenant's phone stayed");
}

/// A phone's write checked against its tag (`Expect`, which locks the
/// phone's row) while an import holds the tables and is about to update
/// that phone: the write waits for the import before it locks any row, so
/// neither is cancelled as a deadlock. (It locked the row, then waited for
/// the tables, while the import waited for the row.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checked_phone_write_does_not_deadlock_with_an_import() {
    let (db, store) = two_tenants(1).await;
    let mirror = Mirror::new();
    watcher::full_load(&mirror, &*store).await.unwrap();
    let state = mirror.load();
    let mac: Mac = MAC.parse().unwrap();
    let seen = state.phone_by_mac(&mac).unwrap();
    let tag = etag::phone_etag(seen, &state.lines_of(seen.id));
    // The import's lock, as `lock_for_import` takes it.
    let mut import = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut import).await.unwrap();
    sqlx::query("LOCK TABLE phones, lines IN SHARE ROW EXCLUSIVE MODE")
        .execute(&mut import)
        .await
        .unwrap();
    let write = vec![
        Mutation::Expect {
            target: Target::Phone { mac },
            etag: tag,
        },
        phone("globex", 1, 1),
    ];
    let writing = tokio::spawn(async move { store.apply(&write, &audit("move")).await });
    lock_waiters(&db.url, 1, "the write never waited on the import's lock").await;
    sqlx::query("UPDATE phones SET label = 'imported' WHERE mac = $1")
        .bind(MAC)
        .execute(&mut import)
        .await
        .expect("the import is not cancelled as a deadlock");
    sqlx::query("COMMIT").execute(&mut import).await.unwrap();
    let written = tokio::time::timeout(Duration::from_secs(10), writing)
        .await
        .expect("the write ends once the import commits")
        .unwrap();
    // The import changed the phone: the write's tag no longer matches.
    assert!(
        matches!(written, Err(SyncError::Conflict(_))),
        "{written:?}"
    );
}
