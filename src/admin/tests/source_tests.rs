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
