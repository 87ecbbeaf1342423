//! Resync routes: a NOTIFY reaches a loopback socket standing in for the
//! proxy and its answer is tracked; the queue bounds answer 429 and 503;
//! one tenant never resyncs or sees another's phones.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use dialtone_sync::store::BootRecord;
use dialtone_sync::Backend;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::{Harness, ACME_MAC, GLOBEX_MAC};

mod audit_row;
mod family;
mod many;
mod recheck;
mod shutdown;
mod stuck_read;
pub(super) mod support;
mod targets;

use support::queue_acme_phone_resync;

/// Answers each NOTIFY the fake proxy gets with `statuses`, in order,
/// and hands back the requests' text.
fn proxy(h: &Harness, statuses: &'static [&'static str]) -> tokio::task::JoinHandle<Vec<String>> {
    let socket = tokio::net::UdpSocket::from_std({
        let s = h.proxy.try_clone().unwrap();
        s.set_nonblocking(true).unwrap();
        s
    })
    .unwrap();
    tokio::spawn(async move {
        let mut seen = Vec::new();
        let mut buf = vec![0u8; 4096];
        while let Ok(Ok((n, from))) =
            tokio::time::timeout(Duration::from_secs(3), socket.recv_from(&mut buf)).await
        {
            let text = String::from_utf8_lossy(&buf[..n]).to_string();
            let via = text
                .lines()
                .find(|l| l.starts_with("Via:"))
                .unwrap()
                .to_string();
            for status in statuses {
                let answer = format!("SIP/2.0 {status}\r\n{via}\r\nCSeq: 1 NOTIFY\r\n\r\n");
                socket.send_to(answer.as_bytes(), from).await.unwrap();
            }
            seen.push(text);
        }
        seen
    })
}

/// Polls `/v1/resyncs` until `done` says yes of the first entry.
async fn wait_for(h: &Harness, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..200 {
        let list = h.get("global", path).await.json();
        let first = list["resyncs"][0].clone();
        if done(&first) {
            return first;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{path}: never done: {}", h.get("global", path).await.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_resync_is_sent_answered_and_its_refetch_seen() {
    let h = Harness::new(Backend::Sqlite).await;
    let cancel = CancellationToken::new();
    tokio::spawn(h.resync.clone().run(cancel.clone()));
    let far = proxy(&h, &["100 Trying", "200 OK"]);
    let reply = queue_acme_phone_resync(&h, "acme-admin").await;
    let queued = &reply.json()["resync"];
    assert_eq!(queued["state"], "queued");
    assert_eq!(queued["tenant"], "acme");
    // The AOR the shipped templates register: extension @ registrar.
    assert_eq!(queued["target"], "sip:200@sip.example.net");
    assert_eq!(queued["event"], "check-sync;reboot=false");
    assert_eq!(queued["via"], "proxy");
    let path = format!("/v1/resyncs?tenant=acme&mac={ACME_MAC}");
    let done = wait_for(&h, &path, |r| r["state"] == "answered").await;
    assert_eq!(done["id"], queued["id"]);
    assert_eq!(
        (done["status"].as_u64(), done["reason"].as_str()),
        (Some(200), Some("OK"))
    );
    assert!(done["sent_at"].as_i64().unwrap() <= done["answered_at"].as_i64().unwrap());
    assert!(done["refetched_at"].is_null());

    let acme = h.mirror.load().tenant_by_slug("acme").unwrap().id;
    let boot = |file: &str, at: i64| BootRecord {
        mac: ACME_MAC.into(),
        at,
        remote_ip: "192.0.2.7".into(),
        user_agent: None,
        protocol: "http".into(),
        file: file.into(),
        outcome: "ok".into(),
        bytes: 10,
        model: None,
        firmware: None,
        tenant_id: Some(acme),
    };
    let sent = done["sent_at"].as_i64().unwrap();
    h.store
        .record_boots(&[
            boot("y000000000028.cfg", sent + 1),
            boot(&format!("{ACME_MAC}.cfg"), sent + 2),
            boot(&format!("{ACME_MAC}.cfg"), sent + 3),
        ])
        .await
        .unwrap();
    let seen = wait_for(&h, &path, |r| !r["refetched_at"].is_null()).await;
    assert_eq!(seen["refetched_at"].as_i64(), Some(sent + 2));

    cancel.cancel();
    let requests = far.await.unwrap();
    // One NOTIFY (and, on a slow machine, its retransmissions).
    assert!(requests.iter().all(|r| r == &requests[0]), "{requests:?}");
    let notify = &requests[0];
    assert!(
        notify.starts_with("NOTIFY sip:200@sip.example.net SIP/2.0\r\n"),
        "{notify}"
    );
    for header in [
        "Event: check-sync;reboot=false\r\n",
        "CSeq: 1 NOTIFY\r\n",
        "Max-Forwards: 70\r\n",
        "Subscription-State: terminated\r\n",
        "Content-Length: 0\r\n",
    ] {
        assert!(notify.contains(header), "{header} missing: {notify}");
    }
    // Asked by a token: one audit row names the phone.
    let audit = h.get("global", "/v1/audit?entity=phone").await.json();
    let row = &audit["items"][0];
    assert_eq!(
        (row["action"].as_str(), row["entity_key"].as_str()),
        (Some("resync"), Some(ACME_MAC)),
        "{audit}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_or_unanswered_notify_fails_with_its_reason() {
    let h = Harness::new(Backend::Sqlite).await;
    let cancel = CancellationToken::new();
    tokio::spawn(h.resync.clone().run(cancel.clone()));
    let far = proxy(&h, &["404 Not Found"]);
    let reply = h
        .call(
            Some("global"),
            Method::POST,
            "/v1/tenants/acme/resync",
            None,
            &[],
        )
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    assert_eq!(reply.json()["queued"], 1);
    let done = wait_for(&h, "/v1/resyncs", |r| r["state"] == "failed").await;
    assert_eq!(
        (done["status"].as_u64(), done["reason"].as_str()),
        (Some(404), Some("Not Found"))
    );
    far.abort();

    // Nobody answers now: Timer F (64 x 20 ms) ends it.
    let reply = h
        .call(
            Some("global"),
            Method::POST,
            &format!("/v1/phones/{GLOBEX_MAC}/resync"),
            None,
            &[],
        )
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    let path = format!("/v1/resyncs?mac={GLOBEX_MAC}");
    let done = wait_for(&h, &path, |r| r["state"] == "failed").await;
    assert!(done["status"].is_null());
    assert_eq!(done["reason"], "no answer (timer F)");
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_never_resyncs_or_sees_another_tenants_phones() {
    let h = Harness::new(Backend::Sqlite).await;
    for (role, method, path, body) in [
        (
            "acme-admin",
            Method::POST,
            format!("/v1/phones/{GLOBEX_MAC}/resync"),
            None,
        ),
        (
            "acme-admin",
            Method::POST,
            "/v1/tenants/globex/resync".to_string(),
            None,
        ),
        // One foreign MAC in the list refuses the whole request, as unknown.
        (
            "acme-admin",
            Method::POST,
            "/v1/tenants/acme/resync".to_string(),
            Some(format!(r#"{{"macs": ["{ACME_MAC}", "{GLOBEX_MAC}"]}}"#)),
        ),
        (
            "acme-admin",
            Method::GET,
            "/v1/resyncs?tenant=globex".to_string(),
            None,
        ),
    ] {
        let before = h.audit_rows().await;
        let reply = h
            .call(Some(role), method.clone(), &path, body.as_deref(), &[])
            .await;
        assert_eq!(
            reply.status,
            StatusCode::NOT_FOUND,
            "{method} {path}: {}",
            reply.text
        );
        assert_eq!(
            h.audit_rows().await,
            before,
            "{method} {path} left an audit row"
        );
    }
    let reply = h
        .call(
            Some("global"),
            Method::POST,
            "/v1/tenants/globex/resync",
            None,
            &[],
        )
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    let reply = h
        .call(
            Some("acme-admin"),
            Method::POST,
            "/v1/tenants/acme/resync",
            Some(r#"{"family": "yealink"}"#),
            &[],
        )
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    for role in ["acme-admin", "acme-read"] {
        let list = h.get(role, "/v1/resyncs").await;
        assert!(
            !list.text.contains(GLOBEX_MAC) && list.text.contains(ACME_MAC),
            "{}",
            list.text
        );
    }
    let all = h.get("global", "/v1/resyncs").await.json();
    assert_eq!(all["resyncs"].as_array().unwrap().len(), 2);
    assert_eq!(all["resyncs"][0]["tenant"], "acme", "newest first");
    // Bad input is a 4xx with a reason.
    for (body, status) in [
        (r#"{"family": "nokia"}"#, StatusCode::UNPROCESSABLE_ENTITY),
        (r#"{"macs": ["zz"]}"#, StatusCode::BAD_REQUEST),
        (r#"{"colour": "red"}"#, StatusCode::UNPROCESSABLE_ENTITY),
        ("[", StatusCode::UNPROCESSABLE_ENTITY),
    ] {
        let reply = h
            .call(
                Some("acme-admin"),
                Method::POST,
                "/v1/tenants/acme/resync",
                Some(body),
                &[],
            )
            .await;
        assert_eq!(reply.status, status, "{body}: {}", reply.text);
        assert!(reply.json()["error"]["message"].is_string());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phones_without_a_line_are_skipped_with_a_reason() {
    let h = Harness::new(Backend::Sqlite).await;
    let reply = h
        .call(
            Some("global"),
            Method::POST,
            "/v1/phones",
            Some(r#"{"mac": "001565000003", "tenant": "acme", "family": "yealink"}"#),
            &[],
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let reply = h
        .call(
            Some("acme-admin"),
            Method::POST,
            "/v1/tenants/acme/resync",
            None,
            &[],
        )
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    let body = reply.json();
    assert_eq!(
        (body["queued"].as_u64(), body["skipped"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(body["skipped_reasons"][0]["mac"], "001565000003");
    assert_eq!(
        body["skipped_reasons"][0]["reason"],
        "the phone has no line"
    );
    let reply = h
        .call(
            Some("acme-admin"),
            Method::POST,
            "/v1/phones/001565000003/resync",
            None,
            &[],
        )
        .await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.text
    );
}

/// A NOTIFY goes only to a domain a global admin gave the tenant: a tenant
/// that points its own phone's line at another domain (another tenant's,
/// or any host) gets a reason, not a NOTIFY, and cannot add the domain to
/// its own settings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notify_goes_only_to_the_tenants_own_sip_domains() {
    let h = Harness::new(Backend::Sqlite).await;
    let call = |role: &'static str, method: Method, path: &str, body: &'static str| {
        let (h, path) = (&h, path.to_string());
        let body = (!body.is_empty()).then_some(body);
        async move { h.call(Some(role), method, &path, body, &[]).await }
    };
    let reply = call(
        "acme-admin",
        Method::POST,
        "/v1/phones",
        r#"{"mac": "001565000003", "tenant": "acme", "family": "yealink",
            "lines": [{"extension": "300", "display_name": "x", "registrar": "globex.example.net:5060"}]}"#,
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let reply = call(
        "acme-admin",
        Method::POST,
        "/v1/phones/001565000003/resync",
        "",
    )
    .await;
    assert_eq!(
        (reply.status, reply.json()["error"]["message"].as_str()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("phone 001565000003: line 1's registrar globex.example.net is not one of the tenant's SIP domains")
        ),
        "{}",
        reply.text
    );
    let reply = call("acme-admin", Method::POST, "/v1/tenants/acme/resync", "{}").await;
    let body = reply.json();
    assert_eq!(
        (
            body["queued"].as_u64(),
            body["skipped_reasons"][0]["mac"].as_str()
        ),
        (Some(1), Some("001565000003")),
        "{body}"
    );

    // The tenant's own token cannot add a domain; the stored list stays.
    let reply = call(
        "acme-admin",
        Method::PUT,
        "/v1/tenants/acme",
        r#"{"name": "acme Inc", "settings": {"sip_domains": ["globex.example.net"], "colour": "red"}}"#,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(
        reply.json()["settings"],
        serde_json::json!({"sip_domains": ["sip.example.net"], "colour": "red"})
    );
    let reply = call(
        "acme-admin",
        Method::POST,
        "/v1/phones/001565000003/resync",
        "",
    )
    .await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.text
    );

    // A global admin's list is checked, and an empty one stops every resync.
    for bad in [
        r#"{"name": "acme Inc", "settings": {"sip_domains": "sip.example.net"}}"#,
        r#"{"name": "acme Inc", "settings": {"sip_domains": ["sip:sip.example.net"]}}"#,
        r#"{"name": "acme Inc", "settings": {"sip_domains": ["sip.example.net:0"]}}"#,
    ] {
        let reply = call("global", Method::PUT, "/v1/tenants/acme", bad).await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{bad}: {}",
            reply.text
        );
    }
    let reply = call(
        "global",
        Method::PUT,
        "/v1/tenants/acme",
        r#"{"name": "acme Inc", "settings": {"sip_domains": []}}"#,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let reply = call(
        "acme-admin",
        Method::POST,
        &format!("/v1/phones/{ACME_MAC}/resync"),
        "",
    )
    .await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.text
    );
    assert!(reply.text.contains("no SIP domains"), "{}", reply.text);
}

/// A phone sent a resync is not sent another for `phone_spacing_s` (60 s
/// by default): asked again, the one phone is 429 with Retry-After and no
/// audit row, and a tenant's request lists it as skipped (and, having
/// queued nothing, leaves no row either). One NOTIFY goes
/// out, however often it is asked for; another phone is not held up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_sent_a_resync_is_not_sent_another_within_the_spacing() {
    let h = Harness::new(Backend::Sqlite).await;
    let cancel = CancellationToken::new();
    tokio::spawn(h.resync.clone().run(cancel.clone()));
    let far = proxy(&h, &["200 OK"]);
    let phone = format!("/v1/phones/{ACME_MAC}/resync");
    let ask = |who: &'static str, path: String| {
        let h = &h;
        async move { h.call(Some(who), Method::POST, &path, None, &[]).await }
    };
    let first = ask("acme-admin", phone.clone()).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.text);
    let path = format!("/v1/resyncs?mac={ACME_MAC}");
    wait_for(&h, &path, |r| r["state"] == "answered").await;

    for who in ["acme-admin", "global"] {
        let again = ask(who, phone.clone()).await;
        assert_eq!(
            again.status,
            StatusCode::TOO_MANY_REQUESTS,
            "{}",
            again.text
        );
        let body = again.json();
        assert_eq!(body["error"]["code"], "too_soon", "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("sent a resync") && message.contains("at most one every 60 s"),
            "{message}"
        );
        let wait: u64 = again.headers["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=60).contains(&wait), "{wait}");
    }
    let many = ask("acme-admin", "/v1/tenants/acme/resync".into()).await;
    assert_eq!(many.status, StatusCode::ACCEPTED, "{}", many.text);
    let many = many.json();
    assert_eq!(
        (many["queued"].as_u64(), many["skipped"].as_u64()),
        (Some(0), Some(1)),
        "{many}"
    );
    assert_eq!(many["skipped_reasons"][0]["mac"], ACME_MAC);
    assert!(many["skipped_reasons"][0]["reason"]
        .as_str()
        .unwrap()
        .starts_with("not queued: sent a resync"));

    // Another phone goes out at once.
    let other = ask("global", format!("/v1/phones/{GLOBEX_MAC}/resync")).await;
    assert_eq!(other.status, StatusCode::ACCEPTED, "{}", other.text);
    wait_for(&h, &format!("/v1/resyncs?mac={GLOBEX_MAC}"), |r| {
        r["state"] == "answered"
    })
    .await;
    cancel.cancel();
    let requests = far.await.unwrap();
    let calls: std::collections::BTreeSet<&str> = requests
        .iter()
        .filter_map(|r| r.lines().find(|l| l.starts_with("Call-ID:")))
        .collect();
    assert_eq!(calls.len(), 2, "one NOTIFY per phone: {requests:?}");
    // The refused asks left no audit row, nor did the tenant's request,
    // which queued nothing.
    let audit = h.get("global", "/v1/audit").await.json();
    let resyncs = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "resync")
        .count();
    assert_eq!(resyncs, 2, "{audit}");
}
