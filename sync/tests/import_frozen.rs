//! A large first import into empty tables on PostgreSQL truncates them and
//! writes its rows frozen (`store/postgres/bulk_quiet.rs`), so the key
//! checks that end it read indexes alone; a run whose transaction holds
//! exported snapshots must not try, as PostgreSQL would refuse the `COPY`.

mod common;

use common::*;
use dialtone_sync::*;
use sqlx::Connection;

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
