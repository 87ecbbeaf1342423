//! Every shipped template renders far inside the default budget for the
//! biggest phone a family has: the budget stops bombs, never real files.
//! Fuel is the engine's own count, so this holds on any machine.

use std::path::Path;
use std::sync::Arc;

use dialtone_sync::{Family, Line, Mac, Phone, Purpose, SecretKey, Tenant};

use crate::engine::Budget;
use crate::identify::template_names;
use crate::render::{compile, context, Subject};
use crate::templates::{Origin, Resolved, Shipped};

/// More than any family takes: Poly VVX and Yealink T5x register at most 16
/// to 34 lines, and Yealink with three expansion modules has 27 + 120 keys.
const LINES: i32 = 34;
const LINE_KEYS: usize = 160;

fn biggest_phone(key: &SecretKey, family: Family) -> (Phone, Vec<Arc<Line>>, Tenant) {
    let long = |what: &str, n: i32| format!("{what} {n} {}", "x".repeat(48));
    let keys: Vec<_> = (0..LINE_KEYS)
        .map(|i| serde_json::json!({"type": 16, "value": format!("{}", 2000 + i), "label": long("Key", i as i32)}))
        .collect();
    let phone = Phone {
        id: 1,
        tenant_id: 1,
        mac: "001565aabbcc".parse::<Mac>().unwrap(),
        family,
        model: Some("T46S".into()),
        label: Some(long("Front desk", 0).into()),
        variables: serde_json::json!({ "line_keys": keys }).to_string().into(),
        http_user: None,
        http_password: None,
        updated_at: 0,
    };
    let lines = (1..=LINES)
        .map(|position| {
            Arc::new(Line {
                id: position.into(),
                phone_id: 1,
                position,
                extension: format!("{}", 1000 + position).into(),
                display_name: long("Reception & <Sales>", position).into(),
                auth_user: long("auth", position).into(),
                password: Some(key.seal(Purpose::LinePassword, &long("secret", position))),
                registrar: "sip.pbx.example.net".into(),
                proxy: Some("proxy.example.net".into()),
                settings: "{}".into(),
                updated_at: 0,
            })
        })
        .collect();
    let tenant = Tenant {
        id: 1,
        slug: "acme".into(),
        name: "Acme Incorporated".into(),
        default_region: "US".into(),
        settings: r#"{"timezone": "America/New_York", "utc_offset": "-5"}"#.into(),
        updated_at: 0,
    };
    (phone, lines, tenant)
}

#[test]
fn shipped_templates_render_far_inside_the_default_budget() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../templates");
    let shipped = Shipped::load(&dir, 1).unwrap();
    let key = SecretKey::parse(&"11".repeat(32)).unwrap();
    let budget = Budget::default();
    let mut checked = 0;
    let mut largest_tag = 0;
    let mut deepest = 0;
    for family in Family::ALL.iter().copied() {
        let (phone, lines, tenant) = biggest_phone(&key, family);
        for name in template_names(family) {
            let Some(body) = shipped.get(family, name) else {
                continue;
            };
            let template = Resolved {
                origin: Origin::Shipped { generation: 1 },
                family,
                name,
                body: body.clone(),
            };
            let subject = Subject {
                mask_secrets: false,
                family,
                phone: Some(&phone),
                lines: &lines,
                tenant: Some(&tenant),
                model: None,
                file: name,
            };
            crate::engine_check::tags::scan_tags(body, |_, tokens| {
                largest_tag = largest_tag.max(tokens);
                Ok(())
            })
            .unwrap();
            crate::engine_check::tags::scan_nesting(body, |_, depth| {
                deepest = deepest.max(depth);
                Ok(())
            })
            .unwrap();
            let engine = compile(&template, &budget).unwrap();
            let context = context(&subject, &key, "http://prov.example.net").unwrap();
            let fuel = engine.fuel_used(context.clone()).unwrap();
            let bytes = engine
                .render(&template.label(), body, context, &budget)
                .unwrap()
                .len();
            eprintln!("{family}/{name}: fuel {fuel}, {bytes} bytes");
            assert!(
                fuel * 10 <= budget.fuel,
                "{family}/{name} uses {fuel} fuel, over a tenth of the budget"
            );
            assert!(
                bytes * 10 <= budget.output_bytes,
                "{family}/{name} is {bytes} bytes, over a tenth of the budget"
            );
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} shipped templates found");
    eprintln!("largest tag: {largest_tag} tokens");
    assert!(
        largest_tag * 4 <= crate::engine_check::tags::MAX_TAG_TOKENS,
        "a shipped tag holds {largest_tag} tokens, over a quarter of the limit"
    );
    eprintln!("deepest nesting: {deepest} levels");
    assert!(
        deepest * 4 <= crate::engine_check::tags::MAX_NESTING,
        "a shipped template nests {deepest} levels, over a quarter of the limit"
    );
}

/// Settings and variables reach the template as `data.rs` values, so their
/// nested comparisons are charged through the real context too: the
/// tenant's settings, the phone's variables and a line's settings.
#[test]
fn tenant_data_in_the_context_is_charged_for_nested_comparisons() {
    let key = SecretKey::parse(&"11".repeat(32)).unwrap();
    let (mut phone, mut lines, mut tenant) = biggest_phone(&key, Family::Yealink);
    let nested = serde_json::json!({ "v": [vec![1; 20_000]] }).to_string();
    tenant.settings = serde_json::json!({ "w": [vec![1; 20_000]] })
        .to_string()
        .into();
    phone.variables = nested.clone().into();
    let mut line = (*lines[0]).clone();
    line.settings = nested.into();
    lines[0] = Arc::new(line);
    let subject = Subject {
        mask_secrets: false,
        family: Family::Yealink,
        phone: Some(&phone),
        lines: &lines,
        tenant: Some(&tenant),
        model: None,
        file: "t",
    };
    let budget = Budget {
        fuel: 10_000,
        ..Budget::default()
    };
    for body in [
        "{% if settings.v == settings.w %}same{% endif %}",
        "{% if lines[0].settings.v == settings.w %}same{% endif %}",
    ] {
        let template = Resolved {
            origin: Origin::Shipped { generation: 1 },
            family: Family::Yealink,
            name: "t",
            body: body.into(),
        };
        let engine = compile(&template, &budget).unwrap();
        let context = context(&subject, &key, "http://prov.example.net").unwrap();
        let refused = engine.render("t", body, context, &budget).unwrap_err();
        assert!(
            refused.to_string().contains("budget of steps"),
            "{body}: {refused}"
        );
    }
}
