//! The render's deadline holds for work that writes nothing, and `round`
//! and `format` cost little per call while answering as MiniJinja's do.

use std::time::{Duration, Instant};

use minijinja::Value;

use crate::engine::{Budget, Engine, Escape};
use crate::error::ProvisionError;

fn render(body: &str, budget: &Budget) -> Result<String, ProvisionError> {
    let context = minijinja::context! {
        settings => crate::data::value(&serde_json::json!({ "k": vec![0; 1_000] })),
    };
    let engine = Engine::compile("test/t", "t", body, Escape::Text, budget)?;
    let bytes = engine.render("test/t", body, context, budget)?;
    Ok(String::from_utf8(bytes).unwrap())
}

fn refusal(body: &str) -> String {
    match render(body, &Budget::default()) {
        Err(ProvisionError::Render {
            line: Some(1),
            column: Some(_),
            message,
            ..
        }) => message,
        other => panic!("{body}: expected an error with a position, got {other:?}"),
    }
}

/// Fuel enough for minutes of these loops: only the clock stops them.
/// Each ran past its deadline to the end of its fuel, as it never wrote.
#[test]
fn a_render_that_writes_nothing_stops_at_its_deadline() {
    let budget = Budget {
        fuel: 50_000_000,
        time: Duration::from_millis(100),
        ..Budget::default()
    };
    let twice = |inner: &str| {
        format!(
            "{{% for i in range(100000) %}}{{% for j in range(100000) %}}{inner}\
             {{% endfor %}}{{% endfor %}}"
        )
    };
    for body in [
        twice("{% if 5e-324|round(15) %}{% endif %}"),
        twice("{% if \"%.100e\"|format(5e-324) %}{% endif %}"),
        twice("{% if 1 in settings.k %}{% endif %}"),
        twice("{% if settings.k == settings.k %}{% endif %}"),
    ] {
        let started = Instant::now();
        let result = render(&body, &budget);
        let took = started.elapsed();
        match result {
            Err(ProvisionError::Render { message, .. }) => {
                assert!(message.contains("time budget"), "{body}: {message}")
            }
            other => panic!("{body}: expected the time budget, got {other:?}"),
        }
        // A loaded debug build overshoots by one inner call, not by seconds.
        assert!(took < Duration::from_secs(2), "{body}: took {took:?}");
    }
}

/// What one call of MiniJinja's `round` or `format` could cost (60 µs for a
/// unit of fuel) or break (a panic in Rust's formatting, printed to the
/// log) is refused with a position.
#[test]
fn round_and_format_refuse_what_one_call_cannot_afford() {
    let started = Instant::now();
    let message =
        refusal("{% for i in range(100000) %}{% if 5e-324|round(1074) %}{% endif %}{% endfor %}");
    assert!(message.contains("at most 15 decimal places"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(1));
    let message = refusal("{{ 1.5|round(precision=16, method=\"floor\") }}");
    assert!(message.contains("at most 15"), "{message}");
    for field in [
        "%.100000e",
        "%100000d",
        "%(a)-101s",
        "%.99999999999999999999999f",
    ] {
        let message = refusal(&format!("{{{{ \"{field}\"|format(dict(a=1.5)) }}}}"));
        assert!(message.contains("at most 100"), "{field}: {message}");
        assert!(!message.contains("panicked"), "{field}: {message}");
    }
}

/// Within their limits ours answer as MiniJinja's own filters.
#[test]
fn round_and_format_answer_as_minijinjas_own() {
    let expressions = [
        "42.55|round",
        "42.55|round(1, \"floor\")",
        "42.15|round(method=\"ceil\")",
        "1234|round(-2)",
        "2.5|round",
        "-0.5|round",
        "1.005|round(2)",
        "5e-324|round(15)",
        "7|round(precision=15)",
        "123456.789|round(-3, \"ceil\")",
        "\"%s, %s!\"|format(\"Hello\", \"World\")",
        "\"%05.2f|%-6s|%x|%%|%+d\"|format(3.14159, \"ab\", 255, 7)",
        "\"%(a)03d:%(b).3s\"|format(dict(a=7, b=\"abcdef\"))",
        "\"%10.4f|%e|%g|%100s\"|format(3.14159, 12345.678, 0.00001234, \"x\")",
        "\"%.100f\"|format(5e-324)",
    ];
    let own = minijinja::Environment::new();
    for expression in expressions {
        let body = format!("{{{{ {expression} }}}}");
        let theirs = own.render_str(&body, Value::UNDEFINED).unwrap();
        let ours = render(&body, &Budget::default()).unwrap();
        assert_eq!(ours, theirs, "{expression}");
    }
}

/// A loop whose body reads a long text of tenant data (60 KB) at every
/// step, for one step of fuel each: a case test reads it a character at a
/// time (43 s a render, measured in a release build, against 250 ms),
/// a subscript counts its characters. Fuel enough for minutes: the clock
/// stops them, seen by the case tests themselves and by every 64 numbers
/// of a `range` walked.
#[test]
fn a_loop_reading_long_text_stops_at_its_deadline() {
    let budget = Budget {
        fuel: 50_000_000,
        time: Duration::from_millis(100),
        ..Budget::default()
    };
    let context = minijinja::context! {
        settings => crate::data::value(&serde_json::json!({ "s": "\u{4e00}".repeat(20_000) })),
    };
    for test in [
        "settings.s is lower",
        "settings.s is upper",
        "settings.s[-1]",
    ] {
        for walk in ["range(100000)", "range(100000)|reverse"] {
            let body =
                format!("{{% for i in {walk} %}}{{% if {test} %}}{{% endif %}}{{% endfor %}}");
            let started = Instant::now();
            let engine = Engine::compile("test/t", "t", &body, Escape::Text, &budget).unwrap();
            let result = engine.render("test/t", &body, context.clone(), &budget);
            let took = started.elapsed();
            match result {
                Err(ProvisionError::Render { message, .. }) => {
                    assert!(message.contains("time budget"), "{body}: {message}")
                }
                other => panic!("{body}: expected the time budget, got {other:?}"),
            }
            assert!(took < Duration::from_secs(2), "{body}: took {took:?}");
        }
    }
}

/// A text literal inside a tag is short: one step of fuel reads all of it.
#[test]
fn a_long_text_literal_inside_a_tag_is_refused() {
    let long = "x".repeat(5000);
    let message = refusal(&format!("{{% if \"{long}\" is lower %}}{{% endif %}}"));
    assert!(message.contains("at most 4096 bytes"), "{message}");
    let fits = "x".repeat(4096);
    assert_eq!(
        render(&format!("{{{{ \"{fits}\"|length }}}}"), &Budget::default()).unwrap(),
        "4096"
    );
}
