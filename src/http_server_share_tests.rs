//! Each source's share of a listener's connections: one host is held to
//! it while others are served, exempt networks have none, and its
//! refusals are counted by listener.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::{drained, read_to_end, request, start};
use crate::http_server::HttpServerOptions;

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
    // Through NAT64 a global IPv4 client is matched as itself, as its
    // share is counted; the prefix holds no private one (RFC 6052).
    let networks: Vec<ipnet::IpNet> = ["8.8.8.0/24", "10.0.0.0/8"]
        .iter()
        .map(|n| n.parse().unwrap())
        .collect();
    assert!(crate::http_server::exempt(
        &networks,
        ip("64:ff9b::808:808")
    ));
    assert!(!crate::http_server::exempt(&networks, ip("64:ff9b::a01:5")));
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
