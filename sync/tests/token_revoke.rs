//! A revoke that revokes nothing (no such token, or one already revoked)
//! fails the write it is in, so its audit row, which would claim a revoke,
//! is never written: on both backends.

#[macro_use]
mod common;

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
