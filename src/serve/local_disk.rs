//! What this node's own disk says about a start: the SQLite database's
//! folder when the file does not open (SQLite names a full disk "disk I/O
//! error", having failed to grow its `-shm` file), and the snapshot's
//! folder, which a start can serve without but the next start with the
//! database away cannot.

use std::path::Path;

use crate::config::Config;

/// " (no space left on FOLDER)", " (FOLDER is read-only)" or nothing: what
/// the SQLite database's folder says of a failure to open or write it.
pub(crate) fn database_folder_note(config: &Config) -> String {
    let Some(path) = config.sqlite_path() else {
        return String::new();
    };
    let folder = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    folder_state(folder).map_or_else(String::new, |state| format!(" ({state})"))
}

/// Why nothing can be written in `folder`, as far as `statvfs` tells:
/// a read-only mount, no space or no inodes left for this user.
fn folder_state(folder: &Path) -> Option<String> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(folder.as_os_str().as_bytes()).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: a NUL-terminated path and a buffer of the size statvfs fills.
    if unsafe { libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled the buffer.
    let stat = unsafe { stat.assume_init() };
    // SAFETY: no arguments, no failure.
    let root = unsafe { libc::geteuid() } == 0;
    // Blocks kept for root (ext4's 5 %) are free to root alone.
    let (blocks, inodes) = if root {
        (stat.f_bfree, stat.f_ffree)
    } else {
        (stat.f_bavail, stat.f_favail)
    };
    let folder = folder.display();
    if stat.f_flag & libc::ST_RDONLY != 0 {
        Some(format!("{folder} is on a read-only filesystem"))
    } else if blocks == 0 {
        Some(format!("no space left on {folder}"))
    } else if inodes == 0 && stat.f_files > 0 {
        Some(format!("no inodes left on {folder}"))
    } else {
        None
    }
}

/// The snapshot's folder, checked at the start as `check-config` checks
/// it: a snapshot that cannot be written showed only at the first
/// periodic write (a minute later) or at the shutdown, and the next start
/// with the database away then had none. Not a refusal: the node serves
/// without it. Counted as the snapshot writer's own failures are.
pub(super) fn warn_of_snapshot_folder(config: &Config) {
    if let Some(problem) = crate::config::snapshot_folder_problem(config) {
        dialtone_sync::watcher::failed("snapshot");
        tracing::warn!(
            "{problem}; serving without a snapshot, so a start while the database is \
             unavailable will have none to serve from"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_with_room_says_nothing_and_memory_has_no_folder() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.database.url = format!("sqlite://{}", dir.path().join("d.db").display());
        assert_eq!(database_folder_note(&config), "");
        config.database.url = "sqlite::memory:".into();
        assert_eq!(database_folder_note(&config), "");
    }

    /// `/proc` has no free blocks and is not read-only: what a full disk
    /// reads as to `statvfs`.
    #[test]
    fn a_folder_without_free_blocks_is_named() {
        let mut config = Config::default();
        config.database.url = "sqlite:///proc/d.db".into();
        assert_eq!(database_folder_note(&config), " (no space left on /proc)");
    }
}
