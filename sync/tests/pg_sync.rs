//! PostgreSQL sync correctness: the cases where a naive change feed loses
//! data. Each runs against a real server started by scripts/test (or a
//! private cluster where the test stops the server).

mod common;

use std::time::{Duration, Instant};

use common::*;
use dialtone_sync::testing::{PrivatePostgres, TestDb};
use dialtone_sync::watcher::WatchOptions;
use dialtone_sync::*;

fn mac(n: u32) -> Mac {
    format!("001565{n:06x}").parse().unwrap()
}

/// Long enough that only the notification (or its absence) decides.
fn notify_only() -> WatchOptions {
    WatchOptions {
        poll_interval: Duration::from_secs(120),
        max_backoff: Duration::from_millis(500),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_out_of_order_commits_are_not_skipped() {
    let db = TestDb::postgres().await;
    let store = db.store().await;
    store
        .apply(&[tenant("acme", "US")], &audit("setup"))
        .await
        .unwrap();
    let node = RunningMirror::start(store.clone()).await;
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();

    // T1 takes the lower sequence number and stays open.
    let mut t1 = pool.begin().await.unwrap();
    let t1_txid: i64 = sqlx::query_scalar("SELECT pg_current_xact_id()::text::bigint")
        .fetch_one(&mut *t1)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO phones (tenant_id, mac, family, updated_at) \
         SELECT id, '001565000001', 'yealink', 0 FROM tenants WHERE slug = 'acme'",
    )
    .execute(&mut *t1)
    .await
    .unwrap();

    // T2 commits after it, with a higher sequence number.
    store
        .apply(&[phone("acme", 2, 1)], &audit("t2"))
        .await
        .unwrap();
    assert!(
        node.wait_for(Duration::from_secs(10), |s| s
            .phone_by_mac(&mac(2))
            .is_some())
            .await
    );
    // The cursor must not have moved past the open transaction.
    assert!(
        node.mirror.load().cursor().txid <= t1_txid,
        "cursor passed an open transaction"
    );

    t1.commit().await.unwrap();
    assert!(
        node.wait_for(Duration::from_secs(10), |s| s
            .phone_by_mac(&mac(1))
            .is_some())
            .await,
        "the late commit was skipped"
    );
    node.assert_converges(&*store, Duration::from_secs(5)).await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b_killed_listener_loses_nothing() {
    let db = TestDb::postgres().await;
    let store = db.store().await;
    store
        .apply(&[tenant("acme", "US")], &audit("setup"))
        .await
        .unwrap();
    let node = RunningMirror::start_with(store.clone(), notify_only()).await;
    let admin = sqlx::PgPool::connect(&db.url).await.unwrap();
    let dbname = db.url.rsplit('/').next().unwrap().to_string();
    // Wait for the listener to be up, so the kill hits it.
    let find = "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND query ILIKE 'LISTEN%'";
    let mut pids: Vec<i32> = Vec::new();
    for _ in 0..100 {
        pids = sqlx::query_scalar(find)
            .bind(&dbname)
            .fetch_all(&admin)
            .await
            .unwrap();
        if !pids.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(pids.len(), 1, "expected one listener backend");
    for round in 0..3u32 {
        let pids: Vec<i32> = sqlx::query_scalar(find)
            .bind(&dbname)
            .fetch_all(&admin)
            .await
            .unwrap();
        for pid in pids {
            sqlx::query("SELECT pg_terminate_backend($1)")
                .bind(pid)
                .execute(&admin)
                .await
                .unwrap();
        }
        // Commit while the watcher is reconnecting.
        store
            .apply(&[phone("acme", 10 + round, 1)], &audit("during reconnect"))
            .await
            .unwrap();
        assert!(
            node.wait_for(Duration::from_secs(10), |s| s
                .phone_by_mac(&mac(10 + round))
                .is_some())
                .await,
            "write during listener reconnect (round {round}) never arrived"
        );
    }
    node.assert_converges(&*store, Duration::from_secs(5)).await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_server_outage_keeps_serving_then_catches_up() {
    let pg = PrivatePostgres::start();
    let store = store::open(
        &pg.url(),
        dialtone_sync::testing::test_key(),
        &StoreOptions {
            acquire_timeout: Duration::from_millis(500),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    store.migrate().await.unwrap();
    store
        .apply(
            &[tenant("acme", "US"), phone("acme", 1, 2)],
            &audit("setup"),
        )
        .await
        .unwrap();
    let node = RunningMirror::start_with(
        store.clone(),
        WatchOptions {
            poll_interval: Duration::from_millis(500),
            max_backoff: Duration::from_secs(1),
            ..Default::default()
        },
    )
    .await;

    pg.stop_server();
    let down = Instant::now();
    let mut reads = 0u64;
    while down.elapsed() < Duration::from_secs(10) {
        let state = node.mirror.load();
        let phone = state
            .phone_by_mac(&mac(1))
            .expect("mirror stopped answering during the outage");
        assert_eq!(state.lines_of(phone.id).len(), 2);
        reads += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(reads > 100);
    let health = node.mirror.health();
    assert!(
        health.stale_since.is_some(),
        "outage not reported: {health:?}"
    );

    pg.start_server();
    // A write after the restart reaches the mirror, and it is fresh again.
    let mut written = false;
    for _ in 0..50 {
        if store
            .apply(&[phone("acme", 2, 1)], &audit("after restart"))
            .await
            .is_ok()
        {
            written = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(written, "could not write after the restart");
    assert!(
        node.wait_for(Duration::from_secs(15), |s| s
            .phone_by_mac(&mac(2))
            .is_some())
            .await
    );
    assert!(
        dialtone_sync::testing::eventually(Duration::from_secs(10), || node
            .mirror
            .health()
            .stale_since
            .is_none())
        .await
    );
    node.assert_converges(&*store, Duration::from_secs(5)).await;
    node.stop().await;
}

/// A catch-up whose query never returns (here: blocked behind a lock
/// another session holds) is an outage after `catch_up_limit`, not a
/// mirror that silently stops while the node reports itself current.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catch_up_that_never_returns_reads_as_an_outage() {
    let db = TestDb::postgres().await;
    let store = db.store().await;
    store
        .apply(&[tenant("acme", "US")], &audit("setup"))
        .await
        .unwrap();
    let node = RunningMirror::start_with(
        store.clone(),
        WatchOptions {
            poll_interval: Duration::from_millis(100),
            catch_up_limit: Duration::from_secs(1),
            ..Default::default()
        },
    )
    .await;
    assert!(node.mirror.health().stale_since.is_none());
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let mut locker = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE change_log IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *locker)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while node.mirror.health().stale_since.is_none() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let health = node.mirror.health();
    assert!(health.stale_since.is_some(), "still current: {health:?}");
    assert!(
        health
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("did not answer"),
        "{health:?}"
    );
    // Once the lock goes, the next catch-up clears it.
    locker.rollback().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while node.mirror.health().stale_since.is_some() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(node.mirror.health().stale_since.is_none());
}

/// A transaction left open holds the cursor back; the commits after it must
/// still be read once each, not all again at every catch-up, where past
/// `max_catch_up_rows` they made every poll reload the whole mirror.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d_open_transaction_does_not_make_every_catch_up_reload() {
    let db = TestDb::postgres().await;
    let store = db
        .store_with(&store::StoreOptions {
            max_catch_up_rows: 5,
            ..Default::default()
        })
        .await;
    store
        .apply(&[tenant("acme", "US")], &audit("setup"))
        .await
        .unwrap();
    let mirror = Mirror::new();
    watcher::full_load(&mirror, &*store).await.unwrap();
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();

    let mut open = pool.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO phones (tenant_id, mac, family, updated_at) \
         SELECT id, '001565000001', 'yealink', 0 FROM tenants WHERE slug = 'acme'",
    )
    .execute(&mut *open)
    .await
    .unwrap();
    // Two change-log rows (a phone and its line) a commit: sixteen in all,
    // past the limit of five, though each catch-up only has two new ones.
    for n in 2..10 {
        store
            .apply(&[phone("acme", n, 1)], &audit("edit"))
            .await
            .unwrap();
        watcher::catch_up(&mirror, &*store).await.unwrap();
        assert!(mirror.load().phone_by_mac(&mac(n)).is_some());
    }
    // A reload would also pick up the edits read before: it is the count
    // that tells.
    for _ in 0..3 {
        assert_eq!(watcher::catch_up(&mirror, &*store).await.unwrap(), 0);
    }
    assert_eq!(mirror.health().full_reloads, 0, "catch-ups reloaded");
    assert!(mirror.load().phone_by_mac(&mac(1)).is_none());

    // The open transaction's own rows arrive when it commits, also
    // after a reload left the mirror knowing what it saw.
    open.commit().await.unwrap();
    watcher::catch_up(&mirror, &*store).await.unwrap();
    assert!(
        mirror.load().phone_by_mac(&mac(1)).is_some(),
        "late commit skipped"
    );
    assert_eq!(mirror.health().full_reloads, 0);
    let mut open = pool.begin().await.unwrap();
    sqlx::query("UPDATE phones SET label = 'late' WHERE mac = '001565000001'")
        .execute(&mut *open)
        .await
        .unwrap();
    watcher::full_load(&mirror, &*store).await.unwrap();
    for n in 10..14 {
        store
            .apply(&[phone("acme", n, 1)], &audit("edit"))
            .await
            .unwrap();
        watcher::catch_up(&mirror, &*store).await.unwrap();
    }
    open.commit().await.unwrap();
    watcher::catch_up(&mirror, &*store).await.unwrap();
    assert_eq!(mirror.health().full_reloads, 1, "only the reload asked for");
    let have = mirror.load().to_dataset();
    assert_eq!(
        have,
        db_rows(&*store).await,
        "mirror differs from the database"
    );
}
