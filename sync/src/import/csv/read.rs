//! The reading half of the CSV parse, on a thread of its own: csv's
//! tokenizing, each record's line, batches handed to the checks.

use crate::model::Mac;

/// The input as csv reads it, noting where its line breaks are. csv's
/// own position of a record is where its read began, before the blank
/// lines it skipped, so every error after a blank line named a line too
/// early; a record's line is found from where it ends instead. Only the
/// breaks csv has read ahead and not yet passed are kept (its buffer's).
pub(super) struct Lines<R> {
    inner: R,
    read: u64,
    ahead: std::collections::VecDeque<u64>,
    passed: u64,
}

impl<R: std::io::Read> std::io::Read for Lines<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        for i in memchr::memchr_iter(b'\n', &buf[..n]) {
            self.ahead.push_back(self.read + i as u64);
        }
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

/// The line `record` (just read, its cells' bytes) starts on: the line of
/// its last byte (its terminator, or its last field's at the end of the
/// input) less the line breaks inside its quoted fields.
fn start_line<R: std::io::Read>(reader: &mut ::csv::Reader<Lines<R>>, record: &[u8]) -> u64 {
    let inner = memchr::memchr_iter(b'\n', record).count();
    let end = reader.position().byte();
    let last = reader.get_mut().line_of(end.saturating_sub(1));
    last.saturating_sub(inner as u64).max(1)
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
/// the MAC's position in a phones file.
pub(super) fn read_ahead<R: std::io::Read>(
    mut reader: ::csv::Reader<Lines<R>>,
    mac_cell: Option<usize>,
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
    loop {
        let mut records = empty.try_recv().unwrap_or_default();
        records.resize_with(READ_AHEAD, Default::default);
        let (mut filled, mut malformed, mut failed, mut ended) = (0, Vec::new(), None, false);
        while filled < READ_AHEAD {
            let slot = &mut records[filled].0;
            let mut raw = std::mem::replace(slot, spare).into_byte_record();
            let read = reader.read_byte_record(&mut raw);
            let (record, not_utf8) = match ::csv::StringRecord::from_byte_record(raw) {
                Ok(record) => (record, None),
                Err(e) => {
                    let cell = e.utf8_error().field();
                    let mut raw = e.into_byte_record();
                    let found = (start_line(&mut reader, raw.as_slice()), cell, mac_of(&raw));
                    raw.clear();
                    let record = ::csv::StringRecord::from_byte_record(raw).unwrap_or_default();
                    (record, Some(found))
                }
            };
            spare = std::mem::replace(slot, record);
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
            let line = start_line(&mut reader, record.as_slice().as_bytes());
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
