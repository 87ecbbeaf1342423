//! Queued resyncs do not outlive the node: at shutdown each fails with a
//! reason and is counted, and one a request releases afterwards too.

use axum::http::{Method, StatusCode};
use dialtone_sync::Backend;
use tokio_util::sync::CancellationToken;

use super::super::Harness;
use crate::resync::track::State;

fn dropped(handle: &metrics_exporter_prometheus::PrometheusHandle) -> Option<f64> {
    handle.render().lines().find_map(|l| {
        l.strip_prefix(r#"dialtone_resync_failed_total{reason="dropped"} "#)?
            .parse()
            .ok()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_resyncs_are_dropped_and_counted_at_shutdown() {
    let h = Harness::new(Backend::Sqlite).await;
    let line = r#"[{"extension": "300", "display_name": "x", "registrar": "sip.example.net"}]"#;
    let phone = format!(
        r#"{{"mac": "001565000003", "tenant": "acme", "family": "yealink", "lines": {line}}}"#
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
    let ask = || {
        h.call(
            Some("acme-admin"),
            Method::POST,
            "/v1/tenants/acme/resync",
            None,
            &[],
        )
    };
    // The task is not run: both wait.
    let reply = ask().await;
    assert_eq!(reply.json()["queued"], 2, "{}", reply.text);

    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let n = metrics::with_local_recorder(&recorder, || h.resync.drop_queued());
    assert_eq!(n, 2);
    assert_eq!(dropped(&handle), Some(2.0));
    let all = h.resync.list(None, 10, |_| true);
    assert_eq!(all.len(), 2);
    for r in &all {
        assert_eq!(r.state, State::Failed, "{r:?}");
        assert!(
            r.reason
                .as_deref()
                .unwrap()
                .contains("not kept across a restart"),
            "{r:?}"
        );
    }

    // Released after the task stopped: answered as dropped, not left
    // "queued" for a sender that is gone.
    let reply = ask().await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    let body = reply.json();
    assert_eq!(body["queued"], 2, "{body}");
    assert!(
        body["resyncs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["state"] == "failed"),
        "{body}"
    );
    assert!(h
        .resync
        .list(None, 10, |_| true)
        .iter()
        .all(|r| r.state == State::Failed));
}

/// The task itself drops what waits when it is cancelled, and sends none
/// of it on the way out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_task_sends_nothing_more_and_drops_the_rest() {
    let h = Harness::new(Backend::Sqlite).await;
    let reply = h
        .call(
            Some("acme-admin"),
            Method::POST,
            "/v1/tenants/acme/resync",
            None,
            &[],
        )
        .await;
    assert_eq!(reply.json()["queued"], 1, "{}", reply.text);
    let cancel = CancellationToken::new();
    cancel.cancel();
    h.resync.clone().run(cancel).await;
    let newest = h.resync.list(None, 1, |_| true).remove(0);
    assert_eq!(newest.state, State::Failed);
    assert!(newest.sent_at.is_none(), "{newest:?}");
    assert!(
        newest.reason.unwrap().contains("shut down before its turn"),
        "dropped, not interrupted"
    );
}
