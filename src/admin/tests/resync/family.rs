//! Resyncs across address families: `[::]:0` sends to an IPv4 proxy
//! whatever the host's `net.ipv6.bindv6only`, and a socket that cannot
//! send to the other family says so, where it said the proxy "could not
//! be resolved" or the phone "has not fetched its configuration".

use std::time::Duration;

use axum::http::{Method, StatusCode};
use dialtone_sync::store::BootRecord;
use dialtone_sync::Backend;
use tokio_util::sync::CancellationToken;

use super::super::resync_limits::call_with;
use super::super::{Harness, ACME_MAC};
use crate::config::ResyncConfig;
use crate::resync::track::{Resync, State};
use crate::resync::ResyncService;

/// Asks `service` to resync acme's phone and waits for the end.
async fn resync_ended(h: &Harness, service: &ResyncService) -> Resync {
    let cancel = CancellationToken::new();
    tokio::spawn(service.clone().run(cancel.clone()));
    let path = format!("/v1/phones/{ACME_MAC}/resync");
    let (status, _, body) = call_with(h, Some(service.clone()), Method::POST, &path).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    for _ in 0..500 {
        let newest = service.list(None, 1, |_| true).remove(0);
        if matches!(newest.state, State::Failed | State::Answered) {
            cancel.cancel();
            return newest;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the resync never ended");
}

fn quick(config: ResyncConfig) -> ResyncConfig {
    ResyncConfig {
        t1_ms: 20,
        t2_ms: 80,
        phone_spacing_s: 0,
        ..config
    }
}

/// The harness's proxy is on 127.0.0.1: NOTIFYs from `[::]:0` reach it.
/// With the host's `bindv6only` at 1 the socket was IPv6-only, and every
/// one failed as "could not send".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ipv6_wildcard_sends_to_an_ipv4_proxy() {
    let h = Harness::new(Backend::Sqlite).await;
    let config = quick(ResyncConfig {
        proxy: Some(h.proxy.local_addr().unwrap().to_string()),
        listen: "[::]:0".parse().unwrap(),
        ..Default::default()
    });
    let service = ResyncService::new(&config, h.store.clone(), None)
        .unwrap_or_else(|e| panic!("is IPv6 available on this machine (`ip -6 addr`)? {e:#}"));
    let far = super::proxy(&h, &["200 OK"]);
    let ended = resync_ended(&h, &service).await;
    assert_eq!(ended.state, State::Answered, "{:?}", ended.reason);
    assert!(!far.await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ipv6_proxy_from_an_ipv4_socket_is_said_to_be_one() {
    let h = Harness::new(Backend::Sqlite).await;
    let config = quick(ResyncConfig {
        proxy: Some("[::1]:5060".into()),
        listen: "127.0.0.1:0".parse().unwrap(),
        ..Default::default()
    });
    let service = ResyncService::new(&config, h.store.clone(), None).unwrap();
    let ended = resync_ended(&h, &service).await;
    assert_eq!(ended.state, State::Failed);
    assert!(ended.sent_at.is_none());
    let reason = ended.reason.unwrap_or_default();
    assert!(
        reason.contains("all IPv6") && reason.contains("resync.listen is IPv4"),
        "{reason}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_that_fetched_over_ipv6_only_is_said_to_have() {
    let h = Harness::new(Backend::Sqlite).await;
    let config = quick(ResyncConfig {
        direct: true,
        direct_networks: vec!["::1/128".into(), "127.0.0.0/8".into()],
        listen: "127.0.0.1:0".parse().unwrap(),
        ..Default::default()
    });
    let acme = h.mirror.load().tenant_by_slug("acme").unwrap().id;
    let fetch = BootRecord {
        mac: ACME_MAC.into(),
        at: dialtone_sync::now_millis(),
        remote_ip: "::1".into(),
        user_agent: None,
        protocol: "http".into(),
        file: format!("{ACME_MAC}.cfg"),
        outcome: "ok".into(),
        bytes: 1,
        model: None,
        firmware: None,
        tenant_id: Some(acme),
    };
    h.store.record_boots(&[fetch]).await.unwrap();
    let service = ResyncService::new(&config, h.store.clone(), None).unwrap();
    let ended = resync_ended(&h, &service).await;
    assert_eq!(ended.state, State::Failed);
    let reason = ended.reason.unwrap_or_default();
    assert!(
        reason.contains("fetched only over IPv6") && reason.contains("resync.listen is IPv4"),
        "{reason}"
    );
}
