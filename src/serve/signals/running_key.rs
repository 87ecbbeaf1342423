//! The secrets key across a SIGHUP: read only at start, so a changed one
//! never applies live, but checked as the next start would check it.

use dialtone_sync::{SecretKey, SyncError};

use crate::config::Config;
use crate::serve::startup::{read_key, KeyFile};

/// How long a SIGHUP waits on the database to say whether a changed key
/// is the one its secrets are sealed with.
const KEY_CHECK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The key `serve` runs with, as SIGHUP knows it. The key is read only at
/// start, so a changed one (`secrets.key`, `secrets.key_file`, or the key
/// file's content) never applies live; but the next start reads it, and is
/// refused when the database's secrets are not sealed with it. A reload
/// that finds such a key fails, as one with an invalid config does, so the
/// refusal is seen before a restart meets it.
pub(in crate::serve) struct RunningKey {
    /// `None` if unknown (no store opened in this process): every key
    /// read is then checked with the database.
    check_value: Option<String>,
    /// The database whose check value a changed key is compared with.
    database_url: String,
    acquire_timeout: std::time::Duration,
}

impl RunningKey {
    pub(in crate::serve) fn new(check_value: Option<String>, started_with: &Config) -> RunningKey {
        RunningKey {
            check_value,
            database_url: started_with.database.url.clone(),
            acquire_timeout: started_with.database.acquire_timeout(),
        }
    }

    /// Whether the key a start with `new` would read is the running one,
    /// or one the database's secrets are sealed with; says why not as an
    /// error, without any of the key. With the database unreachable, only
    /// the running key passes: it is the one this node has checked. A
    /// config naming another database is not judged here: that database
    /// may be a new one with a key of its own (a move to PostgreSQL), and
    /// the start that opens it checks its key.
    pub(super) async fn opens_the_next_start(&self, new: &Config) -> bool {
        if new.database.url != self.database_url {
            return true;
        }
        let refused = |why: String| {
            dialtone_sync::watcher::failed("reload");
            tracing::error!(
                error = %why,
                "SIGHUP: the secrets key the next start would read (secrets.key or secrets.key_file) \
                 would be refused; the running key stays"
            );
            false
        };
        let key = match read_key(new, KeyFile::MustExist) {
            Ok(key) => key,
            Err(e) => return refused(format!("{e:#}")),
        };
        if self.check_value.as_deref() == Some(key.check_value().as_str()) {
            return true;
        }
        match tokio::time::timeout(KEY_CHECK_WAIT, self.database_takes(key)).await {
            Ok(Ok(())) => {
                tracing::warn!(
                    "SIGHUP: the secrets key changed to one this database's secrets are sealed \
                     with; it applies after a restart, the running key stays"
                );
                true
            }
            Ok(Err(refusal @ SyncError::Key(_))) => refused(refusal.to_string()),
            Ok(Err(e)) => refused(format!(
                "it is not the running key, and the database could not check it: {e}"
            )),
            Err(_) => refused(format!(
                "it is not the running key, and the database did not check it within {} s",
                KEY_CHECK_WAIT.as_secs()
            )),
        }
    }

    /// The database's own check of `key`, as a start makes it.
    async fn database_takes(&self, key: SecretKey) -> Result<(), SyncError> {
        let options = dialtone_sync::store::StoreOptions {
            max_connections: 1,
            acquire_timeout: self.acquire_timeout,
            ..Default::default()
        };
        let store = dialtone_sync::open(&self.database_url, key, &options).await?;
        let checked = store.check_schema().await;
        store.close().await;
        checked
    }
}
