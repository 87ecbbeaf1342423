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

/// A tenant's own entries list at most `directory_numbers` numbers
/// together: every node indexes each one. An edit that lists no more
/// numbers than before passes, so a tenant over a lowered quota can
/// still bring its count down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_directory_numbers_are_held_to_its_quota() {
    let h = Harness::new(Backend::Sqlite).await;
    let numbers_used = |reply: &super::Reply| reply.json()["usage"]["directory_numbers"].clone();
    let held = numbers_used(&h.get("acme-read", "/v1/tenants/acme").await)["used"]
        .as_u64()
        .unwrap();
    let quota = |limit: u64| serde_json::json!({"name": "Acme", "settings": {"quotas": {"directory_numbers": limit}}});
    let reply = h.put_acme("global", quota(held + 3)).await;
    assert!(reply.status.is_success(), "{}", reply.text);
    assert_eq!(numbers_used(&reply)["limit"], held + 3, "{}", reply.text);

    let entry = |id: &str, numbers: &[&str]| {
        let numbers: Vec<_> = numbers
            .iter()
            .zip(["work", "mobile", "home", "other"])
            .map(|(n, kind)| serde_json::json!({"number": n, "kind": kind}))
            .collect();
        serde_json::json!({"external_id": id, "name": "Kay", "numbers": numbers}).to_string()
    };
    let send = |method: Method, tenant: &'static str, id: &'static str, body: String| {
        let h = &h;
        async move {
            let path = match method {
                Method::POST => format!("/v1/tenants/{tenant}/directory"),
                _ => format!("/v1/tenants/{tenant}/directory/{id}"),
            };
            let role = format!("{tenant}-admin");
            h.call(Some(&role), method, &path, Some(&body), &[]).await
        }
    };
    let (a, b, c) = ("+1 555 555 0101", "+1 555 555 0102", "+1 555 555 0103");
    let reply = send(Method::POST, "acme", "n1", entry("n1", &[a, b])).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let shown = h.get("acme-read", "/v1/tenants/acme").await;
    assert_eq!(numbers_used(&shown)["used"], held + 2, "{}", shown.text);

    // Two more would be four against three.
    let reply = send(Method::POST, "acme", "n2", entry("n2", &[a, c])).await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.text
    );
    assert!(reply.text.contains("directory_numbers"), "{}", reply.text);
    let reply = send(
        Method::PUT,
        "acme",
        "n1",
        entry("n1", &[a, b, c, "+1 555 555 0104"]),
    )
    .await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.text
    );

    // Another tenant's count is its own.
    let reply = send(Method::POST, "globex", "n2", entry("n2", &[a, b, c])).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);

    // Lowered below what it holds: the same count, or fewer, still passes.
    let reply = h.put_acme("global", quota(held)).await;
    assert!(reply.status.is_success(), "{}", reply.text);
    let reply = send(Method::PUT, "acme", "n1", entry("n1", &[b, c])).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let reply = send(Method::PUT, "acme", "n1", entry("n1", &[b, c, a])).await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.text
    );
    let reply = send(Method::PUT, "acme", "n1", entry("n1", &[c])).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let shown = h.get("acme-read", "/v1/tenants/acme").await;
    assert_eq!(numbers_used(&shown)["used"], held + 1, "{}", shown.text);
    let reply = send(Method::DELETE, "acme", "n1", String::new()).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text);
    let shown = h.get("acme-read", "/v1/tenants/acme").await;
    assert_eq!(numbers_used(&shown)["used"], held, "{}", shown.text);
}

/// The authorization scheme is matched whatever its case (RFC 9110);
/// a missing or other scheme is no token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bearer_scheme_is_case_insensitive() {
    let h = Harness::new(Backend::Sqlite).await;
    let token = h.tokens["acme-read"].clone();
    for (header, status) in [
        (format!("bearer {token}"), StatusCode::OK),
        (format!("BEARER {token}"), StatusCode::OK),
        (format!("Basic {token}"), StatusCode::UNAUTHORIZED),
        (token.clone(), StatusCode::UNAUTHORIZED),
        ("bear".to_string(), StatusCode::UNAUTHORIZED),
    ] {
        let reply = h
            .call(
                None,
                Method::GET,
                "/v1/tenants/acme",
                None,
                &[("authorization", &header)],
            )
            .await;
        assert_eq!(reply.status, status, "{header}: {}", reply.text);
    }
}
