//! The bulk import's phone digests (`store/bulk/digest.rs`): a write to a
//! phone or its lines by any other path, even behind the store's back,
//! makes the next import compare that phone in full, and a digest that
//! differs (another key) costs a full comparison and a new digest, never a
//! row, on SQLite and PostgreSQL.

mod common;

use common::bulk::*;
use common::*;
use dialtone_sync::testing::TestDb;
use dialtone_sync::*;

/// The stored id of phone `n` of a [`fleet`].
async fn stored_id(store: &dyn Store, batch: &[Mutation], n: u32) -> i64 {
    let mac = phone_mut(&mut batch.to_vec(), n).mac;
    let data = db_rows(store).await;
    data.phones.iter().find(|p| p.mac == mac).unwrap().id
}

both_backends!(
    writes_elsewhere_are_found_by_the_next_import,
    elsewhere_body
);
async fn elsewhere_body(db: TestDb) {
    let store = db.store().await;
    let batch = fleet();
    store.apply(&batch, &audit("import")).await.unwrap();
    let kept = digests(&db).await;
    assert_eq!(kept.len(), PHONES as usize, "a digest of every phone");
    let mut ids = Vec::new();
    for n in 3..=7 {
        ids.push(stored_id(&*store, &batch, n).await);
    }
    // Through the store, one phone at a time (not the bulk path): a label
    // and a line's name.
    let mut one = phone_mut(&mut batch.clone(), 3).clone();
    one.label = Some("moved desk".into());
    one.lines[0].display_name = "Someone Else".into();
    store
        .apply(&[Mutation::UpsertPhone(one)], &audit("api"))
        .await
        .unwrap();
    // Behind the store's back: a line renamed, a line deleted, a line
    // added, a phone's variables.
    for sql in [
        format!(
            "UPDATE lines SET display_name = 'psql' WHERE phone_id = {} AND position = 1",
            ids[1]
        ),
        format!(
            "DELETE FROM lines WHERE phone_id = {} AND position = 2",
            ids[2]
        ),
        format!(
            "INSERT INTO lines (phone_id, position, extension, display_name, auth_user, registrar, updated_at) \
             VALUES ({}, 3, '999', 'Extra', 'extra', 'sip.example.net', 0)",
            ids[3]
        ),
        format!(
            "UPDATE phones SET variables = '{{\"x\":\"1\"}}' WHERE id = {}",
            ids[4]
        ),
    ] {
        execute(&db, &sql).await;
    }
    let left = digests(&db).await;
    assert_eq!(
        left,
        (kept.iter())
            .filter(|d| !ids.contains(&d.0))
            .cloned()
            .collect::<Vec<_>>(),
        "each written phone's digest is forgotten, and only theirs"
    );
    let report = store.apply(&batch, &audit("import")).await.unwrap();
    assert_eq!(
        (report.phones.updated, report.phones.unchanged),
        (2, PHONES as u64 - 2),
        "{report:?}"
    );
    assert_eq!(
        (
            report.lines.updated,
            report.lines.inserted,
            report.lines.deleted
        ),
        (2, 1, 1),
        "{report:?}"
    );
    assert_eq!(digests(&db).await, kept, "the same rows, the same digests");
    // The rows are the file's again.
    let data = db_rows(&*store).await;
    for (k, n) in (3..=7).enumerate() {
        let want = phone_mut(&mut batch.clone(), n).clone();
        let stored = data.phones.iter().find(|p| p.id == ids[k]).unwrap();
        assert_eq!(stored.label.as_deref(), want.label.as_deref(), "phone {n}");
        assert_eq!(&*stored.variables, &*want.variables, "phone {n}");
        let lines: Vec<_> = data.lines.iter().filter(|l| l.phone_id == ids[k]).collect();
        assert_eq!(lines.len(), want.lines.len(), "phone {n}");
        for line in lines {
            let input = &want.lines[line.position as usize - 1];
            assert_eq!(&*line.display_name, &*input.display_name, "phone {n}");
        }
    }
    let again = store.apply(&batch, &audit("import")).await.unwrap();
    assert_eq!(again.changed(), 0, "{again:?}");
}

both_backends!(digests_that_differ_cost_a_comparison_not_a_row, differ_body);
async fn differ_body(db: TestDb) {
    let store = db.store().await;
    let batch = fleet();
    store.apply(&batch, &audit("import")).await.unwrap();
    let kept = digests(&db).await;
    let data = db_rows(&*store).await;
    // A few phones' (read by id, or by MAC without one), every phone's
    // (both tables read whole), as after a change of key; then none.
    for (sql, case) in [
        (
            "UPDATE phone_digests SET high = high + 1 WHERE id % 50 = 0",
            "a few",
        ),
        (
            "DELETE FROM phone_digests WHERE id % 50 = 1",
            "a few forgotten (by MAC)",
        ),
        ("UPDATE phone_digests SET low = low + 1", "all"),
        (
            "DELETE FROM phone_digests WHERE id % 3 = 0",
            "a third forgotten",
        ),
        ("DELETE FROM phone_digests", "all forgotten"),
    ] {
        execute(&db, sql).await;
        let logged = change_log_rows(&db).await;
        let report = store.apply(&batch, &audit("import")).await.unwrap();
        assert_eq!(report.changed(), 0, "{case}: {report:?}");
        assert_eq!(change_log_rows(&db).await, logged, "{case}");
        assert_eq!(digests(&db).await, kept, "{case}");
        assert_eq!(db_rows(&*store).await, data, "{case}: nothing rewritten");
    }
}

/// TRUNCATE fires no row trigger: emptying either table forgets every
/// digest, and the next import puts back what is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncating_forgets_every_digest_on_postgres() {
    let db = TestDb::new(Backend::Postgres).await;
    let store = db.store().await;
    let batch = fleet();
    store.apply(&batch, &audit("import")).await.unwrap();
    let kept = digests(&db).await;
    execute(&db, "TRUNCATE lines").await;
    assert!(digests(&db).await.is_empty());
    let report = store.apply(&batch, &audit("import")).await.unwrap();
    assert_eq!(
        (report.phones.unchanged, report.lines.inserted),
        (PHONES as u64, 2 * PHONES as u64),
        "{report:?}"
    );
    assert_eq!(digests(&db).await, kept);
}
