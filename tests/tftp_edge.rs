//! The TFTP server's defences and modes against the real binary: the
//! negotiated timeout's cap and the bound on a stalled transfer, the
//! per-source share, refusals answered from the listening socket with
//! rate-limited log lines, and netascii with a real client. 127.0.0.x
//! addresses stand for distinct sources. Loopback only; every wait is
//! bounded.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const DEMO_YEALINK: &str = "0015654aa937.cfg";

/// A client socket on `ip` (127.0.0.N: a source of its own).
fn client_on(ip: &str) -> UdpSocket {
    let s = UdpSocket::bind((ip, 0)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

fn recv(s: &UdpSocket) -> (Vec<u8>, SocketAddr) {
    let mut buf = vec![0u8; 70_000];
    let (n, from) = s.recv_from(&mut buf).expect("server answered in time");
    buf.truncate(n);
    (buf, from)
}

fn oack_options(packet: &[u8]) -> Vec<(String, String)> {
    assert_eq!(packet[1], 6, "expected an OACK, got {packet:?}");
    let fields: Vec<String> = packet[2..]
        .split(|b| *b == 0)
        .filter(|f| !f.is_empty())
        .map(|f| String::from_utf8_lossy(f).into())
        .collect();
    fields
        .chunks(2)
        .map(|c| (c[0].clone(), c.get(1).cloned().unwrap_or_default()))
        .collect()
}

fn error_message(packet: &[u8]) -> (u16, String) {
    assert_eq!(packet[1], 5, "expected an ERROR, got {packet:?}");
    (
        u16::from_be_bytes([packet[2], packet[3]]),
        String::from_utf8_lossy(&packet[4..])
            .trim_end_matches('\0')
            .to_string(),
    )
}

/// The value of an unlabelled series (or the sum of a labelled one's
/// samples that carry `label`) in a scrape of `/metrics`.
fn metric(server: &Server, name: &str, label: &str) -> f64 {
    let (_, body) = server.try_get("/metrics").expect("/metrics answers");
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.split([' ', '{']).next() == Some(name) && (label.is_empty() || l.contains(label))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Reads a whole file on `s` after its first answer `first` from `peer`,
/// acknowledging every block; the bytes.
fn finish(s: &UdpSocket, mut packet: Vec<u8>, peer: SocketAddr, blksize: usize) -> Vec<u8> {
    if packet[1] == 6 {
        s.send_to(&[0, 4, 0, 0], peer).unwrap();
        packet = recv(s).0;
    }
    let mut data = Vec::new();
    let mut expected = 1u16;
    for _ in 0..10_000 {
        assert_eq!(packet[1], 3, "expected DATA, got {packet:?}");
        let block = u16::from_be_bytes([packet[2], packet[3]]);
        if block == expected {
            data.extend_from_slice(&packet[4..]);
            expected = expected.wrapping_add(1);
        }
        s.send_to(&[0, 4, packet[2], packet[3]], peer).unwrap();
        if block == expected.wrapping_sub(1) && packet.len() - 4 < blksize {
            return data;
        }
        packet = recv(s).0;
    }
    panic!("transfer did not end");
}

tftp_modes!(
    test: a_long_timeout_is_declined_and_a_stalled_transfer_ends_with_an_error,
    one_source_gets_its_share_and_past_it_an_error,
    a_source_that_never_acknowledges_is_dropped_past_a_few,
    refusals_come_from_the_listener_and_their_log_lines_are_limited,
    netascii_is_converted_for_a_real_client_and_on_the_wire
);

fn a_long_timeout_is_declined_and_a_stalled_transfer_ends_with_an_error(mode: TftpMode) {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let server = Server::start_with_env(
        dir.path(),
        &url,
        &["--demo"],
        &mode.with(&[
            ("DIALTONE_PROVISIONING__TFTP_MAX_TIMEOUT_S", "60"),
            ("DIALTONE_PROVISIONING__TFTP_STALL_S", "2"),
        ]),
    );
    // Past the cap: declined (RFC 2349 allows no other value), the other
    // options still acknowledged.
    let s = client_on("127.0.0.2");
    let request = rrq_with(
        DEMO_YEALINK,
        "octet",
        &[("timeout", "255"), ("blksize", "512")],
    );
    s.send_to(&request, server.tftp_addr).unwrap();
    let (oack, _) = recv(&s);
    let options = oack_options(&oack);
    assert!(
        options.contains(&("blksize".into(), "512".into())),
        "{options:?}"
    );
    assert!(!options.iter().any(|(k, _)| k == "timeout"), "{options:?}");

    // Within the cap: accepted as asked. The client acknowledges the OACK
    // and then nothing more: at 60 s x 5 sends it would hold its slot for
    // 5 minutes; the stall bound ends it with an error packet within
    // seconds (the packet goes to a client that has acknowledged
    // something, loopback or not).
    let stuck = client_on("127.0.0.3");
    stuck
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let request = rrq_with(DEMO_YEALINK, "octet", &[("timeout", "60")]);
    stuck.send_to(&request, server.tftp_addr).unwrap();
    let (oack, peer) = recv(&stuck);
    assert_eq!(
        oack_options(&oack),
        [(String::from("timeout"), String::from("60"))]
    );
    stuck.send_to(&[0, 4, 0, 0], peer).unwrap();
    let (data, _) = recv(&stuck);
    assert_eq!(&data[..4], &[0, 3, 0, 1]);
    let (code, message) = error_message(&recv(&stuck).0);
    assert_eq!(code, 0);
    assert!(message.contains("timed out"), "{message}");
    let ended = wait_until(Duration::from_secs(10), || {
        metric(&server, "dialtone_tftp_active_transfers", "") == 0.0
    });
    assert!(ended.is_some(), "slots still held: {}", server.stderr());
    assert!(metric(&server, "dialtone_tftp_stalled_total", "") >= 2.0);
    // The port is closed: a late ACK reaches no transfer.
    stuck.send_to(&[0, 4, 0, 0], peer).unwrap();
    assert_eq!(server.stop(), 0);
}

fn one_source_gets_its_share_and_past_it_an_error(mode: TftpMode) {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let server = Server::start_with_env(
        dir.path(),
        &url,
        &["--demo"],
        &mode.with(&[
            ("DIALTONE_PROVISIONING__TFTP_MAX_PER_SOURCE", "2"),
            // The held transfers must outlive the rest of the test.
            ("DIALTONE_PROVISIONING__TFTP_TIMEOUT_MS", "5000"),
            ("DIALTONE_PROVISIONING__TFTP_STALL_S", "60"),
            (
                "DIALTONE_PROVISIONING__TFTP_PER_SOURCE_EXEMPT",
                "[\"127.0.0.9\"]",
            ),
        ]),
    );
    let want = http_get(server.prov_addr, &format!("/{DEMO_YEALINK}"))
        .unwrap()
        .1
        .into_bytes();
    let request = rrq(DEMO_YEALINK);
    // Two transfers from 127.0.0.2 run (never acknowledged yet)...
    let held: Vec<(UdpSocket, Vec<u8>, SocketAddr)> = (0..2)
        .map(|_| {
            let s = client_on("127.0.0.2");
            s.send_to(&request, server.tftp_addr).unwrap();
            let (first, peer) = recv(&s);
            assert_eq!(first[1], 3, "{first:?}");
            (s, first, peer)
        })
        .collect();
    // ...a third gets an error, from the listening port itself...
    let third = client_on("127.0.0.2");
    third.send_to(&request, server.tftp_addr).unwrap();
    let (packet, from) = recv(&third);
    let (code, message) = error_message(&packet);
    assert_eq!((code, from), (0, server.tftp_addr));
    assert!(message.contains("too many transfers"), "{message}");
    // ...while another source, and an exempt one past the share, are served.
    let other = client_on("127.0.0.3");
    other.send_to(&request, server.tftp_addr).unwrap();
    let (first, peer) = recv(&other);
    assert_eq!(finish(&other, first, peer, 512), want);
    for _ in 0..3 {
        let s = client_on("127.0.0.9");
        s.send_to(&request, server.tftp_addr).unwrap();
        let (first, peer) = recv(&s);
        assert_eq!(finish(&s, first, peer, 512), want);
    }
    // The held transfers finish normally and give the share back.
    for (s, first, peer) in held {
        assert_eq!(finish(&s, first, peer, 512), want);
    }
    let again = client_on("127.0.0.2");
    let freed = wait_until(Duration::from_secs(10), || {
        again.send_to(&request, server.tftp_addr).unwrap();
        let (first, peer) = recv(&again);
        first[1] == 3 && finish(&again, first, peer, 512) == want
    });
    assert!(freed.is_some(), "127.0.0.2 never got its share back");
    assert!(
        metric(
            &server,
            "dialtone_tftp_refused_total",
            "reason=\"per_source\""
        ) >= 1.0
    );
    assert_eq!(server.stop(), 0);
}

/// A forged source never ACKs. Its requests past a few unacknowledged
/// transfers get no answer at all (nothing reflected at the address's real
/// owner), and a client that does ACK is served as before.
fn a_source_that_never_acknowledges_is_dropped_past_a_few(mode: TftpMode) {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let server = Server::start_with_env(
        dir.path(),
        &url,
        &["--demo"],
        &mode.with(&[
            ("DIALTONE_PROVISIONING__TFTP_MAX_UNACKED_PER_SOURCE", "3"),
            // The limit applies once a quarter of the slots are taken.
            ("DIALTONE_PROVISIONING__TFTP_MAX_TRANSFERS", "12"),
            ("DIALTONE_PROVISIONING__TFTP_TIMEOUT_MS", "5000"),
            ("DIALTONE_PROVISIONING__TFTP_STALL_S", "60"),
            ("DIALTONE_PROVISIONING__TFTP_PER_SOURCE_EXEMPT", "[]"),
        ]),
    );
    let request = rrq(DEMO_YEALINK);
    let held: Vec<(UdpSocket, Vec<u8>, SocketAddr)> = (0..3)
        .map(|_| {
            let s = client_on("127.0.0.4");
            s.send_to(&request, server.tftp_addr).unwrap();
            let (first, peer) = recv(&s);
            assert_eq!(first[1], 3, "{first:?}");
            (s, first, peer)
        })
        .collect();
    let dropped = client_on("127.0.0.4");
    dropped
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    dropped.send_to(&request, server.tftp_addr).unwrap();
    let mut buf = [0u8; 600];
    assert!(
        dropped.recv_from(&mut buf).is_err(),
        "a fourth unacknowledged transfer got an answer"
    );
    // Another source is not held back by this one.
    let other = client_on("127.0.0.6");
    other.send_to(&request, server.tftp_addr).unwrap();
    let (first, other_peer) = recv(&other);
    assert_eq!(first[1], 3);
    // One ACK proves a client is real: its source has room again, and the
    // dropped client's retransmitted request is served.
    let (s, _, peer) = &held[0];
    s.send_to(&[0, 4, 0, 1], *peer).unwrap();
    let (next, _) = recv(s); // the ACK has been taken: block 2 or the end
    assert!(next[1] == 3 || next[1] == 5, "{next:?}");
    dropped.send_to(&request, server.tftp_addr).unwrap();
    let (first, dropped_peer) = recv(&dropped);
    assert_eq!(first[1], 3, "{first:?}");
    assert!(metric(&server, "dialtone_tftp_refused_total", "reason=\"unacked\"") >= 1.0);
    // The clients end their transfers, so the server stops at once.
    for (s, _, peer) in &held {
        s.send_to(&[0, 5, 0, 0, 0], *peer).unwrap();
    }
    other.send_to(&[0, 5, 0, 0, 0], other_peer).unwrap();
    dropped.send_to(&[0, 5, 0, 0, 0], dropped_peer).unwrap();
    assert_eq!(server.stop(), 0);
}

fn refusals_come_from_the_listener_and_their_log_lines_are_limited(mode: TftpMode) {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let server = Server::start_with_env(dir.path(), &url, &["--demo"], &mode.env());
    let s = client_on("127.0.0.2");
    let started = Instant::now();
    const WRITES: usize = 300;
    let mut from_listener = 0;
    for _ in 0..WRITES {
        s.send_to(&rrq("x.cfg")[..], server.tftp_addr).unwrap();
        let mut wrq = rrq("x.cfg");
        wrq[1] = 2;
        s.send_to(&wrq, server.tftp_addr).unwrap();
        // The unknown file's error (after the provisioning core) and the
        // write's (at once), in either order: both from the listening
        // port, never from a port bound for the occasion.
        let mut codes = Vec::new();
        for _ in 0..2 {
            let (packet, from) = recv(&s);
            codes.push(error_message(&packet).0);
            if from == server.tftp_addr {
                from_listener += 1;
            }
        }
        codes.sort();
        assert_eq!(codes, [1, 2]);
    }
    assert_eq!(from_listener, 2 * WRITES);
    // A malformed request and an unsupported mode: errors too.
    for bad in [&b"\0\x01x.cfg\0octet"[..], &rrq_with("x.cfg", "mail", &[])] {
        s.send_to(bad, server.tftp_addr).unwrap();
        let (packet, from) = recv(&s);
        assert_eq!((error_message(&packet).0, from), (4, server.tftp_addr));
    }
    // Three hundred refused writes: a line a second at most, not one each.
    let seconds = started.elapsed().as_secs() as usize;
    let lines = wait_until(Duration::from_secs(5), || {
        server.stderr().contains("TFTP write refused")
    })
    .map(|_| server.stderr().matches("TFTP write refused").count());
    let lines = lines.expect("the first refused write is logged");
    assert!(lines <= seconds + 2, "{lines} lines in {seconds} s");
    assert!(metric(&server, "dialtone_tftp_refused_total", "reason=\"write\"") >= WRITES as f64);
    assert_eq!(server.stop(), 0);
}

/// Netascii as RFC 1350 has it: LF as CR LF, CR as CR NUL.
fn to_netascii(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for &b in bytes {
        match b {
            b'\n' => out.extend_from_slice(b"\r\n"),
            b'\r' => out.extend_from_slice(b"\r\0"),
            b => out.push(b),
        }
    }
    out
}

fn netascii_is_converted_for_a_real_client_and_on_the_wire(mode: TftpMode) {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let statics = dir.path().join("static");
    std::fs::create_dir(&statics).unwrap();
    // Bare CR, CR LF and LF, and enough of them to cross block edges.
    let text: Vec<u8> = b"line one\nold mac\rdos line\r\n"
        .iter()
        .copied()
        .cycle()
        .take(3000)
        .collect();
    std::fs::write(statics.join("notes.bin"), &text).unwrap();
    let server = Server::start_with_env(
        dir.path(),
        &url,
        &["--demo"],
        &mode.with(&[(
            "DIALTONE_PROVISIONING__STATIC_DIR",
            statics.to_str().unwrap(),
        )]),
    );
    let config = http_get(server.prov_addr, &format!("/{DEMO_YEALINK}"))
        .unwrap()
        .1
        .into_bytes();
    assert!(config.contains(&b'\n'));

    // tftp-hpa in netascii mode turns what it receives back into the
    // stored bytes: only a correct conversion survives the round trip
    // (sent as octet, "dos line\r\n" would come back as "dos line\n").
    let port = server.tftp_addr.port().to_string();
    for (file, want) in [(DEMO_YEALINK, &config), ("notes.bin", &text)] {
        let out = dir.path().join(format!("{file}.ascii"));
        let status = Command::new("tftp")
            .args(["-m", "netascii", "127.0.0.1", &port, "-c", "get", file])
            .arg(&out)
            .status()
            .expect("tftp-hpa is installed by scripts/test");
        assert!(status.success(), "{file}");
        let got = std::fs::read(&out).unwrap();
        assert!(&got == want, "{file}: {:?}", String::from_utf8_lossy(&got));
    }

    // On the wire, in small blocks so pairs fall across block edges: the
    // converted bytes, and tsize the converted size (rendered files) or
    // left out (stored files, whose converted size is not known up front).
    for (file, want, tsize) in [(DEMO_YEALINK, &config, true), ("notes.bin", &text, false)] {
        let s = client_on("127.0.0.2");
        let request = rrq_with(file, "netascii", &[("blksize", "8"), ("tsize", "0")]);
        s.send_to(&request, server.tftp_addr).unwrap();
        let (oack, peer) = recv(&s);
        let options = oack_options(&oack);
        let converted = to_netascii(want);
        match tsize {
            true => assert!(
                options.contains(&("tsize".into(), converted.len().to_string())),
                "{options:?}"
            ),
            false => assert!(!options.iter().any(|(k, _)| k == "tsize"), "{options:?}"),
        }
        let got = finish(&s, oack, peer, 8);
        assert!(
            got == converted,
            "{file}: {:?}",
            String::from_utf8_lossy(&got)
        );
    }
    assert_eq!(server.stop(), 0);
}
