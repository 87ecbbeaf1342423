//! A new directory entry's or source's key is refused with surrounding
//! spaces: the import trims keys, so ` e1 ` beside `e1` would make the
//! operator's whole export fail to import.

use axum::http::{Method, StatusCode};
use dialtone_sync::Backend;

use super::Harness;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_padded_key_is_refused_naming_its_field() {
    let h = Harness::new(Backend::Sqlite).await;
    let entry = |id: &str| {
        format!(
            r#"{{"external_id": "{id}", "name": "Kay", "numbers": [{{"number": "+1 555 555 0142", "kind": "work"}}]}}"#
        )
    };
    let source = |name: &str| {
        format!(
            r#"{{"name": "{name}", "kind": "http", "settings": {{"url": "http://127.0.0.1:9/{{e164}}"}}}}"#
        )
    };
    let create = |path: &'static str, body: String| {
        let h = &h;
        async move {
            h.call(Some("acme-admin"), Method::POST, path, Some(&body), &[])
                .await
        }
    };
    let directory = "/v1/tenants/acme/directory";
    let sources = "/v1/tenants/acme/directory-sources";
    for (path, body, field) in [
        (directory, entry(" e1 "), "external_id"),
        (directory, entry("e1\\t"), "external_id"),
        (sources, source(" ad"), "name"),
        (sources, source("ad\\u00a0"), "name"),
    ] {
        let reply = create(path, body).await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{}",
            reply.text
        );
        assert_eq!(
            reply.json()["error"]["message"],
            format!("{field} must not start or end with spaces"),
            "{}",
            reply.text
        );
    }
    for (path, body) in [(directory, entry("e 1")), (sources, source("a d"))] {
        let reply = create(path, body).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    }
}
