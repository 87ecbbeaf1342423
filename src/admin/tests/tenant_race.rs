//! A tenant's own token may edit its tenant but never its quotas; a write
//! it makes from a lagging mirror must not put back quotas a global admin
//! has just changed.

use axum::http::{Method, StatusCode};
use dialtone_sync::store::TenantInput;
use dialtone_sync::{etag_of, watcher, Backend, Mirror, Mutation};

use super::Harness;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_edit_from_a_lagging_node_does_not_undo_a_quota_change() {
    let h = Harness::new(Backend::Sqlite).await;
    // A global admin lowers acme's phone quota on another node: straight in
    // the database, which this harness's mirror has not caught up with.
    let audit = dialtone_sync::Audit {
        actor: "global elsewhere".into(),
        tenant: None,
        action: "update".into(),
        entity: "tenant".into(),
        entity_key: "acme".into(),
        detail: serde_json::json!({}),
    };
    let lowered = TenantInput {
        slug: "acme".into(),
        name: "Acme".into(),
        default_region: "US".into(),
        settings: r#"{"quotas":{"phones":5}}"#.into(),
    };
    h.store
        .apply(&[Mutation::UpsertTenant(lowered)], &audit)
        .await
        .unwrap();
    let edit = r#"{"name": "Acme Renamed", "settings": {"note": "x"}}"#;
    let edit_as_tenant = || {
        h.call(
            Some("acme-admin"),
            Method::PUT,
            "/v1/tenants/acme",
            Some(edit),
            &[],
        )
    };
    let reply = edit_as_tenant().await;
    assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.text);
    // Nor with an If-Match read from a node that has caught up: the tag
    // matches the database, but this node would write its older row's quotas.
    let caught_up = Mirror::new();
    watcher::full_load(&caught_up, &*h.store).await.unwrap();
    let current = etag_of(&**caught_up.load().tenant_by_slug("acme").unwrap());
    let reply = h
        .call(
            Some("acme-admin"),
            Method::PUT,
            "/v1/tenants/acme",
            Some(edit),
            &[("if-match", &current)],
        )
        .await;
    assert_eq!(
        reply.status,
        StatusCode::PRECONDITION_FAILED,
        "{}",
        reply.text
    );
    dialtone_sync::watcher::catch_up(&h.mirror, &*h.store)
        .await
        .unwrap();
    let stored = h.get("global", "/v1/tenants/acme").await;
    assert!(stored.text.contains(r#""phones":5"#), "{}", stored.text);
    // Read again, the same edit goes through and keeps the new quota.
    let reply = edit_as_tenant().await;
    assert!(reply.status.is_success(), "{}", reply.text);
    let stored = h.get("global", "/v1/tenants/acme").await;
    assert!(stored.text.contains(r#""phones":5"#), "{}", stored.text);
    assert!(stored.text.contains("Acme Renamed"), "{}", stored.text);
}
