//! The engine's syntax (what users wrote for Tera still works) and its
//! budget (what a hostile template can do stops, with a position).

use std::time::{Duration, Instant};

use minijinja::Value;

use crate::engine::{Budget, Engine, Escape};
use crate::error::ProvisionError;

fn context() -> Value {
    Value::from(minijinja::value::Serde(serde_json::json!({
        "phone": {"mac": "001565000001", "label": "Lobby <1>"},
        "lines": [{"position": 1, "display_name": "A\nB"}, {"position": 2, "display_name": "C"}],
        "settings": {"line_keys": []},
    })))
}

fn render_with(body: &str, escape: Escape, budget: &Budget) -> Result<String, ProvisionError> {
    let engine = Engine::compile("test/t", "t", body, escape, budget)?;
    let bytes = engine.render("test/t", body, context(), budget)?;
    Ok(String::from_utf8(bytes).unwrap())
}

fn render(body: &str) -> Result<String, ProvisionError> {
    render_with(body, Escape::Xml, &Budget::default())
}

fn render_error(body: &str, budget: &Budget) -> (Option<usize>, Option<usize>, String) {
    match render_with(body, Escape::Text, budget) {
        Err(ProvisionError::Render {
            line,
            column,
            message,
            ..
        }) => (line, column, message),
        other => panic!("expected a template error, got {other:?}"),
    }
}

#[test]
fn tera_forms_still_work() {
    let body = "{% for i in range(end=3) %}{{ i }}{% endfor %}|\
                {% for i in range(start=1, end=7, step_by=2) %}{{ i }}{% endfor %}|\
                {{ nothing | default(value=\"x\") }}{{ nothing | default(\"y\") }}|\
                {% if nothing is defined %}no{% else %}yes{% endif %}|\
                {% for line in lines %}{{ loop.index }}{{ line.position }}{% endfor %}";
    assert_eq!(render(body).unwrap(), "012|135|xy|yes|1122");
    let (_, _, message) = render_error("{{ throw(message=\"stop here\") }}", &Budget::default());
    assert!(message.contains("stop here"), "{message}");
}

/// A range of few numbers whose steps pass i64 between them (a tenant's
/// template) is computed without overflow: debug builds and the fuzzer
/// panicked on it.
#[test]
fn a_range_with_huge_steps_does_not_overflow() {
    let body = "{% for i in range(-9000000000000000000, 9000000000000000000, 5000000000000000000) %}{{ i }},{% endfor %}";
    assert_eq!(
        render(body).unwrap(),
        "-9000000000000000000,-4000000000000000000,1000000000000000000,6000000000000000000,"
    );
}

/// A template's own error text is kept short: a failed render is cached
/// and recorded with every fetch that hits it.
#[test]
fn a_thrown_message_is_clipped() {
    let body = format!("{{{{ throw(message=\"{}\") }}}}", "é".repeat(2_000));
    let (_, _, message) = render_error(&body, &Budget::default());
    assert!(message.starts_with("invalid operation: éé"), "{message}");
    assert!(message.len() <= 1100, "{} bytes", message.len());
}

#[test]
fn output_is_escaped_for_the_format() {
    assert_eq!(render("{{ phone.label }}").unwrap(), "Lobby &lt;1&gt;");
    assert_eq!(
        render_with(
            "{% for l in lines %}{{ l.display_name }};{% endfor %}",
            Escape::Text,
            &Budget::default()
        )
        .unwrap(),
        "A B;C;"
    );
}

#[test]
fn unknown_names_are_errors_with_a_position() {
    let (line, column, _) = render_error(
        "ok\n  {{ phone.mac }}{{ phone.nope.deeper }}",
        &Budget::default(),
    );
    assert_eq!(line, Some(2));
    assert!(column.is_some_and(|c| c >= 3), "{column:?}");
    // A syntax error points at the tag.
    let (line, _, _) = render_error("a\nb\n{% for %}", &Budget::default());
    assert_eq!(line, Some(3));
    // Statements that need other templates do not exist here.
    let (_, _, message) = render_error("{% include \"other\" %}", &Budget::default());
    assert!(
        message.contains("include") || message.contains("syntax"),
        "{message}"
    );
}

/// Each of these ran for minutes or until the process aborted under Tera.
/// Here each stops on its own budget, quickly, with a position.
#[test]
fn bombs_stop_within_budget() {
    let budget = Budget::default();
    let bombs = [
        // Nested loops that write nothing: fuel.
        "{% for i in range(end=100000) %}{% for j in range(end=100000) %}{% endfor %}{% endfor %}",
        // Nested loops that write: output bytes or fuel.
        "{% for i in range(100000) %}{% for j in range(100000) %}{{ phone.mac }}{% endfor %}{% endfor %}",
        // One huge repeat: checked before it is allocated.
        "{% for i in range(100000) %}{{ \"x\" * 100000 }}{% endfor %}",
        "{% for i in range(100000) %}{{ [phone.mac] * 1000 }}{% endfor %}",
        // Long chains in one expression.
        "{{ (lines ~ lines ~ lines ~ lines ~ lines ~ lines ~ lines ~ lines ~ lines) | length }}{% for i in range(100000) %}{{ (phone.mac ~ phone.mac ~ phone.mac ~ phone.mac) | length }}{% endfor %}",
        // Joining a big range into text over and over.
        "{% for i in range(100000) %}{% if (range(100000) | join(\",\")) == \"\" %}x{% endif %}{% endfor %}",
    ];
    for bomb in bombs {
        let started = Instant::now();
        let (line, _, message) = render_error(bomb, &budget);
        let took = started.elapsed();
        assert!(line.is_some(), "{bomb}: no line in {message}");
        assert!(
            message.contains("budget"),
            "{bomb}: stopped for another reason: {message}"
        );
        // Generous for a loaded debug build; the point is seconds, not minutes.
        assert!(took < Duration::from_secs(10), "{bomb}: took {took:?}");
    }
}

/// Rebinding names to computed values builds shared values that fuel
/// cannot see the size of; such templates are refused at compile time.
#[test]
fn rebinding_is_refused_with_a_position() {
    for (body, line) in [
        ("a\n{% set n = namespace(l=[1]) %}", 2),
        (
            "{% for i in lines %}\n  {% set x = [i, i] %}{% endfor %}",
            2,
        ),
        ("{% with x = lines %}{% endwith %}", 1),
        ("\n\n{{ lines + lines }}", 3),
        ("{{ phone.mac * phone.mac }}", 1),
        ("{{ lines * 1000000 }}", 1),
        // Repeating what may be a list: at most 1000 times, and never a
        // repeated value inside another (10^12 items for 4,000 of fuel).
        ("{{ lines * 1001 }}", 1),
        ("{{ [[[[1] * 1000] * 1000] * 1000] * 1000 }}", 1),
        ("\n{% if [lines * 1000] == [lines * 1000] %}{% endif %}", 2),
        ("{{ (lines * 10) * 10 }}", 1),
        ("{{ dict(a=lines * 10) }}", 1),
        ("{{ [\"x\" * 100000] * 1000 }}", 1),
        // A repetition taken as an operand is walked unseen by fuel and
        // the deadline: only a whole expression's value may be one.
        (
            "{% for i in range(40000) %}{% if (lines * 1000) is startingwith \"x\" %}{% endif %}{% endfor %}",
            1,
        ),
        ("{% if phone.mac in lines * 1000 %}{% endif %}", 1),
        ("{% if lines * 1000 == lines * 1000 %}{% endif %}", 1),
        ("{{ (lines * 1000) | string | length }}", 1),
        ("{{ ([phone.mac] * 1000) ~ \"\" }}", 1),
        ("{{ (lines * 1000)[2999] }}", 1),
        ("{{ (\"x\" * 100000) | length }}", 1),
        ("{% for x in [lines, lines] %}{% endfor %}", 1),
        ("{% for x in lines ~ lines %}{% endfor %}", 1),
        ("{% for x in lines recursive %}{{ loop(x) }}{% endfor %}", 1),
    ] {
        let (got, column, message) = render_error(body, &Budget::default());
        assert_eq!(got, Some(line), "{body}: {message}");
        assert!(column.is_some(), "{body}");
        assert!(
            message.contains("not supported")
                || message.contains("need")
                || message.contains("loop may")
                || message.contains("surely a number"),
            "{body}: {message}"
        );
    }
    // What the check allows.
    assert_eq!(
        render("{% for l in lines | reverse %}{{ l.position + 10 }}{{ loop.index * 2 }}{% endfor %}{% for x in [1, 2] %}{{ x }}{% endfor %}")
            .unwrap(),
        "12211412"
    );
    assert_eq!(
        render("{{ \"-\" * 3 }}{{ \"2\" | int * 3600 }}{% for l in lines %}{{ loop.index * 100000 }}{% endfor %}{{ lines | length * 2 }}")
            .unwrap(),
        "---72001000002000004"
    );
}

/// A value far bigger than the file may be, as data a template prints:
/// 1000 items nested `levels` deep (10^12 numbers at four), the shape a
/// template made by repeating a repeated list.
#[derive(Debug)]
struct Huge {
    levels: u32,
}

impl minijinja::value::Object for Huge {
    fn repr(self: &std::sync::Arc<Self>) -> minijinja::value::ObjectRepr {
        minijinja::value::ObjectRepr::Seq
    }

    fn get_value(self: &std::sync::Arc<Self>, key: &Value) -> Option<Value> {
        let index = key.as_i64().filter(|i| (0..1000).contains(i))?;
        Some(match self.levels {
            0 | 1 => Value::from(index),
            levels => Value::from_object(Huge { levels: levels - 1 }),
        })
    }

    fn enumerate(self: &std::sync::Arc<Self>) -> minijinja::value::Enumerator {
        minijinja::value::Enumerator::Seq(1000)
    }
}

/// Printing stops at the file's size: the whole text of a value (terabytes
/// here) is never made.
#[test]
fn a_value_is_printed_no_further_than_the_file_may_grow() {
    let budget = Budget {
        output_bytes: 4096,
        ..Budget::default()
    };
    let engine = Engine::compile("test/t", "t", "x\n{{ big }}", Escape::Text, &budget).unwrap();
    let context = minijinja::context! { big => Value::from_object(Huge { levels: 4 }) };
    match engine.render("test/t", "x\n{{ big }}", context, &budget) {
        Err(ProvisionError::Render { line, message, .. }) => {
            assert_eq!(line, Some(2), "{message}");
            assert!(message.contains("4096 bytes"), "{message}");
        }
        other => panic!("expected the size budget, got {other:?}"),
    }
}

#[test]
fn each_limit_stops_a_render_by_itself() {
    let loop_writing = "{% for i in range(100000) %}{{ phone.mac }}{% endfor %}";
    let output = Budget {
        output_bytes: 1000,
        ..Budget::default()
    };
    let (line, _, message) = render_error(loop_writing, &output);
    assert!(message.contains("1000 bytes"), "{message}");
    assert_eq!(line, Some(1), "{message}");
    // Text alone past the cap: no position to give, still an error.
    let raw = Budget {
        output_bytes: 16,
        ..Budget::default()
    };
    let (_, _, message) = render_error("0123456789abcdefghijklmnopq", &raw);
    assert!(message.contains("16 bytes"), "{message}");
    let time = Budget {
        time: Duration::ZERO,
        ..Budget::default()
    };
    let (line, _, message) = render_error(loop_writing, &time);
    assert!(message.contains("time budget"), "{message}");
    assert_eq!(line, Some(1), "{message}");
    let fuel = Budget {
        fuel: 1000,
        ..Budget::default()
    };
    let (_, _, message) = render_error(loop_writing, &fuel);
    assert!(message.contains("budget of steps"), "{message}");
    // The same template within its budget renders.
    let ample = Budget {
        fuel: 10_000_000,
        output_bytes: 10 << 20,
        time: Duration::from_secs(60),
    };
    assert_eq!(
        render_with(loop_writing, Escape::Text, &ample)
            .unwrap()
            .len(),
        1_200_000
    );
}

/// The engine charges nothing for a function's result, so `range()` pays
/// for the numbers it builds: inside a loop, `range(100000)` built 100,000
/// numbers a step for one unit of fuel (3 s against a 250 ms budget).
#[test]
fn a_range_costs_a_unit_of_fuel_per_number() {
    let budget = Budget::default();
    let fuel = |body: &str| {
        Engine::compile("test/t", "t", body, Escape::Text, &budget)
            .unwrap()
            .fuel_used(context())
            .unwrap()
    };
    let small = fuel("{% if range(10)|length %}{% endif %}");
    let large = fuel("{% if range(100000)|length %}{% endif %}");
    assert!(large - small >= 99_990, "{small} then {large}");
    let (_, _, message) = render_error(
        "{% for i in range(10) %}{% if range(100000)|length %}{% endif %}{% endfor %}",
        &budget,
    );
    assert!(message.contains("budget of steps"), "{message}");
}

/// Every chain a tag can hold (operators, filters, tests, attributes,
/// subscripts, conditionals, unary minus) past the limit is refused with
/// its position, before the parser builds it; `1+1+…` with 1,000 links
/// overflowed a 2 MiB thread's stack and aborted the process. At the limit,
/// inside the deepest nesting the parser allows, a template compiles and
/// renders on such a thread, in this (debug) build.
#[test]
fn chains_a_tag_holds_are_bounded_and_fit_a_thread_stack() {
    use crate::engine_check::tags::MAX_TAG_TOKENS;
    let links = MAX_TAG_TOKENS;
    let chains = [
        format!("{{{{ 1{} }}}}", "+1".repeat(links)),
        format!("{{{{ 'a'{} }}}}", "|lower".repeat(links)),
        format!("{{{{ phone{} }}}}", ".a".repeat(links)),
        format!("{{{{ phone{} }}}}", "[0]".repeat(links)),
        format!("{{{{ 1{} }}}}", " is number".repeat(links)),
        format!("{{{{ 1{} }}}}", " if true else 1".repeat(links)),
        format!("{{{{ {}1 }}}}", "-".repeat(links)),
        format!("{{% if true{} %}}{{% endif %}}", " and true".repeat(links)),
    ];
    for body in &chains {
        let (line, column, message) = render_error(body, &Budget::default());
        assert_eq!((line, column), (Some(1), Some(1)), "{message}");
        assert!(message.contains("at most"), "{message}");
    }
    // At the limit: statements nested as deep as allowed, an expression of
    // as many tokens as a tag may hold (`nesting_tests.rs` has every form).
    let depth = crate::engine_check::tags::MAX_NESTING;
    let chain = format!("1{}", "+1".repeat((MAX_TAG_TOKENS - 1) / 2));
    let body = format!(
        "{}{{{{ {chain} }}}}{}",
        format!("{{% if {chain} %}}").repeat(depth),
        "{% endif %}".repeat(depth)
    );
    let rendered = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || render_with(&body, Escape::Text, &Budget::default()))
        .unwrap()
        .join()
        .unwrap()
        .unwrap();
    assert_eq!(rendered, format!("{}", (MAX_TAG_TOKENS - 1) / 2 + 1));
}
