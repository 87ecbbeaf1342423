//! The admin page at `/ui/`: static HTML, CSS and vanilla JavaScript
//! embedded in the binary (no build step on the target machine), talking
//! only to the admin API. The Content-Security-Policy forbids inline script
//! and any origin but our own.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

const INDEX: &str = include_str!("ui/index.html");
const SCRIPT: &str = include_str!("ui/app.js");
const STYLE: &str = include_str!("ui/app.css");
const TEMPLATES: &str = include_str!("ui/templates.js");
const FLEET: &str = include_str!("ui/fleet.js");
const RESYNC: &str = include_str!("ui/resync.js");
const UNCLAIMED: &str = include_str!("ui/unclaimed.js");

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
img-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route(
            "/ui/",
            get(|| async { asset("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/ui/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/ui/templates.js",
            get(|| async { asset("text/javascript; charset=utf-8", TEMPLATES) }),
        )
        .route(
            "/ui/fleet.js",
            get(|| async { asset("text/javascript; charset=utf-8", FLEET) }),
        )
        .route(
            "/ui/resync.js",
            get(|| async { asset("text/javascript; charset=utf-8", RESYNC) }),
        )
        .route(
            "/ui/unclaimed.js",
            get(|| async { asset("text/javascript; charset=utf-8", UNCLAIMED) }),
        )
        .route(
            "/ui/app.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, content_type),
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::CACHE_CONTROL, "no-cache"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}
