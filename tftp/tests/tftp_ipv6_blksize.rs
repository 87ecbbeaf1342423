//! The block size limit is sized for IPv4 (1468 + 4 TFTP + 8 UDP + 20
//! IPv4 = a 1500-byte MTU); an IPv6 header is 20 bytes longer, so an IPv6
//! client is granted 20 bytes less, and its packets are not fragmented.
//! Loopback only.

mod common;
#[macro_use]
mod tftp_support;

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use common::*;
use dialtone_tftp::tftp::TftpOptions;
use tftp_support::*;

both_modes!(
    an_ipv6_client_gets_a_block_that_fits_the_mtu,
    an_ipv4_client_gets_the_configured_limit,
);

/// The blksize the server's OACK grants a client on `from` asking 1468.
fn granted_blksize(from: &str, server: SocketAddr) -> String {
    let s = UdpSocket::bind(from).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let asked = [("blksize", "1468"), ("tsize", "0")];
    s.send_to(&request(1, "001565000001.cfg", &asked), server)
        .unwrap();
    let (reply, peer) = recv(&s);
    assert_eq!(reply[1], 6, "expected an OACK, got {reply:?}");
    // Ends the transfer: nothing more is read.
    s.send_to(b"\x00\x05\x00\x00done\x00", peer).unwrap();
    let fields: Vec<String> = reply[2..]
        .split(|b| *b == 0)
        .map(|f| String::from_utf8_lossy(f).into())
        .collect();
    let at = fields.iter().position(|f| f == "blksize").expect("blksize");
    fields[at + 1].clone()
}

/// Whether this host has IPv6 loopback (some containers have none).
fn has_ipv6_loopback() -> bool {
    let bound = UdpSocket::bind("[::1]:0");
    if let Err(e) = &bound {
        eprintln!("skipped: [::1] cannot be bound: {e}");
    }
    bound.is_ok()
}

async fn an_ipv6_client_gets_a_block_that_fits_the_mtu(mode: Mode) {
    if !has_ipv6_loopback() {
        return;
    }
    let f = Fixture::new().await;
    let server = Server::start_on(
        "[::1]:0",
        mode,
        f.provisioner.clone(),
        TftpOptions::default(),
    );
    assert_eq!(granted_blksize("[::1]:0", server.addr), "1448");
    // A configured limit is lowered the same 20 bytes for it.
    let configured = TftpOptions {
        blksize_limit: 1400,
        ..Default::default()
    };
    let server = Server::start_on("[::1]:0", mode, f.provisioner.clone(), configured);
    assert_eq!(granted_blksize("[::1]:0", server.addr), "1380");
}

async fn an_ipv4_client_gets_the_configured_limit(mode: Mode) {
    let f = Fixture::new().await;
    let server = Server::start(mode, f.provisioner.clone(), TftpOptions::default());
    assert_eq!(granted_blksize("127.0.0.1:0", server.addr), "1468");
    // On a dual-stack listener an IPv4 client is an IPv4-mapped IPv6
    // address, and its packets still carry IPv4 headers.
    if !has_ipv6_loopback() {
        return;
    }
    let server = Server::start_on(
        "[::]:0",
        mode,
        f.provisioner.clone(),
        TftpOptions::default(),
    );
    let to: SocketAddr = format!("127.0.0.1:{}", server.addr.port()).parse().unwrap();
    assert_eq!(granted_blksize("127.0.0.1:0", to), "1468");
}
