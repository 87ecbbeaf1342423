//! A queued resync is planned again when its turn comes: what changed
//! while it waited stops it, with a reason its tenant may read.

use axum::http::{Method, StatusCode};
use dialtone_sync::Backend;
use tokio_util::sync::CancellationToken;

use super::super::{Harness, ACME_MAC};
use super::{proxy, wait_for};

/// While acme's resyncs wait, one phone moves to globex, one is deleted,
/// and a global admin gives the SIP domain to globex alone: none of them
/// is sent, and acme's reasons say nothing of globex.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_resync_is_not_sent_where_the_mirror_no_longer_allows() {
    let h = Harness::new(Backend::Sqlite).await;
    let call = |role: &'static str, method: Method, path: String, body: Option<String>| {
        let h = &h;
        async move {
            let reply = h
                .call(Some(role), method, &path, body.as_deref(), &[])
                .await;
            assert!(reply.status.is_success(), "{path}: {}", reply.text);
            reply
        }
    };
    let line = r#"[{"extension": "300", "display_name": "x", "registrar": "sip.example.net"}]"#;
    // Each its own line-1 address: phones sharing one get one NOTIFY.
    for (mac, extension) in [("001565000003", "300"), ("001565000004", "301")] {
        let line = line.replace("300", extension);
        let body = format!(
            r#"{{"mac": "{mac}", "tenant": "acme", "family": "yealink", "lines": {line}}}"#
        );
        call("global", Method::POST, "/v1/phones".into(), Some(body)).await;
    }
    // The service is not run yet: all three wait.
    let reply = call(
        "acme-admin",
        Method::POST,
        "/v1/tenants/acme/resync".into(),
        None,
    )
    .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    assert_eq!(reply.json()["queued"], 3, "{}", reply.text);

    let moved = format!(r#"{{"tenant": "globex", "family": "yealink", "lines": {line}}}"#);
    call(
        "global",
        Method::PUT,
        "/v1/phones/001565000003".into(),
        Some(moved),
    )
    .await;
    call(
        "global",
        Method::DELETE,
        "/v1/phones/001565000004".into(),
        None,
    )
    .await;
    let settings = r#"{"name": "acme Inc", "settings": {"sip_domains": ["acme.example.net"]}}"#;
    call(
        "global",
        Method::PUT,
        "/v1/tenants/acme".into(),
        Some(settings.into()),
    )
    .await;

    let cancel = CancellationToken::new();
    let far = proxy(&h, &["200 OK"]);
    tokio::spawn(h.resync.clone().run(cancel.clone()));
    let gone = "not sent: the phone was deleted or left the tenant after the resync was queued";
    for (mac, reason) in [
        (
            ACME_MAC,
            "not sent: line 1's registrar sip.example.net is not one of the tenant's SIP domains",
        ),
        ("001565000003", gone),
        ("001565000004", gone),
    ] {
        let path = format!("/v1/resyncs?tenant=acme&mac={mac}");
        let done = wait_for(&h, &path, |r| {
            r["state"] != "queued" && r["state"] != "sent"
        })
        .await;
        assert_eq!(
            (done["state"].as_str(), done["reason"].as_str()),
            (Some("failed"), Some(reason)),
            "{done}"
        );
        assert!(done["sent_at"].is_null(), "{done}");
    }
    let seen = h.get("acme-admin", "/v1/resyncs").await.text;
    assert!(!seen.contains("globex"), "{seen}");
    cancel.cancel();
    let requests = far.await.unwrap();
    assert!(requests.is_empty(), "a NOTIFY left: {requests:?}");
}
