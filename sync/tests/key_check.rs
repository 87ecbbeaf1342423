//! A database refuses a secret key other than the one its secrets are
//! sealed with: a key file missing on one node and created anew used to
//! start a node that sealed secrets no other could open.

#[macro_use]
mod common;

use dialtone_sync::store::StoreOptions;
use dialtone_sync::testing::build::{audit, phone, tenant};
use dialtone_sync::testing::{test_key, TestDb};
use dialtone_sync::*;

fn other_key() -> SecretKey {
    SecretKey::parse(&"ab".repeat(32)).unwrap()
}

async fn open_with(db: &TestDb, key: SecretKey) -> std::sync::Arc<dyn Store> {
    dialtone_sync::open(&db.url, key, &StoreOptions::default())
        .await
        .unwrap()
}

/// Forgets the kept check value, as a database from before it was kept.
async fn forget_check(db: &TestDb) {
    const FORGET: &str = "UPDATE dialtone_meta SET key_check = NULL";
    match db.backend {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&db.url).await.unwrap();
            sqlx::query(FORGET).execute(&pool).await.unwrap();
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
            sqlx::query(FORGET).execute(&pool).await.unwrap();
        }
    }
}

fn refused(result: Result<(), SyncError>) {
    match result {
        Err(SyncError::Key(why)) => assert!(why.contains("sealed with"), "{why}"),
        other => panic!("a wrong key was not refused: {other:?}"),
    }
}

both_backends!(a_wrong_key_is_refused, wrong_key_body);
async fn wrong_key_body(db: TestDb) {
    // The first open keeps the key's check value.
    let store = db.store().await;
    store
        .apply(
            &[tenant("acme", "US"), phone("acme", 1, 1)],
            &audit("setup"),
        )
        .await
        .unwrap();
    store.close().await;
    let wrong = open_with(&db, other_key()).await;
    refused(wrong.migrate().await);
    refused(wrong.check_schema().await);
    wrong.close().await;

    // A database from before the check value: judged by a stored line
    // password, then the right key's value kept again.
    forget_check(&db).await;
    let wrong = open_with(&db, other_key()).await;
    refused(wrong.check_schema().await);
    wrong.close().await;
    let right = open_with(&db, test_key()).await;
    right.check_schema().await.unwrap();
    right.close().await;
    let wrong = open_with(&db, other_key()).await;
    refused(wrong.migrate().await);
    wrong.close().await;
}

both_backends!(every_kind_of_secret_judges_an_old_database, kinds_body);
async fn kinds_body(db: TestDb) {
    // No line passwords, only a phone's HTTP password: still judged.
    let store = db.store().await;
    let mut phone_only = phone("acme", 1, 0);
    if let Mutation::UpsertPhone(p) = &mut phone_only {
        p.http_user = Some("desk".into());
        p.http_password = Some("web-secret".into());
    }
    store
        .apply(&[tenant("acme", "US"), phone_only], &audit("setup"))
        .await
        .unwrap();
    store.close().await;
    forget_check(&db).await;
    let wrong = open_with(&db, other_key()).await;
    refused(wrong.migrate().await);
    wrong.close().await;
    let right = open_with(&db, test_key()).await;
    right.migrate().await.unwrap();
    right.close().await;
}

// A node that started from its snapshot while the database was away ran
// neither `migrate` nor `check_schema`: its first write checks the key
// itself, and with the wrong one writes nothing.
both_backends!(
    a_write_checks_the_key_when_nothing_has,
    unchecked_write_body
);
async fn unchecked_write_body(db: TestDb) {
    let store = db.store().await;
    store
        .apply(&[tenant("acme", "US")], &audit("setup"))
        .await
        .unwrap();
    store.close().await;

    let wrong = open_with(&db, other_key()).await;
    let written = wrong
        .apply(&[phone("acme", 1, 1)], &audit("unchecked"))
        .await
        .map(|_| ());
    refused(written);
    wrong.close().await;

    let right = open_with(&db, test_key()).await;
    let (data, _, _) = right.load_all().await.unwrap();
    assert!(data.phones.is_empty(), "the refused write landed");
    right
        .apply(&[phone("acme", 1, 1)], &audit("unchecked"))
        .await
        .unwrap();
    right.close().await;
}
