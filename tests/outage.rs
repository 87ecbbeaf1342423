//! A PostgreSQL outage under a running node, made by cutting a proxy
//! between the two (the shared server is never stopped): the node serves
//! on, reports the outage as staleness and not as `degraded`, and recovers
//! when the database is back.

mod common;

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use common::*;
use dialtone_sync::testing::TestDb;
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// A TCP proxy on loopback. `cut` drops every connection through it and
/// refuses new ones (the port is closed); `restore` opens the same port.
struct Proxy {
    runtime: tokio::runtime::Runtime,
    addr: SocketAddr,
    target: String,
    accepting: Mutex<Option<JoinHandle<()>>>,
}

impl Proxy {
    fn start(target: &str) -> Proxy {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let mut proxy = Proxy {
            runtime,
            addr: "127.0.0.1:0".parse().unwrap(),
            target: target.to_string(),
            accepting: Mutex::default(),
        };
        proxy.addr = proxy.open();
        proxy
    }

    fn open(&self) -> SocketAddr {
        let _enter = self.runtime.enter();
        let socket = TcpSocket::new_v4().unwrap();
        // The closed port still has its cut connections in TIME_WAIT.
        socket.set_reuseaddr(true).unwrap();
        socket.bind(self.addr).unwrap();
        let listener = socket.listen(64).unwrap();
        let addr = listener.local_addr().unwrap();
        let target = self.target.clone();
        let task = self.runtime.spawn(async move {
            // Owned by this task: aborting it drops every connection.
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((mut client, _)) = accepted else { continue };
                        let target = target.clone();
                        connections.spawn(async move {
                            if let Ok(mut server) = TcpStream::connect(&target).await {
                                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                            }
                        });
                    }
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
        });
        *self.accepting.lock().unwrap() = Some(task);
        addr
    }

    fn cut(&self) {
        if let Some(task) = self.accepting.lock().unwrap().take() {
            task.abort();
            let _ = self.runtime.block_on(task);
        }
    }

    fn restore(&self) {
        self.open();
    }
}

/// `postgres://user@host:port/db` with host and port replaced.
fn through(url: &str, addr: SocketAddr) -> (String, String) {
    let (scheme_user, rest) = url.split_once('@').expect("a URL with a user");
    let (host_port, db) = rest.split_once('/').expect("a URL with a database");
    (format!("{scheme_user}@{addr}/{db}"), host_port.to_string())
}

/// The sum of a metric's samples that carry `label`.
fn metric(server: &Server, name: &str, label: &str) -> f64 {
    let (_, body) = server.try_get("/metrics").expect("/metrics answers");
    body.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| l.contains(label))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

#[test]
fn a_database_outage_is_reported_as_stale_not_degraded_and_recovers() {
    let (_, target) = through(&dialtone_sync::testing::pg_server_url(), free_addr());
    let proxy = Proxy::start(&target);
    let db = proxy.runtime.block_on(TestDb::postgres());
    let (url, _) = through(&db.url, proxy.addr);
    let dir = tempfile::tempdir().unwrap();
    // A low limit: the old behaviour trips it within seconds of the cut.
    let max_restarts = 3;
    let server = Server::start_with_env(
        dir.path(),
        &url,
        &["--demo"],
        &[
            (
                "DIALTONE_SUPERVISION__MAX_RESTARTS",
                &max_restarts.to_string(),
            ),
            ("DIALTONE_SUPERVISION__WINDOW_S", "300"),
            // Each of the listener's stops waits this long for a
            // connection; the test counts stops, so it keeps them short.
            ("DIALTONE_DATABASE__ACQUIRE_TIMEOUT_MS", "1000"),
        ],
    );
    assert_eq!(server.readyz()["status"], "ready");
    assert_eq!(
        http_get(server.prov_addr, "/0015654aa937.cfg").map(|(s, _)| s),
        Some(200)
    );

    proxy.cut();
    let listener = "task=\"change-listener\"";
    let stops = || {
        metric(&server, "dialtone_task_restarts_total", listener)
            + metric(&server, "dialtone_task_unreachable_total", listener)
    };
    // The listener stops again and again while the database is away: more
    // often than the limit allows.
    let stopped = wait_until(Duration::from_secs(90), || {
        stops() > (max_restarts + 1) as f64
    });
    assert!(
        stopped.is_some(),
        "the listener never stopped {} times: {}",
        max_restarts + 2,
        server.stderr()
    );
    let readyz = server.readyz();
    assert!(readyz["stale_since"].is_number(), "{readyz}");
    assert_eq!(readyz["ready"], true, "{readyz}");
    assert_eq!(
        readyz["status"], "ready",
        "an outage is not degraded: {readyz}"
    );
    assert_eq!(readyz["degraded_tasks"], serde_json::json!([]), "{readyz}");
    assert_eq!(metric(&server, "dialtone_degraded", ""), 0.0);
    assert!(metric(&server, "dialtone_task_unreachable_total", listener) > 0.0);
    // Phones still get their files: one cached, one rendered in the outage.
    assert_eq!(
        http_get(server.prov_addr, "/0015654aa937.cfg").map(|(s, _)| s),
        Some(200)
    );
    let fresh = tftp_get(server.tftp_addr, "805ec0123456.cfg").expect("TFTP answers");
    assert!(String::from_utf8_lossy(&fresh).contains("account.1"));

    proxy.restore();
    let recovered = wait_until(Duration::from_secs(60), || {
        server.readyz()["stale_since"].is_null()
    });
    let readyz = server.readyz();
    assert!(
        recovered.is_some(),
        "still stale after the restore: {readyz}"
    );
    assert_eq!(readyz["status"], "ready", "{readyz}");
    assert_eq!(server.stop(), 0);
}

/// A node started from its snapshot while the database was away could not
/// check its key then. With a key the database does not use (a key file
/// missing on this one node, created anew) it would have sealed every
/// secret it wrote with it once the database returned. It stops instead,
/// non-zero, with the refusal a start would have given.
#[test]
fn a_node_started_from_its_snapshot_checks_its_key_when_the_database_returns() {
    let (_, target) = through(&dialtone_sync::testing::pg_server_url(), free_addr());
    let proxy = Proxy::start(&target);
    let db = proxy.runtime.block_on(TestDb::postgres());
    let (url, _) = through(&db.url, proxy.addr);
    let dir = tempfile::tempdir().unwrap();
    // No sealed value in the snapshot (no demo data yet): the start from it
    // cannot tell the key, only the database can.
    let first = Server::start(dir.path(), &url, &[]);
    assert_eq!(first.stop(), 0);
    assert!(dir.path().join("dialtone.snapshot").exists());

    proxy.cut();
    let other_key = "ab".repeat(32);
    let second = Server::start_with_env(
        dir.path(),
        &url,
        &[],
        &[("DIALTONE_SECRETS__KEY", &other_key)],
    );
    assert_eq!(second.readyz()["loaded_from"], "snapshot");
    proxy.restore();
    let stopped = wait_until(Duration::from_secs(60), || {
        second.stderr().contains("shutting down")
    });
    let log = second.stderr();
    assert!(stopped.is_some(), "still serving with the wrong key: {log}");
    assert!(log.contains("sealed with"), "{log}");
    let code = second.wait_exit();
    assert_eq!(code, 1);

    // The database kept the first key, which still opens what it seals.
    let third = Server::start(dir.path(), &url, &["--demo"]);
    assert_eq!(
        http_get(third.prov_addr, "/0015654aa937.cfg").map(|(s, _)| s),
        Some(200)
    );
    assert_eq!(third.stop(), 0);
}

/// A connection of the test's own that has run `statements`: a lock
/// taken in a transaction it holds until the test ends it.
async fn holding(url: &str, statements: &[&str]) -> sqlx::PgConnection {
    use sqlx::Connection;
    let mut c = sqlx::PgConnection::connect(url).await.unwrap();
    for statement in statements {
        sqlx::query(statement).execute(&mut c).await.unwrap();
    }
    c
}

/// A database that takes a start's connection but does not answer its
/// queries (here a lock held on the change log) no longer keeps a node
/// with a snapshot from serving: past its patience (10 s) the start
/// serves the snapshot, stale, and catches up once the lock goes.
#[test]
fn a_start_with_a_snapshot_serves_it_while_the_database_hangs() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let db = runtime.block_on(TestDb::postgres());
    let dir = tempfile::tempdir().unwrap();
    let first = Server::start(dir.path(), &db.url, &["--demo"]);
    assert_eq!(first.stop(), 0);

    // A change made while the node is stopped, so the catch-up has one
    // to read, then the change log locked until the end of the test's
    // transaction.
    let mut holder = runtime.block_on(holding(
        &db.url,
        &[
            "UPDATE tenants SET name = name || ' (renamed)'",
            "BEGIN",
            "LOCK TABLE change_log IN ACCESS EXCLUSIVE MODE",
        ],
    ));
    // Server::start waits for /readyz, 30 s at most: the old start waited
    // on the lock for as long as it was held.
    let second = Server::start(dir.path(), &db.url, &[]);
    let readyz = second.readyz();
    assert_eq!(readyz["loaded_from"], "snapshot", "{readyz}");
    assert!(readyz["stale_since"].is_number(), "{readyz}");
    assert_eq!(
        http_get(second.prov_addr, "/0015654aa937.cfg").map(|(s, _)| s),
        Some(200)
    );

    runtime.block_on(async {
        sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
    });
    let caught_up = wait_until(Duration::from_secs(60), || {
        second.readyz()["stale_since"].is_null()
    });
    let readyz = second.readyz();
    assert!(
        caught_up.is_some(),
        "still stale after the lock went: {readyz}"
    );
    assert_eq!(readyz["status"], "ready", "{readyz}");
    assert_eq!(second.stop(), 0);
}

/// Patience is for a snapshot that can serve: one taken from another
/// database URL cannot, so a start behind a held lock waits for the
/// database as a start without a snapshot does, instead of giving up.
#[test]
fn a_start_whose_snapshot_cannot_serve_waits_for_a_slow_database() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let db = runtime.block_on(TestDb::postgres());
    let dir = tempfile::tempdir().unwrap();
    let first = Server::start(dir.path(), &db.url, &["--demo"]);
    assert_eq!(first.stop(), 0);
    // The same database by another name: the snapshot is not for it.
    let renamed = db.url.replacen("@127.0.0.1:", "@localhost:", 1);
    assert_ne!(renamed, db.url, "the test database's URL names 127.0.0.1");

    let held = runtime.block_on(holding(
        &db.url,
        &["BEGIN", "LOCK TABLE dialtone_meta IN ACCESS EXCLUSIVE MODE"],
    ));
    // Let go past the patience a usable snapshot would get (10 s).
    let release = runtime.spawn(async move {
        let mut held = held;
        tokio::time::sleep(Duration::from_secs(13)).await;
        sqlx::query("ROLLBACK").execute(&mut held).await.unwrap();
    });
    // Server::start waits 30 s for /readyz: the old start gave up at 10 s.
    let second = Server::start(dir.path(), &renamed, &[]);
    let readyz = second.readyz();
    assert_eq!(readyz["loaded_from"], "database", "{readyz}");
    runtime.block_on(release).unwrap();
    assert_eq!(second.stop(), 0);
}
