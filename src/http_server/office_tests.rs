//! An office behind one NAT, the busiest source of a full listener, keeps
//! connections it fetches on one after another while phones from elsewhere
//! arrive: a newcomer takes a connection that has sat idle, or is told 503,
//! never an office phone's between two of its fetches.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::HttpServerOptions;
use crate::http_server_tests::{connect_from, drained, read_to_end, start};

const OFFICE: &str = "127.0.0.10";

/// Whether `stream` answered a keep-alive request with a whole 200.
async fn fetched(stream: &mut BufReader<TcpStream>) -> bool {
    let exchange = async {
        stream
            .get_mut()
            .write_all(b"GET /peer HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .ok()?;
        let mut status = String::new();
        stream.read_line(&mut status).await.ok()?;
        let mut length = None;
        loop {
            let mut line = String::new();
            if stream.read_line(&mut line).await.ok()? == 0 {
                return None;
            }
            if line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse::<usize>().ok();
                }
            }
        }
        let mut body = vec![0u8; length?];
        stream.read_exact(&mut body).await.ok()?;
        Some(status.starts_with("HTTP/1.1 200"))
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// An office phone: a fetch every 50 ms on one connection until `stop`;
/// how many it made before one failed, and whether one did.
async fn office_phone(addr: SocketAddr, stop: Arc<AtomicBool>) -> (usize, bool) {
    let mut stream = BufReader::new(connect_from(OFFICE, addr).await);
    let mut fetches = 0;
    while !stop.load(Ordering::Acquire) {
        if !fetched(&mut stream).await {
            return (fetches, true);
        }
        fetches += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (fetches, false)
}

#[tokio::test]
async fn an_office_fetching_on_keep_alive_connections_keeps_them() {
    let (addr, shutdown, task) = start(HttpServerOptions {
        max_connections: 4,
        per_source_exempt: Vec::new(),
        ..HttpServerOptions::default()
    })
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let office: Vec<_> = (0..3)
        .map(|_| tokio::spawn(office_phone(addr, stop.clone())))
        .collect();
    let mut lingering = BufReader::new(connect_from("127.0.0.11", addr).await);
    assert!(fetched(&mut lingering).await);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for newcomer in 20..25 {
        let mut phone = connect_from(&format!("127.0.0.{newcomer}"), addr).await;
        phone
            .write_all(b"GET /peer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let reply = read_to_end(&mut phone).await;
        assert!(
            reply.starts_with("HTTP/1.1 200") || reply.starts_with("HTTP/1.1 503"),
            "{reply}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Release);
    for phone in office {
        let (fetches, failed) = phone.await.unwrap();
        assert!(
            !failed,
            "an office connection was closed after {fetches} fetches"
        );
    }
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), lingering.read_to_end(&mut rest))
        .await
        .is_ok();
    assert!(closed && rest.is_empty(), "the idle connection made room");
    shutdown.cancel();
    drained(task).await;
}

/// A connection idle a second between requests goes before one of the
/// busiest source's still without its first request, which has half of
/// `header_timeout` for it (a handshake on a lossy link).
#[tokio::test]
async fn an_idle_connection_goes_before_a_busier_source_waiting_for_its_first() {
    let (addr, shutdown, task) = start(HttpServerOptions {
        max_connections: 3,
        per_source_exempt: Vec::new(),
        ..HttpServerOptions::default()
    })
    .await;
    let mut waiting = Vec::new();
    for _ in 0..2 {
        let mut stream = connect_from(OFFICE, addr).await;
        stream.write_all(b"GET /peer HTT").await.unwrap();
        waiting.push(stream);
    }
    let mut lingering = BufReader::new(connect_from("127.0.0.11", addr).await);
    assert!(fetched(&mut lingering).await);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let mut phone = connect_from("127.0.0.20", addr).await;
    phone
        .write_all(b"GET /peer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let reply = read_to_end(&mut phone).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), lingering.read_to_end(&mut rest))
        .await
        .is_ok();
    assert!(closed && rest.is_empty(), "the idle connection made room");
    for stream in &mut waiting {
        let still_open =
            tokio::time::timeout(Duration::from_millis(200), stream.read(&mut [0u8; 16]))
                .await
                .is_err();
        assert!(
            still_open,
            "a connection waiting for its first request was closed"
        );
    }
    drop(waiting);
    shutdown.cancel();
    drained(task).await;
}
