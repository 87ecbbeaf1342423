//! The template engine and the budget every render runs under.
//!
//! Templates are written by tenant admins, so a render is untrusted work:
//! it must stop by itself, whatever the template does. MiniJinja's fuel is
//! the engine-side budget: every instruction costs fuel, and so does every
//! byte a render produces (output, concatenated or repeated strings, filter
//! results), checked before large allocations. A loop that runs too long, a
//! string that doubles and an output that grows all run out of fuel. On top
//! of that, comparisons of tenant data are charged for every item they
//! visit, up to as many items as there is fuel (`data.rs`: MiniJinja
//! charges only the outermost pair), the output is capped in bytes, and
//! the render checks a wall-clock deadline at every write, every call of a
//! function or filter of ours and every so many items of data it visits
//! (a loop that writes nothing still calls `range` or walks data); the
//! render pool (`pool.rs`) enforces the same deadline on whoever waits,
//! and keeps renders off the TFTP listener and the async workers.
//!
//! The syntax is the one users wrote for Tera: Jinja's, plus Tera's keyword
//! forms `range(end=…)`, `default(value=…)` and `throw(message=…)`, all in
//! `engine/functions.rs` with MiniJinja's `round` and `format` bounded.

use std::io::Write;
use std::time::{Duration, Instant};

use minijinja::{Environment, Error, ErrorKind, State, UndefinedBehavior, Value};

use dialtone_sync::model::clip;

use crate::error::ProvisionError;

mod escape;
mod functions;

use escape::write_xml_chars;
pub(crate) use escape::{write_text, write_xml};

/// What one render may spend. Defaults leave the largest shipped file (a
/// phone with the most lines and keys its family has) far inside every
/// limit; `tests/budget.rs` checks that.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// MiniJinja fuel: one per instruction, plus one per 64 bytes of data
    /// produced. Also bounds the memory a render can build up.
    pub fuel: u64,
    /// Largest rendered file.
    pub output_bytes: usize,
    /// Longest a render may take, from the moment it starts running.
    pub time: Duration,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            fuel: 500_000,
            output_bytes: 1 << 20,
            time: Duration::from_millis(250),
        }
    }
}

/// Who reads the errors of a render.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reader {
    /// The template's author, checking or previewing it with the phone's
    /// secrets masked: the engine's whole detail, a `throw`'s text too.
    Author,
    /// Logs, provisioning history and the failed-render memo, of a render
    /// with the phone's real secrets: the failure's kind and position only.
    /// A `throw`, or the engine quoting a value, may put any value of the
    /// context (a line's password) in the detail.
    Operator,
}

/// One template, compiled, with the escaping of its file format.
pub struct Engine {
    env: Environment<'static>,
    name: &'static str,
}

/// How `{{ }}` output is made safe for the file format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Escape {
    Xml,
    /// `key = value` formats: no line breaks inside a value.
    Text,
}

impl Engine {
    /// Parses `body`. Syntax errors carry the line and column.
    pub fn compile(
        label: &str,
        name: &'static str,
        body: &str,
        escape: Escape,
        budget: &Budget,
    ) -> Result<Engine, ProvisionError> {
        crate::engine_check::check(name, body).map_err(|refused| ProvisionError::Render {
            template: label.to_string(),
            line: Some(refused.line),
            column: Some(refused.column),
            message: refused.message,
        })?;
        let mut env = Environment::new();
        env.set_debug(true);
        // Tera keeps it, and a phone re-applies a file on any byte change.
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .keep_trailing_newline(true)
            .build()
            .map_err(|e| template_error(label, body, &e, None, Reader::Author))?;
        env.set_syntax(syntax);
        env.set_fuel(Some(budget.fuel));
        // Like Tera: an unknown name is an error (a typo fails the preview,
        // not a phone), but `{% if x %}` and `is defined` may ask about it.
        env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
        let output_bytes = budget.output_bytes;
        env.set_formatter(move |out, state, value| {
            if EXCEEDED.get().is_none() {
                format_value(out, value, escape, output_bytes)?;
            }
            if EXCEEDED.get().is_some() || crate::data::exhausted() {
                state.consume_fuel(u64::MAX)?;
            }
            Ok(())
        });
        functions::register(&mut env);
        env.add_template_owned(name, body.to_string())
            .map_err(|e| template_error(label, body, &e, None, Reader::Author))?;
        Ok(Engine { env, name })
    }

    /// Renders with `context`, within `budget`, with errors for the
    /// template's author.
    pub fn render(
        &self,
        label: &str,
        body: &str,
        context: Value,
        budget: &Budget,
    ) -> Result<Vec<u8>, ProvisionError> {
        self.render_for(Reader::Author, label, body, context, budget)
    }

    /// Renders with `context`, within `budget`, with errors for `reader`.
    pub fn render_for(
        &self,
        reader: Reader,
        label: &str,
        body: &str,
        context: Value,
        budget: &Budget,
    ) -> Result<Vec<u8>, ProvisionError> {
        let failed = |e: &Error, exceeded| template_error(label, body, e, exceeded, reader);
        let template = self
            .env
            .get_template(self.name)
            .map_err(|e| failed(&e, None))?;
        EXCEEDED.set(None);
        DEADLINE.set(Some(Instant::now() + budget.time));
        crate::data::start(budget.fuel);
        let mut out = Bounded {
            buf: Vec::new(),
            limit: budget.output_bytes,
        };
        // A panic inside the engine must cost this phone its file, not the
        // server its worker.
        let rendered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            template.render_captured_to(context, &mut out).map(|_| ())
        }));
        DEADLINE.set(None);
        let compared_too_much = crate::data::finish();
        let exceeded = EXCEEDED
            .take()
            .map(|limit| limit.describe(budget))
            .or_else(|| compared_too_much.then(|| OUT_OF_STEPS.to_string()));
        match rendered {
            Ok(Ok(())) if exceeded.is_none() => Ok(out.buf),
            // Output that ran past its cap with no `{{ }}` after it: the
            // render ended, but the file is not whole.
            Ok(Ok(())) => Err(ProvisionError::Render {
                template: label.to_string(),
                line: None,
                column: None,
                message: exceeded.unwrap_or_default(),
            }),
            Ok(Err(e)) => Err(failed(&e, exceeded)),
            Err(_) => Err(ProvisionError::Render {
                template: label.to_string(),
                line: None,
                column: None,
                message: "the template engine panicked".into(),
            }),
        }
    }

    /// The fuel one render with `context` consumes (budget checks in tests).
    pub fn fuel_used(&self, context: Value) -> Result<u64, Error> {
        let template = self.env.get_template(self.name)?;
        let captured = template.render_captured(context)?;
        Ok(captured.state().fuel_levels().map_or(0, |(used, _)| used))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Limit {
    Output,
    Time,
}

impl Limit {
    fn describe(self, budget: &Budget) -> String {
        match self {
            Limit::Output => format!(
                "the rendered file passed its size budget of {} bytes",
                budget.output_bytes
            ),
            Limit::Time => format!(
                "{} of {} ms",
                crate::error::TIME_BUDGET,
                budget.time.as_millis()
            ),
        }
    }
}

thread_local! {
    /// The limit of ours a render on this thread ran into, if any.
    static EXCEEDED: std::cell::Cell<Option<Limit>> = const { std::cell::Cell::new(None) };
    /// When this thread's render must end; `None` outside a render.
    static DEADLINE: std::cell::Cell<Option<Instant>> = const { std::cell::Cell::new(None) };
}

/// Whether this thread's render has passed its deadline; the first to see
/// it raises `EXCEEDED`, so the render fails with the time budget's error.
pub(crate) fn out_of_time() -> bool {
    let past = DEADLINE
        .get()
        .is_some_and(|deadline| Instant::now() >= deadline);
    if past && EXCEEDED.get().is_none() {
        EXCEEDED.set(Some(Limit::Time));
    }
    past
}

/// Stops the render once past its deadline: the fuel is emptied, so the
/// engine fails at its next step wherever this error is taken.
pub(crate) fn in_time(state: &State) -> Result<(), Error> {
    if out_of_time() {
        state.consume_fuel(u64::MAX)?;
    }
    Ok(())
}

/// The render's output: capped in bytes, and the deadline is checked at
/// every write. Past either it keeps nothing more and raises `EXCEEDED`;
/// the next `{{ }}` then empties the fuel, so the engine stops with the
/// position of that expression (an I/O error would lose it), and a loop
/// with no `{{ }}` stops at its next function call, filter, data walk or
/// when its fuel runs out.
struct Bounded {
    buf: Vec<u8>,
    limit: usize,
}

impl Write for Bounded {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if EXCEEDED.get().is_some() {
            return Ok(data.len());
        }
        if self.buf.len() + data.len() > self.limit {
            EXCEEDED.set(Some(Limit::Output));
        } else if !out_of_time() {
            self.buf.extend_from_slice(data);
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The text of a value, made no longer than the file may be: a value
/// built by repeating data is printed by walking it, and its whole text
/// (gigabytes from a template of a few lines) was made before the output
/// cap could see it.
struct CappedText {
    text: String,
    cap: usize,
}

impl std::fmt::Write for CappedText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        if self.text.len() + s.len() > self.cap {
            return Err(std::fmt::Error);
        }
        self.text.push_str(s);
        Ok(())
    }
}

fn format_value(
    out: &mut minijinja::Output,
    value: &Value,
    escape: Escape,
    output_bytes: usize,
) -> Result<(), Error> {
    if value.is_undefined() {
        return Err(Error::new(
            ErrorKind::UndefinedError,
            "this name is not in the render context",
        ));
    }
    if value.is_none() {
        return Ok(());
    }
    let mut capped = CappedText {
        text: String::new(),
        cap: output_bytes,
    };
    if std::fmt::Write::write_fmt(&mut capped, format_args!("{value}")).is_err() {
        EXCEEDED.set(Some(Limit::Output));
        return Ok(());
    }
    let text = capped.text;
    // Text marked safe is the template's to write as it is: `| safe` (an
    // author's own markup), or a `{% filter %}` block's, its values escaped
    // already, where MiniJinja takes the template's name for HTML's
    // (`.xml`, `.htm`). What no XML parser reads still goes.
    let written = if value.is_safe() {
        match escape {
            Escape::Xml => write_xml_chars(out, &text),
            Escape::Text => out.write_str(&text),
        }
    } else {
        match escape {
            Escape::Xml => write_xml(out, &text),
            Escape::Text => write_text(out, &text),
        }
    };
    written.map_err(|_| Error::new(ErrorKind::WriteFailure, "the output was refused"))
}

/// Longest engine detail an error keeps for the template's author: a
/// template's `throw` sets the detail, up to the template's or a
/// variable's size.
const MAX_ERROR_DETAIL: usize = 1024;

const OUT_OF_STEPS: &str =
    "the render used up its budget of steps: a loop runs too long or builds too much text";

/// Where MiniJinja says the error is, as a line and a 1-based column;
/// `exceeded` replaces the engine's message when a limit of ours stopped it.
/// The engine's detail is for the template's author only.
fn template_error(
    label: &str,
    body: &str,
    error: &Error,
    exceeded: Option<String>,
    reader: Reader,
) -> ProvisionError {
    let column = error.range().and_then(|range| {
        let before = body.get(..range.start)?;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Some(before[line_start..].chars().count() + 1)
    });
    let message = match (exceeded, error.kind()) {
        (Some(limit), _) => limit,
        (None, ErrorKind::OutOfFuel) => OUT_OF_STEPS.to_string(),
        (None, kind) if reader == Reader::Operator => kind.to_string(),
        (None, kind) => match error.detail() {
            Some(detail) => format!("{kind}: {}", clip(detail, MAX_ERROR_DETAIL)),
            None => kind.to_string(),
        },
    };
    ProvisionError::Render {
        template: label.to_string(),
        line: error.line(),
        column,
        message,
    }
}

#[cfg(test)]
#[path = "engine_limits_tests.rs"]
mod limits_tests;
