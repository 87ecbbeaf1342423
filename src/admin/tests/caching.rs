//! Admin API answers hold tenants' data (phones, line settings, template
//! bodies, directory entries): none may be kept by a browser or a proxy,
//! errors included, and every error has the API's one JSON shape, a path
//! or method the API does not have as much as a handler's refusal. The
//! page's assets keep their own caching.

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
        // Routes under the share's layers: refused before it reads a body.
        (
            Some("acme-admin"),
            Method::PATCH,
            "/v1/phones",
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            Some("acme-admin"),
            Method::GET,
            "/v1/tenants/acme/directory-sources/cnam/test",
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            Some("global"),
            Method::GET,
            "/v1/nonexistent",
            StatusCode::NOT_FOUND,
        ),
        (
            None,
            Method::POST,
            "/v1/tenants/acme/nonexistent",
            StatusCode::NOT_FOUND,
        ),
        (Some("global"), Method::GET, "/v1", StatusCode::NOT_FOUND),
        (Some("global"), Method::GET, "/v1/", StatusCode::NOT_FOUND),
    ] {
        let reply = h.call(role, method.clone(), path, None, &[]).await;
        assert_eq!(reply.status, status, "{method} {path}: {}", reply.text);
        if !status.is_success() {
            // The API's one error shape, whatever refused the request.
            assert!(
                reply.json()["error"]["code"].is_string(),
                "{method} {path}: {:?}",
                reply.text
            );
        }
        if status == StatusCode::METHOD_NOT_ALLOWED {
            assert!(reply.headers.contains_key("allow"), "{method} {path}");
        }
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
