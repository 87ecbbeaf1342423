//! A static file truncated, copied over in place by a shorter one, or
//! written to while a TFTP transfer of it runs: the transfer ends with an
//! error packet, never with a short last block, which would tell the
//! phone it has the whole (announced) file, nor with a whole made of two
//! files. Over HTTP the body ends in an error, short of its length.

mod common;
#[macro_use]
mod tftp_support;

use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{Request as HttpRequest, StatusCode};
use common::*;
use dialtone_tftp::tftp::TftpOptions;
use http_body_util::BodyExt;
use tftp_support::*;
use tower::ServiceExt;

const LEN: usize = 200_000;

async fn a_file_cut_short_mid_transfer_ends_in_an_error(mode: Mode) {
    changed_mid_transfer(mode, |path| {
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_len(10_000)
            .unwrap();
    })
    .await;
}

/// The same length, other bytes: what `cp` over a file leaves once it
/// has caught up with the transfer.
async fn a_file_written_to_mid_transfer_ends_in_an_error(mode: Mode) {
    changed_mid_transfer(mode, write_over).await;
}

both_modes!(
    a_file_cut_short_mid_transfer_ends_in_an_error,
    a_file_written_to_mid_transfer_ends_in_an_error
);

fn write_over(path: &Path) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .write_all_at(&[9u8; 1_000], 150_000)
        .unwrap();
}

#[tokio::test]
async fn a_file_written_to_mid_download_ends_the_body_in_an_error() {
    let f = Fixture::new().await;
    let dir = tempfile::tempdir().unwrap();
    let path = indexed(&f, dir.path());
    let app = dialtone_tftp::http::router(f.provisioner.clone()).layer(MockConnectInfo(
        "192.0.2.10:5060".parse::<SocketAddr>().unwrap(),
    ));
    let response = app
        .oneshot(HttpRequest::get("/mid.rom").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // Opened, and nothing read of it yet.
    write_over(&path);
    let body = response.into_body().collect().await;
    assert!(body.is_err(), "the body ended as if whole");
}

/// A file of `LEN` bytes in `dir`, indexed.
fn indexed(f: &Fixture, dir: &Path) -> std::path::PathBuf {
    let path = dir.join("mid.rom");
    std::fs::write(&path, vec![7u8; LEN]).unwrap();
    // Written long ago: the change's own time differs, however coarse
    // the file system's clock.
    let long_ago = std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_times(std::fs::FileTimes::new().set_modified(long_ago))
        .unwrap();
    assert_eq!(f.provisioner.reload_static(dir).unwrap(), 1);
    path
}

/// `change` runs once the transfer has opened the file and read its
/// first stretch.
async fn changed_mid_transfer(mode: Mode, change: fn(&Path)) {
    let f = Fixture::new().await;
    let dir = tempfile::tempdir().unwrap();
    let path = indexed(&f, dir.path());
    let server = Server::start(mode, f.provisioner.clone(), TftpOptions::default());
    let addr = server.addr;

    let (received, error) = tokio::task::spawn_blocking(move || {
        let s = client();
        s.send_to(&request(1, "mid.rom", &[("tsize", "0")]), addr)
            .unwrap();
        let (oack, peer) = recv(&s);
        assert_eq!(oack[1], 6, "expected OACK, got {oack:?}");
        let announced = format!("tsize\0{LEN}\0");
        assert!(
            oack.windows(announced.len())
                .any(|w| w == announced.as_bytes()),
            "{oack:?}"
        );
        // The first stretch is read by now (the OACK waited for the open).
        change(&path);
        ack(&s, peer, 0);
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut received = 0usize;
        loop {
            assert!(Instant::now() < deadline, "the transfer never ended");
            let (packet, _) = recv(&s);
            match packet[1] {
                3 => {
                    let data = packet.len() - 4;
                    assert_eq!(data, 512, "a short block ends the transfer as a success");
                    received += data;
                    ack(&s, peer, u16::from_be_bytes([packet[2], packet[3]]));
                }
                5 => break (received, packet),
                _ => panic!("{packet:?}"),
            }
        }
    })
    .await
    .unwrap();
    assert!(received < LEN, "{received}");
    assert_eq!(&error[..4], &[0, 5, 0, 0], "{error:?}");
    let message = String::from_utf8_lossy(&error[4..]);
    assert_eq!(
        message.trim_end_matches('\0'),
        "file changed while being sent"
    );
}
