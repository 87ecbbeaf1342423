//! The snapshot file, format 6:
//!
//! ```text
//! "DTSNAP\0\x06"           magic and format
//! u64 (little endian)      where the index starts
//! 7 sections               one per table, rows postcard-encoded back to back
//! index                    postcard: the header, each section's offset,
//!                          length, row count and CRC-32C, and the timeline
//! u32 (little endian)      CRC-32C of the first 16 bytes and the index
//! ```
//!
//! A section per table, with its row count, lets a load size every map
//! exactly and decode phones and lines on two threads at once, each reading
//! its own part of the file through one reused buffer (positional reads, so
//! nothing as large as the file is ever allocated). Within a section, an
//! interned field (a model, a registrar, `{}` settings) is written out the
//! first time and as an index after (`intern::writing_section`), so a load
//! takes the shared value without hashing or checking the text again.
//!
//! Every byte is under a checksum (`crc32c.rs`), and a file that fails
//! one is refused whole, naming the part that failed: the index's before
//! it is decoded, a section's as its rows are read, so the file is still
//! read once. Damage mostly decodes as rows (a flipped bit in a MAC is
//! another valid MAC), and a node would serve them, and write them into
//! every later snapshot, as if the database held them.
//!
//! Format 1 was one postcard value for the whole file, decoded into
//! vectors first; format 2 wrote every interned field out; formats 3 and 4
//! had this layout without the checksums; format 5 had no timeline, and is
//! still read (the previous release writes it), its timeline unknown.

mod reader;
#[cfg(test)]
mod write_tests;

use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;

use serde::{Deserialize, Serialize};

use reader::{table, SectionReader};

use super::crc32c::Crc32c;
use super::SnapshotHeader;
use crate::mirror::{LineGroups, LineKey, LineRows, Loading, PhoneRows, Tables};
use crate::model::*;

/// Format 5 adds the checksums. A file of format 4 is refused as every
/// older format has been: the node loads from the database once, rather
/// than keep rows no checksum ever covered (format 4's reader could not
/// tell a damaged row from a real one). Format 4 was laid out as format 3,
/// whose reader could give a row the wrong shared value (a row cut by the
/// read buffer counted its new values twice).
///
/// Format 6 adds the database's WAL timeline (`Meta::timeline`) at the
/// index's end: a node started from its snapshot after a failover to a
/// standby reloads in full rather than mix the two databases. The field
/// could not go where format 5's reader would skip it (every byte of the
/// index is decoded and checked), so that reader refuses format 6 and
/// loads from the database, as it says.
pub(super) const MAGIC: &[u8; 8] = b"DTSNAP\x00\x06";
/// The format before, read as this one with no timeline.
pub(super) const MAGIC_5: &[u8; 8] = b"DTSNAP\x00\x05";
/// What every format's magic starts with; the last byte is the format.
const FAMILY: &[u8; 7] = b"DTSNAP\x00";
const PREFIX: u64 = 16;
/// The index's checksum, after it.
const TRAILER: u64 = 4;

/// The tables, in the order their sections are written.
const TENANTS: usize = 0;
const PHONES: usize = 1;
const LINES: usize = 2;
const TEMPLATES: usize = 3;
const DIRECTORY_ENTRIES: usize = 4;
const DIRECTORY_SOURCES: usize = 5;
const API_TOKENS: usize = 6;

/// What a damaged section is called.
const TABLE_NAMES: [&str; 7] = [
    "tenants",
    "phones",
    "lines",
    "templates",
    "directory entries",
    "directory sources",
    "API tokens",
];

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub(super) struct Section {
    pub(super) offset: u64,
    pub(super) len: u64,
    pub(super) rows: u64,
    /// CRC-32C of the section's bytes.
    pub(super) checksum: u32,
}

impl Section {
    /// What to size a phone or line table for: the rows the bytes can hold
    /// at least (a row of either is more than 8 bytes), so a damaged count
    /// cannot ask for much.
    fn row_capacity(&self) -> usize {
        self.rows.min(self.len / 8) as usize
    }
}

#[derive(Serialize, Deserialize)]
pub(super) struct Index {
    pub(super) header: SnapshotHeader,
    pub(super) sections: [Section; 7],
    /// The header's `meta.timeline`, which the header's encoding leaves out
    /// (format 5's layout).
    pub(super) timeline: Option<u32>,
}

/// Format 5's index: format 6's without the timeline.
#[derive(Deserialize)]
struct Index5 {
    header: SnapshotHeader,
    sections: [Section; 7],
}

/// What the rows go through on their way to the file: counted and summed
/// for the section offsets and checksums, each encoded into one reused
/// buffer and handed to the file's buffer whole. Postcard's own writer
/// (`to_io`) flushes after every value, which made a write(2) of each row
/// through the 1 MiB buffer, and it reports any I/O error, a full disk
/// too, as its "serialize buffer is full".
struct Counting<W> {
    inner: W,
    at: u64,
    sum: Crc32c,
    row: Vec<u8>,
}

impl<W: Write> Counting<W> {
    fn new(inner: W) -> Counting<W> {
        Counting {
            inner,
            at: 0,
            sum: Crc32c::new(),
            row: Vec::new(),
        }
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.inner.write_all(bytes)?;
        self.at += bytes.len() as u64;
        self.sum.update(bytes);
        Ok(())
    }

    fn put_row<T: Serialize>(&mut self, row: &T) -> io::Result<()> {
        let mut encoded = std::mem::take(&mut self.row);
        encoded.clear();
        let encoded = postcard::to_extend(row, encoded).map_err(unencodable)?;
        let written = self.put(&encoded);
        self.row = encoded;
        written
    }
}

/// Encoding into memory fails only for a type postcard cannot encode,
/// which no row or index is: a bug to name as such, not as the disk.
fn unencodable(e: postcard::Error) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("cannot encode the snapshot: {e}"),
    )
}

fn section<'a, T: Serialize + 'a, W: Write>(
    out: &mut Counting<W>,
    rows: impl IntoIterator<Item = &'a T>,
) -> io::Result<Section> {
    let offset = out.at;
    out.sum = Crc32c::new();
    let mut count = 0;
    crate::intern::writing_section(|| {
        for row in rows {
            out.put_row(row)?;
            count += 1;
        }
        Ok::<_, io::Error>(())
    })?;
    Ok(Section {
        offset,
        len: out.at - offset,
        rows: count,
        checksum: out.sum.value(),
    })
}

/// The checksum that follows the index: over the file's first 16 bytes
/// (the format, and where the index is) and the index.
pub(super) fn index_checksum(magic: &[u8; 8], index_at: u64, index: &[u8]) -> u32 {
    let mut sum = Crc32c::new();
    sum.update(magic);
    sum.update(&index_at.to_le_bytes());
    sum.update(index);
    sum.value()
}

/// Writes `tables` to `file` (from its start). The caller syncs and renames.
pub(super) fn write(file: File, header: &SnapshotHeader, tables: &Tables<'_>) -> io::Result<File> {
    let (mut file, index_at) = write_to(file, header, tables)?;
    file.seek(SeekFrom::Start(MAGIC.len() as u64))?;
    file.write_all(&index_at.to_le_bytes())?;
    Ok(file)
}

/// Writes the snapshot to `inner` through a 1 MiB buffer, with where the
/// index starts left as zeros: what `write` patches once it is known.
/// Returns `inner`, flushed, and where the index starts.
fn write_to<W: Write>(
    inner: W,
    header: &SnapshotHeader,
    tables: &Tables<'_>,
) -> io::Result<(W, u64)> {
    let mut out = Counting::new(io::BufWriter::with_capacity(1 << 20, inner));
    out.put(MAGIC)?;
    out.put(&[0; 8])?;
    let sections = [
        section(&mut out, tables.tenants())?,
        section(&mut out, tables.phones())?,
        section(&mut out, tables.lines_by_phone())?,
        section(&mut out, tables.templates())?,
        section(&mut out, tables.directory_entries())?,
        section(&mut out, tables.directory_sources())?,
        section(&mut out, tables.api_tokens())?,
    ];
    let index_at = out.at;
    let index = Index {
        header: header.clone(),
        sections,
        timeline: header.meta.timeline,
    };
    let index = postcard::to_allocvec(&index).map_err(unencodable)?;
    out.put(&index)?;
    out.put(&index_checksum(MAGIC, index_at, &index).to_le_bytes())?;
    let inner = out
        .inner
        .into_inner()
        .map_err(io::IntoInnerError::into_error)?;
    Ok((inner, index_at))
}

/// Line keys sent to the indexing thread at once.
const KEY_BATCH: usize = 4096;

/// The longest index (with its trailer) a snapshot may have.
const MAX_INDEX_BYTES: u64 = 64 << 10;

/// Why a file is not a snapshot this binary can load, or its index.
fn index(file: &File) -> Result<Index, String> {
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    let mut prefix = [0u8; PREFIX as usize];
    if len < PREFIX || file.read_exact_at(&mut prefix, 0).is_err() {
        return Err("not a dialtone snapshot (too short)".into());
    }
    let magic = match &prefix[..8] {
        m if m == MAGIC => MAGIC,
        m if m == MAGIC_5 => MAGIC_5,
        _ if prefix.starts_with(FAMILY) => {
            return Err(format!(
                "written in snapshot format {} by another version of dialtone (this one reads formats {} and {})",
                prefix[7], MAGIC_5[7], MAGIC[7]
            ))
        }
        _ => return Err("not a dialtone snapshot".into()),
    };
    let index_at = u64::from_le_bytes(prefix[8..].try_into().expect("8 bytes"));
    if index_at < PREFIX || index_at >= len.saturating_sub(TRAILER) {
        return Err("damaged: the index is outside the file".into());
    }
    // A header and seven sections' places: a few hundred bytes. Read
    // before its checksum, a damaged offset near the file's start would
    // have read most of a snapshot of hundreds of MB into memory first.
    if len - index_at > MAX_INDEX_BYTES {
        return Err("damaged: the index is too long".into());
    }
    let mut bytes = vec![0; (len - index_at) as usize];
    file.read_exact_at(&mut bytes, index_at)
        .map_err(|e| e.to_string())?;
    let (bytes, stored) = bytes.split_at(bytes.len() - TRAILER as usize);
    if index_checksum(magic, index_at, bytes).to_le_bytes() != stored {
        return Err("damaged: the header and index fail their checksum".into());
    }
    let damaged = |e: postcard::Error| format!("damaged index: {e}");
    let (mut index, rest) = if magic == MAGIC_5 {
        let (Index5 { header, sections }, rest) =
            postcard::take_from_bytes::<Index5>(bytes).map_err(damaged)?;
        let index = Index {
            header,
            sections,
            timeline: None,
        };
        (index, rest)
    } else {
        postcard::take_from_bytes::<Index>(bytes).map_err(damaged)?
    };
    index.header.meta.timeline = index.timeline;
    if !rest.is_empty() {
        return Err("damaged: bytes after the index".into());
    }
    let mut at = PREFIX;
    for s in &index.sections {
        if s.offset != at || s.len > index_at - at {
            return Err("damaged: a table lies outside its place".into());
        }
        at += s.len;
    }
    if at != index_at {
        return Err("damaged: bytes between the tables and the index".into());
    }
    Ok(index)
}

/// Loads a snapshot: phones on this thread, lines on another, each built
/// into the mirror's tables as decoded. The phones are done first (a line
/// costs more to decode), and this thread then indexes the lines by phone
/// from their keys, sent over while the other thread still decodes: on one
/// thread after both, that index had been the load's last ~60 ms.
pub(super) fn load(file: &File) -> Result<(SnapshotHeader, Loading), String> {
    let Index {
        header, sections, ..
    } = index(file)?;
    use crate::intern::reading_section;
    let (phones, lines) = std::thread::scope(|scope| {
        // Bounded by the section's rows, as the maps they index are.
        let (keys, arriving) = std::sync::mpsc::channel::<Vec<LineKey>>();
        let lines = scope.spawn(move || {
            reading_section(|| {
                let mut rows = LineRows::indexed_beside(sections[LINES].row_capacity());
                let mut batch = Vec::with_capacity(KEY_BATCH);
                SectionReader::new(file, &sections, LINES).rows(|l: Line| {
                    batch.push((l.phone_id, l.position, l.id));
                    if batch.len() == KEY_BATCH {
                        // Gone only when the phone thread failed: so has the load.
                        let _ =
                            keys.send(std::mem::replace(&mut batch, Vec::with_capacity(KEY_BATCH)));
                    }
                    rows.push(l)
                })?;
                let _ = keys.send(batch);
                Ok::<_, String>(rows)
            })
        });
        let phones = reading_section(|| {
            let mut rows = PhoneRows::with_capacity(sections[PHONES].row_capacity());
            SectionReader::new(file, &sections, PHONES).rows(|p: Phone| rows.push(p))?;
            Ok::<_, String>(rows)
        });
        let decoded = phones.as_ref().map_or(0, PhoneRows::len);
        let mut groups = LineGroups::with_capacity(decoded);
        // Ends when the line thread drops its sender, done or failed.
        for batch in arriving {
            batch.into_iter().for_each(|key| groups.push(key));
        }
        let lines = lines
            .join()
            .unwrap_or_else(|_| Err("the line reader panicked".into()))
            .map(|mut rows| {
                rows.index_with(groups);
                rows
            });
        (phones, lines)
    });
    let loading = Loading {
        tenants: table(file, &sections, TENANTS)?,
        phones: phones?,
        lines: lines?,
        templates: table(file, &sections, TEMPLATES)?,
        directory_entries: table(file, &sections, DIRECTORY_ENTRIES)?,
        directory_sources: table(file, &sections, DIRECTORY_SOURCES)?,
        api_tokens: table(file, &sections, API_TOKENS)?,
        seen_above: None,
    };
    Ok((header, loading))
}
