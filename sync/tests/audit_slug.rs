//! A global admin's audit filter by tenant slug, on both backends: a slug
//! taken over after a deletion reads the new customer's rows only, and a
//! slug no tenant holds still reads the deleted tenant's trail.

#[macro_use]
mod common;

use dialtone_sync::testing::build::{audit, tenant};
use dialtone_sync::testing::TestDb;
use dialtone_sync::*;

/// `action` on `slug`'s behalf, audited under its slug.
fn on(slug: &str, action: &str) -> Audit {
    Audit {
        tenant: Some(slug.into()),
        entity: "tenant".into(),
        ..audit(action)
    }
}

async fn actions(store: &dyn Store, slug: &str) -> Vec<String> {
    let rows = store
        .audit_log(&AuditQuery {
            tenant: Some(slug.into()),
            limit: 100,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    rows.into_iter().rev().map(|r| r.action).collect()
}

both_backends!(a_reused_slug_reads_only_its_new_tenant, reused_body);
async fn reused_body(db: TestDb) {
    let store = db.store().await;
    store
        .apply(&[tenant("acme", "US")], &on("acme", "old-create"))
        .await
        .unwrap();
    store
        .apply(&[tenant("acme", "GB")], &on("acme", "old-edit"))
        .await
        .unwrap();
    store
        .apply(
            &[Mutation::DeleteTenant {
                slug: "acme".into(),
            }],
            &on("acme", "old-delete"),
        )
        .await
        .unwrap();
    // Until the slug is taken again, the deleted tenant's trail is read by
    // its text.
    assert_eq!(
        actions(&*store, "acme").await,
        ["old-create", "old-edit", "old-delete"]
    );

    store
        .apply(&[tenant("acme", "US")], &on("acme", "new-create"))
        .await
        .unwrap();
    store
        .apply(&[tenant("acme", "DE")], &on("acme", "new-edit"))
        .await
        .unwrap();
    assert_eq!(
        actions(&*store, "acme").await,
        ["new-create", "new-edit"],
        "the new acme's filter mixes in the deleted acme's rows"
    );
}
