//! A tenant's resync leaves one audit row counting what it queued (not
//! what it asked for), with the first MACs queued; a request that queues
//! nothing new leaves none.

use axum::http::{Method, StatusCode};
use dialtone_sync::testing::build;
use dialtone_sync::{AuditQuery, Backend, Mutation};
use serde_json::Value;

use super::super::resync_limits::call_with;
use super::super::{seed_audit, Harness, ACME_MAC};
use super::queue_acme_phone_resync;
use crate::config::ResyncConfig;
use crate::resync::ResyncService;

/// Extra phones of acme's, each with a line to resync.
const MORE: u32 = 120;

async fn tenant_rows(h: &Harness) -> Vec<Value> {
    let rows = h
        .store
        .audit_log(&AuditQuery {
            entity: Some("tenant".into()),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    (rows.into_iter())
        .filter(|r| r.action == "resync")
        .map(|r| r.summary["detail"].clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_row_counts_what_was_queued() {
    let h = Harness::new(Backend::Sqlite).await;
    // Each with its own line-1 address: phones sharing one get one NOTIFY.
    let phones: Vec<_> = (0..MORE)
        .map(|n| {
            let Mutation::UpsertPhone(mut phone) = build::phone("acme", 0x1000 + n, 1) else {
                unreachable!("build::phone builds a phone");
            };
            phone.lines[0].extension = format!("{}", 1000 + n);
            Mutation::UpsertPhone(phone)
        })
        .collect();
    h.store.apply(&phones, &seed_audit()).await.unwrap();
    dialtone_sync::watcher::catch_up(&h.mirror, &*h.store)
        .await
        .unwrap();
    let lineless = r#"{"mac": "001565000005", "tenant": "acme", "family": "yealink"}"#;
    let reply = h
        .call(
            Some("global"),
            Method::POST,
            "/v1/phones",
            Some(lineless),
            &[],
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let ask = |path: &'static str| h.call(Some("acme-admin"), Method::POST, path, None, &[]);

    // Nothing sends (the service is not run): the phone waits.
    let one = format!("/v1/phones/{ACME_MAC}/resync");
    let reply = h
        .call(Some("acme-admin"), Method::POST, &one, None, &[])
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);

    let reply = ask("/v1/tenants/acme/resync").await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    let rows = tenant_rows(&h).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    let row = &rows[0];
    let count = |key: &str| row[key].as_u64();
    assert_eq!(
        (
            count("queued"),
            count("already_waiting"),
            count("skipped"),
            count("spaced"),
            count("deferred")
        ),
        (Some(u64::from(MORE)), Some(1), Some(1), Some(0), Some(0)),
        "{row}"
    );
    let macs = row["queued_macs"].as_array().unwrap();
    assert_eq!(macs.len(), 100, "the first 100 of {MORE}");
    assert_eq!(macs[0], "001565001000");
    assert!(
        !macs.iter().any(|m| m == ACME_MAC),
        "it was already waiting"
    );

    // Everything waits already: answered, nothing queued, no row; and
    // the answer counts as the row would.
    let audit = h.audit_rows().await;
    let reply = ask("/v1/tenants/acme/resync").await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    let body = reply.json();
    assert_eq!(
        (body["queued"].as_u64(), body["already_waiting"].as_u64()),
        (Some(0), Some(u64::from(MORE) + 1)),
        "{body}"
    );
    assert_eq!(
        body["resyncs"].as_array().map(Vec::len),
        Some(MORE as usize + 1)
    );
    assert_eq!(h.audit_rows().await, audit, "a row for nothing queued");

    // Past the tenant's room: what was deferred is counted, not queued.
    let small = ResyncService::new(
        &ResyncConfig {
            proxy: Some("127.0.0.1:9".into()),
            listen: "127.0.0.1:0".parse().unwrap(),
            tenant_queue: 5,
            ..Default::default()
        },
        h.store.clone(),
        None,
    )
    .unwrap();
    let (status, _, body) =
        call_with(&h, Some(small), Method::POST, "/v1/tenants/acme/resync").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let row = &tenant_rows(&h).await[0];
    assert_eq!(
        (row["queued"].as_u64(), row["deferred"].as_u64()),
        (Some(5), Some(u64::from(MORE) + 1 - 5)),
        "{row}"
    );
    assert_eq!(row["queued_macs"].as_array().map(Vec::len), Some(5));
}

/// A request whose audit row cannot be written (its token revoked on
/// another node, which this node's mirror has not seen yet) sends
/// nothing, and leaves neither a waiting resync nor a held place behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_row_is_refused_queues_nothing() {
    let h = Harness::new(Backend::Sqlite).await;
    let id = h
        .mirror
        .load()
        .token_by_hash(&dialtone_sync::token_hash(&h.tokens["acme-admin"]))
        .unwrap()
        .id;
    h.store
        .apply(
            &[dialtone_sync::Mutation::RevokeApiToken { id }],
            &seed_audit(),
        )
        .await
        .unwrap();
    let reply = h
        .call(
            Some("acme-admin"),
            Method::POST,
            "/v1/tenants/acme/resync",
            None,
            &[],
        )
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.text);
    assert!(h.resync.list(None, 10, |_| true).is_empty());
    // The phone is not "already waiting": the next request queues it.
    queue_acme_phone_resync(&h, "global").await;
    assert_eq!(tenant_rows(&h).await.len(), 0);
    assert_eq!(h.resync.list(None, 10, |_| true).len(), 1);
}
