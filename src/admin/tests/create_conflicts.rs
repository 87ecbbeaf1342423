//! A create (`POST`) never writes over a row: one its node's mirror has not
//! seen yet (made on another node a moment ago), or one a concurrent
//! create makes at the same time, is refused with 409 and leaves the
//! stored row as it was, with no audit row of the refused create.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use dialtone_sync::store::{DirectoryEntryInput, DirectorySourceInput, TemplateInput, TenantInput};
use dialtone_sync::{
    etag_of, watcher, AuditQuery, Backend, DirectoryNumber, Family, Mirror, Mutation, SourceKind,
    TemplateScope,
};
use serde_json::json;

use super::{Harness, Reply};

#[derive(Clone, Copy, Debug)]
enum Kind {
    Tenant,
    Entry,
    Source,
    Template,
}

const KINDS: [Kind; 4] = [Kind::Tenant, Kind::Entry, Kind::Source, Kind::Template];

/// The template's file: acme has none of its own for it (the seed's is
/// the family's).
const TEMPLATE_FILE: &str = "y0000000000{code}.cfg";

impl Kind {
    /// The audit log's name for the row.
    fn entity(self) -> &'static str {
        match self {
            Kind::Tenant => "tenant",
            Kind::Entry => "directory_entry",
            Kind::Source => "directory_source",
            Kind::Template => "template",
        }
    }

    /// What the 409's reason must name.
    fn key(self) -> &'static str {
        match self {
            Kind::Tenant => "initech",
            Kind::Entry => "k9",
            Kind::Source => "paid",
            Kind::Template => TEMPLATE_FILE,
        }
    }

    /// `POST` of the row with `marker` in a field that is stored as given.
    async fn create(self, h: &Harness, marker: &str) -> Reply {
        let (role, path, body) = match self {
            Kind::Tenant => (
                "global",
                "/v1/tenants",
                json!({"slug": "initech", "name": marker, "settings": {"quotas": {"phones": 3}}}),
            ),
            Kind::Entry => (
                "acme-admin",
                "/v1/tenants/acme/directory",
                json!({"external_id": "k9", "name": marker,
                       "numbers": [{"number": "+1 555 555 0142", "kind": "work"}]}),
            ),
            Kind::Source => (
                "acme-admin",
                "/v1/tenants/acme/directory-sources",
                json!({"name": "paid", "kind": "http",
                       "settings": {"url": format!("http://127.0.0.2:9/{marker}/{{e164}}")}}),
            ),
            Kind::Template => (
                "acme-admin",
                "/v1/templates",
                json!({"scope": "tenant", "tenant": "acme", "family": "yealink",
                       "file_pattern": TEMPLATE_FILE, "body": format!("#!version:1.0.0.1\n# {marker}\n")}),
            ),
        };
        let body = body.to_string();
        h.call(Some(role), Method::POST, path, Some(&body), &[])
            .await
    }

    /// The row with `marker`, as another node writes it.
    fn elsewhere(self, h: &Harness, marker: &str) -> Mutation {
        match self {
            Kind::Tenant => Mutation::UpsertTenant(TenantInput {
                slug: "initech".into(),
                name: marker.into(),
                default_region: "GB".into(),
                settings: r#"{"quotas": {"phones": 50}}"#.into(),
            }),
            Kind::Entry => Mutation::UpsertDirectoryEntry(DirectoryEntryInput {
                tenant: "acme".into(),
                external_id: "k9".into(),
                name: marker.into(),
                company: None,
                numbers: vec![DirectoryNumber {
                    number: "+1 555 555 0199".into(),
                    kind: "work".into(),
                }],
            }),
            Kind::Source => Mutation::UpsertDirectorySource(DirectorySourceInput {
                tenant: "acme".into(),
                name: "paid".into(),
                kind: SourceKind::Http,
                priority: 10,
                enabled: true,
                settings: format!(r#"{{"url": "http://127.0.0.9:9/{marker}/{{e164}}"}}"#),
                secret: Some("PAID-KEY".into()),
                timeout_ms: 200,
            }),
            Kind::Template => Mutation::UpsertTemplate(TemplateInput {
                scope: TemplateScope::Tenant,
                family: Family::Yealink,
                scope_key: acme_id(h).to_string(),
                file_pattern: TEMPLATE_FILE.into(),
                body: format!("#!version:1.0.0.1\n# {marker}\n"),
                updated_by: "elsewhere".into(),
                keep_versions: None,
            }),
        }
    }

    /// The stored row's tag and the field its marker is in, as a node that
    /// has caught up reads them (the harness's own mirror is left behind).
    async fn stored(self, h: &Harness) -> Option<(String, String)> {
        let mirror = Mirror::new();
        watcher::full_load(&mirror, &*h.store).await.unwrap();
        let state = mirror.load();
        let acme = acme_id(h);
        match self {
            Kind::Tenant => {
                let t = state.tenant_by_slug("initech")?;
                Some((etag_of(&**t), t.name.to_string()))
            }
            Kind::Entry => {
                let e = state.directory_entry_by_external_id(acme, "k9")?;
                Some((etag_of(&**e), e.name.to_string()))
            }
            Kind::Source => {
                let s = state
                    .sources_of(acme)
                    .into_iter()
                    .find(|s| &*s.name == "paid")?;
                Some((etag_of(&*s), s.settings.to_string()))
            }
            Kind::Template => {
                let t = state.templates().find(|t| {
                    t.scope == TemplateScope::Tenant
                        && *t.scope_key == *acme.to_string()
                        && &*t.file_pattern == TEMPLATE_FILE
                })?;
                Some((etag_of(&**t), format!("v{} {}", t.version, t.body)))
            }
        }
    }
}

fn acme_id(h: &Harness) -> dialtone_sync::Id {
    h.mirror.load().tenant_by_slug("acme").unwrap().id
}

/// How many audit rows record a create of `kind`.
async fn creates_audited(h: &Harness, kind: Kind) -> usize {
    let rows = h
        .store
        .audit_log(&AuditQuery {
            entity: Some(kind.entity().into()),
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    rows.iter().filter(|r| r.action == "create").count()
}

fn assert_refused(reply: &Reply, kind: Kind, backend: Backend) {
    assert_eq!(
        reply.status,
        StatusCode::CONFLICT,
        "{backend:?} {kind:?}: {}",
        reply.text
    );
    let error = &reply.json()["error"];
    assert_eq!(error["code"], "conflict", "{}", reply.text);
    let reason = error["message"].as_str().unwrap_or_default();
    assert!(
        reason.contains(kind.key()) && reason.contains("already exists"),
        "{backend:?} {kind:?}: {reason}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_over_a_row_this_node_has_not_seen_is_refused() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let h = Harness::new(backend).await;
        for kind in KINDS {
            // Written on another node: in the database, not in this
            // node's mirror, whose own check lets the create through.
            h.store
                .apply(&[kind.elsewhere(&h, "elsewhere")], &super::seed_audit())
                .await
                .unwrap();
            let before = kind.stored(&h).await.expect("the row is stored");
            let audited = h.audit_rows().await;
            let reply = kind.create(&h, "here").await;
            assert_refused(&reply, kind, backend);
            assert_eq!(kind.stored(&h).await, Some(before), "{backend:?} {kind:?}");
            assert_eq!(h.audit_rows().await, audited, "{backend:?} {kind:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_creates_of_one_key_at_once_make_one_row() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let h = Harness::new(backend).await;
        for kind in KINDS {
            let audited = creates_audited(&h, kind).await;
            let (first, second) = tokio::time::timeout(Duration::from_secs(60), async {
                tokio::join!(kind.create(&h, "first"), kind.create(&h, "second"))
            })
            .await
            .expect("both creates answer");
            let (won, lost, winner) = match (first.status, second.status) {
                (StatusCode::CONFLICT, _) => (second, first, "second"),
                _ => (first, second, "first"),
            };
            // 202: committed, and this node's mirror has not shown it yet.
            assert!(
                matches!(won.status, StatusCode::CREATED | StatusCode::ACCEPTED),
                "{backend:?} {kind:?}: {}",
                won.text
            );
            assert_refused(&lost, kind, backend);
            let (_, stored) = kind.stored(&h).await.expect("the winner's row");
            assert!(stored.contains(winner), "{backend:?} {kind:?}: {stored}");
            if let Kind::Template = kind {
                assert!(stored.starts_with("v1 "), "{backend:?}: {stored}");
            }
            assert_eq!(
                creates_audited(&h, kind).await,
                audited + 1,
                "{backend:?} {kind:?}"
            );
        }
    }
}

/// The same row, inserted by another node's transaction that has not
/// committed yet: invisible to the create's own check, so the unique index
/// is what refuses the create, once that transaction commits.
fn uncommitted_insert(
    kind: Kind,
    acme: dialtone_sync::Id,
) -> sqlx::query::Query<'static, sqlx::Postgres, sqlx::postgres::PgArguments> {
    match kind {
        Kind::Tenant => sqlx::query(
            "INSERT INTO tenants (slug, name, updated_at) VALUES ('initech', 'elsewhere', 0)",
        ),
        Kind::Entry => sqlx::query(
            "INSERT INTO directory_entries (tenant_id, external_id, name, updated_at) \
             VALUES ($1, 'k9', 'elsewhere', 0)",
        )
        .bind(acme),
        Kind::Source => sqlx::query(
            "INSERT INTO directory_sources (tenant_id, name, kind, settings, updated_at) \
             VALUES ($1, 'paid', 'http', '{\"url\": \"http://127.0.0.9:9/elsewhere/{e164}\"}', 0)",
        )
        .bind(acme),
        Kind::Template => sqlx::query(
            "INSERT INTO templates (scope, family, scope_key, file_pattern, body, updated_by, updated_at) \
             VALUES ('tenant', 'yealink', $1, $2, '# elsewhere', 'elsewhere', 0)",
        )
        .bind(acme.to_string())
        .bind(TEMPLATE_FILE),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_the_unique_index_refuses_is_a_conflict_naming_the_row() {
    use sqlx::Connection;

    let h = Harness::new(Backend::Postgres).await;
    let acme = acme_id(&h);
    for kind in KINDS {
        let mut elsewhere = sqlx::PgConnection::connect(&h._db.url).await.unwrap();
        sqlx::query("BEGIN").execute(&mut elsewhere).await.unwrap();
        uncommitted_insert(kind, acme)
            .execute(&mut elsewhere)
            .await
            .unwrap();
        let audited = h.audit_rows().await;
        // Up to 40 s: on a starved CI machine a create once took over 10 s
        // to reach its insert, came after the commit and found the row.
        let commit_once_the_create_waits = async {
            let mut waiting = 0;
            for _ in 0..1600 {
                waiting = sqlx::query_scalar::<_, i64>(
                    "SELECT count(*) FROM pg_stat_activity \
                     WHERE datname = current_database() AND wait_event_type = 'Lock'",
                )
                .fetch_one(&mut elsewhere)
                .await
                .unwrap();
                if waiting > 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            sqlx::query("COMMIT").execute(&mut elsewhere).await.unwrap();
            waiting
        };
        // A node starved of CPU (a loaded CI machine) may answer 503 busy
        // before the insert: nothing was changed, so it is sent again.
        let started = std::time::Instant::now();
        let create_past_busy = async {
            let mut tries = 0;
            loop {
                let reply = kind.create(&h, "here").await;
                tries += 1;
                if reply.status != StatusCode::SERVICE_UNAVAILABLE
                    || reply.json()["error"]["code"] != "busy"
                    || tries == 20
                {
                    break reply;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        };
        let (reply, waiting) = tokio::time::timeout(Duration::from_secs(60), async {
            tokio::join!(create_past_busy, commit_once_the_create_waits)
        })
        .await
        .expect("the create answers");
        assert!(
            waiting > 0,
            "{kind:?}: the create never waited on the index; it answered {} {} after {:?}",
            reply.status,
            reply.text,
            started.elapsed()
        );
        assert_refused(&reply, kind, Backend::Postgres);
        let (_, stored) = kind.stored(&h).await.expect("the other node's row");
        assert!(stored.contains("elsewhere"), "{kind:?}: {stored}");
        assert_eq!(h.audit_rows().await, audited, "{kind:?}");
    }
}
