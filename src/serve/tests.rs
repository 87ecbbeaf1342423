//! The composed API router, driven in process with `oneshot`: every part
//! `serve` merges answers on it.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use dialtone_directory::LookupService;
use dialtone_sync::{Mirror, SecretKey};
use dialtone_tftp::{Provisioner, Shipped};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use super::{api_router, provision_options, ApiParts};
use crate::config::Config;
use crate::supervise::{Intensity, Supervisor};

#[tokio::test]
async fn the_api_router_answers_for_every_part() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.database.url = format!("sqlite://{}", dir.path().join("d.db").display());
    let key = SecretKey::parse(&"11".repeat(32)).unwrap();
    let store = dialtone_sync::open(&config.database.url, key.clone(), &Default::default())
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let mirror = Arc::new(Mirror::new());
    dialtone_sync::watcher::full_load(&mirror, &*store)
        .await
        .unwrap();
    let provisioner = Arc::new(Provisioner::new(
        mirror.clone(),
        key.clone(),
        Shipped::built_in(1),
        provision_options(&config),
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
    let router = api_router(ApiParts {
        config: &config,
        mirror: &mirror,
        store: &store,
        key: &key,
        provisioner: &provisioner,
        lookups,
        supervisor: &supervisor,
        metrics: None,
        resync: None,
    });
    for (path, status) in [
        ("/healthz", StatusCode::OK),
        ("/readyz", StatusCode::OK),
        ("/openapi.json", StatusCode::OK),
        ("/v1/tenants", StatusCode::UNAUTHORIZED),
        (
            "/v1/lookup?number=%2B15550101234&key=nope",
            StatusCode::UNAUTHORIZED,
        ),
    ] {
        let response = router
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{path}");
    }
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
