//! A SQLite file that does not open for a cause outside its data (a full
//! disk, a read-only mount) is an outage, as an unreachable PostgreSQL
//! server is: a node with a snapshot serves phones from it, refuses admin
//! writes with 503, and takes the file up once it opens. It used to exit
//! 1 and leave the phones without a server. A file that was never a
//! database still stops the start.
//!
//! The tests run as root, where no permission makes a file unopenable,
//! and cannot mount; a folder where SQLite makes its write-ahead log
//! (`<database>-wal`) fails the open with SQLITE_CANTOPEN, the error a
//! mount gone read-only gives.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use reqwest::Method;
use serde_json::json;

/// A node that ran on `dir`'s SQLite database with the demo tenant and a
/// global-admin token, and wrote its snapshot at its stop; the token.
fn a_node_that_ran(dir: &Path, url: &str) -> String {
    let first = Server::start(dir, url, &["--demo"]);
    let token = create_token(dir, url, &["--scope", "global-admin", "--name", "ops"]);
    // In the snapshot, so the node started from it knows the token.
    let seen = wait_until(Duration::from_secs(10), || {
        first.readyz()["counts"]["api_tokens"].as_u64() == Some(1)
    });
    assert!(seen.is_some(), "{}", first.stderr());
    assert_eq!(first.stop(), 0);
    assert!(dir.join("dialtone.snapshot").exists());
    token
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_file_that_does_not_open_is_served_from_the_snapshot_until_it_does() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let token = a_node_that_ran(dir.path(), &url);
    let wal = dir.path().join("dialtone.db-wal");
    std::fs::create_dir(&wal).expect("no write-ahead log is left after a clean stop");

    // The trigger is the error an outage is told by: the file does not
    // open, for any command.
    let mut migrate = dialtone(dir.path(), &url);
    migrate.arg("migrate");
    let refused = run(migrate);
    let err = text(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{err}");
    assert!(
        err.contains("(code: 14) unable to open database file"),
        "{err}"
    );

    let served = Server::start(dir.path(), &url, &[]);
    assert_eq!(served.readyz()["loaded_from"], "snapshot");
    assert_eq!(
        http_get(served.prov_addr, "/0015654aa937.cfg").map(|(s, _)| s),
        Some(200)
    );
    let log = served.stderr();
    assert!(
        log.lines().any(|l| l.contains("ERROR")
            && l.contains("cannot be used")
            && l.contains("serving from the snapshot")
            && l.contains("unable to open database file")),
        "{log}"
    );
    let api = Api::new(served.addr, token);
    let tenant = json!({ "slug": "globex", "name": "Globex" });
    let (status, _, body) = api
        .send(Method::POST, "/v1/tenants", Some(tenant.clone()), None)
        .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "unavailable", "{body}");

    // The file opens again: the node takes it up without a restart, its
    // schema and key checked, and writes go through.
    std::fs::remove_dir(&wal).unwrap();
    let taken_up = wait_until(Duration::from_secs(20), || {
        served.stderr().contains("the database answers again")
    });
    assert!(taken_up.is_some(), "{}", served.stderr());
    let (status, _, body) = api
        .send(Method::POST, "/v1/tenants", Some(tenant), None)
        .await;
    assert_eq!(status, 201, "{body}");
    let mirrored = wait_until(Duration::from_secs(10), || {
        served.readyz()["counts"]["tenants"].as_u64() == Some(2)
    });
    assert!(mirrored.is_some(), "{}", served.stderr());
    assert_eq!(served.stop(), 0);
}

/// Not an outage: a path that holds something other than a database
/// needs its operator, snapshot or not.
#[test]
fn a_file_that_is_no_database_still_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    a_node_that_ran(dir.path(), &url);
    let database = dir.path().join("dialtone.db");
    std::fs::write(&database, "not a database, ".repeat(256)).unwrap();

    let mut cmd = dialtone(dir.path(), &url);
    cmd.arg("serve")
        .args(["--listen", &free_addr().to_string()])
        .args(["--provisioning-listen", &free_addr().to_string()])
        .args(["--tftp-listen", &free_udp_addr().to_string()])
        .env("DIALTONE_PROVISIONING__TEMPLATES_DIR", templates_dir());
    let out = run_start_meant_to_fail(cmd);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("dialtone: cannot open database") && last.contains("not a database"),
        "{err}"
    );
    assert!(!err.contains("dialtone ready"), "{err}");
}
