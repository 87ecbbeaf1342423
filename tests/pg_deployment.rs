//! `serve` against PostgreSQL as deployed: a server out of connection
//! slots for the node's role is an outage a node with a snapshot serves
//! through, as it does a server that refuses the connection; a role whose
//! transactions are read-only is named at the start; a standby is served
//! through as an outage by a node with a snapshot.

mod common;

use std::time::Duration;

use common::*;
use dialtone_sync::testing::{PrivatePostgres, TestDb};
use sqlx::Connection;

async fn execute(url: &str, statements: &[&str]) {
    let mut c = sqlx::PgConnection::connect(url).await.unwrap();
    for statement in statements {
        sqlx::query(statement).execute(&mut c).await.unwrap();
    }
    c.close().await.unwrap();
}

/// The server's data directory, where `standby.signal` makes it a standby.
async fn data_directory(url: &str) -> String {
    let mut c = sqlx::PgConnection::connect(url).await.unwrap();
    let data = sqlx::query_scalar("SHOW data_directory")
        .fetch_one(&mut c)
        .await
        .unwrap();
    c.close().await.unwrap();
    data
}

/// "too many connections for role" is SQLSTATE 53300, as "remaining
/// connection slots are reserved": a start with a snapshot exited 1 on it.
#[test]
fn a_start_with_a_snapshot_serves_it_while_the_role_has_no_connection_slot() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let db = runtime.block_on(TestDb::postgres());
    let name = db.url.rsplit_once('/').unwrap().1.to_string();
    // A role of its own: a superuser is held to no connection limit.
    let role = format!("{name}_node");
    let _dropped = DroppedAtEnd {
        database: name.clone(),
        role: role.clone(),
    };
    runtime.block_on(execute(
        &db.url,
        &[
            &format!("CREATE ROLE {role} LOGIN"),
            &format!("ALTER DATABASE {name} OWNER TO {role}"),
        ],
    ));
    let url = db.url.replacen("://dialtone@", &format!("://{role}@"), 1);
    assert_ne!(url, db.url);
    let dir = tempfile::tempdir().unwrap();
    let first = Server::start(dir.path(), &url, &["--demo"]);
    assert_eq!(first.stop(), 0);

    runtime.block_on(execute(
        &db.url,
        &[&format!("ALTER ROLE {role} CONNECTION LIMIT 0")],
    ));
    let second = Server::start(dir.path(), &url, &[]);
    let readyz = second.readyz();
    assert_eq!(readyz["loaded_from"], "snapshot", "{readyz}");
    assert_eq!(
        http_get(second.prov_addr, "/0015654aa937.cfg").map(|(s, _)| s),
        Some(200)
    );
    assert!(
        second.stderr().contains("too many connections"),
        "{}",
        second.stderr()
    );

    runtime.block_on(execute(
        &db.url,
        &[&format!("ALTER ROLE {role} CONNECTION LIMIT -1")],
    ));
    let caught_up = wait_until(Duration::from_secs(60), || {
        second.readyz()["stale_since"].is_null()
    });
    let readyz = second.readyz();
    assert!(
        caught_up.is_some(),
        "still stale with slots again: {readyz}"
    );
    assert_eq!(readyz["status"], "ready", "{readyz}");
    assert_eq!(second.stop(), 0);
}

/// A role is the whole server's: dropped, with the database it owns, when
/// the test ends, passed or not.
struct DroppedAtEnd {
    database: String,
    role: String,
}

impl Drop for DroppedAtEnd {
    fn drop(&mut self) {
        let statements = [
            format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.database),
            format!("DROP ROLE IF EXISTS {}", self.role),
        ];
        // Its own thread: the test's runtime may be the one unwinding.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let server = dialtone_sync::testing::pg_server_url();
                let mut c = sqlx::PgConnection::connect(&server).await.ok()?;
                for statement in &statements {
                    let _ = sqlx::query(statement).execute(&mut c).await;
                }
                c.close().await.ok()
            })
        })
        .join();
    }
}

/// Every write of such a node fails, each with PostgreSQL's own
/// "cannot execute ... in a read-only transaction": the start says why.
#[test]
fn a_start_warns_of_read_only_transactions() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let db = runtime.block_on(TestDb::postgres());
    let name = db.url.rsplit_once('/').unwrap().1.to_string();
    let dir = tempfile::tempdir().unwrap();
    let first = Server::start(dir.path(), &db.url, &[]);
    assert!(!first.stderr().contains("read-only"), "{}", first.stderr());
    assert_eq!(first.stop(), 0);

    runtime.block_on(execute(
        &db.url,
        &[&format!(
            "ALTER DATABASE {name} SET default_transaction_read_only = on"
        )],
    ));
    let second = Server::start_with_env(
        dir.path(),
        &db.url,
        &[],
        &[("DIALTONE_DATABASE__AUTO_MIGRATE", "false")],
    );
    let log = second.stderr();
    assert!(
        log.contains("WARN") && log.contains("read-only") && log.contains("every write"),
        "{log}"
    );
    assert_eq!(second.stop(), 0);
}

/// A node serving its snapshot through an outage met the database back as
/// a standby (a failover half done) and exited 1, and its restart was
/// refused: it serves on, says so once, and takes the database as soon as
/// it is promoted.
#[test]
fn a_node_with_a_snapshot_serves_it_while_the_database_is_a_standby() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let pg = PrivatePostgres::start();
    let url = pg.url();
    let dir = tempfile::tempdir().unwrap();
    let first = Server::start(dir.path(), &url, &["--demo"]);
    assert_eq!(first.stop(), 0);
    let data = runtime.block_on(data_directory(&url));
    let config_served = |server: &Server| {
        http_get(server.prov_addr, "/0015654aa937.cfg").map(|(status, _)| status) == Some(200)
    };
    // In rotation (200) and degraded, naming why admin writes are refused.
    let standby_named = |server: &Server| {
        let ready = server.readyz();
        let named = ready["degraded_tasks"]
            .as_array()
            .is_some_and(|tasks| tasks.iter().any(|t| t == "database-standby"));
        named && ready["status"] == "degraded" && ready["ready"] == true
    };

    pg.stop_server();
    let outage = Server::start(dir.path(), &url, &[]);
    assert_eq!(outage.readyz()["loaded_from"], "snapshot");
    std::fs::write(std::path::Path::new(&data).join("standby.signal"), "").unwrap();
    pg.start_server();
    let told = wait_until(Duration::from_secs(30), || {
        outage.stderr().contains("answers as a standby")
    });
    assert!(told.is_some(), "{}", outage.stderr());
    assert!(standby_named(&outage), "{}", outage.readyz());
    // Past another try or two of the check (5 s apart at most).
    std::thread::sleep(Duration::from_secs(7));
    assert!(config_served(&outage), "{}", outage.stderr());
    assert!(standby_named(&outage), "{}", outage.readyz());
    let log = outage.stderr();
    assert_eq!(log.matches("answers as a standby").count(), 1, "{log}");
    assert_eq!(outage.stop(), 0);

    let restarted = Server::start(dir.path(), &url, &[]);
    assert_eq!(restarted.readyz()["loaded_from"], "snapshot");
    assert!(config_served(&restarted), "{}", restarted.stderr());
    // Said at start, or by the recheck moments later.
    let said = wait_until(Duration::from_secs(30), || {
        let log = restarted.stderr();
        log.contains("is a standby in recovery") || log.contains("answers as a standby")
    });
    assert!(said.is_some(), "{}", restarted.stderr());
    let named = wait_until(Duration::from_secs(30), || standby_named(&restarted));
    assert!(named.is_some(), "{}", restarted.readyz());
    // With no snapshot there is nothing to serve: refused, as before.
    let empty = tempfile::tempdir().unwrap();
    let cold = Server::spawn(empty.path(), &url, &[], &[]);
    let refused = wait_until(Duration::from_secs(60), || {
        cold.stderr().contains("point nodes at the primary")
    });
    assert!(refused.is_some(), "{}", cold.stderr());
    assert_eq!(cold.wait_exit(), 1);

    runtime.block_on(execute(&url, &["SELECT pg_promote()"]));
    let checked = wait_until(Duration::from_secs(60), || {
        restarted
            .stderr()
            .contains("its schema and this node's key are checked")
    });
    assert!(checked.is_some(), "{}", restarted.stderr());
    assert!(config_served(&restarted), "{}", restarted.stderr());
    assert!(!standby_named(&restarted), "{}", restarted.readyz());
    assert_eq!(restarted.stop(), 0);
}

/// A node already checked whose database turned standby under it (the
/// primary demoted, a failover half done) said nothing until an admin
/// write was refused: `/readyz` names the standby while it lasts, a write
/// says why it fails, and both pass once the database is promoted.
#[test]
fn a_node_whose_database_turns_standby_under_it_names_it() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let pg = PrivatePostgres::start();
    let url = pg.url();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &url, &["--demo"]);
    let token = create_token(
        dir.path(),
        &url,
        &["--scope", "global-admin", "--name", "standby"],
    );
    let api = Api::new(server.addr, token);
    let data = runtime.block_on(data_directory(&url));
    let standby_named = |server: &Server| {
        let ready = server.readyz();
        ready["degraded_tasks"]
            .as_array()
            .is_some_and(|tasks| tasks.iter().any(|t| t == "database-standby"))
            && ready["ready"] == true
    };
    let add_tenant = |slug: &str| {
        runtime.block_on(api.send_past_busy(
            reqwest::Method::POST,
            "/v1/tenants",
            Some(serde_json::json!({ "slug": slug, "name": slug })),
            None,
        ))
    };
    // The token reaches the node through the change log.
    let known = wait_until(Duration::from_secs(30), || {
        runtime
            .block_on(api.send(reqwest::Method::GET, "/v1/tenants", None, None))
            .0
            == 200
    });
    assert!(known.is_some());
    assert!(!standby_named(&server), "{}", server.readyz());

    pg.stop_server();
    std::fs::write(std::path::Path::new(&data).join("standby.signal"), "").unwrap();
    pg.start_server();
    let named = wait_until(Duration::from_secs(60), || standby_named(&server));
    assert!(named.is_some(), "{}\n{}", server.readyz(), server.stderr());
    assert!(
        http_get(server.prov_addr, "/0015654aa937.cfg").map(|(s, _)| s) == Some(200),
        "{}",
        server.stderr()
    );
    let (status, _, answer) = add_tenant("during");
    assert_eq!(status, 503, "{answer}");
    assert!(
        answer.to_string().contains("takes no writes now"),
        "{answer}"
    );
    // Said once, however many times the listener was refused.
    std::thread::sleep(Duration::from_secs(3));
    let log = server.stderr();
    assert_eq!(log.matches("answers as a standby").count(), 1, "{log}");
    assert!(standby_named(&server), "{}", server.readyz());

    runtime.block_on(execute(&url, &["SELECT pg_promote()"]));
    let gone = wait_until(Duration::from_secs(60), || !standby_named(&server));
    assert!(gone.is_some(), "{}\n{}", server.readyz(), server.stderr());
    assert!(server.stderr().contains("no longer a standby"));
    let (status, _, answer) = add_tenant("after");
    assert_eq!(status, 201, "{answer}");
    assert_eq!(server.stop(), 0);
}
