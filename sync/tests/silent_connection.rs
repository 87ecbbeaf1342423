//! Connections to PostgreSQL that go silent: after a failover that moved
//! the server's address, a partition or a hung server, a socket stays
//! established and nothing more comes through it. A relay between the node
//! and the server freezes the connections open at one moment, while new
//! ones go through. Neither the change listener nor the pruner may stay
//! stuck on a frozen connection, nor keep a slot of the pool with it.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use dialtone_sync::store::postgres::PgStore;
use dialtone_sync::testing::{eventually, test_key, Relay, TestDb};
use dialtone_sync::watcher::{self, ListenEnd, Retention, WatchOptions};
use dialtone_sync::*;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Far longer than the tests wait: only the change listener can bring a
/// change in time.
const POLL: Duration = Duration::from_secs(60);

const POOL_SIZE: u32 = 2;

fn mac(n: u32) -> Mac {
    format!("001565{n:06x}").parse().unwrap()
}

/// A node's store, at `url`, with a short heartbeat.
async fn node_store(url: &str) -> Arc<PgStore> {
    let options = StoreOptions {
        max_connections: POOL_SIZE,
        acquire_timeout: Duration::from_secs(1),
        ..StoreOptions::default()
    };
    let store = PgStore::connect(url, test_key(), &options)
        .await
        .unwrap()
        // A deadline a loaded machine keeps: a late heartbeat on a live
        // listener would fail the check that it passes its heartbeats.
        .with_listener_heartbeat(Duration::from_millis(500), Duration::from_secs(3));
    Arc::new(store)
}

/// Whether the pool can still lend all its connections at once. The
/// frozen connections it holds idle are found dead one at a time, by a
/// borrower that times out on them, so this tries a few times.
async fn all_slots_usable(pool: &sqlx::PgPool) -> bool {
    // Each try waits out the acquire timeout on a dead one at most; on a
    // loaded machine six were once not enough. A slot kept for good fails
    // every try.
    for _ in 0..20 {
        let borrowed = futures::future::join_all((0..POOL_SIZE).map(|_| pool.acquire())).await;
        if borrowed.iter().all(Result::is_ok) {
            return true;
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_change_listener_is_rebuilt_and_changes_arrive_without_the_poll() {
    let db = TestDb::postgres().await;
    let direct = db.store().await;
    direct
        .apply(&[tenant("acme", "US")], &audit("setup"))
        .await
        .unwrap();
    let (relay, through) = Relay::to(&db.url).await;
    let node = node_store(&through).await;
    let store: Arc<dyn Store> = node.clone();
    let mirror = Arc::new(Mirror::new());
    watcher::full_load(&mirror, &*store).await.unwrap();

    // As `serve` runs them: the listener restarted whenever it ends.
    let (wake, cancel) = (Arc::new(Notify::new()), CancellationToken::new());
    let listener_ends = Arc::new(Mutex::new(Vec::new()));
    let listening = {
        let (store, wake, cancel) = (store.clone(), wake.clone(), cancel.clone());
        let ends = listener_ends.clone();
        tokio::spawn(async move {
            while !cancel.is_cancelled() {
                let end = watcher::listen(store.clone(), wake.clone(), cancel.clone(), || {}).await;
                ends.lock().unwrap().push(end);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let options = WatchOptions {
        poll_interval: POLL,
        ..WatchOptions::default()
    };
    let watching = tokio::spawn(watcher::run_woken(
        mirror.clone(),
        store.clone(),
        options,
        wake,
        cancel.clone(),
    ));
    let has_phone = |n: u32| {
        let mirror = mirror.clone();
        move || mirror.load().phone_by_mac(&mac(n)).is_some()
    };

    direct
        .apply(&[phone("acme", 1, 1)], &audit("before"))
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(10), has_phone(1)).await,
        "a change before the freeze arrives by notification"
    );
    // A live listener passes its heartbeats.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(listener_ends.lock().unwrap().is_empty());

    relay.freeze();
    let frozen_at = Instant::now();
    direct
        .apply(&[phone("acme", 2, 1)], &audit("after"))
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(15), has_phone(2)).await,
        "a change made after the listener's connection froze never arrived \
         (the poll is {} s away)",
        POLL.as_secs()
    );
    let took = frozen_at.elapsed();
    assert!(took < POLL / 4, "took {took:?}");
    // Its end is recorded once `listen` has checked the database on a fresh
    // connection, which can take longer than the catch-up it woke.
    let failed = || listener_ends.lock().unwrap().contains(&ListenEnd::Failed);
    assert!(
        eventually(Duration::from_secs(10), failed).await,
        "the silent listener's end is a counted failure: {:?}",
        listener_ends.lock().unwrap()
    );
    assert!(
        all_slots_usable(node.pool()).await,
        "a listener given up keeps no connection of the pool"
    );

    cancel.cancel();
    listening.await.unwrap();
    watching.await.unwrap();
}

fn background_failures(task: &'static str) -> u64 {
    counters().get(watcher::BACKGROUND_FAILURES, &[("task", task)])
}

async fn add_old_audit_row(db: &TestDb) {
    execute(
        db,
        "INSERT INTO audit_log (at, actor, action, entity, entity_key) \
         VALUES (0, 'test', 'old', 'test', '')",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prune_caught_on_a_silent_connection_is_given_up_counted_and_tried_again() {
    counters();
    let db = TestDb::postgres().await;
    db.store().await; // migrated
    add_old_audit_row(&db).await;
    let (relay, through) = Relay::to(&db.url).await;
    let node = node_store(&through).await;
    let store: Arc<dyn Store> = node.clone();
    let retention = Retention {
        change_log: Duration::from_secs(86_400),
        change_log_max_rows: 1_000_000,
        boots: Duration::from_secs(86_400),
        audit: Duration::from_secs(86_400),
    };
    let limit = Some(Duration::from_secs(3));

    // The audit prune's DELETE waits on a lock; its connection freezes;
    // then the lock goes, and the DELETE's answer never comes back.
    use sqlx::Connection;
    let mut locker = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let mut locked = locker.begin().await.unwrap();
    sqlx::query("LOCK TABLE audit_log IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *locked)
        .await
        .unwrap();
    let pruning = {
        let (store, retention) = (store.clone(), retention.clone());
        tokio::spawn(async move { watcher::prune_once(&*store, &retention, limit).await })
    };
    lock_waiters(&db.url, 1, "the audit prune never reached its DELETE").await;
    relay.freeze();
    locked.commit().await.unwrap();
    tokio::time::timeout(Duration::from_secs(20), pruning)
        .await
        .expect("a prune stuck on a silent connection is given up")
        .unwrap();
    assert_eq!(background_failures("prune_audit"), 1);
    assert_eq!(background_failures("prune_change_log"), 0);
    assert_eq!(background_failures("prune_history"), 0);
    assert!(
        all_slots_usable(node.pool()).await,
        "a prune given up keeps no connection of the pool"
    );

    // The next rounds prune as before.
    add_old_audit_row(&db).await;
    let before = background_failures("prune_audit");
    watcher::prune_once(&*store, &retention, limit).await;
    assert_eq!(background_failures("prune_audit"), before);
    assert_eq!(background_failures("prune_change_log"), 0);
    assert_eq!(background_failures("prune_history"), 0);
    assert_eq!(
        scalar(&db, "SELECT count(*) FROM audit_log WHERE at = 0").await,
        0
    );
}
