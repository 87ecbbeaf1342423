//! Store and mirror behaviour, written once and run against both SQLite and
//! PostgreSQL (real servers, started by scripts/test).

#[macro_use]
mod common;

use std::time::Duration;

use common::*;
use dialtone_sync::store::Backend;
use dialtone_sync::testing::TestDb;
use dialtone_sync::*;
use rand::{Rng, SeedableRng};

both_backends!(upserts_are_idempotent, upserts_are_idempotent_body);
async fn upserts_are_idempotent_body(db: TestDb) {
    let store = db.store().await;
    let batch = vec![
        tenant("acme", "US"),
        phone("acme", 1, 2),
        entry("acme", "e1", "Alice", &["+1 (555) 010-1234"]),
    ];
    let first = store.apply(&batch, &audit("import")).await.unwrap();
    assert_eq!(
        (
            first.tenants.inserted,
            first.phones.inserted,
            first.lines.inserted
        ),
        (1, 1, 2)
    );
    // A cursor can stop short of a write while any transaction older than
    // it is open on the server (on PostgreSQL that horizon is the whole
    // cluster's, other tests' databases included), and the feed then
    // delivers the first import again, which the mirror applies as a no-op.
    // So the cursor here is the feed's own, past the first import's five rows.
    let mut cursor = Cursor::default();
    let mut delivered = std::collections::HashSet::new();
    for _ in 0..400 {
        let feed = store.changes_since(cursor, None).await.unwrap();
        delivered.extend(feed.changes.iter().map(|(entity, id, _)| (*entity, *id)));
        cursor = feed.next_cursor;
        if delivered.len() == 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(delivered.len(), 5, "the first import's rows: {delivered:?}");
    let second = store.apply(&batch, &audit("import")).await.unwrap();
    assert_eq!(second.changed(), 0, "{second:?}");
    assert_eq!((second.phones.unchanged, second.lines.unchanged), (1, 2));
    // No row changed, so the change feed has nothing new to say. It may
    // still deliver a row of the first import again (held back by another
    // test's snapshot xmin, as above), which the mirror applies as a no-op.
    let feed = store.changes_since(cursor, None).await.unwrap();
    let new: Vec<_> = (feed.changes.iter())
        .filter(|(entity, id, _)| !delivered.contains(&(*entity, *id)))
        .collect();
    assert!(new.is_empty(), "{new:?}");

    // Shrinking a phone to one line removes the second.
    let third = store
        .apply(&[phone("acme", 1, 1)], &audit("import"))
        .await
        .unwrap();
    assert_eq!(third.lines.deleted, 1);
    assert_eq!(db_rows(&*store).await.lines.len(), 1);
}

both_backends!(secrets_are_sealed_at_rest, secrets_are_sealed_body);
async fn secrets_are_sealed_body(db: TestDb) {
    let store = db.store().await;
    store
        .apply(
            &[tenant("acme", "US"), phone("acme", 7, 1)],
            &audit("import"),
        )
        .await
        .unwrap();
    let data = db_rows(&*store).await;
    let sealed = data.lines[0].password.clone().expect("password stored");
    assert!(!sealed.0.contains("pw-7-0"), "password stored in clear");
    let key = dialtone_sync::testing::test_key();
    assert_eq!(key.open(Purpose::LinePassword, &sealed).unwrap(), "pw-7-0");
}

both_backends!(failed_write_leaves_nothing, failed_write_body);
async fn failed_write_body(db: TestDb) {
    let store = db.store().await;
    store
        .apply(&[tenant("acme", "US")], &audit("setup"))
        .await
        .unwrap();
    let before = db_rows(&*store).await;
    // The phone references a tenant that does not exist: the whole batch,
    // including its audit row and the valid first phone, must roll back.
    let err = store
        .apply(
            &[phone("acme", 1, 1), phone("nobody", 2, 1)],
            &audit("import"),
        )
        .await
        .unwrap_err();
    match err {
        SyncError::Rejected { index, reason, .. } => {
            assert_eq!(index, 1);
            assert!(reason.contains("unknown tenant"), "{reason}");
        }
        other => panic!("unexpected error {other:?}"),
    }
    assert_eq!(db_rows(&*store).await, before);
}

both_backends!(change_feed_reports_deletes, change_feed_body);
async fn change_feed_body(db: TestDb) {
    let store = db.store().await;
    store
        .apply(&[tenant("acme", "US"), phone("acme", 1, 2)], &audit("a"))
        .await
        .unwrap();
    let (_, cursor, _) = store.load_all().await.unwrap();
    let mac: Mac = "001565000001".parse().unwrap();
    store
        .apply(&[Mutation::DeletePhone { mac }], &audit("d"))
        .await
        .unwrap();
    // On PostgreSQL the feed stops at the cluster-wide snapshot xmin, which
    // a transaction of another test (another database) may hold back for a
    // moment; the watcher just polls again, and so does this test.
    let mut feed = store.changes_since(cursor, None).await.unwrap();
    for _ in 0..100 {
        // Both: the rows show above the horizon before the cursor passes them.
        if feed.changes.iter().any(|(e, _, _)| *e == Entity::Phone) && feed.next_cursor > cursor {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        feed = store.changes_since(cursor, None).await.unwrap();
    }
    let gone: Vec<(Entity, bool)> = feed
        .changes
        .iter()
        .map(|(e, _, row)| (*e, row.is_none()))
        .collect();
    // The phone and both of its lines (cascaded) are reported gone.
    assert_eq!(
        gone.iter()
            .filter(|(e, g)| *e == Entity::Phone && *g)
            .count(),
        1,
        "{gone:?}"
    );
    assert_eq!(
        gone.iter()
            .filter(|(e, g)| *e == Entity::Line && *g)
            .count(),
        2,
        "{gone:?}"
    );
    assert!(feed.next_cursor > cursor);
}

both_backends!(mirror_follows_writes, mirror_follows_body);
async fn mirror_follows_body(db: TestDb) {
    let store = db.store().await;
    store
        .apply(&[tenant("acme", "US"), phone("acme", 1, 2)], &audit("a"))
        .await
        .unwrap();
    let node = RunningMirror::start(store.clone()).await;
    let mut events = node.mirror.subscribe();
    let mac: Mac = "001565000002".parse().unwrap();
    store
        .apply(
            &[
                phone("acme", 2, 3),
                entry("acme", "x", "Bob", &["555.010.1234"]),
            ],
            &audit("b"),
        )
        .await
        .unwrap();
    assert!(
        node.wait_for(Duration::from_secs(10), |s| s.phone_by_mac(&mac).is_some())
            .await
    );
    let state = node.mirror.load();
    let phone = state.phone_by_mac(&mac).unwrap().clone();
    let lines = state.lines_of(phone.id);
    assert_eq!(
        lines.iter().map(|l| l.position).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    let tenant = state.tenant_by_slug("acme").unwrap();
    assert_eq!(state.directory_of(tenant.id).len(), 1);
    // Subscribers learn exactly which keys changed.
    let event = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .unwrap()
        .unwrap();
    let ChangeEvent::Changed { keys, .. } = event else {
        panic!("expected a change event")
    };
    assert!(keys.contains(&(Entity::Phone, phone.id)), "{keys:?}");

    // An update moves a MAC: the old one must stop resolving.
    store
        .apply(&[Mutation::DeletePhone { mac }], &audit("c"))
        .await
        .unwrap();
    assert!(
        node.wait_for(Duration::from_secs(10), |s| s.phone_by_mac(&mac).is_none())
            .await
    );
    node.assert_converges(&*store, Duration::from_secs(10))
        .await;
    node.stop().await;
}

both_backends!(pruned_past_cursor_reloads, pruned_body);
async fn pruned_body(db: TestDb) {
    let store = db.store().await;
    store
        .apply(&[tenant("acme", "US"), phone("acme", 1, 1)], &audit("a"))
        .await
        .unwrap();
    let mirror = Mirror::new();
    watcher::full_load(&mirror, &*store).await.unwrap();
    let old_cursor = mirror.load().cursor();
    // The node is "asleep" while writes happen and the log is pruned past it.
    store
        .apply(&[phone("acme", 2, 1), phone("acme", 3, 2)], &audit("b"))
        .await
        .unwrap();
    store
        .apply(
            &[Mutation::DeletePhone {
                mac: "001565000001".parse().unwrap(),
            }],
            &audit("c"),
        )
        .await
        .unwrap();
    // PostgreSQL prunes only below the cluster's oldest running
    // transaction, which a test running beside this one may hold back for
    // a moment: prune again until past the cursor (bounded).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut pruned = 0;
    let meta = loop {
        pruned += store.prune_change_log(Duration::ZERO, 0).await.unwrap();
        let meta = store.meta().await.unwrap();
        if meta.pruned_through > old_cursor || tokio::time::Instant::now() >= deadline {
            break meta;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(pruned > 0);
    assert!(
        meta.pruned_through > old_cursor,
        "{:?} vs {old_cursor:?}",
        meta.pruned_through
    );
    watcher::catch_up(&mirror, &*store).await.unwrap();
    assert_eq!(mirror.health().full_reloads, 1);
    assert_eq!(mirror.load().to_dataset(), db_rows(&*store).await);
    // The reload's cursor is past the pruned point even with the log pruned
    // empty: the next catch-ups reload nothing more. The mirror may reload
    // once more first, on PostgreSQL: a transaction of another database of
    // the cluster, running at its reload, kept its cursor below rows this
    // prune may delete (it cannot know that transaction wrote none here).
    store.prune_change_log(Duration::ZERO, 0).await.unwrap();
    let fresh = Mirror::new();
    watcher::full_load(&fresh, &*store).await.unwrap();
    watcher::catch_up(&mirror, &*store).await.unwrap();
    let settled = mirror.health().full_reloads;
    assert!(settled <= 2, "{settled} reloads");
    for node in [&mirror, &fresh] {
        watcher::catch_up(node, &*store).await.unwrap();
        watcher::catch_up(node, &*store).await.unwrap();
    }
    assert_eq!(mirror.health().full_reloads, settled);
    assert_eq!(fresh.health().full_reloads, 0);
    store
        .apply(&[phone("acme", 4, 3)], &audit("d"))
        .await
        .unwrap();
    watcher::catch_up(&fresh, &*store).await.unwrap();
    assert_eq!(fresh.health().full_reloads, 0);
    assert_eq!(fresh.load().to_dataset(), db_rows(&*store).await);
}

both_backends!(epoch_bump_reloads, epoch_body);
async fn epoch_body(db: TestDb) {
    let store = db.store().await;
    store
        .apply(&[tenant("acme", "US")], &audit("a"))
        .await
        .unwrap();
    let mirror = Mirror::new();
    watcher::full_load(&mirror, &*store).await.unwrap();
    let epoch = store.bump_epoch().await.unwrap();
    watcher::catch_up(&mirror, &*store).await.unwrap();
    assert_eq!(mirror.health().full_reloads, 1);
    assert_eq!(mirror.load().meta().epoch, epoch);
    assert!(epoch > 1);
}

// A backup taken at epoch E, the live database bumped to E+1 (an import),
// the backup restored and `reload-all` run: the new epoch must not be E+1
// again, or the nodes holding E+1 keep rows the restore took away.
both_backends!(
    an_epoch_bump_is_never_one_a_node_may_hold,
    epoch_restore_body
);
async fn epoch_restore_body(db: TestDb) {
    let store = db.store().await;
    let mut seen = std::collections::HashSet::from([store.meta().await.unwrap().epoch]);
    for _ in 0..20 {
        let before = store.meta().await.unwrap().epoch;
        let after = store.bump_epoch().await.unwrap();
        assert!(after > before);
        // Put back as a restore would; the next bump must land elsewhere.
        execute(
            &db,
            &format!("UPDATE dialtone_meta SET epoch = {before} WHERE singleton = 1"),
        )
        .await;
        let again = store.bump_epoch().await.unwrap();
        assert_ne!(again, after, "a restored epoch bumped to the same value");
        assert!(seen.insert(again));
    }
}

// A database restored with pg_dump/pg_restore keeps the old cluster's
// pruned point and log, ahead of the new cluster's transaction ids: every
// catch-up would reload in full, or new changes sort below the cursor.
// `reload-all` starts the feed anew.
both_backends!(
    reload_all_restarts_a_restored_change_feed,
    restored_feed_body
);
async fn restored_feed_body(db: TestDb) {
    let store = db.store().await;
    store
        .apply(&[tenant("acme", "US"), phone("acme", 1, 1)], &audit("a"))
        .await
        .unwrap();
    execute(
        &db,
        "UPDATE dialtone_meta SET pruned_txid = pruned_txid + 10000000, \
         pruned_seq = pruned_seq + 10000000 WHERE singleton = 1",
    )
    .await;
    // And, on PostgreSQL, log rows from the old cluster's future.
    if db.backend == Backend::Postgres {
        execute(
            &db,
            "UPDATE change_log SET txid = (txid::text::bigint + 10000000)::text::xid8",
        )
        .await;
    }
    store.bump_epoch().await.unwrap();
    let mirror = Mirror::new();
    watcher::full_load(&mirror, &*store).await.unwrap();
    watcher::catch_up(&mirror, &*store).await.unwrap();
    watcher::catch_up(&mirror, &*store).await.unwrap();
    store
        .apply(&[phone("acme", 2, 1)], &audit("b"))
        .await
        .unwrap();
    watcher::catch_up(&mirror, &*store).await.unwrap();
    assert_eq!(mirror.health().full_reloads, 0);
    assert_eq!(mirror.load().to_dataset(), db_rows(&*store).await);
}

both_backends!(schema_from_newer_binary_is_refused, newer_schema_body);
async fn newer_schema_body(db: TestDb) {
    let store = db.store().await;
    store.check_schema().await.unwrap();
    // Pretend a newer dialtone applied migration 9999.
    let sql =
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
               VALUES (9999, 'from the future', TRUE, X'00', 1)";
    let pg_sql =
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
                  VALUES (9999, 'from the future', TRUE, '\\x00'::bytea, 1)";
    let sql = match db.backend {
        Backend::Sqlite => sql,
        Backend::Postgres => pg_sql,
    };
    execute(&db, sql).await;
    for result in [store.migrate().await, store.check_schema().await] {
        let err = result.unwrap_err();
        assert!(
            matches!(err, SyncError::SchemaTooNew { found: 9999, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("newer than this binary"), "{err}");
    }
    // A store that never checked (a node started from its snapshot while
    // the database was away) checks before its first write.
    let unchecked = dialtone_sync::open(
        &db.url,
        dialtone_sync::testing::test_key(),
        &dialtone_sync::store::StoreOptions::default(),
    )
    .await
    .unwrap();
    let err = unchecked
        .apply(
            &[dialtone_sync::testing::build::tenant("acme", "US")],
            &dialtone_sync::testing::build::audit("unchecked"),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, SyncError::SchemaTooNew { found: 9999, .. }),
        "{err}"
    );
    unchecked.close().await;
}

both_backends!(failed_newer_migration_is_refused, failed_newer_body);
/// A newer binary whose migration failed left its row unsuccessful: this
/// binary is still the older one, and must not pass on sqlx's advice to
/// remove the newer release's record ("partially applied").
async fn failed_newer_body(db: TestDb) {
    let store = db.store().await;
    let bytes = match db.backend {
        Backend::Sqlite => "X'00'",
        Backend::Postgres => "'\\x00'::bytea",
    };
    execute(
        &db,
        &format!(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (9999, 'failed in the future', FALSE, {bytes}, 1)"
        ),
    )
    .await;
    for result in [store.migrate().await, store.check_schema().await] {
        let err = result.unwrap_err();
        assert!(
            matches!(err, SyncError::SchemaTooNew { found: 9999, .. }),
            "{err}"
        );
        assert!(
            err.to_string().contains("newer than this binary knows"),
            "{err}"
        );
    }
}

/// Every table's MAC column compares as bytes (migration 0008), whatever
/// the database's default collation; SQLite's default is bytes already.
#[tokio::test]
async fn postgres_mac_columns_compare_as_bytes() {
    let db = TestDb::postgres().await;
    db.store().await;
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let columns: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT c.relname::text, coll.collname::text FROM pg_attribute a \
         JOIN pg_class c ON c.oid = a.attrelid \
         JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = current_schema() \
         LEFT JOIN pg_collation coll ON coll.oid = a.attcollation \
         WHERE c.relkind = 'r' AND a.attname = 'mac' AND NOT a.attisdropped ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let expected = ["phones", "provisioning_history", "unclaimed_devices"]
        .map(|table| (table.to_string(), Some("C".to_string())));
    assert_eq!(columns, expected);
}

both_backends!(snapshot_round_trip, snapshot_body);
async fn snapshot_body(db: TestDb) {
    let store = db.store().await;
    store
        .apply(
            &[
                tenant("acme", "US"),
                phone("acme", 1, 2),
                phone("acme", 2, 1),
                entry("acme", "a", "Al", &["01632 960123"]),
            ],
            &audit("a"),
        )
        .await
        .unwrap();
    let mirror = Mirror::new();
    watcher::full_load(&mirror, &*store).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mirror.snapshot");
    let header = snapshot::write(&mirror, &path, &snapshot::source_id(&db.url)).unwrap();
    // The directory's people and the tokens' hashes: the owner's alone,
    // whatever the umask (the test runner's is usually 022).
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    let (read_header, data) = snapshot::read(&path).unwrap().unwrap();
    assert_eq!(read_header, header);
    let mut data = data;
    data.sort();
    assert_eq!(data, mirror.load().to_dataset());
    common::assert_tenant_index(&mirror.load());
    let (header, loading) = snapshot::load(&path).unwrap().unwrap();
    let loaded = Mirror::new();
    loaded.reset_loaded(loading, header.cursor, header.meta, LoadedFrom::Snapshot);
    common::assert_tenant_index(&loaded.load());
    // A truncated file is reported, not half-loaded.
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    assert!(matches!(
        snapshot::read(&path),
        Err(SyncError::Snapshot { .. })
    ));
    assert!(snapshot::read(&dir.path().join("missing"))
        .unwrap()
        .is_none());
}

both_backends!(boot_history_is_written_and_pruned, history_body);
async fn history_body(db: TestDb) {
    let store = db.store().await;
    let (sink, writer) = history::channel(store.clone(), 16);
    let cancel = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(writer.run(cancel.clone(), std::time::Duration::from_secs(10)));
    let record = |i: i64, file: String| store::BootRecord {
        mac: "001565000001".into(),
        at: now_millis() - 1000 * i,
        remote_ip: "127.0.0.1".into(),
        user_agent: Some("Yealink SIP-T46S 66.86.0.15 00:15:65:00:00:01".into()),
        protocol: "tftp".into(),
        file,
        outcome: "ok".into(),
        bytes: 4096,
        model: Some("T46S".into()),
        firmware: Some("66.86.0.15".into()),
        tenant_id: Some(7),
    };
    // The same fetch again within the repeat window is recorded once.
    sink.record(record(0, "y000000000066.cfg".into()));
    sink.record(record(0, "y000000000066.cfg".into()));
    assert_eq!(sink.repeats(), 1);
    for i in 0..40 {
        sink.record(store::BootRecord {
            file: format!("001565000001-{i}.cfg"),
            ..record(i, String::new())
        });
    }
    sink.record(record(0, "001565000001.cfg".into()));
    cancel.cancel();
    task.await.unwrap();
    // One tenant holds at most a quarter of the queue's 16; the rest were
    // dropped and counted, not queued without bound.
    assert!(
        sink.dropped() > 0 && sink.dropped() <= 42 - 4,
        "dropped {}",
        sink.dropped()
    );
    let recent = store
        .recent_boots(&"001565000001".parse().unwrap(), Some(7), 3)
        .await
        .unwrap();
    assert_eq!(recent.len(), 3);
    assert_eq!(recent[0].tenant_id, Some(7));
    // Another owner of the MAC sees none of it; a global reader sees all.
    let other = store
        .recent_boots(&"001565000001".parse().unwrap(), Some(8), 3)
        .await
        .unwrap();
    assert!(other.is_empty());
    let all = store
        .recent_boots(&"001565000001".parse().unwrap(), None, 3)
        .await
        .unwrap();
    assert_eq!(all.len(), 3);
    assert!(recent[0].at >= recent[1].at, "newest first");
    assert_eq!(recent[0].firmware.as_deref(), Some("66.86.0.15"));
    let pruned = store.prune_boots(Duration::from_millis(500)).await.unwrap();
    assert!(pruned >= 1, "pruned {pruned}");
}

both_backends!(randomized_writers_converge, randomized_body);
async fn randomized_body(db: TestDb) {
    let store = db.store().await;
    store
        .apply(
            &[tenant("acme", "US"), tenant("beta", "US")],
            &audit("setup"),
        )
        .await
        .unwrap();
    let node = RunningMirror::start(store.clone()).await;
    let seed: u64 = std::env::var("DIALTONE_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("randomized writers: DIALTONE_TEST_SEED={seed}");
    let mut writers = Vec::new();
    for w in 0..4u64 {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ (w * 0x9e37_79b9));
            let mut applied = 0;
            for _ in 0..60 {
                let n = rng.gen_range(0..40u32);
                let t = if n % 2 == 0 { "acme" } else { "beta" };
                let batch = match rng.gen_range(0..10) {
                    0..=4 => vec![phone(t, n, rng.gen_range(0..4))],
                    5 | 6 => vec![Mutation::DeletePhone {
                        mac: format!("001565{n:06x}").parse().unwrap(),
                    }],
                    7 | 8 => vec![entry(
                        t,
                        &format!("e{n}"),
                        &format!("Name {}", rng.gen::<u16>()),
                        &["+44 1632 960123"],
                    )],
                    _ => vec![Mutation::DeleteDirectoryEntry {
                        tenant: t.into(),
                        external_id: format!("e{n}"),
                    }],
                };
                // Concurrent writers on the same keys may conflict; a lost
                // race is the writer's problem, never the mirror's.
                if store.apply(&batch, &audit("random")).await.is_ok() {
                    applied += 1;
                }
            }
            applied
        }));
    }
    let mut applied = 0;
    for w in writers {
        applied += w.await.unwrap();
    }
    assert!(applied > 100, "only {applied} writes went through");
    node.assert_converges(&*store, Duration::from_secs(20))
        .await;
    // Converged row by row from the feed, not by falling back to a reload.
    assert_eq!(node.mirror.health().full_reloads, 0);
    node.stop().await;
}

both_backends!(templates_are_versioned, templates_body);
async fn templates_body(db: TestDb) {
    let store = db.store().await;
    let template = |body: &str| {
        Mutation::UpsertTemplate(store::TemplateInput {
            scope: TemplateScope::Model,
            family: Family::Yealink,
            scope_key: "T46S".into(),
            file_pattern: "{mac}.cfg".into(),
            body: body.into(),
            updated_by: "test".into(),
            keep_versions: None,
        })
    };
    let first = store
        .apply(&[template("a = 1\n")], &audit("t"))
        .await
        .unwrap();
    assert_eq!(first.templates.inserted, 1);
    let same = store
        .apply(&[template("a = 1\n")], &audit("t"))
        .await
        .unwrap();
    assert_eq!(same.templates.unchanged, 1);
    let second = store
        .apply(&[template("a = 2\n")], &audit("t"))
        .await
        .unwrap();
    assert_eq!(second.templates.updated, 1);
    let rows = db_rows(&*store).await;
    assert_eq!(rows.templates.len(), 1);
    assert_eq!(
        (rows.templates[0].version, &*rows.templates[0].body),
        (2, "a = 2\n")
    );
    let versions = scalar(&db, "SELECT count(*) FROM template_versions").await;
    assert_eq!(versions, 2, "every version is kept");
    // A quota of versions past i64 (as "no limit" is written) keeps them
    // all; read as a signed count it was -1, and pruned every one.
    let unlimited = |body: &str| match template(body) {
        Mutation::UpsertTemplate(mut input) => {
            input.keep_versions = Some(u64::MAX);
            Mutation::UpsertTemplate(input)
        }
        _ => unreachable!(),
    };
    store
        .apply(&[unlimited("a = 3\n")], &audit("t"))
        .await
        .unwrap();
    let versions = scalar(&db, "SELECT count(*) FROM template_versions").await;
    assert_eq!(versions, 3, "no version pruned");
}

both_backends!(sources_and_tokens, sources_and_tokens_body);
async fn sources_and_tokens_body(db: TestDb) {
    let store = db.store().await;
    store
        .apply(
            &[
                tenant("acme", "US"),
                ldap_source("acme", "ad", Some("bind-pw")),
            ],
            &audit("setup"),
        )
        .await
        .unwrap();
    let sealed = db_rows(&*store).await.directory_sources[0]
        .secret
        .clone()
        .expect("secret stored");
    assert!(!sealed.0.contains("bind-pw"), "bind password in clear");

    // Leaving the secret out keeps it: secrets are write-only, and an edit
    // of other settings must not wipe them.
    let report = store
        .apply(&[ldap_source("acme", "ad", None)], &audit("edit"))
        .await
        .unwrap();
    assert_eq!(report.directory_sources.unchanged, 1, "{report:?}");
    let source = db_rows(&*store).await.directory_sources[0].clone();
    let key = dialtone_sync::testing::test_key();
    let secret = source.secret.as_ref().unwrap();
    assert_eq!(key.open(Purpose::SourceSecret, secret).unwrap(), "bind-pw");
    store
        .apply(&[ldap_source("acme", "ad", Some(""))], &audit("clear"))
        .await
        .unwrap();
    assert_eq!(db_rows(&*store).await.directory_sources[0].secret, None);

    let token = generate_token();
    assert!(token.starts_with("dt_") && token.len() > 40, "{token}");
    let create = |scope: TokenScope, tenant: Option<&str>| {
        Mutation::CreateApiToken(ApiTokenInput {
            name: "pbx".into(),
            token_hash: token_hash(&token),
            scope,
            tenant: tenant.map(Into::into),
            expires_at: None,
        })
    };
    for (bad, why) in [
        (create(TokenScope::Lookup, None), "needs a tenant"),
        (create(TokenScope::GlobalAdmin, Some("acme")), "no tenant"),
    ] {
        let err = store.apply(&[bad], &audit("token")).await.unwrap_err();
        assert!(err.to_string().contains(why), "{err}");
    }
    store
        .apply(&[create(TokenScope::Lookup, Some("acme"))], &audit("token"))
        .await
        .unwrap();
    let rows = db_rows(&*store).await;
    let stored = &rows.api_tokens[0];
    assert_eq!(&*stored.token_hash, token_hash(&token).as_str());
    assert!(!stored.token_hash.contains(&token[3..]));
    assert_eq!(stored.tenant_id, Some(rows.tenants[0].id));
    let revoked = store
        .apply(
            &[Mutation::RevokeApiToken { id: stored.id }],
            &audit("revoke"),
        )
        .await
        .unwrap();
    assert_eq!(revoked.api_tokens.updated, 1);
    assert!(db_rows(&*store).await.api_tokens[0].revoked);

    let gone = store
        .apply(
            &[Mutation::DeleteDirectorySource {
                tenant: "acme".into(),
                name: "ad".into(),
            }],
            &audit("delete"),
        )
        .await
        .unwrap();
    assert_eq!(gone.directory_sources.deleted, 1);
}

both_backends!(expectations, expectations_body);
/// `Mutation::Expect`: the tag the mirror shows is the tag the transaction
/// checks; of two writes made from the same read exactly one lands, even
/// when they race; and every write leaves one audit row with its tenant.
async fn expectations_body(db: TestDb) {
    let store = db.store().await;
    store
        .apply(&[tenant("acme", "US"), phone("acme", 1, 2)], &audit("seed"))
        .await
        .unwrap();
    let mirror = Mirror::new();
    watcher::full_load(&mirror, &*store).await.unwrap();
    let state = mirror.load();
    let mac: Mac = "001565000001".parse().unwrap();
    let seen = state.phone_by_mac(&mac).unwrap();
    let tag = phone_etag(seen, &state.lines_of(seen.id));
    let edit = |label: &str| {
        let Mutation::UpsertPhone(mut input) = phone("acme", 1, 2) else {
            unreachable!()
        };
        input.label = Some(label.into());
        vec![
            Mutation::Expect {
                target: Target::Phone { mac },
                etag: tag.clone(),
            },
            Mutation::UpsertPhone(input),
        ]
    };
    let tenant_audit = |action: &str| Audit {
        tenant: Some("acme".into()),
        ..audit(action)
    };
    let (a, b) = (edit("first"), edit("second"));
    let (audit_a, audit_b) = (tenant_audit("edit"), tenant_audit("edit"));
    let (first, second) = tokio::join!(store.apply(&a, &audit_a), store.apply(&b, &audit_b));
    let outcomes = [first.is_ok(), second.is_ok()];
    assert_eq!(
        outcomes.iter().filter(|ok| **ok).count(),
        1,
        "exactly one of two racing edits lands: {first:?} {second:?}"
    );
    let refused = if first.is_ok() { second } else { first };
    assert!(
        matches!(refused, Err(SyncError::Conflict(_))),
        "{refused:?}"
    );

    // The mirror's new tag is the one the store accepts next.
    watcher::catch_up(&mirror, &*store).await.unwrap();
    let state = mirror.load();
    let now = state.phone_by_mac(&mac).unwrap();
    assert_ne!(phone_etag(now, &state.lines_of(now.id)), tag);
    let Mutation::UpsertPhone(input) = phone("acme", 1, 1) else {
        unreachable!()
    };
    store
        .apply(
            &[
                Mutation::Expect {
                    target: Target::Phone { mac },
                    etag: phone_etag(now, &state.lines_of(now.id)),
                },
                Mutation::UpsertPhone(input),
            ],
            &tenant_audit("edit"),
        )
        .await
        .unwrap();
    let missing = store
        .apply(
            &[Mutation::Expect {
                target: Target::Tenant {
                    slug: "nobody".into(),
                },
                etag: "\"x\"".into(),
            }],
            &audit("edit"),
        )
        .await;
    assert!(
        matches!(missing, Err(SyncError::NotFound(_))),
        "{missing:?}"
    );

    // Only successful writes are audited; the tenant filter finds them.
    let rows = store
        .audit_log(&AuditQuery {
            tenant: Some("acme".into()),
            limit: 50,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows[0].id > rows[1].id, "newest first");
    let all = store
        .audit_log(&AuditQuery {
            limit: 50,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 3);
    let page = store
        .audit_log(&AuditQuery {
            before_id: Some(all[0].id),
            limit: 1,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].id, all[1].id);
}

both_backends!(template_history, template_history_body);
async fn template_history_body(db: TestDb) {
    let store = db.store().await;
    let template = |body: &str| {
        Mutation::UpsertTemplate(store::TemplateInput {
            scope: TemplateScope::Family,
            family: Family::Snom,
            scope_key: String::new(),
            file_pattern: "{mac}.xml".into(),
            body: body.into(),
            updated_by: "test".into(),
            keep_versions: None,
        })
    };
    for body in ["<a/>", "<b/>", "<c/>"] {
        store.apply(&[template(body)], &audit("t")).await.unwrap();
    }
    let id = db_rows(&*store).await.templates[0].id;
    let versions = store.template_versions(id).await.unwrap();
    let bodies: Vec<(i64, &str)> = versions
        .iter()
        .map(|v| (v.version, v.body.as_str()))
        .collect();
    assert_eq!(bodies, [(1, "<a/>"), (2, "<b/>"), (3, "<c/>")]);
    let deleted = store
        .apply(&[Mutation::DeleteTemplate { id }], &audit("t"))
        .await
        .unwrap();
    assert_eq!(deleted.templates.deleted, 1);
    assert!(db_rows(&*store).await.templates.is_empty());
    // Its versions went with it: no route reads them, and kept they let a
    // tenant grow the database by saving and deleting in a loop.
    assert!(store.template_versions(id).await.unwrap().is_empty());
}
