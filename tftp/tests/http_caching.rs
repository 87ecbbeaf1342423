//! What the HTTP front end lets caches on the way do with a file: rendered
//! files (SIP passwords) and directories are for the phone alone, a file
//! the User-Agent chooses varies by it, and firmware stays storable.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{header, HeaderMap, Request as HttpRequest, StatusCode};
use common::*;
use dialtone_sync::testing::test_key;
use dialtone_tftp::{ProvisionOptions, Provisioner, Shipped};
use tower::ServiceExt;

const T46S: &str = "Yealink SIP-T46S 66.86.0.15 00:15:65:00:00:01";

async fn head(
    provisioner: &Arc<Provisioner>,
    path: &str,
    user_agent: Option<&str>,
    etag: Option<&str>,
) -> (StatusCode, HeaderMap) {
    let app = dialtone_tftp::http::router(provisioner.clone()).layer(MockConnectInfo(
        "192.0.2.10:5060".parse::<SocketAddr>().unwrap(),
    ));
    let mut request = HttpRequest::get(path);
    if let Some(agent) = user_agent {
        request = request.header(header::USER_AGENT, agent);
    }
    if let Some(etag) = etag {
        request = request.header(header::IF_NONE_MATCH, etag);
    }
    let response = app
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    (response.status(), response.headers().clone())
}

fn caching(headers: &HeaderMap) -> (&str, Option<&str>) {
    let text = |name| headers.get(name).map(|v| v.to_str().unwrap());
    (
        text(header::CACHE_CONTROL).unwrap_or(""),
        text(header::VARY),
    )
}

#[tokio::test]
async fn shared_caches_keep_no_phones_files() {
    let f = Fixture::new().await;
    // The shipped templates: a model-common file renders.
    let provisioner = Arc::new(Provisioner::new(
        f.mirror.clone(),
        test_key(),
        Shipped::built_in(1),
        ProvisionOptions::default(),
    ));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("sip.ld"), b"firmware").unwrap();
    std::fs::write(dir.path().join("cfg000b82000077.bin"), b"P34=secret").unwrap();
    provisioner.reload_static(dir.path()).unwrap();

    for (path, agent, expected) in [
        // A phone's own file: its SIP passwords.
        ("/001565000001.cfg", None, ("private, no-cache", None)),
        (
            "/001565000001-directory.xml",
            None,
            ("private, no-cache", None),
        ),
        // Named without a MAC: the User-Agent picks the phone and model.
        (
            "/y000000000066.cfg",
            Some(T46S),
            ("private, no-cache", Some("User-Agent")),
        ),
        (
            "/y000000000000.boot",
            None,
            ("private, no-cache", Some("User-Agent")),
        ),
        // Firmware is anyone's; a static file named for a phone is not.
        ("/sip.ld", None, ("no-cache", None)),
        ("/cfg000b82000077.bin", None, ("private, no-cache", None)),
    ] {
        let (status, headers) = head(&provisioner, path, agent, None).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(caching(&headers), expected, "{path}");
        // A revalidation says the same.
        let etag = headers[header::ETAG].to_str().unwrap();
        let (status, headers) = head(&provisioner, path, agent, Some(etag)).await;
        assert_eq!(status, StatusCode::NOT_MODIFIED, "{path}");
        assert_eq!(caching(&headers), expected, "{path} (304)");
    }
}

#[tokio::test]
async fn refusals_are_never_stored() {
    let f = Fixture::new().await;
    let provisioner = Arc::new(Provisioner::new(
        f.mirror.clone(),
        test_key(),
        Shipped::built_in(1),
        ProvisionOptions::default(),
    ));
    for (path, expected) in [
        // A phone not created yet: a kept 404 would delay its first boot.
        ("/0015650000ff.cfg", StatusCode::NOT_FOUND),
        ("/nothing-like-a-phone.bin", StatusCode::NOT_FOUND),
        ("/%2e%2e/etc/passwd", StatusCode::BAD_REQUEST),
    ] {
        let (status, headers) = head(&provisioner, path, None, None).await;
        assert_eq!(status, expected, "{path}");
        assert_eq!(caching(&headers), ("no-store", None), "{path}");
    }
}
