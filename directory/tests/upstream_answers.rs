//! What an upstream CNAM service's 200 may say, through the lookup service:
//! a page that is not a name (HTML, a JSON value that is not a string) is
//! the source failing, retried soon and counted toward its breaker, never
//! a name cached for an hour. And what a PBX may send as the caller: the
//! whole URI, however long its host.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use common::*;
use dialtone_directory::{Clock, DirectoryError, LookupOptions, LookupService, NormalizeError};
use dialtone_sync::{Id, SourceKind};

/// What the upstream answers every request with: a Content-Type (or none)
/// and a body.
type Reply = (Option<&'static str>, &'static str);

struct Upstream {
    requests: AtomicU64,
    reply: Mutex<Reply>,
}

impl Upstream {
    fn set(&self, reply: Reply) {
        *self.reply.lock().unwrap() = reply;
    }

    fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }
}

async fn cnam(State(up): State<Arc<Upstream>>) -> Response {
    up.requests.fetch_add(1, Ordering::SeqCst);
    let (content_type, body) = *up.reply.lock().unwrap();
    let mut response = axum::body::Body::from(body).into_response();
    if let Some(content_type) = content_type {
        let value = content_type.parse().unwrap();
        response.headers_mut().insert(CONTENT_TYPE, value);
    }
    response
}

struct Fixture {
    service: LookupService,
    clock: Clock,
    acme: Id,
    up: Arc<Upstream>,
    _db: dialtone_sync::testing::TestDb,
}

async fn fixture(reply: Reply, format: &str, breaker_threshold: u32) -> Fixture {
    let up = Arc::new(Upstream {
        requests: AtomicU64::new(0),
        reply: Mutex::new(reply),
    });
    let app = axum::Router::new()
        .route("/cnam/{digits}", get(cnam))
        .with_state(up.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/cnam/{{digits}}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let settings = serde_json::json!({ "url": url, "format": format, "name_field": "/name" });
    let upstream = source("acme", "cnam", SourceKind::Http, settings, None, 5_000);
    let (db, _store, mirror) = mirror_of(&[tenant("acme", "US"), upstream]).await;
    let acme = tenant_id(&mirror, "acme");
    let options = LookupOptions {
        deadline: Duration::from_secs(5),
        breaker_threshold,
        // The test's upstream listens on loopback.
        source_networks: dialtone_directory::SourceNetworks::parse(&["127.0.0.0/8"])
            .unwrap()
            .shared(),
        ..LookupOptions::default()
    };
    let clock = Clock::manual();
    let service = LookupService::with_clock(mirror, None, options, clock.clone());
    Fixture {
        service,
        clock,
        acme,
        up,
        _db: db,
    }
}

impl Fixture {
    /// The name and whether the answer was definitive (a name or a miss,
    /// not a failure).
    async fn lookup(&self, number: &str) -> (Option<String>, bool) {
        let answer = self.service.lookup(self.acme, number).await.unwrap();
        (
            answer.name().map(str::to_string),
            answer.resolved.definitive,
        )
    }
}

const MAINTENANCE_PAGE: &str =
    "<!DOCTYPE html>\n<html><head><title>Down for maintenance</title></head></html>\n";

/// A maintenance page answering 200 was the caller's name for an hour.
#[tokio::test]
async fn an_html_page_is_a_failure_not_a_name() {
    let f = fixture(
        (Some("text/html; charset=utf-8"), MAINTENANCE_PAGE),
        "text",
        2,
    )
    .await;
    assert_eq!(f.lookup("+15550101234").await, (None, false));
    assert_eq!(f.lookup("+15550101235").await, (None, false));
    assert_eq!(f.up.requests(), 2);
    // Two failures opened the breaker: the source is spared.
    assert_eq!(f.lookup("+15550101236").await, (None, false));
    assert_eq!(f.up.requests(), 2);
    // Past the failure TTL and the breaker's cool-down, asked again.
    f.up.set((Some("text/plain; charset=utf-8"), "Alice Example\n"));
    f.clock.advance(Duration::from_secs(11));
    assert_eq!(
        f.lookup("+15550101234").await,
        (Some("Alice Example".into()), true)
    );
    // No Content-Type at all is plain text, as older services send it.
    f.up.set((None, "Bob Example"));
    assert_eq!(
        f.lookup("+15550109999").await,
        (Some("Bob Example".into()), true)
    );
    // A small script's bare name under its framework's default type.
    f.up.set((Some("text/html; charset=UTF-8"), "Carol Example\n"));
    assert_eq!(
        f.lookup("+15550109998").await,
        (Some("Carol Example".into()), true)
    );
    // Markup is no name whatever the type says, blank lines first or not.
    f.up.set((
        Some("text/plain"),
        "\n\n  <html><body>Captive portal</body></html>",
    ));
    assert_eq!(f.lookup("+15550109997").await, (None, false));
}

/// `{"name": 12345}` was the name "12345"; `{"name": false}`, which some
/// services answer for "no name", was the name "false" and is a miss.
#[tokio::test]
async fn a_json_name_that_is_not_a_string_is_a_failure() {
    let json = Some("application/json");
    let f = fixture((json, r#"{"name": false}"#), "json", u32::MAX).await;
    assert_eq!(f.lookup("+15550101230").await, (None, true));
    for (number, body) in [
        ("+15550101236", r#"{"name": true}"#),
        ("+15550101231", r#"{"name": 12345}"#),
        ("+15550101232", r#"{"name": {"first": "Alice"}}"#),
        ("+15550101233", r#"{"name": ["Alice"]}"#),
    ] {
        f.up.set((json, body));
        assert_eq!(f.lookup(number).await, (None, false), "{body}");
    }
    f.up.set((json, r#"{"name": null}"#));
    assert_eq!(f.lookup("+15550101234").await, (None, true));
    f.up.set((json, r#"{"name": "Alice Example"}"#));
    assert_eq!(
        f.lookup("+15550101235").await,
        (Some("Alice Example".into()), true)
    );
}

/// A carrier's URI with a long SBC host, and a From header's value, are
/// the caller's number; only input past any URI's length is refused.
#[tokio::test]
async fn a_whole_caller_uri_is_looked_up() {
    let f = fixture((Some("text/plain"), "Alice Example"), "text", 3).await;
    let alice = (Some("Alice Example".to_string()), true);
    let long_host = "sip:+15550101234@sbc1.carrier-interconnect.example.net;user=phone";
    assert!(long_host.len() > dialtone_directory::MAX_LOOKUP_LEN);
    assert_eq!(f.lookup(long_host).await, alice);
    let from_header = "<sip:+15550101234@sbc1.carrier-interconnect.example.net>;tag=a8c1f";
    assert_eq!(f.lookup(from_header).await, alice);
    let explained = f.service.explain(f.acme, long_host).await.unwrap();
    assert_eq!(
        (explained.number.as_str(), explained.name.as_deref()),
        ("+15550101234", Some("Alice Example"))
    );
    let huge = format!("sip:+15550101234@{}.example.net", "h".repeat(300));
    let refused = f.service.lookup(f.acme, &huge).await;
    assert!(
        matches!(
            refused,
            Err(DirectoryError::Number(NormalizeError::TooLong(..)))
        ),
        "{refused:?}"
    );
}
