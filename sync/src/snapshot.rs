//! The mirror on local disk: every mirrored row plus the cursor, written
//! atomically (temp file, fsync, rename). At start it lets a node serve
//! before, or without, the database, and makes the normal start a catch-up
//! instead of a full read. Secrets in it stay sealed, as in the mirror.
//!
//! Every byte of it is under a checksum (`snapshot/format.rs`), as is the
//! freshness file beside it (`snapshot/synced.rs`). A damaged snapshot is
//! refused whole, as one of another format is: the node loads from the
//! database, or, with the database unreachable, does not start from it.
//! Served, a damaged row would stay: the catch-up only applies newer
//! changes, and the next snapshot would be written with it.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::crypto::{Purpose, Sealed, SecretKey};
use crate::error::SyncError;
use crate::mirror::{Loading, Mirror, MirrorState};
use crate::model::*;

#[cfg(test)]
mod checksum_tests;
pub(crate) mod crc32c;
mod format;
#[cfg(test)]
mod key_tests;
mod synced;
#[cfg(test)]
mod synced_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod timeline_tests;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SnapshotHeader {
    /// Names the database the data came from (see [`source_id`]), so a node
    /// pointed at another database never serves this snapshot.
    pub source: String,
    /// When the data was last known to match the database: the writer's
    /// last sync, which a node serving from this snapshot offline keeps
    /// (its age is how stale it is, however often it is written again).
    /// In the field's place where formats before it had the write time.
    pub synced_at: Millis,
    pub cursor: Cursor,
    pub meta: Meta,
    pub version: u64,
}

fn err(path: &Path, reason: impl std::fmt::Display) -> SyncError {
    SyncError::Snapshot {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// One write at a time in a process, each reading the state once the one
/// before it is renamed into place: the final write at shutdown could
/// otherwise start while a periodic one still ran, and the older state,
/// renamed last, would be the one left on disk (or a freshness recorded
/// for a file that was being replaced).
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The header of the mirror's current state, and the state.
fn header_now(mirror: &Mirror, source: &str) -> (SnapshotHeader, Arc<crate::MirrorState>) {
    // Read before the state: the state is at least as new as this.
    let synced_at = mirror.health().last_sync_at.unwrap_or_else(now_millis);
    let state = mirror.load();
    let tables = state.tables();
    let header = SnapshotHeader {
        source: source.to_string(),
        synced_at,
        cursor: tables.cursor(),
        meta: tables.meta().clone(),
        version: state.version(),
    };
    (header, state)
}

/// Writes the mirror's current state to `path` atomically. Blocking: call it
/// from `spawn_blocking`.
pub fn write(mirror: &Mirror, path: &Path, source: &str) -> Result<SnapshotHeader, SyncError> {
    write_whole(mirror, path, source).map(|whole| whole.header)
}

/// A snapshot this process wrote: its header, and which file it is (a
/// node sharing the folder may rename another into place).
#[derive(Clone, Debug)]
pub(crate) struct Whole {
    pub header: SnapshotHeader,
    file: synced::FileId,
}

fn write_whole(mirror: &Mirror, path: &Path, source: &str) -> Result<Whole, SyncError> {
    let _turn = one_at_a_time();
    let (header, state) = header_now(mirror, source);
    let tables = state.tables();
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    // Unique across hosts sharing the folder (pids repeat): they must not
    // share a file.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("snapshot");
    if WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed) == 0 {
        remove_leftovers(dir, name);
    }
    let tmp: PathBuf = dir.join(format!(
        ".{name}.tmp{}.{:016x}",
        std::process::id(),
        rand::random::<u64>()
    ));
    let result = (|| -> Result<synced::FileId, SyncError> {
        // The directory's people and the tokens' hashes: the owner's
        // alone, whatever the umask of whoever started the node.
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| SyncError::io(&tmp, e))?;
        // Held until the file is closed, or its writer dies: what tells
        // `remove_leftovers` a live write from a dead one, on any host. A
        // filesystem without locks (NFS mounted `nolock`) still gets its
        // snapshot; only its leftovers wait for an older age.
        if let Err(e) = lock(&file, false) {
            tracing::debug!(file = %tmp.display(), error = %e, "snapshot file not locked");
        }
        let file = format::write(file, &header, &tables).map_err(|e| err(path, e))?;
        file.sync_all().map_err(|e| SyncError::io(&tmp, e))?;
        // A rename keeps the inode and the modification time.
        let written = file.metadata().map_err(|e| SyncError::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| SyncError::io(path, e))?;
        synced::remove(path);
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(synced::identity(&written))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map(|file| Whole { header, file })
}

/// An exclusive `flock` on `file`; `try_only`: without waiting. The
/// kernel drops it when the file is closed or its process dies, and over
/// NFS Linux takes it on the server, so it is seen from other hosts too.
fn lock(file: &std::fs::File, try_only: bool) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let operation = if try_only {
        libc::LOCK_EX | libc::LOCK_NB
    } else {
        libc::LOCK_EX
    };
    // SAFETY: a valid descriptor, borrowed from `file` for the call.
    if unsafe { libc::flock(file.as_raw_fd(), operation) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Removes the half-written files of processes that died while writing
/// (killed, out of memory, the machine lost): each is as large as a
/// snapshot, and nothing else would ever remove them. A file still being
/// written (another node sharing the folder, on this host or another) is
/// locked by its writer, and one changed in the last ten minutes may be a
/// write between its creation and its lock: both are left alone.
fn remove_leftovers(dir: &Path, name: &str) {
    const SETTLED: std::time::Duration = std::time::Duration::from_secs(600);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let prefix = format!(".{name}.tmp");
    for entry in entries.flatten() {
        let named = entry.file_name();
        if !named.to_str().is_some_and(|f| f.starts_with(&prefix)) {
            continue;
        }
        let settled = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|at| at.elapsed().is_ok_and(|age| age >= SETTLED));
        // Open for writing: over NFS an exclusive lock needs it.
        let Ok(file) = std::fs::OpenOptions::new().write(true).open(entry.path()) else {
            continue;
        };
        if settled && lock(&file, true).is_ok() {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => {
                    tracing::info!(file = %entry.path().display(), "removed a snapshot a dead process left half-written")
                }
                Err(e) => {
                    tracing::warn!(file = %entry.path().display(), error = %e, "could not remove a half-written snapshot")
                }
            }
        }
    }
}

/// A stable name for a database URL that leaves out any password: the
/// scheme, user, host and path, hashed.
pub fn source_id(database_url: &str) -> String {
    use sha2::Digest;
    // Secrets in the query (`?password=`) masked too: a rotated password
    // is the same database, and an offline node must still take its own
    // snapshot. The URL parser also finds the user info's end at its last
    // `@`, so a password holding one is masked whole.
    let database_url = &crate::store::masked_url(database_url);
    let without_password = match database_url.split_once("://") {
        Some((scheme, rest)) => {
            let (creds, host) = rest.split_once('@').map_or(("", rest), |(c, h)| (c, h));
            let user = creds.split(':').next().unwrap_or("");
            format!("{scheme}://{user}@{host}")
        }
        None => database_url.to_string(),
    };
    let digest = sha2::Sha256::digest(without_password.as_bytes());
    hex::encode(&digest[..12])
}

/// Loads a snapshot into the mirror's tables, built as they are read
/// (blocking: two threads decode phones and lines). `Ok(None)` when there is
/// none; an error for a file this binary cannot load (another format, not a
/// snapshot, damaged: a checksum that fails names its part), which callers
/// answer by loading from the database.
pub fn load(path: &Path) -> Result<Option<(SnapshotHeader, Loading)>, SyncError> {
    // Opened once: a snapshot written meanwhile replaces the file by rename
    // and never changes the one being read.
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(SyncError::io(path, e)),
    };
    let metadata = file.metadata().map_err(|e| SyncError::io(path, e))?;
    // A folder opens on Linux and then reads as "too short", which blamed
    // the snapshot for `snapshot_path = "/var/lib/dialtone"`.
    if !metadata.is_file() {
        return Err(err(
            path,
            "not a file (mirror.snapshot_path names the file, not its folder)",
        ));
    }
    let (mut header, loading) = format::load(&file).map_err(|e| err(path, e))?;
    synced::apply(path, &metadata, &mut header);
    Ok(Some((header, loading)))
}

/// Refuses `key` unless it opens one of the first sealed values `state`
/// holds (line passwords, phones' HTTP passwords, source secrets; at most
/// [`KEY_SAMPLES`] of them). A node serving its snapshot while the database
/// is unreachable cannot ask the database, and with another key it would
/// answer every phone that has a password with an error while reporting
/// ready. One value that opens is enough: a database may hold a few rows
/// sealed with another key (a key file once created anew on one node),
/// which must not refuse the right key, while another key opens none. A
/// state holding no sealed value has nothing to check.
pub fn check_key(state: &MirrorState, key: &SecretKey) -> Result<(), SyncError> {
    let present = |sealed: &Option<Sealed>| sealed.clone().filter(|s| !s.0.is_empty());
    let line_passwords = state.phones().flat_map(|phone| {
        (state.lines_of(phone.id).iter())
            .filter_map(|line| present(&line.password))
            .map(|sealed| (Purpose::LinePassword, sealed))
            .collect::<Vec<_>>()
    });
    let phone_passwords = (state.phones())
        .filter_map(|phone| present(&phone.http_password))
        .map(|sealed| (Purpose::DeviceHttpPassword, sealed));
    let source_secrets = (state.tables().directory_sources())
        .filter_map(|source| present(&source.secret))
        .map(|sealed| (Purpose::SourceSecret, sealed));
    let sampled: Vec<(Purpose, Sealed)> = line_passwords
        .take(KEY_SAMPLES)
        .chain(phone_passwords.take(KEY_SAMPLES))
        .chain(source_secrets.take(KEY_SAMPLES))
        .collect();
    if sampled.is_empty()
        || sampled
            .iter()
            .any(|(purpose, sealed)| key.open(*purpose, sealed).is_ok())
    {
        return Ok(());
    }
    Err(crate::crypto::not_the_sealing_key())
}

/// Sealed values of each kind [`check_key`] tries.
const KEY_SAMPLES: usize = 16;

/// What [`refresh`] wrote.
#[derive(Debug)]
pub(crate) enum Written {
    /// The whole snapshot.
    Whole(Whole),
    /// Only the freshness of the snapshot on disk, whose rows are the
    /// state's: this header is that freshness.
    Freshness(SnapshotHeader),
}

/// Brings the snapshot at `path`, last written whole as `whole`, up to
/// the mirror: while the mirror's rows are still that snapshot's and it
/// is still the file at `path`, only a small file beside it (`synced.rs`
/// says why); otherwise the whole snapshot. Blocking: call it from
/// `spawn_blocking`.
pub(crate) fn refresh(
    mirror: &Mirror,
    path: &Path,
    source: &str,
    whole: Option<&Whole>,
) -> Result<Written, SyncError> {
    if let Some(whole) = whole {
        let turn = one_at_a_time();
        let (fresh, _) = header_now(mirror, source);
        if synced::write(path, whole, &fresh)? {
            return Ok(Written::Freshness(fresh));
        }
        drop(turn);
    }
    write_whole(mirror, path, source).map(Written::Whole)
}

/// Reads a snapshot as rows (tools and tests). `Ok(None)` when there is none.
pub fn read(path: &Path) -> Result<Option<(SnapshotHeader, Dataset)>, SyncError> {
    Ok(load(path)?.map(|(header, loading)| (header, loading.into_dataset())))
}

/// Writes a snapshot whenever the mirror moved on, every `interval`.
pub async fn run_writer(
    mirror: Arc<Mirror>,
    path: PathBuf,
    source: String,
    interval: Duration,
    cancel: CancellationToken,
) {
    // The snapshot on disk, and the state last recorded (whole or not).
    let mut whole: Option<Whole> = None;
    let mut recorded = None;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(interval) => {}
        }
        let state = mirror.load();
        if !mirror.is_loaded() || recorded == Some((state.version(), state.cursor())) {
            continue;
        }
        let (m, p, s, w) = (mirror.clone(), path.clone(), source.clone(), whole.clone());
        match tokio::task::spawn_blocking(move || refresh(&m, &p, &s, w.as_ref())).await {
            Ok(Ok(Written::Whole(w))) => {
                recorded = Some((w.header.version, w.header.cursor));
                whole = Some(w);
            }
            Ok(Ok(Written::Freshness(h))) => recorded = Some((h.version, h.cursor)),
            Ok(Err(e)) => {
                // Whole next time: the snapshot may be gone or replaced.
                whole = None;
                crate::watcher::failed("snapshot");
                tracing::warn!(error = %e, "writing the snapshot failed")
            }
            Err(e) => {
                crate::watcher::failed("snapshot");
                tracing::error!(error = %e, "snapshot writer panicked")
            }
        }
    }
}
