//! A request's source address can be forged: what the server sends to an
//! address that never acknowledged anything must stay about as small as
//! what was sent in its name, while a real client that loses packets
//! still gets its file. Loopback is normally exempt from per-source
//! limits, so these servers exempt nothing.

mod common;
#[macro_use]
mod tftp_support;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::*;
use dialtone_tftp::tftp::TftpOptions;
use tftp_support::*;

both_modes!(
    a_request_never_acknowledged_gets_little_and_no_error,
    a_flood_of_write_requests_gets_at_most_a_burst_of_errors,
    a_real_client_still_downloads,
    a_client_losing_its_first_data_twice_still_downloads,
);

const FILE: &str = "001565000001.cfg";

fn unexempt(timeout: Duration) -> TftpOptions {
    TftpOptions {
        per_source_exempt: vec![],
        timeout,
        ..Default::default()
    }
}

/// Every packet that arrives until `quiet` passes without one (or 20 s).
fn drain(s: &UdpSocket, quiet: Duration) -> Vec<(Vec<u8>, SocketAddr)> {
    s.set_read_timeout(Some(quiet)).unwrap();
    let (mut packets, mut buf) = (Vec::new(), vec![0u8; 70_000]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        match s.recv_from(&mut buf) {
            Ok((n, from)) => packets.push((buf[..n].to_vec(), from)),
            Err(_) => break,
        }
    }
    packets
}

fn count(packets: &[(Vec<u8>, SocketAddr)], opcode: u8) -> usize {
    packets.iter().filter(|(p, _)| p[1] == opcode).count()
}

/// A forged request's answer goes to whoever owns the address: the first
/// block, one resend, and no error at the end (53 bytes in, at most
/// 1,032 out, where it used to be three blocks and an error).
async fn a_request_never_acknowledged_gets_little_and_no_error(mode: Mode) {
    let f = Fixture::new().await;
    let timeout = Duration::from_millis(300);
    let server = Server::start(mode, f.provisioner.clone(), unexempt(timeout));
    let s = client();
    s.send_to(&request(1, FILE, &[]), server.addr).unwrap();
    // Long after the transfer has given up (two timeouts).
    let packets = drain(&s, Duration::from_secs(3));
    assert!(count(&packets, 3) >= 1, "not answered at all: {packets:?}");
    assert!(
        count(&packets, 3) <= 2,
        "{} DATA packets",
        count(&packets, 3)
    );
    assert_eq!(count(&packets, 5), 0, "an ERROR was reflected: {packets:?}");
}

/// Refusals are answered from the listening port for every request:
/// past a burst, a source's get none.
async fn a_flood_of_write_requests_gets_at_most_a_burst_of_errors(mode: Mode) {
    let f = Fixture::new().await;
    let server = Server::start(
        mode,
        f.provisioner.clone(),
        unexempt(Duration::from_secs(2)),
    );
    let s = client();
    for _ in 0..300 {
        s.send_to(&request(2, "upload.log", &[]), server.addr)
            .unwrap();
    }
    let packets = drain(&s, Duration::from_secs(1));
    let errors = count(&packets, 5);
    assert!(errors >= 1, "the first refusal must be answered");
    // A burst of 64, and at 20 a second a few more while they came.
    assert!(errors <= 80, "{errors} errors for 300 requests");
    // Refusals past the burst cost nothing: a source that slows down is
    // answered again, where each refusal used to push its silence on.
    s.send_to(&request(2, "upload.log", &[]), server.addr)
        .unwrap();
    let packets = drain(&s, Duration::from_secs(1));
    assert_eq!(
        count(&packets, 5),
        1,
        "a source that slowed down is answered"
    );
}

/// Nothing above costs a client that acknowledges what it gets.
async fn a_real_client_still_downloads(mode: Mode) {
    let f = Fixture::new().await;
    let server = Server::start(
        mode,
        f.provisioner.clone(),
        unexempt(Duration::from_secs(1)),
    );
    let want = expected(&f, FILE);
    for options in [&[][..], &[("blksize", "64"), ("tsize", "0")][..]] {
        let (data, _, _) = fetch_raw(server.addr, FILE, options);
        assert_eq!(data, want, "{options:?}");
    }
}

/// A phone whose first DATA is lost repeats its request; lost again (the
/// one resend by timer), it repeats it again, and that earns one more.
async fn a_client_losing_its_first_data_twice_still_downloads(mode: Mode) {
    let f = Fixture::new().await;
    let timeout = Duration::from_millis(500);
    let server = Server::start(mode, f.provisioner.clone(), unexempt(timeout));
    let want = expected(&f, FILE);
    let s = client();
    let ask = request(1, FILE, &[]);
    s.send_to(&ask, server.addr).unwrap();
    for lost in ["the first DATA", "its resend"] {
        let (p, _) = recv(&s);
        assert_eq!(p[..4], [0, 3, 0, 1], "{lost}: {p:?}");
        s.send_to(&ask, server.addr).unwrap();
    }
    let (p, peer) = recv(&s);
    assert_eq!(
        p[..4],
        [0, 3, 0, 1],
        "no resend for the repeated request: {p:?}"
    );
    let mut data = p[4..].to_vec();
    let mut last = p.len() - 4 < 512;
    let mut next = 1u16;
    ack(&s, peer, next);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !last {
        assert!(Instant::now() < deadline, "transfer did not finish");
        let (p, from) = recv(&s);
        assert_ne!(p[1], 5, "error: {p:?}");
        if from != peer || u16::from_be_bytes([p[2], p[3]]) != next + 1 {
            continue;
        }
        next += 1;
        data.extend_from_slice(&p[4..]);
        last = p.len() - 4 < 512;
        ack(&s, peer, next);
    }
    assert_eq!(data, want);
}
