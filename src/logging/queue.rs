//! The hand-off between the log layer and the output. Tasks on the
//! runtime's workers log; when each line was written where it was logged,
//! a stalled journald pipe or a hung disk blocked that worker, and the
//! writers' lock every other worker that logged: HTTP, lookups and
//! /healthz stopped answering until the watchdog killed the node. Lines
//! now go into a bounded queue that one thread of its own writes out, and
//! a line that finds the queue full is dropped and counted, never waited
//! for.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::MakeWriter;

/// Bytes of formatted lines held for the writer. At some 250 bytes a line
/// that is ~30,000 lines: several seconds of the busiest logging (a ban
/// wave, every source of a tenant failing) through a journald restart, for
/// at most 8 MiB beside a mirror of hundreds of MB. Bounded in bytes, not
/// lines, because a line's length is partly tenants' text.
pub const QUEUE_BYTES: usize = 8 << 20;

/// Lines lost, by reason: queue_full (the output had not kept up),
/// write_failed (the write returned an error: a full disk, a closed pipe).
pub const DROPPED: &str = "dialtone_log_lines_dropped_total";

pub type Sink = Box<dyn Write + Send>;

/// The thread that writes the log out: a panic on it goes to stderr
/// (`panics.rs`).
pub const WRITER_THREAD: &str = "log-writer";

/// How the writer's own line about dropped lines is formatted: as the
/// layer formats the lines around it, so whatever parses the log reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoteFormat {
    Text,
    Json,
}

impl NoteFormat {
    fn dropped_note(self, count: u64) -> String {
        let mut time = String::new();
        let _ = SystemTime.format_time(&mut Writer::new(&mut time));
        let message = "log lines dropped: the log output did not keep up";
        match self {
            NoteFormat::Text => format!("{time}  WARN {message} dropped={count}\n"),
            NoteFormat::Json => format!(
                "{{\"timestamp\":\"{time}\",\"level\":\"WARN\",\"fields\":{{\"message\":\"{message}\",\"dropped\":{count}}}}}\n"
            ),
        }
    }
}

enum Item {
    Line(Vec<u8>),
    /// Lines dropped just before the next one kept: the note stands where
    /// the gap is.
    Dropped(u64),
    /// The output from here on (the file SIGHUP reopened): queued in line,
    /// so what was logged before the reopen goes to the old file.
    Switch(Sink),
}

struct State {
    items: VecDeque<Item>,
    /// Bytes of the lines in `items`, held under the queue's capacity.
    bytes: usize,
    /// Dropped since the last note or `Item::Dropped`.
    dropped: u64,
    /// The writer holds an item it took and has not finished writing.
    writing: bool,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the writer.
    queued: Condvar,
    /// Wakes a flush waiting for the writer to run out of work.
    idle: Condvar,
    capacity: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Clone)]
pub struct LogQueue(Arc<Shared>);

impl LogQueue {
    /// Starts the writer thread on `sink`. A std thread: the runtime's own
    /// threads are what a blocked write must not hold.
    pub fn start(sink: Sink, capacity: usize, note: NoteFormat) -> io::Result<LogQueue> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                items: VecDeque::new(),
                bytes: 0,
                dropped: 0,
                writing: false,
            }),
            queued: Condvar::new(),
            idle: Condvar::new(),
            capacity,
        });
        let for_writer = shared.clone();
        std::thread::Builder::new()
            .name(WRITER_THREAD.to_string())
            .spawn(move || write_out(&for_writer, Output::new(sink), note))?;
        Ok(LogQueue(shared))
    }

    /// Queues a line, or drops and counts it when the queue is full; never
    /// waits on the output.
    pub fn push(&self, line: Vec<u8>) {
        let kept = {
            let mut state = self.0.lock();
            if state.bytes + line.len() > self.0.capacity {
                state.dropped += 1;
                false
            } else {
                if state.dropped > 0 {
                    let dropped = std::mem::take(&mut state.dropped);
                    state.items.push_back(Item::Dropped(dropped));
                }
                state.bytes += line.len();
                state.items.push_back(Item::Line(line));
                true
            }
        };
        if kept {
            self.0.queued.notify_one();
        } else {
            metrics::counter!(DROPPED, "reason" => "queue_full").increment(1);
        }
    }

    /// Makes `sink` the output for every line queued after this call.
    pub fn switch(&self, sink: Sink) {
        self.0.lock().items.push_back(Item::Switch(sink));
        self.0.queued.notify_one();
    }

    /// Waits, at most `timeout`, until everything queued so far (and the
    /// note of any lines dropped) is written; whether it was.
    pub fn flush(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.0.lock();
        while !state.items.is_empty() || state.writing || state.dropped > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            state = self
                .0
                .idle
                .wait_timeout(state, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }
}

/// One event's text, queued whole when the layer is done with it (the fmt
/// layer writes an event in one call, but nothing here depends on that).
pub struct QueuedLine<'a> {
    queue: &'a LogQueue,
    line: Vec<u8>,
}

impl Write for QueuedLine<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.line.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for QueuedLine<'_> {
    fn drop(&mut self) {
        if !self.line.is_empty() {
            self.queue.push(std::mem::take(&mut self.line));
        }
    }
}

impl<'a> MakeWriter<'a> for LogQueue {
    type Writer = QueuedLine<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        QueuedLine {
            queue: self,
            line: Vec::new(),
        }
    }
}

/// The writer thread: takes one item at a time, so the queue's bound holds
/// everything but the line being written.
fn write_out(shared: &Shared, mut output: Output, note: NoteFormat) {
    loop {
        let item = {
            let mut state = shared.lock();
            state.writing = false;
            loop {
                let item = match state.items.pop_front() {
                    Some(item) => Some(item),
                    None if state.dropped > 0 => {
                        Some(Item::Dropped(std::mem::take(&mut state.dropped)))
                    }
                    None => None,
                };
                if let Some(item) = item {
                    if let Item::Line(line) = &item {
                        state.bytes -= line.len();
                    }
                    // Under the same lock as the pop: a flush must not see
                    // an empty queue while this item is still unwritten.
                    state.writing = true;
                    break item;
                }
                let _ = output.sink.flush();
                shared.idle.notify_all();
                state = shared.queued.wait(state).unwrap_or_else(|e| e.into_inner());
            }
        };
        match item {
            Item::Line(line) => output.write_line(&line),
            Item::Dropped(count) => output.write_line(note.dropped_note(count).as_bytes()),
            Item::Switch(sink) => {
                let _ = output.sink.flush();
                output = Output::new(sink);
            }
        }
    }
}

pub(super) struct Output {
    sink: Sink,
    /// False after a write that stopped inside a line: the next line
    /// starts with a newline rather than glued onto the remains.
    at_line_start: bool,
}

impl Output {
    pub(super) fn new(sink: Sink) -> Output {
        Output {
            sink,
            at_line_start: true,
        }
    }

    pub(super) fn write_line(&mut self, line: &[u8]) {
        if !self.at_line_start {
            match self.write_some(b"\n") {
                (_, Ok(())) => self.at_line_start = true,
                (_, Err(_)) => {
                    metrics::counter!(DROPPED, "reason" => "write_failed").increment(1);
                    return;
                }
            }
        }
        let (written, result) = self.write_some(line);
        if written > 0 {
            self.at_line_start = line[..written].ends_with(b"\n");
        }
        if result.is_err() {
            metrics::counter!(DROPPED, "reason" => "write_failed").increment(1);
        }
    }

    /// Writes `bytes` until done or an error; how many went out.
    fn write_some(&mut self, bytes: &[u8]) -> (usize, io::Result<()>) {
        let mut written = 0;
        while written < bytes.len() {
            match self.sink.write(&bytes[written..]) {
                Ok(0) => return (written, Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return (written, Err(e)),
            }
        }
        (written, Ok(()))
    }
}

#[cfg(test)]
#[path = "queue_tests.rs"]
mod tests;
