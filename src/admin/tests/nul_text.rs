//! Text holding U+0000 is bad input: a 4xx that names the field, on either
//! backend, never PostgreSQL's refusal surfacing as a 500.

use axum::http::{Method, StatusCode};
use dialtone_sync::Backend;

use super::{Harness, ACME_MAC};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_character_in_a_phone_is_refused_with_its_field() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let h = Harness::new(backend).await;
        let body = r#"{"tenant": "acme", "family": "yealink", "lines": [
            {"extension": "200", "display_name": "Front", "registrar": "sip.example.net"},
            {"extension": "201", "display_name": "Back\u0000Office", "registrar": "sip.example.net"}]}"#;
        let path = format!("/v1/phones/{ACME_MAC}");
        let reply = h
            .call(Some("acme-admin"), Method::PUT, &path, Some(body), &[])
            .await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{backend:?}: {}",
            reply.text
        );
        assert!(
            reply.text.contains("line 2 display_name") && reply.text.contains("U+0000"),
            "{backend:?}: {}",
            reply.text
        );
        let stored = h.get("acme-admin", &path).await;
        assert!(!stored.text.contains("Office"), "{}", stored.text);
    }
}

/// Tenants, templates and directory entries are held to the same rule as
/// phones: SQLite would store the character, PostgreSQL would refuse it
/// without naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_refuses_a_nul_character_alike_on_both_backends() {
    let writes = [
        (
            "global",
            Method::PUT,
            "/v1/tenants/acme",
            r#"{"name": "Acme\u0000Corp"}"#,
            "tenant name",
        ),
        (
            "acme-admin",
            Method::POST,
            "/v1/templates",
            r#"{"scope": "phone", "mac": "001565000001", "family": "yealink", "file_pattern": "{mac}.cfg", "body": "a = 1\u0000\n"}"#,
            "template body",
        ),
        (
            "acme-admin",
            Method::POST,
            "/v1/tenants/acme/directory",
            r#"{"external_id": "e9", "name": "Bob", "company": "Ini\u0000tech", "numbers": [{"number": "+1 555 555 0199", "kind": "work"}]}"#,
            "directory entry company",
        ),
    ];
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let h = Harness::new(backend).await;
        for (role, method, path, body, field) in &writes {
            let reply = h
                .call(Some(role), method.clone(), path, Some(body), &[])
                .await;
            assert_eq!(
                reply.status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "{backend:?} {path}: {}",
                reply.text
            );
            assert!(
                reply.text.contains(field) && reply.text.contains("U+0000"),
                "{backend:?} {path}: {}",
                reply.text
            );
        }
        assert!(!h
            .get("global", "/v1/tenants/acme")
            .await
            .text
            .contains("Corp"));
        let entries = h.get("acme-admin", "/v1/tenants/acme/directory").await;
        // Whole key and value: an etag's hex may hold `e9` by chance.
        assert!(
            !entries.text.contains(r#""external_id":"e9""#),
            "{}",
            entries.text
        );
    }
}
