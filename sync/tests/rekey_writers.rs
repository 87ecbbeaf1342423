//! Writers that still hold the old key once `Store::rekey` has moved the
//! database to a new one: a store opened before the run (a node left
//! running, a cron job), or a write queued behind the run's table locks
//! (an import started just before). Each is refused at its end and writes
//! nothing: its values would be sealed with the key being thrown away.

#[macro_use]
mod common;

use std::sync::Arc;

use common::{ldap_source, lock_waiters};
use dialtone_sync::store::StoreOptions;
use dialtone_sync::testing::build::{audit, phone, tenant};
use dialtone_sync::testing::{test_key, TestDb};
use dialtone_sync::*;

fn new_key() -> SecretKey {
    SecretKey::parse(&"c3".repeat(32)).unwrap()
}

async fn open_with(db: &TestDb, key: SecretKey) -> Arc<dyn Store> {
    dialtone_sync::open(&db.url, key, &StoreOptions::default())
        .await
        .unwrap()
}

fn rekey_audit() -> Audit {
    Audit {
        tenant: None,
        actor: "test".into(),
        action: "rekey".into(),
        entity: "secrets_key".into(),
        entity_key: String::new(),
        detail: serde_json::json!({}),
    }
}

/// Tenant acme with two phones, one with an HTTP login, and an LDAP
/// source with a secret; written through the returned store, which has
/// therefore checked its key.
async fn fleet(db: &TestDb) -> Arc<dyn Store> {
    let store = db.store().await;
    let Mutation::UpsertPhone(mut first) = phone("acme", 1, 2) else {
        unreachable!()
    };
    first.http_user = Some("admin".into());
    first.http_password = Some("web-secret-1".into());
    let batch = [
        tenant("acme", "US"),
        Mutation::UpsertPhone(first),
        phone("acme", 2, 1),
        ldap_source("acme", "corp", Some("bind-secret")),
    ];
    store.apply(&batch, &audit("setup")).await.unwrap();
    store
}

/// Phones numbered from `first`, `count` of them, each with a line
/// password and an HTTP password: 200 or more go the bulk (import) way.
fn late_phones(first: u32, count: u32) -> Vec<Mutation> {
    (first..first + count)
        .map(|n| {
            let Mutation::UpsertPhone(mut p) = phone("acme", n, 1) else {
                unreachable!()
            };
            p.http_user = Some(format!("late{n}"));
            p.http_password = Some(format!("late-web-{n}"));
            Mutation::UpsertPhone(p)
        })
        .collect()
}

fn refused_as_moved(result: Result<WriteReport, SyncError>, what: &str) {
    match result {
        Err(SyncError::Key(why)) => {
            assert!(
                why.contains("moved to another secrets key"),
                "{what}: {why}"
            );
            assert!(why.contains("restart this node"), "{what}: {why}");
        }
        other => panic!("{what}: a write with the old key was not refused: {other:?}"),
    }
}

/// What the database holds once the run is done, read with the new key:
/// every stored secret opens with it, the late phones are not there, the
/// source's secret is the one it had, and no refused write left an audit
/// row.
async fn only_new_key_values(db: &TestDb) {
    let store = open_with(db, new_key()).await;
    store.check_schema().await.unwrap();
    let (data, _, _) = store.load_all().await.unwrap();
    assert_eq!(data.phones.len(), 2, "a refused write left phones");
    for line in &data.lines {
        let sealed = line.password.as_ref().unwrap();
        new_key().open(Purpose::LinePassword, sealed).unwrap();
    }
    for phone in &data.phones {
        if let Some(sealed) = &phone.http_password {
            new_key().open(Purpose::DeviceHttpPassword, sealed).unwrap();
        }
    }
    let secret = data.directory_sources[0].secret.as_ref().unwrap();
    let secret = new_key().open(Purpose::SourceSecret, secret).unwrap();
    assert_eq!(secret, "bind-secret");
    let query = AuditQuery {
        limit: 100,
        ..Default::default()
    };
    let audited = store.audit_log(&query).await.unwrap();
    assert!(audited.iter().all(|r| r.action != "late"), "{audited:?}");
    // The new key's writes go through.
    store
        .apply(&late_phones(900, 1), &audit("after"))
        .await
        .unwrap();
    store.close().await;
}

both_backends!(a_store_opened_before_the_run_is_refused, opened_before_body);
async fn opened_before_body(db: TestDb) {
    let old = fleet(&db).await;
    let runner = open_with(&db, test_key()).await;
    runner.rekey(&new_key(), &rekey_audit()).await.unwrap();
    runner.close().await;

    refused_as_moved(
        old.apply(&late_phones(10, 1), &audit("late")).await,
        "a phone",
    );
    refused_as_moved(
        old.apply(&late_phones(100, 250), &audit("late")).await,
        "an import's phones",
    );
    refused_as_moved(
        old.apply(
            &[ldap_source("acme", "corp", Some("late-bind"))],
            &audit("late"),
        )
        .await,
        "a source's secret",
    );
    // Sealing nothing, and refused all the same: the node must restart.
    refused_as_moved(
        old.apply(&[tenant("beta", "GB")], &audit("late")).await,
        "a tenant",
    );
    old.close().await;
    only_new_key_values(&db).await;
}

/// The PostgreSQL case of the review: writes that reach the tables while
/// the run holds them wait for its commit, then go on with the old key.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_queued_behind_the_run_are_refused() {
    use sqlx::Connection;
    let db = TestDb::new(Backend::Postgres).await;
    let old = fleet(&db).await;
    let runner = open_with(&db, test_key()).await;

    // Holds the run between its table locks and its commit: it waits to
    // move the check value.
    let mut holder = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut holder).await.unwrap();
    sqlx::query("SELECT 1 FROM dialtone_meta WHERE singleton = 1 FOR UPDATE")
        .execute(&mut holder)
        .await
        .unwrap();
    let rekeying = tokio::spawn({
        let runner = runner.clone();
        async move { runner.rekey(&new_key(), &rekey_audit()).await }
    });
    lock_waiters(&db.url, 1, "the run never waited for the check value").await;

    let import = tokio::spawn({
        let old = old.clone();
        async move { old.apply(&late_phones(100, 250), &audit("late")).await }
    });
    let edit = tokio::spawn({
        let old = old.clone();
        async move {
            let mut batch = late_phones(10, 1);
            batch.push(ldap_source("acme", "corp", Some("late-bind")));
            old.apply(&batch, &audit("late")).await
        }
    });
    lock_waiters(&db.url, 3, "the writes never queued behind the run").await;
    assert!(!import.is_finished() && !edit.is_finished());

    sqlx::query("COMMIT").execute(&mut holder).await.unwrap();
    rekeying.await.unwrap().unwrap();
    refused_as_moved(import.await.unwrap(), "the queued import");
    refused_as_moved(edit.await.unwrap(), "the queued edit");
    old.close().await;
    runner.close().await;
    only_new_key_values(&db).await;
}
