//! HTTP static files: one byte range (206), a range past the end (416),
//! several ranges or an `If-Range` that is not the file's tag (the whole
//! file), and the file's `Last-Modified`.

mod common;

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{header, HeaderMap, Request as HttpRequest, StatusCode};
use common::*;
use http_body_util::BodyExt;
use tower::ServiceExt;

const LEN: usize = 200_000;

fn image() -> Vec<u8> {
    (0..LEN as u32).map(|i| (i * 13 % 251) as u8).collect()
}

struct Served {
    _dir: tempfile::TempDir,
    app: axum::Router,
}

async fn served(f: &Fixture) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fw.rom");
    std::fs::write(&path, image()).unwrap();
    let at = std::time::UNIX_EPOCH + std::time::Duration::new(1_700_000_000, 250);
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_times(std::fs::FileTimes::new().set_modified(at))
        .unwrap();
    assert_eq!(f.provisioner.reload_static(dir.path()).unwrap(), 1);
    let app = dialtone_tftp::http::router(f.provisioner.clone()).layer(MockConnectInfo(
        "192.0.2.10:5060".parse::<SocketAddr>().unwrap(),
    ));
    Served { _dir: dir, app }
}

async fn get(
    app: &axum::Router,
    path: &str,
    headers: &[(header::HeaderName, &str)],
) -> (StatusCode, HeaderMap, Vec<u8>) {
    let mut request = HttpRequest::get(path);
    for (name, value) in headers {
        request = request.header(name, *value);
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, body.to_vec())
}

#[tokio::test]
async fn one_range_is_a_partial_answer() {
    let f = Fixture::new().await;
    let s = served(&f).await;
    let image = image();
    for (range, start, end) in [
        ("bytes=100-199", 100, 200),
        ("bytes=199990-", 199_990, LEN),
        ("bytes=-50", LEN - 50, LEN),
        ("bytes=150000-999999", 150_000, LEN),
        // Past a read's 64 KiB, in the middle of one.
        ("bytes=70000-140000", 70_000, 140_001),
    ] {
        let (status, headers, body) = get(&s.app, "/fw.rom", &[(header::RANGE, range)]).await;
        assert_eq!(status, StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(
            headers[header::CONTENT_RANGE],
            format!("bytes {start}-{}/{LEN}", end - 1).as_str(),
            "{range}"
        );
        assert_eq!(
            headers[header::CONTENT_LENGTH],
            (end - start).to_string().as_str()
        );
        assert!(body == image[start..end], "{range}: {} bytes", body.len());
    }
}

#[tokio::test]
async fn a_range_past_the_end_is_416() {
    let f = Fixture::new().await;
    let s = served(&f).await;
    for range in ["bytes=200000-", "bytes=300000-300100", "bytes=-0"] {
        let (status, headers, _) = get(&s.app, "/fw.rom", &[(header::RANGE, range)]).await;
        assert_eq!(status, StatusCode::RANGE_NOT_SATISFIABLE, "{range}");
        assert_eq!(headers[header::CONTENT_RANGE], "bytes */200000", "{range}");
    }
}

#[tokio::test]
async fn several_ranges_or_another_files_tag_get_the_whole_file() {
    let f = Fixture::new().await;
    let s = served(&f).await;
    let (status, headers, body) = get(&s.app, "/fw.rom", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::ACCEPT_RANGES], "bytes");
    assert_eq!(headers[header::CONTENT_LENGTH], "200000");
    assert!(body == image());
    let tag = headers[header::ETAG].to_str().unwrap().to_string();

    let whole = |(status, headers, body): (StatusCode, HeaderMap, Vec<u8>)| {
        status == StatusCode::OK && !headers.contains_key(header::CONTENT_RANGE) && body == image()
    };
    assert!(whole(
        get(&s.app, "/fw.rom", &[(header::RANGE, "bytes=0-9,20-29")]).await
    ));
    for other in ["W/\"1-2.3\"", "Tue, 14 Nov 2023 22:13:20 GMT"] {
        let asked = [(header::RANGE, "bytes=0-9"), (header::IF_RANGE, other)];
        assert!(whole(get(&s.app, "/fw.rom", &asked).await), "{other}");
    }
    // The file's own tag: the part.
    let asked = [
        (header::RANGE, "bytes=0-9"),
        (header::IF_RANGE, tag.as_str()),
    ];
    let (status, _, body) = get(&s.app, "/fw.rom", &asked).await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert!(body == image()[..10]);
    // A matching If-None-Match comes first.
    let asked = [
        (header::RANGE, "bytes=0-9"),
        (header::IF_NONE_MATCH, tag.as_str()),
    ];
    assert_eq!(
        get(&s.app, "/fw.rom", &asked).await.0,
        StatusCode::NOT_MODIFIED
    );
}

#[tokio::test]
async fn a_static_file_says_when_it_was_modified() {
    let f = Fixture::new().await;
    let s = served(&f).await;
    let (_, headers, _) = get(&s.app, "/fw.rom", &[]).await;
    assert_eq!(
        headers[header::LAST_MODIFIED],
        "Tue, 14 Nov 2023 22:13:20 GMT"
    );
    let (_, headers, _) = get(&s.app, "/fw.rom", &[(header::RANGE, "bytes=1-2")]).await;
    assert_eq!(
        headers[header::LAST_MODIFIED],
        "Tue, 14 Nov 2023 22:13:20 GMT"
    );
}
