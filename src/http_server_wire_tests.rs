//! The provisioning listener byte for byte on real loopback sockets, for
//! the shapes of traffic phones and proxies send: a first request answered
//! straight from the socket, then keep-alive, split, pipelined, HEAD,
//! HTTP/1.0, bodies, streamed and mis-sized responses and a panicking
//! handler. Each case is checked on what the client receives, so it holds
//! whichever path (the first-request path or hyper) served it.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::http_server::{serve, HttpServerOptions};

const FILE: &str = "#!version:1.0.0.1\naccount.1.enable = 1\n";

fn router() -> Router {
    Router::new()
        .route("/file.cfg", get(|| async { FILE }))
        .route(
            "/echo",
            post(|body: String| async move { format!("got {}", body.len()) }),
        )
        .route(
            "/stream",
            get(|| async {
                let pieces = ["one,", "two,", "three"].map(Ok::<_, std::io::Error>);
                Body::from_stream(futures::stream::iter(pieces))
            }),
        )
        .route(
            "/overlong",
            get(|| async {
                let mut response = "0123456789".into_response();
                response
                    .headers_mut()
                    .insert(header::CONTENT_LENGTH, HeaderValue::from_static("4"));
                response
            }),
        )
        .route("/unchanged", get(|| async { StatusCode::NOT_MODIFIED }))
        .route(
            "/panic",
            get(|| async {
                if std::hint::black_box(true) {
                    panic!("handler bug");
                }
                Response::new(Body::empty())
            }),
        )
}

async fn start() -> (SocketAddr, CancellationToken, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(serve(
        listener,
        router(),
        HttpServerOptions::default(),
        shutdown.clone(),
    ));
    (addr, shutdown, task)
}

async fn stop(shutdown: CancellationToken, task: tokio::task::JoinHandle<()>) {
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the server stops")
        .unwrap();
}

/// One response read off a connection that may stay open: its head
/// (lower-cased header names) and a body of its Content-Length.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one response; `buffered` holds bytes read past the previous one.
/// Without a Content-Length the body runs to the close. `head_only`: the
/// answer to a HEAD, which has no body whatever its length says.
async fn read_reply(stream: &mut TcpStream, buffered: &mut Vec<u8>, head_only: bool) -> Reply {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let end = loop {
        if let Some(at) = buffered.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        assert!(
            fill(stream, buffered, deadline).await > 0,
            "closed inside a head"
        );
    };
    let head = String::from_utf8(buffered.drain(..end).collect()).unwrap();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    assert!(status_line.starts_with("HTTP/1.1 "), "{status_line}");
    let status = status_line[9..12].parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (name, value) = l.split_once(':').unwrap();
            (name.to_ascii_lowercase(), value.trim().to_string())
        })
        .collect();
    let length = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map(|(_, v)| v.parse::<usize>().unwrap());
    let body = match (head_only, length) {
        (true, _) => Vec::new(),
        (false, Some(length)) => {
            while buffered.len() < length {
                assert!(
                    fill(stream, buffered, deadline).await > 0,
                    "closed inside a body"
                );
            }
            buffered.drain(..length).collect()
        }
        (false, None) => {
            while fill(stream, buffered, deadline).await > 0 {}
            std::mem::take(buffered)
        }
    };
    Reply {
        status,
        headers,
        body,
    }
}

/// Appends what the next read brings; 0 at the close.
async fn fill(
    stream: &mut TcpStream,
    buffered: &mut Vec<u8>,
    deadline: tokio::time::Instant,
) -> usize {
    let mut chunk = [0u8; 8192];
    let n = tokio::time::timeout_at(deadline, stream.read(&mut chunk))
        .await
        .expect("the server answers in time")
        .unwrap();
    buffered.extend_from_slice(&chunk[..n]);
    n
}

/// Whether the server closes the connection (after everything already read).
async fn closed(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(Duration::from_secs(10), stream.read(&mut byte)).await,
        Ok(Ok(0))
    )
}

#[tokio::test]
async fn keep_alive_serves_requests_after_the_first() {
    let (addr, shutdown, task) = start().await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut buffered = Vec::new();
    for _ in 0..3 {
        stream
            .write_all(b"GET /file.cfg HTTP/1.1\r\nHost: p\r\n\r\n")
            .await
            .unwrap();
        let reply = read_reply(&mut stream, &mut buffered, false).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body, FILE.as_bytes());
        assert_eq!(reply.header("connection"), None, "kept open");
        assert!(reply.header("date").is_some());
    }
    stream
        .write_all(b"GET /missing HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let reply = read_reply(&mut stream, &mut buffered, false).await;
    assert_eq!(reply.status, 404);
    assert!(closed(&mut stream).await);
    stop(shutdown, task).await;
}

#[tokio::test]
async fn a_request_split_across_packets_is_served() {
    let (addr, shutdown, task) = start().await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    stream.write_all(b"GET /file.cfg HTT").await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    stream.write_all(b"P/1.1\r\nHost: p\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    stream
        .write_all(b"Connection: close\r\n\r\n")
        .await
        .unwrap();
    let reply = read_reply(&mut stream, &mut Vec::new(), false).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, FILE.as_bytes());
    assert!(closed(&mut stream).await);
    stop(shutdown, task).await;
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let (addr, shutdown, task) = start().await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            b"GET /file.cfg HTTP/1.1\r\nHost: p\r\n\r\n\
              GET /missing HTTP/1.1\r\nHost: p\r\n\r\n\
              GET /stream HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
    let mut buffered = Vec::new();
    let first = read_reply(&mut stream, &mut buffered, false).await;
    assert_eq!(
        (first.status, first.body.as_slice()),
        (200, FILE.as_bytes())
    );
    let second = read_reply(&mut stream, &mut buffered, false).await;
    assert_eq!(second.status, 404);
    let third = read_reply(&mut stream, &mut buffered, false).await;
    assert_eq!(third.status, 200);
    assert!(String::from_utf8_lossy(&third.body).contains("three"));
    stop(shutdown, task).await;
}

#[tokio::test]
async fn head_gets_the_length_and_no_body() {
    let (addr, shutdown, task) = start().await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut buffered = Vec::new();
    stream
        .write_all(b"HEAD /file.cfg HTTP/1.1\r\nHost: p\r\n\r\n")
        .await
        .unwrap();
    let reply = read_reply(&mut stream, &mut buffered, true).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("content-length"),
        Some(FILE.len().to_string().as_str())
    );
    // No body bytes: the next answer on the connection starts right away.
    stream
        .write_all(b"GET /file.cfg HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let reply = read_reply(&mut stream, &mut buffered, false).await;
    assert_eq!(
        (reply.status, reply.body.as_slice()),
        (200, FILE.as_bytes())
    );
    assert!(closed(&mut stream).await);
    stop(shutdown, task).await;
}

/// A 304 carries no Content-Length (RFC 9110 8.6 allows only the 200's own
/// length there, which a 304 handler does not know) and no body, to GET and
/// HEAD alike, first request or kept-alive (hyper's) or pipelined.
#[tokio::test]
async fn not_modified_has_no_length_and_no_body() {
    let (addr, shutdown, task) = start().await;
    for method in ["GET", "HEAD"] {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let mut buffered = Vec::new();
        for which in ["first", "kept-alive"] {
            stream
                .write_all(format!("{method} /unchanged HTTP/1.1\r\nHost: p\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let reply = read_reply(&mut stream, &mut buffered, true).await;
            assert_eq!(
                (reply.status, reply.header("content-length")),
                (304, None),
                "{method}, {which} request"
            );
        }
        stream
            .write_all(
                format!(
                    "{method} /unchanged HTTP/1.1\r\nHost: p\r\n\r\n\
                     GET /file.cfg HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n"
                )
                .as_bytes(),
            )
            .await
            .unwrap();
        let reply = read_reply(&mut stream, &mut buffered, true).await;
        assert_eq!(
            (reply.status, reply.header("content-length")),
            (304, None),
            "{method}, pipelined"
        );
        // No body bytes after any of them: this answer starts right away.
        let next = read_reply(&mut stream, &mut buffered, false).await;
        assert_eq!((next.status, next.body.as_slice()), (200, FILE.as_bytes()));
    }
    stop(shutdown, task).await;
}

#[tokio::test]
async fn http_1_0_is_answered_and_closed() {
    let (addr, shutdown, task) = start().await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // Old phones send no Host; some ask for keep-alive the 1.0 way.
    stream
        .write_all(b"GET /file.cfg HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .await
        .unwrap();
    let reply = read_reply(&mut stream, &mut Vec::new(), false).await;
    assert_eq!(
        (reply.status, reply.body.as_slice()),
        (200, FILE.as_bytes())
    );
    assert!(closed(&mut stream).await);
    stop(shutdown, task).await;
}

#[tokio::test]
async fn a_body_of_unknown_length_ends_with_the_connection() {
    let (addr, shutdown, task) = start().await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /stream HTTP/1.1\r\nHost: p\r\n\r\n")
        .await
        .unwrap();
    let reply = read_reply(&mut stream, &mut Vec::new(), false).await;
    assert_eq!(reply.status, 200);
    // Without a length, the close is what ends the body.
    assert_eq!(reply.header("connection"), Some("close"));
    assert_eq!(reply.body, b"one,two,three");
    stop(shutdown, task).await;
}

#[tokio::test]
async fn a_body_longer_than_its_length_is_cut_with_the_connection() {
    let (addr, shutdown, task) = start().await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /overlong HTTP/1.1\r\nHost: p\r\n\r\n")
        .await
        .unwrap();
    let mut buffered = Vec::new();
    let reply = read_reply(&mut stream, &mut buffered, false).await;
    assert_eq!((reply.status, reply.body.as_slice()), (200, &b"0123"[..]));
    // Nothing past the declared length may reach the client, where it
    // would be taken for the start of the next answer.
    assert!(
        buffered.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&buffered)
    );
    let mut rest = [0u8; 64];
    match tokio::time::timeout(Duration::from_millis(300), stream.read(&mut rest)).await {
        Err(_) | Ok(Ok(0)) | Ok(Err(_)) => {}
        Ok(Ok(n)) => panic!("{:?} after the body", String::from_utf8_lossy(&rest[..n])),
    }
    stop(shutdown, task).await;
}

#[tokio::test]
async fn a_panicking_handler_gets_a_500_and_the_server_goes_on() {
    let (addr, shutdown, task) = start().await;
    for _ in 0..2 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /panic HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let reply = read_reply(&mut stream, &mut Vec::new(), false).await;
        assert_eq!(reply.status, 500);
    }
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /file.cfg HTTP/1.1\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let reply = read_reply(&mut stream, &mut Vec::new(), false).await;
    assert_eq!(
        (reply.status, reply.body.as_slice()),
        (200, FILE.as_bytes())
    );
    stop(shutdown, task).await;
}

#[tokio::test]
async fn a_request_with_a_body_is_read_whole() {
    let (addr, shutdown, task) = start().await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"POST /echo HTTP/1.1\r\nHost: p\r\nContent-Length: 5\r\n\r\nhello")
        .await
        .unwrap();
    let mut buffered = Vec::new();
    let reply = read_reply(&mut stream, &mut buffered, false).await;
    assert_eq!((reply.status, reply.body.as_slice()), (200, &b"got 5"[..]));
    // The connection goes on after a body, too.
    stream
        .write_all(b"GET /file.cfg HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let reply = read_reply(&mut stream, &mut buffered, false).await;
    assert_eq!(
        (reply.status, reply.body.as_slice()),
        (200, FILE.as_bytes())
    );
    stop(shutdown, task).await;
}

#[tokio::test]
async fn garbage_gets_a_400() {
    let (addr, shutdown, task) = start().await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n")
        .await
        .unwrap();
    let reply = read_reply(&mut stream, &mut Vec::new(), false).await;
    assert_eq!(reply.status, 400);
    stop(shutdown, task).await;
}

/// A request head is read up to 64 KiB (hyper's default was ~400 KiB of a
/// client's bytes), on a kept-alive request too, whose buffer has room for
/// more in one read; a body goes through the same buffer in pieces, so an
/// upload past that size is still read whole.
#[tokio::test]
async fn an_overlong_head_gets_a_431_and_a_long_body_is_still_read() {
    let (addr, shutdown, task) = start().await;
    let head = format!(
        "GET /file.cfg HTTP/1.1\r\nHost: p\r\nUser-Agent: {}\r\n\r\n",
        "x".repeat(100 * 1024)
    );
    for kept_alive in [false, true] {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let mut buffered = Vec::new();
        if kept_alive {
            stream
                .write_all(b"GET /file.cfg HTTP/1.1\r\nHost: p\r\n\r\n")
                .await
                .unwrap();
            let reply = read_reply(&mut stream, &mut buffered, false).await;
            assert_eq!(reply.status, 200);
        }
        // The server may answer and close before it has read the rest.
        let _ = stream.write_all(head.as_bytes()).await;
        let reply = read_reply(&mut stream, &mut buffered, true).await;
        assert_eq!(reply.status, 431, "kept alive: {kept_alive}");
    }

    let mut stream = TcpStream::connect(addr).await.unwrap();
    let body = "y".repeat(1024 * 1024);
    stream
        .write_all(
            format!(
                "POST /echo HTTP/1.1\r\nHost: p\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let reply = read_reply(&mut stream, &mut Vec::new(), false).await;
    assert_eq!(
        (reply.status, String::from_utf8_lossy(&reply.body).as_ref()),
        (200, "got 1048576")
    );
    stop(shutdown, task).await;
}
