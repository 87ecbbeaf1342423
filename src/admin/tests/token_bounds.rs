//! `/v1/tokens` holds what the CLI holds: a lifetime within the shared
//! bounds (which the schema states), and a revoke that revoked nothing
//! leaves no audit row claiming it did.

use axum::http::{Method, StatusCode};
use dialtone_sync::{token_hash, AuditQuery, Backend, Mutation};

use super::Harness;
use crate::directory_cmd::EXPIRES_DAYS;

async fn create_expiring(h: &Harness, days: u64) -> super::Reply {
    let body =
        format!(r#"{{"name": "ops {days}", "scope": "global-admin", "expires_days": {days}}}"#);
    h.call(Some("global"), Method::POST, "/v1/tokens", Some(&body), &[])
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_lifetime_outside_the_cli_bounds_is_refused_naming_the_field() {
    let h = Harness::new(Backend::Sqlite).await;
    let (first, last) = (*EXPIRES_DAYS.start(), *EXPIRES_DAYS.end());
    let tokens_before = h.mirror.load().api_tokens().count();
    for days in [0, u64::from(last) + 1, u64::from(u32::MAX)] {
        let reply = create_expiring(&h, days).await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{days}: {}",
            reply.text
        );
        let message = reply.json()["error"]["message"].to_string();
        assert!(
            message.contains(&format!("expires_days: {first} to {last}")),
            "{days}: {}",
            reply.text
        );
    }
    assert_eq!(h.mirror.load().api_tokens().count(), tokens_before);
    for days in [first, last] {
        let reply = create_expiring(&h, u64::from(days)).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{days}: {}", reply.text);
        assert_eq!(reply.json()["state"], "active", "{}", reply.text);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schema_states_the_token_lifetime_bounds() {
    let h = Harness::new(Backend::Sqlite).await;
    let doc = h
        .call(None, Method::GET, "/openapi.json", None, &[])
        .await
        .json();
    let days = &doc["components"]["schemas"]["NewToken"]["properties"]["expires_days"];
    assert_eq!(days["minimum"], *EXPIRES_DAYS.start(), "{days}");
    assert_eq!(days["maximum"], *EXPIRES_DAYS.end(), "{days}");
}

/// The mirror still shows the token active (it was revoked on the
/// database since), so only the write itself can tell.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_token_revoked_since_the_mirror_saw_it_is_404_without_an_audit_row() {
    let h = Harness::new(Backend::Sqlite).await;
    let id = h
        .mirror
        .load()
        .token_by_hash(&token_hash(&h.tokens["acme-read"]))
        .unwrap()
        .id;
    let elsewhere = dialtone_sync::Audit {
        actor: "global elsewhere".into(),
        tenant: None,
        action: "revoke".into(),
        entity: "api_token".into(),
        entity_key: id.to_string(),
        detail: serde_json::json!({}),
    };
    h.store
        .apply(&[Mutation::RevokeApiToken { id }], &elsewhere)
        .await
        .unwrap();
    assert!(!h.mirror.load().api_token(id).unwrap().revoked);
    let rows_before = h.audit_rows().await;
    let reply = h
        .call(
            Some("global"),
            Method::DELETE,
            &format!("/v1/tokens/{id}"),
            None,
            &[],
        )
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{}", reply.text);
    assert!(
        reply.text.contains(&format!("active token {id}")),
        "{}",
        reply.text
    );
    assert_eq!(h.audit_rows().await, rows_before);
    let revokes = h
        .store
        .audit_log(&AuditQuery {
            entity: Some("api_token".into()),
            limit: 100,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(
        revokes.iter().filter(|r| r.action == "revoke").count(),
        1,
        "only the revoke made elsewhere: {revokes:?}"
    );
}
