//! The log lines a test causes, for tests of what a line says and how
//! often it is written. Each line is its message and then its fields as
//! ` name=value`, the value written as the fmt layer writes a `?` field
//! (strings Debug-quoted); its level is kept beside it.

use std::fmt::Write;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// Every event logged to it, in order. A clone shares the lines.
#[derive(Clone, Default)]
pub struct LogLines {
    lines: Arc<Mutex<Vec<(Level, String)>>>,
}

/// `LogLines` receiving this thread's events (a `current_thread`
/// runtime's tasks included) while it lives.
pub struct Captured {
    lines: LogLines,
    _guard: tracing::subscriber::DefaultGuard,
}

impl std::ops::Deref for Captured {
    type Target = LogLines;
    fn deref(&self) -> &LogLines {
        &self.lines
    }
}

/// This thread's events from now until the result is dropped.
pub fn capture() -> Captured {
    let lines = LogLines::default();
    let guard = tracing::subscriber::set_default(lines.clone());
    Captured {
        lines,
        _guard: guard,
    }
}

impl LogLines {
    /// Every thread's events, for a test whose code logs on threads of its
    /// own (a test binary can do this once).
    pub fn process_wide() -> LogLines {
        let lines = LogLines::default();
        tracing::subscriber::set_global_default(lines.clone())
            .expect("no other process-wide subscriber in this test binary");
        lines
    }

    pub fn lines(&self) -> Vec<String> {
        let lines = self.lines.lock().unwrap();
        lines.iter().map(|(_, line)| line.clone()).collect()
    }

    /// The lines with their levels.
    pub fn events(&self) -> Vec<(Level, String)> {
        self.lines.lock().unwrap().clone()
    }

    /// The lines whose message starts with `message`.
    pub fn starting(&self, message: &str) -> Vec<String> {
        let mut lines = self.lines();
        lines.retain(|line| line.starts_with(message));
        lines
    }

    /// The lines holding `text` anywhere, fields included.
    pub fn containing(&self, text: &str) -> Vec<String> {
        let mut lines = self.lines();
        lines.retain(|line| line.contains(text));
        lines
    }
}

#[derive(Default)]
struct Line {
    message: String,
    fields: String,
}

impl Visit for Line {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.record_debug(field, &value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }
}

impl Subscriber for LogLines {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut line = Line::default();
        event.record(&mut line);
        let text = format!("{}{}", line.message, line.fields);
        let level = *event.metadata().level();
        self.lines.lock().unwrap().push((level, text));
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}
