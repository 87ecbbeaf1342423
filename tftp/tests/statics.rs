//! Static files: served from the indexed folder over TFTP and HTTP, byte
//! for byte, and nothing outside it (no traversal, no symbolic links).

mod common;

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{Request as HttpRequest, StatusCode};
use common::*;
use dialtone_tftp::tftp::{self, TftpOptions};
use dialtone_tftp::{ProvisionError, Request};
use http_body_util::BodyExt;
use tower::ServiceExt;

/// Deterministic "firmware": not compressible, larger than a window of blocks.
fn firmware(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn fixture_files(dir: &std::path::Path) -> (Vec<u8>, Vec<u8>) {
    let sip = firmware(200_000);
    let rom = firmware(70_001);
    std::fs::write(dir.join("sip.ld"), &sip).unwrap();
    std::fs::create_dir_all(dir.join("yealink")).unwrap();
    std::fs::write(dir.join("yealink/T46S-66.86.0.15.rom"), &rom).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", dir.join("passwd.bin")).unwrap();
    (sip, rom)
}

/// A TFTP server on a loopback port, serving the fixture's provisioner.
struct Running {
    addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<std::io::Result<()>>,
}

impl Running {
    fn start(f: &Fixture, options: TftpOptions) -> Running {
        let socket = tftp::bind("127.0.0.1:0".parse().unwrap(), &options).unwrap();
        let addr = socket.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = tftp::spawn(socket, f.provisioner.clone(), options, async move {
            let _ = stopped.await;
        })
        .unwrap();
        Running { addr, stop, thread }
    }

    fn stop(self) {
        let _ = self.stop.send(());
        self.thread.join().unwrap().unwrap();
    }
}

fn tftp_get(server: SocketAddr, file: &str) -> Vec<u8> {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let mut rrq = vec![0, 1];
    for part in [file, "octet", "blksize", "1428"] {
        rrq.extend_from_slice(part.as_bytes());
        rrq.push(0);
    }
    s.send_to(&rrq, server).unwrap();
    let mut buf = vec![0u8; 2000];
    let (n, peer) = s.recv_from(&mut buf).unwrap();
    assert_eq!(buf[1], 6, "expected OACK, got {:?}", &buf[..n]);
    s.send_to(&[0, 4, 0, 0], peer).unwrap();
    let mut data = Vec::new();
    for expected in 1u16..=u16::MAX {
        let (n, _) = s.recv_from(&mut buf).unwrap();
        assert_eq!(buf[1], 3);
        assert_eq!(u16::from_be_bytes([buf[2], buf[3]]), expected);
        data.extend_from_slice(&buf[4..n]);
        s.send_to(&[0, 4, buf[2], buf[3]], peer).unwrap();
        if n - 4 < 1428 {
            break;
        }
    }
    data
}

#[tokio::test]
async fn firmware_is_served_byte_for_byte_over_tftp_and_http() {
    let f = Fixture::new().await;
    let dir = tempfile::tempdir().unwrap();
    let (sip, rom) = fixture_files(dir.path());
    assert_eq!(
        f.provisioner.reload_static(dir.path()).unwrap(),
        2,
        "the symlink must not be indexed"
    );

    // Both TFTP modes: a port per transfer, and everything from the
    // listening port. A timeout far past the client's read timeout (5 s):
    // the first window, read once the client has acknowledged the OACK,
    // goes out as soon as it is read, not at the transfer's next timer.
    for single_port in [false, true] {
        let options = TftpOptions {
            single_port,
            listeners: 2,
            timeout: std::time::Duration::from_secs(30),
            ..Default::default()
        };
        let server = Running::start(&f, options);
        let addr = server.addr;
        let (a, b) = (addr, addr);
        assert_eq!(
            tokio::task::spawn_blocking(move || tftp_get(a, "sip.ld"))
                .await
                .unwrap(),
            sip,
            "single_port {single_port}"
        );
        // By folder and file name, or by the file name alone.
        let got = tokio::task::spawn_blocking(move || tftp_get(b, "yealink/T46S-66.86.0.15.rom"))
            .await
            .unwrap();
        assert_eq!(got, rom, "single_port {single_port}");
        server.stop();
    }

    let app = dialtone_tftp::http::router(f.provisioner.clone()).layer(MockConnectInfo(
        "192.0.2.10:5060".parse::<SocketAddr>().unwrap(),
    ));
    let response = app
        .clone()
        .oneshot(
            HttpRequest::get("/T46S-66.86.0.15.rom")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
        rom
    );
    for path in ["/passwd.bin", "/../sip.ld", "/yealink/../../etc/passwd"] {
        let response = app
            .clone()
            .oneshot(HttpRequest::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert!(
            response.status().is_client_error(),
            "{path}: {}",
            response.status()
        );
    }
    let outside = f.provisioner.provision(&Request {
        path: "passwd.bin",
        ..Default::default()
    });
    assert_eq!(outside.err(), Some(ProvisionError::NotFound));
}

/// The first answer to `rrq`, after acknowledging an OACK if one comes:
/// (opcode, error code or block number).
fn first_answer(server: SocketAddr, rrq: &[u8]) -> (u16, u16) {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    s.send_to(rrq, server).unwrap();
    let mut buf = vec![0u8; 2000];
    let (_, peer) = s.recv_from(&mut buf).expect("an answer, not silence");
    if buf[1] == 6 {
        s.send_to(&[0, 4, 0, 0], peer).unwrap();
        s.recv_from(&mut buf)
            .expect("an answer to the ACK, not silence");
    }
    let word = |i: usize| u16::from_be_bytes([buf[i], buf[i + 1]]);
    (word(0), word(2))
}

fn rrq(file: &str, options: &[&str]) -> Vec<u8> {
    let mut p = vec![0, 1];
    for part in [file, "octet"].iter().chain(options) {
        p.extend_from_slice(part.as_bytes());
        p.push(0);
    }
    p
}

#[tokio::test]
async fn a_static_file_that_cannot_be_read_is_an_error_packet_not_silence() {
    let f = Fixture::new().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("gone.ld"), firmware(5_000)).unwrap();
    std::fs::write(dir.path().join("unreadable.ld"), firmware(5_000)).unwrap();
    assert_eq!(f.provisioner.reload_static(dir.path()).unwrap(), 2);
    // Removed since it was indexed; and one that opens but cannot be read
    // (a directory in its place: EISDIR on the first read).
    std::fs::remove_file(dir.path().join("gone.ld")).unwrap();
    std::fs::remove_file(dir.path().join("unreadable.ld")).unwrap();
    std::fs::create_dir(dir.path().join("unreadable.ld")).unwrap();

    for single_port in [false, true] {
        let options = TftpOptions {
            single_port,
            listeners: 2,
            ..Default::default()
        };
        let server = Running::start(&f, options);
        let addr = server.addr;
        let answers = tokio::task::spawn_blocking(move || {
            [
                first_answer(addr, &rrq("gone.ld", &[])),
                first_answer(addr, &rrq("gone.ld", &["blksize", "1428"])),
                // The read fails as the transfer starts, or (after the
                // OACK) as it answers the client's first ACK.
                first_answer(addr, &rrq("unreadable.ld", &[])),
                first_answer(addr, &rrq("unreadable.ld", &["blksize", "1428"])),
            ]
        })
        .await
        .unwrap();
        assert_eq!(
            answers,
            [(5, 1), (5, 1), (5, 0), (5, 0)],
            "(ERROR, code) each; single_port {single_port}"
        );
        server.stop();
    }
}

/// The `tsize` an OACK to `rrq` announces.
fn announced_tsize(server: SocketAddr, rrq: &[u8]) -> Option<String> {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    s.send_to(rrq, server).unwrap();
    let mut buf = vec![0u8; 2000];
    let (n, peer) = s.recv_from(&mut buf).expect("an answer, not silence");
    assert_eq!(buf[1], 6, "expected OACK, got {:?}", &buf[..n]);
    // Ended by the client, so the slot is free at once.
    s.send_to(b"\0\x05\0\0done\0", peer).unwrap();
    let fields: Vec<&[u8]> = buf[2..n].split(|b| *b == 0).collect();
    fields
        .chunks(2)
        .find(|pair| pair[0].eq_ignore_ascii_case(b"tsize"))
        .and_then(|pair| pair.get(1))
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// A firmware image copied over in place, with no SIGHUP since: its
/// transfer announces the size it sends, not the one indexed.
#[tokio::test]
async fn a_file_replaced_in_place_announces_its_own_size() {
    let f = Fixture::new().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("sip.ld"), firmware(5_000)).unwrap();
    assert_eq!(f.provisioner.reload_static(dir.path()).unwrap(), 1);
    std::fs::write(dir.path().join("sip.ld"), firmware(7_321)).unwrap();

    let server = Running::start(&f, TftpOptions::default());
    let addr = server.addr;
    let announced = tokio::task::spawn_blocking(move || {
        announced_tsize(addr, &rrq("sip.ld", &["blksize", "1428", "tsize", "0"]))
    })
    .await
    .unwrap();
    assert_eq!(announced.as_deref(), Some("7321"));
    server.stop();
}

/// The same over HTTP: a file replaced in place (renamed over, as rsync
/// does) is sent whole with its own length, and the old file's tag does not
/// answer 304 for it.
#[tokio::test]
async fn a_file_replaced_in_place_is_sent_whole_over_http() {
    let f = Fixture::new().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("sip.ld"), firmware(5_000)).unwrap();
    assert_eq!(f.provisioner.reload_static(dir.path()).unwrap(), 1);
    let app = dialtone_tftp::http::router(f.provisioner.clone()).layer(MockConnectInfo(
        "192.0.2.10:5060".parse::<SocketAddr>().unwrap(),
    ));
    let get = |if_none_match: Option<String>| {
        let mut request = HttpRequest::get("/sip.ld");
        if let Some(tag) = if_none_match {
            request = request.header(axum::http::header::IF_NONE_MATCH, tag);
        }
        app.clone().oneshot(request.body(Body::empty()).unwrap())
    };
    let first = get(None).await.unwrap();
    let old_tag = first.headers()[axum::http::header::ETAG]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(first.headers()[axum::http::header::CONTENT_LENGTH], "5000");

    let longer = firmware(7_321);
    std::fs::write(dir.path().join("sip.ld.new"), &longer).unwrap();
    std::fs::rename(dir.path().join("sip.ld.new"), dir.path().join("sip.ld")).unwrap();
    let response = get(Some(old_tag.clone())).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[axum::http::header::CONTENT_LENGTH],
        "7321"
    );
    assert_ne!(
        response.headers()[axum::http::header::ETAG],
        old_tag.as_str()
    );
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.to_vec(), longer);
}

/// A static folder made a file after it was indexed (a deploy gone wrong):
/// its files are gone, "not found" like a removed one, not a 500; and the
/// reindex that fails says it is about static files.
#[tokio::test]
async fn files_of_a_folder_made_a_file_are_not_found() {
    let f = Fixture::new().await;
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("fw");
    std::fs::create_dir_all(folder.join("yealink")).unwrap();
    std::fs::write(folder.join("yealink/sip.ld"), firmware(3_000)).unwrap();
    assert_eq!(f.provisioner.reload_static(&folder).unwrap(), 1);
    std::fs::remove_dir_all(folder.join("yealink")).unwrap();
    std::fs::write(folder.join("yealink"), b"not a folder").unwrap();
    let app = dialtone_tftp::http::router(f.provisioner.clone()).layer(MockConnectInfo(
        "192.0.2.10:5060".parse::<SocketAddr>().unwrap(),
    ));
    let response = app
        .oneshot(
            HttpRequest::get("/yealink/sip.ld")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    // Over TFTP, the same file is "file not found" (code 1), not an
    // internal error (code 0).
    let server = Running::start(&f, TftpOptions::default());
    let addr = server.addr;
    let answers = tokio::task::spawn_blocking(move || {
        [
            first_answer(addr, &rrq("yealink/sip.ld", &[])),
            first_answer(addr, &rrq("yealink/sip.ld", &["blksize", "1428"])),
        ]
    })
    .await
    .unwrap();
    assert_eq!(answers, [(5, 1), (5, 1)], "(ERROR, code) each");
    server.stop();
    std::fs::remove_dir_all(&folder).unwrap();
    std::fs::write(&folder, b"not a folder either").unwrap();
    let refused = f
        .provisioner
        .reload_static(&folder)
        .unwrap_err()
        .to_string();
    assert!(refused.starts_with("static files "), "{refused}");
}
