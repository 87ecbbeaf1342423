//! A database that takes a tenant's statements and does not answer them
//! (here a row lock held by another session) no longer holds the client
//! for as long: past `database.request_timeout_s` the request is answered
//! 503, a write as `outcome_unknown`, since the database may still make
//! it, and the work keeps its tenant's place until the database answers,
//! or for twice that deadline at most.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use dialtone_sync::store::StoreOptions;
use dialtone_sync::Backend;
use sqlx::Connection;

use super::{Harness, ACME_MAC};

const UPDATE: &str = r#"{"tenant": "acme", "family": "yealink", "model": "T46S", "label": "late", "lines": [{"extension": "200", "display_name": "Front", "registrar": "sip.example.net"}]}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_request_the_database_does_not_answer_is_answered_anyway() {
    let h = Harness::new(Backend::Postgres).await;
    h.database_share.answer_within(Duration::from_millis(500));
    let mut lock = sqlx::PgConnection::connect(&h._db.url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut lock).await.unwrap();
    sqlx::query(
        "SELECT 1 FROM phones WHERE tenant_id = (SELECT id FROM tenants WHERE slug = 'acme') \
         FOR UPDATE",
    )
    .execute(&mut lock)
    .await
    .unwrap();

    let path = format!("/v1/phones/{ACME_MAC}");
    let write = tokio::time::timeout(
        Duration::from_secs(30),
        h.call(Some("acme-admin"), Method::PUT, &path, Some(UPDATE), &[]),
    )
    .await
    .expect("the write was answered while the lock was held");
    assert_eq!(
        write.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        write.text
    );
    assert_eq!(
        write.json()["error"]["code"],
        "outcome_unknown",
        "{}",
        write.text
    );

    // Once the database answers, the write it was given is made: the
    // answer was right not to say "nothing was changed".
    sqlx::query("ROLLBACK").execute(&mut lock).await.unwrap();
    let mut made = false;
    for _ in 0..200 {
        let phone = h.get("acme-read", &path).await;
        if phone.status == StatusCode::OK && phone.json()["label"] == "late" {
            made = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(made, "the write the database was given was never made");
}

/// Work the database never answers (a statement on a connection that died
/// without a word: no error ever comes) gives its places back at its
/// ceiling, twice the answer's deadline. Before, such requests held their
/// tenant's share until restart: two took it for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_never_answered_gives_its_places_back_at_its_ceiling() {
    let h = Harness::new(Backend::Sqlite).await;
    // Long enough that the 429 below comes before the ceiling (twice this)
    // on a loaded machine; the test waits out the ceiling anyway.
    let within = Duration::from_millis(1500);
    h.database_share.answer_within(within);
    let app = axum::Router::new()
        .route(
            "/stuck",
            axum::routing::put(std::future::pending::<&'static str>),
        )
        .route("/quick", axum::routing::get(|| async { "done" }))
        .route_layer(axum::middleware::from_fn_with_state(
            h.state.clone(),
            crate::admin::database_share::admit,
        ))
        .with_state(h.state.clone());
    let call = |method: Method, path: &'static str| {
        let request = axum::http::Request::builder()
            .method(method)
            .uri(path)
            .header(
                "authorization",
                format!("Bearer {}", h.tokens["acme-admin"]),
            )
            .body(axum::body::Body::empty())
            .unwrap();
        tower::ServiceExt::oneshot(app.clone(), request)
    };

    let share = crate::admin::database_share::per_tenant(StoreOptions::default().max_connections);
    let stuck = futures::future::join_all((0..share).map(|_| call(Method::PUT, "/stuck"))).await;
    for answer in stuck {
        assert_eq!(answer.unwrap().status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    // Answered, the work still holds acme's share.
    let held = call(Method::GET, "/quick").await.unwrap();
    assert_eq!(held.status(), StatusCode::TOO_MANY_REQUESTS);

    let ceiling = crate::admin::database_share::work_ceiling(within);
    tokio::time::sleep(ceiling).await;
    let mut admitted = false;
    for _ in 0..200 {
        if call(Method::GET, "/quick").await.unwrap().status() == StatusCode::OK {
            admitted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(admitted, "acme's places never came back after the ceiling");
}
