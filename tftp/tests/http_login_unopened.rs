//! A phone's HTTP password the node cannot open (sealed with another key:
//! a node still running after `dialtone rekey`) is the server's fault, not
//! the phone's: its logins are answered 500, never 401, and charge its
//! office nothing, so the office's address is never banned for them.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{header, Request as HttpRequest, StatusCode};
use common::*;
use dialtone_sync::store::PhoneInput;
use dialtone_sync::*;
use dialtone_tftp::digest::{client_response, Algorithm};
use dialtone_tftp::{ProvisionOptions, Provisioner, Shipped};
use tower::ServiceExt;

const FILE: &str = "/001565000044.cfg";
const USER: &str = "desk44";
const PASSWORD: &str = "hunter2!";

/// The fixture's data, provisioned by a node that holds another key.
fn node_with_another_key(f: &Fixture) -> Arc<Provisioner> {
    let other = SecretKey::parse(&"c3".repeat(32)).unwrap();
    Arc::new(Provisioner::new(
        f.mirror.clone(),
        other,
        Shipped::load(f._dir.path(), 1).unwrap(),
        ProvisionOptions {
            base_url: "http://prov.example.net".into(),
            ..Default::default()
        },
    ))
}

async fn status(
    node: &Arc<Provisioner>,
    secure: bool,
    from: &str,
    authorization: Option<&str>,
) -> StatusCode {
    let app = dialtone_tftp::http::router_with(node.clone(), secure)
        .layer(MockConnectInfo(from.parse::<SocketAddr>().unwrap()));
    let mut request = HttpRequest::get(FILE);
    if let Some(authorization) = authorization {
        request = request.header(header::AUTHORIZATION, authorization);
    }
    let response = app
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    response.status()
}

#[tokio::test]
async fn right_logins_to_an_unopened_password_never_ban_the_office() {
    let f = Fixture::new().await;
    f.write(&[Mutation::UpsertPhone(PhoneInput {
        tenant: "acme".into(),
        mac: "00:15:65:00:00:44".parse().unwrap(),
        family: Family::Yealink,
        model: Some("T46S".into()),
        label: None,
        variables: "{}".into(),
        http_user: Some(USER.into()),
        http_password: Some(PASSWORD.into()),
        lines: Vec::new(),
    })])
    .await;
    let node = node_with_another_key(&f);
    let office = "198.51.100.30:40000";
    let basic = {
        use base64::Engine;
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
        format!("Basic {encoded}")
    };
    // A Digest answer to a nonce of the node's own: what a phone sends
    // back after the challenge it got before the node's key went stale.
    let digest = client_response(
        "bm9uY2U",
        Algorithm::Sha256,
        "GET",
        FILE,
        (USER, PASSWORD),
        1,
        "c",
    );
    // Far past the guard's default allowance of login misses.
    for attempt in 0..40 {
        let asked = status(&node, false, office, None).await;
        assert_eq!(asked, StatusCode::INTERNAL_SERVER_ERROR, "#{attempt}");
        let over_tls = status(&node, true, office, Some(&basic)).await;
        assert_eq!(
            over_tls,
            StatusCode::INTERNAL_SERVER_ERROR,
            "#{attempt} Basic"
        );
        let answered = status(&node, false, office, Some(&digest)).await;
        assert_eq!(
            answered,
            StatusCode::INTERNAL_SERVER_ERROR,
            "#{attempt} Digest"
        );
    }
    assert_eq!(node.guard().banned_sources(), 0);
    assert_eq!(node.guard().tracked_sources(), 0, "misses were charged");
    // The node with the database's key serves the same office.
    let basic_ok = status(&f.provisioner, true, office, Some(&basic)).await;
    assert_eq!(basic_ok, StatusCode::OK);
}
