//! Shared by the directory tests: a private slapd (for tests that stop,
//! freeze or reconfigure the server), a test CA, and data builders.
#![allow(dead_code)]

pub mod ber;
pub mod slapd;

use std::sync::Arc;

pub use dialtone_sync::testing::build::*;
use dialtone_sync::*;

pub const LDAP_BASE: &str = "dc=example,dc=com";
pub const LDAP_ADMIN: &str = "cn=admin,dc=example,dc=com";
pub const LDAP_PASSWORD: &str = "secret";

/// The slapd scripts/test started, loaded with `data/directory.ldif`.
pub fn shared_ldap_url() -> String {
    std::env::var("DIALTONE_TEST_LDAP_URL")
        .expect("DIALTONE_TEST_LDAP_URL is not set: run the tests through scripts/test")
}

/// `tenant`'s upstream HTTP CNAM source `cnam` at `url` (priority 5,000).
pub fn cnam_source(tenant: &str, url: &str) -> Mutation {
    source(
        tenant,
        "cnam",
        SourceKind::Http,
        serde_json::json!({ "url": url }),
        None,
        5_000,
    )
}

/// LDAP source settings for `url`, names in the order the acceptance tests use.
pub fn ldap_settings(url: &str) -> serde_json::Value {
    serde_json::json!({
        "url": url,
        "bind_dn": LDAP_ADMIN,
        "base_dn": format!("ou=people,{LDAP_BASE}"),
        "filter": "(objectClass=inetOrgPerson)",
        "name_attributes": ["displayName", "givenName+sn", "cn"],
    })
}

pub fn lookup_token(tenant: &str) -> (String, Mutation) {
    let token = generate_token();
    let mutation = Mutation::CreateApiToken(dialtone_sync::ApiTokenInput {
        name: format!("{tenant} pbx"),
        token_hash: token_hash(&token),
        scope: TokenScope::Lookup,
        tenant: Some(tenant.into()),
        expires_at: None,
    });
    (token, mutation)
}

/// A store with `mutations` applied and a mirror loaded from it.
pub async fn mirror_of(
    mutations: &[Mutation],
) -> (dialtone_sync::testing::TestDb, Arc<dyn Store>, Arc<Mirror>) {
    let db = dialtone_sync::testing::TestDb::sqlite();
    let store = db.store().await;
    store.apply(mutations, &audit("setup")).await.unwrap();
    let mirror = Arc::new(Mirror::new());
    watcher::full_load(&mirror, &*store).await.unwrap();
    (db, store, mirror)
}

pub fn tenant_id(mirror: &Mirror, slug: &str) -> Id {
    mirror.load().tenant_by_slug(slug).unwrap().id
}
