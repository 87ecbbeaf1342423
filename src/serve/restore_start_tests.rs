//! A node started while a `pg_restore` has copied its rows but not yet
//! made the change-log triggers and keys (its post-data section) serves
//! its snapshot, as with the database unreachable, and says why; without
//! a snapshot the start fails, naming what is missing. Before, it loaded
//! the half-restored tables and wrote them into its snapshot.

use std::sync::Arc;

use dialtone_sync::testing::build::{audit, phone, tenant};
use dialtone_sync::testing::TestDb;
use dialtone_sync::{snapshot, watcher, LoadedFrom, Mirror};

use super::startup::{load_mirror, open_store, Checked};
use crate::config::Config;

async fn start(config: &Config) -> (anyhow::Result<Checked>, Arc<Mirror>) {
    let (store, key) = open_store(config).await.unwrap();
    let mirror = Arc::new(Mirror::new());
    let loaded = load_mirror(config, &store, &key, &mirror, false).await;
    store.close().await;
    (loaded, mirror)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_during_a_restore_serves_the_snapshot() {
    let db = TestDb::postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.database.url = db.url.clone();
    config.secrets.key = Some("5a".repeat(32));
    config.mirror.snapshot_path = Some(dir.path().join("dialtone.snapshot"));
    let store = db.store().await;
    store
        .apply(
            &[tenant("acme", "US"), phone("acme", 0xa01, 1)],
            &audit("setup"),
        )
        .await
        .unwrap();
    let mirror = Mirror::new();
    watcher::full_load(&mirror, &*store).await.unwrap();
    let source = snapshot::source_id(&config.database.url);
    snapshot::write(&mirror, &config.snapshot_path(), &source).unwrap();
    let backup = db.pg_dump();
    store.close().await;

    db.recreate().await;
    db.pg_restore(&backup, &["--section=pre-data", "--section=data"]);
    let (loaded, mirror) = start(&config).await;
    assert!(matches!(loaded, Ok(Checked::Yes)), "{loaded:?}");
    let health = mirror.health();
    assert_eq!(health.loaded_from, Some(LoadedFrom::Snapshot));
    assert!(
        health
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("schema is incomplete")),
        "{health:?}"
    );
    assert!(mirror.load().tenant_by_slug("acme").is_some());

    let mut without = config.clone();
    without.mirror.snapshot_path = Some(dir.path().join("none.snapshot"));
    let (loaded, _) = start(&without).await;
    let refused = format!("{:#}", loaded.expect_err("nothing to serve"));
    assert!(
        refused.contains("schema is incomplete") && refused.contains("trigger "),
        "{refused}"
    );

    db.pg_restore(&backup, &["--section=post-data"]);
    let (loaded, mirror) = start(&without).await;
    assert!(matches!(loaded, Ok(Checked::Yes)), "{loaded:?}");
    assert_eq!(mirror.health().loaded_from, Some(LoadedFrom::Database));
    assert!(mirror.load().tenant_by_slug("acme").is_some());
}
