//! Where serve's tests start: the store and mirror `serve` has once its
//! startup is done, over an empty SQLite database.

use std::path::Path;
use std::sync::Arc;

use dialtone_sync::{Mirror, SecretKey, Store};

use crate::config::Config;

pub(super) struct Started {
    pub store: Arc<dyn Store>,
    pub mirror: Arc<Mirror>,
    pub key: SecretKey,
}

/// Points `config` at a new SQLite database in `dir`, migrated and empty,
/// and loads a mirror from it.
pub(super) async fn start_on_empty_sqlite(config: &mut Config, dir: &Path) -> Started {
    config.database.url = format!("sqlite://{}", dir.join("d.db").display());
    let key = SecretKey::parse(&"11".repeat(32)).unwrap();
    let store = dialtone_sync::open(&config.database.url, key.clone(), &Default::default())
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let mirror = Arc::new(Mirror::new());
    dialtone_sync::watcher::full_load(&mirror, &*store)
        .await
        .unwrap();
    Started { store, mirror, key }
}
