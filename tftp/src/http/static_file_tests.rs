//! HTTP downloads of a static file on a disk that stopped answering (a
//! stall here stands for a hard NFS mount whose server is gone, or a FUSE
//! file system asleep in its read): they hold at most the budget of
//! reads, the rest are refused once no turn comes for a while, renders go
//! on, a client that hangs up gives its read back, and a read past its
//! deadline ends the download. One only slow holds no download back.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{header, Request, StatusCode};
use axum::response::Response;
use axum::Router;
use http_body_util::BodyExt;
use tower::ServiceExt;

use super::super::build;
use super::*;
use crate::provision::{ProvisionOptions, Provisioner};
use crate::statics::stalls::{Op, Stall};
use crate::templates::Shipped;

struct Fixture {
    _templates: tempfile::TempDir,
    statics: tempfile::TempDir,
    provisioner: Arc<Provisioner>,
}

fn firmware() -> Vec<u8> {
    (0..200_001u32).map(|i| (i * 7 % 253) as u8).collect()
}

fn fixture() -> Fixture {
    let templates = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(templates.path().join("yealink")).unwrap();
    std::fs::write(
        templates.path().join("yealink/{mac}.cfg.tera"),
        "label = {{ phone.label }}\n",
    )
    .unwrap();
    let statics = tempfile::tempdir().unwrap();
    std::fs::write(statics.path().join("fw.bin"), firmware()).unwrap();
    let provisioner = Arc::new(Provisioner::new(
        dialtone_sync::testing::build::mirror_of(crate::cache_tests::dataset()),
        dialtone_sync::testing::test_key(),
        Shipped::load(templates.path(), 1).unwrap(),
        ProvisionOptions::default(),
    ));
    assert_eq!(provisioner.reload_static(statics.path()).unwrap(), 1);
    Fixture {
        _templates: templates,
        statics,
        provisioner,
    }
}

fn budget(total: usize, per_source: usize) -> &'static ReadBudget {
    Box::leak(Box::new(ReadBudget::new(total, per_source)))
}

/// A runtime whose blocking pool has `threads` threads: what a hung read
/// on it takes, renders do not get.
fn runtime(threads: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(threads)
        .enable_all()
        .build()
        .unwrap()
}

/// Asks `router` for `path` from `from`, as a task of its own.
fn get(router: &Router, from: &str, path: &str) -> tokio::task::JoinHandle<Response> {
    let app = router
        .clone()
        .layer(MockConnectInfo(from.parse::<SocketAddr>().unwrap()));
    let request = Request::get(path).body(Body::empty()).unwrap();
    tokio::spawn(async move { app.oneshot(request).await.unwrap() })
}

/// The answer to `request`, which must come within `within`.
async fn answer(request: tokio::task::JoinHandle<Response>, within: Duration) -> Response {
    tokio::time::timeout(within, request)
        .await
        .expect("no answer in time")
        .unwrap()
}

async fn text(response: Response) -> String {
    let body = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}

/// Once, every download took a thread of tokio's blocking pool for as long
/// as its read hung: a few hundred of them and no render ran anywhere.
#[test]
fn a_hung_file_holds_only_the_read_budget_and_renders_go_on() {
    // The blocking pool is as large as the budget: before the fix the
    // hung opens took all of it.
    const BUDGET: usize = 4;
    runtime(BUDGET - 1).block_on(async {
        let f = fixture();
        let stall = Stall::new(&f.statics.path().join("fw.bin"), Op::Open);
        let router = build(
            f.provisioner.clone(),
            false,
            Reads::with(budget(BUDGET, 2), Duration::from_secs(60)),
        );
        let mut hung = Vec::new();
        for (n, from) in ["192.0.2.1:5060", "192.0.2.1:5061", "192.0.2.2:5060"]
            .into_iter()
            .enumerate()
        {
            hung.push(get(&router, from, "/fw.bin"));
            assert_eq!(stall.until_waiting(n + 1), n + 1, "{from}'s open");
        }
        // Another phone's config, not cached yet: its render needs a
        // blocking thread.
        let config = answer(
            get(&router, "192.0.2.9:5060", "/001565000002.cfg"),
            Duration::from_secs(10),
        )
        .await;
        assert_eq!(config.status(), StatusCode::OK);
        assert_eq!(text(config).await, "label = back\n");
        // Past the source's share (192.0.2.1 holds two reads), then past
        // the whole budget: refused once no turn comes in `OPEN_WAIT`,
        // saying why and when to retry.
        let refused = answer(
            get(&router, "192.0.2.1:5062", "/fw.bin"),
            OPEN_WAIT + Duration::from_secs(5),
        )
        .await;
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(refused.headers()[header::RETRY_AFTER], "5");
        assert!(text(refused).await.contains("this address's share"));
        hung.push(get(&router, "192.0.2.2:5061", "/fw.bin"));
        assert_eq!(stall.until_waiting(BUDGET), BUDGET);
        let refused = answer(
            get(&router, "192.0.2.3:5060", "/fw.bin"),
            OPEN_WAIT + Duration::from_secs(5),
        )
        .await;
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(text(refused).await.contains("every static-file read"));
        assert_eq!(stall.waiting(), BUDGET, "threads held by the hung file");
        // The clients hang up; their reads come back once the disk does.
        for request in hung {
            request.abort();
            let _ = request.await;
        }
        drop(stall);
        let served = loop {
            let response = answer(
                get(&router, "192.0.2.3:5060", "/fw.bin"),
                Duration::from_secs(10),
            )
            .await;
            if response.status() != StatusCode::SERVICE_UNAVAILABLE {
                break response;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        assert_eq!(served.status(), StatusCode::OK);
        assert_eq!(served.headers()[header::CONTENT_LENGTH], "200001");
        let body = served.into_body().collect().await.unwrap().to_bytes();
        assert!(body.to_vec() == firmware(), "{} bytes", body.len());
    });
}

/// Once, a download found its source's share of reads taken and was
/// refused at once: every running download of an address takes a turn
/// per chunk, so an office's phones booting together behind one NAT
/// address got 503s from a healthy disk. Here the disk is briefly slow:
/// two opens hold the source's share while six more downloads from the
/// same address come in, and all eight are served once it answers.
#[test]
fn downloads_past_the_source_share_wait_for_a_turn() {
    runtime(2).block_on(async {
        let f = fixture();
        let stall = Stall::new(&f.statics.path().join("fw.bin"), Op::Open);
        let router = build(
            f.provisioner.clone(),
            false,
            Reads::with(budget(8, 2), Duration::from_secs(60)),
        );
        let mut downloads = Vec::new();
        for port in 5060..5062 {
            downloads.push(get(&router, &format!("192.0.2.1:{port}"), "/fw.bin"));
        }
        assert_eq!(stall.until_waiting(2), 2, "the slow opens");
        // Each polled once, here: a download refused at once is answered
        // by then.
        let app = router.layer(MockConnectInfo(
            "192.0.2.1:5070".parse::<SocketAddr>().unwrap(),
        ));
        let mut queued = Vec::new();
        for _ in 0..6 {
            let request = Request::get("/fw.bin").body(Body::empty()).unwrap();
            let mut download = Box::pin(app.clone().oneshot(request));
            if let std::task::Poll::Ready(refused) = futures::poll!(download.as_mut()) {
                let refused = refused.unwrap();
                panic!("refused: {} {}", refused.status(), text(refused).await);
            }
            queued.push(download);
        }
        drop(stall);
        let answers =
            tokio::time::timeout(Duration::from_secs(20), futures::future::join_all(queued))
                .await
                .expect("the queued downloads were answered");
        for request in downloads {
            let response = answer(request, Duration::from_secs(10)).await;
            assert_eq!(response.status(), StatusCode::OK);
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert!(body.to_vec() == firmware(), "{} bytes", body.len());
        }
        for response in answers {
            let response = response.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert!(body.to_vec() == firmware(), "{} bytes", body.len());
        }
    });
}

/// A read that does not answer within its deadline ends the download, its
/// body cut short, while the read keeps its turn until the disk answers.
#[test]
fn a_read_past_its_deadline_ends_the_download() {
    runtime(2).block_on(async {
        let f = fixture();
        let fw = f.statics.path().join("fw.bin");
        let router = build(
            f.provisioner.clone(),
            false,
            Reads::with(budget(1, 1), Duration::from_millis(300)),
        );
        let stall = Stall::new(&fw, Op::Read);
        let response = answer(
            get(&router, "192.0.2.1:5060", "/fw.bin"),
            Duration::from_secs(2),
        )
        .await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[header::CONTENT_LENGTH], "200001");
        let started = std::time::Instant::now();
        let cut = tokio::time::timeout(Duration::from_secs(5), response.into_body().collect())
            .await
            .expect("the body ends");
        assert!(cut.is_err(), "a body cut short");
        assert!(
            started.elapsed() >= Duration::from_millis(250),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(stall.until_waiting(1), 1);
        // The hung read still holds the one turn.
        let refused = answer(
            get(&router, "192.0.2.2:5060", "/fw.bin"),
            Duration::from_secs(2),
        )
        .await;
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
        drop(stall);
        let served = loop {
            let response = answer(
                get(&router, "192.0.2.2:5060", "/fw.bin"),
                Duration::from_secs(2),
            )
            .await;
            if response.status() != StatusCode::SERVICE_UNAVAILABLE {
                break response;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let body = served.into_body().collect().await.unwrap().to_bytes();
        assert!(body.to_vec() == firmware(), "{} bytes", body.len());
    });
}

/// HEAD and a matching `If-None-Match` open the file (its length and tag
/// are the open file's) but read none of it.
#[test]
fn head_and_not_modified_read_nothing() {
    runtime(2).block_on(async {
        let f = fixture();
        let router = build(
            f.provisioner.clone(),
            false,
            Reads::with(budget(1, 1), Duration::from_secs(60)),
        );
        let _stall = Stall::new(&f.statics.path().join("fw.bin"), Op::Read);
        let app = router.layer(MockConnectInfo(
            "192.0.2.1:5060".parse::<SocketAddr>().unwrap(),
        ));
        let head = Request::head("/fw.bin").body(Body::empty()).unwrap();
        let head = app.clone().oneshot(head).await.unwrap();
        assert_eq!(head.status(), StatusCode::OK);
        assert_eq!(head.headers()[header::CONTENT_LENGTH], "200001");
        let tag = head.headers()[header::ETAG].clone();
        let again = Request::get("/fw.bin")
            .header(header::IF_NONE_MATCH, tag)
            .body(Body::empty())
            .unwrap();
        let again = tokio::time::timeout(Duration::from_secs(2), app.oneshot(again))
            .await
            .expect("no read waited for")
            .unwrap();
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    });
}

/// A listener's exempt networks read without a per-source cap; others
/// count by address, an IPv6 client by its /64, as for TFTP.
#[test]
fn exempt_networks_are_not_capped_per_source() {
    let reads = Reads {
        per_source_exempt: vec!["10.0.0.0/8".parse().unwrap()],
        ..Reads::with(budget(2, 1), Duration::from_secs(1))
    };
    let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
    assert_eq!(reads.source(ip("10.1.2.3")), None);
    assert_eq!(reads.source(ip("192.0.2.1")), Some(ip("192.0.2.1")));
    assert_eq!(
        reads.source(ip("2001:db8::1:2:3:4")),
        Some(ip("2001:db8::"))
    );
}
