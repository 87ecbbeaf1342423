//! A listener under a flood of connections over loopback: a few sources
//! holding every place still leave one for a host elsewhere, and a refusal
//! past the bound on refusals under way is still told 503.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinSet;

use super::HttpServerOptions;
use crate::http_server_tests::{drained, start};

const ASK: &[u8] = b"GET /peer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

async fn try_connect_from(from: &str, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(format!("{from}:0").parse().unwrap())?;
    socket.connect(addr).await
}

/// What the server sent before it closed, a reset ending it early.
async fn whatever_comes(stream: &mut TcpStream) -> String {
    let mut reply = Vec::new();
    let mut buffer = [0u8; 1024];
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while let Ok(read @ 1..) = stream.read(&mut buffer).await {
            reply.extend_from_slice(&buffer[..read]);
        }
    })
    .await;
    String::from_utf8_lossy(&reply).into_owned()
}

/// One flooding connection after another from `from`: half a request,
/// held until the server closes it, then again at once.
async fn trickle(from: &'static str, addr: SocketAddr) {
    for _ in 0..200 {
        let Ok(mut stream) = try_connect_from(from, addr).await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        if stream.write_all(b"GET /peer HTT").await.is_ok() {
            let mut rest = Vec::new();
            let _ = stream.read_to_end(&mut rest).await;
        }
    }
}

/// Four hosts, each within its share, fill the listener with half
/// requests and reconnect the moment one is closed. Every place is
/// younger than the 15 s after which any would go to any newcomer, yet a
/// host elsewhere is served: it takes one of the heaviest host's places
/// that has waited a second for its request.
#[tokio::test]
async fn a_host_elsewhere_gets_in_past_a_flood_from_a_few_sources() {
    let (addr, shutdown, task) = start(HttpServerOptions {
        max_connections: 24,
        max_per_source: 6,
        per_source_exempt: Vec::new(),
        header_timeout: Duration::from_secs(30),
        ..HttpServerOptions::default()
    })
    .await;
    let mut flood = JoinSet::new();
    for from in ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"] {
        for _ in 0..6 {
            flood.spawn(trickle(from, addr));
        }
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let mut served = 0;
    for _ in 0..10 {
        let mut phone = try_connect_from("127.0.0.9", addr).await.unwrap();
        phone.write_all(ASK).await.unwrap();
        if whatever_comes(&mut phone).await.starts_with("HTTP/1.1 200") {
            served += 1;
        }
    }
    assert!(
        served >= 8,
        "{served} of 10 fetches served during the flood"
    );
    flood.abort_all();
    shutdown.cancel();
    drained(task).await;
}

/// Past `MAX_REFUSALS` refusals waiting for their clients to close, a
/// newcomer to the full listener is still answered 503 (not closed with
/// its request unread, a reset to its client).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_past_the_bound_is_still_told_503() {
    let (addr, shutdown, task) = start(HttpServerOptions {
        max_connections: 1,
        ..HttpServerOptions::default()
    })
    .await;
    let mut holder = TcpStream::connect(addr).await.unwrap();
    holder.write_all(b"GET /peer HTT").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Each keeps its socket open after the answer: its refusal waits.
    let lingering = futures::future::join_all((0..super::MAX_REFUSALS + 14).map(|_| async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(ASK).await.unwrap();
        let mut status = [0u8; 12];
        let _ = stream.read_exact(&mut status).await;
        stream
    }))
    .await;
    let mut told = 0;
    for _ in 0..10 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(ASK).await.unwrap();
        if whatever_comes(&mut stream)
            .await
            .starts_with("HTTP/1.1 503")
        {
            told += 1;
        }
    }
    assert_eq!(told, 10, "refusals past the bound answered 503");
    drop((lingering, holder));
    shutdown.cancel();
    drained(task).await;
}
