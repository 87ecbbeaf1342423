//! `GET /v1/audit?key=`: the rows about one row (a phone by its MAC in any
//! spelling), a tenant's view still only its own, however the key was
//! used by other tenants before.

use axum::http::{Method, StatusCode};
use dialtone_sync::Backend;
use serde_json::{json, Value};

use super::phone_swap::replace;
use super::{Harness, ACME_MAC, GLOBEX_MAC};

const SPARE_MAC: &str = "0015650000aa";

async fn post(h: &Harness, role: &str, path: &str, body: Value) -> StatusCode {
    let body = body.to_string();
    let reply = h
        .call(Some(role), Method::POST, path, Some(&body), &[])
        .await;
    assert!(reply.status.is_success(), "{path}: {}", reply.text);
    reply.status
}

async fn swap(h: &Harness, role: &str, from: &str, to: &str) {
    let reply = replace(h, role, from, to).await;
    assert!(reply.status.is_success(), "{from} to {to}: {}", reply.text);
}

/// `(action, entity_key, tenant)` of each row `role` reads with `query`.
async fn rows(h: &Harness, role: &str, query: &str) -> Vec<(String, String, String)> {
    let reply = h.get(role, &format!("/v1/audit?{query}")).await;
    assert_eq!(reply.status, StatusCode::OK, "{query}: {}", reply.text);
    reply.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            let text = |field: &str| row[field].as_str().unwrap_or_default().to_string();
            (text("action"), text("entity_key"), text("tenant"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_reads_one_rows_history_and_only_the_callers_part() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let h = Harness::new(backend).await;
        // acme's desk phone goes away and comes back; then globex takes its
        // old MAC for a phone of its own.
        swap(&h, "acme-admin", ACME_MAC, SPARE_MAC).await;
        swap(&h, "acme-admin", SPARE_MAC, ACME_MAC).await;
        swap(&h, "acme-admin", ACME_MAC, SPARE_MAC).await;
        let line = json!({ "extension": "301", "display_name": "Two",
            "registrar": "sip.example.net" });
        let phone = json!({ "mac": ACME_MAC, "tenant": "globex", "family": "yealink",
            "lines": [line] });
        post(&h, "globex-admin", "/v1/phones", phone).await;
        swap(&h, "globex-admin", GLOBEX_MAC, "0015650000bb").await;

        let acme_spelt_otherwise = "00:15:65:00:00:01";
        let acme = rows(&h, "acme-read", &format!("key={acme_spelt_otherwise}")).await;
        let replace =
            |key: &str, tenant: &str| ("replace".to_string(), key.to_string(), tenant.to_string());
        assert_eq!(
            acme,
            [replace(ACME_MAC, "acme"), replace(ACME_MAC, "acme")],
            "{backend:?}"
        );
        // globex reads its own row of that MAC and none of acme's.
        let globex = rows(&h, "globex-admin", &format!("key={ACME_MAC}")).await;
        assert_eq!(globex.len(), 1, "{backend:?}: {globex:?}");
        assert_eq!((&*globex[0].1, &*globex[0].2), (ACME_MAC, "globex"));
        // A global admin reads every tenant's, newest first, a page at a time.
        let all = rows(&h, "global", &format!("key={ACME_MAC}")).await;
        let tenants: Vec<&str> = all.iter().map(|row| &*row.2).collect();
        assert_eq!(tenants, ["globex", "acme", "acme"], "{backend:?}");
        let page = h
            .get("global", &format!("/v1/audit?key={ACME_MAC}&limit=2"))
            .await
            .json();
        let next = page["next"].as_i64().unwrap();
        let rest = rows(&h, "global", &format!("key={ACME_MAC}&before={next}")).await;
        assert_eq!(rest, [replace(ACME_MAC, "acme")], "{backend:?}");
        // With the other filters; a key nothing was written under reads none.
        let swaps = rows(&h, "acme-read", &format!("key={SPARE_MAC}&entity=phone")).await;
        assert_eq!(swaps, [replace(SPARE_MAC, "acme")], "{backend:?}");
        assert!(rows(&h, "global", "key=no-such-row").await.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_past_the_name_bound_is_refused_naming_it() {
    let h = Harness::new(Backend::Sqlite).await;
    let long = "k".repeat(1025);
    let reply = h.get("global", &format!("/v1/audit?key={long}")).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
    assert!(
        reply.text.contains("key: at most 1024 bytes"),
        "{}",
        reply.text
    );
    assert!(!reply.text.contains(&long), "{}", reply.text);
    // Keys rows are written under run longer than a name (a directory
    // entry's `tenant/external_id`): at the bound, read.
    let at_bound = "k".repeat(1024);
    let reply = h.get("global", &format!("/v1/audit?key={at_bound}")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
}
