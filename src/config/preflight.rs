//! Checks of the files a configuration names, for `check-config`: what
//! `serve` would refuse at start (a database URL its store cannot read, a
//! TLS pair that does not load, a key file that does not parse, a static
//! folder or log file it cannot use), and a snapshot folder it would
//! start without but cannot write, found without starting it and leaving
//! nothing behind.

use std::io::ErrorKind;
use std::path::Path;

use super::Config;

/// Where systemd puts a service's credentials (`LoadCredential=`).
const SYSTEMD_CREDENTIALS: &str = "/run/credentials/";

impl Config {
    /// Every problem found, each naming its key; empty when `serve` would
    /// meet none of them.
    pub fn preflight(&self) -> Vec<String> {
        let p = &self.provisioning;
        let mut problems = Vec::new();
        // Read as the store reads it at the start, connecting to nothing.
        if let Err(e) = dialtone_sync::store::parse_url(&self.database.url) {
            problems.push(format!(
                "database.url {}: {e}",
                dialtone_sync::store::masked_url(&self.database.url)
            ));
        }
        // Only a listener reads the pair; without one `validate` warns.
        if let (Some(_), Some(cert), Some(key)) = (p.https_listen, &p.tls_cert, &p.tls_key) {
            // A credential systemd copies at the service's start is not
            // there while it is stopped, when `check-config` is run.
            let later = |path: &Path| path.starts_with(SYSTEMD_CREDENTIALS) && !path.exists();
            let checked = if later(cert) {
                Ok(None)
            } else if later(key) {
                // The certificate's dates alone, which a packaged node
                // (its key a credential) would otherwise first show when
                // serving them; the pair, unreadable files included, is
                // left to the start as before.
                Ok(crate::http_server::TlsFiles::file_dates(cert).unwrap_or(None))
            } else {
                crate::http_server::tls_acceptor(cert, key).map(|(_, files)| files.dates())
            };
            let now = dialtone_sync::now_millis() / 1000;
            match checked {
                Err(e) => problems.push(format!(
                    "cannot use the TLS certificate {} with key {} (provisioning.tls_cert/tls_key): {e}",
                    cert.display(),
                    key.display()
                )),
                // `serve` starts with it, having nothing else to serve;
                // an error here, as a snapshot folder it cannot write is,
                // since every phone that checks dates refuses it.
                Ok(Some(dates)) => match dates.problem(now) {
                    Some(problem) => problems.push(format!(
                        "the TLS certificate {} (provisioning.tls_cert) {problem}: phones that check dates refuse it",
                        cert.display()
                    )),
                    // Not an error yet: a warning, as `serve` logs it, so
                    // a renewal that stopped shows before phones refuse.
                    None if dates.days_left(now) < crate::http_server::EXPIRY_WARNING_DAYS => {
                        tracing::warn!(
                            cert = %cert.display(),
                            days = dates.days_left(now),
                            "the TLS certificate (provisioning.tls_cert) expires soon: renew it"
                        )
                    }
                    None => {}
                },
                Ok(None) => {}
            }
        }
        if self.secrets.key.is_none() {
            if let Some(path) = self.key_file() {
                problems.extend(key_file_problem(&path));
            }
        }
        if let Some(dir) = &p.static_dir {
            if let Err(e) = std::fs::read_dir(dir) {
                problems.push(format!(
                    "provisioning.static_dir {}: {}",
                    dir.display(),
                    folder_error(&e)
                ));
            }
        }
        if let Some(path) = &self.log.file {
            problems.extend(log_file_problem(path));
        }
        // `serve` starts with a set that does not read whole (degraded,
        // serving what it could read), so that an upgrade never keeps a
        // node down; here it is a problem, named before phones meet it.
        if p.templates_dir.is_some() {
            if let Err(e) = dialtone_tftp::Shipped::from_source(&p.shipped_source(), 1) {
                problems.push(format!("provisioning.templates_dir: {e}"));
            }
        }
        problems.extend(snapshot_folder_preflight(self));
        problems
    }
}

/// Whether the snapshot can be written where `mirror.snapshot_path` puts
/// it: its folder there and writable. `serve` starts without it (a
/// warning, and a background failure counted), since phones are served
/// from the database; but the snapshot is what a start serves while the
/// database is away, and a folder that was not there showed only at the
/// first periodic write or at the shutdown.
pub(crate) fn snapshot_folder_problem(config: &Config) -> Option<String> {
    let path = config.snapshot_path();
    // A folder there (`/var/lib/dialtone`) passes the probe of its parent,
    // and then every write fails renaming onto it.
    if std::fs::metadata(&path).is_ok_and(|m| !m.is_file()) {
        return Some(format!(
            "mirror.snapshot_path {} is not a file: it names the snapshot file itself \
             (as /var/lib/dialtone/dialtone.snapshot), not its folder",
            path.display()
        ));
    }
    folder_unwritable(parent_folder(&path)).map(|why| {
        format!(
            "cannot write the snapshot {} (mirror.snapshot_path): {why}",
            path.display()
        )
    })
}

/// [`snapshot_folder_problem`] before a start. Not for a relative path,
/// which is `serve`'s working directory's (the unit's) and not that of
/// whoever runs `check-config`; nor for the state folder not made yet,
/// the database's or the key file's, or one under the folders systemd
/// makes at the first start (`StateDirectory=`: the package sets
/// `/var/lib/dialtone/dialtone.snapshot` with PostgreSQL too), as the key
/// file's own check allows.
fn snapshot_folder_preflight(config: &Config) -> Option<String> {
    let path = config.snapshot_path();
    let folder = parent_folder(&path);
    if path.is_relative() {
        return None;
    }
    let state_folders = [config.sqlite_path(), config.key_file()];
    let made_at_start = state_folders
        .iter()
        .flatten()
        .any(|p| parent_folder(p) == folder)
        || MADE_AT_START.iter().any(|root| folder.starts_with(root));
    if made_at_start && !folder.exists() {
        return None;
    }
    snapshot_folder_problem(config)
}

/// Why no file can be made in `folder`: a probe file is made there and
/// removed, as the snapshot's writer makes its temporary file. Its name
/// is random and made exclusively (`create_new`), so it can be no other
/// file, another node's probe in a shared folder included.
fn folder_unwritable(folder: &Path) -> Option<String> {
    let probe = folder.join(format!(
        ".dialtone-probe.{}.{:016x}",
        std::process::id(),
        rand::random::<u64>()
    ));
    let made = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .and_then(|file| {
            drop(file);
            std::fs::remove_file(&probe)
        });
    let e = made.err()?;
    Some(match e.kind() {
        ErrorKind::NotFound | ErrorKind::NotADirectory => {
            format!("{}: {}", folder.display(), folder_error(&e))
        }
        _ => format!("cannot write in {}: {e}", folder.display()),
    })
}

/// Folders systemd makes for a unit at its start (`StateDirectory=`,
/// `RuntimeDirectory=`, `CacheDirectory=`, credentials): one missing when
/// `check-config` runs, on installing, is there when `serve` needs it.
const MADE_AT_START: &[&str] = &["/var/lib/", "/run/", "/var/cache/"];

/// The key file as `serve` reads it. A missing one is no problem: `serve`
/// creates it. Its folder too may not be there yet where systemd makes it
/// at the first start (the package's `/var/lib/dialtone`, after the
/// `check-config` an operator runs on installing); anywhere else a missing
/// folder stops `serve`, so it is named. The sync crate's loader would
/// create the file here, so the text goes to the parser it uses.
fn key_file_problem(path: &Path) -> Option<String> {
    let named = |why: String| Some(format!("secret key file {}: {why}", path.display()));
    match std::fs::read_to_string(path) {
        Ok(text) => dialtone_sync::SecretKey::parse(&text)
            .err()
            .and_then(|e| named(e.to_string())),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            let folder = parent_folder(path);
            let made_at_start = MADE_AT_START.iter().any(|root| folder.starts_with(root));
            if folder.exists() || made_at_start {
                return None;
            }
            named(format!(
                "the folder {} does not exist, so no key can be read or made there",
                folder.display()
            ))
        }
        Err(e) if e.kind() == ErrorKind::InvalidData => {
            named("not text; expected 32 bytes as 64 hex digits or base64".into())
        }
        Err(e) if path.is_dir() => named(format!("a folder, not a file ({e})")),
        Err(e) => named(e.to_string()),
    }
}

/// Whether `serve` could open the log file for appending. An existing one
/// is opened as `serve` opens it, without creating anything; for a missing
/// one an unnamed file is made and dropped in its folder, which leaves
/// nothing behind: an empty log made by `check-config`, often run as
/// root, could be one the service's user cannot open.
fn log_file_problem(path: &Path) -> Option<String> {
    let opened = match std::fs::OpenOptions::new().append(true).open(path) {
        Err(e) if e.kind() == ErrorKind::NotFound => {
            // A folder not there yet may be made by systemd at the start
            // (`LogsDirectory=`), as the key file's may.
            if !parent_folder(path).exists() {
                return None;
            }
            tempfile::tempfile_in(parent_folder(path)).map(drop)
        }
        opened => opened.map(drop),
    };
    opened.err().map(|e| {
        format!(
            "cannot open the log file {} (log.file): {e}",
            path.display()
        )
    })
}

fn parent_folder(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

fn folder_error(e: &std::io::Error) -> String {
    match e.kind() {
        ErrorKind::NotFound => "no such folder".into(),
        ErrorKind::NotADirectory => "not a folder".into(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
#[path = "preflight_tests.rs"]
mod tests;
