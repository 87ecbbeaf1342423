use std::io::{self, Write};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use super::{LogQueue, NoteFormat, Output, DROPPED};

/// A generous bound on what must not deadlock; nothing here should come
/// near it.
const NO_DEADLOCK: Duration = Duration::from_secs(10);

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// An output that stalls (a journald that stopped reading) until opened,
/// and says when a write has started waiting.
struct Gate {
    started: mpsc::Sender<()>,
    open: Arc<(Mutex<bool>, Condvar)>,
    written: Captured,
}

impl Write for Gate {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let _ = self.started.send(());
        let (open, opened) = &*self.open;
        let mut open = open.lock().unwrap();
        while !*open {
            open = opened.wait(open).unwrap();
        }
        self.written.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn dropped(handle: &PrometheusHandle, reason: &str) -> u64 {
    let series = format!("{DROPPED}{{reason=\"{reason}\"}} ");
    handle
        .render()
        .lines()
        .find_map(|line| line.strip_prefix(&series)?.parse().ok())
        .unwrap_or(0)
}

fn line(i: usize) -> Vec<u8> {
    format!("line {i:04}\n").into_bytes()
}

/// The node's threads log on while the output is stalled: what does not
/// fit is dropped and counted, and once the output moves the lines kept
/// come out, then a line saying how many were lost.
#[test]
fn a_stalled_output_drops_lines_instead_of_blocking_the_logger() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let (started, write_started) = mpsc::channel();
    let open = Arc::new((Mutex::new(false), Condvar::new()));
    let written = Captured::default();
    let gate = Gate {
        started,
        open: open.clone(),
        written: written.clone(),
    };
    let queue_lines = 10;
    let queue = LogQueue::start(
        Box::new(gate),
        queue_lines * line(0).len(),
        NoteFormat::Text,
    )
    .unwrap();

    queue.push(line(0));
    write_started.recv_timeout(NO_DEADLOCK).unwrap();
    let (done, logged) = mpsc::channel();
    let logger = queue.clone();
    std::thread::spawn(move || {
        metrics::with_local_recorder(&recorder, || {
            for i in 1..=1000 {
                logger.push(line(i));
            }
        });
        let _ = done.send(());
    });
    logged
        .recv_timeout(NO_DEADLOCK)
        .expect("logging waited on the stalled output");
    assert_eq!(dropped(&handle, "queue_full"), 1000 - queue_lines as u64);
    assert!(
        !queue.flush(Duration::from_millis(50)),
        "nothing was written"
    );

    let (open, opened) = &*open;
    *open.lock().unwrap() = true;
    opened.notify_all();
    assert!(queue.flush(NO_DEADLOCK));
    let text = written.text();
    let lines: Vec<&str> = text.lines().collect();
    let kept: Vec<String> = (0..=queue_lines).map(|i| format!("line {i:04}")).collect();
    assert_eq!(lines[..=queue_lines], kept, "{text}");
    assert_eq!(lines.len(), queue_lines + 2, "{text}");
    let note = lines[queue_lines + 1];
    assert!(note.contains(" WARN log lines dropped"), "{note}");
    assert!(note.ends_with(" dropped=990"), "{note}");

    // Room again: the next line is kept, with nothing more to note.
    queue.push(b"after\n".to_vec());
    assert!(queue.flush(NO_DEADLOCK));
    assert!(written.text().ends_with("dropped=990\nafter\n"), "{text}");
}

/// A sink that takes `short` bytes of its first write, then fails once
/// with a full disk, then takes everything.
struct FullDisk {
    calls: usize,
    short: usize,
    written: Captured,
}

impl Write for FullDisk {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.calls += 1;
        match self.calls {
            1 if self.short > 0 => self.written.write(&buf[..self.short]),
            1 | 2 => Err(io::Error::from_raw_os_error(28)),
            _ => self.written.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn written_after_a_failure(short: usize) -> (String, u64) {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let written = Captured::default();
    let mut output = Output::new(Box::new(FullDisk {
        calls: 0,
        short,
        written: written.clone(),
    }));
    metrics::with_local_recorder(&recorder, || {
        for text in ["first line\n", "second line\n", "third line\n"] {
            output.write_line(text.as_bytes());
        }
    });
    (written.text(), dropped(&handle, "write_failed"))
}

/// After a write that stopped inside a line (ENOSPC on `log.file`), the
/// next line starts on a line of its own, not glued onto the remains.
#[test]
fn a_line_after_a_short_write_starts_on_a_fresh_line() {
    assert_eq!(
        written_after_a_failure(3),
        ("fir\nsecond line\nthird line\n".to_string(), 1)
    );
    // Writes that fail before a byte goes out lose their lines but leave
    // the output at a line's start: no empty line before the next.
    assert_eq!(written_after_a_failure(0), ("third line\n".to_string(), 2));
}

/// SIGHUP's reopen: what was queued before goes to the old file, what
/// follows to the new one.
#[test]
fn a_switch_takes_the_lines_queued_after_it() {
    let old = Captured::default();
    let new = Captured::default();
    let queue = LogQueue::start(Box::new(old.clone()), 1 << 20, NoteFormat::Json).unwrap();
    queue.push(b"before\n".to_vec());
    queue.switch(Box::new(new.clone()));
    queue.push(b"after\n".to_vec());
    assert!(queue.flush(NO_DEADLOCK));
    assert_eq!(old.text(), "before\n");
    assert_eq!(new.text(), "after\n");
}

#[test]
fn the_json_note_is_a_json_line() {
    let note = NoteFormat::Json.dropped_note(7);
    let parsed: serde_json::Value = serde_json::from_str(note.trim_end()).unwrap();
    assert_eq!(parsed["level"], "WARN");
    assert_eq!(parsed["fields"]["dropped"], 7);
}

/// Events reach the output through the layer's writer, one line each.
#[test]
fn events_logged_through_the_layer_are_written() {
    let written = Captured::default();
    let queue = LogQueue::start(Box::new(written.clone()), 1 << 20, NoteFormat::Text).unwrap();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(queue.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        tracing::warn!(phone = 7, "first");
        tracing::info!("second");
    });
    assert!(queue.flush(NO_DEADLOCK));
    let text = written.text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].contains("first phone=7"), "{text}");
    assert!(lines[1].contains("second"), "{text}");
}
