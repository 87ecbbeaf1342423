//! A failed TLS handshake is counted by reason: phones that offer only
//! TLS 1.0/1.1, or only CBC and RSA-key-exchange suites, fail on every
//! boot, and were seen only in the debug log. The client hellos are made
//! by hand, as rustls can send neither.

use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::HttpServerOptions;
use crate::http_server_tests::{start, tls_pair};

const TLS_1_0: u16 = 0x0301;
const TLS_1_2: u16 = 0x0303;
/// TLS_RSA_WITH_AES_128_CBC_SHA and TLS_RSA_WITH_AES_256_CBC_SHA: what
/// phones of the TLS 1.0 era offer.
const RSA_CBC: &[u16] = &[0x002f, 0x0035];
/// TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA: ECDHE, but CBC.
const ECDHE_CBC: &[u16] = &[0xc013];

fn extension(kind: u16, body: &[u8]) -> Vec<u8> {
    let mut out = kind.to_be_bytes().to_vec();
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// signature_algorithms, supported_groups (x25519, P-256) and
/// ec_point_formats (uncompressed), as a TLS 1.2 client sends them.
fn modern_extensions() -> Vec<u8> {
    let mut out = extension(0x000d, &[0, 4, 0x04, 0x01, 0x04, 0x03]);
    out.extend(extension(0x000a, &[0, 4, 0x00, 0x1d, 0x00, 0x17]));
    out.extend(extension(0x000b, &[1, 0]));
    out
}

/// A ClientHello record offering `suites` at `version`.
fn client_hello(version: u16, suites: &[u16], extensions: &[u8]) -> Vec<u8> {
    let mut body = version.to_be_bytes().to_vec();
    body.extend_from_slice(&[7; 32]);
    body.push(0);
    body.extend_from_slice(&((suites.len() * 2) as u16).to_be_bytes());
    for suite in suites {
        body.extend_from_slice(&suite.to_be_bytes());
    }
    body.extend_from_slice(&[1, 0]);
    if !extensions.is_empty() {
        body.extend_from_slice(&(extensions.len() as u16).to_be_bytes());
        body.extend_from_slice(extensions);
    }
    let mut handshake = vec![1];
    handshake.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    handshake.extend(body);
    let mut record = vec![0x16];
    record.extend_from_slice(&TLS_1_0.to_be_bytes());
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend(handshake);
    record
}

/// Sends `bytes`, then closes or waits for the server to close.
async fn send(addr: std::net::SocketAddr, bytes: &[u8], then_close: bool) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    if then_close {
        return;
    }
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut reply)).await;
}

fn failures(handle: &PrometheusHandle, reason: &str) -> u64 {
    let series = format!("dialtone_tls_handshake_failures_total{{reason=\"{reason}\"}} ");
    handle
        .render()
        .lines()
        .find_map(|line| line.strip_prefix(&series)?.parse().ok())
        .unwrap_or(0)
}

/// Waits for the server to count what the client saw end.
async fn counted(handle: &PrometheusHandle, reason: &str, expected: u64) -> u64 {
    for _ in 0..250 {
        if failures(handle, reason) >= expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    failures(handle, reason)
}

#[test]
fn failed_handshakes_are_counted_by_reason() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    // One thread: the server's tasks record into the test's own recorder.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        runtime.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let (acceptor, connector) = tls_pair(dir.path());
            let (addr, shutdown, task) = start(HttpServerOptions {
                header_timeout: Duration::from_millis(500),
                tls: Some(acceptor),
                ..HttpServerOptions::default()
            })
            .await;
            let cases: [(&str, Vec<u8>, bool); 7] = [
                // A TLS 1.0 phone sends no signature algorithms at all.
                (
                    "protocol_version",
                    client_hello(TLS_1_0, RSA_CBC, &[]),
                    false,
                ),
                (
                    "protocol_version",
                    client_hello(TLS_1_0, ECDHE_CBC, &modern_extensions()),
                    false,
                ),
                (
                    "no_shared_cipher",
                    client_hello(TLS_1_2, ECDHE_CBC, &modern_extensions()),
                    false,
                ),
                // RSA key exchange only: no groups offered.
                (
                    "no_shared_cipher",
                    client_hello(TLS_1_2, RSA_CBC, &extension(0x000d, &[0, 2, 0x04, 0x01])),
                    false,
                ),
                (
                    "other",
                    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
                    false,
                ),
                ("closed", vec![0x16, 0x03, 0x01], true),
                ("timeout", vec![0x16, 0x03, 0x01], false),
            ];
            let mut expected = std::collections::BTreeMap::new();
            for (reason, bytes, then_close) in cases {
                send(addr, &bytes, then_close).await;
                let count = expected.entry(reason).or_insert(0);
                *count += 1;
                assert_eq!(counted(&handle, reason, *count).await, *count, "{reason}");
            }
            // A client that does not trust the certificate says so.
            let untrusting = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let tcp = TcpStream::connect(addr).await.unwrap();
            let refused = tokio_rustls::TlsConnector::from(std::sync::Arc::new(untrusting))
                .connect(name, tcp)
                .await;
            assert!(refused.is_err());
            expected.insert("certificate", 1);
            assert_eq!(counted(&handle, "certificate", 1).await, 1);
            // A modern client is served and counted nowhere.
            let reply = crate::http_server_tests::tls_request(addr, &connector, "/peer").await;
            assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
            for (reason, count) in expected {
                assert_eq!(failures(&handle, reason), count, "{reason}");
            }
            shutdown.cancel();
            crate::http_server_tests::drained(task).await;
        })
    });
}
