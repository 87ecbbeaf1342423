//! The reading half of the CSV parse, on a thread of its own: csv's
//! tokenizing, each record's line, batches handed to the checks.

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

/// The line `record` (just read) starts on: the line of its last byte (its
/// terminator, or its last field's at the end of the input) less the line
/// breaks inside its quoted fields.
fn start_line<R: std::io::Read>(
    reader: &mut ::csv::Reader<Lines<R>>,
    record: &::csv::StringRecord,
) -> u64 {
    let inner = memchr::memchr_iter(b'\n', record.as_slice().as_bytes()).count();
    let end = reader.position().byte();
    let last = reader.get_mut().line_of(end.saturating_sub(1));
    last.saturating_sub(inner as u64).max(1)
}

/// Records per hand-over: large enough that the channel costs nothing per
/// row, small enough to stay in cache (~0.5 MB).
const READ_AHEAD: usize = 2048;

/// A batch of non-blank records with the line each starts on; `filled` of
/// them are this batch's (the vector is reused). `failed` ends the input.
pub(super) struct ReadAhead {
    pub records: Vec<(::csv::StringRecord, u64)>,
    pub filled: usize,
    pub failed: Option<(u64, String)>,
}

pub(super) fn read_ahead<R: std::io::Read>(
    mut reader: ::csv::Reader<Lines<R>>,
    full: &std::sync::mpsc::SyncSender<ReadAhead>,
    empty: &std::sync::mpsc::Receiver<Vec<(::csv::StringRecord, u64)>>,
) {
    loop {
        let mut records = empty.try_recv().unwrap_or_default();
        records.resize_with(READ_AHEAD, Default::default);
        let (mut filled, mut failed, mut ended) = (0, None, false);
        while filled < READ_AHEAD {
            let record = &mut records[filled].0;
            match reader.read_record(record) {
                Ok(true) => {}
                Ok(false) => {
                    ended = true;
                    break;
                }
                Err(e) => {
                    let line = e.position().map_or(0, |p| p.line());
                    failed = Some((line, format!("malformed CSV: {e}")));
                    break;
                }
            }
            let line = start_line(&mut reader, record);
            if record.iter().all(|f| crate::model::trim(f).is_empty()) {
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
                failed,
            })
            .is_err()
            || last
        {
            return;
        }
    }
}
