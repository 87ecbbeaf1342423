//! A network list a global admin writes into a tenant's settings may not
//! have an IPv4 octet with a leading zero: read as decimal here and as
//! octal by inet_aton-style tools, the office the operator checked would
//! not be the one enforced. Refused at the write; what is stored is read
//! as it is (`dialtone_sync::addresses::octets_unambiguous`).

use axum::http::StatusCode;
use dialtone_sync::Backend;
use serde_json::json;

use super::Harness;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leading_zero_octet_in_a_tenants_networks_is_refused() {
    let h = Harness::new(Backend::Sqlite).await;
    for (key, network) in [
        ("provisioning_networks", "010.0.0.0/8"),
        ("provisioning_networks", "127.0.0.010/32"),
        ("provisioning_networks", "::ffff:010.1.0.0/112"),
        ("source_networks", "010.20.0.0/16"),
        ("source_networks", "10.20.0.010"),
    ] {
        let body = json!({ "name": "Acme", "settings": { key: ["192.0.2.0/24", network] } });
        let refused = h.put_acme("global", body).await;
        assert_eq!(
            refused.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{key} {network}: {}",
            refused.text
        );
        let message = refused.json()["error"]["message"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            message.contains(key) && message.contains(network) && message.contains("leading zero"),
            "{message}"
        );
    }
    let ok = h
        .put_acme(
            "global",
            json!({ "name": "Acme", "settings": {
                "provisioning_networks": ["10.0.0.0/8", "0.0.0.0/0", "::ffff:10.1.0.0/112"],
                "source_networks": ["10.20.0.0/16", "100.64.0.1"],
            } }),
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
}
