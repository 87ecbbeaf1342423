//! Bulk directory imports (runs of directory-entry upserts long enough to
//! be staged and written set-based): what they write, that they write the
//! same rows as one entry at a time, and what a second node's mirror sees,
//! on SQLite and PostgreSQL.

#[macro_use]
mod common;

use std::time::Duration;

use common::*;
use dialtone_sync::store::DirectoryEntryInput;
use dialtone_sync::testing::TestDb;
use dialtone_sync::*;

/// Enough entries to take the bulk path.
const ENTRIES: usize = 300;

async fn logged_entries(db: &TestDb) -> i64 {
    scalar(
        db,
        "SELECT count(*) FROM change_log WHERE entity = 'directory_entries'",
    )
    .await
}

/// Entry `n` of tenant `tenant`; numbers from the UK's drama range.
fn person(tenant: &str, n: usize) -> Mutation {
    entry(
        tenant,
        &format!("crm-{n}"),
        &format!("Person {n:03}"),
        &[&format!("+44 20 7946 0{:03}", n % 1000)],
    )
}

fn input(m: &mut Mutation) -> &mut DirectoryEntryInput {
    match m {
        Mutation::UpsertDirectoryEntry(d) => d,
        _ => unreachable!(),
    }
}

/// Two tenants, `ENTRIES` entries of acme, and one of beta with the same
/// external id as acme's first (the key is the pair).
fn book() -> Vec<Mutation> {
    let mut batch = vec![tenant("acme", "US"), tenant("beta", "GB")];
    batch.extend((0..ENTRIES).map(|n| person("acme", n)));
    batch.push(person("beta", 0));
    batch
}

/// The stored entries as (tenant, external id, name, company, numbers),
/// without ids and times.
type Fields = (i64, Option<String>, String, Option<String>, String);

async fn stored(store: &dyn Store) -> Vec<Fields> {
    let data = db_rows(store).await;
    let slug = |id: i64| {
        let t = data.tenants.iter().find(|t| t.id == id).unwrap();
        if &*t.slug == "acme" {
            1
        } else {
            2
        }
    };
    let mut rows: Vec<Fields> = data
        .directory_entries
        .iter()
        .map(|d| {
            (
                slug(d.tenant_id),
                d.external_id.as_deref().map(Into::into),
                d.name.to_string(),
                d.company.as_deref().map(Into::into),
                d.numbers
                    .iter()
                    .map(|n| format!("{}/{}", n.number, n.kind))
                    .collect::<Vec<_>>()
                    .join(","),
            )
        })
        .collect();
    rows.sort();
    rows
}

both_backends!(bulk_entries_write_only_what_differs, differs_body);
async fn differs_body(db: TestDb) {
    let store = db.store().await;
    let mut batch = book();
    let first = store.apply(&batch, &audit("import")).await.unwrap();
    let total = ENTRIES as u64 + 1;
    assert_eq!(first.directory_entries.inserted, total, "{first:?}");
    assert_eq!(logged_entries(&db).await, total as i64);
    // New rows take their ids in the run's order, as one by one.
    let out_of_order = scalar(
        &db,
        "SELECT count(*) FROM directory_entries a JOIN directory_entries b \
         ON a.tenant_id = b.tenant_id AND a.id < b.id \
         WHERE CAST(substr(a.external_id, 5) AS INTEGER) > CAST(substr(b.external_id, 5) AS INTEGER)",
    )
    .await;
    assert_eq!(out_of_order, 0);

    let data = db_rows(&*store).await;
    let again = store.apply(&batch, &audit("import")).await.unwrap();
    assert_eq!(again.changed(), 0, "{again:?}");
    assert_eq!(again.directory_entries.unchanged, total);
    assert_eq!(logged_entries(&db).await, total as i64, "a re-import wrote");
    assert_eq!(db_rows(&*store).await, data, "a re-import touched a row");

    // Three changed, one left out (imports do not delete), five new.
    input(&mut batch[2 + 5]).name = "Renamed".into();
    input(&mut batch[2 + 6]).company = Some("Example Corp".into());
    input(&mut batch[2 + 7]).numbers[0].kind = "mobile".into();
    batch.remove(2 + 9);
    batch.extend((ENTRIES..ENTRIES + 5).map(|n| person("acme", n)));
    let changed = store.apply(&batch, &audit("import")).await.unwrap();
    let counts = &changed.directory_entries;
    assert_eq!(
        (counts.inserted, counts.updated, counts.unchanged),
        (5, 3, total - 4),
        "{changed:?}"
    );
    assert_eq!(logged_entries(&db).await, total as i64 + 8);
    assert_eq!(
        scalar(&db, "SELECT count(*) FROM directory_entries").await,
        total as i64 + 5
    );

    // The same rows as the row-by-row path writes: the run cut into
    // pieces shorter than the bulk threshold by tenant upserts.
    let other = TestDb::new(db.backend).await;
    let other_store = other.store().await;
    let mut by_row = Vec::new();
    for (i, m) in book().into_iter().enumerate() {
        if i % 150 == 149 {
            by_row.push(tenant("acme", "US"));
        }
        by_row.push(m);
    }
    other_store.apply(&by_row, &audit("import")).await.unwrap();
    let mut by_row: Vec<Mutation> = Vec::new();
    for (i, m) in batch.iter().cloned().enumerate() {
        if i % 150 == 149 {
            by_row.push(tenant("acme", "US"));
        }
        by_row.push(m);
    }
    let row_report = other_store.apply(&by_row, &audit("import")).await.unwrap();
    assert_eq!(row_report.directory_entries, changed.directory_entries);
    assert_eq!(stored(&*store).await, stored(&*other_store).await);
}

both_backends!(unknown_tenant_in_a_run_is_located, unknown_tenant_body);
async fn unknown_tenant_body(db: TestDb) {
    let store = db.store().await;
    let mut batch = book();
    input(&mut batch[42]).tenant = "nobody".into();
    match store.apply(&batch, &audit("import")).await {
        Err(SyncError::Rejected { index, reason, .. }) => {
            assert_eq!(index, 42);
            assert!(reason.contains("unknown tenant \"nobody\""), "{reason}");
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert_eq!(
        scalar(&db, "SELECT count(*) FROM directory_entries").await,
        0
    );
    assert_eq!(scalar(&db, "SELECT count(*) FROM tenants").await, 0);
}

both_backends!(two_runs_in_one_write, two_runs_body);
async fn two_runs_body(db: TestDb) {
    let store = db.store().await;
    let mut batch = vec![tenant("acme", "US")];
    batch.extend((0..250).map(|n| person("acme", n)));
    batch.push(tenant("beta", "GB"));
    batch.extend((0..250).map(|n| person("beta", n)));
    let report = store.apply(&batch, &audit("import")).await.unwrap();
    assert_eq!(report.directory_entries.inserted, 500, "{report:?}");
    assert_eq!(
        scalar(&db, "SELECT count(*) FROM directory_entries").await,
        500
    );
    // A failed write leaves no staging table behind for the next one.
    let mut bad = batch.clone();
    input(&mut bad[300]).tenant = "nobody".into();
    assert!(store.apply(&bad, &audit("import")).await.is_err());
    input(&mut batch[1]).name = "Renamed".into();
    let report = store.apply(&batch, &audit("import")).await.unwrap();
    assert_eq!(
        (
            report.directory_entries.updated,
            report.directory_entries.unchanged
        ),
        (1, 499)
    );
}

both_backends!(a_second_node_follows_a_bulk_run, follows_body);
async fn follows_body(db: TestDb) {
    let store = db.store().await;
    let node = RunningMirror::start(store.clone()).await;
    let mut batch = book();
    store.apply(&batch, &audit("import")).await.unwrap();
    node.assert_converges(&*store, Duration::from_secs(20))
        .await;
    input(&mut batch[2 + 100]).name = "Renamed".into();
    store.apply(&batch, &audit("import")).await.unwrap();
    node.assert_converges(&*store, Duration::from_secs(20))
        .await;
    let acme = node.mirror.load().tenant_by_slug("acme").unwrap().id;
    let names = node.mirror.load().directory_of(acme);
    assert_eq!(names.len(), ENTRIES);
    assert!(names.iter().any(|d| &*d.name == "Renamed"));
    node.stop().await;
}

// A replaced directory keeps the keys it is given and loses every other
// entry of its tenant, one stored without a key included, in one
// statement of the write's transaction; another tenant's entry of the
// same key stays, and every deletion reaches the change log.
both_backends!(a_replaced_directory_keeps_only_its_keys, replaced_body);
async fn replaced_body(db: TestDb) {
    let store = db.store().await;
    store.apply(&book(), &audit("import")).await.unwrap();
    let acme = scalar(&db, "SELECT id FROM tenants WHERE slug = 'acme'").await;
    execute(
        &db,
        &format!(
            "INSERT INTO directory_entries (tenant_id, external_id, name, numbers, updated_at) \
             VALUES ({acme}, NULL, 'Keyless', '[]', 1)"
        ),
    )
    .await;
    let logged_before = logged_entries(&db).await;
    // Keys JSON writes with escapes, and one it writes as it is.
    let odd = ["say \"hi\"", "back\\slash", "Zoë 李"];
    let mut keep: Vec<String> = (0..10).map(|n| format!("crm-{n}")).collect();
    keep.extend(odd.iter().map(|k| k.to_string()));
    let mut batch: Vec<Mutation> = (0..10).map(|n| person("acme", n)).collect();
    batch.extend(
        odd.iter()
            .map(|k| entry("acme", k, &format!("Odd {k}"), &["+44 20 7946 0999"])),
    );
    batch.push(Mutation::ReplaceDirectory {
        tenant: "acme".into(),
        keep,
        most_deleted_percent: 100,
    });
    let report = store.apply(&batch, &audit("import")).await.unwrap();
    assert_eq!(report.directory_entries.unchanged, 10, "{report:?}");
    assert_eq!(report.directory_entries.inserted, 3, "{report:?}");
    // The other 290 and the keyless one.
    assert_eq!(
        report.directory_entries.deleted,
        ENTRIES as u64 - 10 + 1,
        "{report:?}"
    );
    let left = scalar(
        &db,
        &format!("SELECT count(*) FROM directory_entries WHERE tenant_id = {acme}"),
    )
    .await;
    assert_eq!(left, 13);
    assert_eq!(
        scalar(
            &db,
            "SELECT count(*) FROM directory_entries d JOIN tenants t ON t.id = d.tenant_id \
             WHERE t.slug = 'beta' AND d.external_id = 'crm-0'"
        )
        .await,
        1
    );
    assert!(logged_entries(&db).await >= logged_before + ENTRIES as i64 - 9);
}

// A replacement that would delete more than its share of the tenant's
// entries is refused at its place in the write, and the write with it:
// the run's upserts too.
both_backends!(a_replacement_past_its_share_writes_nothing, past_share_body);
async fn past_share_body(db: TestDb) {
    let store = db.store().await;
    store.apply(&book(), &audit("import")).await.unwrap();
    let before = stored(&*store).await;
    let logged_before = logged_entries(&db).await;
    // A file cut short: the first 100 entries of 300, one of them renamed,
    // and one new.
    let mut batch: Vec<Mutation> = (0..100).map(|n| person("acme", n)).collect();
    input(&mut batch[7]).name = "Renamed".into();
    batch.push(person("acme", 1000));
    let mut keep: Vec<String> = (0..100).map(|n| format!("crm-{n}")).collect();
    keep.push("crm-1000".into());
    let replace = |most_deleted_percent| Mutation::ReplaceDirectory {
        tenant: "acme".into(),
        keep: keep.clone(),
        most_deleted_percent,
    };
    batch.push(replace(50));
    match store.apply(&batch, &audit("import")).await {
        Err(SyncError::Rejected { index, reason, .. }) => {
            assert_eq!(index, 101);
            assert!(
                reason.contains("delete 200 of the 300 entries it had (66.7%)"),
                "{reason}"
            );
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert_eq!(stored(&*store).await, before);
    assert_eq!(logged_entries(&db).await, logged_before);

    // A sheet of other keys, as many as stored: every stored entry would
    // go, though it is half of the old and new together.
    let mut other: Vec<Mutation> = (0..ENTRIES)
        .map(|n| {
            entry(
                "acme",
                &format!("hr-{n}"),
                &format!("Staff {n}"),
                &["+44 20 7946 0500"],
            )
        })
        .collect();
    other.push(Mutation::ReplaceDirectory {
        tenant: "acme".into(),
        keep: (0..ENTRIES).map(|n| format!("hr-{n}")).collect(),
        most_deleted_percent: 50,
    });
    match store.apply(&other, &audit("import")).await {
        Err(SyncError::Rejected { index, reason, .. }) => {
            assert_eq!(index, ENTRIES);
            assert!(
                reason.contains("delete 300 of the 300 entries it had (100.0%)"),
                "{reason}"
            );
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert_eq!(stored(&*store).await, before);

    // Allowed two thirds, the cut-short file goes through.
    *batch.last_mut().unwrap() = replace(67);
    let report = store.apply(&batch, &audit("import")).await.unwrap();
    assert_eq!(report.directory_entries.deleted, 200, "{report:?}");
    assert_eq!(report.directory_entries.inserted, 1, "{report:?}");
    assert_eq!(report.directory_entries.updated, 1, "{report:?}");
}

// Entries written after the share was counted (on PostgreSQL, another
// writer's while a long import runs; here, rows of the write itself that
// its keys leave out) are deleted with the rest, and do not count
// against the share: it is of the directory as it was.
both_backends!(entries_written_since_the_count_do_not_count, since_body);
async fn since_body(db: TestDb) {
    let store = db.store().await;
    store.apply(&book(), &audit("import")).await.unwrap();
    let mut batch: Vec<Mutation> = (0..100).map(|n| person("acme", n)).collect();
    batch
        .extend((0..400).map(|n| entry("acme", &format!("new-{n}"), "New", &["+44 20 7946 0600"])));
    batch.push(Mutation::ReplaceDirectory {
        tenant: "acme".into(),
        keep: (0..100).map(|n| format!("crm-{n}")).collect(),
        most_deleted_percent: 67,
    });
    let report = store.apply(&batch, &audit("import")).await.unwrap();
    assert_eq!(report.directory_entries.deleted, 600, "{report:?}");
    let acme = scalar(&db, "SELECT id FROM tenants WHERE slug = 'acme'").await;
    let left = scalar(
        &db,
        &format!("SELECT count(*) FROM directory_entries WHERE tenant_id = {acme}"),
    )
    .await;
    assert_eq!(left, 100);
}
