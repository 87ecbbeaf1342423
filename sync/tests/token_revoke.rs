//! A revoke that revokes nothing (no such token, or one already revoked)
//! fails the write it is in, so its audit row, which would claim a revoke,
//! is never written; tokens that ended long enough ago are pruned: on both
//! backends.

#[macro_use]
mod common;

use std::time::Duration;

use common::*;
use dialtone_sync::testing::TestDb;
use dialtone_sync::*;

async fn revoke_rows(store: &dyn Store) -> usize {
    store
        .audit_log(&AuditQuery {
            entity: Some("api_token".into()),
            limit: 100,
            ..AuditQuery::default()
        })
        .await
        .unwrap()
        .iter()
        .filter(|row| row.action == "revoke")
        .count()
}

async fn revoke(store: &dyn Store, id: Id) -> Result<WriteReport, SyncError> {
    let audit = Audit {
        entity: "api_token".into(),
        entity_key: id.to_string(),
        ..audit("revoke")
    };
    store
        .apply(&[Mutation::RevokeApiToken { id }], &audit)
        .await
}

both_backends!(
    a_revoke_of_no_active_token_is_not_found_and_not_audited,
    revoke_body
);
async fn revoke_body(db: TestDb) {
    let store = db.store().await;
    store
        .apply(
            &[Mutation::CreateApiToken(ApiTokenInput {
                name: "ops".into(),
                token_hash: token_hash(&generate_token()),
                scope: TokenScope::GlobalAdmin,
                tenant: None,
                expires_at: None,
            })],
            &audit("token"),
        )
        .await
        .unwrap();
    let id = db_rows(&*store).await.api_tokens[0].id;

    let missing = revoke(&*store, id + 1000).await.unwrap_err();
    assert!(matches!(missing, SyncError::NotFound(_)), "{missing}");
    assert_eq!(revoke_rows(&*store).await, 0);

    let report = revoke(&*store, id).await.unwrap();
    assert_eq!(report.api_tokens.updated, 1, "{report:?}");
    assert_eq!(revoke_rows(&*store).await, 1);

    let again = revoke(&*store, id).await.unwrap_err();
    assert!(matches!(again, SyncError::NotFound(_)), "{again}");
    assert_eq!(
        revoke_rows(&*store).await,
        1,
        "only the revoke that revoked"
    );
    assert!(db_rows(&*store).await.api_tokens[0].revoked);
}

// Tokens that ended (revoked, or expired) longer than the retention ago
// are pruned; an active one, one revoked within it and one expiring later
// stay.
both_backends!(tokens_that_ended_past_the_retention_go, prune_body);
async fn prune_body(db: TestDb) {
    let store = db.store().await;
    let now = dialtone_sync::now_millis();
    let create = |name: &str, expires_at: Option<i64>| {
        Mutation::CreateApiToken(ApiTokenInput {
            name: name.into(),
            token_hash: token_hash(&generate_token()),
            scope: TokenScope::GlobalAdmin,
            tenant: None,
            expires_at,
        })
    };
    let batch = [
        create("active", None),
        create("revoked-long-ago", None),
        create("expired-long-ago", Some(now - 3_600_000)),
        create("expires-later", Some(now + 3_600_000)),
        create("revoked-now", None),
    ];
    store.apply(&batch, &audit("token")).await.unwrap();
    let id_of = |rows: &Dataset, name: &str| {
        rows.api_tokens
            .iter()
            .find(|t| &*t.name == name)
            .unwrap()
            .id
    };
    let rows = db_rows(&*store).await;
    revoke(&*store, id_of(&rows, "revoked-long-ago"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    revoke(&*store, id_of(&rows, "revoked-now")).await.unwrap();

    let pruned = store
        .prune_tokens(Duration::from_millis(400))
        .await
        .unwrap();
    assert_eq!(pruned, 2);
    let mut left: Vec<String> = db_rows(&*store)
        .await
        .api_tokens
        .iter()
        .map(|t| t.name.to_string())
        .collect();
    left.sort();
    assert_eq!(left, ["active", "expires-later", "revoked-now"]);
    assert_eq!(
        store
            .prune_tokens(Duration::from_millis(400))
            .await
            .unwrap(),
        0
    );
}
