//! Every token scope against every endpoint family, as one table: allowed
//! (2xx) or refused (401, 403, 404); each allowed write leaves exactly one
//! audit row and each refused one none. Then tenant isolation: a tenant
//! admin of globex against every acme resource.

use axum::http::Method;
use dialtone_sync::Backend;

use super::{Harness, ACME_MAC};

/// `A` allowed (2xx), `F` 403, `N` 404, `U` 401; one per role in ROLES.
pub(super) const ROLES: [Option<&str>; 5] = [
    Some("global"),
    Some("acme-admin"),
    Some("acme-read"),
    Some("acme-lookup"),
    None,
];

pub(super) struct Row {
    pub method: Method,
    pub path: &'static str,
    pub body: Option<&'static str>,
    write: bool,
    pub expect: &'static str,
}

pub(super) fn rows() -> Vec<Row> {
    let r = |method: Method,
             path: &'static str,
             body: Option<&'static str>,
             expect: &'static str| Row {
        write: !matches!(method, Method::GET)
            && !path.ends_with("/validate")
            && path != "/v1/preview"
            && !path.ends_with("/test"),
        method,
        path,
        body,
        expect,
    };
    use Method as M;
    vec![
        r(M::GET, "/v1/tenants", None, "AAAFU"),
        r(M::GET, "/v1/whoami", None, "AAAFU"),
        r(M::GET, "/v1/tenants/acme", None, "AAAFU"),
        r(
            M::GET,
            "/v1/tenants/acme/fleet?days=7&hours=72",
            None,
            "AAAFU",
        ),
        r(M::GET, "/v1/phones", None, "AAAFU"),
        r(
            M::GET,
            "/v1/phones?vendor=yealink&mac_prefix=001565&model=T46S",
            None,
            "AAAFU",
        ),
        r(M::GET, "/v1/phones/001565000001", None, "AAAFU"),
        r(M::GET, "/v1/phones/001565000001/history", None, "AAAFU"),
        r(M::GET, "/v1/phones/001565000001/files", None, "AAAFU"),
        r(M::GET, "/v1/resyncs", None, "AAAFU"),
        r(M::GET, "/v1/resyncs?mac=001565000001", None, "AAAFU"),
        r(M::POST, "/v1/phones/001565000001/resync", None, "AAFFU"),
        r(M::POST, "/v1/tenants/acme/resync", None, "AAFFU"),
        r(
            M::POST,
            "/v1/tenants/acme/resync",
            Some(r#"{"family": "yealink", "model": "T46S", "macs": ["001565000001"]}"#),
            "AAFFU",
        ),
        r(M::GET, "/v1/templates", None, "AAAFU"),
        r(M::GET, "/v1/templates/{acme_template}", None, "AAAFU"),
        r(M::GET, "/v1/templates/{family_template}", None, "ANNFU"),
        r(
            M::GET,
            "/v1/templates/{acme_template}/versions",
            None,
            "AAAFU",
        ),
        r(
            M::GET,
            "/v1/templates/{acme_template}/versions/1",
            None,
            "AAAFU",
        ),
        r(
            M::GET,
            "/v1/templates/{acme_template}/diff?from=1",
            None,
            "AAAFU",
        ),
        r(
            M::GET,
            "/v1/templates/{acme_template}/phones",
            None,
            "AAAFU",
        ),
        r(
            M::GET,
            "/v1/templates/{family_template}/phones",
            None,
            "ANNFU",
        ),
        r(M::GET, "/v1/tenants/acme/directory", None, "AAAFU"),
        r(M::GET, "/v1/tenants/acme/directory/e1", None, "AAAFU"),
        r(M::GET, "/v1/tenants/acme/directory-sources", None, "AAAFU"),
        r(
            M::GET,
            "/v1/tenants/acme/directory-sources/cnam",
            None,
            "AAAFU",
        ),
        r(M::GET, "/v1/shipped-templates", None, "AAAFU"),
        r(
            M::GET,
            "/v1/shipped-templates/yealink/%7Bmac%7D.cfg",
            None,
            "AAAFU",
        ),
        r(M::GET, "/v1/tenants/acme/unclaimed", None, "AAAFU"),
        r(M::GET, "/v1/unclaimed", None, "AFFFU"),
        r(M::GET, "/v1/unclaimed/counts", None, "AAAFU"),
        r(
            M::POST,
            "/v1/tenants/acme/unclaimed/001565000077/claim",
            Some(
                r#"{"name": "Lobby", "lines": [{"extension": "277", "display_name": "Lobby", "registrar": "sip.example.net"}]}"#,
            ),
            "AAFFU",
        ),
        r(M::GET, "/v1/tokens", None, "AFFFU"),
        r(M::GET, "/v1/bans", None, "AFFFU"),
        // No ban of that address on the node: found by global admins only.
        r(M::DELETE, "/v1/bans/192.0.2.7", None, "NFFFU"),
        r(M::GET, "/v1/audit", None, "AAAFU"),
        r(
            M::POST,
            "/v1/preview",
            Some(r#"{"mac": "001565000001"}"#),
            "AAAFU",
        ),
        r(
            M::POST,
            "/v1/templates/validate",
            Some(
                r#"{"scope": "tenant", "tenant": "acme", "family": "yealink", "file_pattern": "{mac}.cfg", "body": "a = 1\n"}"#,
            ),
            "AAAFU",
        ),
        r(
            M::POST,
            "/v1/tenants",
            Some(r#"{"slug": "initech", "name": "Initech"}"#),
            "AFFFU",
        ),
        r(
            M::PUT,
            "/v1/tenants/acme",
            Some(r#"{"name": "Acme Corporation"}"#),
            "AAFFU",
        ),
        r(M::DELETE, "/v1/tenants/acme?force=true", None, "AFFFU"),
        r(
            M::POST,
            "/v1/phones",
            Some(
                r#"{"mac": "001565000009", "tenant": "acme", "family": "yealink", "lines": [{"extension": "209", "display_name": "New", "registrar": "sip.example.net", "password": "new-pw"}]}"#,
            ),
            "AAFFU",
        ),
        r(
            M::PUT,
            "/v1/phones/001565000001",
            Some(
                r#"{"tenant": "acme", "family": "yealink", "model": "T46S", "label": "moved", "lines": [{"extension": "200", "display_name": "Front", "registrar": "sip.example.net"}]}"#,
            ),
            "AAFFU",
        ),
        r(M::DELETE, "/v1/phones/001565000001", None, "AAFFU"),
        r(
            M::POST,
            "/v1/phones/001565000001/replace",
            Some(r#"{"new_mac": "001565000099"}"#),
            "AAFFU",
        ),
        r(
            M::POST,
            "/v1/templates",
            Some(
                r#"{"scope": "phone", "mac": "001565000001", "family": "yealink", "file_pattern": "{mac}.cfg", "body": "a = 1\n"}"#,
            ),
            "AAFFU",
        ),
        r(
            M::POST,
            "/v1/templates",
            Some(
                r#"{"scope": "family", "family": "yealink", "file_pattern": "{mac}.cfg", "body": "a = 1\n"}"#,
            ),
            "AFFFU",
        ),
        r(
            M::PUT,
            "/v1/templates/{acme_template}",
            Some(r#"{"body": "b = 2\n"}"#),
            "AAFFU",
        ),
        r(M::DELETE, "/v1/templates/{acme_template}", None, "AAFFU"),
        r(
            M::POST,
            "/v1/templates/{acme_template}/rollback",
            Some(r#"{"version": 1}"#),
            "AAFFU",
        ),
        r(
            M::POST,
            "/v1/tenants/acme/directory",
            Some(
                r#"{"external_id": "e2", "name": "Bob", "numbers": [{"number": "+1 555 555 0199", "kind": "work"}]}"#,
            ),
            "AAFFU",
        ),
        r(
            M::PUT,
            "/v1/tenants/acme/directory/e1",
            Some(
                r#"{"name": "Alice A.", "numbers": [{"number": "+1 555 555 0101", "kind": "mobile"}]}"#,
            ),
            "AAFFU",
        ),
        r(M::DELETE, "/v1/tenants/acme/directory/e1", None, "AAFFU"),
        r(
            M::POST,
            "/v1/tenants/acme/directory-sources",
            Some(
                r#"{"name": "corp", "kind": "http", "settings": {"url": "http://127.0.0.1:9/{digits}"}, "secret": "s3"}"#,
            ),
            "AAFFU",
        ),
        r(
            M::PUT,
            "/v1/tenants/acme/directory-sources/cnam",
            Some(r#"{"kind": "http", "settings": {"url": "http://127.0.0.1:9/v2/{e164}"}}"#),
            "AAFFU",
        ),
        r(
            M::DELETE,
            "/v1/tenants/acme/directory-sources/cnam",
            None,
            "AAFFU",
        ),
        r(
            M::POST,
            "/v1/tenants/acme/directory-sources/cnam/test",
            Some(r#"{"number": "+1 555 555 0101"}"#),
            "AAFFU",
        ),
        r(
            M::POST,
            "/v1/tokens",
            Some(r#"{"name": "ci", "scope": "tenant-read", "tenant": "acme"}"#),
            "AFFFU",
        ),
        r(M::DELETE, "/v1/tokens/{globex_token}", None, "AFFFU"),
        r(
            M::POST,
            "/v1/import",
            Some(r#"{"tenants": [{"slug": "hooli", "name": "Hooli"}]}"#),
            "AFFFU",
        ),
    ]
}

pub(super) fn class(status: u16) -> char {
    match status {
        200..=299 => 'A',
        401 => 'U',
        403 => 'F',
        404 => 'N',
        _ => '?',
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scope_against_every_endpoint() {
    let mut failures = Vec::new();
    for row in rows() {
        for (index, role) in ROLES.iter().enumerate() {
            // A fresh database per call: an allowed write must not change
            // what the next call sees.
            let h = Harness::new(Backend::Sqlite).await;
            let before = h.audit_rows().await;
            let reply = h
                .call(*role, row.method.clone(), row.path, row.body, &[])
                .await;
            let got = class(reply.status.as_u16());
            let want = row.expect.as_bytes()[index] as char;
            if got != want {
                failures.push(format!(
                    "{} {} as {:?}: want {want}, got {} {}",
                    row.method, row.path, role, reply.status, reply.text
                ));
            }
            let written = h.audit_rows().await - before;
            let want_rows = usize::from(row.write && got == 'A');
            if written != want_rows {
                failures.push(format!(
                    "{} {} as {:?}: {written} audit rows, want {want_rows}",
                    row.method, row.path, role
                ));
            }
            if got != 'A' && got != '?' {
                let code = reply.json()["error"]["code"].as_str().map(str::to_string);
                if code.is_none() {
                    failures.push(format!(
                        "{} {} as {:?}: error body not in the shared shape: {}",
                        row.method, row.path, role, reply.text
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_admin_never_reaches_another_tenant() {
    let lists = [
        "/v1/tenants",
        "/v1/phones",
        "/v1/templates",
        "/v1/audit",
        "/v1/resyncs",
        "/v1/unclaimed/counts",
        "/v1/whoami",
    ];
    let mut failures = Vec::new();
    for row in rows() {
        let h = Harness::new(Backend::Sqlite).await;
        let before = h.audit_rows().await;
        let reply = h
            .call(
                Some("globex-admin"),
                row.method.clone(),
                row.path,
                row.body,
                &[],
            )
            .await;
        let path = row.path.split('?').next().unwrap();
        let status = reply.status.as_u16();
        if row.method == Method::GET
            && (lists.contains(&path) || path.starts_with("/v1/shipped-templates"))
        {
            if status != 200 || reply.text.contains("acme") || reply.text.contains(ACME_MAC) {
                failures.push(format!(
                    "{path}: a globex list shows acme: {status} {}",
                    reply.text
                ));
            }
        } else if !(matches!(status, 403 | 404)
            // A body field naming acme's tenant or phone is refused exactly
            // as if it named one that does not exist.
            || status == 422 && reply.text.contains("does not exist"))
        {
            failures.push(format!(
                "{} {}: want 403, 404 or 422 \"does not exist\", got {status} {}",
                row.method, row.path, reply.text
            ));
        } else if h.audit_rows().await != before {
            failures.push(format!(
                "{} {}: a refused write left an audit row",
                row.method, row.path
            ));
        }
    }
    // Lists filtered to another tenant are refused, not emptied.
    let h = Harness::new(Backend::Sqlite).await;
    for path in [
        "/v1/phones?tenant=acme",
        "/v1/templates?tenant=acme",
        "/v1/audit?tenant=acme",
        "/v1/resyncs?tenant=acme",
    ] {
        let status = h.get("globex-admin", path).await.status.as_u16();
        if status != 404 {
            failures.push(format!("{path}: want 404, got {status}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} leaks:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// `/v1/whoami` tells the admin page what the calling token may do, so it
/// offers a read-only token no write it would only be refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whoami_says_what_the_token_may_do() {
    let h = Harness::new(Backend::Sqlite).await;
    for (role, scope, tenant, writes) in [
        ("global", "global-admin", None, true),
        ("acme-admin", "tenant-admin", Some("acme"), true),
        ("acme-read", "tenant-read", Some("acme"), false),
    ] {
        let reply = h.get(role, "/v1/whoami").await;
        assert_eq!(reply.status, axum::http::StatusCode::OK, "{}", reply.text);
        let me: serde_json::Value = serde_json::from_str(&reply.text).unwrap();
        assert_eq!(me["scope"], scope, "{role}");
        assert_eq!(me["tenant"].as_str(), tenant, "{role}");
        assert_eq!(me["writes"], writes, "{role}");
        assert!(me["resync"].is_boolean());
        assert_eq!(me["name"], role);
    }
}
