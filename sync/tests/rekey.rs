//! Changing the secrets key (`Store::rekey`): every sealed value moves to
//! the new key in one transaction, the database then takes only the new
//! key, and a value the current key does not open refuses the whole run.

#[macro_use]
mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{execute, ldap_source};
use dialtone_sync::store::StoreOptions;
use dialtone_sync::testing::build::{audit, phone, tenant};
use dialtone_sync::testing::{test_key, TestDb};
use dialtone_sync::*;

fn new_key() -> SecretKey {
    SecretKey::parse(&"c3".repeat(32)).unwrap()
}

fn stray_key() -> SecretKey {
    SecretKey::parse(&"e7".repeat(32)).unwrap()
}

async fn open_with(db: &TestDb, key: SecretKey) -> std::sync::Arc<dyn Store> {
    dialtone_sync::open(&db.url, key, &StoreOptions::default())
        .await
        .unwrap()
}

/// Tenant acme with three phones of two lines each (phone 1 with an HTTP
/// password, phone 2's second line without a password), an LDAP source
/// with a secret and one without.
async fn fleet(db: &TestDb) -> std::sync::Arc<dyn Store> {
    let store = db.store().await;
    let mut batch = vec![tenant("acme", "US")];
    for n in 1..=3 {
        let Mutation::UpsertPhone(mut p) = phone("acme", n, 2) else {
            unreachable!()
        };
        if n == 1 {
            p.http_user = Some("admin".into());
            p.http_password = Some("web-secret-1".into());
        }
        if n == 2 {
            p.lines[1].password = None;
        }
        batch.push(Mutation::UpsertPhone(p));
    }
    batch.push(ldap_source("acme", "corp", Some("bind-secret")));
    batch.push(ldap_source("acme", "open", None));
    store.apply(&batch, &audit("setup")).await.unwrap();
    store
}

/// Every stored secret opened with `key`, by what it belongs to.
fn plaintexts(data: &Dataset, key: &SecretKey) -> BTreeMap<String, String> {
    let mac_of: BTreeMap<Id, String> = (data.phones.iter())
        .map(|p| (p.id, p.mac.to_string()))
        .collect();
    let mut out = BTreeMap::new();
    for line in &data.lines {
        if let Some(sealed) = &line.password {
            let plain = key.open(Purpose::LinePassword, sealed).unwrap();
            out.insert(
                format!("line {} {}", mac_of[&line.phone_id], line.position),
                plain,
            );
        }
    }
    for phone in &data.phones {
        if let Some(sealed) = &phone.http_password {
            let plain = key.open(Purpose::DeviceHttpPassword, sealed).unwrap();
            out.insert(format!("phone {}", phone.mac), plain);
        }
    }
    for source in &data.directory_sources {
        if let Some(sealed) = &source.secret {
            let plain = key.open(Purpose::SourceSecret, sealed).unwrap();
            out.insert(format!("source {}", source.name), plain);
        }
    }
    out
}

fn refused_as_not_the_key(result: Result<(), SyncError>) {
    match result {
        Err(SyncError::Key(why)) => assert!(
            why.contains("not the key this database's secrets are sealed with"),
            "{why}"
        ),
        other => panic!("the old key was not refused: {other:?}"),
    }
}

async fn rekey_audit_rows(store: &dyn Store) -> Vec<AuditRecord> {
    let query = AuditQuery {
        limit: 100,
        ..Default::default()
    };
    let rows = store.audit_log(&query).await.unwrap();
    rows.into_iter().filter(|r| r.action == "rekey").collect()
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

both_backends!(every_secret_moves_to_the_new_key, moves_body);
async fn moves_body(db: TestDb) {
    let old = fleet(&db).await;
    let (before, _, _) = old.load_all().await.unwrap();
    let want = plaintexts(&before, &test_key());
    assert_eq!(want.len(), 5 + 1 + 1, "{want:?}");
    // A node's mirror, loaded before the run: the change log brings it
    // the re-sealed rows.
    let mirror = Mirror::new();
    watcher::full_load(&mirror, &*old).await.unwrap();

    let report = old.rekey(&new_key(), &rekey_audit()).await.unwrap();
    assert_eq!(
        report,
        store::RekeyReport {
            line_passwords: 5,
            phone_http_passwords: 1,
            source_secrets: 1,
        }
    );
    old.close().await;

    let new = open_with(&db, new_key()).await;
    new.check_schema().await.unwrap();
    let (after, _, _) = new.load_all().await.unwrap();
    assert_eq!(plaintexts(&after, &new_key()), want);
    // The rows are the same rows, with only their sealed values changed.
    assert_eq!(after.phones.len(), before.phones.len());
    assert_eq!(after.lines.len(), before.lines.len());
    assert!(after.lines.iter().any(|l| l.password.is_none()));

    watcher::catch_up(&mirror, &*new).await.unwrap();
    let state = mirror.load();
    let mut opened = 0;
    for phone in state.phones() {
        for line in state.lines_of(phone.id) {
            if let Some(sealed) = &line.password {
                new_key().open(Purpose::LinePassword, sealed).unwrap();
                opened += 1;
            }
        }
    }
    assert_eq!(opened, 5);

    let audited = rekey_audit_rows(&*new).await;
    assert_eq!(audited.len(), 1, "{audited:?}");
    assert_eq!(audited[0].summary["result"]["line_passwords"], 5);
    assert_eq!(audited[0].summary["result"]["source_secrets"], 1);
    new.close().await;

    let old = open_with(&db, test_key()).await;
    refused_as_not_the_key(old.check_schema().await);
    refused_as_not_the_key(old.migrate().await);
    old.close().await;
}

both_backends!(a_value_of_another_key_refuses_the_whole_run, stray_body);
async fn stray_body(db: TestDb) {
    let store = fleet(&db).await;
    let stray_line = stray_key().seal(Purpose::LinePassword, "stray-line-pw");
    let stray_source = stray_key().seal(Purpose::SourceSecret, "stray-bind-pw");
    execute(
        &db,
        &format!(
            "UPDATE lines SET password = '{}' WHERE position = 2 \
             AND phone_id = (SELECT id FROM phones WHERE mac = '001565000003')",
            stray_line.0
        ),
    )
    .await;
    execute(
        &db,
        &format!(
            "UPDATE directory_sources SET secret = '{}' WHERE name = 'corp'",
            stray_source.0
        ),
    )
    .await;

    let refusal = store.rekey(&new_key(), &rekey_audit()).await.unwrap_err();
    let said = refusal.to_string();
    assert!(matches!(refusal, SyncError::Key(_)), "{said}");
    for named in [
        "2 stored value(s) do not open with the current key",
        "lines: password of line 2 of phone 001565000003 (tenant acme)",
        "directory_sources: secret of source corp of tenant acme",
        "nothing was re-sealed",
    ] {
        assert!(said.contains(named), "{said}");
    }
    for secret in ["stray-line-pw", "stray-bind-pw", "pw-1-0", "web-secret-1"] {
        assert!(!said.contains(secret), "{said}");
    }
    assert!(rekey_audit_rows(&*store).await.is_empty());
    store.close().await;

    // Nothing changed: the old key still opens the database and its
    // values, the new one is refused.
    let old = open_with(&db, test_key()).await;
    old.check_schema().await.unwrap();
    let (data, _, _) = old.load_all().await.unwrap();
    let first = data.lines.iter().find_map(|l| l.password.clone()).unwrap();
    assert!(test_key().open(Purpose::LinePassword, &first).is_ok());
    let phone_pw = data.phones.iter().find_map(|p| p.http_password.clone());
    assert_eq!(
        test_key()
            .open(Purpose::DeviceHttpPassword, &phone_pw.unwrap())
            .unwrap(),
        "web-secret-1"
    );
    old.close().await;
    let new = open_with(&db, new_key()).await;
    refused_as_not_the_key(new.check_schema().await);
    new.close().await;
}

both_backends!(the_same_key_is_refused, same_key_body);
async fn same_key_body(db: TestDb) {
    let store = fleet(&db).await;
    let refusal = store.rekey(&test_key(), &rekey_audit()).await.unwrap_err();
    assert!(
        refusal.to_string().contains("sealed with already"),
        "{refusal}"
    );
    assert!(rekey_audit_rows(&*store).await.is_empty());
    store.check_schema().await.unwrap();
    store.close().await;
}

// A write under way when the run starts: the run waits for its commit and
// re-seals what it wrote. Read before the writer committed, the value
// would be written back sealed from the older value (or, the write
// committed after the run's read, left sealed with the old key).
both_backends!(a_write_under_way_is_waited_for, concurrent_body);
async fn concurrent_body(db: TestDb) {
    let store = fleet(&db).await;
    let late = test_key().seal(Purpose::LinePassword, "written-meanwhile");
    let update = format!(
        "UPDATE lines SET password = '{}' WHERE position = 1 \
         AND phone_id = (SELECT id FROM phones WHERE mac = '001565000001')",
        late.0
    );
    let writer = Writer::begin(&db, &update).await;
    let rekeying = tokio::spawn({
        let store = store.clone();
        async move { store.rekey(&new_key(), &rekey_audit()).await }
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        !rekeying.is_finished(),
        "the run did not wait for the writer"
    );
    writer.commit().await;
    rekeying.await.unwrap().unwrap();
    store.close().await;

    let new = open_with(&db, new_key()).await;
    let (data, _, _) = new.load_all().await.unwrap();
    let opened = plaintexts(&data, &new_key());
    assert_eq!(opened["line 001565000001 1"], "written-meanwhile");
    new.close().await;
}

/// A transaction of another connection that has written and not yet
/// committed.
enum Writer {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

impl Writer {
    async fn begin(db: &TestDb, sql: &str) -> Writer {
        use sqlx::Connection;
        match db.backend {
            Backend::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
                sqlx::query("BEGIN IMMEDIATE")
                    .execute(&mut c)
                    .await
                    .unwrap();
                sqlx::query(sql).execute(&mut c).await.unwrap();
                Writer::Sqlite(c)
            }
            Backend::Postgres => {
                let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
                sqlx::query("BEGIN").execute(&mut c).await.unwrap();
                sqlx::query(sql).execute(&mut c).await.unwrap();
                Writer::Postgres(c)
            }
        }
    }

    async fn commit(self) {
        match self {
            Writer::Sqlite(mut c) => {
                sqlx::query("COMMIT").execute(&mut c).await.unwrap();
            }
            Writer::Postgres(mut c) => {
                sqlx::query("COMMIT").execute(&mut c).await.unwrap();
            }
        }
    }
}
