//! Reading a section: its rows decoded through one reused buffer, its
//! bytes summed as they are read and checked against its checksum.

use std::fs::File;
use std::os::unix::fs::FileExt;

use serde::de::DeserializeOwned;

use super::{Section, TABLE_NAMES};
use crate::snapshot::crc32c::Crc32c;

/// Reads a section's rows through one buffer, refilled as rows are taken,
/// and sums the bytes as they are read.
pub(super) struct SectionReader<'f> {
    file: &'f File,
    /// File offset of the next byte to read, and where the section ends.
    next: u64,
    end: u64,
    buf: Vec<u8>,
    start: usize,
    filled: usize,
    sum: Crc32c,
    section: Section,
    table: &'static str,
}

const CHUNK: usize = 1 << 20;

impl<'f> SectionReader<'f> {
    pub(super) fn new(file: &'f File, sections: &[Section; 7], which: usize) -> SectionReader<'f> {
        let section = sections[which];
        SectionReader {
            file,
            next: section.offset,
            end: section.offset + section.len,
            buf: vec![0; CHUNK.min(section.len as usize)],
            start: 0,
            filled: 0,
            sum: Crc32c::new(),
            section,
            table: TABLE_NAMES[which],
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
        let fresh = &mut self.buf[self.filled..self.filled + want];
        self.file
            .read_exact_at(fresh, self.next)
            .map_err(|e| e.to_string())?;
        self.sum.update(fresh);
        self.filled += want;
        self.next += want as u64;
        Ok(true)
    }

    /// Decodes the section's rows, and checks they fill it and its checksum.
    /// A row `each` is given may be damaged until this returns `Ok`.
    pub(super) fn rows<T: DeserializeOwned>(&mut self, each: impl FnMut(T)) -> Result<(), String> {
        let decoded = self.decode(each);
        // Damage that fails the decoding is named for what it is.
        self.check_sum()?;
        decoded
    }

    /// Sums what is left of the section unread, and compares.
    fn check_sum(&mut self) -> Result<(), String> {
        while self.next < self.end {
            let want = self.buf.len().min((self.end - self.next) as usize);
            let rest = &mut self.buf[..want];
            self.file
                .read_exact_at(rest, self.next)
                .map_err(|e| e.to_string())?;
            self.sum.update(rest);
            self.next += want as u64;
        }
        if self.sum.value() != self.section.checksum {
            return Err(format!(
                "damaged: the {} table fails its checksum",
                self.table
            ));
        }
        Ok(())
    }

    /// Decodes exactly the section's row count of rows, and checks they
    /// fill it.
    fn decode<T: DeserializeOwned>(&mut self, mut each: impl FnMut(T)) -> Result<(), String> {
        for _ in 0..self.section.rows {
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

pub(super) fn table<T: DeserializeOwned>(
    file: &File,
    sections: &[Section; 7],
    which: usize,
) -> Result<Vec<T>, String> {
    let section = sections[which];
    // A count from a damaged index must not size an allocation: a row
    // takes at least a byte, and a row of a large type (a directory entry)
    // is ~100 bytes in memory, so the capacity is bounded by what the
    // section's bytes could hold, and at most a page's worth of rows ahead.
    let mut rows = Vec::with_capacity(section.rows.min(section.len).min(4096) as usize);
    crate::intern::reading_section(|| {
        SectionReader::new(file, sections, which).rows(|r| rows.push(r))
    })?;
    Ok(rows)
}
