//! A tenant's writes come at most `writes_per_minute` a minute (with a
//! burst of ten seconds' worth), all its tokens together; other tenants
//! and global admins are not held to it.

use axum::http::{header, Method, StatusCode};
use dialtone_sync::Backend;

use super::Harness;

fn entry(id: &str) -> String {
    serde_json::json!({"external_id": id, "name": format!("Entry {id}"), "numbers": [{"number": "+15550100", "kind": "work"}]})
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_past_its_write_rate_is_told_when_to_retry() {
    let h = Harness::new(Backend::Sqlite).await;
    // Six a minute: a burst of one, then one every ten seconds.
    let slowed =
        serde_json::json!({"name": "Acme", "settings": {"quotas": {"writes_per_minute": 6}}});
    let reply = h.put_acme("global", slowed).await;
    assert!(reply.status.is_success(), "{}", reply.text);

    let create = |role: &'static str, tenant: &'static str, id: &'static str| {
        let body = entry(id);
        let h = &h;
        async move {
            h.call(
                Some(role),
                Method::POST,
                &format!("/v1/tenants/{tenant}/directory"),
                Some(&body),
                &[],
            )
            .await
        }
    };
    // A read-only token's writes are refused, and spend none of the rate.
    for id in ["read-1", "read-2", "read-3"] {
        let refused = create("acme-read", "acme", id).await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.text);
    }
    let first = create("acme-admin", "acme", "rate-1").await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text);
    let second = create("acme-admin", "acme", "rate-2").await;
    assert_eq!(
        second.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        second.text
    );
    assert_eq!(second.json()["error"]["code"], "busy", "{}", second.text);
    assert!(second.text.contains("writes_per_minute"), "{}", second.text);
    let wait: u64 = second.headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=10).contains(&wait), "Retry-After {wait}");
    // Reads are not writes.
    let read = h.get("acme-admin", "/v1/tenants/acme/directory").await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.text);

    // Another tenant, and the operator for acme, write on.
    let other = create("globex-admin", "globex", "rate-3").await;
    assert_eq!(other.status, StatusCode::CREATED, "{}", other.text);
    let operator = create("global", "acme", "rate-4").await;
    assert_eq!(operator.status, StatusCode::CREATED, "{}", operator.text);
}
