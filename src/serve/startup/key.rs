//! The secret key a start reads, or makes on a first start, and the
//! refusal of one made where the database's secrets need another.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use dialtone_sync::{SecretKey, Store, SyncError};

use crate::config::Config;

pub fn load_key(config: &Config) -> Result<SecretKey> {
    key_and_whether_made(config).map(|(key, _)| key)
}

/// The key as a start reads it, and the key file when this call made it.
pub(super) fn key_and_whether_made(
    config: &Config,
) -> Result<(SecretKey, Option<std::path::PathBuf>)> {
    if let Some(key) = &config.secrets.key {
        return Ok((SecretKey::parse(key).context("secrets.key")?, None));
    }
    let path = config
        .key_file()
        .context("secrets.key: no key configured")?;
    let (key, made) =
        SecretKey::load_or_create_reporting(&path).map_err(|e| key_file_error(&path, e))?;
    Ok((key, made.then_some(path)))
}

/// What [`read_key`] does with a key file that does not exist.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(in crate::serve) enum KeyFile {
    /// A start's: makes a new key there.
    CreateIfMissing,
    /// A SIGHUP's look at what the next start would read: a missing file
    /// is an error, since a new key opens no database's secrets.
    MustExist,
}

/// The key `config` names: `secrets.key`, or the key file.
pub(in crate::serve) fn read_key(config: &Config, missing: KeyFile) -> Result<SecretKey> {
    if missing == KeyFile::CreateIfMissing {
        return load_key(config);
    }
    if let Some(key) = &config.secrets.key {
        return SecretKey::parse(key).context("secrets.key");
    }
    let path = config
        .key_file()
        .context("secrets.key: no key configured")?;
    SecretKey::load(&path)
        .map_err(|e| key_file_error(&path, e))?
        .with_context(|| {
            format!(
                "secret key file {}: missing; the next start would create a new key",
                path.display()
            )
        })
}

/// Where systemd puts a unit's credentials (`LoadCredential=`).
const CREDENTIALS: &str = "/run/credentials/";

/// `e`, from reading or making the key file at `path`, named with it. A
/// credential's folder exists only while its unit runs: the package's
/// example key_file is one, and a CLI command (or a `serve` started by
/// hand) run beside a stopped unit meets it missing, where the remedy is
/// the key's own file, not a new key.
fn key_file_error(path: &std::path::Path, e: SyncError) -> anyhow::Error {
    let folder_missing = path.parent().is_some_and(|folder| !folder.exists());
    let named = format!("secret key file {}", path.display());
    // The sync crate names the file too: once is enough.
    let e = match &e {
        SyncError::Key(why) => match why.strip_prefix(&format!("{}: ", path.display())) {
            Some(why) => anyhow::anyhow!("{named}: {why}"),
            None => anyhow::Error::new(e).context(named),
        },
        _ => anyhow::Error::new(e).context(named),
    };
    if folder_missing && path.starts_with(CREDENTIALS) {
        return anyhow::anyhow!(
            "{e:#}; a path under {CREDENTIALS} is a systemd credential, which exists only \
             while its unit runs: a command run outside the unit needs \
             DIALTONE_SECRETS__KEY_FILE set to the key's real file (the one LoadCredential= \
             names, e.g. /etc/dialtone/key)"
        );
    }
    e
}

/// Refuses a key file this start made when the database's secrets are
/// sealed with another key, and removes it: with PostgreSQL (and a copied
/// SQLite database) a missing key_file is no first start, and a new key
/// left there would be taken for the real one later. A database that is
/// new, not migrated yet or not reachable says nothing here; the start's
/// own checks follow.
pub(super) async fn refuse_a_made_key(
    store: &dyn Store,
    made: Option<std::path::PathBuf>,
) -> Result<()> {
    let Some(path) = made else {
        return Ok(());
    };
    let checked = tokio::time::timeout(MADE_KEY_CHECK_WAIT, store.check_schema()).await;
    if let Ok(Err(SyncError::Key(_))) = checked {
        let removed = match std::fs::remove_file(&path) {
            Ok(()) => "removed it again".to_string(),
            Err(e) => format!("could not remove it ({e}); remove it by hand"),
        };
        bail!(
            "secret key file {}: it did not exist, so a new key was made there, but this \
             database's secrets are sealed with another key; {removed}: point \
             secrets.key_file at the database's own key",
            path.display()
        );
    }
    Ok(())
}

/// How long [`refuse_a_made_key`] waits for the database: a start during
/// an outage goes on to its snapshot rather than wait here.
const MADE_KEY_CHECK_WAIT: Duration = Duration::from_secs(5);
