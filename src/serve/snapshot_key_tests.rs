//! A start from the snapshot with the database unreachable checks the key
//! against the snapshot's sealed values before anything serves.

use std::path::Path;
use std::sync::Arc;

use dialtone_sync::{snapshot, watcher, LoadedFrom, Mirror};

use super::startup::{load_mirror, open_store, Checked};
use super::test_support::{start_on_empty_sqlite, Started};
use crate::config::Config;

/// `start_on_empty_sqlite`'s key, which the demo's line passwords are
/// sealed with.
const SEALING_KEY: &str = "1111111111111111111111111111111111111111111111111111111111111111";

/// A node's config for a PostgreSQL database nothing listens for, with
/// the snapshot a node with the demo tenant left in `dir` for it.
async fn snapshot_of_an_unreachable_database(dir: &Path) -> Config {
    let mut config = Config::default();
    let Started { store, mirror, key } = start_on_empty_sqlite(&mut config, dir).await;
    crate::demo::seed_over(&*store, &key, &mirror.load())
        .await
        .unwrap();
    watcher::catch_up(&mirror, &*store).await.unwrap();
    store.close().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    config.database.url = format!("postgres://dialtone@{closed}/dialtone");
    config.database.acquire_timeout_ms = 500;
    config.mirror.snapshot_path = Some(dir.join("dialtone.snapshot"));
    let source = snapshot::source_id(&config.database.url);
    snapshot::write(&mirror, &config.snapshot_path(), &source).unwrap();
    config
}

async fn start(config: &Config, key: &str) -> (anyhow::Result<Checked>, Arc<Mirror>) {
    let mut config = config.clone();
    config.secrets.key = Some(key.into());
    let (store, key) = open_store(&config).await.unwrap();
    let mirror = Arc::new(Mirror::new());
    let loaded = load_mirror(&config, &store, &key, &mirror, false).await;
    (loaded, mirror)
}

/// With another key the node would say it is ready and answer every phone
/// that has a password with a 500; it refuses to start instead, in the
/// words the database's own check uses.
#[tokio::test]
async fn a_start_from_the_snapshot_without_the_database_refuses_another_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = snapshot_of_an_unreachable_database(dir.path()).await;

    let (loaded, _) = start(&config, &"ab".repeat(32)).await;
    let refused = format!("{:#}", loaded.expect_err("another key is refused"));
    assert!(
        refused.contains("not the key this database's secrets are sealed with")
            && refused.contains("dialtone.snapshot")
            && refused.contains("unreachable"),
        "{refused}"
    );
    assert!(!refused.contains(&"ab".repeat(32)), "{refused}");

    let (loaded, mirror) = start(&config, SEALING_KEY).await;
    assert!(
        matches!(loaded, Ok(Checked::Deferred(_))),
        "the sealing key serves the snapshot: {loaded:?}"
    );
    assert_eq!(mirror.health().loaded_from, Some(LoadedFrom::Snapshot));
    assert!(mirror.load().tenant_by_slug(crate::demo::TENANT).is_some());
}
