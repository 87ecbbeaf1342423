//! A node's mirror may lag the database: a token revoked there, or gone
//! with its tenant (whose slug a new tenant may hold by now), still
//! authenticates on the lagging node, but every write checks the token
//! in the writing transaction and writes nothing with it.

use axum::http::{Method, StatusCode};
use dialtone_sync::store::TenantInput;
use dialtone_sync::{token_hash, Audit, Backend, Id, Mutation};

use super::{Harness, ACME_MAC};

fn elsewhere() -> Audit {
    Audit {
        actor: "global elsewhere".into(),
        tenant: None,
        action: "update".into(),
        entity: "token".into(),
        entity_key: String::new(),
        detail: serde_json::json!({}),
    }
}

fn token_id(h: &Harness, role: &str) -> Id {
    h.mirror
        .load()
        .token_by_hash(&token_hash(&h.tokens[role]))
        .unwrap()
        .id
}

const ENTRY: &str = r#"{"external_id": "k1", "name": "Planted Name", "numbers": [{"number": "+1 555 555 0142", "kind": "work"}]}"#;

/// A new directory entry for acme, as `role`.
async fn post_entry(h: &Harness, role: &str) -> super::Reply {
    h.call(
        Some(role),
        Method::POST,
        "/v1/tenants/acme/directory",
        Some(ENTRY),
        &[],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_revoked_elsewhere_writes_nothing_through_a_lagging_node() {
    let h = Harness::new(Backend::Sqlite).await;
    // Revoked straight in the database: this harness's mirror only
    // catches up on its own writes.
    let id = token_id(&h, "acme-admin");
    h.store
        .apply(&[Mutation::RevokeApiToken { id }], &elsewhere())
        .await
        .unwrap();
    let phone = format!("/v1/phones/{ACME_MAC}");
    assert!(h.get("acme-admin", &phone).await.status.is_success());
    let reply = post_entry(&h, "acme-admin").await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.text);
    let reply = h
        .call(Some("acme-admin"), Method::DELETE, &phone, None, &[])
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.text);
    // Another token's writes go on.
    let reply = post_entry(&h, "global").await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_tenants_token_cannot_write_into_the_next_tenant_of_its_slug() {
    let h = Harness::new(Backend::Sqlite).await;
    // Elsewhere, acme is deleted (its tokens with it) and a new tenant
    // takes the slug.
    h.store
        .apply(
            &[
                Mutation::DeleteTenant {
                    slug: "acme".into(),
                },
                Mutation::UpsertTenant(TenantInput {
                    slug: "acme".into(),
                    name: "New Acme".into(),
                    default_region: "US".into(),
                    settings: "{}".into(),
                }),
            ],
            &elsewhere(),
        )
        .await
        .unwrap();
    let reply = post_entry(&h, "acme-admin").await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.text);
    dialtone_sync::watcher::catch_up(&h.mirror, &*h.store)
        .await
        .unwrap();
    let state = h.mirror.load();
    let tenant = state.tenant_by_slug("acme").unwrap();
    assert_eq!(&*tenant.name, "New Acme");
    assert!(
        state.directory_of(tenant.id).is_empty(),
        "the old tenant's token wrote into the new tenant"
    );
}

/// A dry run is the import itself, rolled back: a revoked token ran one,
/// a whole transaction against the database, on a lagging node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_revoked_elsewhere_runs_no_dry_run_through_a_lagging_node() {
    let h = Harness::new(Backend::Sqlite).await;
    let id = token_id(&h, "global");
    h.store
        .apply(&[Mutation::RevokeApiToken { id }], &elsewhere())
        .await
        .unwrap();
    let csv = "tenant,external_id,name,work\nacme,d1,Dry Run,+1 212 555 0190\n";
    let request = axum::http::Request::builder()
        .method(Method::POST)
        .uri("/v1/import?dry_run=true")
        .header("authorization", format!("Bearer {}", h.tokens["global"]))
        .header("content-type", "text/csv")
        .body(axum::body::Body::from(csv))
        .unwrap();
    let reply = tower::ServiceExt::oneshot(h.app.clone(), request)
        .await
        .unwrap();
    assert_eq!(reply.status(), StatusCode::UNAUTHORIZED);
}
