//! A tenant's view shows its phones, directory entries and sources
//! against its quotas: its own rows only, its own limits.

use axum::http::{Method, StatusCode};
use dialtone_sync::Backend;

use super::Harness;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_sees_its_own_usage_against_its_own_quotas() {
    let h = Harness::new(Backend::Sqlite).await;
    let (acme, globex) = {
        let mirror = h.mirror.load();
        let id = |slug: &str| mirror.tenant_by_slug(slug).unwrap().id;
        let count = |tenant| mirror.phones().filter(|p| p.tenant_id == tenant).count();
        (count(id("acme")), count(id("globex")))
    };
    assert!(
        acme > 0 && globex > 0,
        "the harness gives both tenants phones"
    );

    let usage = |reply: &super::Reply| reply.json()["usage"].clone();
    let shown = h.get("acme-read", "/v1/tenants/acme").await;
    assert_eq!(shown.status, StatusCode::OK, "{}", shown.text);
    let before = usage(&shown);
    assert_eq!(before["phones"]["used"], acme as u64, "{before}");
    let default_limit = before["phones"]["limit"].as_u64().unwrap();
    assert!(default_limit > acme as u64);
    let mirror = h.mirror.load();
    let entries = mirror.directory_len(mirror.tenant_by_slug("acme").unwrap().id);
    assert_eq!(before["directory_entries"]["used"], entries as u64);

    // A global admin sets acme's own phone quota; globex keeps the default.
    let raised = serde_json::json!({"name": "Acme", "settings": {"quotas": {"phones": 7}}});
    let reply = h.put_acme("global", raised).await;
    assert!(reply.status.is_success(), "{}", reply.text);
    assert_eq!(usage(&reply)["phones"]["limit"], 7);

    // A new phone counts for acme only.
    let phone = serde_json::json!({
        "mac": "00:15:65:77:00:01", "tenant": "acme", "family": "yealink", "model": "T46S",
        "lines": [{"extension": "300", "display_name": "New", "registrar": "sip.example.net"}],
    })
    .to_string();
    let reply = h
        .call(
            Some("acme-admin"),
            Method::POST,
            "/v1/phones",
            Some(&phone),
            &[],
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let after = usage(&h.get("acme-read", "/v1/tenants/acme").await);
    assert_eq!(after["phones"]["used"], acme as u64 + 1, "{after}");
    let listed = h.get("global", "/v1/tenants").await.json();
    let globex_usage = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["slug"] == "globex")
        .map(|t| t["usage"]["phones"].clone())
        .unwrap();
    assert_eq!(globex_usage["used"], globex as u64);
    assert_eq!(globex_usage["limit"], default_limit);
}
