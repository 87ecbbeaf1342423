//! A write answers once committed, even when this node's mirror cannot
//! show it at once (another catch-up holds the turn, or a reload runs).

use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use dialtone_sync::Backend;

use super::Harness;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_does_not_wait_for_ever_on_the_mirror() {
    let h = Harness::new(Backend::Sqlite).await;
    // Another catch-up that never ends holds the turn.
    let turn = h.mirror.lock_catch_up().await;
    let started = Instant::now();
    let reply = tokio::time::timeout(
        Duration::from_secs(60),
        h.call(
            Some("acme-admin"),
            Method::PUT,
            "/v1/tenants/acme",
            Some(r#"{"name": "Acme renamed"}"#),
            &[],
        ),
    )
    .await
    .expect("the write waited for the mirror");
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    eprintln!("answered in {:?}", started.elapsed());
    drop(turn);
}
