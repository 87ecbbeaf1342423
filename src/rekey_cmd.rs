//! `dialtone rekey --new-key-file PATH`: every stored secret re-sealed
//! with a new key, and the database moved to that key, in one
//! transaction (the store's `rekey`). The key is read only at a start, so
//! the nodes are stopped around it (the command's help says how).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use dialtone_sync::{Audit, SecretKey, SyncError};
use indicatif::ProgressBar;

use crate::config::Config;

#[derive(Args)]
pub struct RekeyArgs {
    /// The new key: a file holding 32 bytes as 64 hex digits or base64,
    /// as secrets.key_file does. Missing, it is created with a fresh key
    /// (mode 0600), and removed again if the run fails; an existing file
    /// is never overwritten, and is refused if users other than its owner
    /// may read or write it.
    #[arg(long, value_name = "PATH")]
    pub new_key_file: PathBuf,
}

pub async fn run(config: &Config, args: &RekeyArgs) -> Result<()> {
    let path = &args.new_key_file;
    let current = current_key(config)?;
    // An existing file is judged before the database is opened; a new one
    // is made once the database has taken the current key, and removed
    // again when the run fails, so a refused run leaves no key behind that
    // nothing is sealed with.
    let existing = new_key_in(path)?;
    if let Some(new) = &existing {
        refuse_same_key(&current, new, path)?;
        refuse_reachable_by_others(path)?;
    }
    let (store, _) = crate::serve::open_reached_store(config).await?;
    crate::prepare_schema(config, &*store).await?;
    let mut made = None;
    let new = match existing {
        Some(new) => new,
        None => {
            let (file, new) = MadeKeyFile::create(path)?;
            made = Some(file);
            refuse_same_key(&current, &new, path)?;
            new
        }
    };
    let audit = Audit {
        tenant: None,
        actor: format!(
            "cli:{}",
            std::env::var("USER").unwrap_or_else(|_| "unknown".into())
        ),
        action: "rekey".into(),
        entity: "secrets_key".into(),
        entity_key: String::new(),
        detail: serde_json::json!({ "new_key_file": path.display().to_string() }),
    };
    let started = Instant::now();
    let spinner = spinner();
    let rekeyed = store.rekey(&new, &audit).await;
    if let Some(spinner) = &spinner {
        spinner.finish_and_clear();
    }
    // After a lost commit answer the database may be on the new key, and
    // the file is then all that opens it.
    if matches!(rekeyed, Ok(_) | Err(SyncError::CommitUnknown(_))) {
        if let Some(made) = made.take() {
            made.keep();
        }
    }
    let report = rekeyed.map_err(|e| failed(e, path))?;
    store.close().await;
    println!(
        "re-sealed {} line passwords, {} phone HTTP passwords, {} source secrets in {:.1} s; \
         the database now takes only the key in {}: install it as secrets.key_file on every node \
         (keep the old key with the backups taken before), then start them",
        report.line_passwords,
        report.phone_http_passwords,
        report.source_secrets,
        started.elapsed().as_secs_f64(),
        path.display()
    );
    Ok(())
}

/// What a failed run says: for the two failures an operator acts on
/// differently, what to do next.
fn failed(e: SyncError, path: &Path) -> anyhow::Error {
    let lock_timed_out = matches!(
        &e,
        SyncError::Database(db) if db.as_database_error().and_then(|db| db.code()).as_deref()
            == Some(LOCK_NOT_AVAILABLE)
    );
    let said = match &e {
        SyncError::CommitUnknown(_) => format!(
            "the database did not confirm the rekey's commit, so it may or may not have moved \
             to the new key; keep both keys. Try the new key: `dialtone --config … export - \
             >/dev/null` with a config naming {} as secrets.key_file. If the database takes it, \
             the rekey was made: install that key on every node. If it is refused as not the \
             key the secrets are sealed with, the old key is still the database's, and rekey \
             can run again",
            path.display()
        ),
        _ if lock_timed_out => "could not lock the tables phones, lines and directory_sources: \
             another transaction kept one of them through every try (a long import, or a session \
             idle in its transaction; pg_stat_activity names it). Nothing was re-sealed and the \
             current key stays; run rekey again when that transaction ends"
            .to_string(),
        _ => "re-sealing the stored secrets with the new key".to_string(),
    };
    anyhow::Error::new(e).context(said)
}

/// SQLSTATE of a lock not granted within `lock_timeout`.
const LOCK_NOT_AVAILABLE: &str = "55P03";

/// A new key file this run made, removed when dropped before
/// [`MadeKeyFile::keep`]: a run that fails leaves no key behind that
/// nothing is sealed with, and an operator who installs it would find it
/// refused.
struct MadeKeyFile(Option<PathBuf>);

impl MadeKeyFile {
    /// The file made at `path` with a fresh key, mode 0600, and synced
    /// (name included) before the database is asked to take the key.
    /// Never over a file: one that appeared since it was looked at is
    /// someone else's, and the run stops.
    fn create(path: &Path) -> Result<(MadeKeyFile, SecretKey)> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let hex = SecretKey::generate_hex();
        let key = SecretKey::parse(&hex).context("a freshly made key")?;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("creating {}", named(path)))?;
        let made = MadeKeyFile(Some(path.to_path_buf()));
        file.write_all(format!("{hex}\n").as_bytes())
            .and_then(|()| file.sync_all())
            .with_context(|| format!("writing {}", named(path)))?;
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        std::fs::File::open(dir)
            .and_then(|dir| dir.sync_all())
            .with_context(|| format!("syncing {}", dir.display()))?;
        Ok((made, key))
    }

    fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for MadeKeyFile {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            if let Err(e) = std::fs::remove_file(&path) {
                eprintln!(
                    "dialtone: {} was made by this run and could not be removed ({e}); \
                     the database does not take its key: delete it",
                    named(&path)
                );
            }
        }
    }
}

/// A key that replaces one which may have leaked must reach nobody else:
/// an existing new key file that other users can read or write is
/// refused (a start only warns of its own key file's mode, so that an
/// upgrade never stops a running installation).
fn refuse_reachable_by_others(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let metadata = std::fs::metadata(path).with_context(|| named(path))?;
    let mode = metadata.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(crate::usage_error(format!(
            "--new-key-file {}: mode {:04o} lets users other than its owner read or write it; \
             run `chmod 600 {}` and run rekey again",
            path.display(),
            mode & 0o7777,
            path.display()
        )));
    }
    Ok(())
}

/// The configured key, read as a start reads it, but never created: a key
/// made now would open none of the database's secrets.
fn current_key(config: &Config) -> Result<SecretKey> {
    if let Some(key) = &config.secrets.key {
        return SecretKey::parse(key).context("secrets.key");
    }
    let path = config
        .key_file()
        .context("secrets.key: no key configured")?;
    SecretKey::load(&path)
        .with_context(|| named(&path))?
        .with_context(|| {
            format!(
                "{}: missing; rekey needs the key the database's secrets are sealed with now",
                named(&path)
            )
        })
}

/// The key in the file at `path`, read with the start's reader (and its
/// messages for an empty or malformed file); `None` when there is no file.
fn new_key_in(path: &Path) -> Result<Option<SecretKey>> {
    SecretKey::load(path)
        .with_context(|| named(path))
        .map_err(as_usage_if_key)
}

fn named(path: &Path) -> String {
    format!("secret key file {}", path.display())
}

/// A new key file that holds no key is the command line's fault (exit 2);
/// one that cannot be read or written is the system's (exit 1).
fn as_usage_if_key(e: anyhow::Error) -> anyhow::Error {
    let malformed = e
        .chain()
        .any(|cause| matches!(cause.downcast_ref::<SyncError>(), Some(SyncError::Key(_))));
    if malformed {
        crate::usage_error(e)
    } else {
        e
    }
}

fn refuse_same_key(current: &SecretKey, new: &SecretKey, path: &Path) -> Result<()> {
    if current.check_value() == new.check_value() {
        return Err(crate::usage_error(format!(
            "--new-key-file {} holds the configured secrets key, the one the database's \
             secrets are sealed with now; name a file with another key, or a path that does \
             not exist to have one made",
            path.display()
        )));
    }
    Ok(())
}

/// Elapsed time on a terminal: the run is one transaction, with nothing
/// to count until it commits.
fn spinner() -> Option<ProgressBar> {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let spinner = ProgressBar::new_spinner();
    spinner.set_message("re-sealing every stored secret; writes to the database wait for it");
    spinner.enable_steady_tick(Duration::from_millis(200));
    Some(spinner)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lost COMMIT answer leaves the database on either key: the
    /// operator is told so, and how to find out which, naming the file.
    #[test]
    fn a_lost_commit_answer_says_to_try_the_new_key() {
        let lost = sqlx::Error::Io(std::io::Error::other("connection reset"));
        let said = format!(
            "{:#}",
            failed(SyncError::CommitUnknown(lost), Path::new("/k/new.key"))
        );
        for part in [
            "may or may not have moved to the new key",
            "keep both keys",
            "export -",
            "naming /k/new.key as secrets.key_file",
            "the old key is still the database's",
        ] {
            assert!(said.contains(part), "{part:?} not in: {said}");
        }
    }

    #[test]
    fn other_failures_say_what_failed() {
        let said = format!(
            "{:#}",
            failed(SyncError::Key("refused".into()), Path::new("k"))
        );
        assert_eq!(
            said,
            "re-sealing the stored secrets with the new key: secret key: refused"
        );
    }
}
