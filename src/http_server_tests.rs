//! The provisioning listener's accept loop over real loopback sockets: the
//! peer address reaches handlers, the connection cap answers 503, a silent
//! client is cut off, and shutdown lets an open request finish.

use std::net::SocketAddr;
use std::time::Duration;

use crate::http_server::{serve, HttpServerOptions};
use axum::extract::ConnectInfo;
use axum::routing::get;
use axum::Router;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

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

/// A connection from `from` (a loopback address standing for a host).
pub(crate) async fn connect_from(from: &str, addr: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    socket.connect(addr).await.unwrap()
}

/// One host holds no more than its share of the connections; another is
/// served meanwhile, and an exempt network has no share.
#[tokio::test]
async fn one_source_holds_no_more_than_its_share() {
    let (addr, shutdown, task) = start(HttpServerOptions {
        max_connections: 100,
        max_per_source: 2,
        per_source_exempt: vec!["127.0.0.9/32".parse().unwrap()],
        ..HttpServerOptions::default()
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut holder = connect_from("127.0.0.2", addr).await;
        holder.write_all(b"GET /peer HTT").await.unwrap();
        held.push(holder);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let ask = |from: &'static str| async move {
        let mut stream = connect_from(from, addr).await;
        stream
            .write_all(b"GET /peer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        read_to_end(&mut stream).await
    };
    let refused = ask("127.0.0.2").await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    let other = ask("127.0.0.3").await;
    assert!(other.starts_with("HTTP/1.1 200"), "{other}");
    let mut exempt = Vec::new();
    for _ in 0..3 {
        let mut holder = connect_from("127.0.0.9", addr).await;
        holder.write_all(b"GET /peer HTT").await.unwrap();
        exempt.push(holder);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let fourth = ask("127.0.0.9").await;
    assert!(fourth.starts_with("HTTP/1.1 200"), "{fourth}");
    // The share comes back when a connection ends.
    drop(held.pop());
    let mut again = String::new();
    for _ in 0..50 {
        again = ask("127.0.0.2").await;
        if again.starts_with("HTTP/1.1 200") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(again.starts_with("HTTP/1.1 200"), "{again}");
    shutdown.cancel();
    drained(task).await;
}

/// An exempt network holds the client's own address: `::1/128` (the
/// default) and a single IPv6 address are exempt, not only whole /64s, and
/// an IPv4 client seen through a dual-stack socket is matched as IPv4.
#[test]
fn exempt_networks_hold_the_address_not_its_64() {
    let networks: Vec<ipnet::IpNet> = ["::1/128", "2001:db8::10/128", "192.0.2.0/24"]
        .iter()
        .map(|n| n.parse().unwrap())
        .collect();
    let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
    assert!(crate::http_server::exempt(&networks, ip("::1")));
    assert!(crate::http_server::exempt(&networks, ip("2001:db8::10")));
    assert!(!crate::http_server::exempt(&networks, ip("2001:db8::11")));
    assert!(crate::http_server::exempt(
        &networks,
        ip("::ffff:192.0.2.7")
    ));
    assert!(!crate::http_server::exempt(&networks, ip("198.51.100.1")));
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

/// Refusals are counted by listener (a fixed set), so the API listener's
/// (PBXs asking for caller names) are told apart from phones'. On this
/// test's one thread, the accept loop records to the local recorder.
#[tokio::test]
async fn refusals_are_counted_by_listener() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let _local = metrics::set_default_local_recorder(&recorder);
    let (addr, shutdown, task) = start(HttpServerOptions {
        max_connections: 2,
        max_per_source: 1,
        per_source_exempt: Vec::new(),
        listener: crate::http_server::Listener::Provisioning,
        ..HttpServerOptions::default()
    })
    .await;
    // The source's one connection, with half a request.
    let mut holder = TcpStream::connect(addr).await.unwrap();
    holder.write_all(b"GET /peer HTT").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let refused = request(addr, "/peer").await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    let scrape = handle.render();
    assert!(
        scrape.contains("dialtone_http_source_connections_shed_total{listener=\"provisioning\"} 1"),
        "{scrape}"
    );
    assert!(!scrape.contains("listener=\"api\""), "{scrape}");
    drop(holder);
    shutdown.cancel();
    drained(task).await;
}
