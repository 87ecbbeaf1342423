//! Requests refused for their source's ban are counted
//! (`dialtone_provision_requests_total{outcome="banned"}`) over TFTP and
//! HTTP, and the 429 says when the ban ends. One test in this binary: the
//! TFTP server runs on its own thread, so the counts are read from a
//! process-wide recorder.

mod common;
#[allow(unused_macros)]
#[macro_use]
mod tftp_support;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{header, Request as HttpRequest, StatusCode};
use common::*;
use dialtone_tftp::tftp::TftpOptions;
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use tftp_support::*;
use tower::ServiceExt;

/// Counters only, each kept by its name and labels.
#[derive(Default)]
struct Counts(Mutex<HashMap<Key, Arc<AtomicU64>>>);

impl Recorder for Counts {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let mut counts = self.0.lock().unwrap();
        Counter::from_arc(counts.entry(key.clone()).or_default().clone())
    }

    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }

    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

fn counts() -> &'static Counts {
    static COUNTS: OnceLock<&'static Counts> = OnceLock::new();
    COUNTS.get_or_init(|| {
        let counts: &'static Counts = Box::leak(Box::default());
        metrics::set_global_recorder(counts).expect("the only recorder");
        counts
    })
}

fn requests(protocol: &str, outcome: &str) -> u64 {
    let counts = counts().0.lock().unwrap();
    counts
        .iter()
        .filter(|(key, _)| key.name() == "dialtone_provision_requests_total")
        .filter(|(key, _)| {
            let label = |name: &str| key.labels().find(|l| l.key() == name).map(|l| l.value());
            label("protocol") == Some(protocol)
                && label("vendor") == Some("yealink")
                && label("outcome") == Some(outcome)
        })
        .map(|(_, count)| count.load(Ordering::Relaxed))
        .sum()
}

/// The status and `Retry-After` of a GET.
async fn get(f: &Fixture, from: SocketAddr, path: &str) -> (StatusCode, Option<u64>) {
    let response = dialtone_tftp::http::router(f.provisioner.clone())
        .layer(MockConnectInfo(from))
        .oneshot(HttpRequest::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let retry_after = (response.headers().get(header::RETRY_AFTER))
        .map(|v| v.to_str().unwrap().parse().expect("whole seconds"));
    (response.status(), retry_after)
}

#[tokio::test]
async fn requests_refused_for_a_ban_are_counted_and_told_when_to_come_back() {
    counts();
    let f = Fixture::new().await;
    let server = Server::start(Mode::Ported, f.provisioner.clone(), TftpOptions::default());
    let from: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let source: IpAddr = from.ip();
    // Made-up Yealink MACs: a miss each, until the source is banned.
    for i in 0..100 {
        if f.provisioner.guard().is_banned(source) {
            break;
        }
        get(&f, from, &format!("/0015650099{i:02}.cfg")).await;
    }
    assert!(f.provisioner.guard().is_banned(source), "never banned");

    // A real phone's file, which the source never fetched: refused.
    let phone = "001565000001.cfg";
    let (http_before, tftp_before) = (requests("http", "banned"), requests("tftp", "banned"));
    let mut told = Vec::new();
    for _ in 0..3 {
        let (status, retry_after) = get(&f, from, &format!("/{phone}")).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        told.push(retry_after.expect("a 429 for a ban says when it ends"));
    }
    assert_eq!(requests("http", "banned"), http_before + 3);
    // The default ban is 600 s, and it began moments ago.
    assert!(
        told.iter().all(|s| (540..=600).contains(s)),
        "Retry-After {told:?}"
    );
    // What is left, not the ban's length.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (_, later) = get(&f, from, &format!("/{phone}")).await;
    assert!(later.unwrap() < told[2], "{later:?} after {told:?}");
    assert_eq!(requests("http", "banned"), http_before + 4);

    for i in 1..=3 {
        let (code, _) = error_of(server.addr, &request(1, phone, &[]));
        assert_eq!(code, 1, "a banned source sees any unknown file");
        assert_eq!(requests("tftp", "banned"), tftp_before + i);
    }
    // None of them counted as anything else.
    assert_eq!(requests("tftp", "not_found"), 0);
    assert_eq!(requests("http", "ok"), 0);
}
