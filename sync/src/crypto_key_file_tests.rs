//! The key file's mode, as `load_or_create` reports it.

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
