//! What a tenant's token stores or has compiled is bounded: every node
//! holds every tenant and source, and a draft is compiled like a template.

use axum::http::{Method, StatusCode};
use dialtone_sync::Backend;

use super::Harness;

/// Sends `body` as `role` and expects a 422 that says `why`.
async fn refused(h: &Harness, role: &str, method: Method, path: &str, body: &str, why: &str) {
    let reply = h.call(Some(role), method, path, Some(body), &[]).await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.text
    );
    assert!(reply.text.contains(why), "{why}: {}", reply.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_names_settings_secrets_and_drafts_are_refused() {
    let h = Harness::new(Backend::Sqlite).await;
    let long_name = serde_json::json!({ "name": "n".repeat(257) }).to_string();
    let tenant = "/v1/tenants/acme";
    refused(
        &h,
        "acme-admin",
        Method::PUT,
        tenant,
        &long_name,
        "at most 256 characters",
    )
    .await;

    let source = |settings: serde_json::Value, secret: &str| {
        serde_json::json!({ "name": "cnam2", "kind": "http", "settings": settings, "secret": secret })
            .to_string()
    };
    let url = "http://127.0.0.1:9/v2/{e164}";
    let padded = serde_json::json!({ "url": url, "ca_pem": "x".repeat(70_000) });
    let path = "/v1/tenants/acme/directory-sources";
    for (body, why) in [
        (source(padded, "k"), "settings is 68 KiB; at most 64 KiB"),
        (
            source(serde_json::json!({ "url": url }), &"s".repeat(5000)),
            "secret: at most 4096 bytes",
        ),
        (
            serde_json::json!({ "name": "x\nprovisioning: ban 198.51.100.7", "kind": "http",
                "settings": { "url": url } })
            .to_string(),
            "none of them control characters",
        ),
    ] {
        refused(&h, "acme-admin", Method::POST, path, &body, why).await;
    }
    let fits = source(serde_json::json!({ "url": url }), "k");
    let reply = h
        .call(Some("acme-admin"), Method::POST, path, Some(&fits), &[])
        .await;
    assert!(reply.status.is_success(), "{}", reply.text);

    // A draft past the template size quota (256 KiB by default).
    let draft = serde_json::json!({
        "mac": "001565000001", "file": "001565000001.cfg", "template_id": "{acme_template}",
        "body": format!("#!version:1.0.0.1\n#{}\n", "x".repeat(300_000)),
    })
    .to_string()
    .replace("\"{acme_template}\"", "{acme_template}");
    refused(
        &h,
        "acme-read",
        Method::POST,
        "/v1/preview",
        &draft,
        "quota_exceeded",
    )
    .await;
}

/// A device user without a password would lock the phone out of every
/// fetch; the API says so instead of storing it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_user_needs_a_password() {
    let h = Harness::new(Backend::Sqlite).await;
    refused(
        &h,
        "acme-admin",
        Method::POST,
        "/v1/phones",
        r#"{"mac": "001565000003", "tenant": "acme", "family": "yealink", "http_user": "desk"}"#,
        "http_password: required when http_user is set",
    )
    .await;
}
