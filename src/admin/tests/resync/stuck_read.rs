//! The refetch watch reads provisioning history one phone at a time. A
//! read on a connection that went silent (no error ever comes: a path that
//! drops packets, no keepalive) stopped it for good, and no refetch was
//! seen again until restart; now the read is given up after a while and
//! the watch goes on with another connection. A direct resync's read of
//! where the phone fetched from is bounded the same way.

use std::time::{Duration, Instant};

use dialtone_sync::store::{BootRecord, StoreOptions};
use dialtone_sync::testing::{test_key, Relay, TestDb};
use dialtone_sync::Backend;
use sqlx::Connection;
use tokio_util::sync::CancellationToken;

use super::super::{Harness, ACME_MAC};
use super::{proxy, queue_acme_phone_resync, wait_for};

const LOCK_WAITERS: &str = "SELECT count(*) FROM pg_stat_activity \
     WHERE datname = current_database() AND wait_event_type = 'Lock'";

/// A harness whose store reaches PostgreSQL through a relay the test can
/// freeze. A small pool: a read given up closes its connection, and the
/// work goes on with another.
async fn relayed() -> (Harness, Relay) {
    let db = TestDb::new(Backend::Postgres).await;
    let (relay, through) = Relay::to(&db.url).await;
    let options = StoreOptions {
        max_connections: 2,
        acquire_timeout: Duration::from_millis(500),
        ..StoreOptions::default()
    };
    let store = dialtone_sync::store::open(&through, test_key(), &options)
        .await
        .unwrap();
    store.migrate().await.unwrap();
    (Harness::over(db, store, &options).await, relay)
}

/// A connection of the test's own holding provisioning history locked
/// until it commits: history reads wait on it.
async fn history_locked(h: &Harness) -> sqlx::PgConnection {
    let mut lock = sqlx::PgConnection::connect(&h._db.url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut lock).await.unwrap();
    sqlx::query("LOCK TABLE provisioning_history IN ACCESS EXCLUSIVE MODE")
        .execute(&mut lock)
        .await
        .unwrap();
    lock
}

/// Whether a read came to wait on [`history_locked`]'s lock (in 10 s).
async fn waits_on_the_lock(h: &Harness) -> bool {
    let mut watch = sqlx::PgConnection::connect(&h._db.url).await.unwrap();
    for _ in 0..400 {
        let waiters: i64 = sqlx::query_scalar(LOCK_WAITERS)
            .fetch_one(&mut watch)
            .await
            .unwrap();
        if waiters >= 1 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_read_never_answered_does_not_stop_the_refetch_watch() {
    let (h, relay) = relayed().await;
    // The watch's first read waits on this lock, on a relayed connection.
    let mut lock = history_locked(&h).await;

    let cancel = CancellationToken::new();
    tokio::spawn(h.resync.clone().run(cancel.clone()));
    let _far = proxy(&h, &["200 OK"]);
    queue_acme_phone_resync(&h, "acme-admin").await;
    let path = format!("/v1/resyncs?tenant=acme&mac={ACME_MAC}");
    let done = wait_for(&h, &path, |r| r["state"] == "answered").await;
    let sent = done["sent_at"].as_i64().unwrap();

    assert!(waits_on_the_lock(&h).await, "the watch never read history");
    // Its answer now never reaches the node.
    relay.freeze();
    sqlx::query("COMMIT").execute(&mut lock).await.unwrap();

    let direct = dialtone_sync::store::open(&h._db.url, test_key(), &StoreOptions::default())
        .await
        .unwrap();
    let acme = h.mirror.load().tenant_by_slug("acme").unwrap().id;
    direct
        .record_boots(&[BootRecord {
            mac: ACME_MAC.into(),
            at: sent + 2,
            remote_ip: "192.0.2.7".into(),
            user_agent: None,
            protocol: "http".into(),
            file: format!("{ACME_MAC}.cfg"),
            outcome: "ok".into(),
            bytes: 10,
            model: None,
            firmware: None,
            tenant_id: Some(acme),
        }])
        .await
        .unwrap();

    // Polled again 2 s after the read is given up, then 4 s later.
    let started = Instant::now();
    let mut seen = None;
    while started.elapsed() < Duration::from_secs(45) {
        let list = h.get("global", &path).await.json();
        if !list["resyncs"][0]["refetched_at"].is_null() {
            seen = Some(list["resyncs"][0]["refetched_at"].as_i64());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        seen,
        Some(Some(sent + 2)),
        "the watch stopped at the unanswered read"
    );
    cancel.cancel();
}

/// A direct resync reads where the phone last fetched from; on a
/// connection gone silent that read waited until TCP gave up, holding one
/// of the worker's places. Now it is given up as the watch's reads are,
/// and the resync fails saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_resync_whose_history_read_never_answers_fails() {
    use crate::config::ResyncConfig;
    use crate::resync::track::State;
    use crate::resync::ResyncService;

    let (h, relay) = relayed().await;
    let config = ResyncConfig {
        direct: true,
        direct_networks: vec!["127.0.0.0/25".into()],
        listen: "127.0.0.1:0".parse().unwrap(),
        ..Default::default()
    };
    let direct = ResyncService::new(&config, h.store.clone(), None).unwrap();
    let cancel = CancellationToken::new();
    tokio::spawn(direct.clone().run(cancel.clone()));

    let mut lock = history_locked(&h).await;
    let path = format!("/v1/phones/{ACME_MAC}/resync");
    let (status, _, body) = super::super::resync_limits::call_with(
        &h,
        Some(direct.clone()),
        axum::http::Method::POST,
        &path,
    )
    .await;
    assert_eq!(status, axum::http::StatusCode::ACCEPTED, "{body}");
    assert!(
        waits_on_the_lock(&h).await,
        "the direct resync never read history"
    );
    // Its answer now never reaches the node.
    relay.freeze();
    sqlx::query("COMMIT").execute(&mut lock).await.unwrap();

    let started = Instant::now();
    let mut newest = direct.list(None, 1, |_| true).remove(0);
    while newest.state != State::Failed && started.elapsed() < Duration::from_secs(45) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        newest = direct.list(None, 1, |_| true).remove(0);
    }
    assert_eq!(newest.state, State::Failed, "still waiting on the read");
    let reason = newest.reason.unwrap_or_default();
    assert!(reason.contains("did not answer in time"), "{reason}");
    cancel.cancel();
}
