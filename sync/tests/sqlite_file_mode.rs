//! A new SQLite database and its -wal and -shm files are the owner's
//! alone, whatever the umask: under the README's quick start (umask 022)
//! they were 0644, readable by every local user, while the snapshot
//! holding the same data was 0600.

use std::os::unix::fs::PermissionsExt;

use dialtone_sync::store::{self, StoreOptions};
use dialtone_sync::testing::{build, test_key};

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_database_is_readable_by_its_owner_only() {
    // SAFETY: umask only sets this process's file-creation mask.
    unsafe { libc::umask(0o022) };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fresh.db");
    let store = store::open(
        &format!("sqlite://{}", path.display()),
        test_key(),
        &StoreOptions::default(),
    )
    .await
    .unwrap();
    store.migrate().await.unwrap();
    store
        .apply(&[build::tenant("acme", "US")], &build::audit("setup"))
        .await
        .unwrap();
    for file in ["fresh.db", "fresh.db-wal", "fresh.db-shm"] {
        assert_eq!(mode(&dir.path().join(file)), 0o600, "{file}");
    }

    // An operator's own mode on an existing file stays.
    let shared = dir.path().join("shared.db");
    std::fs::write(&shared, b"").unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o640)).unwrap();
    let store = store::open(
        &format!("sqlite://{}", shared.display()),
        test_key(),
        &StoreOptions::default(),
    )
    .await
    .unwrap();
    store.migrate().await.unwrap();
    assert_eq!(mode(&shared), 0o640);
}
