//! A global admin's write through a node whose mirror lags: what the node
//! decided on its own copy of a row (the tenant is empty, the phone is
//! acme's, the entry or source exists) holds only for that row. A new
//! tenant holding the slug by now, or a MAC resold to another tenant, is
//! another row, and the write must not reach it.

use axum::http::{Method, StatusCode};
use dialtone_sync::store::{DirectoryEntryInput, TenantInput};
use dialtone_sync::{
    watcher, AuditQuery, Backend, DirectoryNumber, DirectorySourceInput, Mutation, SourceKind,
};

use super::phone_swap::replace;
use super::{phone, seed_audit, Harness, Reply, ACME_MAC};

const NEW_MAC: &str = "001565000099";
const ELSEWHERE: &str = "001565000098";

/// Elsewhere (another node; this harness's mirror catches up only on its
/// own writes), acme is deleted and a new customer signs up with the slug,
/// a phone, an entry `e1` and a source `cnam` with a secret of its own.
async fn slug_taken_by_a_new_tenant(h: &Harness) {
    h.store
        .apply(
            &[Mutation::DeleteTenant {
                slug: "acme".into(),
            }],
            &seed_audit(),
        )
        .await
        .unwrap();
    let entry = DirectoryEntryInput {
        tenant: "acme".into(),
        external_id: "e1".into(),
        name: "New Alice".into(),
        company: None,
        numbers: vec![DirectoryNumber {
            number: "+1 555 555 0199".into(),
            kind: "work".into(),
        }],
    };
    let source = DirectorySourceInput {
        tenant: "acme".into(),
        name: "cnam".into(),
        kind: SourceKind::Http,
        priority: 10,
        enabled: true,
        settings: r#"{"url": "http://127.0.0.1:9/new-acme/{e164}"}"#.into(),
        secret: Some("new-acme-secret".into()),
        timeout_ms: 200,
    };
    h.store
        .apply(
            &[
                Mutation::UpsertTenant(TenantInput {
                    slug: "acme".into(),
                    name: "New Acme".into(),
                    default_region: "US".into(),
                    settings: "{}".into(),
                }),
                phone("acme", NEW_MAC, &["new-acme-pw"], None),
                Mutation::UpsertDirectoryEntry(entry),
                Mutation::UpsertDirectorySource(source),
            ],
            &seed_audit(),
        )
        .await
        .unwrap();
}

/// The answer to a write this node decided on a row the database no
/// longer holds.
fn assert_refused(reply: &Reply, what: &str) {
    assert_eq!(reply.status, StatusCode::CONFLICT, "{what}: {}", reply.text);
    assert!(
        reply.text.contains("changed a moment ago") && reply.text.contains("read it again"),
        "{what}: {}",
        reply.text
    );
}

/// After catching up: the new acme with everything it was created with.
async fn assert_new_acme_intact(h: &Harness) {
    watcher::catch_up(&h.mirror, &*h.store).await.unwrap();
    let state = h.mirror.load();
    let acme = state
        .tenant_by_slug("acme")
        .expect("the new customer's tenant was deleted");
    assert_eq!(&*acme.name, "New Acme");
    let phone = state
        .phone_by_mac(&NEW_MAC.parse().unwrap())
        .expect("the new customer's phone was deleted");
    assert_eq!(phone.tenant_id, acme.id);
    let entry = state
        .directory_entry_by_external_id(acme.id, "e1")
        .expect("the new customer's entry was deleted");
    assert_eq!(&*entry.name, "New Alice");
    let sources = state.sources_of(acme.id);
    let source = sources
        .iter()
        .find(|s| &*s.name == "cnam")
        .expect("the new customer's source was deleted");
    assert!(source.settings.contains("new-acme"), "{}", source.settings);
}

async fn writes_to_a_reused_slug(backend: Backend) {
    let h = Harness::new(backend).await;
    slug_taken_by_a_new_tenant(&h).await;
    let rows = h.audit_rows().await;
    let entry =
        r#"{"name": "Alice Acme", "numbers": [{"number": "+1 555 555 0101", "kind": "work"}]}"#;
    // The source pointed back where the old acme had it, the stored
    // secret kept: that secret is now the new customer's.
    let source = r#"{"kind": "http", "settings": {"url": "http://127.0.0.1:9/cnam/{e164}"}}"#;
    for (method, path, body) in [
        (Method::PUT, "/v1/tenants/acme/directory/e1", Some(entry)),
        (Method::DELETE, "/v1/tenants/acme/directory/e1", None),
        (
            Method::PUT,
            "/v1/tenants/acme/directory-sources/cnam",
            Some(source),
        ),
        (
            Method::DELETE,
            "/v1/tenants/acme/directory-sources/cnam",
            None,
        ),
        (Method::DELETE, "/v1/tenants/acme?force=true", None),
    ] {
        let what = format!("{method} {path}");
        let reply = h.call(Some("global"), method, path, body, &[]).await;
        assert_refused(&reply, &what);
    }
    assert_eq!(
        h.audit_rows().await,
        rows,
        "a refused write left an audit row"
    );
    assert_new_acme_intact(&h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_writes_from_a_lagging_node_miss_a_new_tenant_of_the_slug_sqlite() {
    writes_to_a_reused_slug(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_writes_from_a_lagging_node_miss_a_new_tenant_of_the_slug_postgres() {
    writes_to_a_reused_slug(Backend::Postgres).await;
}

async fn delete(h: &Harness, path: &str) -> Reply {
    h.call(Some("global"), Method::DELETE, path, None, &[])
        .await
}

/// Acme's phone and directory entry deleted through this node.
async fn empty_acme(h: &Harness) {
    for path in [
        format!("/v1/phones/{ACME_MAC}"),
        "/v1/tenants/acme/directory/e1".to_string(),
    ] {
        let reply = delete(h, &path).await;
        assert_eq!(
            reply.status,
            StatusCode::NO_CONTENT,
            "{path}: {}",
            reply.text
        );
    }
}

/// The offboarding as an operator makes it: acme emptied through this
/// node, then (elsewhere) deleted and its slug taken; the delete, retried
/// on this node without `force`, was judged on an empty tenant.
async fn offboarding_retried_on_a_lagging_node(backend: Backend) {
    let h = Harness::new(backend).await;
    empty_acme(&h).await;
    slug_taken_by_a_new_tenant(&h).await;
    let reply = delete(&h, "/v1/tenants/acme").await;
    assert_refused(&reply, "DELETE /v1/tenants/acme");
    assert_new_acme_intact(&h).await;
    // Caught up, the node sees what the tenant holds.
    let reply = delete(&h, "/v1/tenants/acme").await;
    assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.text);
    assert!(reply.text.contains("force=true"), "{}", reply.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unforced_tenant_delete_from_a_lagging_node_misses_a_new_tenant_sqlite() {
    offboarding_retried_on_a_lagging_node(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unforced_tenant_delete_from_a_lagging_node_misses_a_new_tenant_postgres() {
    offboarding_retried_on_a_lagging_node(Backend::Postgres).await;
}

/// The same tenant, not a new one: emptied through this node, then given
/// a phone through another. The tenant's own row (and tag) is unchanged,
/// so only the delete's count inside the write sees the phone.
async fn a_phone_added_elsewhere(backend: Backend) {
    let h = Harness::new(backend).await;
    empty_acme(&h).await;
    h.store
        .apply(
            &[phone("acme", NEW_MAC, &["added-pw"], None)],
            &seed_audit(),
        )
        .await
        .unwrap();
    let rows = h.audit_rows().await;
    let reply = delete(&h, "/v1/tenants/acme").await;
    assert_eq!(
        reply.status,
        StatusCode::CONFLICT,
        "{backend:?}: {}",
        reply.text
    );
    assert!(
        reply
            .text
            .contains("tenant acme still has 1 phones and 0 directory entries")
            && reply.text.contains("force=true"),
        "{}",
        reply.text
    );
    assert_eq!(
        h.audit_rows().await,
        rows,
        "a refused delete left an audit row"
    );
    watcher::catch_up(&h.mirror, &*h.store).await.unwrap();
    let state = h.mirror.load();
    let added = state.phone_by_mac(&NEW_MAC.parse().unwrap());
    assert!(
        added.is_some(),
        "{backend:?}: the phone added elsewhere was deleted"
    );
    drop(state);
    // Asked for, the delete takes it.
    let reply = delete(&h, "/v1/tenants/acme?force=true").await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unforced_tenant_delete_counts_what_another_node_added() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        a_phone_added_elsewhere(backend).await;
    }
}

/// Acme's phone resold to globex through another node; this node still
/// has it as acme's.
async fn resold_mac(backend: Backend) {
    let h = Harness::new(backend).await;
    let mac = ACME_MAC.parse().unwrap();
    h.store
        .apply(&[Mutation::DeletePhone { mac }], &seed_audit())
        .await
        .unwrap();
    h.store
        .apply(
            &[phone("globex", ACME_MAC, &["globex-pw"], None)],
            &seed_audit(),
        )
        .await
        .unwrap();
    let rows = h.audit_rows().await;
    let path = format!("/v1/phones/{ACME_MAC}");
    let reply = delete(&h, &path).await;
    assert_refused(&reply, "DELETE phone");
    let reply = replace(&h, "global", ACME_MAC, ELSEWHERE).await;
    assert_refused(&reply, "POST replace");
    assert_eq!(
        h.audit_rows().await,
        rows,
        "a refused write left an audit row"
    );

    watcher::catch_up(&h.mirror, &*h.store).await.unwrap();
    let state = h.mirror.load();
    let globex = state.tenant_by_slug("globex").unwrap().id;
    let owner = state.phone_by_mac(&mac).map(|p| p.tenant_id);
    assert_eq!(owner, Some(globex), "globex's phone was deleted or moved");
    assert!(state.phone_by_mac(&ELSEWHERE.parse().unwrap()).is_none());
    drop(state);
    // Caught up, the delete goes through, and globex's audit view has it.
    let reply = delete(&h, &path).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text);
    let latest = h
        .store
        .audit_log(&AuditQuery {
            tenant_id: Some(globex),
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(latest[0].action, "delete", "{latest:?}");
    assert_eq!(latest[0].tenant.as_deref(), Some("globex"), "{latest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_global_phone_write_from_a_lagging_node_misses_a_resold_mac_sqlite() {
    resold_mac(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_global_phone_write_from_a_lagging_node_misses_a_resold_mac_postgres() {
    resold_mac(Backend::Postgres).await;
}
