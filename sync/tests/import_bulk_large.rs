//! Runs long enough that PostgreSQL reads phones and lines on two
//! connections at once (`store/postgres/bulk_read.rs`): the comparison
//! stays exact whatever order the rows are stored and given in, a run
//! after its transaction's own writes still sees them, and a watching node
//! follows such runs, dry runs and single edits committed in between,
//! showing each run whole.

mod common;

use common::*;
use dialtone_sync::store::LineInput;
use dialtone_sync::testing::{eventually, TestDb};
use dialtone_sync::*;

const BIG_LINES: u64 = BIG as u64 + BIG as u64 / 4;

fn counts(r: &store::WriteReport) -> [u64; 7] {
    [
        r.phones.inserted,
        r.phones.updated,
        r.phones.unchanged,
        r.lines.inserted,
        r.lines.updated,
        r.lines.unchanged,
        r.lines.deleted,
    ]
}

/// `rounds` single edits, one after another, of phones `stride` apart;
/// the last names its line "Edited {rounds - 1}".
fn spawn_edits(
    store: std::sync::Arc<dyn store::Store>,
    rounds: u32,
    stride: u32,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        for round in 0..rounds {
            let Mutation::UpsertPhone(mut p) = phone("acme", (round * stride) % BIG, 1) else {
                unreachable!()
            };
            p.lines[0].display_name = format!("Edited {round}");
            store
                .apply(&[Mutation::UpsertPhone(p)], &audit("edit"))
                .await
                .unwrap();
        }
    })
}

/// The node ends with exactly the database, having followed the change
/// log row by row.
async fn followed_without_reload(node: RunningMirror, store: &dyn store::Store) {
    node.assert_converges(store, std::time::Duration::from_secs(30))
        .await;
    assert_eq!(
        node.mirror.health().full_reloads,
        0,
        "the node reloaded instead of following the change log"
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_run_compares_exactly_in_any_order_on_postgres() {
    let db = TestDb::new(Backend::Postgres).await;
    let store = db.store().await;
    let mut batch = big_fleet();
    let first = store.apply(&batch, &audit("import")).await.unwrap();
    assert_eq!(
        counts(&first),
        [BIG as u64, 0, 0, BIG_LINES, 0, 0, 0],
        "{first:?}"
    );

    for n in (0..BIG).step_by(50) {
        phone_mut(&mut batch, n).lines[0].display_name = format!("Renamed {n}");
    }
    phone_mut(&mut batch, 20).http_password = Some("another device secret".into());
    phone_mut(&mut batch, 11).tenant = "beta".into();
    phone_mut(&mut batch, 12).lines.truncate(1);
    phone_mut(&mut batch, 13).lines.push(LineInput {
        extension: "777".into(),
        display_name: "Second".into(),
        auth_user: "777".into(),
        password: Some("line secret".into()),
        registrar: "sip.example.net".into(),
        proxy: None,
        settings: "{}".into(),
    });
    batch.push(phone("beta", BIG + 5, 1));
    let renamed = BIG as u64 / 50;
    let changed = store.apply(&batch, &audit("import")).await.unwrap();
    assert_eq!(
        counts(&changed),
        [1, 2, BIG as u64 - 2, 2, renamed, BIG_LINES - renamed - 1, 1],
        "{changed:?}"
    );
    let data = db_rows(&*store).await;
    let phone_50 = data
        .phones
        .iter()
        .find(|p| p.mac == phone_mut(&mut batch, 50).mac)
        .unwrap();
    assert!(data
        .lines
        .iter()
        .any(|l| l.phone_id == phone_50.id && &*l.display_name == "Renamed 50"));

    // The updated rows now lie elsewhere in the tables than their
    // neighbours, and then the whole run comes reversed: every guess of
    // the next row fails, and lines wait for every phone.
    let again = store.apply(&batch, &audit("import")).await.unwrap();
    assert_eq!(again.changed(), 0, "{again:?}");
    batch[2..].reverse();
    let reversed = store.apply(&batch, &audit("import")).await.unwrap();
    assert_eq!(reversed.changed(), 0, "{reversed:?}");
    assert_eq!(db_rows(&*store).await, data, "a re-import wrote");
}

/// A second connection would not see the transaction's earlier writes: a
/// line changed earlier in the same apply would compare as unchanged with
/// the run (which sets it back) and keep the earlier value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_run_sees_its_own_transaction_on_postgres() {
    let (_db, store, mut batch) = stored_big_fleet().await;
    let before = db_rows(&*store).await;
    let gone = phone_mut(&mut batch, 9).mac;
    let mut interim = phone_mut(&mut batch, 8).clone();
    interim.lines[0].display_name = "Interim".into();
    // Apart from the run (a DeletePhone between), so each goes on its own.
    let mut again = vec![
        Mutation::UpsertPhone(interim),
        Mutation::DeletePhone { mac: gone },
    ];
    again.extend(batch[2..].iter().cloned());
    let report = store.apply(&again, &audit("import")).await.unwrap();
    assert_eq!(report.phones.deleted, 1, "{report:?}");
    assert!(report.lines.updated >= 1, "{report:?}");
    let after = db_rows(&*store).await;
    let eight = before
        .phones
        .iter()
        .find(|p| p.mac == phone_mut(&mut batch, 8).mac)
        .unwrap();
    let names = |data: &Dataset| -> Vec<String> {
        data.lines
            .iter()
            .filter(|l| l.phone_id == eight.id)
            .map(|l| l.display_name.to_string())
            .collect()
    };
    assert_eq!(names(&after), names(&before), "the interim name stayed");
    let back = after.phones.iter().find(|p| p.mac == gone).unwrap();
    assert_eq!(
        after.lines.iter().filter(|l| l.phone_id == back.id).count(),
        1
    );
    assert_eq!(
        (after.phones.len(), after.lines.len()),
        (before.phones.len(), before.lines.len())
    );
}

/// A node that watches while large imports (their changes logged row by
/// row through the statement-level triggers) and single edits of the same
/// phones commit in between ends with exactly the database, having
/// followed the change log without a reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watching_node_follows_imports_and_edits_at_once_on_postgres() {
    let (_db, store, mut batch) = stored_big_fleet().await;
    let node = RunningMirror::start(store.clone()).await;
    let editor = spawn_edits(store.clone(), 40, 599);
    for round in 0..4u32 {
        for n in (round..BIG).step_by(50) {
            phone_mut(&mut batch, n).lines[0].display_name = format!("Import {round} of {n}");
        }
        // A line more for one phone, one fewer for another.
        let extra = phone_mut(&mut batch, 1 + round).lines[0].clone();
        phone_mut(&mut batch, 1 + round).lines.push(extra);
        phone_mut(&mut batch, 4 * (round + 1)).lines.truncate(1);
        let report = store.apply(&batch, &audit("import")).await.unwrap();
        assert!(report.lines.updated >= u64::from(BIG / 50), "{report:?}");
    }
    editor.await.unwrap();
    followed_without_reload(node, &*store).await;
}

/// Dry runs, one of them past the quiet change log's threshold, while a
/// node watches and single edits commit: nothing rehearsed is stored or
/// reaches the node, and the node follows the edits without a reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_runs_leave_no_trace_for_a_watching_node_on_postgres() {
    let (_db, store, mut batch) = stored_big_fleet().await;
    let node = RunningMirror::start(store.clone()).await;
    let editor = spawn_edits(store.clone(), 20, 997);
    // Step 1 changes every phone and line: past the quiet threshold.
    for (round, step) in [1u32, 50, 7].into_iter().enumerate() {
        for n in (0..BIG).step_by(step as usize) {
            let p = phone_mut(&mut batch, n);
            p.label = Some(format!("Rehearsal {round}"));
            p.lines[0].display_name = format!("Rehearsal {round}");
        }
        let report = store
            .apply_with_progress(&batch, &audit("import"), None, store::Ending::RollBack)
            .await
            .unwrap();
        let expected = u64::from(BIG.div_ceil(step));
        assert!(report.phones.updated >= expected, "{report:?}");
        assert!(report.lines.updated >= expected, "{report:?}");
    }
    editor.await.unwrap();
    let stored = format!("{:?}", db_rows(&*store).await);
    assert!(!stored.contains("Rehearsal"), "a dry run was stored");
    assert!(stored.contains("Edited 19"), "the last edit is missing");
    followed_without_reload(node, &*store).await;
}

/// A dry run past the quiet change log's threshold, alone on the
/// database, still writes its change log row by row: the quiet path locks
/// the tables exclusively, and every reader of them waited for a write
/// that would be rolled back. A write of the same rows takes that path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_never_locks_the_tables_exclusively_on_postgres() {
    use sqlx::Connection;
    let (db, store, mut batch) = stored_big_fleet().await;
    change_everything(&mut batch);
    let watch = |url: String, watching: std::sync::Arc<std::sync::atomic::AtomicBool>| async move {
        let mut observer = sqlx::PgConnection::connect(&url).await.unwrap();
        let mut seen = 0u32;
        while watching.load(std::sync::atomic::Ordering::Relaxed) {
            let held: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT FROM pg_locks WHERE relation IN \
                 ('phones'::regclass, 'lines'::regclass) AND mode = 'AccessExclusiveLock')",
            )
            .fetch_one(&mut observer)
            .await
            .unwrap();
            seen += u32::from(held);
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        seen
    };
    for ending in [store::Ending::RollBack, store::Ending::Commit] {
        let watching = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let observer = tokio::spawn(watch(db.url.clone(), watching.clone()));
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let report = store
            .apply_with_progress(&batch, &audit("import"), None, ending)
            .await
            .unwrap();
        assert_eq!(report.phones.updated, u64::from(BIG), "{report:?}");
        watching.store(false, std::sync::atomic::Ordering::Relaxed);
        let seen = observer.await.unwrap();
        match ending {
            store::Ending::RollBack => assert_eq!(seen, 0, "the dry run locked the tables"),
            store::Ending::Commit => assert!(seen > 0, "the write took the per-row path"),
        }
    }
}

/// Every phone and line changed: past the quiet change log's threshold.
fn change_everything(batch: &mut [Mutation]) {
    for n in 0..BIG {
        let p = phone_mut(batch, n);
        p.label = Some("Imported".into());
        for line in &mut p.lines {
            line.display_name = format!("Imported {n}");
        }
    }
}

/// An edit that has read phones and then writes waits on a large import's
/// lock; the import must not then wait on the edit's read for the quiet
/// path's locks, or PostgreSQL aborts one of the two as a deadlock. Both
/// commit (the import logging every row), and a watching node follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_waiting_on_a_large_import_does_not_deadlock_on_postgres() {
    use sqlx::Connection;
    let (db, store, mut batch) = stored_big_fleet().await;
    let node = RunningMirror::start(store.clone()).await;
    let mut editor = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let mut observer = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut editor).await.unwrap();
    let edited: i64 = sqlx::query_scalar("SELECT min(id) FROM phones")
        .fetch_one(&mut editor)
        .await
        .unwrap();
    change_everything(&mut batch);
    let import = tokio::spawn({
        let store = store.clone();
        async move { store.apply(&batch, &audit("import")).await }
    });
    let mut import_holds_its_lock = false;
    for _ in 0..1200 {
        import_holds_its_lock = sqlx::query_scalar(
            "SELECT EXISTS (SELECT FROM pg_locks WHERE relation = 'phones'::regclass \
             AND mode = 'ShareRowExclusiveLock' AND granted)",
        )
        .fetch_one(&mut observer)
        .await
        .unwrap();
        if import_holds_its_lock || import.is_finished() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(import_holds_its_lock, "the import never took its lock");
    sqlx::query("UPDATE phones SET label = 'Edited' WHERE id = $1")
        .bind(edited)
        .execute(&mut editor)
        .await
        .expect("the edit failed");
    sqlx::query("COMMIT").execute(&mut editor).await.unwrap();
    let report = import.await.unwrap().expect("the import failed");
    assert_eq!(report.phones.updated, u64::from(BIG), "{report:?}");
    let labelled = |label: &'static str| {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM phones WHERE label = $1").bind(label)
    };
    assert_eq!(
        labelled("Edited").fetch_one(&mut observer).await.unwrap(),
        1
    );
    assert_eq!(
        labelled("Imported").fetch_one(&mut observer).await.unwrap(),
        i64::from(BIG) - 1
    );
    followed_without_reload(node, &*store).await;
}

/// A read held open for the whole of a large import (a report, a stuck
/// client) does not hold the import up: it logs every row instead of
/// waiting for the quiet path's locks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_read_does_not_hold_up_a_large_import_on_postgres() {
    use sqlx::Connection;
    let (db, store, mut batch) = stored_big_fleet().await;
    let mut reader = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut reader).await.unwrap();
    let _: i64 = sqlx::query_scalar("SELECT count(*) FROM phones")
        .fetch_one(&mut reader)
        .await
        .unwrap();
    change_everything(&mut batch);
    let report = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        store.apply(&batch, &audit("import")),
    )
    .await
    .expect("the import waited for the reader")
    .unwrap();
    assert_eq!(report.phones.updated, u64::from(BIG), "{report:?}");
    sqlx::query("COMMIT").execute(&mut reader).await.unwrap();
    let logged: i64 = sqlx::query_scalar("SELECT count(*) FROM change_log WHERE entity = 'phones'")
        .fetch_one(&mut reader)
        .await
        .unwrap();
    assert!(logged >= i64::from(BIG), "{logged} phone rows logged");
}

/// A node shows each import whole or not at all. Sampled as often as it can
/// load its state while imports commit (each logged row by row, 2,000
/// phones and their lines), the phones an import changes never show part
/// old and part new labels, and no phone's label disagrees with its line's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watching_node_shows_each_import_whole_on_postgres() {
    use std::sync::atomic::{AtomicBool, Ordering};
    const STEP: usize = 12;
    const ROUNDS: u32 = 4;
    let (_db, store, mut batch) = stored_big_fleet().await;
    let node = RunningMirror::start(store.clone()).await;
    let changed: Vec<Mac> = (0..BIG)
        .step_by(STEP)
        .map(|n| phone_mut(&mut batch, n).mac)
        .collect();
    let changed_last = changed[changed.len() - 1];
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let sampler = std::thread::spawn({
        let (mirror, stop) = (node.mirror.clone(), stop.clone());
        move || {
            let (mut samples, mut labels_seen) = (0u32, std::collections::BTreeSet::new());
            while !stop.load(Ordering::Relaxed) {
                let state = mirror.load();
                let mut labels = std::collections::BTreeMap::<String, usize>::new();
                for mac in &changed {
                    let phone = state.phone_by_mac(mac).expect("a changed phone vanished");
                    let label = phone.label.as_deref().unwrap_or("").to_string();
                    let line = state.lines_of(phone.id)[0].display_name.to_string();
                    let expected = if label.is_empty() { "Desk" } else { &label };
                    assert!(
                        line.starts_with(expected),
                        "phone {mac} is labelled {label:?} but its line is {line:?}"
                    );
                    *labels.entry(label).or_default() += 1;
                }
                assert_eq!(labels.len(), 1, "part of an import was visible: {labels:?}");
                labels_seen.extend(labels.into_keys());
                samples += 1;
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
            (samples, labels_seen)
        }
    });
    for round in 1..=ROUNDS {
        for n in (0..BIG).step_by(STEP) {
            let p = phone_mut(&mut batch, n);
            p.label = Some(format!("Import {round}"));
            for line in &mut p.lines {
                line.display_name = format!("Import {round} of {n}");
            }
        }
        let report = store.apply(&batch, &audit("import")).await.unwrap();
        assert_eq!(
            report.phones.updated,
            u64::from(BIG.div_ceil(STEP as u32)),
            "{report:?}"
        );
        let label = format!("Import {round}");
        let shown = eventually(std::time::Duration::from_secs(30), || {
            let state = node.mirror.load();
            let phone = state.phone_by_mac(&changed_last);
            phone.is_some_and(|p| p.label.as_deref() == Some(label.as_str()))
        })
        .await;
        assert!(shown, "the node never showed import {round}");
    }
    stop.store(true, Ordering::Relaxed);
    let (samples, labels_seen) = sampler.join().expect("the sampler saw a torn state");
    assert!(
        samples >= 50 && labels_seen.len() >= 3,
        "{samples} samples saw {labels_seen:?}: the node was hardly watched"
    );
    followed_without_reload(node, &*store).await;
}
