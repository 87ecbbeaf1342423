//! Large bodies and the clients that read them: one that stops reading
//! is cut off, one that reads a few bytes at a time gives its place to a
//! newcomer (over TLS too), and one that reads at full speed or steadily
//! keeps its place and gets the whole body.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{drained, request, start, tls_pair, tls_request, BIG};
use crate::http_server::HttpServerOptions;

/// A client that asks for a large file and then reads nothing loses its
/// connection once the writes have stalled for `write_stall`, and its
/// slot with it, whether the response went out on the accept loop's own
/// first poll or through hyper (a keep-alive connection's second request).
#[tokio::test]
async fn a_client_that_stops_reading_is_cut_off() {
    let (addr, shutdown, task) = start(HttpServerOptions {
        max_connections: 1,
        write_stall: Duration::from_millis(300),
        ..HttpServerOptions::default()
    })
    .await;
    for requests in [
        "GET /big HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /peer HTTP/1.1\r\nHost: x\r\n\r\nGET /big HTTP/1.1\r\nHost: x\r\n\r\n",
    ] {
        // A small receive window, so the server's writes block early.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut stalled = socket.connect(addr).await.unwrap();
        stalled.write_all(requests.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1200)).await;
        // Its slot (the only one) is free again.
        let served = request(addr, "/peer").await;
        assert!(served.starts_with("HTTP/1.1 200"), "{served}");
        // What it reads now ends short of the body.
        let mut got = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), stalled.read_to_end(&mut got)).await;
        assert!(got.len() < BIG, "the whole body came after the stall");
    }
    shutdown.cancel();
    drained(task).await;
}

/// A response larger than the socket buffers arrives whole before the
/// connection closes (plain TCP leaves the FIN to `close`).
#[tokio::test]
async fn a_large_response_arrives_whole_before_the_close() {
    let (addr, shutdown, task) = start(HttpServerOptions::default()).await;
    let reply = request(addr, "/big").await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{}", &reply[..40]);
    let body = reply.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    assert_eq!(body.len(), BIG);
    shutdown.cancel();
    drained(task).await;
}

/// A connection with a small receive window, so the server's writes wait
/// on it early.
async fn small_window(addr: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(addr).await.unwrap()
}

/// Asks for `/peer` and keeps the connection if it was served.
pub(crate) async fn served_and_kept(addr: SocketAddr) -> Option<TcpStream> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /peer HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut reply = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .expect("an answer");
        let n = read.unwrap_or(0);
        reply.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&reply);
        if n == 0 || text.ends_with("127.0.0.1") {
            return text.starts_with("HTTP/1.1 200").then_some(stream);
        }
    }
}

/// What a client still gets when it reads at full speed: short of the
/// body if its connection was ended.
async fn rest_of(stream: &mut TcpStream) -> usize {
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut got)).await;
    got.len()
}

/// Clients that take a large file a few bytes at a time (never stalled
/// long enough for `write_stall`) hold a full listener only until a
/// window has marked them: then each newcomer takes the place of one of
/// them, whether its response went out on the first-request path or
/// through hyper. Idle connections are not taken.
#[tokio::test]
async fn newcomers_take_the_places_of_slow_readers() {
    let (addr, shutdown, task) = start(HttpServerOptions {
        max_connections: 2,
        slow_window: Duration::from_millis(200),
        // Idle connections are taken first (`http_server_idle_tests.rs`);
        // here only slow readers are.
        evict_idle_after: Duration::from_secs(600),
        ..HttpServerOptions::default()
    })
    .await;
    let mut slow = Vec::new();
    for requests in [
        "GET /big HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /peer HTTP/1.1\r\nHost: x\r\n\r\nGET /big HTTP/1.1\r\nHost: x\r\n\r\n",
    ] {
        let mut stream = small_window(addr).await;
        stream.write_all(requests.as_bytes()).await.unwrap();
        slow.push(stream);
    }
    let mut kept = Vec::new();
    for _ in 0..2 {
        let mut served = None;
        for _ in 0..100 {
            for stream in &mut slow {
                let _ = stream.try_read(&mut [0u8; 16]);
            }
            served = served_and_kept(addr).await;
            if served.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        kept.push(served.expect("a newcomer takes a slow reader's place"));
    }
    for stream in &mut slow {
        assert!(
            rest_of(stream).await < BIG,
            "a slow reader got the whole body"
        );
    }
    // The newcomers, idle for less than `evict_idle_after`, keep their places.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let refused = request(addr, "/peer").await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    drop(kept);
    shutdown.cancel();
    drained(task).await;
}

/// A full listener whose connections are between requests (after bodies
/// they took at full speed), for less than `evict_idle_after`, still
/// refuses newcomers: fast readers are never taken for slow ones.
#[tokio::test]
async fn connections_that_are_not_slow_keep_their_places() {
    let (addr, shutdown, task) = start(HttpServerOptions {
        max_connections: 2,
        slow_window: Duration::from_millis(100),
        evict_idle_after: Duration::from_secs(600),
        ..HttpServerOptions::default()
    })
    .await;
    let mut idle = Vec::new();
    for (requests, responses) in [
        ("GET /big HTTP/1.1\r\nHost: x\r\n\r\n", 1),
        (
            "GET /peer HTTP/1.1\r\nHost: x\r\n\r\nGET /big HTTP/1.1\r\nHost: x\r\n\r\n",
            2,
        ),
    ] {
        let mut stream = small_window(addr).await;
        stream.write_all(requests.as_bytes()).await.unwrap();
        let mut stream = tokio::io::BufReader::new(stream);
        let mut length = 0;
        for _ in 0..responses {
            length = read_response(&mut stream).await;
        }
        assert_eq!(length, BIG);
        idle.push(stream);
    }
    // Several windows pass.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..3 {
        let refused = request(addr, "/peer").await;
        assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    }
    for stream in &mut idle {
        stream
            .write_all(b"GET /peer HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(read_response(stream).await, "127.0.0.1".len());
    }
    drop(idle);
    shutdown.cancel();
    drained(task).await;
}

/// Reads one response with a Content-Length and gives its body's length.
pub(crate) async fn read_response<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut tokio::io::BufReader<S>,
) -> usize {
    use tokio::io::AsyncBufReadExt;
    let mut line = String::new();
    let mut length = None;
    let mut status = None;
    loop {
        line.clear();
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read_line(&mut line))
            .await
            .expect("a response")
            .unwrap();
        assert!(n > 0, "closed before the response ended");
        if status.is_none() {
            status = Some(line.clone());
            continue;
        }
        if line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse::<u64>().ok();
            }
        }
    }
    let status = status.unwrap_or_default();
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let length = length.expect("a Content-Length");
    let copied = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::copy(&mut (&mut *stream).take(length), &mut tokio::io::sink()),
    )
    .await
    .expect("the body")
    .unwrap();
    copied as usize
}

/// A client that reads a large body steadily, far above the slowest
/// rate, is never taken for a slow reader: it gets the whole body while
/// newcomers are refused.
#[tokio::test]
async fn a_steady_reader_is_not_evicted() {
    let (addr, shutdown, task) = start(HttpServerOptions {
        max_connections: 1,
        slow_window: Duration::from_millis(300),
        ..HttpServerOptions::default()
    })
    .await;
    let mut reader = small_window(addr).await;
    reader
        .write_all(b"GET /big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut got = vec![0u8; 4096];
    let first = tokio::time::timeout(Duration::from_secs(10), reader.read(&mut got))
        .await
        .expect("the response starts")
        .unwrap();
    // About 4 KiB a millisecond: thousands of times the slowest rate, and
    // a second or more for the whole body.
    let reader = tokio::spawn(async move {
        let mut total = first;
        let mut chunk = [0u8; 4096];
        loop {
            match reader.read(&mut chunk).await {
                Ok(0) | Err(_) => return total,
                Ok(n) => total += n,
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    let mut refused = 0;
    while !reader.is_finished() {
        let reply = request(addr, "/peer").await;
        if reply.starts_with("HTTP/1.1 503") {
            refused += 1;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(refused > 0, "no newcomer came while the body was read");
    let total = reader.await.unwrap();
    assert!(
        total > BIG,
        "the steady reader was cut off at {total} bytes"
    );
    shutdown.cancel();
    drained(task).await;
}

/// HTTPS goes through the same stream: a TLS client that reads nothing
/// of a large body gives its place to a newcomer once a window has
/// marked it.
#[tokio::test]
async fn https_slow_readers_make_room_too() {
    let dir = tempfile::tempdir().unwrap();
    let (acceptor, connector) = tls_pair(dir.path());
    let (addr, shutdown, task) = start(HttpServerOptions {
        max_connections: 1,
        tls: Some(acceptor),
        slow_window: Duration::from_millis(200),
        ..HttpServerOptions::default()
    })
    .await;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut slow = connector
        .connect(name, small_window(addr).await)
        .await
        .unwrap();
    slow.write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut served = String::new();
    for _ in 0..100 {
        served = tls_request(addr, &connector, "/peer").await;
        if served.starts_with("HTTP/1.1 200") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served.starts_with("HTTP/1.1 200"), "{served}");
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut got)).await;
    assert!(got.len() < BIG, "the slow TLS reader got the whole body");
    shutdown.cancel();
    drained(task).await;
}
