//! The mirror files a node removes are its own, by their exact names, and
//! only once the mirror has been in sync with the database.

use std::sync::Arc;

use dialtone_sync::{Cursor, Dataset, LoadedFrom, Meta, Mirror};

use super::store;
use crate::{LookupOptions, LookupService};

#[test]
fn only_files_named_as_the_mirror_names_them_are_taken() {
    let dir = tempfile::tempdir().unwrap();
    let ours = [
        "ldap-mirror-5.bin",
        ".ldap-mirror-6.bin.4242.tmp0",
        "ldap-mirror-0.bin",
    ];
    let not_ours = [
        "ldap-mirror-05.bin",
        "ldap-mirror-+5.bin",
        "ldap-mirror--5.bin",
        "ldap-mirror-5.bin.bak",
        "ldap-mirror-5.bin~",
        "ldap-mirror-.bin",
        "ldap-mirror-x.bin",
        "ldap-mirror-99999999999999999999.bin",
        ".ldap-mirror-5.bin.x.tmp0",
        ".ldap-mirror-5.bin.1.tmp",
        ".ldap-mirror-5.bin.1.tmp0.keep",
        "my-ldap-mirror-5.bin",
        "directory-readings-5.bin",
        "dialtone.snapshot",
    ];
    for name in ours.iter().chain(&not_ours) {
        std::fs::write(dir.path().join(name), b"x").unwrap();
    }
    std::fs::create_dir(dir.path().join("ldap-mirror-7.bin")).unwrap();
    let mut found = store::files(dir.path());
    found.sort();
    assert_eq!(
        found,
        vec![
            (0, dir.path().join("ldap-mirror-0.bin")),
            (5, dir.path().join("ldap-mirror-5.bin")),
            (6, dir.path().join(".ldap-mirror-6.bin.4242.tmp0")),
        ]
    );
}

/// A mirror not loaded yet has no sources: every file would look like a
/// leftover.
#[tokio::test]
async fn nothing_is_removed_before_the_mirror_is_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let options = LookupOptions {
        mirror_dir: Some(dir.path().to_path_buf()),
        ..LookupOptions::default()
    };
    let service = LookupService::new(Arc::new(Mirror::new()), None, options);
    let file = store::path(dir.path(), 5);
    let readings = dir.path().join("directory-readings-5.bin");
    std::fs::write(&file, b"x").unwrap();
    std::fs::write(&readings, b"x").unwrap();
    service.remove_leftover_files();
    assert!(file.exists() && readings.exists());
}

/// A snapshot read while the database is unreachable predates the
/// sources created since: their files wait for it to catch up, which
/// spares each a full LDAP sync.
#[tokio::test]
async fn a_snapshot_not_yet_caught_up_removes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let options = LookupOptions {
        mirror_dir: Some(dir.path().to_path_buf()),
        ..LookupOptions::default()
    };
    let mirror = Arc::new(Mirror::new());
    mirror.reset(
        Dataset::default(),
        Cursor::default(),
        Meta::default(),
        LoadedFrom::Snapshot,
    );
    mirror.synced_at_least_at(1);
    mirror.mark_unreachable("connection refused");
    let service = LookupService::new(mirror.clone(), None, options);
    let newer_source = store::path(dir.path(), 5);
    std::fs::write(&newer_source, b"x").unwrap();

    service.remove_leftover_files();
    assert!(newer_source.exists());

    mirror.mark_synced();
    service.remove_leftover_files();
    assert!(!newer_source.exists());
}
