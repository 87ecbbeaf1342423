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
