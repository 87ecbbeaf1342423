//! A database that takes a tenant's statements and does not answer them
//! (here a row lock held by another session) no longer holds the client
//! for as long: past `database.request_timeout_s` the request is answered
//! 503, a write as `outcome_unknown`, since the database may still make
//! it, and the work keeps its tenant's place until the database answers.

use std::time::Duration;

use axum::http::{Method, StatusCode};
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
