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
