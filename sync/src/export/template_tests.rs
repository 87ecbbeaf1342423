//! Templates in the JSON export: every scope's live body, a tenant's named
//! by its slug and a phone's by its MAC, in a fixed order; read back by the
//! import's parse to the same writes, which change nothing; a tenant's
//! export holds its own templates only.

use super::*;
use crate::import::plan_text;
use crate::model::{Family, TemplateScope};
use crate::store::{Mutation, Store, TemplateInput};
use crate::testing::build::*;
use crate::testing::{test_key, TestDb};
use crate::{watcher, Mirror};

fn template(scope: TemplateScope, scope_key: &str, body: &str) -> Mutation {
    Mutation::UpsertTemplate(TemplateInput {
        scope,
        family: Family::Yealink,
        scope_key: scope_key.into(),
        file_pattern: "{mac}.cfg".into(),
        body: body.into(),
        updated_by: "seed".into(),
        keep_versions: None,
    })
}

/// Two tenants with a phone each, and a template of every scope: the
/// tenants' under their ids, which the store gave (globex first).
async fn stored() -> (TestDb, Arc<dyn Store>, Arc<MirrorState>) {
    let db = TestDb::sqlite();
    let store = db.store().await;
    let seed = [
        tenant("globex", "GB"),
        tenant("acme", "US"),
        phone("acme", 7, 1),
        phone("globex", 3, 1),
    ];
    store.apply(&seed, &audit("seed")).await.unwrap();
    let (rows, _, _) = store.load_all().await.unwrap();
    let id = |slug: &str| (rows.tenants.iter()).find(|t| &*t.slug == slug).unwrap().id;
    let templates = [
        template(TemplateScope::Phone, "001565000003", "globex phone"),
        template(
            TemplateScope::Tenant,
            &id("globex").to_string(),
            "globex {{ x }}",
        ),
        template(
            TemplateScope::Tenant,
            &id("acme").to_string(),
            "acme\n\"quoted\"",
        ),
        template(TemplateScope::Phone, "001565000007", "acme phone"),
        template(TemplateScope::Model, "T46S", "model"),
        template(TemplateScope::Family, "", "family"),
    ];
    store.apply(&templates, &audit("seed")).await.unwrap();
    let mirror = Mirror::new();
    watcher::full_load(&mirror, &*store).await.unwrap();
    (db, store, mirror.load())
}

fn export(state: &MirrorState, slugs: &[&str], kinds: &[Kind]) -> (String, Exported) {
    let slugs: Vec<String> = slugs.iter().map(|s| s.to_string()).collect();
    let selection = Selection::new(state, &slugs).unwrap();
    let mut out = Vec::new();
    let exported = write_json(&selection, &test_key(), kinds, &mut out).unwrap();
    (String::from_utf8(out).unwrap(), exported)
}

#[tokio::test]
async fn templates_export_by_slug_and_mac_and_reimport_as_no_change() {
    let (_db, store, state) = stored().await;
    let (text, exported) = export(&state, &[], &[Kind::Templates]);
    assert_eq!(exported.templates, 6);
    let want = [
        r#"{"scope":"family","family":"yealink","file_pattern":"{mac}.cfg","body":"family"}"#,
        r#"{"scope":"model","family":"yealink","model":"T46S","file_pattern":"{mac}.cfg","body":"model"}"#,
        r#"{"scope":"tenant","family":"yealink","tenant":"acme","file_pattern":"{mac}.cfg","body":"acme\n\"quoted\""}"#,
        r#"{"scope":"tenant","family":"yealink","tenant":"globex","file_pattern":"{mac}.cfg","body":"globex {{ x }}"}"#,
        r#"{"scope":"phone","family":"yealink","tenant":"globex","mac":"001565000003","file_pattern":"{mac}.cfg","body":"globex phone"}"#,
        r#"{"scope":"phone","family":"yealink","tenant":"acme","mac":"001565000007","file_pattern":"{mac}.cfg","body":"acme phone"}"#,
    ];
    assert_eq!(
        text,
        format!("{{\n\"templates\": [\n{}\n]\n}}\n", want.join(",\n"))
    );

    let (whole, _) = export(&state, &[], &Kind::ALL);
    let mut plan = plan_text("export.json", true, &whole);
    assert!(plan.errors.is_empty(), "{:?}", plan.errors);
    let tenant_template = Mutation::UpsertTenantTemplate {
        tenant: "acme".into(),
        template: TemplateInput {
            scope: TemplateScope::Tenant,
            scope_key: String::new(),
            updated_by: crate::import::IMPORTED_BY.into(),
            ..match template(TemplateScope::Tenant, "", "acme\n\"quoted\"") {
                Mutation::UpsertTemplate(t) => t,
                _ => unreachable!(),
            }
        },
    };
    let back = plan.take_mutations();
    assert!(back.contains(&tenant_template), "{back:?}");
    let report = store.apply(&back, &audit("reimport")).await.unwrap();
    assert_eq!(
        (report.templates.inserted, report.templates.updated),
        (0, 0),
        "{report:?}"
    );
    assert_eq!(report.templates.unchanged, 6);
    assert_eq!(export(&state, &[], &Kind::ALL).0, whole);
}

#[tokio::test]
async fn a_tenants_export_holds_its_own_templates_only() {
    let (_db, _store, state) = stored().await;
    let (text, exported) = export(&state, &["globex"], &[Kind::Templates]);
    assert_eq!(exported.templates, 2, "{text}");
    assert!(text.contains(r#""tenant":"globex""#), "{text}");
    assert!(text.contains(r#""mac":"001565000003""#), "{text}");
    for other in ["acme", "001565000007", "\"family\",", "T46S"] {
        assert!(!text.contains(other), "{other} in {text}");
    }
    let selection = Selection::new(&state, &[]).unwrap();
    let refused = write_csv(&selection, &test_key(), Kind::Templates, &mut Vec::new())
        .unwrap_err()
        .to_string();
    assert!(refused.contains("no CSV form"), "{refused}");
}

#[tokio::test]
async fn every_template_that_would_not_import_is_named_with_what_to_do() {
    let db = TestDb::sqlite();
    let store = db.store().await;
    store
        .apply(&[tenant("acme", "US")], &audit("seed"))
        .await
        .unwrap();
    // Stored before the API refused mixed-case models, or by SQL by hand.
    let mut seed = vec![
        template(TemplateScope::Model, "T46s", "mixed"),
        template(TemplateScope::Model, "T48S", "upper"),
        template(TemplateScope::Model, "T48s", "mixed, and upper too"),
        template(TemplateScope::Model, "T54W", "fine"),
    ];
    let orphans = 21;
    seed.extend((0..orphans).map(|n| template(TemplateScope::Tenant, &(900 + n).to_string(), "")));
    store.apply(&seed, &audit("seed")).await.unwrap();
    let mirror = Mirror::new();
    watcher::full_load(&mirror, &*store).await.unwrap();
    let state = mirror.load();
    let selection = Selection::new(&state, &[]).unwrap();
    let refused = write_json(&selection, &test_key(), &Kind::ALL, &mut Vec::new())
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("23 templates would not import: "),
        "{refused}"
    );
    // By id: the model templates came first, then the orphans.
    assert!(
        refused.contains(
            r#"template #1 (model "T46s", {mac}.cfg) has its model in mixed case: make it again as model "T46S" or "t46s" (DELETE /v1/templates/1, then POST /v1/templates"#
        ),
        "{refused}"
    );
    assert!(
        refused.contains(
            r#"template #3 (model "T48s", {mac}.cfg) has its model in mixed case, and template #2 ("T48S") is this model's template for this file already: delete #3 (DELETE /v1/templates/3)"#
        ),
        "{refused}"
    );
    assert!(
        refused.contains(
            r#"template #5 (tenant "900", {mac}.cfg) belongs to no tenant stored: delete it (DELETE /v1/templates/5)"#
        ),
        "{refused}"
    );
    assert!(
        !refused.contains("T54W") && !refused.contains("#2 (model"),
        "{refused}"
    );
    assert!(refused.contains(r#"tenant "917""#), "{refused}");
    assert!(!refused.contains(r#"tenant "918""#), "{refused}");
    assert!(
        refused.ends_with("; and 3 more; then export again"),
        "{refused}"
    );

    // A tenant's export carries none of them, and is not refused.
    let acme = Selection::new(&state, &["acme".to_string()]).unwrap();
    write_json(&acme, &test_key(), &Kind::ALL, &mut Vec::new()).unwrap();
}
