//! Admin API answers hold tenants' data (phones, line settings, template
//! bodies, directory entries): none may be kept by a browser or a proxy,
//! errors included. The page's assets keep their own caching.

use axum::http::{Method, StatusCode};
use dialtone_sync::Backend;

use super::{Harness, ACME_MAC};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_answers_are_never_stored_and_assets_keep_their_caching() {
    let h = Harness::new(Backend::Sqlite).await;
    let phone = format!("/v1/phones/{ACME_MAC}");
    for (role, method, path, status) in [
        (Some("global"), Method::GET, "/v1/tenants", StatusCode::OK),
        (
            Some("acme-admin"),
            Method::GET,
            phone.as_str(),
            StatusCode::OK,
        ),
        (
            Some("acme-admin"),
            Method::GET,
            "/v1/templates/{acme_template}",
            StatusCode::OK,
        ),
        (
            Some("acme-read"),
            Method::GET,
            "/v1/tenants/acme/directory",
            StatusCode::OK,
        ),
        (None, Method::GET, "/v1/phones", StatusCode::UNAUTHORIZED),
        (
            Some("global"),
            Method::GET,
            "/v1/phones/00156500ffff",
            StatusCode::NOT_FOUND,
        ),
        (
            Some("global"),
            Method::PATCH,
            "/v1/tenants",
            StatusCode::METHOD_NOT_ALLOWED,
        ),
    ] {
        let reply = h.call(role, method.clone(), path, None, &[]).await;
        assert_eq!(reply.status, status, "{method} {path}: {}", reply.text);
        let header = |name: &str| reply.headers.get(name).and_then(|v| v.to_str().ok());
        assert_eq!(header("cache-control"), Some("no-store"), "{method} {path}");
        assert_eq!(
            header("x-content-type-options"),
            Some("nosniff"),
            "{method} {path}"
        );
        assert_eq!(
            reply.headers.get_all("cache-control").iter().count(),
            1,
            "{method} {path}"
        );
    }
    for path in ["/ui/", "/ui/app.js", "/ui/app.css"] {
        let reply = h.call(None, Method::GET, path, None, &[]).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
        assert_eq!(
            reply.headers.get("cache-control").unwrap(),
            "no-cache",
            "{path}"
        );
    }
}
