//! The admin API in process (`oneshot` on the router) against a real store:
//! SQLite by default, PostgreSQL where concurrency matters. The end-to-end
//! test across two `dialtone serve` processes is in tests/admin.rs.

mod audit_key;
mod bans;
mod body_errors;
mod caching;
mod checks;
mod concurrent_writes;
mod create_conflicts;
mod device_login;
mod directory_kinds;
mod fleet;
mod hung_database;
mod identity;
mod import_body;
mod lagging_writes;
mod mac_vendor;
mod matrix;
mod natural_keys;
mod network_octets;
mod no_database;
mod nul_text;
mod openapi;
mod phone_limits;
mod phone_swap;
mod pool_share;
mod reach;
mod render_busy;
mod resync;
mod resync_limits;
mod sizes;
mod source_secret;
mod source_tests;
mod stale_token;
mod template_groups;
mod templates;
mod tenant_race;
mod token_bounds;
mod unclaimed;
mod usage;
mod versions;
mod walks;
mod write_catch_up;
mod write_rate;

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::Router;
use dialtone_sync::store::{
    DirectoryEntryInput, LineInput, PhoneInput, StoreOptions, TemplateInput, TenantInput,
};
use dialtone_sync::testing::{test_key, TestDb};
use dialtone_sync::*;
use dialtone_tftp::{ProvisionOptions, Provisioner, Shipped};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

use super::{router, AdminState};

/// Secrets the seed stores; no response may ever contain one.
pub const SECRETS: &[&str] = &[
    "sip-acme-1-Xq9",
    "sip-acme-2-Xq9",
    "sip-globex-Xq9",
    "dev-http-Xq9",
    "ldap-bind-Xq9",
];

pub const ACME_MAC: &str = "001565000001";
pub const GLOBEX_MAC: &str = "001565000002";

pub struct Harness {
    /// Holds the database (a temporary file for SQLite) for the test's life.
    _db: TestDb,
    pub store: Arc<dyn Store>,
    pub mirror: Arc<Mirror>,
    pub provisioner: Arc<Provisioner>,
    pub app: Router,
    /// What `app` was built from, for tests that build another router
    /// over the same data with one setting changed.
    pub state: AdminState,
    /// The router's database share, for tests that take its places.
    pub database_share: Arc<crate::admin::database_share::DatabaseShare>,
    /// By role: global, acme-admin, acme-read, acme-lookup, globex-admin.
    pub tokens: HashMap<&'static str, String>,
    /// The resync service, its NOTIFYs sent to `proxy` (a socket nobody
    /// reads unless a test does; nothing is sent unless a test runs it).
    pub resync: crate::resync::ResyncService,
    pub proxy: std::net::UdpSocket,
    /// Placeholders in paths and bodies: `{acme_template}` and friends.
    pub ids: HashMap<&'static str, String>,
    /// The mirror's change stream, applied to the render cache before each
    /// `served()` (as `Provisioner::follow` does in the server).
    events: std::sync::Mutex<tokio::sync::broadcast::Receiver<ChangeEvent>>,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }

    pub fn etag(&self) -> String {
        self.headers
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    }
}

fn phone(tenant: &str, mac: &str, passwords: &[&str], http_password: Option<&str>) -> Mutation {
    Mutation::UpsertPhone(PhoneInput {
        tenant: tenant.into(),
        mac: mac.parse().unwrap(),
        family: Family::Yealink,
        model: Some("T46S".into()),
        label: Some(format!("{tenant} front desk")),
        variables: "{}".into(),
        http_user: http_password.map(|_| "desk".into()),
        http_password: http_password.map(str::to_string),
        lines: passwords
            .iter()
            .enumerate()
            .map(|(i, pw)| LineInput {
                extension: format!("{}", 200 + i),
                display_name: format!("{tenant} line {}", i + 1),
                auth_user: format!("{tenant}{}", 200 + i),
                password: Some(pw.to_string()),
                registrar: "sip.example.net".into(),
                proxy: None,
                settings: "{}".into(),
            })
            .collect(),
    })
}

fn template(scope: TemplateScope, scope_key: &str, pattern: &str, body: &str) -> Mutation {
    Mutation::UpsertTemplate(TemplateInput {
        scope,
        family: Family::Yealink,
        scope_key: scope_key.into(),
        file_pattern: pattern.into(),
        body: body.into(),
        updated_by: "seed".into(),
        keep_versions: None,
    })
}

pub const ACME_V1: &str = "#!version:1.0.0.1\n# acme v1\naccount.1.label = {{ lines[0].display_name }}\naccount.1.password = {{ lines[0].password }}\n";
pub const ACME_V2: &str = "#!version:1.0.0.1\n# acme v2\naccount.1.label = {{ lines[0].display_name }}\naccount.1.password = {{ lines[0].password }}\n";

/// The audit row of writes a test makes to set up its data.
pub(super) fn seed_audit() -> Audit {
    Audit {
        actor: "seed".into(),
        tenant: None,
        action: "seed".into(),
        entity: "test".into(),
        entity_key: String::new(),
        detail: serde_json::json!({}),
    }
}

/// Waits (10 s at most) until `waiting` says `count` jobs wait on a pool:
/// a sleep is too short on a loaded machine, and a job not queued yet
/// lets the next request wait in its place instead of being refused.
pub(super) async fn until_waiting(what: &str, count: usize, waiting: impl Fn() -> usize) {
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while waiting() < count {
        assert!(
            std::time::Instant::now() < give_up,
            "{what}: {} of {count} waiting after 10 s",
            waiting()
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

impl Harness {
    pub async fn new(backend: Backend) -> Harness {
        Harness::with_options(backend, &StoreOptions::default()).await
    }

    /// The harness over a store opened with `options`, the database share
    /// sized from its pool as `serve` sizes it.
    pub async fn with_options(backend: Backend, options: &StoreOptions) -> Harness {
        let db = TestDb::new(backend).await;
        let store = db.store_with(options).await;
        Harness::over(db, store, options).await
    }

    /// The harness over `store`: `db`'s database, opened and migrated by
    /// the test with `options` (through a [`dialtone_sync::testing::Relay`], say).
    pub async fn over(db: TestDb, store: Arc<dyn Store>, options: &StoreOptions) -> Harness {
        let seed = seed_audit();
        let tenant = |slug: &str| {
            Mutation::UpsertTenant(TenantInput {
                slug: slug.into(),
                name: format!("{slug} Inc"),
                default_region: "US".into(),
                // Both tenants' lines register to the same domain, as on a
                // platform with one shared domain.
                settings: r#"{"sip_domains": ["sip.example.net"]}"#.into(),
            })
        };
        store
            .apply(&[tenant("acme"), tenant("globex")], &seed)
            .await
            .unwrap();
        let (data, _, _) = store.load_all().await.unwrap();
        let acme_id = data.tenants.iter().find(|t| &*t.slug == "acme").unwrap().id;
        let globex_id = data
            .tenants
            .iter()
            .find(|t| &*t.slug == "globex")
            .unwrap()
            .id;
        let entry = |tenant: &str, id: &str, name: &str, number: &str| {
            Mutation::UpsertDirectoryEntry(DirectoryEntryInput {
                tenant: tenant.into(),
                external_id: id.into(),
                name: name.into(),
                company: None,
                numbers: vec![DirectoryNumber {
                    number: number.into(),
                    kind: "work".into(),
                }],
            })
        };
        let source = |tenant: &str| {
            Mutation::UpsertDirectorySource(DirectorySourceInput {
                tenant: tenant.into(),
                name: "cnam".into(),
                kind: SourceKind::Http,
                priority: 10,
                enabled: true,
                // Port 9 (discard) on loopback: nothing listens; tests fail fast.
                settings: r#"{"url": "http://127.0.0.1:9/cnam/{e164}"}"#.into(),
                secret: Some("ldap-bind-Xq9".into()),
                timeout_ms: 200,
            })
        };
        store
            .apply(
                &[
                    phone(
                        "acme",
                        ACME_MAC,
                        &["sip-acme-1-Xq9", "sip-acme-2-Xq9"],
                        None,
                    ),
                    phone(
                        "globex",
                        GLOBEX_MAC,
                        &["sip-globex-Xq9"],
                        Some("dev-http-Xq9"),
                    ),
                    entry("acme", "e1", "Alice Acme", "+1 555 555 0101"),
                    entry("globex", "g1", "Gary Globex", "+1 555 555 0102"),
                    source("acme"),
                    source("globex"),
                    template(
                        TemplateScope::Tenant,
                        &acme_id.to_string(),
                        "{mac}.cfg",
                        ACME_V1,
                    ),
                    template(
                        TemplateScope::Tenant,
                        &globex_id.to_string(),
                        "{mac}.cfg",
                        "#!version:1.0.0.1\n# globex\n",
                    ),
                    template(
                        TemplateScope::Family,
                        "",
                        "y0000000000{code}.cfg",
                        "#!version:1.0.0.1\n# family common\n",
                    ),
                ],
                &seed,
            )
            .await
            .unwrap();
        store
            .apply(
                &[template(
                    TemplateScope::Tenant,
                    &acme_id.to_string(),
                    "{mac}.cfg",
                    ACME_V2,
                )],
                &seed,
            )
            .await
            .unwrap();
        let mut tokens = HashMap::new();
        let mut mutations = Vec::new();
        for (role, scope, tenant) in [
            ("global", TokenScope::GlobalAdmin, None),
            ("acme-admin", TokenScope::TenantAdmin, Some("acme")),
            ("acme-read", TokenScope::TenantRead, Some("acme")),
            ("acme-lookup", TokenScope::Lookup, Some("acme")),
            ("globex-admin", TokenScope::TenantAdmin, Some("globex")),
        ] {
            let token = generate_token();
            mutations.push(Mutation::CreateApiToken(ApiTokenInput {
                name: role.into(),
                token_hash: token_hash(&token),
                scope,
                tenant: tenant.map(str::to_string),
                expires_at: None,
            }));
            tokens.insert(role, token);
        }
        store.apply(&mutations, &seed).await.unwrap();
        let mirror = Arc::new(Mirror::new());
        watcher::full_load(&mirror, &*store).await.unwrap();
        let state = mirror.load();
        let mut ids = HashMap::new();
        for t in state.templates() {
            let name = match (t.scope, &*t.scope_key) {
                (TemplateScope::Family, _) => "{family_template}",
                (TemplateScope::Tenant, key) if key == acme_id.to_string() => "{acme_template}",
                (TemplateScope::Tenant, key) if key == globex_id.to_string() => "{globex_template}",
                _ => continue,
            };
            ids.insert(name, t.id.to_string());
        }
        let globex_token = state
            .api_tokens()
            .find(|t| &*t.name == "globex-admin")
            .unwrap()
            .id;
        ids.insert("{globex_token}", globex_token.to_string());
        // An unknown phone seen from acme's network, and one from nowhere.
        unclaimed::seed(&*store, acme_id).await;
        let shipped = Shipped::load(
            &std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("templates"),
            1,
        )
        .unwrap();
        let provisioner = Arc::new(Provisioner::new(
            mirror.clone(),
            test_key(),
            shipped,
            ProvisionOptions::default(),
        ));
        let events = std::sync::Mutex::new(mirror.subscribe());
        let proxy = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let resync = crate::resync::ResyncService::new(
            &crate::config::ResyncConfig {
                proxy: Some(proxy.local_addr().unwrap().to_string()),
                listen: "127.0.0.1:0".parse().unwrap(),
                t1_ms: 20,
                t2_ms: 80,
                ..Default::default()
            },
            store.clone(),
            None,
        )
        .unwrap();
        let database_share =
            crate::admin::database_share::DatabaseShare::new(options.max_connections);
        let state = AdminState {
            mirror: mirror.clone(),
            store: store.clone(),
            provisioner: provisioner.clone(),
            key: test_key(),
            // The test slapd listens on loopback.
            source_networks: dialtone_directory::SourceNetworks::parse(&["127.0.0.0/8"])
                .unwrap()
                .shared(),
            quotas: Default::default(),
            resync: Some(resync.clone()),
            lookups: None,
            region_changes: Default::default(),
            source_tests: crate::admin::running::Running::new(
                crate::admin::SOURCE_TESTS_PER_TENANT,
            ),
            database_share: database_share.clone(),
        };
        let app = router(state.clone());
        Harness {
            state,
            _db: db,
            store,
            mirror,
            provisioner,
            app,
            database_share,
            resync,
            proxy,
            tokens,
            ids,
            events,
        }
    }

    pub fn fill(&self, text: &str) -> String {
        let mut out = text.to_string();
        for (k, v) in &self.ids {
            out = out.replace(k, v);
        }
        out
    }

    pub async fn call(
        &self,
        role: Option<&str>,
        method: Method,
        path: &str,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut request = Request::builder().method(method).uri(self.fill(path));
        if let Some(role) = role {
            let token = self
                .tokens
                .get(role)
                .cloned()
                .unwrap_or_else(|| role.to_string());
            request = request.header("authorization", format!("Bearer {token}"));
        }
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let body = match body {
            Some(b) => {
                request = request.header("content-type", "application/json");
                Body::from(self.fill(b))
            }
            None => Body::empty(),
        };
        let response = self
            .app
            .clone()
            .oneshot(request.body(body).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let reply = Reply {
            status,
            headers,
            text: String::from_utf8_lossy(&bytes).into_owned(),
        };
        for secret in SECRETS {
            assert!(
                !reply.text.contains(secret),
                "a response carries a secret: {}",
                reply.text
            );
        }
        reply
    }

    pub async fn get(&self, role: &str, path: &str) -> Reply {
        self.call(Some(role), Method::GET, path, None, &[]).await
    }

    /// `PUT /v1/tenants/acme` with `body`, as `role`.
    pub async fn put_acme(&self, role: &str, body: Value) -> Reply {
        let body = body.to_string();
        self.call(
            Some(role),
            Method::PUT,
            "/v1/tenants/acme",
            Some(&body),
            &[],
        )
        .await
    }

    pub async fn audit_rows(&self) -> usize {
        self.store
            .audit_log(&AuditQuery {
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap()
            .len()
    }

    /// What a phone gets over the provisioning core right now.
    pub fn served(&self, file: &str) -> Vec<u8> {
        let mut events = self.events.lock().unwrap();
        while let Ok(event) = events.try_recv() {
            self.provisioner.invalidate(&event);
        }
        self.provisioner
            .provision(&dialtone_tftp::Request {
                path: file,
                user_agent: None,
                remote: None,
                protocol: dialtone_tftp::Protocol::Http,
                query: None,
                auth: None,
            })
            .unwrap()
            .body
            .to_vec()
    }
}
