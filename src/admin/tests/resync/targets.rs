//! A NOTIFY's target, not only its phone, waits and is spaced: phones a
//! tenant gives one line-1 address get one NOTIFY between them, a resync
//! that failed spaces like one answered, and a failure is not watched for
//! a refetch.

use axum::http::{Method, StatusCode};
use dialtone_sync::testing::build;
use dialtone_sync::{Backend, Mutation};
use tokio_util::sync::CancellationToken;

use super::super::{seed_audit, Harness, ACME_MAC};
use super::{proxy, wait_for};

/// acme phones, each with line 1 `101@sip.example.net`.
const SHARING: u32 = 30;

fn sharing_phone(n: u32) -> Mutation {
    let Mutation::UpsertPhone(mut phone) = build::phone("acme", 0x2000 + n, 1) else {
        unreachable!("build::phone builds a phone");
    };
    phone.lines[0].extension = "101".into();
    // Spellings a proxy reads as the same address of record.
    if n % 3 == 1 {
        phone.lines[0].registrar = "SIP.example.net:5060".into();
    }
    Mutation::UpsertPhone(phone)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phones_sharing_a_line_1_address_get_one_notify() {
    let h = Harness::new(Backend::Sqlite).await;
    let phones: Vec<_> = (0..SHARING).map(sharing_phone).collect();
    h.store.apply(&phones, &seed_audit()).await.unwrap();
    dialtone_sync::watcher::catch_up(&h.mirror, &*h.store)
        .await
        .unwrap();
    let cancel = CancellationToken::new();
    tokio::spawn(h.resync.clone().run(cancel.clone()));
    let far = proxy(&h, &["200 OK"]);
    let ask = |path: &'static str| h.call(Some("acme-admin"), Method::POST, path, None, &[]);

    let reply = ask("/v1/tenants/acme/resync").await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    let body = reply.json();
    // ACME_MAC's own line, and one NOTIFY for the thirty.
    assert_eq!(
        (body["queued"].as_u64(), body["skipped"].as_u64()),
        (Some(2), Some(u64::from(SHARING) - 1)),
        "{body}"
    );
    let reasons = body["skipped_reasons"].as_array().unwrap();
    assert!(
        reasons.iter().all(|r| {
            let reason = r["reason"].as_str().unwrap();
            reason.contains("same line-1 address sip:101@sip.example.net is waiting")
        }),
        "{body}"
    );
    for r in body["resyncs"].as_array().unwrap() {
        wait_for(
            &h,
            &format!("/v1/resyncs?mac={}", r["mac"].as_str().unwrap()),
            |r| r["state"] == "answered",
        )
        .await;
    }

    // Sent: now the address is spaced, for every phone that has it.
    let again = ask("/v1/tenants/acme/resync").await.json();
    assert_eq!(again["queued"].as_u64(), Some(0), "{again}");
    let reasons = again["skipped_reasons"].as_array().unwrap();
    assert_eq!(reasons.len(), SHARING as usize + 1, "{again}");
    assert!(
        reasons.iter().any(|r| r["reason"]
            .as_str()
            .unwrap()
            .contains("a resync went to its line-1 address sip:101@sip.example.net")),
        "{again}"
    );
    let one = h
        .call(
            Some("acme-admin"),
            Method::POST,
            "/v1/phones/001565002005/resync",
            None,
            &[],
        )
        .await;
    assert_eq!(one.status, StatusCode::TOO_MANY_REQUESTS, "{}", one.text);
    assert!(one.headers.contains_key("retry-after"));

    cancel.cancel();
    let requests = far.await.unwrap();
    let calls: std::collections::BTreeSet<&str> = requests
        .iter()
        .filter_map(|r| r.lines().find(|l| l.starts_with("Call-ID:")))
        .collect();
    assert_eq!(calls.len(), 2, "one NOTIFY per address: {requests:?}");
}

/// A 404 is not a reason to ask again at once (nor to poll history for a
/// refetch): the phone is spaced as if answered, and its tenant told so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_resync_spaces_its_phone_and_is_not_watched() {
    let h = Harness::new(Backend::Sqlite).await;
    let cancel = CancellationToken::new();
    tokio::spawn(h.resync.clone().run(cancel.clone()));
    let far = proxy(&h, &["404 Not Found"]);
    let path = format!("/v1/phones/{ACME_MAC}/resync");
    let ask = || h.call(Some("acme-admin"), Method::POST, &path, None, &[]);
    let first = ask().await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.text);
    let list = format!("/v1/resyncs?mac={ACME_MAC}");
    let failed = wait_for(&h, &list, |r| r["state"] == "failed").await;
    assert_eq!(failed["status"], 404);
    assert_eq!(h.resync.watched(), 0, "a failed resync is watched");

    let again = ask().await;
    assert_eq!(
        again.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        again.text
    );
    let message = again.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(message.contains("failed (1 in a row)"), "{message}");
    let wait: u64 = again.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    cancel.cancel();
    far.abort();
}

/// A 2xx is watched until the refetch is seen, not longer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answered_resync_is_watched() {
    let h = Harness::new(Backend::Sqlite).await;
    let cancel = CancellationToken::new();
    tokio::spawn(h.resync.clone().run(cancel.clone()));
    let far = proxy(&h, &["200 OK"]);
    let path = format!("/v1/phones/{ACME_MAC}/resync");
    let reply = h
        .call(Some("acme-admin"), Method::POST, &path, None, &[])
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    let list = format!("/v1/resyncs?mac={ACME_MAC}");
    wait_for(&h, &list, |r| r["state"] == "answered").await;
    // Taken out for each poll and put back: seen between two.
    let mut watched = 0;
    for _ in 0..40 {
        watched = h.resync.watched();
        if watched == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(watched, 1);
    cancel.cancel();
    far.abort();
}

/// A queued phone whose line is changed to another's address before its
/// turn is not sent a second NOTIFY to that address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_changed_while_queued_does_not_double_an_address() {
    let h = Harness::new(Backend::Sqlite).await;
    let line = |extension: &str| {
        format!(
            r#"[{{"extension": "{extension}", "display_name": "x", "registrar": "sip.example.net"}}]"#
        )
    };
    let phone = format!(
        r#"{{"mac": "001565000003", "tenant": "acme", "family": "yealink", "lines": {}}}"#,
        line("300")
    );
    let reply = h
        .call(
            Some("global"),
            Method::POST,
            "/v1/phones",
            Some(&phone),
            &[],
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    // The task is not run yet: both wait, each with its own address.
    let reply = h
        .call(
            Some("acme-admin"),
            Method::POST,
            "/v1/tenants/acme/resync",
            None,
            &[],
        )
        .await;
    assert_eq!(reply.json()["queued"], 2, "{}", reply.text);
    let moved = format!(
        r#"{{"tenant": "acme", "family": "yealink", "lines": {}}}"#,
        line("200")
    );
    let reply = h
        .call(
            Some("acme-admin"),
            Method::PUT,
            "/v1/phones/001565000003",
            Some(&moved),
            &[],
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);

    let cancel = CancellationToken::new();
    let far = proxy(&h, &["200 OK"]);
    tokio::spawn(h.resync.clone().run(cancel.clone()));
    let done = wait_for(&h, "/v1/resyncs?mac=001565000003", |r| {
        r["state"] == "failed"
    })
    .await;
    let reason = done["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("not sent: line 1 changed to sip:200@sip.example.net"),
        "{done}"
    );
    wait_for(&h, &format!("/v1/resyncs?mac={ACME_MAC}"), |r| {
        r["state"] == "answered"
    })
    .await;
    cancel.cancel();
    let requests = far.await.unwrap();
    let calls: std::collections::BTreeSet<&str> = requests
        .iter()
        .filter_map(|r| r.lines().find(|l| l.starts_with("Call-ID:")))
        .collect();
    assert_eq!(calls.len(), 1, "{requests:?}");
}
