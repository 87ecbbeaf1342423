use super::*;
use crate::resync::sip;
use std::sync::Arc;

const TIMERS: Timers = Timers {
    t1: Duration::from_millis(20),
    t2: Duration::from_millis(80),
};

async fn setup() -> (Arc<Transport>, UdpSocket, CancellationToken) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let transport = Arc::new(Transport::new(socket));
    let cancel = CancellationToken::new();
    let (t, c) = (transport.clone(), cancel.clone());
    tokio::spawn(async move { t.receive(c).await });
    let far = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    (transport, far, cancel)
}

fn request(local: SocketAddr, branch: &str) -> Vec<u8> {
    sip::Notify {
        aor: "sip:1001@sip.example.net",
        event: "check-sync",
        local,
        branch,
        from_domain: "sip.example.net",
        from_tag: "t",
        call_id: "c",
    }
    .to_bytes()
}

fn answer(status: &str, branch: &str) -> Vec<u8> {
    format!("SIP/2.0 {status}\r\nVia: SIP/2.0/UDP 127.0.0.1;branch={branch};rport=1\r\nCSeq: 1 NOTIFY\r\nContent-Length: 0\r\n\r\n").into_bytes()
}

#[tokio::test]
async fn a_trying_then_ok_ends_answered_after_retransmissions_at_t2() {
    let (transport, far, _cancel) = setup().await;
    let dest = far.local_addr().unwrap();
    let local = transport.local_addr().unwrap();
    let phone = tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        let (n, from) = far.recv_from(&mut buf).await.unwrap();
        let text = String::from_utf8_lossy(&buf[..n]).to_string();
        far.send_to(&answer("100 Trying", "z9hG4bKa"), from)
            .await
            .unwrap();
        // Proceeding: retransmissions keep coming, T2 apart.
        let (_, _) = far.recv_from(&mut buf).await.unwrap();
        let t = Instant::now();
        let (_, _) = far.recv_from(&mut buf).await.unwrap();
        let gap = t.elapsed();
        // Someone else's answer, then ours.
        far.send_to(&answer("500 Other", "z9hG4bKother"), from)
            .await
            .unwrap();
        far.send_to(&answer("200 OK", "z9hG4bKa"), from)
            .await
            .unwrap();
        (text, gap)
    });
    let mut provisional = 0;
    let outcome = transport
        .request(
            dest,
            "z9hG4bKa",
            &request(local, "z9hG4bKa"),
            TIMERS,
            || provisional += 1,
        )
        .await;
    assert_eq!(
        outcome,
        Outcome::Final {
            status: 200,
            reason: "OK".into()
        }
    );
    assert_eq!(provisional, 1);
    let (text, gap) = phone.await.unwrap();
    assert!(text.starts_with("NOTIFY sip:1001@sip.example.net SIP/2.0\r\n"));
    assert!(gap >= Duration::from_millis(60), "{gap:?}");
    assert_eq!(transport.in_flight(), 0);
}

#[tokio::test]
async fn a_final_error_is_kept_with_its_reason() {
    let (transport, far, _cancel) = setup().await;
    let dest = far.local_addr().unwrap();
    let local = transport.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        let (_, from) = far.recv_from(&mut buf).await.unwrap();
        far.send_to(&answer("404 Not Found", "z9hG4bKb"), from)
            .await
            .unwrap();
    });
    let outcome = transport
        .request(dest, "z9hG4bKb", &request(local, "z9hG4bKb"), TIMERS, || {})
        .await;
    assert_eq!(
        outcome,
        Outcome::Final {
            status: 404,
            reason: "Not Found".into()
        }
    );
}

#[tokio::test]
async fn silence_ends_at_timer_f_after_doubling_retransmissions() {
    let (transport, far, _cancel) = setup().await;
    let dest = far.local_addr().unwrap();
    let local = transport.local_addr().unwrap();
    let counter = tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        let mut at = Vec::new();
        while let Ok(Ok(_)) =
            tokio::time::timeout(Duration::from_millis(500), far.recv_from(&mut buf)).await
        {
            at.push(Instant::now());
        }
        at
    });
    let start = Instant::now();
    let outcome = transport
        .request(dest, "z9hG4bKc", &request(local, "z9hG4bKc"), TIMERS, || {})
        .await;
    let took = start.elapsed();
    assert_eq!(outcome, Outcome::Timeout);
    assert!(took >= TIMERS.t1 * 64, "{took:?}");
    let at = counter.await.unwrap();
    // E: 20, 40, 80, then every 80 ms up to F at 1280 ms: 1 + 3 + 14ish.
    assert!((12..=20).contains(&at.len()), "{} sends", at.len());
    let first_gap = at[1] - at[0];
    let later_gap = at[5] - at[4];
    assert!(first_gap < later_gap, "{first_gap:?} vs {later_gap:?}");
    assert_eq!(transport.in_flight(), 0);
}

/// The proxy's addresses are watched: one whose NOTIFY went unanswered
/// says so, an answered one does not, and nothing else is counted.
#[tokio::test]
async fn unanswered_transactions_are_counted_for_watched_destinations() {
    const QUICK: Timers = Timers {
        t1: Duration::from_millis(2),
        t2: Duration::from_millis(8),
    };
    let (transport, far, _cancel) = setup().await;
    let silent = far.local_addr().unwrap();
    let unwatched = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let unwatched = unwatched.local_addr().unwrap();
    let answering = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let answers = answering.local_addr().unwrap();
    let local = transport.local_addr().unwrap();
    transport.watch(&[silent, answers]);
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        let (_, from) = answering.recv_from(&mut buf).await.unwrap();
        answering
            .send_to(&answer("200 OK", "z9hG4bKok"), from)
            .await
            .unwrap();
    });
    for (dest, branch) in [
        (silent, "z9hG4bKs"),
        (unwatched, "z9hG4bKu"),
        (answers, "z9hG4bKok"),
    ] {
        transport
            .request(dest, branch, &request(local, branch), QUICK, || {})
            .await;
    }
    assert_eq!(transport.unanswered(silent), 1);
    assert_eq!(transport.unanswered(unwatched), 0);
    assert_eq!(transport.unanswered(answers), 0);
    transport.watch(&[answers]);
    assert_eq!(transport.unanswered(silent), 0);
}

/// A forger who learned the branch answers first, from another address
/// and from another port of the proxy's: both are dropped and counted,
/// and the transaction ends with the proxy's own answer.
#[tokio::test]
async fn answers_from_elsewhere_than_the_request_went_are_dropped() {
    let (transport, _far, _cancel) = setup().await;
    let proxy = UdpSocket::bind("127.0.0.2:0").await.unwrap();
    let dest = proxy.local_addr().unwrap();
    let forgers = [
        UdpSocket::bind("127.0.0.3:0").await.unwrap(),
        UdpSocket::bind("127.0.0.2:0").await.unwrap(),
    ];
    let local = transport.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        let (_, from) = proxy.recv_from(&mut buf).await.unwrap();
        for forger in &forgers {
            forger
                .send_to(&answer("486 Forged", "z9hG4bKf"), from)
                .await
                .unwrap();
        }
        // The forgeries are read before the proxy's answer leaves.
        tokio::time::sleep(Duration::from_millis(50)).await;
        proxy
            .send_to(&answer("200 OK", "z9hG4bKf"), from)
            .await
            .unwrap();
    });
    let outcome = transport
        .request(dest, "z9hG4bKf", &request(local, "z9hG4bKf"), TIMERS, || {})
        .await;
    assert_eq!(
        outcome,
        Outcome::Final {
            status: 200,
            reason: "OK".into()
        }
    );
    assert_eq!(transport.wrong_source(), 2);
}

fn dropped_wrong_source(handle: &metrics_exporter_prometheus::PrometheusHandle) -> Option<f64> {
    handle.render().lines().find_map(|l| {
        l.strip_prefix(r#"dialtone_resync_answers_dropped_total{reason="wrong_source"} "#)?
            .parse()
            .ok()
    })
}

/// A proxy answering from another of its addresses loses every answer:
/// the operator sees it in the metric. The recorder is this thread's,
/// which the current-thread runtime runs the receiving task on.
#[tokio::test(flavor = "current_thread")]
async fn answers_from_elsewhere_are_counted_in_the_metric() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let _recording = metrics::set_default_local_recorder(&recorder);
    let (transport, _far, _cancel) = setup().await;
    let proxy = UdpSocket::bind("127.0.0.2:0").await.unwrap();
    let dest = proxy.local_addr().unwrap();
    let other_address = UdpSocket::bind("127.0.0.3:0").await.unwrap();
    let local = transport.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        let (_, from) = proxy.recv_from(&mut buf).await.unwrap();
        for _ in 0..3 {
            other_address
                .send_to(&answer("200 OK", "z9hG4bKm"), from)
                .await
                .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        proxy
            .send_to(&answer("200 OK", "z9hG4bKm"), from)
            .await
            .unwrap();
    });
    transport
        .request(dest, "z9hG4bKm", &request(local, "z9hG4bKm"), TIMERS, || {})
        .await;
    assert_eq!(transport.wrong_source(), 3);
    assert_eq!(dropped_wrong_source(&handle), Some(3.0));
}

#[tokio::test]
async fn answers_from_elsewhere_are_logged_once_a_minute() {
    let (transport, _far, _cancel) = setup().await;
    assert_eq!(transport.may_log_wrong_source(), Some(0));
    assert_eq!(transport.may_log_wrong_source(), None);
    assert_eq!(transport.may_log_wrong_source(), None);
    let a_minute_ago = Instant::now().checked_sub(WRONG_SOURCE_LOG_EVERY).unwrap();
    transport.wrong_source_logged.lock().unwrap().0 = Some(a_minute_ago);
    assert_eq!(transport.may_log_wrong_source(), Some(2));
    assert_eq!(transport.may_log_wrong_source(), None);
}

/// Only forgeries come: the transaction runs on to Timer F, the proxy's
/// silence counted as such, and no forged status or reason is kept.
#[tokio::test]
async fn a_forged_final_alone_leaves_the_transaction_unanswered() {
    const QUICK: Timers = Timers {
        t1: Duration::from_millis(2),
        t2: Duration::from_millis(8),
    };
    let (transport, _far, _cancel) = setup().await;
    let proxy = UdpSocket::bind("127.0.0.2:0").await.unwrap();
    let dest = proxy.local_addr().unwrap();
    let forger = UdpSocket::bind("127.0.0.3:0").await.unwrap();
    let local = transport.local_addr().unwrap();
    transport.watch(&[dest]);
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        let (_, from) = proxy.recv_from(&mut buf).await.unwrap();
        forger
            .send_to(&answer("486 Busy Here, call 555-0100", "z9hG4bKg"), from)
            .await
            .unwrap();
        // Held, so the proxy's port stays bound and silent.
        tokio::time::sleep(Duration::from_secs(2)).await;
        drop(proxy);
    });
    let outcome = transport
        .request(dest, "z9hG4bKg", &request(local, "z9hG4bKg"), QUICK, || {})
        .await;
    assert_eq!(outcome, Outcome::Timeout);
    assert_eq!(transport.wrong_source(), 1);
    assert_eq!(transport.unanswered(dest), 1);
}

#[test]
fn an_ipv4_mapped_sender_is_the_ipv4_address_it_maps() {
    let v4: SocketAddr = "192.0.2.7:5060".parse().unwrap();
    let mapped: SocketAddr = "[::ffff:192.0.2.7]:5060".parse().unwrap();
    assert!(same_endpoint(mapped, v4));
    assert!(!same_endpoint(mapped, "192.0.2.7:5061".parse().unwrap()));
    assert!(!same_endpoint(mapped, "192.0.2.8:5060".parse().unwrap()));
}
