//! Work on PostgreSQL cut off by a time limit while its connection is
//! silent (a partition, a hung server: a relay freezes the connection).
//! sqlx would hand such a connection back to the pool through a ping that
//! is never answered, and the pool would count it for good; each store
//! call closes it instead, so its slot comes back at once.

mod common;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use dialtone_sync::store::postgres::PgStore;
use dialtone_sync::store::Ending;
use dialtone_sync::testing::{eventually, test_key, Relay, TestDb};
use dialtone_sync::watcher::{self, WatchOptions};
use dialtone_sync::*;
use sqlx::Connection;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The smallest pool a store keeps: two cuts would take all of it.
const POOL_SIZE: u32 = 2;

/// The time limit that cuts the work off.
const LIMIT: Duration = Duration::from_secs(2);

/// Far past anything here but a hang.
const PATIENCE: Duration = Duration::from_secs(30);

async fn node_store(url: &str) -> Arc<PgStore> {
    let options = StoreOptions {
        max_connections: POOL_SIZE,
        acquire_timeout: Duration::from_secs(1),
        ..StoreOptions::default()
    };
    Arc::new(PgStore::connect(url, test_key(), &options).await.unwrap())
}

fn connections_closed() -> u64 {
    counters().get("dialtone_store_connections_closed_total", &[])
}

/// Whether the pool can lend all its connections at once. The frozen
/// connections it holds idle are found dead one at a time, by a borrower
/// that times out on them, so this tries a few times.
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

/// Starts `work` while `table` is locked, freezes every connection through
/// `relay` once the work waits for that lock, then lets the lock go: the
/// answer the work waits for never comes back.
async fn frozen_mid_query<T: Send + 'static>(
    db: &TestDb,
    relay: &Relay,
    table: &str,
    work: impl Future<Output = T> + Send + 'static,
) -> tokio::task::JoinHandle<T> {
    let mut locker = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let mut locked = locker.begin().await.unwrap();
    sqlx::query(&format!("LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"))
        .execute(&mut *locked)
        .await
        .unwrap();
    let working = tokio::spawn(work);
    lock_waiters(&db.url, 1, &format!("the work never waited for {table}")).await;
    relay.freeze();
    locked.commit().await.unwrap();
    working
}

/// [`frozen_mid_query`], then what `work` (bounded by a time limit of its
/// own) ended with once that limit cut it off.
async fn cut_off<T: Send + 'static>(
    db: &TestDb,
    relay: &Relay,
    table: &str,
    work: impl Future<Output = T> + Send + 'static,
) -> T {
    let working = frozen_mid_query(db, relay, table, work).await;
    tokio::time::timeout(PATIENCE, working)
        .await
        .expect("the time limit never cut the work off")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catch_up_cut_off_on_a_silent_connection_gives_its_pool_slot_back() {
    let closed_before = connections_closed();
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

    // The watcher as `serve` runs it; its first catch-up starts at once.
    let (wake, cancel) = (Arc::new(Notify::new()), CancellationToken::new());
    let options = WatchOptions {
        // Only a wake brings the next catch-up within the test.
        poll_interval: Duration::from_secs(600),
        catch_up_limit: LIMIT,
        ..WatchOptions::default()
    };
    let watching = frozen_mid_query(
        &db,
        &relay,
        "change_log",
        watcher::run_woken(
            mirror.clone(),
            store.clone(),
            options,
            wake.clone(),
            cancel.clone(),
        ),
    )
    .await;
    assert!(
        eventually(PATIENCE, || mirror.health().last_error.is_some()).await,
        "the watcher never gave up the catch-up on the frozen connection"
    );
    assert!(
        all_slots_usable(node.pool()).await,
        "the catch-up given up keeps a connection of the pool"
    );
    assert!(connections_closed() > closed_before);

    // And the next catch-up, on a connection that answers, brings changes.
    direct
        .apply(&[phone("acme", 1, 1)], &audit("after"))
        .await
        .unwrap();
    wake.notify_one();
    let mac: Mac = "001565000001".parse().unwrap();
    assert!(
        eventually(PATIENCE, || mirror.load().phone_by_mac(&mac).is_some()).await,
        "no catch-up succeeded after the cut: {:?}",
        mirror.health().last_error
    );
    cancel.cancel();
    watching.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_cut_off_at_its_deadline_on_a_silent_connection_gives_its_pool_slot_back() {
    let db = TestDb::postgres().await;
    db.store().await; // migrated
    let (relay, through) = Relay::to(&db.url).await;
    let node = node_store(&through).await;
    // Past the set-based threshold: the import's own path, lock and COPY.
    let fleet = fleet_of(250, |_| 1);
    let importing = {
        let node = node.clone();
        async move {
            let audit = audit("import");
            let import = node.apply_with_progress(&fleet, &audit, None, Ending::Commit);
            tokio::time::timeout(LIMIT, import).await
        }
    };
    let cut = cut_off(&db, &relay, "phones", importing).await;
    assert!(cut.is_err(), "the import ended on a frozen connection");
    assert!(
        all_slots_usable(node.pool()).await,
        "the import given up keeps a connection of the pool"
    );
    let meta = tokio::time::timeout(PATIENCE, node.meta()).await;
    assert!(matches!(meta, Ok(Ok(_))), "a read after the cut: {meta:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_read_cut_off_on_a_silent_connection_gives_its_pool_slot_back() {
    let db = TestDb::postgres().await;
    let direct = db.store().await;
    direct
        .apply(&[tenant("acme", "US")], &audit("setup"))
        .await
        .unwrap();
    let tenant_id = scalar(&db, "SELECT id FROM tenants WHERE slug = 'acme'").await;
    let (relay, through) = Relay::to(&db.url).await;
    let node = node_store(&through).await;
    let mac: Mac = "001565000001".parse().unwrap();
    // Two reads, as the resync refetch watch gives up on each in turn:
    // without their connections closed, the pool would have none left.
    for _ in 0..POOL_SIZE {
        let reading = {
            let node = node.clone();
            async move {
                tokio::time::timeout(LIMIT, node.served_boots(&mac, tenant_id, now_millis(), 20))
                    .await
            }
        };
        let cut = cut_off(&db, &relay, "provisioning_history", reading).await;
        assert!(cut.is_err(), "the read ended on a frozen connection");
    }
    assert!(
        all_slots_usable(node.pool()).await,
        "the reads given up keep connections of the pool"
    );
    let read = tokio::time::timeout(
        PATIENCE,
        node.served_boots(&mac, tenant_id, now_millis(), 20),
    )
    .await;
    assert!(matches!(read, Ok(Ok(_))), "a read after the cuts: {read:?}");
}
