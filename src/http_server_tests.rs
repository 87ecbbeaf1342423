//! The provisioning listener's accept loop over real loopback sockets: the
//! peer address reaches handlers, the connection cap answers 503, a silent
//! client is cut off, and shutdown lets an open request finish.
//!
//! The helpers here (`start`, `request`, `drained`, and those re-exported
//! from the files below) serve every listener test; HTTPS, per-source
//! shares and slow readers have files of their own.

use std::net::SocketAddr;
use std::time::Duration;

use crate::http_server::{serve, HttpServerOptions};
use axum::extract::ConnectInfo;
use axum::routing::get;
use axum::Router;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

#[path = "http_server_share_tests.rs"]
mod shares;
#[path = "http_server_slow_reader_tests.rs"]
mod slow_readers;
#[path = "http_server_tls_tests.rs"]
mod tls;

pub(crate) use shares::connect_from;
pub(crate) use slow_readers::{read_response, served_and_kept};
pub(crate) use tls::{tls_pair, tls_request};

/// A body far past the socket buffers, so it is written over many polls.
pub(crate) const BIG: usize = 4 << 20;

fn router() -> Router {
    Router::new()
        .route(
            "/peer",
            get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.ip().to_string() }),
        )
        .route("/big", get(|| async { "x".repeat(BIG) }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                "done"
            }),
        )
}

pub(crate) async fn start(
    options: HttpServerOptions,
) -> (SocketAddr, CancellationToken, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(serve(listener, router(), options, shutdown.clone()));
    (addr, shutdown, task)
}

/// Far past the slowest handler here (300 ms), so only a drain that hangs
/// reaches it.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);

/// Waits for a cancelled server's task: a drain that hangs fails the test
/// with a reason instead of holding the run until nextest ends it.
pub(crate) async fn drained(task: tokio::task::JoinHandle<()>) {
    drained_within(task, DRAIN_LIMIT).await
}

async fn drained_within(task: tokio::task::JoinHandle<()>, limit: Duration) {
    tokio::time::timeout(limit, task)
        .await
        .unwrap_or_else(|_| panic!("drain did not finish within {limit:?}"))
        .unwrap();
}

#[tokio::test]
#[should_panic(expected = "drain did not finish")]
async fn a_drain_that_hangs_fails_the_test() {
    let hangs = tokio::spawn(std::future::pending::<()>());
    drained_within(hangs, Duration::from_millis(50)).await;
}

/// Sends one request on a fresh connection and reads the reply to its end.
pub(crate) async fn request(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    read_to_end(&mut stream).await
}

pub(crate) async fn read_to_end(stream: &mut TcpStream) -> String {
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut reply))
        .await
        .expect("the server closes the connection")
        .unwrap();
    String::from_utf8_lossy(&reply).into_owned()
}

#[tokio::test]
async fn handlers_see_the_peer_address() {
    let (addr, shutdown, task) = start(HttpServerOptions::default()).await;
    let reply = request(addr, "/peer").await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.ends_with("127.0.0.1"), "{reply}");
    shutdown.cancel();
    drained(task).await;
}

#[tokio::test]
async fn connections_past_the_cap_get_503() {
    let (addr, shutdown, task) = start(HttpServerOptions {
        max_connections: 1,
        header_timeout: Duration::from_secs(10),
        ..HttpServerOptions::default()
    })
    .await;
    // The first connection holds the only slot with half a request.
    let mut holder = TcpStream::connect(addr).await.unwrap();
    holder.write_all(b"GET /peer HTT").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let refused = request(addr, "/peer").await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.contains("Retry-After: 5"), "{refused}");
    // No body: a PBX would show it as the caller's name.
    assert!(refused.ends_with("Content-Length: 0\r\n\r\n"), "{refused}");
    // The holder is served normally, and its slot is free afterwards.
    holder
        .write_all(b"P/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    assert!(read_to_end(&mut holder).await.starts_with("HTTP/1.1 200"));
    let mut after = String::new();
    for _ in 0..50 {
        after = request(addr, "/peer").await;
        if after.starts_with("HTTP/1.1 200") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(after.starts_with("HTTP/1.1 200"), "{after}");
    shutdown.cancel();
    drained(task).await;
}

/// A connection's slot comes back when it ends, whatever the client did:
/// many connections one after another never exhaust a small cap.
#[tokio::test]
async fn slots_come_back_after_each_connection() {
    let (addr, shutdown, task) = start(HttpServerOptions {
        max_connections: 2,
        header_timeout: Duration::from_millis(200),
        ..HttpServerOptions::default()
    })
    .await;
    for i in 0..60 {
        match i % 3 {
            // Served and closed by the server (`Connection: close`).
            0 => assert!(request(addr, "/peer").await.starts_with("HTTP/1.1 200")),
            // Closed by the client before sending anything.
            1 => drop(TcpStream::connect(addr).await.unwrap()),
            // Half a request, then gone.
            _ => {
                let mut half = TcpStream::connect(addr).await.unwrap();
                half.write_all(b"GET /peer HTT").await.unwrap();
            }
        }
    }
    // Closing is seen by the server a moment later; then both slots are
    // free again: two holders fit and a third connection is refused.
    let mut served = String::new();
    for _ in 0..100 {
        served = request(addr, "/peer").await;
        if served.starts_with("HTTP/1.1 200") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(served.starts_with("HTTP/1.1 200"), "{served}");
    // Anything still open by now is cut off by the header deadline.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut holders = [
        TcpStream::connect(addr).await.unwrap(),
        TcpStream::connect(addr).await.unwrap(),
    ];
    for holder in &mut holders {
        holder.write_all(b"GET /peer HTT").await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let refused = request(addr, "/peer").await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    shutdown.cancel();
    drained(task).await;
}

/// An idle keep-alive connection does not hold up the drain: it is closed
/// once the listener stops, and `serve` returns.
#[tokio::test]
async fn the_drain_closes_idle_keep_alive_connections() {
    let (addr, shutdown, task) = start(HttpServerOptions::default()).await;
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /peer HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut reply = Vec::new();
    let mut chunk = [0u8; 1024];
    while !String::from_utf8_lossy(&reply).ends_with("127.0.0.1") {
        let n = tokio::time::timeout(Duration::from_secs(10), idle.read(&mut chunk))
            .await
            .expect("an answer")
            .unwrap();
        assert!(n > 0, "closed before the answer");
        reply.extend_from_slice(&chunk[..n]);
    }
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("serve returns once the idle connection is closed")
        .unwrap();
    let rest = read_to_end(&mut idle).await;
    assert!(rest.is_empty(), "{rest}");
}

/// Connections that have sent nothing yet wait in the kernel
/// (TCP_DEFER_ACCEPT), not in a slot: a crowd of silent connections does
/// not lock phones out.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn silent_connections_hold_no_slot() {
    let (addr, shutdown, task) = start(HttpServerOptions {
        max_connections: 1,
        header_timeout: Duration::from_secs(10),
        ..HttpServerOptions::default()
    })
    .await;
    // Served once first: the listener is set up by the time this returns.
    assert!(request(addr, "/peer").await.starts_with("HTTP/1.1 200"));
    let mut silent = Vec::new();
    for _ in 0..4 {
        silent.push(TcpStream::connect(addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let reply = request(addr, "/peer").await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    // Once one speaks, it is accepted and served like any other.
    silent[0]
        .write_all(b"GET /peer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    assert!(read_to_end(&mut silent[0])
        .await
        .starts_with("HTTP/1.1 200"));
    shutdown.cancel();
    drained(task).await;
}

#[tokio::test]
async fn a_silent_client_is_cut_off() {
    let (addr, shutdown, task) = start(HttpServerOptions {
        max_connections: 8,
        header_timeout: Duration::from_millis(200),
        ..HttpServerOptions::default()
    })
    .await;
    let mut silent = TcpStream::connect(addr).await.unwrap();
    silent.write_all(b"GET /peer HTTP/1.1\r\n").await.unwrap();
    // Closed without a response (or with a 408): never left open.
    let reply = read_to_end(&mut silent).await;
    assert!(!reply.contains("200 OK"), "{reply}");
    shutdown.cancel();
    drained(task).await;
}

#[tokio::test]
async fn shutdown_lets_a_request_in_flight_finish() {
    let (addr, shutdown, task) = start(HttpServerOptions::default()).await;
    let slow = tokio::spawn(request(addr, "/slow"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    shutdown.cancel();
    let reply = slow.await.unwrap();
    assert!(
        reply.starts_with("HTTP/1.1 200") && reply.ends_with("done"),
        "{reply}"
    );
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("serve returns once its connections are closed")
        .unwrap();
    // No longer accepting.
    assert!(TcpStream::connect(addr).await.is_err());
}

/// A runtime with many workers runs several accept loops on the one
/// socket (one per four workers): every connection is served once, and
/// shutdown stops them all and closes the socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 12)]
async fn accept_loops_per_worker_serve_and_stop_together() {
    let (addr, shutdown, task) = start(HttpServerOptions::default()).await;
    let clients: Vec<_> = (0..60)
        .map(|_| tokio::spawn(request(addr, "/peer")))
        .collect();
    for client in clients {
        let reply = client.await.unwrap();
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        assert!(reply.ends_with("127.0.0.1"), "{reply}");
    }
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("every loop stops")
        .unwrap();
    assert!(TcpStream::connect(addr).await.is_err());
}
