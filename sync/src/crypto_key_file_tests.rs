//! The key file: its mode, as `load_or_create` reports it, and where it
//! cannot be made.

use std::os::unix::fs::PermissionsExt;

use tracing::Level;

use super::SecretKey;
use crate::testing::logs::capture;

/// The events logged while loading the key file at `path`.
fn events_loading(path: &std::path::Path) -> Vec<(Level, String)> {
    let logs = capture();
    SecretKey::load_or_create(path).unwrap();
    logs.events()
}

fn key_file_with_mode(dir: &std::path::Path, mode: u32) -> std::path::PathBuf {
    let path = dir.join(format!("key-{mode:o}"));
    std::fs::write(&path, format!("{}\n", "11".repeat(32))).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

#[test]
fn a_key_file_others_can_read_or_write_is_warned_of_once() {
    let dir = tempfile::tempdir().unwrap();
    for mode in [0o644, 0o640, 0o604, 0o620, 0o602] {
        let path = key_file_with_mode(dir.path(), mode);
        let events = events_loading(&path);
        assert_eq!(events.len(), 1, "mode {mode:o}: {events:?}");
        let (level, event) = &events[0];
        assert_eq!(*level, Level::WARN, "{event}");
        assert!(event.contains(&path.display().to_string()), "{event}");
        assert!(event.contains(&format!("mode=0{mode:o}")), "{event}");
        assert!(
            event.contains(&format!("chmod 600 {}", path.display())),
            "{event}"
        );
    }
}

#[test]
fn a_key_file_only_its_owner_reaches_loads_quietly() {
    let dir = tempfile::tempdir().unwrap();
    // 0400 is how systemd hands a credential to the service.
    for mode in [0o600, 0o400] {
        let path = key_file_with_mode(dir.path(), mode);
        assert_eq!(events_loading(&path), Vec::new(), "mode {mode:o}");
    }
    // A key made here is made private: nothing but the note to back it up.
    let made = dir.path().join("made.key");
    let events = events_loading(&made);
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(events[0].1.contains("back it up"), "{events:?}");
}

/// A key file in a folder not there yet (a credentials folder of a unit
/// not running, a state folder before the first start) is refused naming
/// that folder, once: no temporary name beside the key, no OS error twice.
#[test]
fn a_key_in_a_missing_folder_names_the_folder() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("credentials");
    let path = folder.join("key");
    let error = SecretKey::load_or_create(&path).unwrap_err().to_string();
    assert!(
        error.contains(&path.display().to_string())
            && error.contains(&format!("the folder {} does not exist", folder.display())),
        "{error}"
    );
    assert!(
        !error.contains(&format!(".key.{}-", std::process::id())) && !error.contains("os error"),
        "{error}"
    );
    assert!(!folder.exists());
}

/// Whether the key was made by this call, for a caller that removes a new
/// key the database refuses.
#[test]
fn a_new_key_is_reported_as_made_and_an_existing_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dialtone.key");
    let (made, new) = SecretKey::load_or_create_reporting(&path).unwrap();
    assert!(new);
    let (read, new) = SecretKey::load_or_create_reporting(&path).unwrap();
    assert!(!new);
    assert_eq!(made.check_value(), read.check_value());
}
