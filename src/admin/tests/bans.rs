//! `GET /v1/bans` and `DELETE /v1/bans/{source}`: a node's provisioning
//! bans, for global admins alone.

use std::net::IpAddr;

use axum::http::Method;
use dialtone_sync::Backend;
use serde_json::Value;

use super::Harness;

fn ban(h: &Harness, source: &str) {
    let source: IpAddr = source.parse().unwrap();
    let guard = h.provisioner.guard();
    for _ in 0..1000 {
        if guard.miss(source) {
            return;
        }
    }
    panic!("{source} was never banned");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_admins_list_and_lift_this_nodes_bans() {
    let h = Harness::new(Backend::Sqlite).await;
    let audited = h.audit_rows().await;
    ban(&h, "192.0.2.7");
    ban(&h, "2001:db8:1:2::9");

    let listed = h.get("global", "/v1/bans").await;
    assert_eq!(listed.status, 200, "{}", listed.text);
    let listed: Value = serde_json::from_str(&listed.text).unwrap();
    assert_eq!(listed["total"], 2);
    let mut sources: Vec<&str> = listed["bans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["source"].as_str().unwrap())
        .collect();
    sources.sort_unstable();
    assert_eq!(sources, ["192.0.2.7", "2001:db8:1:2::/64"]);
    let left = listed["bans"][0]["seconds_left"].as_u64().unwrap();
    assert!((1..=600).contains(&left), "{left}");

    // Tenants never see which addresses are banned: they are other
    // tenants' offices too.
    for role in ["acme-admin", "acme-read", "acme-lookup", "globex-admin"] {
        assert_eq!(h.get(role, "/v1/bans").await.status, 403, "{role}");
        let lift = h
            .call(Some(role), Method::DELETE, "/v1/bans/192.0.2.7", None, &[])
            .await;
        assert_eq!(lift.status, 403, "{role}");
    }
    assert!(h
        .provisioner
        .guard()
        .is_banned("192.0.2.7".parse().unwrap()));

    let lift = |path: &'static str| h.call(Some("global"), Method::DELETE, path, None, &[]);
    assert_eq!(lift("/v1/bans/192.0.2.7").await.status, 204);
    assert!(!h
        .provisioner
        .guard()
        .is_banned("192.0.2.7".parse().unwrap()));
    let again = lift("/v1/bans/192.0.2.7").await;
    assert_eq!(again.status, 404, "{}", again.text);
    // The /64 as listed, its slash escaped in the path.
    assert_eq!(lift("/v1/bans/2001:db8:1:2::%2F64").await.status, 204);
    assert!(!h
        .provisioner
        .guard()
        .is_banned("2001:db8:1:2::9".parse().unwrap()));
    let bad = lift("/v1/bans/192.0.2.0%2F24").await;
    assert_eq!(bad.status, 400, "{}", bad.text);
    assert!(bad.text.contains("source"), "{}", bad.text);

    let listed: Value = serde_json::from_str(&h.get("global", "/v1/bans").await.text).unwrap();
    assert_eq!(listed["total"], 0);
    assert_eq!(listed["bans"], serde_json::json!([]));
    // Lifting is this node's memory, not a write: no audit row.
    assert_eq!(h.audit_rows().await, audited);
}
