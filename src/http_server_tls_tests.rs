//! HTTPS through the same accept loop: served, capped with a 503 over
//! TLS, and a client that never finishes its handshake or headers cut
//! off; `tls_pair` and `tls_request` for the other listener tests.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{drained, start};
use crate::http_server::HttpServerOptions;

/// A self-signed certificate for `localhost`: the server's acceptor, and a
/// client that trusts it.
pub(crate) fn tls_pair(
    dir: &std::path::Path,
) -> (tokio_rustls::TlsAcceptor, tokio_rustls::TlsConnector) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let (acceptor, _) = crate::http_server::tls_acceptor(&cert, &key).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    (
        acceptor,
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)),
    )
}

pub(crate) async fn tls_request(
    addr: SocketAddr,
    connector: &tokio_rustls::TlsConnector,
    path: &str,
) -> String {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut reply = Vec::new();
    // A peer that closes without close_notify is an error to rustls; the
    // bytes read until then are the reply.
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut reply)).await;
    String::from_utf8_lossy(&reply).into_owned()
}

/// HTTPS runs through the same loop: served, capped with a 503 over TLS,
/// and a client that never finishes its handshake or headers is cut off.
#[tokio::test]
async fn https_is_served_capped_and_cut_off_like_http() {
    let dir = tempfile::tempdir().unwrap();
    let (acceptor, connector) = tls_pair(dir.path());
    let (addr, shutdown, task) = start(HttpServerOptions {
        max_connections: 1,
        header_timeout: Duration::from_millis(300),
        tls: Some(acceptor),
        ..HttpServerOptions::default()
    })
    .await;
    let reply = tls_request(addr, &connector, "/peer").await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    // A client that starts its handshake and stops holds the only slot
    // until the deadline, and meanwhile others get 503 over TLS.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    silent.write_all(b"\x16\x03\x01").await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let refused = tls_request(addr, &connector, "/peer").await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), silent.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "a silent TLS client is cut off");
    // A client that finishes the handshake but sends no headers is cut
    // off too.
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut idle = connector.connect(name, tcp).await.unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), idle.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "a TLS client without headers is cut off");
    assert!(!String::from_utf8_lossy(&rest).contains("200 OK"));
    shutdown.cancel();
    drained(task).await;
}
