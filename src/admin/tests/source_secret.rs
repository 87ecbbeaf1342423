//! A stored secret stays with the server it was set for: a write that
//! leaves it out and points the source elsewhere (another host, port or
//! scheme, another kind, another CA, another way of sending it) is refused
//! until the secret is given again, so whoever can edit a source cannot
//! collect a secret someone else set on a server of their choosing.

use axum::http::{Method, StatusCode};
use dialtone_sync::Backend;

use super::Harness;

const PATH: &str = "/v1/tenants/acme/directory-sources/cnam";

fn body(url: &str, secret: Option<&str>) -> String {
    let mut body = serde_json::json!({"kind": "http", "settings": {"url": url}, "timeout_ms": 200});
    if let Some(secret) = secret {
        body["secret"] = secret.into();
    }
    body.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_secret_is_not_carried_to_another_server() {
    let h = Harness::new(Backend::Sqlite).await;
    let h = &h;
    let put = |body: String| async move {
        h.call(Some("acme-admin"), Method::PUT, PATH, Some(&body), &[])
            .await
    };
    for elsewhere in [
        "http://127.0.0.2:9/cnam/{e164}",
        "http://127.0.0.1:8080/cnam/{e164}",
        "https://127.0.0.1:9/cnam/{e164}",
    ] {
        let refused = put(body(elsewhere, None)).await;
        assert_eq!(
            refused.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{elsewhere}: {}",
            refused.text
        );
        assert!(refused.text.contains("secret"), "{}", refused.text);
    }
    let shown = h.get("acme-read", PATH).await;
    assert_eq!(
        shown.json()["settings"]["url"],
        "http://127.0.0.1:9/cnam/{e164}"
    );
    assert_eq!(shown.json()["has_secret"], true);

    // The same server, another path: the secret stays.
    let same = put(body("http://127.0.0.1:9/v2/{digits}", None)).await;
    assert_eq!(same.status, StatusCode::OK, "{}", same.text);
    assert_eq!(same.json()["has_secret"], true);
    // Given again, or removed, it may go anywhere allowed.
    let moved = put(body("http://127.0.0.2:9/cnam/{e164}", Some("new-secret"))).await;
    assert_eq!(moved.status, StatusCode::OK, "{}", moved.text);
    let removed = put(body("http://127.0.0.3:9/cnam/{e164}", Some(""))).await;
    assert_eq!(removed.status, StatusCode::OK, "{}", removed.text);
    assert_eq!(removed.json()["has_secret"], false);
    // Without a secret stored there is nothing to carry.
    let bare = put(body("http://127.0.0.4:9/cnam/{e164}", None)).await;
    assert_eq!(bare.status, StatusCode::OK, "{}", bare.text);
}

/// The same where this node's copy lags a write made elsewhere: a secret
/// set on another node meanwhile is not kept with the url this caller
/// writes, and a source made there with one is not written over by a
/// create.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_set_meanwhile_is_not_kept_with_another_url() {
    use dialtone_sync::store::DirectorySourceInput;
    use dialtone_sync::{Mutation, SourceKind};

    let h = Harness::new(Backend::Sqlite).await;
    let elsewhere = |name: &str| {
        Mutation::UpsertDirectorySource(DirectorySourceInput {
            tenant: "acme".into(),
            name: name.into(),
            kind: SourceKind::Http,
            priority: 10,
            enabled: true,
            settings: r#"{"url": "http://127.0.0.9:9/paid/{e164}"}"#.into(),
            secret: Some("PAID-KEY".into()),
            timeout_ms: 200,
        })
    };
    let seed = super::seed_audit();
    // Written on "another node": the store has it, this node's copy not.
    h.store.apply(&[elsewhere("cnam")], &seed).await.unwrap();
    let update = h
        .call(
            Some("acme-admin"),
            Method::PUT,
            PATH,
            Some(&body("http://127.0.0.1:9/v2/{e164}", None)),
            &[],
        )
        .await;
    assert_eq!(update.status, StatusCode::CONFLICT, "{}", update.text);

    h.store.apply(&[elsewhere("paid")], &seed).await.unwrap();
    let create = h
        .call(
            Some("acme-admin"),
            Method::POST,
            "/v1/tenants/acme/directory-sources",
            Some(r#"{"name": "paid", "kind": "http", "settings": {"url": "http://127.0.0.2:9/{e164}"}}"#),
            &[],
        )
        .await;
    assert_eq!(create.status, StatusCode::CONFLICT, "{}", create.text);
    dialtone_sync::watcher::catch_up(&h.mirror, &*h.store)
        .await
        .unwrap();
    let paid = h
        .get("acme-read", "/v1/tenants/acme/directory-sources/paid")
        .await;
    assert_eq!(
        paid.json()["settings"]["url"],
        "http://127.0.0.9:9/paid/{e164}"
    );
    assert_eq!(paid.json()["has_secret"], true, "{}", paid.text);
}
