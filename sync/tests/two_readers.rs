//! With nothing waiting on their tables, the mirror's load and a large
//! import's comparison read phones and lines on two connections at once.
//! Their one-connection fallback (`second_reader.rs`) gives the same rows,
//! only slower, so these tests count the reads by how they were done: a
//! fallback taken when it need not be fails here and nowhere else.

mod common;

use std::time::Duration;

use common::*;
use dialtone_sync::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mirror_load_reads_lines_on_a_second_connection() {
    counters();
    let (_db, store) = stored_small_fleet().await;
    let (mut loaded, _, _) = store.load_all().await.unwrap();
    assert_eq!(large_reads("mirror_load", "two_connections"), 1);
    assert_eq!(large_reads("mirror_load", "lock_queued"), 0);
    loaded.sort();
    assert_eq!(loaded.lines.len(), 79);
    assert_eq!(loaded, db_rows(&*store).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_import_compares_on_two_connections() {
    counters();
    let (_db, store, mut batch) = stored_big_fleet().await;
    // The first import found empty tables: nothing to read.
    assert_eq!(large_reads("import", "two_connections"), 0);
    phone_mut(&mut batch, 7).label = Some("moved to reception".into());
    let report = store.apply(&batch, &audit("import")).await.unwrap();
    assert_eq!(large_reads("import", "two_connections"), 1);
    assert_eq!(large_reads("import", "lock_queued"), 0);
    assert_eq!(large_reads("import", "no_connection"), 0);
    assert_eq!(report.phones.updated, 1, "{report:?}");
}

/// A backend sends its row counts to the shared statistics between
/// transactions, and then only if it last sent them a second or more ago;
/// until then its view of the current transaction's writes includes the
/// earlier transactions'. Here every pooled connection (the pool keeps at
/// most two) is idle past a second, then edits twice in quick succession:
/// the first edit's counts are sent, the second's stay on the connection
/// the import then takes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_import_right_after_edits_on_its_connection_compares_on_two_connections() {
    counters();
    let db = dialtone_sync::testing::TestDb::new(Backend::Postgres).await;
    let options = StoreOptions {
        max_connections: 2,
        ..StoreOptions::default()
    };
    let store = db.store_with(&options).await;
    let mut batch = big_fleet();
    store.apply(&batch, &audit("import")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let edited = [3, 5, 9, 11];
    for n in edited {
        let mut edit = phone("acme", n, 1);
        if let Mutation::UpsertPhone(p) = &mut edit {
            p.label = Some("front desk".into());
        }
        store.apply(&[edit], &audit("edit")).await.unwrap();
    }
    phone_mut(&mut batch, 7).label = Some("moved to reception".into());
    let report = store.apply(&batch, &audit("import")).await.unwrap();
    assert_eq!(large_reads("import", "two_connections"), 1);
    // The edited phones are back to the file's labels; phone 7 has its new one.
    assert_eq!(report.phones.updated, 5, "{report:?}");
    let stored = db_rows(&*store).await;
    let label = |n: u32| {
        let mac = phone_mut(&mut big_fleet(), n).mac;
        stored
            .phones
            .iter()
            .find(|p| p.mac == mac)
            .unwrap()
            .label
            .clone()
    };
    assert_eq!(label(7).as_deref(), Some("moved to reception"));
    for n in edited {
        assert_eq!(
            label(n).as_deref(),
            phone_mut(&mut big_fleet(), n).label.as_deref()
        );
    }
}
