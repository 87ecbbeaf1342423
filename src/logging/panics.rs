//! Panics reach the log as log lines. Requests, renders, transfers and
//! connections catch their panics so that one costs only its own work, but
//! Rust's default hook still printed each one to stderr: raw (a message
//! could hold line breaks and forge log lines), beside the log's own lines
//! (not JSON, not in `log.file`), unlimited (a template that panics the
//! engine, rendered for 20,000 phones, printed three lines each) and
//! written by the panicking thread itself, which a stalled journald then
//! held. Through `tracing` a panic is one escaped line, queued like any,
//! at most one a second.

use dialtone_sync::LogLimit;

static PANICS: LogLimit = LogLimit::new();

/// Replaces the default hook. After the log is set up, so that a panic
/// before it (a bad command line) still reaches stderr.
pub fn install() {
    std::panic::set_hook(Box::new(|info| {
        let Some(skipped) = PANICS.allow() else {
            return;
        };
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| info.payload().downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(no message)");
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let thread = std::thread::current();
        // Only when RUST_BACKTRACE asks, as the default hook does.
        let backtrace = std::backtrace::Backtrace::capture();
        let backtrace = (backtrace.status() == std::backtrace::BacktraceStatus::Captured)
            .then(|| backtrace.to_string());
        tracing::error!(
            message,
            location,
            thread = thread.name().unwrap_or("unnamed"),
            backtrace,
            panics_not_logged = skipped,
            "a panic (a request, render or transfer that panics fails alone; elsewhere the task or process ends)"
        );
    }));
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(data);
            Ok(data.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Caught panics are logged through `tracing`, at most one a second,
    /// the next line counting those left out.
    #[test]
    fn caught_panics_are_log_lines_and_limited() {
        super::install();
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            for n in 0..5 {
                let caught = std::panic::catch_unwind(|| panic!("render {n}\nforged line"));
                assert!(caught.is_err());
            }
        });
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.matches("a panic (").count(), 1, "{text}");
        assert!(text.contains("render 0"), "{text}");
        assert!(text.contains("panics.rs:"), "{text}");
        let _ = std::panic::take_hook();
    }
}
