//! `POST /v1/import` checks a document's templates as `POST /v1/templates`
//! checks one: its body compiles, its tenant's quotas hold (the quotas the
//! document itself gives a new tenant included); a refused one is named
//! at its place and nothing is written. A tenant's token imports nothing.

use axum::http::{Method, StatusCode};
use dialtone_sync::{Backend, Dataset};
use serde_json::json;

use crate::admin::tests::Harness;

fn template(scope: &str, key: Option<(&str, &str)>, body: &str) -> serde_json::Value {
    let mut t =
        json!({"scope": scope, "family": "yealink", "file_pattern": "{mac}.cfg", "body": body});
    if let Some((member, value)) = key {
        t[member] = value.into();
    }
    t
}

/// Hooli is new, its template size quota given with it.
fn document(templates: &[serde_json::Value]) -> String {
    json!({
        "tenants": [{"slug": "hooli", "name": "Hooli", "settings": {"quotas": {"template_bytes": 40}}}],
        "templates": templates,
    })
    .to_string()
}

async fn stored(h: &Harness) -> Dataset {
    h.store.load_all().await.unwrap().0
}

async fn import(h: &Harness, role: &str, body: &str) -> crate::admin::tests::Reply {
    h.call(Some(role), Method::POST, "/v1/import", Some(body), &[])
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_templates_are_checked_as_their_create_checks_them() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let h = Harness::new(backend).await;
        let (before, audit_rows) = (stored(&h).await, h.audit_rows().await);
        let refused = document(&[
            template("family", None, "# fine\n"),
            template(
                "tenant",
                Some(("tenant", "hooli")),
                &"# too long\n".repeat(5),
            ),
            template("family", Some(("model", "T46S")), "# x\n"),
            template("model", Some(("model", "T46S")), "line one\n{{ oops"),
        ]);
        let reply = import(&h, "global", &refused).await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{}",
            reply.text
        );
        let errors = reply.json()["error"]["details"]["errors"].clone();
        let fields: Vec<&str> = (errors.as_array().unwrap().iter())
            .map(|e| e["field"].as_str().unwrap())
            .collect();
        assert_eq!(
            fields,
            [
                "templates[2] model",
                "templates[1] body",
                "templates[3] body"
            ],
            "{errors}"
        );
        let text = errors.to_string();
        assert!(text.contains("template_bytes quota of 40"), "{text}");
        assert!(text.contains("template yealink/{mac}.cfg"), "{text}");
        let after = stored(&h).await;
        assert_eq!(after.templates, before.templates, "{backend:?}");
        assert_eq!(after.tenants, before.tenants);
        assert_eq!(h.audit_rows().await, audit_rows);

        let fine = document(&[template("tenant", Some(("tenant", "hooli")), "# hooli\n")]);
        let reply = import(&h, "global", &fine).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        assert_eq!(
            reply.json()["written"]["templates"]["inserted"],
            1,
            "{}",
            reply.text
        );
        let rows = stored(&h).await;
        let hooli = rows.tenants.iter().find(|t| &*t.slug == "hooli").unwrap();
        let saved = (rows.templates.iter())
            .find(|t| *t.scope_key == hooli.id.to_string())
            .unwrap();
        assert!(
            saved.updated_by.starts_with("token:"),
            "{}",
            saved.updated_by
        );
        let again = import(&h, "global", &fine).await;
        assert_eq!(
            again.json()["written"]["templates"]["unchanged"],
            1,
            "{}",
            again.text
        );
        assert_eq!(again.json()["written"]["templates"]["inserted"], 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_token_imports_no_template() {
    let h = Harness::new(Backend::Sqlite).await;
    let (before, audit_rows) = (stored(&h).await, h.audit_rows().await);
    let body = json!({"templates": [template("family", None, "# every tenant's\n")]}).to_string();
    let reply = import(&h, "acme-admin", &body).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.text);
    assert_eq!(stored(&h).await.templates, before.templates);
    assert_eq!(h.audit_rows().await, audit_rows);
}

fn tenant_doc(slug: &str, quotas: serde_json::Value) -> serde_json::Value {
    json!({"slug": slug, "name": slug, "settings": {"quotas": quotas}})
}

fn fields(reply: &crate::admin::tests::Reply) -> Vec<String> {
    let errors = reply.json()["error"]["details"]["errors"].clone();
    (errors.as_array().into_iter().flatten())
        .map(|e| e["field"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// README's own example: a new tenant's template reads its phone's first
/// line, which only the document holds. Without any phone of its scope
/// it renders as the API's create renders it, and is refused as that is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_tenants_template_is_tried_on_the_documents_own_phone() {
    let body = "#!version:1.0.0.1\naccount.1.label = {{ lines[0].display_name }}\n";
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let h = Harness::new(backend).await;
        let mut phone_template = template("phone", Some(("mac", "001565000099")), body);
        phone_template["tenant"] = "hooli".into();
        let doc = json!({
            "tenants": [{"slug": "hooli", "name": "Hooli"}],
            "phones": [{"tenant": "hooli", "mac": "001565000099", "family": "yealink", "model": "T46S",
                        "lines": [{"extension": "301", "display_name": "Front desk", "auth_user": "h301",
                                   "password": "pw", "registrar": "sip.example.net"}]}],
            "templates": [
                template("tenant", Some(("tenant", "hooli")), body),
                phone_template,
                template("model", Some(("model", "T99X")), body),
            ],
        });
        let phone = &doc["phones"][0];
        let mut model_doc = doc.clone();
        model_doc["phones"][0]["model"] = "T99X".into();
        let reply = import(&h, "global", &model_doc.to_string()).await;
        assert_eq!(reply.status, StatusCode::OK, "{backend:?} {}", reply.text);
        assert_eq!(reply.json()["written"]["templates"]["inserted"], 3);
        assert_eq!(phone["model"], "T46S");

        let bare = json!({"tenants": [{"slug": "initech", "name": "Initech"}]});
        let reply = import(&h, "global", &bare.to_string()).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        let created = json!({"scope": "tenant", "family": "yealink", "tenant": "initech",
                             "file_pattern": "{mac}.cfg", "body": body});
        let by_api = h
            .call(
                Some("global"),
                Method::POST,
                "/v1/templates",
                Some(&created.to_string()),
                &[],
            )
            .await;
        assert_eq!(
            by_api.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{}",
            by_api.text
        );
        assert!(by_api.text.contains("undefined"), "{}", by_api.text);
        let doc = json!({"templates": [template("tenant", Some(("tenant", "initech")), body)]});
        let reply = import(&h, "global", &doc.to_string()).await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{}",
            reply.text
        );
        assert!(reply.text.contains("undefined"), "{}", reply.text);
    }
}

/// A re-import of what is stored writes nothing and is not refused by a
/// quota lowered since.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_template_is_not_checked_again() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let h = Harness::new(backend).await;
        let saved = template("tenant", Some(("tenant", "hooli")), "# hooli\n");
        let reply = import(&h, "global", &document(std::slice::from_ref(&saved))).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        let lowered = json!({
            "tenants": [tenant_doc("hooli", json!({"template_bytes": 2}))],
            "templates": [saved],
        });
        let reply = import(&h, "global", &lowered.to_string()).await;
        assert_eq!(reply.status, StatusCode::OK, "{backend:?} {}", reply.text);
        assert_eq!(reply.json()["written"]["templates"]["unchanged"], 1);
    }
}

/// A phone the document moves loses its stored template: it counts for
/// neither tenant, and the document's own template of it is new to the
/// new tenant. The refusal names the count quota as the API's does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_phones_template_counts_for_its_new_tenant_only() {
    use crate::admin::tests::ACME_MAC;
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let h = Harness::new(backend).await;
        let mut on_acme = template("phone", Some(("mac", ACME_MAC)), "# desk\n");
        on_acme["tenant"] = "acme".into();
        let reply = import(&h, "global", &json!({"templates": [on_acme]}).to_string()).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        let mut on_globex = template("phone", Some(("mac", ACME_MAC)), "# desk\n");
        on_globex["tenant"] = "globex".into();
        let mut boot = template("tenant", Some(("tenant", "acme")), "# boot\n");
        boot["file_pattern"] = "{mac}.boot".into();
        let doc = json!({
            "tenants": [tenant_doc("acme", json!({"templates": 2})),
                        tenant_doc("globex", json!({"templates": 1}))],
            "phones": [{"tenant": "globex", "mac": ACME_MAC, "family": "yealink", "model": "T46S"}],
            "templates": [on_globex, boot],
        });
        let reply = import(&h, "global", &doc.to_string()).await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{}",
            reply.text
        );
        assert_eq!(
            fields(&reply),
            ["templates[0] templates"],
            "{backend:?} {}",
            reply.text
        );
        assert!(
            reply.text.contains("templates quota of 1"),
            "{}",
            reply.text
        );
    }
}

/// A template refused by its trial render takes no place in its tenant's
/// count: `--skip-invalid` would write the next one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_template_uses_no_quota() {
    let h = Harness::new(Backend::Sqlite).await;
    let mut fine = template("tenant", Some(("tenant", "hooli")), "# fine\n");
    fine["file_pattern"] = "{mac}.boot".into();
    let doc = json!({
        "tenants": [tenant_doc("hooli", json!({"templates": 1}))],
        "templates": [template("tenant", Some(("tenant", "hooli")), "{{ oops"), fine],
    });
    let reply = import(&h, "global", &doc.to_string()).await;
    assert_eq!(fields(&reply), ["templates[0] body"], "{}", reply.text);
}

/// Every template body obeys the API's 2 MiB cap, a family one's too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_family_template_past_the_apis_cap_is_refused() {
    let h = Harness::new(Backend::Sqlite).await;
    let body = format!("{{# {} #}}", "x".repeat(2 << 20));
    let reply = import(&h, "global", &document(&[template("family", None, &body)])).await;
    assert_eq!(fields(&reply), ["templates[0] body"], "{}", reply.text);
    assert!(reply.text.contains("2 MiB"), "{}", reply.text);
}

/// Past the time the checks may take, nothing is written, and the
/// whole run is refused, `--skip-invalid` or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_past_their_time_refuse_the_whole_import() {
    use crate::import_cmd::templates::{CheckLimits, TemplateChecks};
    let h = Harness::new(Backend::Sqlite).await;
    let text = document(&[template("family", None, "# fine\n")]);
    let mut plan = dialtone_sync::import::plan_text("request", true, &text);
    let checks = TemplateChecks {
        provisioner: &h.provisioner,
        state: h.mirror.load(),
        quotas: &h.state.quotas,
        actor: "test".into(),
    };
    let limits = CheckLimits {
        time: std::time::Duration::ZERO,
        ..Default::default()
    };
    checks.check_within(&mut plan, &limits).await.unwrap();
    assert_eq!(plan.whole_file_errors, 1);
    let message = &plan.errors[0].message;
    assert!(message.contains("took longer than 0 s"), "{message}");
}
