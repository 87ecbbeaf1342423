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
                Ok(crate::http_server::TlsFiles::file_date_problem(cert).unwrap_or(None))
            } else {
                crate::http_server::tls_acceptor(cert, key).map(|(_, files)| files.date_problem())
            };
            match checked {
                Err(e) => problems.push(format!(
                    "cannot use the TLS certificate {} with key {} (provisioning.tls_cert/tls_key): {e}",
                    cert.display(),
                    key.display()
                )),
                // `serve` starts with it, having nothing else to serve;
                // an error here, as a snapshot folder it cannot write is,
                // since every phone that checks dates refuses it.
                Ok(Some(problem)) => problems.push(format!(
                    "the TLS certificate {} (provisioning.tls_cert) {problem}: phones that check dates refuse it",
                    cert.display()
                )),
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
mod tests {
    use super::*;

    /// A default configuration (SQLite in `dir`) with a valid key file.
    fn config_in(dir: &Path) -> Config {
        let mut config = Config::default();
        config.database.url = format!("sqlite://{}", dir.join("d.db").display());
        std::fs::write(dir.join("d.key"), format!("{}\n", "ab".repeat(32))).unwrap();
        config
    }

    fn issue(dir: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
        let issued = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let (cert, key) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&cert, issued.cert.pem()).unwrap();
        std::fs::write(&key, issued.signing_key.serialize_pem()).unwrap();
        (cert, key)
    }

    fn with_tls(mut config: Config, cert: &Path, key: &Path) -> Config {
        config.provisioning.https_listen = Some("127.0.0.1:8443".parse().unwrap());
        config.provisioning.tls_cert = Some(cert.to_path_buf());
        config.provisioning.tls_key = Some(key.to_path_buf());
        config
    }

    #[test]
    fn a_usable_configuration_has_no_problems() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = issue(dir.path(), "a");
        let mut config = with_tls(config_in(dir.path()), &cert, &key);
        config.provisioning.static_dir = Some(dir.path().to_path_buf());
        config.log.file = Some(dir.path().join("logs.log"));
        assert_eq!(config.preflight(), Vec::<String>::new());
        // Nothing was written: no log file, no key file made.
        assert!(!dir.path().join("logs.log").exists());
        std::fs::remove_file(dir.path().join("d.key")).unwrap();
        assert_eq!(config.preflight(), Vec::<String>::new());
        assert!(!dir.path().join("d.key").exists());
    }

    #[test]
    fn a_tls_pair_serve_could_not_load_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = issue(dir.path(), "a");
        let (_, other_key) = issue(dir.path(), "b");
        let encrypted = dir.path().join("encrypted.key");
        std::fs::write(
            &encrypted,
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIBvTBXBgkqhkiG9w0BBQ0wSjApBgkqhkiG9w0BBQwwHAQI\n-----END ENCRYPTED PRIVATE KEY-----\n",
        )
        .unwrap();
        for (cert, key) in [
            (cert.clone(), other_key),
            (dir.path().join("missing.crt"), key.clone()),
            (cert.clone(), cert.clone()),
            (cert.clone(), encrypted),
        ] {
            let problems = with_tls(config_in(dir.path()), &cert, &key).preflight();
            assert_eq!(problems.len(), 1, "{cert:?} {key:?}: {problems:?}");
            assert!(
                problems[0].contains("provisioning.tls_cert/tls_key"),
                "{problems:?}"
            );
        }
    }

    /// `serve` starts with it, but phones that check dates refuse it: a
    /// configuration error here, naming the date.
    #[test]
    fn a_certificate_outside_its_dates_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("a.crt"), dir.path().join("a.key"));
        for (from, until, said) in [
            (2099, 2100, "is not valid until 2099-01-01 00:00:00 UTC"),
            (1999, 2000, "expired at 2000-01-01 00:00:00 UTC"),
        ] {
            let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
            params.not_before = rcgen::date_time_ymd(from, 1, 1);
            params.not_after = rcgen::date_time_ymd(until, 1, 1);
            let signing_key = rcgen::KeyPair::generate().unwrap();
            std::fs::write(&cert, params.self_signed(&signing_key).unwrap().pem()).unwrap();
            std::fs::write(&key, signing_key.serialize_pem()).unwrap();
            // With its key a credential not there until the start too.
            let credential = Path::new("/run/credentials/dialtone-not-started-yet.service/key");
            for key in [key.as_path(), credential] {
                let problems = with_tls(config_in(dir.path()), &cert, key).preflight();
                assert_eq!(problems.len(), 1, "{problems:?}");
                assert!(
                    problems[0].contains("(provisioning.tls_cert)") && problems[0].contains(said),
                    "{problems:?}"
                );
            }
        }
    }

    #[test]
    fn a_key_file_serve_could_not_read_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let config = config_in(dir.path());
        let key_file = dir.path().join("d.key");
        for contents in [&b"abcd\n"[..], b"", b"\xff\xfe not text"] {
            std::fs::write(&key_file, contents).unwrap();
            let problems = config.preflight();
            assert_eq!(problems.len(), 1, "{contents:?}: {problems:?}");
            assert!(problems[0].starts_with("secret key file"), "{problems:?}");
        }
        std::fs::remove_file(&key_file).unwrap();
        std::fs::create_dir(&key_file).unwrap();
        let problems = config.preflight();
        assert!(problems[0].contains("a folder"), "{problems:?}");
        // A configured key is all serve reads.
        let mut keyed = config.clone();
        keyed.secrets.key = Some("cd".repeat(32));
        assert!(keyed.preflight().is_empty());
        // A folder that is not there stops serve...
        let mut nowhere = config.clone();
        let folder = dir.path().join("no-such-folder");
        nowhere.secrets.key_file = Some(folder.join("k"));
        let problems = nowhere.preflight();
        assert!(
            problems.len() == 1
                && problems[0].contains(&format!("the folder {} does not exist", folder.display())),
            "{problems:?}"
        );
        // ...unless systemd makes it at the first start (the state folder,
        // a credential), after the check run on installing.
        for later in [
            "/var/lib/dialtone-not-started-yet/dialtone.key",
            "/run/credentials/dialtone-not-started-yet.service/key",
        ] {
            let mut not_yet = config.clone();
            not_yet.secrets.key_file = Some(later.into());
            assert!(not_yet.preflight().is_empty(), "{:?}", not_yet.preflight());
        }
    }

    #[test]
    fn a_database_url_serve_could_not_read_is_named_without_its_password() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("d.db");
        for url in [
            format!("sqlite://{}?foo=bar", db.display()),
            "sqlite://".into(),
            "postgres://u:hunter2@[::1:1/db".into(),
            "postgres://u:hunter2@/db?host=/x".into(),
        ] {
            let mut config = config_in(dir.path());
            config.database.url = url.clone();
            config.secrets.key = Some("cd".repeat(32));
            let problems = config.preflight();
            assert_eq!(problems.len(), 1, "{url}: {problems:?}");
            assert!(problems[0].starts_with("database.url "), "{problems:?}");
            assert!(!problems[0].contains("hunter2"), "{problems:?}");
        }
        assert!(!db.exists(), "check-config created the database");
    }

    /// The snapshot's folder is there and takes a file: one that was not
    /// showed only at the first periodic write, or at the shutdown.
    #[test]
    fn a_snapshot_folder_serve_could_not_write_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config_in(dir.path());
        let file = dir.path().join("a-file");
        std::fs::write(&file, "").unwrap();
        let listed = || {
            let mut names: Vec<_> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            names.sort();
            names
        };
        let before = listed();
        // Beside the database, by default.
        assert!(config.preflight().is_empty(), "{:?}", config.preflight());
        for (folder, why) in [
            (dir.path().join("gone"), "no such folder"),
            (file.clone(), "not a folder"),
        ] {
            config.mirror.snapshot_path = Some(folder.join("d.snapshot"));
            let problems = config.preflight();
            assert_eq!(problems.len(), 1, "{problems:?}");
            assert!(
                problems[0].contains("mirror.snapshot_path") && problems[0].contains(why),
                "{problems:?}"
            );
        }
        // The probe left nothing behind.
        config.mirror.snapshot_path = Some(dir.path().join("d.snapshot"));
        assert!(config.preflight().is_empty());
        assert_eq!(listed(), before);
        // The state folder systemd makes at the first start is no problem
        // before it; a relative path is serve's working directory's.
        let mut later = config.clone();
        later.mirror.snapshot_path = None;
        later.database.url = "sqlite:///var/lib/dialtone-not-started-yet/d.db".into();
        assert!(later.preflight().is_empty(), "{:?}", later.preflight());
        later.mirror.snapshot_path = Some("no-such-folder/d.snapshot".into());
        assert!(later.preflight().is_empty(), "{:?}", later.preflight());
        // The package's PostgreSQL node: the key a credential, the
        // snapshot in the state folder, neither there before the start.
        let mut shared = config.clone();
        shared.database.url = "postgres://dialtone@db.example.net/dialtone".into();
        shared.secrets.key_file = Some("/run/credentials/dialtone-not-started-yet/key".into());
        shared.mirror.snapshot_path =
            Some("/var/lib/dialtone-not-started-yet/dialtone.snapshot".into());
        assert!(shared.preflight().is_empty(), "{:?}", shared.preflight());
    }

    #[test]
    fn every_problem_is_listed() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config_in(dir.path());
        std::fs::write(dir.path().join("d.key"), "short").unwrap();
        let file = dir.path().join("a-file");
        std::fs::write(&file, "").unwrap();
        config.provisioning.static_dir = Some(file.clone());
        config.log.file = Some(file.join("d.log"));
        let mut missing = config.clone();
        missing.provisioning.static_dir = Some(dir.path().join("none"));
        let problems = config.preflight();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(
            problems[1].contains("provisioning.static_dir") && problems[1].contains("not a folder")
        );
        assert!(problems[2].contains("log.file"), "{problems:?}");
        assert!(missing.preflight()[1].contains("no such folder"));
        let mut a_folder = config.clone();
        a_folder.log.file = Some(dir.path().to_path_buf());
        assert!(a_folder.preflight()[2].contains("log.file"));
        // Folders and credentials systemd makes at the start are no
        // problem before it.
        let mut later = config;
        later.log.file = Some(dir.path().join("no-such-folder").join("d.log"));
        later.provisioning.https_listen = Some("127.0.0.1:0".parse().unwrap());
        later.provisioning.tls_cert = Some(dir.path().join("cert.pem"));
        later.provisioning.tls_key = Some("/run/credentials/dialtone.service/tls-key".into());
        let problems = later.preflight();
        assert!(
            problems
                .iter()
                .all(|p| !p.contains("log.file") && !p.contains("TLS")),
            "{problems:?}"
        );
    }
}
