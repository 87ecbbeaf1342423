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
