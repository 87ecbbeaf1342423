//! The reading half of the CSV parse, on a thread of its own: csv's
//! tokenizing, each record's line, batches handed to the checks.

use crate::model::Mac;

/// The input as csv reads it, noting where its line breaks are (LF, CRLF,
/// or a CR alone, as csv takes each). csv's own position of a record is
/// where its read began, before the blank lines it skipped, so every
/// error after a blank line named a line too early; a record's line is
/// found from where it ends instead. Only the breaks csv has read ahead
/// and not yet passed are kept (its buffer's).
///
/// Once [`Lines::mark_end`] is called, the input is followed by
/// [`END_MARK`]: csv ends a record at the end of the input even inside a
/// quoted cell, so a quote never closed took every line after it into
/// its cell without a word. The mark tells the two apart (see
/// [`end_of_input`]).
pub(super) struct Lines<R> {
    inner: R,
    read: u64,
    ahead: std::collections::VecDeque<u64>,
    passed: u64,
    /// A CR that ended the last read: a line break of its own unless the
    /// next byte is the LF of a CRLF.
    cr_at_end: Option<u64>,
    /// What is left to give of the end mark; `None` before it is asked for.
    mark: Option<&'static [u8]>,
    inner_ended: bool,
}

/// A line break, then a record of one cell that is not UTF-8 and so
/// cannot be a cell of the file's own: after a record that ended, it is a
/// record of its own; inside a quoted cell, the end of that cell.
const END_MARK: &[u8] = b"\n\xff";

impl<R: std::io::Read> std::io::Read for Lines<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut n = 0;
        if !self.inner_ended && !buf.is_empty() {
            n = self.inner.read(buf)?;
            self.inner_ended = n == 0;
        }
        if self.inner_ended {
            if let Some(mark) = &mut self.mark {
                n = mark.len().min(buf.len());
                buf[..n].copy_from_slice(&mark[..n]);
                *mark = &mark[n..];
            }
        }
        self.note_breaks(&buf[..n]);
        self.read += n as u64;
        Ok(n)
    }
}

impl<R> Lines<R> {
    pub(super) fn new(inner: R) -> Self {
        Lines {
            inner,
            read: 0,
            ahead: Default::default(),
            passed: 0,
            cr_at_end: None,
            mark: None,
            inner_ended: false,
        }
    }

    /// Follows the input with [`END_MARK`], unless csv has already seen
    /// its end (the header was all of it, so nothing can be in a cell).
    fn mark_end(&mut self) {
        if !self.inner_ended {
            self.mark = Some(END_MARK);
        }
    }

    /// Whether a record read up to byte `at` ended with the input and
    /// its mark.
    fn at_marked_end(&self, at: u64) -> bool {
        self.mark.is_some_and(<[u8]>::is_empty) && at == self.read
    }

    fn note_breaks(&mut self, bytes: &[u8]) {
        if let Some(cr) = self.cr_at_end.take() {
            if bytes.first() != Some(&b'\n') {
                self.ahead.push_back(cr);
            }
        }
        for i in memchr::memchr2_iter(b'\n', b'\r', bytes) {
            let at = self.read + i as u64;
            match bytes.get(i + 1) {
                _ if bytes[i] == b'\n' => self.ahead.push_back(at),
                Some(b'\n') => {}
                Some(_) => self.ahead.push_back(at),
                None => self.cr_at_end = Some(at),
            }
        }
    }

    /// The line (from 1) of byte `at`; `at` never goes back.
    fn line_of(&mut self, at: u64) -> u64 {
        while self.ahead.front().is_some_and(|&b| b < at) {
            self.ahead.pop_front();
            self.passed += 1;
        }
        self.passed + 1
    }
}

/// Line breaks in `text` as [`Lines`] counts them.
fn line_breaks(text: &[u8]) -> usize {
    let lone_crs = memchr::memchr_iter(b'\r', text)
        .filter(|&i| text.get(i + 1) != Some(&b'\n'))
        .count();
    memchr::memchr_iter(b'\n', text).count() + lone_crs
}

/// The line `record` (just read) starts on: the line of its last byte
/// (its terminator, or its last field's at the end of the input) less
/// the line breaks inside its quoted fields.
fn start_line<R: std::io::Read>(
    reader: &mut ::csv::Reader<Lines<R>>,
    record: &::csv::ByteRecord,
) -> u64 {
    // Cell by cell only with a CR: a cell's closing CR and the next one's
    // opening LF are two breaks, not a CRLF.
    let inner: usize = if memchr::memchr(b'\r', record.as_slice()).is_some() {
        record.iter().map(line_breaks).sum()
    } else {
        memchr::memchr_iter(b'\n', record.as_slice()).count()
    };
    let end = reader.position().byte();
    let last = reader.get_mut().line_of(end.saturating_sub(1));
    last.saturating_sub(inner as u64).max(1)
}

/// Takes off the escape the export gives a cell a spreadsheet would run
/// as a formula ([`crate::export::formula`]). `scratch` is any record, to
/// reuse its allocation: a rare row has an escaped cell at all.
fn unescape_formulas(record: &mut ::csv::StringRecord, scratch: &mut ::csv::StringRecord) {
    use crate::export::formula::unescape;
    if memchr::memchr(b'\'', record.as_slice().as_bytes()).is_none()
        || !record.iter().any(|cell| unescape(cell).is_some())
    {
        return;
    }
    scratch.clear();
    for cell in record.iter() {
        scratch.push_field(unescape(cell).unwrap_or(cell));
    }
    std::mem::swap(record, scratch);
}

/// What a record read at the end of the input is, if it is there.
enum AtEnd {
    /// [`END_MARK`]'s record: the input ended between records.
    Mark,
    /// A quoted cell open at the end of the input, as (its line, the
    /// error): what looks like the rows after it is that cell's text.
    OpenQuote(u64, String),
}

fn end_of_input<R: std::io::Read>(
    reader: &mut ::csv::Reader<Lines<R>>,
    record: &::csv::ByteRecord,
) -> Option<AtEnd> {
    if record.is_empty() || !reader.get_ref().at_marked_end(reader.position().byte()) {
        return None;
    }
    if record.len() == 1 && record.as_slice() == &END_MARK[1..] {
        return Some(AtEnd::Mark);
    }
    // The mark fell into the record's last cell: a quote was open there.
    let cells = record.len();
    let before: usize = record.iter().take(cells - 1).map(line_breaks).sum();
    let line = start_line(reader, record) + before as u64;
    let column = match reader.byte_headers().ok().and_then(|h| h.get(cells - 1)) {
        Some(name) => format!("{cells} ({})", String::from_utf8_lossy(name).trim()),
        None => cells.to_string(),
    };
    Some(AtEnd::OpenQuote(
        line,
        format!(
            "malformed CSV: the quote that opens the cell in column {column} on this line is \
             never closed, so every line after it would be read into that cell"
        ),
    ))
}

/// Records per hand-over: large enough that the channel costs nothing per
/// row, small enough to stay in cache (~0.5 MB).
const READ_AHEAD: usize = 2048;

/// A batch of non-blank records with the line each starts on; `filled` of
/// them are this batch's (the vector is reused). `malformed` are the
/// records csv could not take among them, in order; `failed` (the input
/// could not be read) ends the input.
pub(super) struct ReadAhead {
    pub records: Vec<(::csv::StringRecord, u64)>,
    pub filled: usize,
    pub malformed: Vec<Malformed>,
    pub failed: Option<(u64, String)>,
}

/// A record csv could not take: a cell too many or too few, or text that
/// is not UTF-8. It spoils only its own row, so it is reported where it
/// is and the rest of the file is still read and checked.
pub(super) struct Malformed {
    /// The good records of its batch before it.
    pub before: usize,
    pub line: u64,
    /// Its cell at fault (from 0), when csv names one.
    pub cell: Option<usize>,
    pub message: String,
    /// What its MAC cell reads as, when it has one: a phone must not be
    /// imported without the line this row was to give it.
    pub mac: Option<Mac>,
}

/// Reads every record into batches for the checking thread. `mac_cell` is
/// the MAC's position in a phones file; `escaped` says the file carries
/// the export's mark that formula escapes are to be taken off.
pub(super) fn read_ahead<R: std::io::Read>(
    mut reader: ::csv::Reader<Lines<R>>,
    mac_cell: Option<usize>,
    escaped: bool,
    full: &std::sync::mpsc::SyncSender<ReadAhead>,
    empty: &std::sync::mpsc::Receiver<Vec<(::csv::StringRecord, u64)>>,
) {
    let mac_of = |record: &::csv::ByteRecord| {
        let cell = record.get(mac_cell?)?;
        std::str::from_utf8(cell).ok()?.parse::<Mac>().ok()
    };
    // Swapped into a batch's place while that place's record is read as
    // bytes (a pointer swap, no allocation): csv empties a `StringRecord`
    // that is not UTF-8, and the bytes are what tell its line and MAC.
    let mut spare = ::csv::StringRecord::new();
    reader.get_mut().mark_end();
    loop {
        let mut records = empty.try_recv().unwrap_or_default();
        records.resize_with(READ_AHEAD, Default::default);
        let (mut filled, mut malformed, mut failed, mut ended) = (0, Vec::new(), None, false);
        while filled < READ_AHEAD {
            let slot = &mut records[filled].0;
            let mut raw = std::mem::replace(slot, spare).into_byte_record();
            let read = reader.read_byte_record(&mut raw);
            let at_end = end_of_input(&mut reader, &raw);
            if at_end.is_some() {
                // Not a row of the file: nothing of it is kept.
                raw.clear();
            }
            let (record, not_utf8) = match ::csv::StringRecord::from_byte_record(raw) {
                Ok(record) => (record, None),
                Err(e) => {
                    let cell = e.utf8_error().field();
                    let mut raw = e.into_byte_record();
                    let found = (start_line(&mut reader, &raw), cell, mac_of(&raw));
                    raw.clear();
                    let record = ::csv::StringRecord::from_byte_record(raw).unwrap_or_default();
                    (record, Some(found))
                }
            };
            spare = std::mem::replace(slot, record);
            match at_end {
                Some(AtEnd::Mark) => {
                    ended = true;
                    break;
                }
                Some(AtEnd::OpenQuote(line, message)) => {
                    failed = Some((line, message));
                    break;
                }
                None => {}
            }
            let unequal = match read {
                Ok(true) => None,
                Ok(false) => {
                    ended = true;
                    break;
                }
                Err(e) => match e.kind() {
                    ::csv::ErrorKind::UnequalLengths {
                        expected_len, len, ..
                    } => Some((*expected_len, *len)),
                    // Not the file's content: the rest cannot be read.
                    _ => {
                        let at = reader.position().byte();
                        let line = reader.get_mut().line_of(at);
                        failed = Some((line, format!("cannot read: {e}")));
                        break;
                    }
                },
            };
            if let Some((line, cell, mac)) = not_utf8 {
                malformed.push(Malformed {
                    before: filled,
                    line,
                    cell: Some(cell),
                    message: "malformed CSV: the cell is not valid UTF-8 (save the file as UTF-8)"
                        .into(),
                    mac,
                });
                continue;
            }
            let record = &records[filled].0;
            let line = start_line(&mut reader, record.as_byte_record());
            if record.iter().all(|f| crate::model::trim(f).is_empty()) {
                continue;
            }
            if let Some((expected, len)) = unequal {
                malformed.push(Malformed {
                    before: filled,
                    line,
                    cell: None,
                    message: format!(
                        "malformed CSV: {len} cells where the header has {expected} \
                         (a comma or quote out of place?)"
                    ),
                    mac: mac_of(record.as_byte_record()),
                });
                continue;
            }
            if escaped {
                unescape_formulas(&mut records[filled].0, &mut spare);
            }
            records[filled].1 = line;
            filled += 1;
        }
        let last = ended || failed.is_some();
        if full
            .send(ReadAhead {
                records,
                filled,
                malformed,
                failed,
            })
            .is_err()
            || last
        {
            return;
        }
    }
}
