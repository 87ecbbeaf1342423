//! Nesting a tenant's template may hold: what MiniJinja's parser, its
//! compiler, our check and the render recurse through must fit a worker
//! thread's stack (2 MiB, as tokio's and the render pool's), in a debug
//! build, whatever the body. An overflow aborts the process, every tenant
//! with it; a refusal is one template's error, with its position.

use crate::engine::{Budget, Engine, Escape};
use crate::engine_check::tags::{MAX_NESTING, MAX_TAG_TOKENS};
use crate::error::ProvisionError;

/// The template quota of the admin API.
const QUOTA: usize = 256 << 10;

/// Compiles and renders `body` on a thread with a worker's stack.
fn on_worker_stack(body: String) -> Result<String, ProvisionError> {
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || {
            let context = minijinja::Value::from(minijinja::value::Serde(serde_json::json!({
                "phone": {"mac": "001565000001"},
                "lines": [{"position": 1}],
                "settings": {"line_keys": []},
            })));
            let budget = Budget::default();
            let engine = Engine::compile("test/t", "t", &body, Escape::Text, &budget)?;
            let bytes = engine.render("test/t", &body, context, &budget)?;
            Ok(String::from_utf8(bytes).unwrap())
        })
        .unwrap()
        .join()
        .unwrap()
}

/// `open`, then `unit` as many times as fit the quota, then `close`.
fn filling(open: &str, unit: &str, close: &str) -> String {
    let count = (QUOTA - open.len() - close.len()) / unit.len();
    format!("{open}{}{close}", unit.repeat(count))
}

/// Each form that recursed in the parser, the compiler or our check, as
/// large as the quota allows: refused with a position, never an abort.
#[test]
fn recursive_forms_at_the_template_quota_are_refused() {
    let bodies = [
        filling("{% if 0 %}", "{% elif 0 %}", "{% endif %}"),
        filling("{% if 0 %}{% elif 0 %}", "{% if 0 %}{% elif 0 %}", ""),
        filling("", "{% if 1 %}", ""),
        filling("", "{% for i in [1] %}", ""),
        filling("", "{% filter upper %}", ""),
        filling("", "{% set x %}", ""),
        filling("", "{% with %}", ""),
        filling("{{ ", "(", " }}"),
        filling("{{ ", "[", " }}"),
        filling("{{ ", "{'a':", " }}"),
        filling("{{ 1", "~1", " }}"),
        filling("{{ 1", "+1", " }}"),
        filling("{{ 'a'", "|lower", " }}"),
        filling("{{ ", "not ", "1 }}"),
        filling("{{ ", "-", "1 }}"),
        filling("{{ phone", ".a", " }}"),
        filling("{{ phone", "[0]", " }}"),
        filling("{{ 1", " if 1 else 1", " }}"),
        filling("{{ ", "range(", " }}"),
        filling("{% if 1", " and 1", " %}{% endif %}"),
    ];
    for body in bodies {
        let start = &body[..40];
        match on_worker_stack(body.clone()) {
            Err(ProvisionError::Render {
                line: Some(_),
                column: Some(_),
                ..
            }) => {}
            other => panic!("{start}…: expected a refusal with a position, got {other:?}"),
        }
    }
}

/// An `elif` is a level of nesting: a chain as long as the limit renders,
/// one more is refused at the `elif` past it, and blocks around a chain
/// count too. Blocks one after another never add up.
#[test]
fn an_elif_chain_counts_as_nesting() {
    let chain = |elifs: usize| {
        format!(
            "{{% if 0 %}}{}{{% elif 1 %}}yes{{% endif %}}",
            "{% elif 0 %}".repeat(elifs)
        )
    };
    assert_eq!(on_worker_stack(chain(MAX_NESTING - 2)).unwrap(), "yes");
    let refused = on_worker_stack(format!("\n\n{}", chain(MAX_NESTING - 1)));
    match refused {
        Err(ProvisionError::Render {
            line: Some(3),
            column: Some(column),
            message,
            ..
        }) => {
            assert_eq!(column, 11 + 12 * (MAX_NESTING - 1), "{message}");
            assert!(message.contains("nest too deeply"), "{message}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let wrapped = format!(
        "{}{}{}",
        "{% for i in [1] %}".repeat(MAX_NESTING / 2),
        chain(MAX_NESTING / 2),
        "{% endfor %}".repeat(MAX_NESTING / 2)
    );
    assert!(on_worker_stack(wrapped).is_err());
    // Closed blocks give their levels back.
    let one_after_another = "{% if 1 %}{% elif 0 %}{% elif 0 %}{% endif %}".repeat(2_000);
    assert!(on_worker_stack(one_after_another).is_ok());
    // `set` with a value holds no body (and is refused for itself).
    let refused = on_worker_stack("{% set x = 1 %}".repeat(2 * MAX_NESTING)).unwrap_err();
    assert!(refused.to_string().contains("`{% set %}`"), "{refused}");
}

/// At the limit, each recursive form of expression as long as a tag may
/// hold sits at the bottom of blocks and `elif`s nested as deep as allowed:
/// checked, compiled and rendered on a worker's stack.
#[test]
fn the_deepest_template_allowed_fits_a_worker_stack() {
    // The `elif` that holds it takes five tokens of the tag.
    let n = MAX_TAG_TOKENS - 5;
    // Brackets as deep as MiniJinja's own guard lets them be under these
    // blocks (150 levels, counting the blocks but not the `elif`s).
    let brackets = 35;
    let expressions = [
        format!("1{}", "+1".repeat((n - 1) / 2)),
        format!("1{}", "~1".repeat((n - 1) / 2)),
        format!("'a'{}", "|lower".repeat((n - 1) / 2)),
        format!("{}1", "not ".repeat(n - 1)),
        format!("{}1", "-".repeat(n - 1)),
        format!("phone{}", ".mac".repeat((n - 1) / 2)),
        format!("lines{}", "[0]".repeat((n - 1) / 3)),
        format!("1{}", " if 1 else 1".repeat((n - 1) / 4)),
        format!("1{}", " is number".repeat((n - 1) / 2)),
        format!("{}1{}", "(".repeat(brackets), ")".repeat(brackets)),
        format!("{}1{}", "[".repeat(brackets), "]".repeat(brackets)),
        format!("{}1{}", "{'a':".repeat(brackets), "}".repeat(brackets)),
    ];
    // Every kind of level: loops, filter blocks, an `if` and its `elif`s.
    let fors = MAX_NESTING / 3;
    let filters = MAX_NESTING / 3;
    let elifs = MAX_NESTING - fors - filters - 1;
    for expression in expressions {
        let body = format!(
            "{}{}{{% if 0 %}}{}{{% elif ({expression}) or 1 %}}{{{{ {expression} }}}}{{% endif %}}{}{}",
            "{% for i in [1] %}".repeat(fors),
            "{% filter lower %}".repeat(filters),
            "{% elif 0 %}".repeat(elifs - 1),
            "{% endfilter %}".repeat(filters),
            "{% endfor %}".repeat(fors),
        );
        // Some forms fail to render (`phone.mac.mac` is no name); none is
        // refused, and none overflows.
        if let Err(e) = on_worker_stack(body) {
            let e = e.to_string();
            assert!(
                !e.contains("at most") && !e.contains("recursion"),
                "{expression}: {e}"
            );
        }
    }
}
