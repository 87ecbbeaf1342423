//! Every shipped template renders for a sample phone of its family with one
//! line and with four: XML families give well-formed XML, the cfg families
//! valid `key = value` lines, and the bytes are the same on every render.

use std::path::PathBuf;
use std::sync::Arc;

use dialtone_sync::store::{LineInput, PhoneInput, TenantInput};
use dialtone_sync::testing::{test_key, TestDb};
use dialtone_sync::*;
use dialtone_tftp::render::is_xml;
use dialtone_tftp::{ProvisionOptions, Provisioner, Request, Shipped};

fn shipped_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../templates")
}

/// (family, MAC, model, model token for `{model}`, code for `{code}`)
const SAMPLES: &[(Family, &str, &str, &str, &str)] = &[
    (Family::Yealink, "001565", "T46S", "", "66"),
    (Family::Poly, "0004f2", "VVX 450", "", ""),
    (Family::CiscoSpa, "001b54", "SPA504G", "504g", ""),
    (Family::CiscoMpp, "0062ec", "CP-8851-3PCC", "8851", ""),
    (Family::CiscoSep, "001b55", "CP-7941G", "", ""),
    (Family::Grandstream, "000b82", "GXP2135", "gxp2135", ""),
    (Family::Snom, "000413", "D785", "D785", ""),
    (Family::Fanvil, "0c383e", "X4", "", "0C00620000"),
];

fn line(i: usize) -> LineInput {
    LineInput {
        extension: format!("{}", 201 + i),
        display_name: format!("Desk {} & <Co>", 201 + i),
        auth_user: format!("auth{}", 201 + i),
        password: (i != 2).then(|| format!("pw\"{i}'")),
        registrar: "sip.example.net".into(),
        proxy: (i == 1).then(|| "proxy.example.net".into()),
        settings: "{}".into(),
    }
}

fn check_text(name: &str, text: &str) {
    for l in text.lines() {
        let l = l.trim();
        let ok = l.is_empty()
            || l.starts_with('#')
            || l.starts_with("include:config ")
            || l.split_once('=').is_some_and(|(k, _)| {
                let k = k.trim();
                !k.is_empty() && !k.contains(char::is_whitespace)
            });
        assert!(ok, "{name}: not a `key = value` line: {l:?}\n{text}");
    }
}

#[tokio::test]
async fn every_shipped_template_renders_for_one_and_four_lines() {
    let db = TestDb::sqlite();
    let store = db.store().await;
    let mut batch = vec![Mutation::UpsertTenant(TenantInput {
        slug: "acme".into(),
        name: "Acme & Sons".into(),
        default_region: "US".into(),
        settings: r#"{"timezone":"America/New_York","utc_offset":"-5"}"#.into(),
    })];
    for (family, oui, model, _, _) in SAMPLES {
        for (n, count) in [(1u8, 1usize), (4, 4)] {
            batch.push(Mutation::UpsertPhone(PhoneInput {
                tenant: "acme".into(),
                mac: format!("{oui}0000{n:02x}").parse().unwrap(),
                family: *family,
                model: Some((*model).into()),
                label: Some("Front".into()),
                // Four-line phones also carry programmable keys.
                variables: if count == 4 {
                    r#"{"line_keys":[{"type":16,"value":"101","label":"Ann"},{"type":16,"value":"102","label":"Bo"},{"type":13,"value":"5550101234","label":"Lab"}]}"#.into()
                } else {
                    "{}".into()
                },
                http_user: None,
                http_password: None,
                lines: (0..count).map(line).collect(),
            }));
        }
    }
    let audit = Audit {
        tenant: None,
        actor: "t".into(),
        action: "t".into(),
        entity: "t".into(),
        entity_key: String::new(),
        detail: serde_json::json!({}),
    };
    store.apply(&batch, &audit).await.unwrap();
    let mirror = Arc::new(Mirror::new());
    watcher::full_load(&mirror, &*store).await.unwrap();
    let shipped = Shipped::load(&shipped_dir(), 1).unwrap();
    assert!(
        shipped.len() >= 20,
        "only {} shipped templates found",
        shipped.len()
    );
    let names: Vec<(Family, String)> = shipped.names().map(|(f, n)| (f, n.to_string())).collect();
    let make = || {
        Provisioner::new(
            mirror.clone(),
            test_key(),
            Shipped::load(&shipped_dir(), 1).unwrap(),
            ProvisionOptions {
                base_url: "http://prov.example.net:8081".into(),
                ..Default::default()
            },
        )
    };
    let (first, second) = (make(), make());
    let mut rendered = 0;
    for (family, oui, _, model_token, code) in SAMPLES {
        assert!(
            names.iter().any(|(f, _)| f == family),
            "no shipped template for {family}"
        );
        for (f, name) in names.iter().filter(|(f, _)| f == family) {
            for n in [1u8, 4] {
                let mac = format!("{oui}0000{n:02x}");
                let mut path = name
                    .replace("{mac}", &mac)
                    .replace("{model}", model_token)
                    .replace("{code}", code);
                if *family == Family::CiscoMpp && name == "{mac}.cfg" {
                    // The MPP fallback lives under /Cisco/$PN/.
                    path = format!("Cisco/CP-8851-3PCC/{path}");
                }
                // Common files learn the phone from its User-Agent-less
                // request only by MAC, so give device files their MAC path
                // and common files a plain request.
                let request = Request {
                    path: &path,
                    user_agent: None,
                    ..Default::default()
                };
                let a = first
                    .provision(&request)
                    .unwrap_or_else(|e| panic!("{f}/{name} as {path}: {e}"));
                let b = second.provision(&request).unwrap();
                assert_eq!(a.body, b.body, "{f}/{name}: not deterministic");
                let text = std::str::from_utf8(&a.body).unwrap();
                if *family == Family::Yealink && name == "{mac}.cfg" {
                    let keys = text.matches("linekey.").count();
                    assert_eq!(keys, if n == 4 { 9 } else { 0 }, "{text}");
                    if n == 4 {
                        assert!(text.contains("linekey.3.value = 5550101234"), "{text}");
                    }
                }
                assert!(!text.trim().is_empty(), "{f}/{name}: empty");
                if is_xml(*family) {
                    if let Err(e) = roxmltree::Document::parse(text) {
                        panic!("{f}/{name} ({n} lines): not well-formed XML: {e}\n{text}");
                    }
                } else {
                    check_text(&format!("{f}/{name}"), text);
                }
                if n == 4 && text.contains("auth201") {
                    // Device files carry every line.
                    assert!(
                        text.contains("auth204"),
                        "{f}/{name}: fourth line missing\n{text}"
                    );
                }
                rendered += 1;
            }
        }
    }
    assert!(rendered >= 40, "rendered only {rendered} files");
}
