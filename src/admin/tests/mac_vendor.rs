//! A phone whose MAC's vendor prefix belongs to another family than the
//! one it was created under says so wherever the phone is shown: its own
//! files are refused to its User-Agent, and support starts from the phone.

use axum::http::{Method, StatusCode};
use dialtone_sync::Backend;

use super::Harness;

async fn create(h: &Harness, mac: &str, family: &str) -> serde_json::Value {
    let body = format!(r#"{{"mac": "{mac}", "tenant": "acme", "family": "{family}"}}"#);
    let reply = h
        .call(
            Some("acme-admin"),
            Method::POST,
            "/v1/phones",
            Some(&body),
            &[],
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    reply.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mac_of_another_familys_vendor_is_named_on_the_phone() {
    let h = Harness::new(Backend::Sqlite).await;
    // A Poly prefix created as a Yealink: named, when created and read.
    let created = create(&h, "0004f2000010", "yealink").await;
    assert_eq!(created["mac_vendor"], "poly", "{created}");
    let read = h.get("acme-admin", "/v1/phones/0004f2000010").await;
    assert_eq!(read.json()["mac_vendor"], "poly", "{}", read.text);
    // Its own family's prefix, a Cisco prefix (three families share
    // them) and a prefix no family is known by: nothing to say.
    for (mac, family) in [
        ("0004f2000011", "poly"),
        ("00562b000012", "cisco-spa"),
        ("aabbcc000013", "snom"),
    ] {
        let created = create(&h, mac, family).await;
        assert!(created["mac_vendor"].is_null(), "{mac}: {created}");
    }
}
