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
    /// (mode 0600), as a start creates a missing key_file; an existing
    /// file is never overwritten.
    #[arg(long, value_name = "PATH")]
    pub new_key_file: PathBuf,
}

pub async fn run(config: &Config, args: &RekeyArgs) -> Result<()> {
    let path = &args.new_key_file;
    let current = current_key(config)?;
    // An existing file is judged before the database is opened; a new one
    // is made once the database has taken the current key, so a refused
    // run leaves no key behind that nothing is sealed with.
    let existing = new_key_in(path)?;
    if let Some(new) = &existing {
        refuse_same_key(&current, new, path)?;
    }
    let (store, _) = crate::serve::open_reached_store(config).await?;
    crate::prepare_schema(config, &*store).await?;
    let new = match existing {
        Some(new) => new,
        None => {
            let created = SecretKey::load_or_create(path).with_context(|| named(path));
            let new = created.map_err(as_usage_if_key)?;
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
    let report = rekeyed.context("re-sealing the stored secrets with the new key")?;
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
