//! A directory number's kind is stored as an import reads it, so an
//! export of what the API stored imports back unchanged.

use axum::http::{Method, StatusCode};
use dialtone_sync::Backend;

use super::Harness;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_number_kind_is_stored_trimmed_and_lowercase() {
    let h = Harness::new(Backend::Sqlite).await;
    let reply = h
        .call(
            Some("acme-admin"),
            Method::POST,
            "/v1/tenants/acme/directory",
            Some(r#"{"external_id": "k1", "name": "Kay", "numbers": [{"number": "+1 555 555 0142", "kind": " Mobile "}]}"#),
            &[],
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    assert_eq!(
        reply.json()["numbers"][0]["kind"],
        "mobile",
        "{}",
        reply.text
    );
}
