//! `POST /v1/import` takes a platform's worth of phones in one body, so a
//! token that may not import is refused before any of it is read.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{Method, Request, StatusCode};
use dialtone_sync::Backend;
use futures::stream::{self, StreamExt};
use tower::ServiceExt;

use super::Harness;

/// A body that sends one MiB and then never ends.
fn endless() -> Body {
    let first = stream::once(async { Ok::<_, std::io::Error>(Bytes::from(vec![b'{'; 1 << 20])) });
    Body::from_stream(first.chain(stream::pending()))
}

fn import(h: &Harness, role: &str, body: Body) -> Request<Body> {
    Request::builder()
        .method(Method::POST)
        .uri("/v1/import")
        .header("authorization", format!("Bearer {}", h.tokens[role]))
        .header("content-type", "application/json")
        .body(body)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_token_is_refused_before_the_body_is_read() {
    let h = Harness::new(Backend::Sqlite).await;
    for role in ["acme-admin", "acme-read"] {
        let reply = tokio::time::timeout(
            Duration::from_secs(60),
            h.app.clone().oneshot(import(&h, role, endless())),
        )
        .await
        .expect("answered without waiting for a body that never ends")
        .unwrap();
        assert_eq!(reply.status(), StatusCode::FORBIDDEN, "{role}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_that_is_not_utf8_is_a_bad_request() {
    let h = Harness::new(Backend::Sqlite).await;
    let body = Body::from(b"{\"tenants\": [\"\xff\"]}".to_vec());
    let reply = h
        .app
        .clone()
        .oneshot(import(&h, "global", body))
        .await
        .unwrap();
    assert_eq!(reply.status(), StatusCode::BAD_REQUEST);
    let text = axum::body::to_bytes(reply.into_body(), 1 << 16)
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&text);
    assert!(text.contains("not UTF-8 (byte 14)"), "{text}");
}

/// `text` as a CSV import, as a global admin: the status and the reply.
async fn import_csv(h: &Harness, text: &str) -> (StatusCode, String) {
    let request = Request::builder()
        .method(Method::POST)
        .uri("/v1/import")
        .header("authorization", format!("Bearer {}", h.tokens["global"]))
        .header("content-type", "text/csv")
        .body(Body::from(text.to_string()))
        .unwrap();
    let reply = h.app.clone().oneshot(request).await.unwrap();
    let status = reply.status();
    let bytes = axum::body::to_bytes(reply.into_body(), 1 << 16)
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// A tenants CSV of `slug,name` renames: the tenant's settings and region
/// are kept as this node's mirror holds them, and a row the tenants API
/// would refuse is refused here too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renaming_tenants_csv_keeps_settings_and_region() {
    let h = Harness::new(Backend::Sqlite).await;
    let region = serde_json::json!({ "name": "acme Inc", "default_region": "GB" });
    let reply = h.put_acme("global", region).await;
    assert!(reply.status.is_success(), "{}", reply.text);

    let (status, text) = import_csv(&h, "slug,name\nacme,Acme Renamed\n").await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let view: serde_json::Value =
        serde_json::from_str(&h.get("global", "/v1/tenants/acme").await.text).unwrap();
    assert_eq!(view["name"], "Acme Renamed");
    assert_eq!(view["default_region"], "GB");
    assert_eq!(
        view["settings"],
        serde_json::json!({ "sip_domains": ["sip.example.net"] })
    );

    let (status, text) = import_csv(&h, "slug,name\nacme,\"Acme\u{202e}\"\n").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{text}");
    assert!(text.contains("tenant name holds U+202E"), "{text}");
}
