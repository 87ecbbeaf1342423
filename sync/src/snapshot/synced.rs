//! How fresh the snapshot is, kept beside it in a file of its own
//! (`<snapshot>.synced`, a few hundred bytes).
//!
//! On PostgreSQL the cursor moves at every catch-up, changes or not: it
//! advances to the oldest running transaction, and any write to the
//! database (a phone's boot history) moves that. The writer rewrote the
//! whole snapshot (hundreds of megabytes at a million phones, a second
//! of CPU) every interval for a mirror with nothing new. Now a mirror
//! whose rows have not changed since the snapshot was written gets this
//! file instead: the cursor, meta and sync time of a state holding the
//! same rows, and which snapshot file it belongs to. A start reads both
//! and takes this file's freshness when it belongs; otherwise (another
//! snapshot renamed into place since, rows of another version, damage)
//! it is ignored and the snapshot's own header stands, which is only
//! older, never wrong.
//!
//! The file carries a checksum of what it records, as the snapshot does:
//! a changed digit still parses, and a cursor moved ahead would have the
//! catch-up skip changes the mirror never saw. A file without one (from
//! before snapshot format 5, whose snapshot is refused anyway) or failing
//! it is ignored.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::crc32c::Crc32c;
use super::SnapshotHeader;
use crate::error::SyncError;
use crate::model::{Cursor, Meta, Millis};

/// Device, inode, length and modification time of a snapshot file: a
/// snapshot written since is another file.
pub(crate) type FileId = (u64, u64, u64, i64);

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Synced {
    file: FileId,
    version: u64,
    source: String,
    cursor: Cursor,
    meta: Meta,
    synced_at: Millis,
    /// `meta.timeline`, which `Meta`'s encoding leaves out. A file of the
    /// release before has none, and its checksum still agrees (that
    /// release never reads one of these: it refuses the format 6 snapshot
    /// the file belongs to first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    timeline: Option<u32>,
}

/// The file: what it records, and the CRC-32C of that as JSON (as
/// written; reading and writing it again gives the same bytes).
#[derive(Serialize, Deserialize)]
struct Stored {
    synced: Synced,
    checksum: u32,
}

fn sum_of(synced: &Synced) -> u32 {
    let mut sum = Crc32c::new();
    sum.update(&serde_json::to_vec(synced).expect("plain data serializes"));
    sum.value()
}

pub(super) fn path_of(snapshot: &Path) -> PathBuf {
    let mut name = snapshot.as_os_str().to_owned();
    name.push(".synced");
    PathBuf::from(name)
}

pub(super) fn identity(metadata: &std::fs::Metadata) -> FileId {
    (
        metadata.dev(),
        metadata.ino(),
        metadata.len(),
        metadata.mtime() * 1_000_000_000 + metadata.mtime_nsec(),
    )
}

/// Records `fresh` as the freshness of `whole`, the snapshot this process
/// wrote at `snapshot`, if `fresh` has its rows and it is still the file
/// there; false when not (the mirror's rows changed, or a node sharing
/// the folder renamed its own snapshot into place, whose rows may lack
/// changes `fresh`'s cursor has passed): then the whole snapshot is to be
/// written. Atomic, like the snapshot: a temporary file renamed into place.
pub(super) fn write(
    snapshot: &Path,
    whole: &super::Whole,
    fresh: &SnapshotHeader,
) -> Result<bool, SyncError> {
    let written = &whole.header;
    if fresh.version != written.version || fresh.meta.database_id != written.meta.database_id {
        return Ok(false);
    }
    let metadata = match std::fs::metadata(snapshot) {
        Ok(metadata) => metadata,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(SyncError::io(snapshot, e)),
    };
    if identity(&metadata) != whole.file {
        return Ok(false);
    }
    let synced = Synced {
        file: whole.file,
        version: fresh.version,
        source: fresh.source.clone(),
        cursor: fresh.cursor,
        meta: fresh.meta.clone(),
        synced_at: fresh.synced_at,
        timeline: fresh.meta.timeline,
    };
    let path = path_of(snapshot);
    // Named as the snapshot's own temporary files are (unique across hosts
    // sharing the folder), so a crash's leftover is removed with theirs.
    let dir = snapshot
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = snapshot
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("snapshot");
    let tmp = dir.join(format!(
        ".{name}.tmp{}.{:016x}.synced",
        std::process::id(),
        rand::random::<u64>()
    ));
    let checksum = sum_of(&synced);
    let stored = Stored { synced, checksum };
    let bytes = serde_json::to_vec(&stored).expect("plain data serializes");
    let result = std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| SyncError::io(&path, e));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map(|()| true)
}

/// Takes the freshness recorded for the snapshot file `metadata`
/// describes into `header`, when it belongs to that file and its rows.
pub(super) fn apply(snapshot: &Path, metadata: &std::fs::Metadata, header: &mut SnapshotHeader) {
    let path = path_of(snapshot);
    let Ok(bytes) = std::fs::read(&path) else {
        return;
    };
    let synced = match serde_json::from_slice::<Stored>(&bytes) {
        Ok(stored) if sum_of(&stored.synced) == stored.checksum => stored.synced,
        Ok(_) => {
            tracing::warn!(file = %path.display(), "ignoring a damaged snapshot freshness file (it fails its checksum)");
            return;
        }
        Err(e) => {
            tracing::debug!(file = %path.display(), error = %e, "ignoring an unreadable snapshot freshness file");
            return;
        }
    };
    let belongs = synced.file == identity(metadata)
        && synced.version == header.version
        && synced.source == header.source
        && synced.meta.database_id == header.meta.database_id
        && synced.cursor >= header.cursor
        && synced.synced_at >= header.synced_at;
    if belongs {
        header.cursor = synced.cursor;
        header.meta = Meta {
            // A file without one says nothing of the snapshot's own.
            timeline: synced.timeline.or(header.meta.timeline),
            ..synced.meta
        };
        header.synced_at = synced.synced_at;
    }
}

/// A stale freshness file left by the snapshot before; harmless, since it
/// no longer belongs, but no use either.
pub(super) fn remove(snapshot: &Path) {
    let _ = std::fs::remove_file(path_of(snapshot));
}
