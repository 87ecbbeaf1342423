//! `check-config`'s preflight of the files a start needs.

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

/// A certificate within three weeks of its expiry is warned of, as `serve`
/// warns of it, and is no configuration error yet; one with months left
/// says nothing.
#[test]
fn a_certificate_that_expires_soon_is_warned_of() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("a.crt"), dir.path().join("a.key"));
    let day = 86_400;
    let now = dialtone_sync::now_millis() / 1000;
    for (left, warned) in [(10 * day, true), (90 * day, false)] {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        params.not_before = time::OffsetDateTime::from_unix_timestamp(now - day).unwrap();
        params.not_after = time::OffsetDateTime::from_unix_timestamp(now + left).unwrap();
        let signing_key = rcgen::KeyPair::generate().unwrap();
        std::fs::write(&cert, params.self_signed(&signing_key).unwrap().pem()).unwrap();
        std::fs::write(&key, signing_key.serialize_pem()).unwrap();
        let logged = dialtone_sync::testing::logs::capture();
        let problems = with_tls(config_in(dir.path()), &cert, &key).preflight();
        assert!(problems.is_empty(), "{problems:?}");
        let said = logged.containing("expires soon");
        assert_eq!(said.len(), usize::from(warned), "{left}: {said:?}");
    }
}

/// A `templates_dir` that does not read whole: `serve` would start
/// degraded, serving what it could read; `check-config` names it.
#[test]
fn a_templates_dir_that_does_not_read_whole_is_a_problem() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_in(dir.path());
    config.provisioning.templates_dir = Some(dir.path().join("missing"));
    let problems = config.preflight();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].starts_with("provisioning.templates_dir: "),
        "{problems:?}"
    );
    let templates = dir.path().join("templates");
    std::fs::create_dir_all(templates.join("yealink")).unwrap();
    std::fs::write(templates.join("yealink/{mac}.cfg.tera"), "{% if %}").unwrap();
    config.provisioning.templates_dir = Some(templates.clone());
    let problems = config.preflight();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("{mac}.cfg.tera"), "{problems:?}");
    std::fs::write(
        templates.join("yealink/{mac}.cfg.tera"),
        "#!version:1.0.0.1\n",
    )
    .unwrap();
    assert_eq!(config.preflight(), Vec::<String>::new());
}
