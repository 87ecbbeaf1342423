//! A COMMIT whose answer is lost: a proxy between the store and PostgreSQL
//! passes a COMMIT on and closes that connection before the answer comes
//! back. The write is in the database; the store must say so, or say that
//! it cannot tell, and never that nothing was written (a client would
//! write it again: a second token nobody holds, a create refused as taken).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use dialtone_sync::store::StoreOptions;
use dialtone_sync::testing::{test_key, TestDb};
use dialtone_sync::SyncError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

struct Proxy {
    addr: std::net::SocketAddr,
    /// The next COMMIT a connection sends ends that connection.
    cut_next_commit: Arc<AtomicBool>,
    /// New connections are refused (closed at once), and every open one
    /// is closed.
    refusing: Arc<AtomicBool>,
    severed: CancellationToken,
    /// The cut also refuses and severs everything, before the client can
    /// learn of it: set from the test's side after the cut, the store's
    /// question sometimes went through first on a loaded machine.
    refuse_at_cut: Arc<AtomicBool>,
}

/// A simple-protocol Query message holding `COMMIT`, as sqlx ends a
/// transaction.
fn holds_commit(bytes: &[u8]) -> bool {
    bytes.windows(6).any(|w| w == b"COMMIT")
}

async fn proxy(target: String) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = Proxy {
        addr: listener.local_addr().unwrap(),
        cut_next_commit: Arc::default(),
        refusing: Arc::default(),
        severed: CancellationToken::new(),
        refuse_at_cut: Arc::default(),
    };
    let (cut, refusing) = (proxy.cut_next_commit.clone(), proxy.refusing.clone());
    let (severed, refuse_at_cut) = (proxy.severed.clone(), proxy.refuse_at_cut.clone());
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                return;
            };
            if refusing.load(Ordering::SeqCst) {
                continue;
            }
            let Ok(server) = TcpStream::connect(&target).await else {
                continue;
            };
            let cut = cut.clone();
            let severed = severed.clone();
            let (refusing, refuse_at_cut) = (refusing.clone(), refuse_at_cut.clone());
            tokio::spawn(async move {
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let mut answers = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
                });
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let read = tokio::select! {
                        biased;
                        _ = severed.cancelled() => break,
                        read = client_read.read(&mut buf) => read,
                    };
                    let Ok(n) = read else { break };
                    if n == 0 {
                        break;
                    }
                    if holds_commit(&buf[..n]) && cut.swap(false, Ordering::SeqCst) {
                        if refuse_at_cut.load(Ordering::SeqCst) {
                            refusing.store(true, Ordering::SeqCst);
                            severed.cancel();
                        }
                        // Nothing more reaches the client, then the server
                        // gets the COMMIT: its answer is lost for sure.
                        answers.abort();
                        let _ = (&mut answers).await;
                        let _ = server_write.write_all(&buf[..n]).await;
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        return;
                    }
                    if server_write.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                answers.abort();
            });
        }
    });
    proxy
}

/// In the clear, so that the proxy can see the COMMIT: the test server
/// offers TLS, which sqlx's default `prefer` would take.
fn through(url: &str, addr: std::net::SocketAddr) -> String {
    let (scheme_user, rest) = url.split_once('@').expect("a URL with a user");
    let (_, db) = rest.split_once('/').expect("a URL with a database");
    let joiner = if db.contains('?') { '&' } else { '?' };
    format!("{scheme_user}@{addr}/{db}{joiner}sslmode=disable")
}

async fn tenants_named(db: &TestDb, slug: &str) -> i64 {
    scalar(
        db,
        &format!("SELECT count(*) FROM tenants WHERE slug = '{slug}'"),
    )
    .await
}

/// A migrated database, the proxy in front of it, and a store of a pool of
/// `max_connections` connected through the proxy, which has written once.
async fn through_proxy(
    max_connections: u32,
) -> (TestDb, Proxy, std::sync::Arc<dyn dialtone_sync::Store>) {
    let db = TestDb::postgres().await;
    db.store().await; // migrated
    let target = db
        .url
        .split_once('@')
        .unwrap()
        .1
        .split_once('/')
        .unwrap()
        .0
        .to_string();
    let proxy = proxy(target).await;
    let options = StoreOptions {
        max_connections,
        acquire_timeout: Duration::from_secs(2),
        ..StoreOptions::default()
    };
    let store = dialtone_sync::store::open(&through(&db.url, proxy.addr), test_key(), &options)
        .await
        .unwrap();
    store
        .apply(&[tenant("warmup", "US")], &audit("setup"))
        .await
        .unwrap();
    (db, proxy, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_whose_answer_is_lost_is_reported_as_made_or_unknown() {
    let (db, proxy, store) = through_proxy(StoreOptions::default().max_connections).await;

    // The database answers on another connection: the write was made,
    // and the store says so.
    proxy.cut_next_commit.store(true, Ordering::SeqCst);
    let made = store.apply(&[tenant("acme", "US")], &audit("create")).await;
    assert!(
        made.is_ok(),
        "a committed write reported as failed: {made:?}"
    );
    assert!(
        !proxy.cut_next_commit.load(Ordering::SeqCst),
        "no COMMIT was cut"
    );
    assert_eq!(tenants_named(&db, "acme").await, 1);

    // Nothing answers any more: the store cannot tell, and says that.
    // Refused from the moment the COMMIT is cut, so the question has no
    // connection to go on.
    proxy.refuse_at_cut.store(true, Ordering::SeqCst);
    proxy.cut_next_commit.store(true, Ordering::SeqCst);
    let unknown = store
        .apply(&[tenant("globex", "US")], &audit("create"))
        .await;
    assert!(
        matches!(unknown, Err(SyncError::CommitUnknown(_))),
        "{unknown:?}"
    );
    // The server has the COMMIT, but may not have run it yet: the store
    // gave up asking at once, and a loaded machine's backend can lag.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tenants_named(&db, "globex").await == 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(tenants_named(&db, "globex").await, 1);
}

/// With every other connection of the pool busy (a pool of two, one
/// waiting on a lock), the question still finds a connection: the
/// writer's, whose answer was lost, is closed before the database is
/// asked, not held while it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_commit_is_asked_about_with_the_pool_full() {
    use sqlx::Connection;

    let (db, proxy, store) = through_proxy(2).await;
    // One connection of the pool waits on this lock until the end.
    let mut lock = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut lock).await.unwrap();
    sqlx::query("LOCK TABLE provisioning_history IN ACCESS EXCLUSIVE MODE")
        .execute(&mut lock)
        .await
        .unwrap();
    let reader = store.clone();
    let waiting = tokio::spawn(async move {
        let mac = "001565000001".parse().unwrap();
        reader
            .served_boots(&mac, 1, dialtone_sync::now_millis(), 1)
            .await
    });
    let mut watch = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let mut waiters = 0i64;
    for _ in 0..400 {
        waiters = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&mut watch)
        .await
        .unwrap();
        if waiters >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(waiters, 1, "the read never waited on the lock");

    proxy.cut_next_commit.store(true, Ordering::SeqCst);
    let made = store.apply(&[tenant("acme", "US")], &audit("create")).await;
    sqlx::query("COMMIT").execute(&mut lock).await.unwrap();
    assert!(
        made.is_ok(),
        "a committed write reported as failed: {made:?}"
    );
    assert_eq!(tenants_named(&db, "acme").await, 1);
    waiting.await.unwrap().unwrap();
}
