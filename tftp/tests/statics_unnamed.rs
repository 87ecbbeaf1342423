//! Files the operator put in the static folder under names no rule knows
//! (a CA certificate, a firmware's version file, a ring list, a Poly
//! dictionary in a subfolder): served over both transports like any other
//! static file, and fetching them costs no miss. A name in neither the
//! rules nor the folder is still "not found" and a miss.

mod common;
#[macro_use]
mod tftp_support;

use std::net::{IpAddr, SocketAddr};

use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{Request as HttpRequest, StatusCode};
use common::*;
use dialtone_tftp::tftp::TftpOptions;
use http_body_util::BodyExt;
use tftp_support::*;
use tower::ServiceExt;

const OFFICE: &str = "192.0.2.10";

/// The folder: names no rule or extension knows, one in a subfolder, and
/// one spelled as a phone's rendered file.
fn static_folder(f: &Fixture) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::write(root.join("ca.crt"), b"-----BEGIN CERTIFICATE-----\n").unwrap();
    std::fs::write(root.join("sip.ver"), b"66.86.0.15\n").unwrap();
    std::fs::write(root.join("RINGLIST.XML"), b"<ringlist/>\n").unwrap();
    std::fs::create_dir_all(root.join("poly/dictionary")).unwrap();
    std::fs::write(root.join("poly/dictionary/en-US.xml"), b"<dict/>\n").unwrap();
    std::fs::write(root.join("001565000001.cfg"), b"not the rendered file\n").unwrap();
    assert_eq!(f.provisioner.reload_static(root).unwrap(), 5);
    dir
}

fn app(f: &Fixture) -> axum::Router {
    dialtone_tftp::http::router(f.provisioner.clone()).layer(MockConnectInfo(
        format!("{OFFICE}:5060").parse::<SocketAddr>().unwrap(),
    ))
}

async fn http_get(app: &axum::Router, path: &str) -> (StatusCode, Vec<u8>) {
    let response = app
        .clone()
        .oneshot(HttpRequest::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, body.to_vec())
}

#[tokio::test]
async fn files_no_rule_names_are_served_over_http() {
    let f = Fixture::new().await;
    let _dir = static_folder(&f);
    let app = app(&f);
    for (path, body) in [
        ("/ca.crt", &b"-----BEGIN CERTIFICATE-----\n"[..]),
        ("/sip.ver", b"66.86.0.15\n"),
        // In any case, as other static files are.
        ("/ringlist.xml", b"<ringlist/>\n"),
        ("/poly/dictionary/en-US.xml", b"<dict/>\n"),
        // By the file name alone, and under a tenant's folder.
        ("/en-US.xml", b"<dict/>\n"),
        ("/acme/ca.crt", b"-----BEGIN CERTIFICATE-----\n"),
    ] {
        assert_eq!(
            http_get(&app, path).await,
            (StatusCode::OK, body.to_vec()),
            "{path}"
        );
    }
    // A rule's name stays the rendered file, whatever is in the folder.
    let (status, body) = http_get(&app, "/001565000001.cfg").await;
    assert_eq!(status, StatusCode::OK);
    let body = String::from_utf8(body).unwrap();
    assert!(body.contains("account.1.user_name = u101"), "{body}");
}

async fn fetched_over_tftp(mode: Mode) {
    let f = Fixture::new().await;
    let _dir = static_folder(&f);
    let server = Server::start(mode, f.provisioner.clone(), TftpOptions::default());
    let addr = server.addr;
    let got = tokio::task::spawn_blocking(move || {
        ["sip.ver", "ca.crt", "poly/dictionary/en-US.xml"]
            .map(|file| fetch_raw(addr, file, &[("blksize", "1428")]).0)
    })
    .await
    .unwrap();
    assert_eq!(
        got,
        [
            b"66.86.0.15\n".to_vec(),
            b"-----BEGIN CERTIFICATE-----\n".to_vec(),
            b"<dict/>\n".to_vec()
        ]
    );
}

both_modes!(fetched_over_tftp);

/// Thirty phones of an office fetching the CA certificate twice each: no
/// miss, so no ban; a name in neither the rules nor the folder still
/// costs one, and the usual burst of them bans.
#[tokio::test]
async fn an_office_fetching_an_unnamed_static_file_is_not_banned() {
    let f = Fixture::new().await;
    let _dir = static_folder(&f);
    let app = app(&f);
    let office: IpAddr = OFFICE.parse().unwrap();
    for n in 0..100 {
        let (status, _) = http_get(&app, "/ca.crt").await;
        assert_eq!(status, StatusCode::OK, "fetch {n}");
    }
    assert!(!f.provisioner.guard().is_banned(office));

    let mut banned_after = None;
    for n in 0..40 {
        match http_get(&app, "/nowhere.crt").await.0 {
            StatusCode::NOT_FOUND => {}
            StatusCode::TOO_MANY_REQUESTS => {
                banned_after = Some(n);
                break;
            }
            other => panic!("{other}"),
        }
    }
    // The default burst is 30 misses; the one past it bans.
    assert_eq!(banned_after, Some(31));
}
