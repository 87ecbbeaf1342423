//! A write whose future is dropped part way (the client of `POST /v1/import`
//! gone, a cancelled admin request, a panic) must leave nothing behind: no
//! lock that stops the next writer, no rows that a reader sees.

#[macro_use]
mod common;

use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use common::*;
use dialtone_sync::store::{Ending, Progress};
use dialtone_sync::testing::TestDb;
use dialtone_sync::*;

const PHONES: u32 = 3_000;
const ENTRIES: u32 = 3_000;
/// Fewer than a set-based directory write takes (200).
const TAIL: u32 = 150;

/// Far more than any step here needs; a hang fails the test instead of
/// stalling the suite.
const PATIENCE: Duration = Duration::from_secs(30);

both_backends!(
    a_write_dropped_midway_leaves_no_lock_and_no_rows,
    a_write_dropped_midway_body
);
async fn a_write_dropped_midway_body(db: TestDb) {
    let store = db
        .store_with(&StoreOptions {
            // Short, so that a leftover lock fails the next write in
            // seconds; still far above what a write here waits for.
            busy_timeout: Duration::from_secs(2),
            ..StoreOptions::default()
        })
        .await;

    // Phones and directory entries (both written set-based, as an import's
    // are), then a tail of changes written one by one: the first progress
    // report past the phones comes with the entries written, inside the
    // transaction, and the tail's statements still to come. The write
    // yields right after each report (`store::progress_point`), so the
    // abort lands there. Before it did, a statement answered before it was
    // read did not yield either, and on a busy machine the write could run
    // through its tail to the COMMIT before the abort took: committed, then
    // cancelled (in 23 of 150 runs with six busy loops on two cores).
    let mut write = vec![tenant("acme", "US")];
    write.extend((1..=PHONES).map(|n| phone("acme", n, 1)));
    let entry_n = |n: u32| {
        entry(
            "acme",
            &format!("e{n}"),
            &format!("Person {n}"),
            &["+1 555 0100"],
        )
    };
    write.extend((1..=ENTRIES).map(entry_n));
    // A tenant between the runs, so the tail is a run of its own, too
    // short for the set-based path.
    write.push(tenant("acme", "US"));
    write.extend((ENTRIES + 1..=ENTRIES + TAIL).map(entry_n));

    // The write reports it is under way, then waits until it has been
    // aborted, so that the abort lands mid-write, every run.
    let (under_way, is_under_way) = tokio::sync::oneshot::channel::<()>();
    let (aborted, is_aborted) = mpsc::channel::<()>();
    let handshake = Mutex::new(Some((under_way, is_aborted)));
    let progress: Progress = Arc::new(move |done| {
        if done <= u64::from(PHONES) + 1 {
            return;
        }
        if let Some((under_way, is_aborted)) = handshake.lock().unwrap().take() {
            let _ = under_way.send(());
            let _ = is_aborted.recv_timeout(PATIENCE);
        }
    });
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .apply_with_progress(&write, &audit("import"), Some(progress), Ending::Commit)
                .await
        })
    };
    tokio::time::timeout(PATIENCE, is_under_way)
        .await
        .expect("the write never got past its phones")
        .expect("the write ended before it got past its phones");
    writer.abort();
    aborted.send(()).unwrap();
    let ended = tokio::time::timeout(PATIENCE, writer)
        .await
        .expect("the aborted write never ended");
    assert!(
        ended.as_ref().is_err_and(|e| e.is_cancelled()),
        "the abort did not land mid-write: {ended:?}"
    );

    // The next writer gets the lock, on whichever pooled connection.
    for round in 0..3 {
        let small = [tenant("other", "GB"), phone("other", PHONES + 1 + round, 1)];
        tokio::time::timeout(PATIENCE, store.apply(&small, &audit("edit")))
            .await
            .expect("the write after the aborted one hung")
            .unwrap_or_else(|e| panic!("write {round} after the aborted one failed: {e}"));
    }

    // The audit rows tell an aborted write that committed itself (its
    // "import" row is there) from one committed by a later write.
    let audit_rows = store
        .audit_log(&AuditQuery {
            limit: 100,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    let actions: Vec<&str> = audit_rows.iter().map(|r| &*r.action).collect();

    // And no reader, on any pooled connection (sqlx hands idle ones out in
    // turn), sees any of the aborted write.
    for _ in 0..2 * StoreOptions::default().max_connections {
        let data = tokio::time::timeout(PATIENCE, db_rows(&*store))
            .await
            .expect("a read after the aborted write hung");
        let tenants: Vec<&str> = data.tenants.iter().map(|t| &*t.slug).collect();
        assert_eq!(tenants, ["other"], "audit rows: {actions:?}");
        assert_eq!((data.phones.len(), data.lines.len()), (3, 3));
        assert!(
            data.directory_entries.is_empty(),
            "{} of the aborted write's entries are visible",
            data.directory_entries.len()
        );
    }
    assert_eq!(actions, ["edit"; 3]);
}

/// A write cancelled while its `BEGIN` is on the wire (a client gone the
/// moment it asked) must not leave its connection inside a transaction
/// block: the pool would hand that connection on, and the next borrower's
/// statements would run, and hold their locks, inside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_cancelled_during_begin_leaves_no_open_transaction() {
    use std::future::Future;
    use std::task::Context;

    let db = TestDb::postgres().await;
    let store = db
        .store_with(&StoreOptions {
            max_connections: 2,
            ..StoreOptions::default()
        })
        .await;
    store
        .apply(&[tenant("acme", "US")], &audit("setup"))
        .await
        .unwrap();

    // Each write is polled a few times, with pauses for the server to
    // answer: taking a pooled connection costs a round trip of its own (the
    // pool pings it), so the BEGIN goes out on the first or a later poll.
    // Then the write is dropped, its BEGIN's answer still unread, and every
    // connection the pool holds must leave its transaction block once the
    // pool has taken the dropped one back (the ROLLBACK queued, flushed).
    let open = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
                AND state LIKE 'idle in transaction%'";
    let mut cancelled = 0;
    for n in 0..30 {
        let mutations = [phone("acme", n + 1, 1)];
        let audit = audit("edit");
        let mut write = Box::pin(store.apply(&mutations, &audit));
        let waker = futures::task::noop_waker();
        let mut pending = true;
        for _ in 0..=n % 3 {
            tokio::time::sleep(Duration::from_millis(5)).await;
            pending = write
                .as_mut()
                .poll(&mut Context::from_waker(&waker))
                .is_pending();
            if !pending {
                break;
            }
        }
        cancelled += u32::from(pending);
        drop(write);

        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let still_open = scalar(&db, open).await;
            if still_open == 0 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "after write {n}, dropped after {} polls, {still_open} pooled \
                 connections stay inside a transaction block",
                n % 3 + 1
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert!(cancelled > 0, "no write was ever dropped unfinished");

    // And the store goes on: a write and a read on every pooled connection.
    store
        .apply(&[phone("acme", 1000, 1)], &audit("edit"))
        .await
        .unwrap();
    for _ in 0..4 {
        let data = db_rows(&*store).await;
        assert_eq!(data.tenants.len(), 1);
    }
}
