//! Bulk imports (runs of phone upserts long enough to be compared and
//! written set-based): what they write, what the change log says, and what
//! a second node's mirror sees, on SQLite and PostgreSQL.

#[macro_use]
mod common;

use std::time::Duration;

use common::*;
use dialtone_sync::store::{LineInput, PhoneInput};
use dialtone_sync::testing::TestDb;
use dialtone_sync::*;
use sqlx::Connection;

/// Enough phones to take the bulk path.
const PHONES: u32 = 300;

async fn change_log_rows(db: &TestDb) -> i64 {
    scalar(db, "SELECT count(*) FROM change_log").await
}

fn fleet() -> Vec<Mutation> {
    fleet_of(PHONES, |_| 2)
}

both_backends!(reimport_writes_nothing, reimport_body);
async fn reimport_body(db: TestDb) {
    let store = db.store().await;
    let batch = fleet();
    let first = store.apply(&batch, &audit("import")).await.unwrap();
    assert_eq!(
        (first.phones.inserted, first.lines.inserted),
        (PHONES as u64, 2 * PHONES as u64)
    );
    let data = db_rows(&*store).await;
    assert_eq!(
        (data.phones.len(), data.lines.len()),
        (PHONES as usize, 2 * PHONES as usize)
    );
    // Secrets are sealed, and open to what was imported.
    let key = dialtone_sync::testing::test_key();
    let sealed = data.lines[0].password.clone().unwrap();
    assert!(!sealed.0.contains("pw-"));
    assert!(key
        .open(crypto::Purpose::LinePassword, &sealed)
        .unwrap()
        .starts_with("pw-"));

    let logged = change_log_rows(&db).await;
    let audits = scalar(&db, "SELECT count(*) FROM audit_log").await;
    let again = store.apply(&batch, &audit("import")).await.unwrap();
    assert_eq!(again.changed(), 0, "{again:?}");
    assert_eq!(
        (again.phones.unchanged, again.lines.unchanged),
        (PHONES as u64, 2 * PHONES as u64)
    );
    assert_eq!(change_log_rows(&db).await, logged, "a re-import wrote rows");
    assert_eq!(
        scalar(&db, "SELECT count(*) FROM audit_log").await,
        audits + 1
    );
    assert_eq!(db_rows(&*store).await, data, "nothing was re-sealed");
}

both_backends!(changed_subset_is_all_that_is_written, subset_body);
async fn subset_body(db: TestDb) {
    let store = db.store().await;
    let mut batch = fleet();
    store.apply(&batch, &audit("import")).await.unwrap();
    // A phone-scope template, which must not follow its phone to another tenant.
    let moved_mac = phone_mut(&mut batch, 11).mac;
    store
        .apply(
            &[Mutation::UpsertTemplate(store::TemplateInput {
                scope: TemplateScope::Phone,
                family: Family::Yealink,
                scope_key: moved_mac.to_string(),
                file_pattern: "{mac}.cfg".into(),
                body: "phone {{ mac }}".into(),
                updated_by: "test".into(),
                keep_versions: None,
            })],
            &audit("template"),
        )
        .await
        .unwrap();
    let node = RunningMirror::start(store.clone()).await;
    let before = change_log_rows(&db).await;

    for n in [3, 50, 51, 299] {
        phone_mut(&mut batch, n).lines[0].display_name = format!("Renamed {n}");
    }
    phone_mut(&mut batch, 7).lines[1].password = Some("new secret".into());
    phone_mut(&mut batch, 20).http_password = Some("other device secret".into());
    phone_mut(&mut batch, 11).tenant = "beta".into();
    phone_mut(&mut batch, 12).lines.truncate(1);
    phone_mut(&mut batch, 13).lines.push(LineInput {
        extension: "777".into(),
        display_name: "Third".into(),
        auth_user: "777".into(),
        password: None,
        registrar: "sip.example.net".into(),
        proxy: Some("proxy.example.net".into()),
        settings: "{}".into(),
    });
    let Mutation::UpsertPhone(new_phone) = phone("beta", 5000, 1) else {
        unreachable!()
    };
    batch.push(Mutation::UpsertPhone(new_phone));

    let report = store.apply(&batch, &audit("import")).await.unwrap();
    assert_eq!(
        (
            report.phones.inserted,
            report.phones.updated,
            report.phones.unchanged
        ),
        (1, 2, PHONES as u64 - 2),
        "{report:?}"
    );
    assert_eq!(
        (
            report.lines.inserted,
            report.lines.updated,
            report.lines.deleted
        ),
        (2, 5, 1),
        "{report:?}"
    );
    assert_eq!(report.templates.deleted, 1, "{report:?}");
    // One change-log row per changed row: 3 phones, 2 + 5 + 1 lines, 1 template.
    assert_eq!(change_log_rows(&db).await - before, 3 + 8 + 1);

    let data = db_rows(&*store).await;
    let moved = data.phones.iter().find(|p| p.mac == moved_mac).unwrap();
    let beta = data.tenants.iter().find(|t| &*t.slug == "beta").unwrap();
    assert_eq!(moved.tenant_id, beta.id);
    assert!(
        data.templates.is_empty(),
        "the moved phone's template stayed"
    );
    // The second node's mirror sees exactly the database.
    node.assert_converges(&*store, Duration::from_secs(10))
        .await;
    node.stop().await;
}

both_backends!(phone_batch_writes_as_a_run, phone_batch_body);
/// An import's phones come as one `UpsertPhones`: it writes what the same
/// phones as single upserts would, and a refusal names the phone within it,
/// in bulk and one by one (a batch under the bulk threshold).
async fn phone_batch_body(db: TestDb) {
    let store = db.store().await;
    let run = fleet();
    let phones: Vec<PhoneInput> = run[2..]
        .iter()
        .map(|m| match m {
            Mutation::UpsertPhone(p) => p.clone(),
            other => unreachable!("{other:?}"),
        })
        .collect();
    let mut bad = phones.clone();
    bad[40].tenant = "nobody".into();
    bad[41].tenant = "nobody".into();
    for (batch, item) in [
        (bad.iter().collect::<store::PhoneBatch>(), 40),
        (bad[38..42].iter().collect(), 2),
    ] {
        let write = [
            run[0].clone(),
            run[1].clone(),
            Mutation::UpsertPhones(batch),
        ];
        match store.apply(&write, &audit("import")).await {
            Err(SyncError::Rejected {
                index,
                item: Some(at),
                reason,
            }) => {
                assert_eq!((index, at), (2, item));
                assert!(reason.contains("unknown tenant \"nobody\""), "{reason}");
            }
            other => panic!("expected a rejection, got {other:?}"),
        }
    }
    assert_eq!(scalar(&db, "SELECT count(*) FROM phones").await, 0);

    let batch: store::PhoneBatch = phones.iter().collect();
    let write = [
        run[0].clone(),
        run[1].clone(),
        Mutation::UpsertPhones(batch),
    ];
    let first = store.apply(&write, &audit("import")).await.unwrap();
    assert_eq!(
        (first.phones.inserted, first.lines.inserted),
        (PHONES as u64, 2 * PHONES as u64)
    );
    let data = db_rows(&*store).await;
    let again = store.apply(&run, &audit("import")).await.unwrap();
    assert_eq!(again.changed(), 0, "{again:?}");
    assert_eq!(db_rows(&*store).await, data);
    // And a changed line through the batch is found and written.
    let mut changed = phones.clone();
    changed[7].lines[1].display_name = "Renamed".into();
    let write = [Mutation::UpsertPhones(changed.iter().collect())];
    let report = store.apply(&write, &audit("import")).await.unwrap();
    assert_eq!(
        (report.lines.updated, report.lines.unchanged),
        (1, 2 * PHONES as u64 - 1)
    );
}

both_backends!(unknown_tenant_is_located, unknown_tenant_body);
async fn unknown_tenant_body(db: TestDb) {
    let store = db.store().await;
    let mut batch = fleet();
    phone_mut(&mut batch, 40).tenant = "nobody".into();
    match store.apply(&batch, &audit("import")).await {
        Err(SyncError::Rejected { index, reason, .. }) => {
            assert_eq!(index, 42);
            assert!(reason.contains("unknown tenant \"nobody\""), "{reason}");
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert_eq!(scalar(&db, "SELECT count(*) FROM phones").await, 0);
    assert_eq!(scalar(&db, "SELECT count(*) FROM tenants").await, 0);
}

/// Past the threshold PostgreSQL writes no change-log row per row but bumps
/// the epoch; a second node reloads and matches the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_import_moves_the_epoch_on_postgres() {
    let db = TestDb::new(Backend::Postgres).await;
    let store = db.store().await;
    store
        .apply(&[tenant("acme", "US")], &audit("import"))
        .await
        .unwrap();
    let node = RunningMirror::start(store.clone()).await;
    let before = change_log_rows(&db).await;
    let batch: Vec<Mutation> = (0..30_000).map(|n| phone("acme", n, 1)).collect();
    let report = store.apply(&batch, &audit("import")).await.unwrap();
    assert_eq!(
        (report.phones.inserted, report.lines.inserted),
        (30_000, 30_000)
    );
    assert_eq!(
        change_log_rows(&db).await,
        before,
        "rows were logged one by one"
    );
    assert!(
        store.meta().await.unwrap().epoch > 1,
        "the epoch was bumped"
    );
    // The foreign keys dropped for the import are back, and checked.
    assert_eq!(
        scalar(
            &db,
            "SELECT count(*) FROM pg_constraint WHERE contype = 'f' \
             AND conrelid IN ('phones'::regclass, 'lines'::regclass) AND convalidated"
        )
        .await,
        2
    );
    // So are the indexes and key constraints, dropped for the load into
    // empty tables and built after it.
    assert_eq!(
        scalar(
            &db,
            "SELECT count(*) FROM pg_index WHERE indrelid IN ('phones'::regclass, 'lines'::regclass) \
             AND indisvalid"
        )
        .await,
        5
    );
    let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let twin = sqlx::query(
        "INSERT INTO phones (mac, tenant_id, family, variables, updated_at) \
         SELECT mac, tenant_id, family, variables, 0 FROM phones LIMIT 1",
    )
    .execute(&mut c)
    .await;
    assert!(
        twin.is_err_and(|e| e.to_string().contains("phones_mac_key")),
        "a second phone with the same MAC was accepted"
    );
    let orphan = sqlx::query(
        "INSERT INTO lines (phone_id, position, extension, display_name, auth_user, registrar, settings, updated_at) \
         VALUES (-1, 1, '1', '1', '1', 'r', '{}', 0)",
    )
    .execute(&mut c)
    .await;
    assert!(
        orphan.is_err_and(|e| e.to_string().contains("foreign key")),
        "a line without its phone was accepted"
    );
    node.assert_converges(&*store, Duration::from_secs(30))
        .await;
    assert!(node.mirror.health().full_reloads >= 1);
    node.stop().await;
}

// Each column the comparison reads, changed on a phone of its own, is
// found (and nothing else), whether the run comes in the order its rows
// are stored (the read's guess of the next phone holds) or reversed (it
// never does and the lookup maps answer); the same data in either order
// is a re-import that writes nothing.
both_backends!(every_compared_column_is_detected, every_column_body);
async fn every_column_body(db: TestDb) {
    let store = db.store().await;
    let mut batch = fleet();
    store.apply(&batch, &audit("import")).await.unwrap();
    type PhoneEdit = fn(&mut PhoneInput);
    let phone_edits: [PhoneEdit; 8] = [
        |p| p.tenant = "beta".into(),
        |p| p.family = Family::Snom,
        |p| p.model = None,
        |p| p.label = Some("front desk".into()),
        |p| p.variables = r#"{"a":"1"}"#.into(),
        |p| p.http_user = Some("dev-new".into()),
        // Phone 20 has an HTTP password (every 10th): a new one, then none.
        |p| p.http_password = Some("other device secret".into()),
        |p| p.http_password = None,
    ];
    type LineEdit = fn(&mut LineInput);
    let line_edits: [LineEdit; 8] = [
        |l| l.extension = "9999".into(),
        |l| l.display_name = "Renamed".into(),
        |l| l.auth_user = "someone".into(),
        |l| l.password = Some("new secret".into()),
        |l| l.password = None,
        |l| l.registrar = "sip2.example.net".into(),
        |l| l.proxy = Some("proxy.example.net".into()),
        |l| l.settings = r#"{"b":"2"}"#.into(),
    ];
    let phone_targets = [1, 2, 3, 4, 5, 6, 20, 30];
    for (n, edit) in phone_targets.into_iter().zip(phone_edits) {
        edit(phone_mut(&mut batch, n));
    }
    for (n, edit) in (100..).zip(line_edits) {
        edit(&mut phone_mut(&mut batch, n).lines[1]);
    }
    let mut reversed = batch.clone();
    reversed[2..].reverse();
    for (run, name, expected) in [
        (&reversed, "reversed", (8, 8)),
        (&batch, "in order", (0, 0)),
    ] {
        let report = store.apply(run, &audit("import")).await.unwrap();
        assert_eq!(
            (report.phones.updated, report.lines.updated),
            expected,
            "{name}: {report:?}"
        );
        assert_eq!(report.phones.inserted + report.lines.inserted, 0);
        assert_eq!(
            report.phones.unchanged,
            PHONES as u64 - expected.0,
            "{name}"
        );
    }
    // The stored rows are what the run says, read back through the mirror's
    // own load: a column the comparison missed would show here.
    let data = db_rows(&*store).await;
    let key = dialtone_sync::testing::test_key();
    let stored = |n: u32| {
        let mac = phone_mut(&mut batch.clone(), n).mac;
        data.phones.iter().find(|p| p.mac == mac).unwrap().clone()
    };
    assert_eq!(stored(2).family, Family::Snom);
    assert_eq!(stored(3).model, None);
    assert_eq!(stored(30).http_password, None);
    let sealed = stored(20).http_password.unwrap();
    assert_eq!(
        key.open(crypto::Purpose::DeviceHttpPassword, &sealed)
            .unwrap(),
        "other device secret"
    );
    let line = |n: u32| {
        let id = stored(n).id;
        data.lines
            .iter()
            .find(|l| l.phone_id == id && l.position == 2)
            .unwrap()
            .clone()
    };
    assert_eq!(&*line(100).extension, "9999");
    assert_eq!(line(104).password, None);
    let sealed = line(103).password.unwrap();
    assert_eq!(
        key.open(crypto::Purpose::LinePassword, &sealed).unwrap(),
        "new secret"
    );
    assert_eq!(line(106).proxy.as_deref(), Some("proxy.example.net"));
    // Reversed again: still nothing to write.
    let again = store.apply(&reversed, &audit("import")).await.unwrap();
    assert_eq!(again.changed(), 0, "{again:?}");
}

// A run after other writes of the same transaction compares with those
// writes, not with what another connection would see (a read outside the
// transaction, say to read phones and lines at once, would miss them): a
// phone deleted earlier in the batch and upserted by the run comes back,
// lines and all.
both_backends!(a_run_sees_its_own_transaction, own_transaction_body);
async fn own_transaction_body(db: TestDb) {
    let store = db.store().await;
    let batch = fleet();
    store.apply(&batch, &audit("import")).await.unwrap();
    let mac = match &batch[2 + 5] {
        Mutation::UpsertPhone(p) => p.mac,
        _ => unreachable!(),
    };
    let mut again = vec![Mutation::DeletePhone { mac }];
    again.extend(batch[2..].iter().cloned());
    let report = store.apply(&again, &audit("import")).await.unwrap();
    assert_eq!(report.phones.deleted, 1, "{report:?}");
    assert_eq!(
        (report.phones.inserted, report.lines.inserted),
        (1, 2),
        "{report:?}"
    );
    assert_eq!(
        (report.phones.unchanged, report.lines.unchanged),
        (PHONES as u64 - 1, 2 * (PHONES as u64 - 1)),
        "{report:?}"
    );
    let data = db_rows(&*store).await;
    let phone = data.phones.iter().find(|p| p.mac == mac).unwrap();
    assert_eq!(
        data.lines.iter().filter(|l| l.phone_id == phone.id).count(),
        2
    );
    assert_eq!(
        (data.phones.len(), data.lines.len()),
        (PHONES as usize, 2 * PHONES as usize)
    );
}

// U+0000 in a phone's text is refused before anything is written, alone
// or in a run long enough for the bulk path, the same on both backends
// (PostgreSQL could not store it; SQLite would cut it short). Other text
// PostgreSQL refuses is named as the data's fault, not the database's.
both_backends!(nul_text_is_refused_before_a_write, nul_text_body);
async fn nul_text_body(db: TestDb) {
    let store = db.store().await;
    let mut batch = fleet();
    phone_mut(&mut batch, 7).lines[1].display_name = "Front\0Desk".into();
    let err = store.apply(&batch, &audit("import")).await.unwrap_err();
    match &err {
        SyncError::Rejected { index, reason, .. } => {
            assert_eq!(*index, 2 + 7, "{err}");
            assert!(reason.contains("line 2 display_name"), "{err}");
            assert!(reason.contains("U+0000"), "{err}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(scalar(&db, "SELECT count(*) FROM phones").await, 0);
    let one = vec![batch[0].clone(), batch[2 + 7].clone()];
    let err = store.apply(&one, &audit("api")).await.unwrap_err();
    assert!(
        matches!(&err, SyncError::Rejected { index: 1, reason, .. } if reason.contains("U+0000")),
        "{err:?}"
    );
    if db.backend == Backend::Postgres {
        let Mutation::UpsertTenant(mut named) = tenant("nul", "US") else {
            unreachable!()
        };
        named.name = "Acme\0Corp".into();
        let named = vec![Mutation::UpsertTenant(named)];
        let err = store.apply(&named, &audit("api")).await.unwrap_err();
        assert!(
            matches!(&err, SyncError::Rejected { index: 0, reason, .. } if reason.contains("U+0000")),
            "{err:?}"
        );
    }
}
