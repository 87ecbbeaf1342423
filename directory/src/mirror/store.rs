//! A mirror on local disk: `<dir>/ldap-mirror-<source id>.bin`, beside the
//! node's snapshot, written atomically (temp file, fsync, rename) after
//! each sync that changed something. The header's fingerprint ties it to
//! the source's settings, so a file of another server, base or bind DN is
//! never served. Files are bounded on read: a damaged or foreign file
//! costs a warning, not the node's memory.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use dialtone_sync::Id;
use serde::{Deserialize, Serialize};

use super::{MirrorData, MirrorEntry, Watermark};
use crate::error::DirectoryError;
use crate::replace_file::replace_file;

const MAGIC: &[u8; 8] = b"DTLDAPM\x01";
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
        writer.write_all(MAGIC).map_err(|e| e.to_string())?;
        postcard::to_io(&out, writer).map_err(|e| e.to_string())?;
        Ok(())
    })
    .map_err(DirectoryError::MirrorFile)
}

/// Reads the file at `path` if it is this source's (same fingerprint) and
/// within `max_entries`. `Ok(None)`: no file, or another source's.
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
    let body = bytes
        .strip_prefix(MAGIC.as_slice())
        .ok_or_else(|| io(path, "not an LDAP mirror file of this version"))?;
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
    Ok(Some(MirrorData {
        region: h.region,
        entries,
        watermark: h.watermark,
        last_full_sync: h.last_full_sync,
        last_full_ms: h.last_full_ms,
        last_incremental_sync: h.last_incremental_sync,
        last_incremental_ms: h.last_incremental_ms,
    }))
}

/// Removes a source's file (its source is gone or is live again).
pub fn remove(dir: &Path, source_id: Id) {
    let _ = std::fs::remove_file(path(dir, source_id));
}
