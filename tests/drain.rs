//! What a draining node's listeners still answer is recorded: requests
//! whose headers were still arriving at SIGTERM are served during the
//! drain, and their provisioning history row and unclaimed-device
//! sighting are in the database once the process has exited. In a rolling
//! restart that is every node's last seconds of history.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::*;
use dialtone_sync::store::UNASSIGNED;
use dialtone_sync::{Mac, SecretKey};

/// A connection that has sent all of a GET but the blank line ending it.
fn started_request(server: SocketAddr, path: &str, user_agent: &str) -> TcpStream {
    let mut stream = TcpStream::connect_timeout(&server, Duration::from_secs(5)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let head = format!("GET {path} HTTP/1.1\r\nHost: {server}\r\nUser-Agent: {user_agent}\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    stream
}

/// Ends the request; the status of its answer, 0 when there is none.
fn finish(mut stream: TcpStream) -> u16 {
    stream.write_all(b"\r\n").unwrap();
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    String::from_utf8_lossy(&raw)
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_is_served_while_draining_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let server = Server::start_with_env(
        dir.path(),
        &url,
        &["--demo"],
        &[("DIALTONE_PROVISIONING__RECORD_UNCLAIMED_ANYWHERE", "true")],
    );
    let known = started_request(
        server.prov_addr,
        "/0015654aa937.cfg",
        "Yealink SIP-T46S 66.86.0.15 00:15:65:4a:a9:37",
    );
    let unknown = started_request(
        server.prov_addr,
        "/001565a0d0a1.cfg",
        "Yealink SIP-T46U 108.86.0.20 00:15:65:a0:d0:a1",
    );
    // The server reads what has arrived of each request first: a
    // connection that has read nothing is simply closed by the drain
    // (hyper's rule), which is not what this test is about. Nothing shows
    // that read from outside, so the wait is generous for a loaded CI
    // machine (it is a wait, not a timed assertion).
    tokio::time::sleep(Duration::from_millis(1_500)).await;

    server.signal("TERM");
    // Draining once the provisioning listener refuses new connections:
    // the shutdown token is cancelled (before the fix, the writers had
    // stopped on it), while the two requests above are still open.
    let refused = wait_until(Duration::from_secs(10), || {
        TcpStream::connect_timeout(&server.prov_addr, Duration::from_secs(1)).is_err()
    });
    assert!(refused.is_some(), "the listener never closed");

    let statuses = tokio::task::spawn_blocking(move || (finish(known), finish(unknown)))
        .await
        .unwrap();
    assert_eq!(statuses, (200, 404), "both answered during the drain");
    assert_eq!(server.wait_exit(), 0, "exit 0 after the drain");

    let key = SecretKey::parse(TEST_KEY).unwrap();
    let store = dialtone_sync::open(&url, key, &Default::default())
        .await
        .unwrap();
    let mac: Mac = "0015654aa937".parse().unwrap();
    let fetches = store.recent_boots(&mac, None, 10).await.unwrap();
    assert!(
        fetches
            .iter()
            .any(|f| f.protocol == "http" && f.file == "0015654aa937.cfg"),
        "the fetch served while draining is in the history: {fetches:?}"
    );
    let unassigned = store.unclaimed_devices(UNASSIGNED, 10).await.unwrap();
    assert!(
        unassigned.iter().any(|d| d.mac == "001565a0d0a1"),
        "the unknown phone seen while draining is listed: {unassigned:?}"
    );
    store.close().await;
}
