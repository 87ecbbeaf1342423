//! The snapshot file, format 3:
//!
//! ```text
//! "DTSNAP\0\x03"           magic and format
//! u64 (little endian)      where the index starts
//! 7 sections               one per table, rows postcard-encoded back to back
//! index                    postcard: the header and each section's offset,
//!                          length and row count
//! ```
//!
//! A section per table, with its row count, lets a load size every map
//! exactly and decode phones and lines on two threads at once, each reading
//! its own part of the file through one reused buffer (positional reads, so
//! nothing as large as the file is ever allocated). Within a section, an
//! interned field (a model, a registrar, `{}` settings) is written out the
//! first time and as an index after (`intern::writing_section`), so a load
//! takes the shared value without hashing or checking the text again.
//! Format 1 was one postcard value for the whole file, decoded into
//! vectors first; format 2 wrote every interned field out.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::SnapshotHeader;
use crate::mirror::{LineGroups, LineKey, LineRows, Loading, PhoneRows, Tables};
use crate::model::*;

/// Format 4 is laid out as format 3. Format 3's reader could give a row
/// the wrong shared value (a row cut by the read buffer counted its new
/// values twice), and a node then wrote its misread mirror into its next
/// snapshot; a file from such a node is refused, so it loads from the
/// database once.
pub(super) const MAGIC: &[u8; 8] = b"DTSNAP\x00\x04";
/// What every format's magic starts with; the last byte is the format.
const FAMILY: &[u8; 7] = b"DTSNAP\x00";
const PREFIX: u64 = 16;

/// The tables, in the order their sections are written.
const TENANTS: usize = 0;
const PHONES: usize = 1;
const LINES: usize = 2;
const TEMPLATES: usize = 3;
const DIRECTORY_ENTRIES: usize = 4;
const DIRECTORY_SOURCES: usize = 5;
const API_TOKENS: usize = 6;

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub(super) struct Section {
    offset: u64,
    len: u64,
    pub(super) rows: u64,
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
    header: SnapshotHeader,
    pub(super) sections: [Section; 7],
}

/// Counts what goes through, for section offsets.
struct Counting<W> {
    inner: W,
    at: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.at += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn section<'a, T: Serialize + 'a, W: Write>(
    out: &mut Counting<W>,
    rows: impl IntoIterator<Item = &'a T>,
) -> Result<Section, String> {
    let offset = out.at;
    let mut count = 0;
    crate::intern::writing_section(|| {
        for row in rows {
            postcard::to_io(row, &mut *out).map_err(|e| e.to_string())?;
            count += 1;
        }
        Ok::<_, String>(())
    })?;
    Ok(Section {
        offset,
        len: out.at - offset,
        rows: count,
    })
}

/// Writes `tables` to `file` (from its start). The caller syncs and renames.
pub(super) fn write(
    file: File,
    header: &SnapshotHeader,
    tables: &Tables<'_>,
) -> Result<File, String> {
    let mut out = Counting {
        inner: std::io::BufWriter::with_capacity(1 << 20, file),
        at: 0,
    };
    let io = |e: std::io::Error| e.to_string();
    out.write_all(MAGIC).map_err(io)?;
    out.write_all(&[0; 8]).map_err(io)?;
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
    };
    postcard::to_io(&index, &mut out).map_err(|e| e.to_string())?;
    let mut file = out.inner.into_inner().map_err(|e| e.to_string())?;
    file.seek(SeekFrom::Start(MAGIC.len() as u64)).map_err(io)?;
    file.write_all(&index_at.to_le_bytes()).map_err(io)?;
    Ok(file)
}

/// Reads a section's rows through one buffer, refilled as rows are taken.
struct SectionReader<'f> {
    file: &'f File,
    /// File offset of the next byte to read, and where the section ends.
    next: u64,
    end: u64,
    buf: Vec<u8>,
    start: usize,
    filled: usize,
}

const CHUNK: usize = 1 << 20;

/// Line keys sent to the indexing thread at once.
const KEY_BATCH: usize = 4096;

impl<'f> SectionReader<'f> {
    fn new(file: &'f File, section: Section) -> SectionReader<'f> {
        SectionReader {
            file,
            next: section.offset,
            end: section.offset + section.len,
            buf: vec![0; CHUNK.min(section.len as usize)],
            start: 0,
            filled: 0,
        }
    }

    /// Reads more of the section behind what is buffered; false at its end.
    fn refill(&mut self) -> Result<bool, String> {
        if self.next == self.end {
            return Ok(false);
        }
        self.buf.copy_within(self.start..self.filled, 0);
        self.filled -= self.start;
        self.start = 0;
        if self.filled == self.buf.len() {
            // One row larger than the buffer (a long template body).
            self.buf.resize(self.buf.len().max(1024) * 2, 0);
        }
        let want = (self.buf.len() - self.filled).min((self.end - self.next) as usize);
        self.file
            .read_exact_at(&mut self.buf[self.filled..self.filled + want], self.next)
            .map_err(|e| e.to_string())?;
        self.filled += want;
        self.next += want as u64;
        Ok(true)
    }

    /// Decodes exactly `rows` rows, and checks they fill the section.
    fn rows<T: DeserializeOwned>(
        &mut self,
        rows: u64,
        mut each: impl FnMut(T),
    ) -> Result<(), String> {
        for _ in 0..rows {
            loop {
                let mark = crate::intern::reading_mark();
                let taken = match postcard::take_from_bytes::<T>(&self.buf[self.start..self.filled])
                {
                    Ok((row, rest)) => Some((row, rest.len())),
                    // A row cut by the end of the buffer: read on, unless
                    // the section ends there (then it is damaged). It is
                    // decoded again from its start, so the shared values it
                    // met before the cut are forgotten.
                    Err(postcard::Error::DeserializeUnexpectedEnd) => {
                        crate::intern::reading_rewind(mark);
                        None
                    }
                    Err(e) => return Err(e.to_string()),
                };
                match taken {
                    Some((row, rest)) => {
                        self.start = self.filled - rest;
                        each(row);
                        break;
                    }
                    None if self.refill()? => {}
                    None => return Err("a table ends in the middle of a row".into()),
                }
            }
        }
        if self.start != self.filled || self.next != self.end {
            return Err("a table holds more than its row count says".into());
        }
        Ok(())
    }
}

fn table<T: DeserializeOwned>(file: &File, section: Section) -> Result<Vec<T>, String> {
    // A count from a damaged index must not size an allocation: a row
    // takes at least a byte, and a row of a large type (a directory entry)
    // is ~100 bytes in memory, so the capacity is bounded by what the
    // section's bytes could hold, and at most a page's worth of rows ahead.
    let mut rows = Vec::with_capacity(section.rows.min(section.len).min(4096) as usize);
    crate::intern::reading_section(|| {
        SectionReader::new(file, section).rows(section.rows, |r| rows.push(r))
    })?;
    Ok(rows)
}

/// Why a file is not a snapshot this binary can load, or its index.
fn index(file: &File) -> Result<Index, String> {
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    let mut prefix = [0u8; PREFIX as usize];
    if len < PREFIX || file.read_exact_at(&mut prefix, 0).is_err() {
        return Err("not a dialtone snapshot (too short)".into());
    }
    if &prefix[..8] != MAGIC {
        return Err(if prefix.starts_with(FAMILY) {
            format!(
                "written in snapshot format {} by another version of dialtone (this one reads format {})",
                prefix[7], MAGIC[7]
            )
        } else {
            "not a dialtone snapshot".into()
        });
    }
    let index_at = u64::from_le_bytes(prefix[8..].try_into().expect("8 bytes"));
    if index_at < PREFIX || index_at >= len {
        return Err("damaged: the index is outside the file".into());
    }
    let mut bytes = vec![0; (len - index_at) as usize];
    file.read_exact_at(&mut bytes, index_at)
        .map_err(|e| e.to_string())?;
    let (index, rest) =
        postcard::take_from_bytes::<Index>(&bytes).map_err(|e| format!("damaged index: {e}"))?;
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
    let Index { header, sections } = index(file)?;
    use crate::intern::reading_section;
    let (phones, lines) = std::thread::scope(|scope| {
        // Bounded by the section's rows, as the maps they index are.
        let (keys, arriving) = std::sync::mpsc::channel::<Vec<LineKey>>();
        let lines = scope.spawn(move || {
            reading_section(|| {
                let s = sections[LINES];
                let mut rows = LineRows::indexed_beside(s.row_capacity());
                let mut batch = Vec::with_capacity(KEY_BATCH);
                SectionReader::new(file, s).rows(s.rows, |l: Line| {
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
            let s = sections[PHONES];
            let mut rows = PhoneRows::with_capacity(s.row_capacity());
            SectionReader::new(file, s).rows(s.rows, |p: Phone| rows.push(p))?;
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
        tenants: table(file, sections[TENANTS])?,
        phones: phones?,
        lines: lines?,
        templates: table(file, sections[TEMPLATES])?,
        directory_entries: table(file, sections[DIRECTORY_ENTRIES])?,
        directory_sources: table(file, sections[DIRECTORY_SOURCES])?,
        api_tokens: table(file, sections[API_TOKENS])?,
        seen_above: None,
    };
    Ok((header, loading))
}
