//! The composed API router, driven in process with `oneshot`: every part
//! `serve` merges answers on it.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use dialtone_directory::LookupService;
use dialtone_tftp::{Provisioner, Shipped};
use http_body_util::BodyExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use super::test_support::{start_on_empty_sqlite, Started};
use super::{api_router, provision_options, ApiParts, Routers};
use crate::config::Config;
use crate::supervise::{Intensity, Supervisor};

/// The routers `serve` would listen with, over an empty SQLite database,
/// with a metrics handle (not installed as the global recorder, so
/// `/metrics` answers with an empty body).
async fn routers(config: &mut Config, dir: &std::path::Path) -> Routers {
    let Started { store, mirror, key } = start_on_empty_sqlite(config, dir).await;
    let provisioner = Arc::new(Provisioner::new(
        mirror.clone(),
        key.clone(),
        Shipped::built_in(1),
        provision_options(config),
    ));
    let lookups = LookupService::new(mirror.clone(), Some(key.clone()), Default::default());
    let (tracker, cancel) = (TaskTracker::new(), CancellationToken::new());
    let supervisor = Supervisor::new(
        &tracker,
        &cancel,
        Intensity {
            max_restarts: 5,
            window: std::time::Duration::from_secs(60),
        },
    );
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .build_recorder()
        .handle();
    api_router(ApiParts {
        config,
        mirror: &mirror,
        store: &store,
        key: &key,
        provisioner: &provisioner,
        lookups,
        supervisor: &supervisor,
        metrics: Some(metrics),
        resync: None,
    })
}

async fn get(router: &axum::Router, path: &str) -> (StatusCode, String) {
    let response = router
        .clone()
        .oneshot(Request::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn the_api_router_answers_for_every_part() {
    let dir = tempfile::tempdir().unwrap();
    let routers = routers(&mut Config::default(), dir.path()).await;
    assert!(routers.monitoring.is_none());
    for (path, status) in [
        ("/healthz", StatusCode::OK),
        ("/readyz", StatusCode::OK),
        ("/metrics", StatusCode::OK),
        ("/openapi.json", StatusCode::OK),
        ("/v1/tenants", StatusCode::UNAUTHORIZED),
        (
            "/v1/lookup?number=%2B15550101234&key=nope",
            StatusCode::UNAUTHORIZED,
        ),
    ] {
        assert_eq!(get(&routers.api, path).await.0, status, "{path}");
    }
    let (_, readyz) = get(&routers.api, "/readyz").await;
    assert!(readyz.contains("\"counts\""), "{readyz}");
    // A path nothing serves is told so, not answered with an empty body.
    let (status, body) = get(&routers.api, "/nothing-here").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains("no such path"), "{body}");
}

/// With `http.monitoring_listen` set, what covers the whole platform
/// (`/metrics`, `/readyz`'s counts and sources) is on that listener only;
/// the API listener still says whether the node is ready.
#[tokio::test]
async fn a_monitoring_listener_takes_the_platform_wide_answers() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.http.monitoring_listen = Some("127.0.0.1:0".parse().unwrap());
    let Routers { api, monitoring } = routers(&mut config, dir.path()).await;
    let monitoring = monitoring.expect("a monitoring router");

    assert_eq!(get(&api, "/metrics").await.0, StatusCode::NOT_FOUND);
    let (status, readyz) = get(&api, "/readyz").await;
    assert_eq!(status, StatusCode::OK);
    let readyz: serde_json::Value = serde_json::from_str(&readyz).unwrap();
    assert_eq!(
        readyz,
        serde_json::json!({"ready": true, "status": "ready"})
    );
    assert_eq!(get(&api, "/healthz").await.0, StatusCode::OK);
    assert_eq!(get(&api, "/openapi.json").await.0, StatusCode::OK);

    // Its body is empty here: no recorder is installed in this process.
    assert_eq!(get(&monitoring, "/metrics").await.0, StatusCode::OK);
    let (status, readyz) = get(&monitoring, "/readyz").await;
    assert_eq!(status, StatusCode::OK);
    let readyz: serde_json::Value = serde_json::from_str(&readyz).unwrap();
    assert!(
        readyz["counts"].is_object() && readyz["cursor"].is_string(),
        "{readyz}"
    );
    assert_eq!(get(&monitoring, "/healthz").await.0, StatusCode::OK);
    // Nothing tenants use is on it.
    assert_eq!(
        get(&monitoring, "/openapi.json").await.0,
        StatusCode::NOT_FOUND
    );
    let (status, body) = get(&monitoring, "/v1/tenants").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains("no such path"), "{body}");
    // It points at what it has, not at an /openapi.json it answers 404 for.
    assert!(
        body.contains("/healthz, /readyz and /metrics") && !body.contains("openapi"),
        "{body}"
    );
}

/// A listener that ends while the others run is named and taken out of
/// the set (so the drain does not await it twice); while all run, nothing.
#[tokio::test]
async fn the_first_listener_to_stop_by_itself_is_named() {
    let running = || tokio::spawn(std::future::pending::<()>());
    let mut listeners = super::Listeners {
        http: vec![("API", running()), ("provisioning", tokio::spawn(async {}))],
        tftp: Some(tokio::task::spawn_blocking(|| Ok(Ok(())))),
    };
    let first = tokio::time::timeout(std::time::Duration::from_secs(5), listeners.first_to_stop());
    let first = first.await.expect("a finished listener is noticed");
    assert!(["provisioning", "TFTP"].contains(&first), "{first}");
    let second = tokio::time::timeout(std::time::Duration::from_secs(5), listeners.first_to_stop());
    let second = second.await.expect("and the next one");
    assert!(["provisioning", "TFTP"].contains(&second) && second != first);
    let none = tokio::time::timeout(
        std::time::Duration::from_millis(200),
        listeners.first_to_stop(),
    );
    assert!(none.await.is_err(), "a running listener is not reported");
    assert_eq!(listeners.http.len(), 1);
    assert!(listeners.tftp.is_none());
}
