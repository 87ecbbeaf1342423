//! A tenant resync over many phones names a bounded number of the phones
//! it skipped, and counts them all.

use axum::http::{Method, StatusCode};
use dialtone_sync::{watcher, Backend};

use super::super::{phone, seed_audit, Harness};

/// 1,005 phones with no line: each is skipped, 1,000 are named, and the
/// answer says more were skipped than it names. It named every one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_resync_names_at_most_a_thousand_skipped_phones() {
    let h = Harness::new(Backend::Sqlite).await;
    let phones: Vec<_> = (0..1005)
        .map(|i| phone("acme", &format!("0015651{i:05}"), &[], None))
        .collect();
    h.store.apply(&phones, &seed_audit()).await.unwrap();
    watcher::catch_up(&h.mirror, &*h.store).await.unwrap();
    let reply = h
        .call(
            Some("acme-admin"),
            Method::POST,
            "/v1/tenants/acme/resync",
            None,
            &[],
        )
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    let body = reply.json();
    // The harness's own acme phone has a line and is queued.
    assert_eq!(body["skipped"].as_u64(), Some(1005), "{}", reply.text);
    let named = body["skipped_reasons"].as_array().unwrap();
    assert_eq!(named.len(), 1000);
    assert_eq!(body["skipped_truncated"], true);
    assert_eq!(named[0]["mac"], "001565100000");
    assert_eq!(named[0]["reason"], "the phone has no line");
    assert_eq!(named[999]["mac"], "001565100999");
}
