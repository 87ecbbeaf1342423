//! SQLite's cold load (`store/sqlite/load.rs`): its own connection, read on
//! one thread and built on another, must still show one moment of the
//! database with the cursor of that moment, join a `sqlite::memory:`
//! database, and name the cell it cannot read.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::*;
use dialtone_sync::testing::{test_key, TestDb};
use dialtone_sync::*;

const SEEDED: u32 = 10_000;
const LINES_PER_PHONE: usize = 2;

/// Phones whose rows the feed after `cursor` creates.
async fn phones_created_after(store: &dyn Store, mut cursor: Cursor) -> BTreeSet<Id> {
    let mut created = BTreeSet::new();
    loop {
        let batch = store.changes_since(cursor, None).await.unwrap();
        assert!(!batch.too_far_behind);
        for (entity, id, row) in &batch.changes {
            if *entity == Entity::Phone && row.is_some() {
                created.insert(*id);
            }
        }
        if batch.next_cursor == cursor {
            return created;
        }
        cursor = batch.next_cursor;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_while_phones_are_written_shows_one_moment() {
    let (_db, store) = sqlite_with_acme().await;
    // More phones and lines than one of the load's batches holds.
    let seed: Vec<Mutation> = (0..SEEDED)
        .map(|n| phone("acme", n, LINES_PER_PHONE))
        .collect();
    store.apply(&seed, &audit("seed")).await.unwrap();

    let writing = Arc::new(AtomicBool::new(true));
    let writer = {
        let (store, writing) = (store.clone(), writing.clone());
        tokio::spawn(async move {
            let mut n = SEEDED;
            // Bounded: the loads below end it long before.
            while writing.load(Ordering::Relaxed) && n < SEEDED + 20_000 {
                store
                    .apply(&[phone("acme", n, LINES_PER_PHONE)], &audit("add"))
                    .await
                    .unwrap();
                n += 1;
            }
            n - SEEDED
        })
    };
    let mut loads = Vec::new();
    for _ in 0..12 {
        let (data, cursor, _) = store.load_all().await.unwrap();
        let phones: BTreeSet<Id> = data.phones.iter().map(|p| p.id).collect();
        // Each write adds a phone and its lines in one transaction: lines
        // read at a later moment than phones would outnumber them.
        assert_eq!(
            data.lines.len(),
            phones.len() * LINES_PER_PHONE,
            "lines and phones of two moments"
        );
        assert!(data.lines.iter().all(|l| phones.contains(&l.phone_id)));
        loads.push((phones, cursor));
    }
    writing.store(false, Ordering::Relaxed);
    let added = writer.await.unwrap();
    assert!(added > 0, "no write landed during the loads");

    let (data, _, _) = store.load_all().await.unwrap();
    let all: BTreeSet<Id> = data.phones.iter().map(|p| p.id).collect();
    assert_eq!(all.len(), (SEEDED + added) as usize);
    let mut moments = BTreeSet::new();
    for (phones, cursor) in loads {
        // A cursor later than the rows would skip the phones between them;
        // an earlier one would hand back phones the load already has.
        let after = phones_created_after(&*store, cursor).await;
        assert!(phones.is_disjoint(&after), "cursor before the rows");
        assert_eq!(
            phones.union(&after).count(),
            all.len(),
            "cursor after the rows"
        );
        moments.insert(phones.len());
    }
    eprintln!(
        "{added} phones written during the loads; the loads saw {} moments",
        moments.len()
    );
}

#[tokio::test]
async fn a_memory_database_loads_what_its_pool_wrote() {
    let store = store::open("sqlite::memory:", test_key(), &StoreOptions::default())
        .await
        .unwrap();
    store.migrate().await.unwrap();
    store
        .apply(
            &[tenant("acme", "US"), phone("acme", 7, 3)],
            &audit("setup"),
        )
        .await
        .unwrap();
    let (data, cursor, _) = store.load_all().await.unwrap();
    assert_eq!(data.tenants.len(), 1);
    assert_eq!(data.phones.len(), 1);
    assert_eq!(data.lines.len(), 3);
    assert!(cursor.seq > 0);
}

#[tokio::test]
async fn a_cell_the_load_cannot_read_is_named() {
    let db = TestDb::sqlite();
    let store = db.store().await;
    store
        .apply(
            &[tenant("acme", "US"), phone("acme", 7, 1)],
            &audit("setup"),
        )
        .await
        .unwrap();
    let pool = sqlx::SqlitePool::connect(&db.url).await.unwrap();
    let (data, _, _) = store.load_all().await.unwrap();
    let (phone_id, line_id) = (data.phones[0].id, data.lines[0].id);

    sqlx::query("UPDATE lines SET position = 4294967296")
        .execute(&pool)
        .await
        .unwrap();
    let err = store.load_all().await.expect_err("a position past i32");
    assert_eq!(
        err.to_string(),
        format!("invalid data: lines id={line_id}: position: out of a 4-byte integer's range")
    );

    sqlx::query("UPDATE phones SET mac = 'not-a-mac-12'")
        .execute(&pool)
        .await
        .unwrap();
    let err = store
        .load_all()
        .await
        .expect_err("a MAC that does not parse");
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("invalid data: phones id={phone_id}: mac: ")),
        "{text}"
    );
}
