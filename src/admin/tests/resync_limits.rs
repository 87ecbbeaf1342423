//! Resync settings seen through the API: full queues answer 429 (the
//! tenant's) and 503 with Retry-After (everyone's), no `[resync]` answers
//! 503, and `direct` sends to the phone's last known address.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use dialtone_sync::store::BootRecord;
use dialtone_sync::testing::test_key;
use dialtone_sync::Backend;
use http_body_util::BodyExt;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::resync::support::queue_acme_phone_resync;
use super::{Harness, ACME_MAC, GLOBEX_MAC};
use crate::admin::{router, AdminState};
use crate::config::ResyncConfig;
use crate::resync::track::State;
use crate::resync::ResyncService;

/// The router over `h`'s data with another resync service (or none).
pub(super) async fn call_with(
    h: &Harness,
    resync: Option<ResyncService>,
    method: Method,
    path: &str,
) -> (StatusCode, axum::http::HeaderMap, Value) {
    let app = router(AdminState {
        mirror: h.mirror.clone(),
        store: h.store.clone(),
        provisioner: h.provisioner.clone(),
        key: test_key(),
        source_networks: dialtone_directory::SourceNetworks::parse(&["127.0.0.0/8"])
            .unwrap()
            .shared(),
        quotas: Default::default(),
        resync,
        lookups: None,
        region_changes: Default::default(),
        source_tests: crate::admin::running::Running::new(crate::admin::SOURCE_TESTS_PER_TENANT),
        database_share: crate::admin::database_share::DatabaseShare::new(1),
    });
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {}", h.tokens["global"]))
        .body(Body::empty())
        .unwrap();
    let response = app.oneshot(request).await.unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        headers,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queues_answer_429_and_503_and_no_config_503() {
    let h = Harness::new(Backend::Sqlite).await;
    let config = |queue, tenant_queue| ResyncConfig {
        proxy: Some("127.0.0.1:9".into()),
        listen: "127.0.0.1:0".parse().unwrap(),
        queue,
        tenant_queue,
        ..Default::default()
    };
    // A second phone of acme's.
    let second = h
        .call(
            Some("global"),
            Method::POST,
            "/v1/phones",
            Some(r#"{"mac": "001565000003", "tenant": "acme", "family": "yealink",
                "lines": [{"extension": "300", "display_name": "x", "registrar": "sip.example.net"}]}"#),
            &[],
        )
        .await;
    assert_eq!(second.status, StatusCode::CREATED, "{}", second.text);
    // Nothing sends (the service is not run), so the queue only fills.
    let small = ResyncService::new(&config(10, 1), h.store.clone(), None).unwrap();
    let acme = format!("/v1/phones/{ACME_MAC}/resync");
    let (status, _, first) = call_with(&h, Some(small.clone()), Method::POST, &acme).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    // The same phone again is the resync already waiting, not a second one.
    let (status, _, again) = call_with(&h, Some(small.clone()), Method::POST, &acme).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{again}");
    assert_eq!(again["resync"]["id"], first["resync"]["id"]);
    let (status, _, body) = call_with(
        &h,
        Some(small.clone()),
        Method::POST,
        "/v1/phones/001565000003/resync",
    )
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    // A whole tenant's request queues what fits and names the rest.
    let fresh = ResyncService::new(&config(10, 1), h.store.clone(), None).unwrap();
    let (status, _, body) =
        call_with(&h, Some(fresh), Method::POST, "/v1/tenants/acme/resync").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(
        (body["queued"].as_u64(), body["skipped"].as_u64()),
        (Some(1), Some(1)),
        "{body}"
    );
    assert!(body["skipped_reasons"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("queue is full"));
    // Another tenant still has its share.
    let (status, ..) = call_with(
        &h,
        Some(small),
        Method::POST,
        &format!("/v1/phones/{GLOBEX_MAC}/resync"),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);

    let tiny = ResyncService::new(&config(1, 5), h.store.clone(), None).unwrap();
    call_with(&h, Some(tiny.clone()), Method::POST, &acme).await;
    let (status, headers, body) = call_with(
        &h,
        Some(tiny),
        Method::POST,
        &format!("/v1/phones/{GLOBEX_MAC}/resync"),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(headers.get("retry-after").is_some());

    for (method, path) in [
        (Method::POST, acme.as_str()),
        (Method::POST, "/v1/tenants/acme/resync"),
        (Method::GET, "/v1/resyncs"),
    ] {
        let (status, _, body) = call_with(&h, None, method, path).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert_eq!(body["error"]["message"], "resync is not configured");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_sends_only_to_an_address_the_phone_fetched_from() {
    let h = Harness::new(Backend::Sqlite).await;
    // The phone is asked again right after a failed NOTIFY, which spacing
    // would otherwise hold back.
    let config = ResyncConfig {
        direct: true,
        direct_networks: vec!["127.0.0.0/25".into()],
        listen: "127.0.0.1:0".parse().unwrap(),
        t1_ms: 5,
        t2_ms: 20,
        phone_spacing_s: 0,
        ..Default::default()
    };
    let direct = ResyncService::new(&config, h.store.clone(), None).unwrap();
    let cancel = CancellationToken::new();
    tokio::spawn(direct.clone().run(cancel.clone()));
    let path = format!("/v1/phones/{ACME_MAC}/resync");
    // Until the newest resync has finished.
    let wait = || {
        let direct = direct.clone();
        async move {
            for _ in 0..400 {
                let newest = direct.list(None, 1, |_| true).remove(0);
                if matches!(newest.state, State::Failed | State::Answered) {
                    return newest;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("never finished");
        }
    };
    let (status, _, body) = call_with(&h, Some(direct.clone()), Method::POST, &path).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["resync"]["via"], "direct");
    let failed = wait().await;
    assert_eq!(failed.state, State::Failed);
    assert!(failed.sent_at.is_none(), "nothing to send to, nothing sent");
    assert!(failed.reason.unwrap().starts_with("no known address"));

    // Sent to the address history has (whatever answers there, if anything).
    let acme = h.mirror.load().tenant_by_slug("acme").unwrap().id;
    let fetch = BootRecord {
        mac: ACME_MAC.into(),
        at: dialtone_sync::now_millis(),
        remote_ip: "127.0.0.2".into(),
        user_agent: None,
        protocol: "http".into(),
        file: format!("{ACME_MAC}.cfg"),
        outcome: "ok".into(),
        bytes: 1,
        model: None,
        firmware: None,
        tenant_id: Some(acme),
    };
    h.store
        .record_boots(std::slice::from_ref(&fetch))
        .await
        .unwrap();
    call_with(&h, Some(direct.clone()), Method::POST, &path).await;
    let done = wait().await;
    assert!(done.sent_at.is_some(), "{done:?}");

    // A later refused fetch (anyone can forge one, from any source) does
    // not move the phone: the NOTIFY goes to its last served fetch.
    let phone = tokio::net::UdpSocket::bind("127.0.0.77:5060")
        .await
        .unwrap();
    let served = BootRecord {
        remote_ip: "127.0.0.77".into(),
        at: dialtone_sync::now_millis(),
        ..fetch.clone()
    };
    let forged = BootRecord {
        remote_ip: "127.0.0.78".into(),
        at: dialtone_sync::now_millis() + 1,
        outcome: "unauthorized".into(),
        ..fetch.clone()
    };
    h.store.record_boots(&[served, forged]).await.unwrap();
    call_with(&h, Some(direct.clone()), Method::POST, &path).await;
    let mut buf = [0u8; 2048];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), phone.recv_from(&mut buf))
        .await
        .expect("no NOTIFY at the served fetch's address")
        .unwrap();
    assert!(buf[..n].starts_with(b"NOTIFY "));
    let _ = wait().await;

    // Nor does a served fetch from outside direct_networks (a TFTP source
    // anyone who knows the MAC can forge): the newest one inside wins.
    let outside = BootRecord {
        remote_ip: "127.0.0.200".into(),
        at: dialtone_sync::now_millis() + 2,
        ..fetch
    };
    h.store.record_boots(&[outside]).await.unwrap();
    call_with(&h, Some(direct.clone()), Method::POST, &path).await;
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), phone.recv_from(&mut buf))
        .await
        .expect("the NOTIFY left the served address inside direct_networks")
        .unwrap();
    assert!(buf[..n].starts_with(b"NOTIFY "));
    cancel.cancel();
}

/// Direct mode's address comes from history that strangers write to: a
/// flood of refused fetches naming the MAC (a TFTP request's source can be
/// forged), a fetch from outside the tenant's own networks. None of them
/// moves the NOTIFY from where the phone was last served, over TFTP here
/// (its row written once the phone acknowledged), not from an older
/// address it fetched from over HTTP.
async fn forged_history_does_not_divert_a_direct_resync(backend: Backend, phone: u8) {
    let h = Harness::new(backend).await;
    let settings = serde_json::json!({"name": "acme Inc", "settings": {
        "sip_domains": ["sip.example.net"], "provisioning_networks": ["127.0.0.64/26"]}});
    let reply = h.put_acme("global", settings).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let config = ResyncConfig {
        direct: true,
        direct_networks: vec!["127.0.0.0/25".into()],
        listen: "127.0.0.1:0".parse().unwrap(),
        t1_ms: 5,
        t2_ms: 20,
        ..Default::default()
    };
    let direct = ResyncService::new(&config, h.store.clone(), None).unwrap();
    let cancel = CancellationToken::new();
    tokio::spawn(direct.clone().run(cancel.clone()));
    let listening = tokio::net::UdpSocket::bind(format!("127.0.0.{phone}:5060"))
        .await
        .unwrap();

    let acme = h.mirror.load().tenant_by_slug("acme").unwrap().id;
    let now = dialtone_sync::now_millis();
    let fetch = |ip: String, protocol: &str, outcome: &str, at: i64| BootRecord {
        mac: ACME_MAC.into(),
        at,
        remote_ip: ip,
        user_agent: None,
        protocol: protocol.into(),
        file: format!("{ACME_MAC}.cfg"),
        outcome: outcome.into(),
        bytes: 1,
        model: None,
        firmware: None,
        tenant_id: Some(acme),
    };
    let week = 7 * 86_400_000;
    let mut rows = vec![
        // Where the phone was a week ago, over HTTP.
        fetch(format!("127.0.0.{}", phone + 1), "http", "ok", now - week),
        // Where it was served last, over TFTP.
        fetch(format!("127.0.0.{phone}"), "tftp", "ok", now),
        // Inside direct_networks, outside acme's.
        fetch("127.0.0.20".into(), "http", "ok", now + 2),
    ];
    // Newer still: more than a resync reads of refused fetches from inside
    // every network.
    for i in 0..240 {
        let ip = format!("127.0.0.{}", 100 + i % 20);
        rows.push(fetch(ip, "tftp", "error: refused", now + 3 + i64::from(i)));
    }
    h.store.record_boots(&rows).await.unwrap();

    let path = format!("/v1/phones/{ACME_MAC}/resync");
    let (status, _, body) = call_with(&h, Some(direct.clone()), Method::POST, &path).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let mut buf = [0u8; 2048];
    let received =
        tokio::time::timeout(Duration::from_secs(5), listening.recv_from(&mut buf)).await;
    let newest = direct.list(None, 1, |_| true).remove(0);
    let (n, _) = received
        .unwrap_or_else(|_| panic!("no NOTIFY at the phone's last address: {newest:?}"))
        .unwrap();
    assert!(buf[..n].starts_with(b"NOTIFY "));
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_history_does_not_divert_a_direct_resync_sqlite() {
    forged_history_does_not_divert_a_direct_resync(Backend::Sqlite, 87).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_history_does_not_divert_a_direct_resync_postgres() {
    forged_history_does_not_divert_a_direct_resync(Backend::Postgres, 97).await;
}

/// A NOTIFY in flight when the resync task stops (shutdown, or a restart
/// by its supervisor) ends "failed: interrupted", not "sent" for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resync_in_flight_when_the_task_stops_ends_interrupted() {
    let h = Harness::new(Backend::Sqlite).await;
    let cancel = CancellationToken::new();
    let task = tokio::spawn(h.resync.clone().run(cancel.clone()));
    queue_acme_phone_resync(&h, "acme-admin").await;
    let newest = || h.resync.list(None, 1, |_| true).remove(0);
    for _ in 0..400 {
        if newest().state == State::Sent {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        newest().state,
        State::Sent,
        "the proxy stand-in never answers"
    );
    cancel.cancel();
    task.await.unwrap();
    let ended = newest();
    assert_eq!(ended.state, State::Failed);
    assert!(ended.reason.unwrap().starts_with("interrupted"));
}
