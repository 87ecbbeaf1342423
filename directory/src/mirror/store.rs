//! A mirror on local disk: `<dir>/ldap-mirror-<source id>.bin`, beside the
//! node's snapshot, written atomically (temp file, fsync, rename) after
//! each sync that changed something. The header's fingerprint ties it to
//! the source's settings, so a file of another server, base or bind DN is
//! never served; it also names the normalizer that read the numbers, so a
//! release that reads them otherwise reads them again from their spellings
//! on load rather than answering with the old readings until its first
//! full sync. Files are checksummed and bounded on read: a damaged or
//! foreign file costs a warning and a full sync, not a wrong answer or the
//! node's memory.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use dialtone_sync::{now_millis, Id};
use serde::{Deserialize, Serialize};

use super::schedule::forget_future_syncs;
use super::{MirrorData, MirrorEntry, Watermark};
use crate::error::DirectoryError;
use crate::readings::NORMALIZER;
use crate::replace_file::{checked_payload, replace_file, write_checksummed};

/// Version 4 may hold a watermark version 3 cannot, an AD one naming its
/// DC, as a kind numbered after the others. Version 3 is version 2
/// followed by its CRC-32C: a flipped bit in a number or the watermark
/// decodes, and would answer a caller with a wrong name or skip the
/// server's changes. Version 2 puts the normalizer's name before the
/// rest, which is version 1's body unchanged. Files of versions 1 to 3
/// still load as they are (version 1's numbers read again) instead of
/// costing every source a full sync on upgrade; only an AD source's USN,
/// of no known DC, costs one in place of its first incremental sync
/// ([`super::sync::usn_mismatch`]). A release before version 4 refuses a
/// version 4 file by its magic, and syncs in full.
const MAGIC: &[u8; 8] = b"DTLDAPM\x04";
const MAGIC_NO_DC: &[u8; 8] = b"DTLDAPM\x03";
const MAGIC_UNSUMMED: &[u8; 8] = b"DTLDAPM\x02";
const MAGIC_UNNAMED_NORMALIZER: &[u8; 8] = b"DTLDAPM\x01";
/// Bytes per entry a file may average: a DN, a name and a few numbers.
const BYTES_PER_ENTRY: u64 = 4096;

pub fn path(dir: &Path, source_id: Id) -> PathBuf {
    dir.join(format!("ldap-mirror-{source_id}.bin"))
}

#[derive(Serialize, Deserialize)]
struct Header {
    fingerprint: String,
    region: Box<str>,
    watermark: Option<Watermark>,
    last_full_sync: Option<i64>,
    last_full_ms: Option<u64>,
    last_incremental_sync: Option<i64>,
    last_incremental_ms: Option<u64>,
}

#[derive(Serialize)]
struct Out<'a> {
    header: Header,
    entries: Vec<(&'a str, &'a MirrorEntry)>,
}

#[derive(Deserialize)]
struct In {
    header: Header,
    entries: Vec<(Box<str>, MirrorEntry)>,
}

fn io(path: &Path, e: impl std::fmt::Display) -> DirectoryError {
    DirectoryError::MirrorFile(format!("{}: {e}", path.display()))
}

/// Writes `data` to `path` atomically. Blocking.
pub fn write(path: &Path, fingerprint: &str, data: &MirrorData) -> Result<(), DirectoryError> {
    write_by(path, fingerprint, data, NORMALIZER)
}

/// A file as a release with `normalizer` would have written it.
#[cfg(test)]
pub(crate) fn write_as_if_by(
    path: &Path,
    fingerprint: &str,
    data: &MirrorData,
    normalizer: &str,
) -> Result<(), DirectoryError> {
    write_by(path, fingerprint, data, normalizer)
}

fn write_by(
    path: &Path,
    fingerprint: &str,
    data: &MirrorData,
    normalizer: &str,
) -> Result<(), DirectoryError> {
    let out = Out {
        header: Header {
            fingerprint: fingerprint.to_string(),
            region: data.region.clone(),
            watermark: data.watermark.clone(),
            last_full_sync: data.last_full_sync,
            last_full_ms: data.last_full_ms,
            last_incremental_sync: data.last_incremental_sync,
            last_incremental_ms: data.last_incremental_ms,
        },
        entries: data.entries.iter().map(|(dn, e)| (&**dn, &**e)).collect(),
    };
    // Synced: a lost file costs a full sync from the tenant's server.
    replace_file(path, true, |writer| {
        write_checksummed(writer, MAGIC, |payload| {
            // postcard's own writer turns a full disk into "the serialize
            // buffer is full"; this one keeps the disk's error.
            crate::replace_file::encode_to(&normalizer, &mut *payload)?;
            crate::replace_file::encode_to(&out, payload)
        })
    })
    .map_err(DirectoryError::MirrorFile)
}

/// Reads the file at `path` if it is this source's (same fingerprint) and
/// within `max_entries`. `Ok(None)`: no file, or another source's. Data
/// another normalizer read says so ([`MirrorData::readings_stale`]).
pub fn read(
    path: &Path,
    fingerprint: &str,
    max_entries: usize,
) -> Result<Option<MirrorData>, DirectoryError> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(path, e)),
    };
    let limit = (max_entries as u64 + 1) * BYTES_PER_ENTRY;
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| io(path, e))?;
    if bytes.len() as u64 > limit {
        return Err(io(path, "larger than max_entries allows; ignored"));
    }
    let summed = bytes
        .strip_prefix(MAGIC.as_slice())
        .or_else(|| bytes.strip_prefix(MAGIC_NO_DC.as_slice()));
    let named = if let Some(summed) = summed {
        Some(checked_payload(summed).map_err(|e| io(path, e))?)
    } else {
        bytes.strip_prefix(MAGIC_UNSUMMED.as_slice())
    };
    let (normalizer, body) = if let Some(named) = named {
        let (normalizer, body) =
            postcard::take_from_bytes::<&str>(named).map_err(|e| io(path, e))?;
        (Some(normalizer), body)
    } else if let Some(body) = bytes.strip_prefix(MAGIC_UNNAMED_NORMALIZER.as_slice()) {
        (None, body)
    } else {
        return Err(io(path, "not an LDAP mirror file of this version"));
    };
    let decoded: In = postcard::from_bytes(body).map_err(|e| io(path, e))?;
    if decoded.header.fingerprint != fingerprint {
        return Ok(None);
    }
    if decoded.entries.len() > max_entries {
        return Err(io(path, "more entries than max_entries; ignored"));
    }
    let h = decoded.header;
    let entries: BTreeMap<Box<str>, Arc<MirrorEntry>> = decoded
        .entries
        .into_iter()
        .map(|(dn, e)| (dn, Arc::new(e)))
        .collect();
    let mut data = MirrorData {
        region: h.region,
        read_by_another_normalizer: normalizer != Some(NORMALIZER),
        entries,
        watermark: h.watermark,
        last_full_sync: h.last_full_sync,
        last_full_ms: h.last_full_ms,
        last_incremental_sync: h.last_incremental_sync,
        last_incremental_ms: h.last_incremental_ms,
    };
    // Written while the clock was ahead: the times would postpone the
    // next syncs by as much, across the restart too.
    forget_future_syncs(&mut data, now_millis());
    Ok(Some(data))
}

/// Removes a source's file (its source is gone, disabled or live again).
pub fn remove(dir: &Path, source_id: Id) {
    remove_file(&path(dir, source_id), source_id);
}

/// Removes one of `source_id`'s files, saying so: the operator reading
/// the log must be able to tell that a departed source's directory left
/// the disk.
pub fn remove_file(path: &Path, source_id: Id) {
    match std::fs::remove_file(path) {
        Ok(()) => {
            tracing::info!(source_id, path = %path.display(), "removed the mirror file of a source no longer mirrored")
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(source_id, path = %path.display(), error = %e, "removing a mirror file failed")
        }
    }
}

/// The mirror files in `dir`, with their sources: files named exactly as
/// [`path`] names them, and the temporary files [`write`] makes for them
/// (left by a crash, or a write under way). Nothing else: the folder is
/// the snapshot's, and holds the operator's files too. Blocking.
pub fn files(dir: &Path) -> Vec<(Id, PathBuf)> {
    let Ok(listing) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    listing
        .flatten()
        .filter(|item| item.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|item| {
            let id = source_named(item.file_name().to_str()?)?;
            Some((id, item.path()))
        })
        .collect()
}

/// The source a mirror file's name names, if it is one of ours.
fn source_named(name: &str) -> Option<Id> {
    let file = match name.strip_prefix('.') {
        // `replace_file`'s `.<name>.<pid>.tmp<n>`.
        Some(temporary) => {
            let (stem, writer) = temporary.split_once(".bin.")?;
            let (pid, n) = writer.split_once(".tmp")?;
            if !all_digits(pid) || !all_digits(n) {
                return None;
            }
            stem
        }
        None => name.strip_suffix(".bin")?,
    };
    let id: Id = file.strip_prefix("ldap-mirror-")?.parse().ok()?;
    // Only the spelling `path` writes: not `+5`, `05` or `-5`.
    (id >= 0 && format!("ldap-mirror-{id}") == file).then_some(id)
}

fn all_digits(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}
