//! One tenant cannot take the database pool from the others: it runs at
//! most its share of database-bound admin requests at once, and the rest
//! are refused at once (429) instead of queueing for a connection that
//! another tenant's request then cannot get.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use dialtone_sync::store::StoreOptions;
use dialtone_sync::Backend;
use sqlx::Connection;

use super::{Harness, Reply, ACME_MAC};

const UPDATE: &str = r#"{"tenant": "acme", "family": "yealink", "model": "T46S", "label": "held", "lines": [{"extension": "200", "display_name": "Front", "registrar": "sip.example.net"}]}"#;

const LOCK_WAITERS: &str = "SELECT count(*) FROM pg_stat_activity \
     WHERE datname = current_database() AND wait_event_type = 'Lock'";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_cannot_hold_every_pool_connection() {
    let h = Harness::new(Backend::Postgres).await;
    // As many of acme's requests as the harness's pool has connections.
    let pool = StoreOptions::default().max_connections as usize;
    // Stands in for slow statements: each write to acme's phone waits on
    // this row lock holding a pool connection, until the test lets go.
    let mut lock = sqlx::PgConnection::connect(&h._db.url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut lock).await.unwrap();
    sqlx::query(
        "SELECT 1 FROM phones WHERE tenant_id = (SELECT id FROM tenants WHERE slug = 'acme') \
         FOR UPDATE",
    )
    .execute(&mut lock)
    .await
    .unwrap();
    // Another connection: pg_stat_activity is read once per transaction.
    let mut watch = sqlx::PgConnection::connect(&h._db.url).await.unwrap();

    let path = format!("/v1/phones/{ACME_MAC}");
    let refused = AtomicUsize::new(0);
    let flood = futures::future::join_all((0..pool).map(|_| async {
        let reply = h
            .call(Some("acme-admin"), Method::PUT, &path, Some(UPDATE), &[])
            .await;
        if reply.status == StatusCode::TOO_MANY_REQUESTS {
            refused.fetch_add(1, Ordering::SeqCst);
        }
        reply
    }));
    let while_held = async {
        // Every one of acme's requests is either refused or blocked on the
        // lock with its connection.
        let mut settled = false;
        for _ in 0..600 {
            let waiting: i64 = sqlx::query_scalar(LOCK_WAITERS)
                .fetch_one(&mut watch)
                .await
                .unwrap();
            if waiting as usize + refused.load(Ordering::SeqCst) >= pool {
                settled = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let started = Instant::now();
        let other = tokio::time::timeout(
            Duration::from_secs(60),
            h.get("globex-admin", "/v1/audit?limit=5"),
        )
        .await;
        let waited = started.elapsed();
        // Held by tenant, not by token: acme's read token shares the cap.
        let same_tenant = h.get("acme-read", "/v1/audit?limit=5").await;
        let from_mirror = h.get("acme-read", "/v1/phones").await;
        sqlx::query("ROLLBACK").execute(&mut lock).await.unwrap();
        (settled, other, waited, same_tenant, from_mirror)
    };
    let (replies, (settled, other, waited, same_tenant, from_mirror)) =
        tokio::join!(flood, while_held);

    eprintln!("globex waited {waited:?} for its audit read");
    let other = other.expect("globex's read was answered");
    assert_eq!(
        other.status,
        StatusCode::OK,
        "globex was not served while acme held its requests (after {waited:?}): {}",
        other.text
    );
    assert!(settled, "acme's requests neither blocked nor were refused");
    let refusals: Vec<&Reply> = replies
        .iter()
        .filter(|r| r.status == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    assert!(!refusals.is_empty(), "acme ran {pool} writes at once");
    for refusal in refusals.iter().copied().chain([&same_tenant]) {
        assert_busy(refusal);
    }
    for reply in &replies {
        assert!(
            [
                StatusCode::OK,
                StatusCode::CONFLICT,
                StatusCode::TOO_MANY_REQUESTS
            ]
            .contains(&reply.status),
            "{} {}",
            reply.status,
            reply.text
        );
    }
    assert_eq!(from_mirror.status, StatusCode::OK, "{}", from_mirror.text);
    // The places came back: acme is served again.
    let after = h.get("acme-read", "/v1/audit?limit=5").await;
    assert_eq!(after.status, StatusCode::OK, "{}", after.text);
}

/// A refusal the client can act on: 429 at once, a reason and when to retry.
fn assert_busy(reply: &Reply) {
    assert_eq!(
        reply.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        reply.text
    );
    let body = reply.json();
    assert_eq!(body["error"]["code"], "busy", "{}", reply.text);
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("database"), "{message}");
    assert!(
        reply.headers.get("retry-after").is_some(),
        "no Retry-After: {:?}",
        reply.headers
    );
}
