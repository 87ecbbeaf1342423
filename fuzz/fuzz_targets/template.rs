//! Template bodies are tenant-written code. Checking, compiling and
//! rendering any text ends in a file or an error with a position: never a
//! panic, and never an abort (a stack overflow ends the whole process,
//! every tenant with it). The context holds data of every shape a real one
//! has. Beyond "no crash": a render stays inside its output budget.
#![no_main]

use std::time::Duration;

use dialtone_tftp::engine::{Budget, Engine, Escape};
use libfuzzer_sys::fuzz_target;
use minijinja::Value;

const BUDGET: Budget = Budget {
    fuel: 50_000,
    output_bytes: 64 << 10,
    time: Duration::from_millis(250),
};

fn context() -> Value {
    Value::from(minijinja::value::Serde(serde_json::json!({
        "phone": {"mac": "001565000001", "label": "Lobby <1>", "variables": {"a": [1, "x", null]}},
        "lines": [{"position": 1, "display_name": "A\nB"}, {"position": 2, "display_name": "C"}],
        "settings": {"line_keys": [{"type": 15, "label": "k"}], "nested": {"deep": [[1, 2], [3]]}},
        "tenant": {"slug": "acme", "default_region": "US"},
    })))
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    let Ok(body) = std::str::from_utf8(rest) else { return };
    let escape = if selector & 1 == 0 { Escape::Xml } else { Escape::Text };
    let Ok(engine) = Engine::compile("fuzz/t", "t", body, escape, &BUDGET) else { return };
    if let Ok(bytes) = engine.render("fuzz/t", body, context(), &BUDGET) {
        assert!(bytes.len() <= BUDGET.output_bytes, "{} bytes", bytes.len());
    }
});
