//! The admin API across two `dialtone serve` processes sharing one
//! PostgreSQL: an edit through node A's API changes what node B serves over
//! HTTP provisioning and TFTP, measured; and no secret written through the
//! API shows up in a response or in either node's log.

mod common;

use std::time::{Duration, Instant};

use common::*;
use dialtone_sync::testing::TestDb;
use serde_json::{json, Value};

const DEMO_YEALINK: &str = "0015654aa937";
const SECRET: &str = "e2e-line-secret-Zz9";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_on_node_a_is_served_by_node_b_over_http_and_tftp() {
    let db = TestDb::postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let (a_dir, b_dir) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&a_dir).unwrap();
    std::fs::create_dir_all(&b_dir).unwrap();
    let a = Server::start(&a_dir, &db.url, &["--demo"]);
    let b = Server::start(&b_dir, &db.url, &[]);
    assert!(wait_until(Duration::from_secs(10), || b.phones() > 0
        && b.phones() == a.phones())
    .is_some());
    let token = create_token(
        dir.path(),
        &db.url,
        &["--scope", "global-admin", "--name", "e2e"],
    );
    let api = Api::new(a.addr, token);
    // The token reached node A through the change log.
    let mut tenants = (0, String::new(), Value::Null);
    for _ in 0..200 {
        tenants = api
            .send(reqwest::Method::GET, "/v1/tenants", None, None)
            .await;
        if tenants.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(tenants.0, 200, "{:?}", tenants.2);

    let file = format!("{DEMO_YEALINK}.cfg");
    let http_before = http_get(b.prov_addr, &format!("/{file}"))
        .expect("B serves HTTP")
        .1;
    let tftp_before = tftp_fetch(dir.path(), &db.url, b.tftp_addr, &file).expect("B serves TFTP");
    assert_eq!(http_before, tftp_before);

    let marker = format!("# e2e edit {}", std::process::id());
    let body =
        format!("#!version:1.0.0.1\n{marker}\naccount.1.label = {{{{ lines[0].display_name }}}}\n");
    let started = Instant::now();
    let (status, _, created) = api
        .send(
            reqwest::Method::POST,
            "/v1/templates",
            Some(json!({ "scope": "tenant", "tenant": "demo", "family": "yealink", "file_pattern": "{mac}.cfg", "body": body })),
            None,
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let answered = started.elapsed();
    let on_http = wait_until(Duration::from_secs(10), || {
        http_get(b.prov_addr, &format!("/{file}")).is_some_and(|(_, body)| body.contains(&marker))
    })
    .map(|_| started.elapsed())
    .unwrap_or_else(|| panic!("node B never served the edit over HTTP: {}", b.stderr()));
    let on_tftp = wait_until(Duration::from_secs(10), || {
        tftp_fetch(dir.path(), &db.url, b.tftp_addr, &file)
            .is_some_and(|body| body.contains(&marker))
    })
    .map(|_| started.elapsed())
    .expect("node B never served the edit over TFTP");
    eprintln!(
        "edit through node A: API answered in {answered:?}; node B served it over HTTP after {on_http:?}, over TFTP after {on_tftp:?}"
    );

    // A write-only secret, through the API: never echoed, never logged.
    let (status, etag, phone) = api
        .send(
            reqwest::Method::GET,
            &format!("/v1/phones/{DEMO_YEALINK}"),
            None,
            None,
        )
        .await;
    assert_eq!(status, 200);
    let mut update = json!({
        "tenant": "demo", "family": "yealink", "model": phone["model"], "label": "e2e",
        "lines": [{ "extension": phone["lines"][0]["extension"], "display_name": "E2E desk",
                    "registrar": phone["lines"][0]["registrar"], "password": SECRET }],
    });
    let (status, _, updated) = api
        .send(
            reqwest::Method::PUT,
            &format!("/v1/phones/{DEMO_YEALINK}"),
            Some(update.clone()),
            Some(&etag),
        )
        .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["lines"][0]["has_password"], true);
    // The stale tag is refused now.
    update["label"] = json!("stale");
    let (status, _, _) = api
        .send(
            reqwest::Method::PUT,
            &format!("/v1/phones/{DEMO_YEALINK}"),
            Some(update),
            Some(&etag),
        )
        .await;
    assert_eq!(status, 412);
    // The phone itself gets the new password (that is what it is for).
    assert!(wait_until(Duration::from_secs(10), || {
        http_get(b.prov_addr, &format!("/{file}"))
            .is_some_and(|(_, body)| body.contains("E2E desk"))
    })
    .is_some());
    let (_, _, preview) = api
        .send(
            reqwest::Method::POST,
            "/v1/preview",
            Some(json!({ "mac": DEMO_YEALINK })),
            None,
        )
        .await;
    assert!(
        preview["files"].as_array().is_some_and(|f| !f.is_empty()),
        "{preview}"
    );
    api.send(reqwest::Method::GET, "/v1/audit", None, None)
        .await;

    assert!(
        !api.seen.lock().unwrap().contains(SECRET),
        "an API response carried the secret"
    );
    let (a_log, b_log) = (a.stderr(), b.stderr());
    assert_eq!(a.stop(), 0);
    assert_eq!(b.stop(), 0);
    for (node, log) in [("A", a_log), ("B", b_log)] {
        assert!(
            !log.contains(SECRET),
            "node {node}'s log carries the secret"
        );
    }
}
