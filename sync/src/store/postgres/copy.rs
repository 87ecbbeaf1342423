//! A decoder for PostgreSQL's binary COPY format, for the cold load: rows
//! arrive as raw bytes with no per-row message, row object or type lookup,
//! and each field is read in place. The format: an 11-byte signature, a
//! flags word and an extension area; then per tuple an `i16` field count
//! (-1 ends the data) and per field an `i32` length (-1 is NULL) and that
//! many bytes; integers big-endian. Text comes in the client encoding,
//! which sqlx sets to UTF-8, and is checked all the same.

use crate::error::SyncError;
use crate::store::rows::CellError;

const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";
/// More columns than any mirrored table has.
const MAX_FIELDS: usize = 16;

/// One tuple's fields, borrowed from the data.
pub(crate) struct Tuple<'a> {
    fields: [Option<&'a [u8]>; MAX_FIELDS],
    len: usize,
}

/// What a field held that its column should not: the caller adds the
/// table, row and column.
pub(crate) type FieldError = &'static str;

impl<'a> Tuple<'a> {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    fn field(&self, i: usize) -> Option<&'a [u8]> {
        if i < self.len {
            self.fields[i]
        } else {
            None
        }
    }

    pub(crate) fn opt_int8(&self, i: usize) -> Result<Option<i64>, FieldError> {
        self.field(i)
            .map(|b| {
                <[u8; 8]>::try_from(b)
                    .map(i64::from_be_bytes)
                    .map_err(|_| "not an 8-byte integer")
            })
            .transpose()
    }

    pub(crate) fn int8(&self, i: usize) -> Result<i64, FieldError> {
        self.opt_int8(i)?.ok_or("NULL")
    }

    pub(crate) fn int4(&self, i: usize) -> Result<i32, FieldError> {
        let b = self.field(i).ok_or("NULL")?;
        <[u8; 4]>::try_from(b)
            .map(i32::from_be_bytes)
            .map_err(|_| "not a 4-byte integer")
    }

    /// Text as sent, not checked as UTF-8.
    pub(crate) fn opt_bytes(&self, i: usize) -> Option<&'a [u8]> {
        self.field(i)
    }

    pub(crate) fn bytes(&self, i: usize) -> Result<&'a [u8], FieldError> {
        self.field(i).ok_or("NULL")
    }

    pub(crate) fn opt_text(&self, i: usize) -> Result<Option<&'a str>, FieldError> {
        self.field(i)
            .map(|b| std::str::from_utf8(b).map_err(|_| "not UTF-8"))
            .transpose()
    }
}

impl crate::store::rows::Cells for Tuple<'_> {
    fn opt_int8(&self, i: usize) -> Result<Option<i64>, CellError> {
        Tuple::opt_int8(self, i).map_err(CellError::Borrowed)
    }
    fn int4(&self, i: usize) -> Result<i32, CellError> {
        Tuple::int4(self, i).map_err(CellError::Borrowed)
    }
    fn flag(&self, i: usize) -> Result<bool, CellError> {
        match self.bytes(i)? {
            [0] => Ok(false),
            [1] => Ok(true),
            _ => Err(CellError::Borrowed("not a boolean")),
        }
    }
    fn opt_text(&self, i: usize) -> Result<Option<&str>, CellError> {
        Tuple::opt_text(self, i).map_err(CellError::Borrowed)
    }
}

/// Reads a COPY stream chunk by chunk; a tuple cut between chunks waits in
/// `pending` for the rest (PostgreSQL sends a message per row, so this is
/// rare: the header shares the first row's message).
#[derive(Default)]
pub(crate) struct CopyDecoder {
    pending: Vec<u8>,
    header_read: bool,
    ended: bool,
    rows: u64,
}

fn be_i16(b: &[u8]) -> i16 {
    i16::from_be_bytes([b[0], b[1]])
}

fn be_i32(b: &[u8]) -> i32 {
    i32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn bad(what: impl std::fmt::Display) -> SyncError {
    SyncError::Invalid(format!("COPY data from PostgreSQL: {what}"))
}

impl CopyDecoder {
    /// Decodes what `chunk` completes, calling `each` per tuple.
    pub(crate) fn feed(
        &mut self,
        chunk: &[u8],
        mut each: impl FnMut(&Tuple<'_>) -> Result<(), SyncError>,
    ) -> Result<(), SyncError> {
        self.feed_while(chunk, |t| each(t).map(|()| true)).map(drop)
    }

    /// As [`feed`](Self::feed), but `each` may leave a tuple for later
    /// (`false`): that tuple and the rest wait in `pending`, and a later
    /// call (with more data, or none) offers it again. Returns whether
    /// every complete tuple was taken.
    pub(crate) fn feed_while(
        &mut self,
        chunk: &[u8],
        mut each: impl FnMut(&Tuple<'_>) -> Result<bool, SyncError>,
    ) -> Result<bool, SyncError> {
        if self.pending.is_empty() {
            let (used, all) = self.decode(chunk, &mut each)?;
            self.pending.extend_from_slice(&chunk[used..]);
            Ok(all)
        } else {
            let mut pending = std::mem::take(&mut self.pending);
            pending.extend_from_slice(chunk);
            let (used, all) = self.decode(&pending, &mut each)?;
            pending.drain(..used);
            self.pending = pending;
            Ok(all)
        }
    }

    /// Rows decoded; an error unless the data ended properly.
    pub(crate) fn finish(self) -> Result<u64, SyncError> {
        if !self.ended || !self.pending.is_empty() {
            return Err(bad("the data stopped before its end marker"));
        }
        Ok(self.rows)
    }

    /// Decodes the complete tuples at the start of `data` until `each`
    /// leaves one; returns how many bytes the taken ones used, and whether
    /// none was left.
    fn decode(
        &mut self,
        data: &[u8],
        each: &mut impl FnMut(&Tuple<'_>) -> Result<bool, SyncError>,
    ) -> Result<(usize, bool), SyncError> {
        let mut at = 0;
        if !self.header_read {
            if data.len() < SIGNATURE.len() + 8 {
                return Ok((0, true));
            }
            if &data[..SIGNATURE.len()] != SIGNATURE {
                return Err(bad("not binary COPY data"));
            }
            let flags = be_i32(&data[11..]);
            // Bit 16 is OIDs in the data, which we never ask for; bits
            // 0-15 are ones a reader must refuse if it does not know them.
            if flags & 0x0001_ffff != 0 {
                return Err(bad(format!("unexpected header flags {flags:#x}")));
            }
            let extension = be_i32(&data[15..]);
            let Ok(extension) = usize::try_from(extension) else {
                return Err(bad("negative header extension length"));
            };
            if data.len() < 19 + extension {
                return Ok((0, true));
            }
            at = 19 + extension;
            self.header_read = true;
        }
        while at < data.len() {
            if self.ended {
                return Err(bad("data after the end marker"));
            }
            let Some(mut next) = at.checked_add(2).filter(|&n| n <= data.len()) else {
                return Ok((at, true));
            };
            let count = be_i16(&data[at..]);
            if count == -1 {
                self.ended = true;
                at = next;
                continue;
            }
            let count = usize::try_from(count)
                .ok()
                .filter(|&c| c <= MAX_FIELDS)
                .ok_or_else(|| bad(format!("a tuple of {count} fields")))?;
            let mut tuple = Tuple {
                fields: [None; MAX_FIELDS],
                len: count,
            };
            for field in tuple.fields.iter_mut().take(count) {
                if next + 4 > data.len() {
                    return Ok((at, true));
                }
                let len = be_i32(&data[next..]);
                next += 4;
                if len == -1 {
                    continue;
                }
                let len = usize::try_from(len).map_err(|_| bad("negative field length"))?;
                if len > data.len() - next {
                    return Ok((at, true));
                }
                *field = Some(&data[next..next + len]);
                next += len;
            }
            if !each(&tuple)? {
                return Ok((at, false));
            }
            self.rows += 1;
            at = next;
        }
        Ok((at, true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Vec<u8> {
        let mut b = SIGNATURE.to_vec();
        b.extend_from_slice(&0i32.to_be_bytes());
        b.extend_from_slice(&0i32.to_be_bytes());
        b
    }

    fn tuple(fields: &[Option<&[u8]>]) -> Vec<u8> {
        let mut b = (fields.len() as i16).to_be_bytes().to_vec();
        for f in fields {
            match f {
                None => b.extend_from_slice(&(-1i32).to_be_bytes()),
                Some(v) => {
                    b.extend_from_slice(&(v.len() as i32).to_be_bytes());
                    b.extend_from_slice(v);
                }
            }
        }
        b
    }

    fn collect(chunks: &[&[u8]]) -> Result<Vec<(i64, Option<String>)>, SyncError> {
        let mut decoder = CopyDecoder::default();
        let mut out = Vec::new();
        for chunk in chunks {
            decoder.feed(chunk, |t| {
                out.push((
                    t.int8(0).map_err(bad)?,
                    t.opt_text(1).map_err(bad)?.map(String::from),
                ));
                Ok(())
            })?;
        }
        decoder.finish()?;
        Ok(out)
    }

    #[test]
    fn tuples_cut_anywhere_decode_the_same() {
        let mut data = header();
        data.extend(tuple(&[
            Some(&7i64.to_be_bytes()),
            Some("Zoë 東京".as_bytes()),
        ]));
        data.extend(tuple(&[Some(&(-1i64).to_be_bytes()), None]));
        data.extend(tuple(&[Some(&i64::MAX.to_be_bytes()), Some(b"")]));
        data.extend((-1i16).to_be_bytes());
        let want = vec![
            (7, Some("Zoë 東京".to_string())),
            (-1, None),
            (i64::MAX, Some(String::new())),
        ];
        assert_eq!(collect(&[&data]).unwrap(), want);
        for cut in 1..data.len() {
            let (a, b) = data.split_at(cut);
            assert_eq!(collect(&[a, b]).unwrap(), want, "cut at {cut}");
        }
        let bytes: Vec<&[u8]> = data.chunks(1).collect();
        assert_eq!(collect(&bytes).unwrap(), want);
    }

    #[test]
    fn a_tuple_left_for_later_is_offered_again() {
        let mut data = header();
        for id in 1i64..=3 {
            data.extend(tuple(&[Some(&id.to_be_bytes()), None]));
        }
        data.extend((-1i16).to_be_bytes());
        for cut in 1..data.len() {
            let (a, b) = data.split_at(cut);
            let mut decoder = CopyDecoder::default();
            let mut seen = Vec::new();
            let take = |t: &Tuple<'_>, seen: &mut Vec<i64>, allow_two: bool| {
                let id = t.int8(0).map_err(bad)?;
                if id == 2 && !allow_two {
                    return Ok(false);
                }
                seen.push(id);
                Ok(true)
            };
            let first = decoder
                .feed_while(a, |t| take(t, &mut seen, false))
                .unwrap();
            let second = decoder
                .feed_while(b, |t| take(t, &mut seen, false))
                .unwrap();
            assert!(
                !(first && second),
                "cut at {cut}: the second tuple was refused"
            );
            assert_eq!(seen, [1], "cut at {cut}");
            // Offered again with no new data, and refused again: nothing lost.
            assert!(!decoder
                .feed_while(&[], |t| take(t, &mut seen, false))
                .unwrap());
            assert!(decoder
                .feed_while(&[], |t| take(t, &mut seen, true))
                .unwrap());
            assert_eq!(seen, [1, 2, 3], "cut at {cut}");
            assert_eq!(decoder.finish().unwrap(), 3);
        }
    }

    #[test]
    fn damaged_data_is_an_error_not_a_row() {
        let mut ok = header();
        ok.extend(tuple(&[Some(&1i64.to_be_bytes()), Some(b"a")]));
        // No end marker: the stream stopped early.
        assert!(collect(&[&ok]).is_err());
        // Not COPY data at all.
        assert!(collect(&[b"id\tname\n1\ta\n-----------\n"]).is_err());
        // Wrong integer width, invalid UTF-8, a NULL where none may be.
        for fields in [
            [Some(&1i32.to_be_bytes()[..]), Some(&b"a"[..])],
            [Some(&1i64.to_be_bytes()[..]), Some(&b"\xff\xfe"[..])],
            [None, Some(&b"a"[..])],
        ] {
            let mut data = header();
            data.extend(tuple(&fields));
            data.extend((-1i16).to_be_bytes());
            assert!(collect(&[&data]).is_err(), "{fields:?}");
        }
        // Data after the end marker.
        let mut data = header();
        data.extend((-1i16).to_be_bytes());
        data.extend(tuple(&[Some(&1i64.to_be_bytes()), None]));
        assert!(collect(&[&data]).is_err());
        // Too many fields for a tuple.
        let mut data = header();
        data.extend((MAX_FIELDS as i16 + 1).to_be_bytes());
        assert!(collect(&[&data]).is_err());
    }
}
