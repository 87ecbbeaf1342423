//! Templates in a JSON import: each scope's key named as the file names
//! it, a tenant's by its slug, bound to that tenant's id by the writing
//! transaction (its id differs between databases, and the import may
//! create the tenant); the same file again writes nothing, a changed body
//! is a new version. On SQLite and PostgreSQL.

#[macro_use]
mod common;

use common::*;
use dialtone_sync::import::{plan_text, ImportPlan};
use dialtone_sync::store::{unknown_tenant, Store, WriteReport};
use dialtone_sync::testing::TestDb;
use dialtone_sync::*;

const MAC: &str = "001565000001";

fn document(tenant_body: &str) -> String {
    let templates = serde_json::json!([
        {"scope": "family", "family": "yealink", "file_pattern": "{mac}.cfg", "body": "family"},
        {"scope": "model", "family": "yealink", "model": "T46S", "file_pattern": "{mac}.cfg", "body": "model"},
        {"scope": "tenant", "family": "yealink", "tenant": "acme", "file_pattern": "{mac}.cfg", "body": tenant_body},
        {"scope": "phone", "family": "yealink", "tenant": "acme", "mac": "00:15:65:00:00:01", "file_pattern": "{mac}.cfg", "body": "phone"},
    ]);
    format!(
        r#"{{"tenants": [{{"slug": "acme", "name": "Acme"}}],
"phones": [{{"tenant": "acme", "mac": "{MAC}", "family": "yealink"}}],
"templates": {templates}}}"#
    )
}

fn planned(text: &str) -> ImportPlan {
    let plan = plan_text("import.json", true, text);
    let errors: Vec<String> = plan.errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(errors, Vec::<String>::new());
    plan
}

async fn import(store: &dyn Store, text: &str) -> Result<WriteReport, SyncError> {
    store
        .apply(&planned(text).take_mutations(), &audit("import"))
        .await
}

fn template(rows: &Dataset, scope: TemplateScope) -> &Template {
    (rows.templates.iter())
        .find(|t| t.scope == scope)
        .unwrap_or_else(|| panic!("no {scope} template"))
}

both_backends!(a_tenant_template_is_bound_to_its_tenant_by_slug, bound_body);
async fn bound_body(db: TestDb) {
    let store = db.store().await;
    // Another tenant first: acme's id is not the one it has elsewhere.
    store
        .apply(&[tenant("zeta", "US")], &audit("seed"))
        .await
        .unwrap();
    let report = import(&*store, &document("tenant v1")).await.unwrap();
    assert_eq!(report.templates.inserted, 4, "{report:?}");
    let rows = db_rows(&*store).await;
    let acme = rows.tenants.iter().find(|t| &*t.slug == "acme").unwrap();
    let zeta = rows.tenants.iter().find(|t| &*t.slug == "zeta").unwrap();
    assert_ne!(acme.id, zeta.id);
    let of_tenant = template(&rows, TemplateScope::Tenant);
    assert_eq!(&*of_tenant.scope_key, acme.id.to_string());
    assert_eq!(&*of_tenant.body, "tenant v1");
    assert_eq!(&*template(&rows, TemplateScope::Phone).scope_key, MAC);
    assert_eq!(&*template(&rows, TemplateScope::Model).scope_key, "T46S");
    assert_eq!(&*template(&rows, TemplateScope::Family).scope_key, "");

    // The same file again: nothing written.
    let again = import(&*store, &document("tenant v1")).await.unwrap();
    assert_eq!(
        (again.templates.inserted, again.templates.updated),
        (0, 0),
        "{again:?}"
    );
    assert_eq!(again.templates.unchanged, 4);

    // A changed body is the template's next version.
    let changed = import(&*store, &document("tenant v2")).await.unwrap();
    assert_eq!(changed.templates.updated, 1, "{changed:?}");
    let rows = db_rows(&*store).await;
    let of_tenant = template(&rows, TemplateScope::Tenant);
    assert_eq!((&*of_tenant.body, of_tenant.version), ("tenant v2", 2));
    let versions = store.template_versions(of_tenant.id).await.unwrap();
    assert_eq!(versions.len(), 2);
}

both_backends!(
    a_template_of_no_tenant_or_phone_is_refused_by_name,
    refused_body
);
async fn refused_body(db: TestDb) {
    let store = db.store().await;
    let nobody = r#"{"templates": [{"scope": "tenant", "family": "yealink", "tenant": "nobody",
        "file_pattern": "{mac}.cfg", "body": "x"}]}"#;
    let refused = import(&*store, nobody).await.unwrap_err().to_string();
    assert!(refused.contains(&unknown_tenant("nobody")), "{refused}");
    let no_phone = r#"{"tenants": [{"slug": "acme", "name": "Acme"}],
        "templates": [{"scope": "phone", "family": "yealink", "tenant": "acme", "mac": "001565000009",
        "file_pattern": "{mac}.cfg", "body": "x"}]}"#;
    let refused = import(&*store, no_phone).await.unwrap_err().to_string();
    assert!(
        refused.contains("phone 001565000009 does not exist"),
        "{refused}"
    );
    assert!(db_rows(&*store).await.templates.is_empty());
}

#[test]
fn a_template_is_refused_at_its_place_and_field() {
    let refused = |template: serde_json::Value, field: &str, says: &str| {
        let text = format!("{{\"templates\": [\n{template}]}}");
        let plan = plan_text("t.json", true, &text);
        let errors: Vec<String> = plan.errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(errors.len(), 1, "{errors:?}");
        let want = format!("t.json:2:1 (templates[0] {field}): ");
        assert!(
            errors[0].starts_with(&want) && errors[0].contains(says),
            "{} wanted {want}…{says}",
            errors[0]
        );
        assert!(plan.items.is_empty());
    };
    let base = |scope: &str| serde_json::json!({"scope": scope, "family": "yealink", "file_pattern": "{mac}.cfg", "body": "x"});
    let with = |scope: &str, field: &str, value: &str| {
        let mut t = base(scope);
        t[field] = value.into();
        t
    };
    refused(base("model"), "model", "needs model");
    refused(base("tenant"), "tenant", "needs tenant");
    refused(base("phone"), "mac", "needs mac");
    refused(
        with("phone", "mac", "001565000001"),
        "tenant",
        "a phone-scope template needs tenant",
    );
    refused(
        with("model", "tenant", "acme"),
        "tenant",
        "only a tenant- or phone-scope template names a tenant",
    );
    refused(
        with("family", "model", "T46S"),
        "model",
        "only a model-scope",
    );
    refused(with("tenant", "tenant", "Not A Slug"), "tenant", "slug");
    refused(with("phone", "mac", "nope"), "mac", "not a MAC");
    refused(with("model", "model", "T46S; rm"), "model", "model");
    refused(with("family", "body", "a\0b"), "body", "U+0000");
    refused(
        with("family", "file_pattern", &"x".repeat(257)),
        "file_pattern",
        "at most 256 bytes",
    );

    // The same key twice: the later copy is refused at its place.
    let twice = format!(
        "{{\"templates\": [\n{},\n{}]}}",
        with("tenant", "tenant", "acme"),
        with("tenant", "tenant", "acme")
    );
    let plan = plan_text("t.json", true, &twice);
    assert_eq!(plan.errors.len(), 1, "{:?}", plan.errors);
    assert!(
        plan.errors[0]
            .to_string()
            .starts_with("t.json:3:1 (templates[1]): duplicate"),
        "{}",
        plan.errors[0]
    );
}

both_backends!(
    a_phone_template_goes_only_onto_its_own_tenants_phone,
    own_phone_body
);
/// A phone that moved to another tenant lost its templates with the
/// move: its old tenant's, in a file exported before, must not come back
/// onto it. Refused by name, nothing written; the phone's own tenant's
/// template is written.
async fn own_phone_body(db: TestDb) {
    let store = db.store().await;
    let seed = [
        tenant("acme", "US"),
        tenant("beta", "US"),
        phone("acme", 1, 1),
    ];
    store.apply(&seed, &audit("seed")).await.unwrap();
    let of = |slug: &str| {
        format!(
            r#"{{"templates": [{{"scope": "phone", "family": "yealink", "tenant": "{slug}",
            "mac": "{MAC}", "file_pattern": "{{mac}}.cfg", "body": "{slug}'s"}}]}}"#
        )
    };
    let refused = import(&*store, &of("beta")).await.unwrap_err().to_string();
    assert!(
        refused.contains(&format!("phone {MAC} is not tenant \"beta\"'s")),
        "{refused}"
    );
    assert!(db_rows(&*store).await.templates.is_empty());

    let report = import(&*store, &of("acme")).await.unwrap();
    assert_eq!(report.templates.inserted, 1, "{report:?}");
    let rows = db_rows(&*store).await;
    assert_eq!(&*template(&rows, TemplateScope::Phone).body, "acme's");
}

#[test]
fn a_tenants_template_and_its_phones_templates_are_not_duplicates() {
    let text = serde_json::json!({"templates": [
        {"scope": "tenant", "family": "yealink", "tenant": "acme", "file_pattern": "{mac}.cfg", "body": "t"},
        {"scope": "phone", "family": "yealink", "tenant": "acme", "mac": MAC, "file_pattern": "{mac}.cfg", "body": "p1"},
        {"scope": "phone", "family": "yealink", "tenant": "acme", "mac": "001565000002", "file_pattern": "{mac}.cfg", "body": "p2"},
    ]})
    .to_string();
    assert_eq!(planned(&text).items.len(), 3);
}
