//! A tenant's template list and quota count walk its own templates (the
//! mirror's per-tenant index), not every tenant's, and a phone-scope
//! template counts for the tenant its phone is in now.

use axum::http::{Method, StatusCode};
use dialtone_sync::store::TenantInput;
use dialtone_sync::{Backend, Entity, Id, Mac, Mutation, Row, TemplateScope, TokenScope};

use super::{phone, seed_audit, template, Harness, ACME_MAC, GLOBEX_MAC};
use crate::admin::templates::walked;
use crate::admin::Principal;

fn principal(h: &Harness, scope: TokenScope, slug: Option<&str>) -> Principal {
    Principal {
        token_id: 1,
        token_name: "walker".into(),
        scope,
        tenant: slug.map(|s| h.mirror.load().tenant_by_slug(s).unwrap().clone()),
        token_etag: String::new(),
    }
}

async fn applied(h: &Harness, mutations: &[Mutation]) {
    h.store.apply(mutations, &seed_audit()).await.unwrap();
    dialtone_sync::watcher::catch_up(&h.mirror, &*h.store)
        .await
        .unwrap();
}

/// `tenant`'s settings as the harness has them, with a templates quota.
fn with_template_quota(tenant: &str, templates: u64) -> Mutation {
    Mutation::UpsertTenant(TenantInput {
        slug: tenant.into(),
        name: format!("{tenant} Inc"),
        default_region: "US".into(),
        settings: format!(
            r#"{{"sip_domains": ["sip.example.net"], "quotas": {{"templates": {templates}}}}}"#
        ),
    })
}

fn own_template(scope: TemplateScope, key: &str) -> Mutation {
    template(scope, key, "{mac}.cfg", "#!version:1.0.0.1\n# own\n")
}

/// A tenant-scope template `role`'s tenant does not have yet.
async fn create(h: &Harness, role: &str, tenant: &str) -> super::Reply {
    let body = format!(
        r#"{{"scope": "tenant", "tenant": "{tenant}", "family": "yealink", "file_pattern": "y0000000000{{code}}.cfg", "body": "x\n"}}"#
    );
    h.call(Some(role), Method::POST, "/v1/templates", Some(&body), &[])
        .await
}

/// The MACs of the phone-scope templates `role` lists.
async fn listed_phone_templates(h: &Harness, role: &str) -> Vec<(String, String)> {
    let reply = h.get(role, "/v1/templates?scope=phone").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    reply.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["scope_key"].as_str().unwrap().to_string(),
                t["tenant"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// A tenant's list walks its own templates: the platform's family
/// template and globex's tenant and phone templates are not visited, not
/// only not shown. A global admin's unfiltered list walks them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_list_walks_only_its_own_templates() {
    let h = Harness::new(Backend::Sqlite).await;
    applied(&h, &[own_template(TemplateScope::Phone, GLOBEX_MAC)]).await;
    let state = h.mirror.load();
    let acme = state.tenant_by_slug("acme").unwrap().id;
    let globex = state.tenant_by_slug("globex").unwrap().id;
    let ids = |walk: Box<dyn Iterator<Item = &std::sync::Arc<dialtone_sync::Template>> + '_>| {
        let mut ids: Vec<Id> = walk.map(|t| t.id).collect();
        ids.sort_unstable();
        ids
    };
    let owned_by = |tenant: Id| {
        let mut ids: Vec<Id> = (state.templates())
            .filter(|t| state.template_tenant(t) == Some(tenant))
            .map(|t| t.id)
            .collect();
        ids.sort_unstable();
        ids
    };
    assert_eq!(owned_by(acme).len(), 1);
    assert_eq!(owned_by(globex).len(), 2);

    let acme_reader = principal(&h, TokenScope::TenantRead, Some("acme"));
    assert_eq!(ids(walked(&state, &acme_reader, None)), owned_by(acme));
    let globex_admin = principal(&h, TokenScope::TenantAdmin, Some("globex"));
    assert_eq!(ids(walked(&state, &globex_admin, None)), owned_by(globex));
    let global = principal(&h, TokenScope::GlobalAdmin, None);
    assert_eq!(ids(walked(&state, &global, Some(globex))), owned_by(globex));
    assert_eq!(
        walked(&state, &global, None).count(),
        state.counts().templates
    );
}

/// A phone-scope template is listed and counted against the quota for the
/// tenant its phone is in: when the mirror has applied the phone's move
/// to another tenant before the template's delete (the store does both in
/// one transaction), and once it has both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_phones_template_is_listed_and_counted_for_its_new_tenant() {
    let h = Harness::new(Backend::Sqlite).await;
    // Each tenant has its tenant template; acme's phone has its own too.
    applied(
        &h,
        &[
            own_template(TemplateScope::Phone, ACME_MAC),
            with_template_quota("acme", 2),
            with_template_quota("globex", 2),
        ],
    )
    .await;
    let acme_phone = vec![(ACME_MAC.to_string(), "acme".to_string())];
    assert_eq!(listed_phone_templates(&h, "acme-read").await, acme_phone);
    assert_eq!(listed_phone_templates(&h, "globex-admin").await, []);
    let full = create(&h, "acme-admin", "acme").await;
    assert_eq!(
        full.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        full.text
    );
    assert_eq!(full.json()["error"]["details"]["quota"], "templates");

    // The phone's move, applied before the template's delete.
    let state = h.mirror.load();
    let globex = state.tenant_by_slug("globex").unwrap().id;
    let mut moved = (**state
        .phone_by_mac(&ACME_MAC.parse::<Mac>().unwrap())
        .unwrap())
    .clone();
    moved.tenant_id = globex;
    h.mirror.apply(
        vec![(Entity::Phone, moved.id, Some(Row::Phone(moved)))],
        state.cursor(),
        state.meta().clone(),
    );
    assert_eq!(listed_phone_templates(&h, "acme-read").await, []);
    let globex_phone = vec![(ACME_MAC.to_string(), "globex".to_string())];
    assert_eq!(
        listed_phone_templates(&h, "globex-admin").await,
        globex_phone
    );
    let full = create(&h, "globex-admin", "globex").await;
    assert_eq!(
        full.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        full.text
    );
    assert_eq!(full.json()["error"]["details"]["quota"], "templates");

    // The move as the store makes it: the phone's template is deleted.
    applied(&h, &[phone("globex", ACME_MAC, &["sip-globex-Xq9"], None)]).await;
    assert_eq!(listed_phone_templates(&h, "acme-read").await, []);
    assert_eq!(listed_phone_templates(&h, "globex-admin").await, []);
    for (role, tenant) in [("acme-admin", "acme"), ("globex-admin", "globex")] {
        let reply = create(&h, role, tenant).await;
        assert!(reply.status.is_success(), "{role}: {}", reply.text);
    }
}
