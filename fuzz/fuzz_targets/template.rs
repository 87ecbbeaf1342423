//! Template bodies are tenant-written code. Checking, compiling and
//! rendering any text ends in a file or an error with a position: never a
//! panic, and never an abort (a stack overflow ends the whole process,
//! every tenant with it). The context holds data of every shape a real one
//! has. Beyond "no crash": a render stays inside its output budget.
//!
//! What overflowed a stack took thousands of one construct in a row (an
//! `elif` after an `elif`, `((((`, `not not`), which the fuzzer seldom
//! writes by itself. With the selector's second bit set, the body is cut
//! at its first two NULs and the middle part repeated up to the template
//! quota. Seeds worth keeping in the corpus: `\x02{% if 0 %}\0{% elif 0
//! %}\0{% endif %}`, and likewise `{{ ` with `(`, `[`, `{'a':`, `~1`,
//! `+1`, `|lower`, `not `, `-`, `.a`, `[0]` or ` if 1 else 1`, and
//! `{% for i in [1] %}` or `{% filter upper %}` alone.
#![no_main]

use std::borrow::Cow;
use std::time::Duration;

use dialtone_tftp::engine::{Budget, Engine, Escape};
use libfuzzer_sys::fuzz_target;
use minijinja::Value;

const BUDGET: Budget = Budget {
    fuel: 50_000,
    output_bytes: 64 << 10,
    time: Duration::from_millis(250),
};

/// The template quota of the admin API.
const QUOTA: usize = 256 << 10;

/// `body`, or with `repeat` its middle part (between its first two NULs)
/// repeated to fill the quota.
fn expanded(body: &str, repeat: bool) -> Cow<'_, str> {
    let mut parts = body.splitn(3, '\0');
    let (Some(open), Some(unit), Some(close)) = (parts.next(), parts.next(), parts.next()) else {
        return Cow::Borrowed(body);
    };
    if !repeat || unit.is_empty() {
        return Cow::Borrowed(body);
    }
    let count = QUOTA.saturating_sub(open.len() + close.len()) / unit.len();
    Cow::Owned(format!("{open}{}{close}", unit.repeat(count)))
}

fn context() -> Value {
    Value::from(minijinja::value::Serde(serde_json::json!({
        "phone": {"mac": "001565000001", "label": "Lobby <1>", "variables": {"a": [1, "x", null]}},
        "lines": [{"position": 1, "display_name": "A\nB"}, {"position": 2, "display_name": "C"}],
        "settings": {"line_keys": [{"type": 15, "label": "k"}], "nested": {"deep": [[1, 2], [3]]}},
        "tenant": {"slug": "acme", "default_region": "US"},
    })))
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Ok(body) = std::str::from_utf8(rest) else {
        return;
    };
    let escape = if selector & 1 == 0 {
        Escape::Xml
    } else {
        Escape::Text
    };
    let body = expanded(body, selector & 2 != 0);
    let Ok(engine) = Engine::compile("fuzz/t", "t", &body, escape, &BUDGET) else {
        return;
    };
    if let Ok(bytes) = engine.render("fuzz/t", &body, context(), &BUDGET) {
        assert!(bytes.len() <= BUDGET.output_bytes, "{} bytes", bytes.len());
    }
});
