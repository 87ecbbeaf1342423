//! Panics reach the log as log lines. Requests, renders, transfers and
//! connections catch their panics so that one costs only its own work, but
//! Rust's default hook still printed each one to stderr: raw (a message
//! could hold line breaks and forge log lines), beside the log's own lines
//! (not JSON, not in `log.file`), unlimited (a template that panics the
//! engine, rendered for 20,000 phones, printed three lines each) and
//! written by the panicking thread itself, which a stalled journald then
//! held. Through `tracing` a panic is one escaped line, queued like any,
//! at most one a second from one place in the code.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use dialtone_sync::LogLimit;

/// Places whose panics are limited apart, so that one a tenant can cause
/// at will (an engine's, a handler's) never hides another: the panic that
/// ends a task or the process is logged even in the second after the
/// tenant's. Past this many places, the rest share one limit.
const PLACES: usize = 256;

/// When a place last logged, and its panics left out since.
struct Place {
    last: Instant,
    skipped: u64,
}

static BY_PLACE: Mutex<Option<HashMap<String, Place>>> = Mutex::new(None);
static ELSEWHERE: LogLimit = LogLimit::new();

/// `Some(panics left out at `place` since its last line)` when one may
/// be logged now: once a second per place.
fn allowed(place: &str) -> Option<u64> {
    let now = Instant::now();
    let mut places = BY_PLACE.lock().unwrap_or_else(|e| e.into_inner());
    let places = places.get_or_insert_with(HashMap::new);
    if let Some(known) = places.get_mut(place) {
        if now.duration_since(known.last) < Duration::from_secs(1) {
            known.skipped += 1;
            return None;
        }
        known.last = now;
        return Some(std::mem::take(&mut known.skipped));
    }
    if places.len() < PLACES {
        places.insert(
            place.to_string(),
            Place {
                last: now,
                skipped: 0,
            },
        );
        return Some(0);
    }
    ELSEWHERE.allow()
}

/// Replaces the default hook. After the log is set up, so that a panic
/// before it (a bad command line) still reaches stderr.
pub fn install() {
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let Some(panics_not_logged) = allowed(&location) else {
            return;
        };
        let panic = info
            .payload()
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| info.payload().downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(no message)");
        let thread = std::thread::current();
        let thread = thread.name().unwrap_or("unnamed");
        // The log cannot carry a panic on the thread that writes it out
        // (its line would wait for that very thread), nor one before any
        // subscriber: those go to stderr, written without `eprintln!`,
        // which panics itself when stderr is gone (a restarted journald),
        // and a panic in the hook aborts the process.
        let unheard = thread == crate::logging::queue::WRITER_THREAD
            || tracing::dispatcher::get_default(|d| d.is::<tracing::subscriber::NoSubscriber>());
        if unheard {
            let _ = writeln!(
                std::io::stderr(),
                "dialtone: a panic at {location} on thread {thread}: {panic:?}"
            );
            return;
        }
        // Only when RUST_BACKTRACE asks, as the default hook does.
        let backtrace = std::backtrace::Backtrace::capture();
        let backtrace = (backtrace.status() == std::backtrace::BacktraceStatus::Captured)
            .then(|| backtrace.to_string());
        tracing::error!(
            panic,
            location,
            thread,
            backtrace,
            panics_not_logged,
            "a panic (a request, render or transfer that panics fails alone; elsewhere the task or process ends); at most one a second from one place"
        );
    }));
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Captured {
        /// A subscriber writing plain lines here.
        fn subscriber(&self) -> impl tracing::Subscriber + Send + Sync {
            let writer = self.clone();
            tracing_subscriber::fmt()
                .with_writer(move || writer.clone())
                .with_ansi(false)
                .finish()
        }

        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    impl Write for Captured {
        fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(data);
            Ok(data.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Caught panics are logged through `tracing`, at most one a second
    /// from one place; a panic elsewhere in that second still is.
    #[test]
    fn caught_panics_are_log_lines_limited_by_place() {
        super::install();
        let captured = Captured::default();
        let subscriber = captured.subscriber();
        tracing::subscriber::with_default(subscriber, || {
            for n in 0..5 {
                let caught = std::panic::catch_unwind(|| panic!("render {n}\nforged line"));
                assert!(caught.is_err());
            }
            let caught = std::panic::catch_unwind(|| panic!("elsewhere"));
            assert!(caught.is_err());
        });
        let text = captured.text();
        assert_eq!(text.matches("a panic (").count(), 2, "{text}");
        assert!(text.contains("render 0"), "{text}");
        assert!(text.contains("elsewhere"), "{text}");
        assert!(text.contains("panics.rs:"), "{text}");
        let _ = std::panic::take_hook();
    }

    /// What a place's limit left out is counted on its next line: one
    /// line a second looks the same for one panic a second as for
    /// thousands.
    #[test]
    fn a_places_next_line_counts_the_panics_left_out() {
        super::install();
        let captured = Captured::default();
        let subscriber = captured.subscriber();
        let panic_here = || {
            let caught = std::panic::catch_unwind(|| panic!("counted"));
            assert!(caught.is_err());
        };
        tracing::subscriber::with_default(subscriber, || {
            for _ in 0..5 {
                panic_here();
            }
            std::thread::sleep(std::time::Duration::from_millis(1100));
            panic_here();
        });
        let text = captured.text();
        let lines: Vec<&str> = text.lines().filter(|l| l.contains("counted")).collect();
        let left_out: u64 = lines
            .iter()
            .filter_map(|l| l.split("panics_not_logged=").nth(1)?.split(' ').next())
            .map(|n| n.parse::<u64>().unwrap())
            .sum();
        assert!(lines.len() >= 2, "{text}");
        assert_eq!(lines.len() as u64 + left_out, 6, "{text}");
        let _ = std::panic::take_hook();
    }

    /// A panic on the thread that writes the log out cannot be one of its
    /// lines (it would wait for that very thread): stderr has it.
    #[test]
    fn a_panic_on_the_log_writer_is_not_queued_to_it() {
        super::install();
        let captured = Captured::default();
        let subscriber = captured.subscriber();
        std::thread::Builder::new()
            .name(crate::logging::queue::WRITER_THREAD.to_string())
            .spawn(move || {
                tracing::subscriber::with_default(subscriber, || {
                    let caught = std::panic::catch_unwind(|| panic!("the writer's own"));
                    assert!(caught.is_err());
                    tracing::info!("still logging");
                });
            })
            .unwrap()
            .join()
            .unwrap();
        let text = captured.text();
        assert!(text.contains("still logging"), "{text}");
        assert!(!text.contains("the writer's own"), "{text}");
        let _ = std::panic::take_hook();
    }
}
