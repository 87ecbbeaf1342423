//! SIGHUP: what a reload applies, what waits for a restart, and how the
//! outcome is reported (`dialtone_config_last_reload_successful`).

use std::path::Path;

use dialtone_sync::SecretKey;

use super::signals::{hangup, needs_restart, record_reload, RunningKey};
use super::test_support::{start_on_empty_sqlite, Started};
use crate::config::{Config, Overrides};

/// The gauge a scrape would show for `name`, from a local recorder.
fn gauge(handle: &metrics_exporter_prometheus::PrometheusHandle, name: &str) -> Option<f64> {
    handle
        .render()
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// A running config with its key given in full, and that key as running.
fn with_a_key() -> (Config, RunningKey) {
    let mut running = Config::default();
    running.secrets.key = Some("3c".repeat(32));
    let key = SecretKey::parse(&"3c".repeat(32)).unwrap();
    let running_key = RunningKey::new(Some(key.check_value()), &running);
    (running, running_key)
}

/// A reload that fails in any part leaves the gauge at 0 until one
/// succeeds: unlike a counter's increase, it does not age out while
/// the bad file waits on disk for the next start.
#[tokio::test]
async fn the_last_reload_gauge_stays_failed_until_a_reload_succeeds() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let (running, running_key) = with_a_key();
    let ok = |_: Option<&Config>| true;
    let successful = "dialtone_config_last_reload_successful";
    let at = "dialtone_config_last_reload_timestamp_seconds";
    metrics::with_local_recorder(&recorder, || record_reload(true));
    assert_eq!(gauge(&handle, successful), Some(1.0));
    let started = gauge(&handle, at).unwrap();
    assert!(started > 1.7e9, "{started}");

    // An invalid config; a part not applied; the log not reopened; a
    // panic: each a failed reload.
    type Reread = Box<dyn FnOnce() -> (Option<Config>, bool)>;
    let same = || Some(running.clone());
    let (first, second) = (same(), same());
    let failures: [(Reread, bool); 4] = [
        (Box::new(|| (None, true)), true),
        (Box::new(move || (first, true)), false),
        (Box::new(move || (second, false)), true),
        (Box::new(|| panic!("a reload that panics")), true),
    ];
    for (reread, live) in failures {
        let applied = hangup(reread, &running, &|_: Option<&Config>| live, &running_key).await;
        metrics::with_local_recorder(&recorder, || record_reload(applied));
        assert_eq!(gauge(&handle, successful), Some(0.0));
    }
    assert!(gauge(&handle, at).unwrap() >= started);

    let applied = hangup(|| (same(), true), &running, &ok, &running_key).await;
    metrics::with_local_recorder(&recorder, || record_reload(applied));
    assert_eq!(gauge(&handle, successful), Some(1.0));
}

/// Listeners and the database given on the command line win over the
/// file at start and at each reload, so a reload does not name them
/// as changes awaiting a restart (it did, on every SIGHUP).
#[test]
fn command_line_settings_are_not_changes_awaiting_a_restart() {
    let overrides = Overrides {
        database_url: Some("sqlite:///var/lib/other.db".into()),
        listen: Some("127.0.0.1:9999".parse().unwrap()),
        ..Overrides::default()
    };
    let mut running = Config::default();
    overrides.apply(&mut running);
    let mut reread = Config::default();
    let before = needs_restart(&running, &reread);
    assert!(
        before.contains(&"http.listen".to_string()) && before.len() == 2,
        "{before:?}"
    );
    overrides.apply(&mut reread);
    assert!(needs_restart(&running, &reread).is_empty());
}

#[test]
fn a_reload_names_the_changes_that_wait_for_a_restart() {
    let running = Config::default();
    let mut new = running.clone();
    assert!(needs_restart(&running, &new).is_empty());
    new.provisioning.ban_burst += 1;
    new.log.filter = "debug".into();
    assert!(needs_restart(&running, &new).is_empty(), "both apply live");
    new.lookup.source_networks = vec!["10.0.0.0/8".into()];
    new.quotas.phones += 1;
    assert_eq!(
        needs_restart(&running, &new),
        ["lookup.source_networks", "quotas.phones"]
    );
}

/// The key the running test database's secrets are sealed with
/// (`start_on_empty_sqlite`'s).
const DATABASE_KEY: &str = "1111111111111111111111111111111111111111111111111111111111111111";

/// One SIGHUP that reads `new`, with everything else applying: whether
/// the gauge says it succeeded.
async fn reload_reports(running: &Config, running_key: &RunningKey, new: &Config) -> bool {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let reread = || (Some(new.clone()), true);
    let applied = hangup(reread, running, &|_: Option<&Config>| true, running_key).await;
    metrics::with_local_recorder(&recorder, || record_reload(applied));
    match gauge(&handle, "dialtone_config_last_reload_successful") {
        Some(v) => v == 1.0,
        None => panic!("the gauge is not set"),
    }
}

fn key_file_holding(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("secrets.key");
    std::fs::write(&path, text).unwrap();
    path
}

/// The key is read only at start: a SIGHUP that finds another one (in the
/// key file, or as `secrets.key`) reports a failed reload, since the next
/// start would be refused; the same key written again, in another form,
/// is no change.
#[tokio::test]
async fn a_reload_that_finds_another_key_fails_and_the_same_key_rewritten_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let mut running = Config::default();
    let Started { store, key, .. } = start_on_empty_sqlite(&mut running, dir.path()).await;
    store.close().await;
    running.secrets.key_file = Some(key_file_holding(dir.path(), DATABASE_KEY));
    let running_key = RunningKey::new(Some(key.check_value()), &running);
    assert!(reload_reports(&running, &running_key, &running).await);

    // The same key written again, as an editor saves it: unchanged.
    key_file_holding(dir.path(), &format!("{DATABASE_KEY}\n"));
    assert!(reload_reports(&running, &running_key, &running).await);

    // Another key in the same file: only the content changed.
    key_file_holding(dir.path(), &"ab".repeat(32));
    assert!(!reload_reports(&running, &running_key, &running).await);
    key_file_holding(dir.path(), DATABASE_KEY);
    assert!(reload_reports(&running, &running_key, &running).await);

    // Another key given as a value; a key file that is gone, which the
    // next start would create anew with a new key.
    let mut by_value = running.clone();
    (by_value.secrets.key, by_value.secrets.key_file) = (Some("cd".repeat(32)), None);
    assert!(!reload_reports(&running, &running_key, &by_value).await);
    let mut gone = running.clone();
    gone.secrets.key_file = Some(dir.path().join("nowhere.key"));
    assert!(!reload_reports(&running, &running_key, &gone).await);
}

/// A key other than the running one passes only if the database says its
/// secrets are sealed with it (a node serving from its snapshot with a key
/// the database has not checked yet, its key file corrected meanwhile).
#[tokio::test]
async fn a_changed_key_passes_only_if_the_database_takes_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut running = Config::default();
    let Started { store, .. } = start_on_empty_sqlite(&mut running, dir.path()).await;
    store.close().await;
    let unchecked = SecretKey::parse(&"ab".repeat(32)).unwrap();
    let running_key = RunningKey::new(Some(unchecked.check_value()), &running);
    let mut corrected = running.clone();
    corrected.secrets.key = Some(DATABASE_KEY.into());
    assert!(reload_reports(&running, &running_key, &corrected).await);
    corrected.secrets.key = Some("cd".repeat(32));
    assert!(!reload_reports(&running, &running_key, &corrected).await);
}

/// A running config on a PostgreSQL URL nothing listens on (its address
/// returned), with the database's key running.
fn on_an_unreachable_database() -> (Config, RunningKey, std::net::SocketAddr) {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut running = Config::default();
    running.database.url = format!("postgres://dialtone@{closed}/dialtone");
    running.database.acquire_timeout_ms = 500;
    running.secrets.key = Some(DATABASE_KEY.into());
    let key = SecretKey::parse(DATABASE_KEY).unwrap();
    let running_key = RunningKey::new(Some(key.check_value()), &running);
    (running, running_key, closed)
}

/// With the database unreachable, only the running key passes: the node
/// cannot vouch for another.
#[tokio::test]
async fn with_the_database_unreachable_a_changed_key_fails_the_reload() {
    let (running, running_key, _) = on_an_unreachable_database();
    assert!(reload_reports(&running, &running_key, &running).await);
    let mut changed = running.clone();
    changed.secrets.key = Some("ab".repeat(32));
    assert!(!reload_reports(&running, &running_key, &changed).await);
}

/// A config naming another database with a key of its own (a move to
/// PostgreSQL) is not judged against the running database: the start
/// that opens the new one checks its key.
#[tokio::test]
async fn a_changed_key_for_another_database_is_left_to_the_next_start() {
    let (running, running_key, closed) = on_an_unreachable_database();
    let mut moved = running.clone();
    moved.database.url = format!("postgres://dialtone@{closed}/another");
    moved.secrets.key = Some("ab".repeat(32));
    assert!(reload_reports(&running, &running_key, &moved).await);
}
