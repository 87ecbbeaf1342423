//! A tenant runs at most `SOURCE_TESTS_PER_TENANT` source tests at once:
//! each may hold a connection to wherever the tenant's source points for
//! its whole timeout.

use axum::http::{Method, StatusCode};
use dialtone_sync::Backend;

use super::Harness;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_runs_at_most_two_source_tests_at_once() {
    let h = Harness::new(Backend::Sqlite).await;
    // Accepts and never answers: each test waits out its source's timeout.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (accepted_tx, mut accepted) = tokio::sync::mpsc::unbounded_channel();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
            let _ = accepted_tx.send(());
        }
    });
    let body = format!(
        r#"{{"name": "silent", "kind": "http", "settings": {{"url": "http://127.0.0.1:{port}/{{e164}}"}}, "timeout_ms": 2000}}"#
    );
    let created = h
        .call(
            Some("acme-admin"),
            Method::POST,
            "/v1/tenants/acme/directory-sources",
            Some(&body),
            &[],
        )
        .await;
    assert!(created.status.is_success(), "{}", created.text);
    let test = |tenant: &'static str, source: &'static str| {
        let path = format!("/v1/tenants/{tenant}/directory-sources/{source}/test");
        let role = if tenant == "acme" {
            "acme-admin"
        } else {
            "globex-admin"
        };
        let h = &h;
        async move { h.call(Some(role), Method::POST, &path, None, &[]).await }
    };
    let while_two_run = async {
        for _ in 0..2 {
            accepted.recv().await.expect("the two tests connect");
        }
        let third = test("acme", "silent").await;
        let other_tenant = test("globex", "cnam").await;
        (third, other_tenant)
    };
    let (first, second, (third, other_tenant)) = tokio::join!(
        test("acme", "silent"),
        test("acme", "silent"),
        while_two_run
    );
    assert_eq!(
        third.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        third.text
    );
    assert!(third.text.contains("source tests"), "{}", third.text);
    assert_eq!(other_tenant.status, StatusCode::OK, "{}", other_tenant.text);
    assert_eq!(
        (first.status, second.status),
        (StatusCode::OK, StatusCode::OK)
    );
    // Places come back when the tests end.
    assert_eq!(test("acme", "silent").await.status, StatusCode::OK);
    silent.abort();
}

/// A private network a global admin opens for one tenant's sources
/// (`settings.source_networks`) is that tenant's alone: another tenant's
/// source pointing at the same address is refused, as is everything the
/// node's own list leaves out. A tenant's token cannot open one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_opened_for_one_tenant_is_closed_to_the_others() {
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    let h = Harness::new(Backend::Sqlite).await;
    // A customer's CNAM service on its private network.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buf = [0u8; 2048];
            let _ = stream.read(&mut buf).await;
            let _ = stream
                .write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\nConnection: close\r\n\r\nAcme Desk",
                )
                .await;
        }
    });
    let source = format!(
        r#"{{"name": "private", "kind": "http", "settings": {{"url": "http://127.0.0.1:{port}/{{e164}}"}}, "timeout_ms": 2000}}"#
    );
    for (slug, role) in [("acme", "acme-admin"), ("globex", "globex-admin")] {
        let path = format!("/v1/tenants/{slug}/directory-sources");
        let created = h
            .call(Some(role), Method::POST, &path, Some(&source), &[])
            .await;
        assert!(created.status.is_success(), "{}", created.text);
    }
    let open = |role: &'static str, networks: serde_json::Value| {
        h.put_acme(
            role,
            serde_json::json!({"name": "Acme", "settings": {"source_networks": networks}}),
        )
    };
    let refused = open("global", serde_json::json!(["127.0.0.0/8", "nowhere"])).await;
    assert_eq!(
        refused.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        refused.text
    );
    assert!(refused.text.contains("source_networks"), "{}", refused.text);
    let by_tenant = open("acme-admin", serde_json::json!(["127.0.0.0/8"])).await;
    assert_eq!(by_tenant.status, StatusCode::OK, "{}", by_tenant.text);
    assert!(
        by_tenant.json()["settings"]["source_networks"].is_null(),
        "{}",
        by_tenant.text
    );

    // The node's own list opens public addresses only.
    let app = crate::admin::router(crate::admin::AdminState {
        source_networks: dialtone_directory::SourceNetworks::parse(&["public"])
            .unwrap()
            .shared(),
        ..h.state.clone()
    });
    let test = |slug: &'static str| {
        let request = Request::builder()
            .method(Method::POST)
            .uri(format!("/v1/tenants/{slug}/directory-sources/private/test"))
            .header("authorization", format!("Bearer {}", h.tokens["global"]))
            .body(Body::empty())
            .unwrap();
        let app = app.clone();
        async move {
            let response = app.oneshot(request).await.unwrap();
            let bytes = response.into_body().collect().await.unwrap().to_bytes();
            serde_json::from_slice::<serde_json::Value>(&bytes).unwrap()
        }
    };
    for slug in ["acme", "globex"] {
        let closed = test(slug).await;
        assert_eq!(closed["error"], "unreachable", "{slug}: {closed}");
    }
    let opened = open("global", serde_json::json!(["127.0.0.0/8"])).await;
    assert_eq!(opened.status, StatusCode::OK, "{}", opened.text);
    let acme = test("acme").await;
    assert_eq!(
        (&acme["outcome"], &acme["name"]),
        (&serde_json::json!("found"), &serde_json::json!("Acme Desk")),
        "{acme}"
    );
    let globex = test("globex").await;
    assert_eq!(globex["error"], "unreachable", "{globex}");
    server.abort();
}
