//! A write answers once committed, even when this node's mirror cannot
//! show it at once (another catch-up holds the turn, or a reload runs).

use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use dialtone_sync::Backend;

use super::Harness;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_does_not_wait_for_ever_on_the_mirror() {
    let h = Harness::new(Backend::Sqlite).await;
    // Another catch-up that never ends holds the turn.
    let turn = h.mirror.lock_catch_up().await;
    let started = Instant::now();
    let reply = tokio::time::timeout(
        Duration::from_secs(60),
        h.call(
            Some("acme-admin"),
            Method::PUT,
            "/v1/tenants/acme",
            Some(r#"{"name": "Acme renamed"}"#),
            &[],
        ),
    )
    .await
    .expect("the write waited for the mirror");
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    eprintln!("answered in {:?}", started.elapsed());
    drop(turn);
}

/// A create committed while this node's mirror cannot show it is answered
/// 202, not as an error a retry would meet as a 409; a new token's value,
/// shown only then, is in the answer. Once the mirror catches up the rows
/// are there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_the_mirror_cannot_show_yet_is_accepted() {
    let h = Harness::new(Backend::Sqlite).await;
    let turn = h.mirror.lock_catch_up().await;
    let create = |role: &'static str, path: &'static str, body: &'static str| {
        h.call(Some(role), Method::POST, path, Some(body), &[])
    };
    let (phone, tenant, token, entry, template, source) = tokio::join!(
        create(
            "acme-admin",
            "/v1/phones",
            r#"{"mac": "001565aabb01", "tenant": "acme", "family": "yealink", "model": "T46S", "lines": []}"#,
        ),
        create(
            "global",
            "/v1/tenants",
            r#"{"slug": "initech", "name": "Initech"}"#,
        ),
        create(
            "global",
            "/v1/tokens",
            r#"{"name": "ops", "scope": "tenant-read", "tenant": "acme"}"#,
        ),
        create(
            "acme-admin",
            "/v1/tenants/acme/directory",
            r#"{"external_id": "late-1", "name": "Late Entry", "numbers": [{"number": "+15550109999", "kind": "work"}]}"#,
        ),
        create(
            "global",
            "/v1/templates",
            r#"{"scope": "family", "family": "yealink", "file_pattern": "{mac}.boot", "body": "a = 1\n"}"#,
        ),
        create(
            "global",
            "/v1/tenants/acme/directory-sources",
            r#"{"name": "late", "kind": "http", "settings": {"url": "http://127.0.0.1:9/{digits}"}}"#,
        ),
    );
    for reply in [&phone, &tenant, &token, &entry, &template, &source] {
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
        assert_eq!(reply.json()["committed"], true, "{}", reply.text);
    }
    let value = token.json()["token"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(!value.is_empty(), "{}", token.text);
    drop(turn);
    dialtone_sync::watcher::catch_up(&h.mirror, &*h.store)
        .await
        .unwrap();
    for path in [
        "/v1/phones/001565aabb01",
        "/v1/tenants/initech",
        "/v1/tenants/acme/directory/late-1",
        "/v1/tenants/acme/directory-sources/late",
    ] {
        let reply = h.get("global", path).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.text);
    }
    let reply = h
        .call(Some("global"), Method::GET, "/v1/tokens", None, &[])
        .await;
    assert!(reply.text.contains("\"ops\""), "{}", reply.text);
    // The token shown in the 202 is the one stored.
    let mirror = h.mirror.load();
    assert!(mirror
        .token_by_hash(&dialtone_sync::token_hash(&value))
        .is_some());
}
