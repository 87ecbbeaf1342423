//! A full listener makes room by closing connections that have sat idle
//! for `evict_idle_after`, the longest idle first: keep-alive ones between
//! requests, over plain TCP (answered on the first-request path or by
//! hyper) and TLS, and ones still without a whole first request (headers
//! trickling in, a TLS handshake left hanging). Connections idle for less
//! keep their places. Over TLS, a source past its share is closed without
//! a handshake.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::http_server::HttpServerOptions;
use crate::http_server_tests::{
    connect_from, drained, read_response, request, served_and_kept, start, tls_pair, tls_request,
};

/// How long a test waits for the server to close a connection.
const CLOSED_WITHIN: Duration = Duration::from_secs(10);

/// Whether the server has closed `stream`: it reads the end (or a reset)
/// with nothing before it.
async fn closed<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> bool {
    let mut rest = Vec::new();
    match tokio::time::timeout(CLOSED_WITHIN, stream.read_to_end(&mut rest)).await {
        Ok(_) => rest.is_empty(),
        Err(_) => false,
    }
}

#[tokio::test]
async fn newcomers_take_the_places_of_idle_keep_alive_connections() {
    let idle_after = Duration::from_secs(1);
    let (addr, shutdown, task) = start(HttpServerOptions {
        max_connections: 2,
        evict_idle_after: idle_after,
        ..HttpServerOptions::default()
    })
    .await;
    // Answered on the first-request path, then handed to hyper.
    let mut first = served_and_kept(addr).await.expect("served");
    // Two requests at once go to hyper, which answers both.
    let mut second = TcpStream::connect(addr).await.unwrap();
    second
        .write_all(b"GET /peer HTTP/1.1\r\nHost: x\r\n\r\nGET /peer HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut second = BufReader::new(second);
    for _ in 0..2 {
        assert_eq!(read_response(&mut second).await, "127.0.0.1".len());
    }
    // Idle, but not for long yet.
    let refused = request(addr, "/peer").await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    tokio::time::sleep(idle_after + Duration::from_millis(200)).await;
    // Each newcomer is served and keeps its connection: both places were
    // taken from the idle ones, the longest idle first.
    let newcomers = [
        served_and_kept(addr)
            .await
            .expect("a newcomer takes an idle place"),
        served_and_kept(addr)
            .await
            .expect("a newcomer takes an idle place"),
    ];
    assert!(
        closed(&mut first).await,
        "the longest idle connection is closed"
    );
    assert!(
        closed(&mut second).await,
        "the other idle connection is closed"
    );
    // The newcomers have not been idle long enough to go in turn.
    let refused = request(addr, "/peer").await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    drop(newcomers);
    shutdown.cancel();
    drained(task).await;
}

/// A request on a connection being served is never cut for a newcomer:
/// a connection whose handler is still working is not idle, and the
/// newcomer is refused.
#[tokio::test]
async fn a_connection_with_a_request_in_flight_keeps_its_place() {
    let (addr, shutdown, task) = start(HttpServerOptions {
        max_connections: 1,
        evict_idle_after: Duration::from_millis(50),
        ..HttpServerOptions::default()
    })
    .await;
    let mut busy = served_and_kept(addr).await.expect("served");
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Idle long enough, but asks again: the handler takes 300 ms.
    busy.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let refused = request(addr, "/peer").await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    let mut busy = BufReader::new(busy);
    assert_eq!(read_response(&mut busy).await, "done".len());
    shutdown.cancel();
    drained(task).await;
}

/// HTTPS: an idle TLS connection is closed the same way (hyper's own
/// close, with TLS's close_notify) for a newcomer.
#[tokio::test]
async fn https_idle_connections_make_room_too() {
    let dir = tempfile::tempdir().unwrap();
    let (acceptor, connector) = tls_pair(dir.path());
    let (addr, shutdown, task) = start(HttpServerOptions {
        max_connections: 1,
        tls: Some(acceptor),
        evict_idle_after: Duration::from_millis(300),
        ..HttpServerOptions::default()
    })
    .await;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut idle = BufReader::new(connector.connect(name, tcp).await.unwrap());
    idle.write_all(b"GET /peer HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut idle).await, "127.0.0.1".len());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let served = tls_request(addr, &connector, "/peer").await;
    assert!(served.starts_with("HTTP/1.1 200"), "{served}");
    assert!(closed(&mut idle).await, "the idle TLS connection is closed");
    shutdown.cancel();
    drained(task).await;
}

/// Half a request, or half a TLS handshake, holds a place only until the
/// listener is full and it has waited `evict_idle_after`: then a newcomer
/// takes it, where it used to be refused until `header_timeout`.
#[tokio::test]
async fn connections_without_a_whole_first_request_make_room() {
    // A first request may take half of `header_timeout` (here 600 ms).
    let (addr, shutdown, task) = start(HttpServerOptions {
        max_connections: 1,
        evict_idle_after: Duration::from_millis(100),
        header_timeout: Duration::from_millis(1200),
        ..HttpServerOptions::default()
    })
    .await;
    let mut trickling = TcpStream::connect(addr).await.unwrap();
    trickling.write_all(b"GET /peer HTT").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refused = request(addr, "/peer").await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let served = request(addr, "/peer").await;
    assert!(served.starts_with("HTTP/1.1 200"), "{served}");
    assert!(
        closed(&mut trickling).await,
        "the trickling client is closed"
    );
    shutdown.cancel();
    drained(task).await;

    let dir = tempfile::tempdir().unwrap();
    let (acceptor, connector) = tls_pair(dir.path());
    let (addr, shutdown, task) = start(HttpServerOptions {
        max_connections: 1,
        tls: Some(acceptor),
        evict_idle_after: Duration::from_millis(100),
        header_timeout: Duration::from_millis(1200),
        ..HttpServerOptions::default()
    })
    .await;
    let mut hanging = TcpStream::connect(addr).await.unwrap();
    hanging.write_all(b"\x16\x03\x01").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refused = tls_request(addr, &connector, "/peer").await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let served = tls_request(addr, &connector, "/peer").await;
    assert!(served.starts_with("HTTP/1.1 200"), "{served}");
    assert!(
        closed(&mut hanging).await,
        "the hanging handshake is closed"
    );
    shutdown.cancel();
    drained(task).await;
}

/// Over TLS, a source past its share gets no handshake (the listener
/// itself full still answers 503 over TLS, as above).
#[tokio::test]
async fn https_source_past_its_share_is_closed_without_a_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let (acceptor, connector) = tls_pair(dir.path());
    let (addr, shutdown, task) = start(HttpServerOptions {
        max_connections: 100,
        max_per_source: 1,
        per_source_exempt: Vec::new(),
        tls: Some(acceptor),
        ..HttpServerOptions::default()
    })
    .await;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tcp = connect_from("127.0.0.2", addr).await;
    let mut holder = connector.connect(name.clone(), tcp).await.unwrap();
    holder
        .write_all(b"GET /peer HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut holder = BufReader::new(holder);
    assert_eq!(read_response(&mut holder).await, "127.0.0.2".len());
    let tcp = connect_from("127.0.0.2", addr).await;
    let handshake = tokio::time::timeout(CLOSED_WITHIN, connector.connect(name.clone(), tcp)).await;
    assert!(
        matches!(handshake, Ok(Err(_))),
        "the handshake of a source past its share fails: {:?}",
        handshake.as_ref().map(|r| r.as_ref().map(|_| ()))
    );
    let tcp = connect_from("127.0.0.3", addr).await;
    let mut other = connector.connect(name, tcp).await.unwrap();
    other
        .write_all(b"GET /peer HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut other = BufReader::new(other);
    assert_eq!(read_response(&mut other).await, "127.0.0.3".len());
    drop((holder, other));
    shutdown.cancel();
    drained(task).await;
}
