//! The log lines a test causes, for tests of what a line says and how
//! often it is written. Each line is its message and then its fields as
//! `name=value`, the value written as the fmt layer writes it: `%` fields
//! as they display, `?` fields and `&str` values Debug-quoted.

use std::fmt::Write;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// The lines written on this thread (a `current_thread` runtime's tasks
/// included) while the guard lives.
pub(crate) struct Captured {
    lines: Arc<Mutex<Vec<String>>>,
    _guard: tracing::subscriber::DefaultGuard,
}

pub(crate) fn capture() -> Captured {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let guard = tracing::subscriber::set_default(Capture {
        lines: lines.clone(),
    });
    Captured {
        lines,
        _guard: guard,
    }
}

impl Captured {
    pub(crate) fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// The lines whose message starts with `message`.
    pub(crate) fn starting(&self, message: &str) -> Vec<String> {
        let mut lines = self.lines();
        lines.retain(|l| l.starts_with(message));
        lines
    }
}

struct Capture {
    lines: Arc<Mutex<Vec<String>>>,
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

impl Subscriber for Capture {
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
        self.lines.lock().unwrap().push(text);
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}
