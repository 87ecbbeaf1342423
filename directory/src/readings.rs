//! Each spelling of a number read once: within one pass over a directory
//! ([`Readings`]), and across a node's restarts for the directories whose
//! whole index build would otherwise keep their first lookups waiting
//! ([`KeptReadings`]).
//!
//! Normalizing is nearly all an index build costs: 25–45 µs a number,
//! seconds at the entry quota, where filing a number already read takes
//! well under a microsecond. A reading depends only on the spelling, the
//! region and the normalizer, so a reading made once stays right for as
//! long as those three do; the file says which region and normalizer made
//! its readings, and one made by any other is not used.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use dialtone_sync::Id;
use serde::{Deserialize, Serialize};

use crate::normalize::normalize;
use crate::replace_file::{
    checked_payload, encode_to, is_foreign_temporary, replace_file, write_checksummed,
};

/// Spellings and their E.164 readings (`None`: not a number).
pub(crate) type ReadingMap = HashMap<Box<str>, Option<Box<str>>>;

/// The E.164 readings of the spellings one pass over a directory has met,
/// in one region. Directories list one number under many entries (a
/// switchboard; a CRM export puts the company's line on every contact),
/// so each spelling is read once a pass. Dropped with the pass, or kept
/// for the next whole build ([`Readings::into_map`]): its size is the
/// directory's distinct spellings, which the directory's own bound limits.
pub(crate) struct Readings<'r> {
    region: &'r str,
    seen: ReadingMap,
    /// Readings an earlier pass kept: taken when met, not made again.
    kept: ReadingMap,
    taken: usize,
}

impl<'r> Readings<'r> {
    pub(crate) fn new(region: &'r str, spellings: usize) -> Self {
        Self::with_kept(region, spellings, ReadingMap::new())
    }

    /// Starting from readings an earlier pass in the same region kept
    /// ([`KeptReadings::read`]).
    pub(crate) fn with_kept(region: &'r str, spellings: usize, kept: ReadingMap) -> Self {
        Readings {
            region,
            seen: HashMap::with_capacity(spellings),
            kept,
            taken: 0,
        }
    }

    /// `normalize(spelling, region).ok()`, read once.
    pub(crate) fn read(&mut self, spelling: &str) -> Option<&str> {
        let Readings {
            region,
            seen,
            kept,
            taken,
        } = self;
        if !seen.contains_key(spelling) {
            // Moved, not copied: what is left in `kept` at the end are the
            // spellings the directory no longer has, which are not kept again.
            match kept.remove_entry(spelling) {
                Some((spelling, e164)) => {
                    *taken += 1;
                    seen.insert(spelling, e164);
                }
                None => {
                    let e164 = normalize(spelling, region).ok().map(String::into_boxed_str);
                    seen.insert(spelling.into(), e164);
                }
            }
        }
        seen.get(spelling).and_then(|e164| e164.as_deref())
    }

    /// How many spellings were read from the kept readings.
    pub(crate) fn taken(&self) -> usize {
        self.taken
    }

    /// Whether this pass met exactly the kept readings, each of them and
    /// nothing else: keeping its readings would write the same file again.
    pub(crate) fn met_just_the_kept(&self) -> bool {
        !self.seen.is_empty() && self.kept.is_empty() && self.taken == self.seen.len()
    }

    /// Every spelling this pass met, with its reading.
    pub(crate) fn into_map(self) -> ReadingMap {
        self.seen
    }
}

/// Whole builds' readings of large directories, kept on the node's disk
/// beside its snapshot (`<dir>/directory-readings-<tenant id>.bin`), so
/// that a restarted node builds those indexes in a fraction of the time:
/// only the numbers added since are normalized. A missing, damaged or
/// foreign file costs a whole build, never a wrong reading: each file
/// names its region and normalizer and carries a checksum of its bytes,
/// and a sample of its readings is made again when it is read.
pub(crate) struct KeptReadings {
    dir: PathBuf,
}

/// Version 2 is version 1 followed by its CRC-32C: the spot checks see 16
/// readings of up to 200,000, and a flipped bit elsewhere still decodes,
/// to a wrong reading. A version 1 file is read as it was; a release
/// before version 2 refuses a version 2 file by its magic.
const MAGIC: &[u8; 8] = b"DTREADS\x02";
const MAGIC_UNSUMMED: &[u8; 8] = b"DTREADS\x01";
const FILE_PREFIX: &str = "directory-readings-";

/// What made a file's readings. phonenumber's version carries the
/// libphonenumber metadata it reads numbers with;
/// `normalizer_names_the_locked_phonenumber` holds it to Cargo.lock. The
/// reading revision goes up whenever `normalize` reads some spelling
/// otherwise (2: SIP and tel URIs, `+` past the first character; 3: the
/// region's own international prefix, and another region's only after the
/// national reading; 4: `00` before the national reading, the region's
/// literal prefix only; 5: a valid reading before one that only fits a
/// length, `(0)` kept as well as dropped, a tel URI's `phone-context`; 6:
/// Unicode dashes and spaces as separators), so no kept file answers with
/// the old reading.
/// LDAP mirror files name it too, for the same reason.
pub(crate) const NORMALIZER: &str = concat!(
    "dialtone-directory ",
    env!("CARGO_PKG_VERSION"),
    " reading 6; phonenumber 0.3.10+9.0.33"
);

/// Readings made again from each file read: a file of a normalizer that
/// reads any of them otherwise is not used.
const SPOT_CHECKS: usize = 16;

/// What a file of kept readings may hold for a directory as it is now:
/// no more readings than it has numbers, and no more bytes than twice
/// what those would take (spellings since changed may be longer).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bound {
    readings: usize,
    bytes: u64,
}

/// A reading's bytes in a file besides its spelling: an E.164 text (16
/// bytes at most), its option tag and two length prefixes.
const BYTES_BESIDE_SPELLING: u64 = 32;

impl Bound {
    /// The bound of a directory whose numbers are spelled `spellings`.
    pub(crate) fn of<'a>(spellings: impl Iterator<Item = &'a str>) -> Bound {
        let (mut readings, mut bytes) = (0, 0u64);
        for spelling in spellings {
            readings += 1;
            bytes += spelling.len() as u64 + BYTES_BESIDE_SPELLING;
        }
        Bound {
            readings,
            bytes: bytes.saturating_mul(2).saturating_add(4096),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Header {
    normalizer: Box<str>,
    region: Box<str>,
}

#[derive(Serialize)]
struct Out<'a> {
    header: Header,
    readings: &'a ReadingMap,
}

#[derive(Deserialize)]
struct In {
    header: Header,
    readings: ReadingMap,
}

impl KeptReadings {
    pub(crate) fn new(dir: PathBuf) -> Self {
        KeptReadings { dir }
    }

    fn path(&self, tenant_id: Id) -> PathBuf {
        self.dir.join(format!("{FILE_PREFIX}{tenant_id}.bin"))
    }

    /// The readings kept for the tenant in `region`, if they are within
    /// `bound` and pass the spot checks; empty otherwise, with a warning
    /// for a file that is damaged or past the bound. Blocking.
    pub(crate) fn read(&self, tenant_id: Id, region: &str, bound: Bound) -> ReadingMap {
        let path = self.path(tenant_id);
        match read_file(&path, region, bound) {
            Ok(Some(readings)) => readings,
            Ok(None) => ReadingMap::new(),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "kept number readings not used");
                ReadingMap::new()
            }
        }
    }

    /// Keeps the readings of the tenant's whole build for its next one,
    /// replacing the file at once (a temporary file renamed). Blocking.
    pub(crate) fn write(&self, tenant_id: Id, region: &str, readings: &ReadingMap) {
        let path = self.path(tenant_id);
        if let Err(e) = write_file(&path, region, readings) {
            tracing::warn!(path = %path.display(), error = %e, "keeping number readings failed");
        }
    }

    /// Removes the files of the tenants `keep` refuses, and temporary files
    /// another process left; only files named as [`KeptReadings::write`]
    /// names them (the folder is the snapshot's, and the operator's).
    /// Blocking.
    pub(crate) fn remove_except(&self, keep: impl Fn(Id) -> bool) {
        let Ok(listing) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for item in listing.flatten() {
            if !item.file_type().is_ok_and(|t| t.is_file()) {
                continue;
            }
            let name = item.file_name();
            let Some(name) = name.to_str() else { continue };
            let stale = match name.strip_prefix(FILE_PREFIX) {
                Some(rest) => rest
                    .strip_suffix(".bin")
                    .and_then(|id| id.parse::<Id>().ok())
                    .filter(|id| self.path(*id).file_name() == Some(item.file_name().as_os_str()))
                    .is_some_and(|id| !keep(id)),
                None => is_foreign_temporary(name, FILE_PREFIX),
            };
            if stale {
                remove(&item.path());
            }
        }
    }

    /// Removes the tenant's file, if it has one (the tenant is gone).
    /// Blocking.
    pub(crate) fn remove(&self, tenant_id: Id) {
        remove(&self.path(tenant_id));
    }
}

/// Said in the log: these are a customer's numbers leaving the disk.
fn remove(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => tracing::info!(path = %path.display(), "removed kept number readings"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "removing kept number readings failed")
        }
    }
}

/// `Ok(None)`: no file, or one of another region or normalizer.
fn read_file(path: &Path, region: &str, bound: Bound) -> Result<Option<ReadingMap>, String> {
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let mut bytes = Vec::new();
    file.take(bound.bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > bound.bytes {
        return Err(format!(
            "larger than the directory's {} numbers allow",
            bound.readings
        ));
    }
    let body = if let Some(summed) = bytes.strip_prefix(MAGIC.as_slice()) {
        checked_payload(summed)?
    } else {
        bytes
            .strip_prefix(MAGIC_UNSUMMED.as_slice())
            .ok_or("not a readings file of this version")?
    };
    let decoded: In = postcard::from_bytes(body).map_err(|e| e.to_string())?;
    drop(bytes);
    if *decoded.header.normalizer != *NORMALIZER || *decoded.header.region != *region {
        return Ok(None);
    }
    if decoded.readings.len() > bound.readings {
        return Err(format!(
            "more readings than the directory's {} numbers",
            bound.readings
        ));
    }
    let agrees = decoded
        .readings
        .iter()
        .take(SPOT_CHECKS)
        .all(|(spelling, e164)| normalize(spelling, region).ok().as_deref() == e164.as_deref());
    if !agrees {
        return Err("a reading differs from this normalizer's".into());
    }
    Ok(Some(decoded.readings))
}

fn write_file(path: &Path, region: &str, readings: &ReadingMap) -> Result<(), String> {
    // Not synced: a file a crash leaves torn or empty fails its checksum
    // and costs one whole build, as no file does.
    replace_file(path, false, |writer| encode(writer, region, readings))
}

/// The file's bytes, written to `writer`.
fn encode(writer: &mut impl Write, region: &str, readings: &ReadingMap) -> Result<(), String> {
    let out = Out {
        header: Header {
            normalizer: NORMALIZER.into(),
            region: region.into(),
        },
        readings,
    };
    write_checksummed(writer, MAGIC, |payload| encode_to(&out, payload))
}

#[cfg(test)]
#[path = "readings_tests.rs"]
mod tests;
