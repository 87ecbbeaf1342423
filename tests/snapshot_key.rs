//! A node started from its snapshot while its database is unreachable
//! cannot ask the database whether its key is the one the secrets are
//! sealed with. With another key it used to report ready and answer every
//! phone with a password 500; it now checks the key against the
//! snapshot's sealed values and refuses to start.

mod common;

use std::time::{Duration, Instant};

use common::*;
use dialtone_sync::{snapshot, LoadedFrom, Mirror};

/// The demo's snapshot, as a node on a PostgreSQL database at `url` would
/// have left it in `dir` (`./dialtone.snapshot`): made by a SQLite node,
/// whose snapshot is at the same path, and given `url`'s source.
fn demo_snapshot_for(dir: &std::path::Path, url: &str) {
    let first = Server::start(dir, &sqlite_url(dir), &["--demo"]);
    assert_eq!(first.stop(), 0);
    let path = dir.join("dialtone.snapshot");
    let (header, data) = snapshot::read(&path).unwrap().expect("a snapshot");
    let mirror = Mirror::new();
    mirror.reset(data, header.cursor, header.meta, LoadedFrom::Database);
    snapshot::write(&mirror, &path, &snapshot::source_id(url)).unwrap();
}

#[test]
fn a_start_from_the_snapshot_without_the_database_refuses_another_key() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens there: the database is unreachable.
    let url = format!("postgres://dialtone@{}/dialtone", free_addr());
    demo_snapshot_for(dir.path(), &url);

    let other_key = "ab".repeat(32);
    let refused = Server::spawn(
        dir.path(),
        &url,
        &[],
        &[("DIALTONE_SECRETS__KEY", &other_key)],
    );
    let (code, log) = exit_of_failed_start(refused);
    assert_eq!(code, 1, "{log}");
    let last = log.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("dialtone: ")
            && last.contains("not the key this database's secrets are sealed with")
            && last.contains("unreachable"),
        "{log}"
    );
    assert!(!log.contains("dialtone ready"), "{log}");
    assert!(!log.contains(&other_key), "{log}");

    // Its own key serves the snapshot, and the phone's password opens.
    let served = Server::start(dir.path(), &url, &[]);
    assert_eq!(served.readyz()["loaded_from"], "snapshot");
    assert_eq!(
        http_get(served.prov_addr, "/0015654aa937.cfg").map(|(s, _)| s),
        Some(200)
    );
    assert_eq!(served.stop(), 0);
}

/// The exit code of a start meant to fail, and its stderr; a start that
/// serves instead fails the test.
fn exit_of_failed_start(server: Server) -> (i32, String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if server
            .try_get("/readyz")
            .is_some_and(|(status, _)| status == 200)
        {
            panic!("serving with another key: {}", server.stderr());
        }
        if server.stderr().lines().any(|l| l.starts_with("dialtone: ")) {
            let log = server.stderr();
            return (server.wait_exit(), log);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the start neither failed nor served: {}", server.stderr());
}
