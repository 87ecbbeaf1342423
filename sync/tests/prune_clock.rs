//! Pruning on PostgreSQL goes by the database's clock, not the pruning
//! node's: every node prunes the shared tables, so one node with a wrong
//! clock must neither delete everyone's rows nor keep them for ever. On
//! SQLite it goes by the node's clock as counted since the store was
//! opened, so a clock stepped ahead afterwards cannot empty the tables.

mod common;

use std::sync::Arc;
use std::time::Duration;

use dialtone_sync::store::postgres::PgStore;
use dialtone_sync::store::sqlite::SqliteStore;
use dialtone_sync::store::BootRecord;
use dialtone_sync::testing::build::{audit, tenant};
use dialtone_sync::testing::{eventually, test_key, TestDb};
use dialtone_sync::*;
use tokio_util::sync::CancellationToken;

const DAY_MS: Millis = 86_400_000;
const YEAR_MS: Millis = 365 * DAY_MS;

fn a_year_ahead() -> Millis {
    now_millis() + YEAR_MS
}

fn a_year_behind() -> Millis {
    now_millis() - YEAR_MS
}

async fn node_with_clock(db: &TestDb, clock: fn() -> Millis) -> PgStore {
    let store = PgStore::connect(&db.url, test_key(), &StoreOptions::default())
        .await
        .unwrap()
        .with_node_clock(clock);
    store.migrate().await.unwrap();
    store
}

fn fetch(at: Millis) -> BootRecord {
    BootRecord {
        mac: "001565000001".into(),
        at,
        remote_ip: "192.0.2.10".into(),
        user_agent: None,
        protocol: "http".into(),
        file: "001565000001.cfg".into(),
        outcome: "served".into(),
        bytes: 100,
        model: None,
        firmware: None,
        tenant_id: None,
    }
}

/// Audit, history and change-log rows in that order.
async fn counts(db: &TestDb) -> [i64; 3] {
    [
        common::scalar(db, "SELECT count(*) FROM audit_log").await,
        common::scalar(db, "SELECT count(*) FROM provisioning_history").await,
        common::scalar(db, "SELECT count(*) FROM change_log").await,
    ]
}

async fn write_rows(store: &dyn Store) {
    store
        .apply(&[tenant("acme", "US")], &audit("setup"))
        .await
        .unwrap();
    store.record_boots(&[fetch(now_millis())]).await.unwrap();
}

/// Prunes all three tables; returns the rows each deleted.
async fn prune_all(store: &dyn Store, retain: Duration) -> [u64; 3] {
    [
        store.prune_audit(retain).await.unwrap(),
        store.prune_boots(retain).await.unwrap(),
        store.prune_change_log(retain, 1_000_000).await.unwrap(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_a_year_ahead_prunes_nothing_recent() {
    let db = TestDb::postgres().await;
    let store = node_with_clock(&db, a_year_ahead).await;
    write_rows(&store).await;
    let before = counts(&db).await;
    assert!(before.iter().all(|&n| n > 0), "{before:?}");
    let month = Duration::from_secs(30 * 86_400);
    assert_eq!(prune_all(&store, month).await, [0, 0, 0]);
    assert_eq!(counts(&db).await, before);
    let offset = store.clock_offset_ms();
    assert!(
        (offset - YEAR_MS).abs() < 60_000,
        "measured {offset} ms ahead"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_a_year_behind_still_prunes_old_rows() {
    let db = TestDb::postgres().await;
    let store = node_with_clock(&db, a_year_behind).await;
    write_rows(&store).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let pruned = prune_all(&store, Duration::from_millis(400)).await;
    assert!(pruned.iter().all(|&n| n > 0), "pruned {pruned:?}");
    let left = counts(&db).await;
    assert_eq!(left[..2], [0, 0], "audit and history left: {left:?}");
    let offset = store.clock_offset_ms();
    assert!(
        (offset + YEAR_MS).abs() < 60_000,
        "measured {offset} ms behind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_in_step_measures_no_offset() {
    let db = TestDb::postgres().await;
    let store = node_with_clock(&db, now_millis).await;
    prune_all(&store, Duration::from_secs(3600)).await;
    let offset = store.clock_offset_ms();
    assert!(offset.abs() < 5_000, "measured {offset} ms");
}

/// A fetch two days old is pruned at a day's retention and everything
/// written now is kept, as by the time counted since the store was opened:
/// by the clock as stepped, a day's retention would delete every row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_node_stepped_a_year_ahead_prunes_only_what_is_old() {
    let db = TestDb::sqlite();
    let store = SqliteStore::connect(&db.url, test_key(), &StoreOptions::default())
        .await
        .unwrap()
        .with_node_clock(a_year_ahead);
    store.migrate().await.unwrap();
    write_rows(&store).await;
    let old = fetch(now_millis() - 2 * DAY_MS);
    store.record_boots(&[old]).await.unwrap();
    let before = counts(&db).await;
    assert!(before.iter().all(|&n| n > 0), "{before:?}");
    let day = Duration::from_secs(86_400);
    assert_eq!(prune_all(&store, day).await, [0, 1, 0]);
    assert_eq!(counts(&db).await, [before[0], before[1] - 1, before[2]]);
}

/// The pruner's first pass runs at start, so a node with a wrong clock
/// says so at once rather than after the first interval. It leaves the
/// change log, which a node started from a snapshot is catching up from
/// meanwhile, and gives way to shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pruner_measures_the_clock_at_start() {
    let db = TestDb::postgres().await;
    let store = Arc::new(node_with_clock(&db, a_year_ahead).await);
    write_rows(&*store).await;
    let before = counts(&db).await;
    let cancel = CancellationToken::new();
    let month = Duration::from_secs(30 * 86_400);
    let pruner = tokio::spawn(watcher::run_pruner(
        store.clone(),
        Duration::from_secs(3_600),
        watcher::Retention {
            change_log: Duration::ZERO,
            change_log_max_rows: 0,
            boots: month,
            audit: month,
        },
        cancel.clone(),
    ));
    let measured = eventually(Duration::from_secs(10), || store.clock_offset_ms() != 0).await;
    let offset = store.clock_offset_ms();
    assert!(
        measured && (offset - YEAR_MS).abs() < 60_000,
        "measured {offset} ms ahead"
    );
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(5), pruner)
        .await
        .expect("the pruner stops when cancelled")
        .unwrap();
    // With no retention at all, a change-log prune would have emptied it.
    assert_eq!(counts(&db).await, before);
}

/// On SQLite the first prune waits its interval: the cutoff is this node's
/// clock as it read at start, and a node booted before NTP set its clock
/// deleted its whole history at once; the interval gives NTP its time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_pruner_waits_its_interval_before_the_first_prune() {
    let db = TestDb::sqlite();
    let store = SqliteStore::connect(&db.url, test_key(), &StoreOptions::default())
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let store = Arc::new(store);
    write_rows(&*store).await;
    store
        .record_boots(&[fetch(now_millis() - 2 * DAY_MS)])
        .await
        .unwrap();
    let before = counts(&db).await;
    let cancel = CancellationToken::new();
    let day = Duration::from_secs(86_400);
    let pruner = tokio::spawn(watcher::run_pruner(
        store.clone(),
        Duration::from_secs(3_600),
        watcher::Retention {
            change_log: day,
            change_log_max_rows: 1_000_000,
            boots: day,
            audit: day,
        },
        cancel.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(5), pruner)
        .await
        .expect("the pruner stops when cancelled")
        .unwrap();
    assert_eq!(
        counts(&db).await,
        before,
        "the two-day-old fetch was pruned at start"
    );
}
