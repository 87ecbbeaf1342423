//! The TFTP front end with real clients (atftp, tftp-hpa, installed by
//! scripts/test) and a raw client for what they cannot do: option
//! negotiation edge cases, refused writes and paths, and the transfer cap.
//! Loopback only; every wait is bounded.

mod common;
#[macro_use]
mod tftp_support;

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use dialtone_tftp::tftp::TftpOptions;
use dialtone_tftp::Provisioner;
use tftp_support::*;

// ---- tests ----

both_modes!(
    real_clients_get_the_rendered_bytes,
    options_are_negotiated,
    a_lost_ack_is_recovered_by_retransmission,
    writes_unknown_files_and_escapes_are_refused,
    the_transfer_cap_answers_busy,
    unacknowledged_requests_give_way_to_a_phone,
    duplicate_acks_cause_no_data_storm,
    a_client_error_frees_the_slot_at_once,
    the_next_file_from_the_same_port_is_served_at_once,
    a_client_that_only_hears_the_listening_port,
    every_answer_leaves_from_the_address_asked,
    a_source_is_known_for_a_phone_only_once_it_acknowledges,
    a_client_behind_the_minimum_rate_is_cut_off,
);

async fn real_clients_get_the_rendered_bytes(mode: Mode) {
    let f = Fixture::new().await;
    let server = Server::start(mode, f.provisioner.clone(), TftpOptions::default());
    let want = expected(&f, "001565000001.cfg");
    let dir = tempfile::tempdir().unwrap();
    let port = server.addr.port().to_string();

    for (n, options) in [
        vec![],
        vec!["blksize 8", "tsize 0"],
        vec!["blksize 1428", "timeout 1"],
    ]
    .iter()
    .enumerate()
    {
        let out = dir.path().join(format!("atftp-{n}"));
        let mut cmd = Command::new("atftp");
        for o in options {
            cmd.arg("--option").arg(o);
        }
        let status = cmd
            .args(["--get", "-r", "001565000001.cfg", "-l"])
            .arg(&out)
            .args(["127.0.0.1", &port])
            .status()
            .expect("atftp is installed by scripts/test");
        assert!(status.success(), "atftp {options:?} failed");
        assert_eq!(std::fs::read(&out).unwrap(), want, "atftp {options:?}");
    }

    let out = dir.path().join("tftp-hpa");
    let status = Command::new("tftp")
        .args([
            "-m",
            "binary",
            "127.0.0.1",
            &port,
            "-c",
            "get",
            "001565000001.cfg",
        ])
        .arg(&out)
        .status()
        .expect("tftp-hpa is installed by scripts/test");
    assert!(status.success());
    assert_eq!(std::fs::read(&out).unwrap(), want);
}

/// A fixture whose phone 00:15:65:00:00:09 has eighty lines, a file of
/// many blocks at every size but the largest, and that file's bytes.
async fn many_blocks() -> (Fixture, Vec<u8>) {
    let f = Fixture::new().await;
    f.write(&[phone(
        "00:15:65:00:00:09",
        dialtone_sync::Family::Yealink,
        "T46S",
        &["A"; 80],
    )])
    .await;
    let want = expected(&f, "001565000009.cfg");
    (f, want)
}

async fn options_are_negotiated(mode: Mode) {
    let (f, want) = many_blocks().await;
    assert!(want.len() > 6000, "test file too small: {}", want.len());
    let server = Server::start(
        mode,
        f.provisioner.clone(),
        TftpOptions {
            blksize_limit: 65464,
            ..Default::default()
        },
    );
    for blksize in ["8", "512", "1428", "65464"] {
        for window in ["1", "4", "16"] {
            let options = [("blksize", blksize), ("tsize", "0"), ("windowsize", window)];
            let (data, oack, packets) = fetch_raw(server.addr, "001565000009.cfg", &options);
            assert_eq!(data, want, "blksize {blksize} windowsize {window}");
            assert!(
                oack.contains(&("blksize".into(), blksize.into())),
                "{oack:?}"
            );
            assert!(
                oack.contains(&("tsize".into(), want.len().to_string())),
                "{oack:?}"
            );
            assert!(
                oack.contains(&("windowsize".into(), window.into())),
                "{oack:?}"
            );
            let blocks = want.len() / blksize.parse::<usize>().unwrap() + 1;
            // No duplicate storm: at most one window resent in all.
            assert!(
                packets <= blocks + window.parse::<usize>().unwrap(),
                "{packets} packets for {blocks} blocks"
            );
        }
    }
    let (_, oack, _) = fetch_raw(server.addr, "001565000009.cfg", &[("timeout", "3")]);
    assert!(oack.contains(&("timeout".into(), "3".into())), "{oack:?}");
    // Past the cap: declined, never answered with another value (RFC 2349).
    let (data, oack, _) = fetch_raw(
        server.addr,
        "001565000009.cfg",
        &[("timeout", "6"), ("tsize", "0")],
    );
    assert_eq!(data, want);
    assert_eq!(oack, [("tsize".into(), want.len().to_string())]);
}

async fn a_lost_ack_is_recovered_by_retransmission(mode: Mode) {
    let f = Fixture::new().await;
    let want = expected(&f, "001565000001.cfg");
    let server = Server::start(
        mode,
        f.provisioner.clone(),
        TftpOptions {
            timeout: Duration::from_millis(300),
            ..Default::default()
        },
    );
    let s = client();
    s.send_to(
        &request(1, "001565000001.cfg", &[("blksize", "8")]),
        server.addr,
    )
    .unwrap();
    let (oack, peer) = recv(&s);
    assert_eq!(oack[1], 6);
    ack(&s, peer, 0);
    let (first, _) = recv(&s);
    // "Lose" our ACK of block 1: the server must send block 1 again.
    let (again, _) = recv(&s);
    assert_eq!(first, again, "block 1 was not retransmitted");
    let mut data = first[4..].to_vec();
    ack(&s, peer, 1);
    let mut expected_block = 2u16;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(Instant::now() < deadline);
        let (p, _) = recv(&s);
        let block = u16::from_be_bytes([p[2], p[3]]);
        if block == expected_block {
            data.extend_from_slice(&p[4..]);
            ack(&s, peer, block);
            expected_block += 1;
            if p.len() - 4 < 8 {
                break;
            }
        }
    }
    assert_eq!(data, want);
}

async fn writes_unknown_files_and_escapes_are_refused(mode: Mode) {
    let f = Fixture::new().await;
    let server = Server::start(mode, f.provisioner.clone(), TftpOptions::default());
    let (code, text) = error_of(server.addr, &request(2, "001565000001.cfg", &[]));
    assert_eq!(code, 2, "WRQ must be an access violation");
    assert!(text.contains("Read-only server"), "{text}");
    let (code, _) = error_of(server.addr, &request(1, "001565999999.cfg", &[]));
    assert_eq!(code, 1, "unknown phone is file-not-found");
    let long = format!("{}.cfg", "a".repeat(300));
    for (path, why) in [
        ("../etc/passwd", "parent directory in path"),
        ("/../etc/passwd", "parent directory in path"),
        ("a/../../etc/shadow", "parent directory in path"),
        ("..", "parent directory in path"),
        ("..\\..\\windows\\win.ini", "backslash in path"),
        ("C:\\boot.ini", "backslash in path"),
        ("c:/boot.ini", "colon in path"),
        ("%2e%2e/etc/passwd", "percent sign in path"),
        ("~root/.ssh/id_rsa", "home directory in path"),
        ("configs/../../001565000001.cfg", "parent directory in path"),
        ("line\nbreak.cfg", "control character in path"),
        (long.as_str(), "path too long"),
    ] {
        let (code, text) = error_of(server.addr, &request(1, path, &[]));
        assert_eq!(code, 2, "{path:?} was not refused as an access violation");
        // Which rule, in our words: never the client's own text.
        assert_eq!(text, format!("Access violation: {why}"), "{path:?}");
    }
}

async fn the_transfer_cap_answers_busy(mode: Mode) {
    let f = Fixture::new().await;
    let server = Server::start(
        mode,
        f.provisioner.clone(),
        TftpOptions {
            max_transfers: 1,
            timeout: Duration::from_millis(500),
            max_send_retries: 2,
            ..Default::default()
        },
    );
    // A client that takes a slot, acknowledges the OACK and then nothing
    // (one that never acknowledged anything would give way, as a forged
    // source's request does).
    let stuck = client();
    stuck
        .send_to(
            &request(1, "001565000001.cfg", &[("blksize", "8")]),
            server.addr,
        )
        .unwrap();
    let (oack, port) = recv(&stuck);
    assert_eq!(oack[1], 6);
    ack(&stuck, port, 0);
    let (first, _) = recv(&stuck);
    assert_eq!(first[1], 3);
    let (code, message) = error_of(server.addr, &request(1, "001565000002.cfg", &[]));
    assert_eq!(code, 0, "{message}");
    assert!(message.contains("busy"), "{message}");
    // Once the stuck transfer gives up, the slot is free again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = client();
        s.send_to(&request(1, "001565000002.cfg", &[]), server.addr)
            .unwrap();
        let (p, _) = recv(&s);
        if p[1] == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "slot never freed");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Sources that ask and never acknowledge (forged ones, one address
/// each, pass every per-source check) take every slot; a phone asking then
/// is served, its request taking the oldest of their slots.
async fn unacknowledged_requests_give_way_to_a_phone(mode: Mode) {
    let f = Fixture::new().await;
    let want = expected(&f, "001565000002.cfg");
    let server = Server::start(
        mode,
        f.provisioner.clone(),
        TftpOptions {
            max_transfers: 4,
            // Loopback is exempt by default; here it stands for the internet.
            per_source_exempt: Vec::new(),
            timeout: Duration::from_secs(5),
            ..Default::default()
        },
    );
    let forged: Vec<UdpSocket> = (2..=5)
        .map(|n| {
            let s = UdpSocket::bind(format!("127.0.0.{n}:0")).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s.send_to(&request(1, "001565000001.cfg", &[]), server.addr)
                .unwrap();
            assert_eq!(recv(&s).0[1], 3, "each took a slot");
            s
        })
        .collect();
    let (data, _, _) = fetch_raw(server.addr, "001565000002.cfg", &[]);
    assert_eq!(data, want);
    drop(forged);
}

async fn duplicate_acks_cause_no_data_storm(mode: Mode) {
    let f = Fixture::new().await;
    let want = expected(&f, "001565000001.cfg");
    let server = Server::start(mode, f.provisioner.clone(), TftpOptions::default());
    let s = client();
    s.send_to(
        &request(1, "001565000001.cfg", &[("blksize", "8")]),
        server.addr,
    )
    .unwrap();
    let (oack, peer) = recv(&s);
    assert_eq!(oack[1], 6);
    ack(&s, peer, 0);
    let blocks = want.len() / 8 + 1;
    let (mut data, mut expected_block, mut packets) = (Vec::new(), 1u16, 0usize);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(Instant::now() < deadline);
        let (p, _) = recv(&s);
        packets += 1;
        let block = u16::from_be_bytes([p[2], p[3]]);
        if block == expected_block {
            data.extend_from_slice(&p[4..]);
            // Every ACK sent three times, as a confused client might.
            for _ in 0..3 {
                ack(&s, peer, block);
            }
            expected_block += 1;
            if p.len() - 4 < 8 {
                break;
            }
        }
    }
    assert_eq!(data, want);
    // Sorcerer's Apprentice: duplicate ACKs must not each trigger a resend.
    assert!(
        packets <= blocks + 2,
        "{packets} DATA packets for {blocks} blocks"
    );
}

async fn a_client_error_frees_the_slot_at_once(mode: Mode) {
    let f = Fixture::new().await;
    let server = Server::start(
        mode,
        f.provisioner.clone(),
        TftpOptions {
            max_transfers: 1,
            // Long enough that only the ERROR can free the slot in time.
            timeout: Duration::from_secs(5),
            ..Default::default()
        },
    );
    let quitter = client();
    quitter
        .send_to(&request(1, "001565000001.cfg", &[]), server.addr)
        .unwrap();
    let (first, peer) = recv(&quitter);
    assert_eq!(first[1], 3);
    // The phone gives up (say, it found the file unusable).
    quitter.send_to(b"\0\x05\0\0cancelled\0", peer).unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let s = client();
        s.send_to(&request(1, "001565000002.cfg", &[]), server.addr)
            .unwrap();
        let (p, _) = recv(&s);
        if p[1] == 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the slot stayed taken after the client's ERROR"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

async fn the_next_file_from_the_same_port_is_served_at_once(mode: Mode) {
    let f = Fixture::new().await;
    let server = Server::start(mode, f.provisioner.clone(), TftpOptions::default());
    let s = client();
    for file in ["001565000001.cfg", "001565000002.cfg", "001565000001.cfg"] {
        let want = expected(&f, file);
        s.send_to(&request(1, file, &[]), server.addr).unwrap();
        let mut data = Vec::new();
        loop {
            // `recv` fails the test after its timeout: a request ignored
            // because the previous transfer was still winding down.
            let (p, peer) = recv(&s);
            assert_eq!(p[1], 3, "{file}: {p:?}");
            data.extend_from_slice(&p[4..]);
            ack(&s, peer, u16::from_be_bytes([p[2], p[3]]));
            if p.len() - 4 < 512 {
                break;
            }
        }
        assert_eq!(data, want, "{file}");
    }
}

/// A client behind a strict NAT or firewall: its socket is connected to
/// the server's listening address and port, so nothing from another port
/// reaches it. The file's bytes, or why there are none; at most three
/// silent timeouts, so it always ends.
fn strict_fetch(
    server: SocketAddr,
    file: &str,
    options: &[(&str, &str)],
) -> Result<Vec<u8>, String> {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.connect(server).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let blksize: usize = options
        .iter()
        .find(|(k, _)| *k == "blksize")
        .map_or(512, |(_, v)| v.parse().unwrap());
    let mut last = request(1, file, options);
    s.send(&last).unwrap();
    let (mut data, mut next, mut silent) = (Vec::new(), 1u16, 0);
    let mut buf = vec![0u8; 70_000];
    for _ in 0..2_000 {
        let n = match s.recv(&mut buf) {
            Ok(n) => n,
            Err(_) => {
                silent += 1;
                if silent > 3 {
                    return Err("no answer from the listening port".into());
                }
                s.send(&last).unwrap();
                continue;
            }
        };
        match buf[1] {
            6 => last = vec![0, 4, 0, 0],
            3 if u16::from_be_bytes([buf[2], buf[3]]) == next => {
                data.extend_from_slice(&buf[4..n]);
                last = vec![0, 4, buf[2], buf[3]];
                next = next.wrapping_add(1);
                if n - 4 < blksize {
                    s.send(&last).unwrap();
                    return Ok(data);
                }
            }
            3 => {}
            _ => return Err(format!("error packet: {:?}", &buf[..n])),
        }
        s.send(&last).unwrap();
    }
    Err("too many packets".into())
}

async fn a_client_that_only_hears_the_listening_port(mode: Mode) {
    let f = Fixture::new().await;
    let server = Server::start(mode, f.provisioner.clone(), TftpOptions::default());
    for (file, options) in [
        ("001565000001.cfg", &[][..]),
        (
            "001565000002.cfg",
            &[("blksize", "1428"), ("tsize", "0")][..],
        ),
        (
            "001565000001.cfg",
            &[("blksize", "8"), ("windowsize", "4")][..],
        ),
    ] {
        let got = strict_fetch(server.addr, file, options);
        match mode {
            Mode::SinglePort => assert_eq!(got.unwrap(), expected(&f, file), "{file} {options:?}"),
            // The answer leaves from a port of the transfer's own, which
            // this client never hears: it gives up, bounded, with no file.
            Mode::Ported => assert!(got.is_err(), "{file} {options:?}: {got:?}"),
        }
    }
}

/// Reads `file` from `server` over a socket bound to `client_ip`, block by
/// block; returns the bytes and every address an answer came from.
fn fetch_noting_sources(
    client_ip: &str,
    server: SocketAddr,
    file: &str,
) -> (Vec<u8>, Vec<SocketAddr>) {
    let s = UdpSocket::bind((client_ip, 0)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.send_to(&request(1, file, &[]), server).unwrap();
    let (mut data, mut sources) = (Vec::new(), Vec::new());
    for expected_block in 1..=200u16 {
        let (packet, from) = recv(&s);
        sources.push(from);
        assert_eq!(packet[1], 3, "expected DATA, got {packet:?}");
        assert_eq!(u16::from_be_bytes([packet[2], packet[3]]), expected_block);
        data.extend_from_slice(&packet[4..]);
        ack(&s, from, expected_block);
        if packet.len() < 516 {
            return (data, sources);
        }
    }
    panic!("{file} did not end within 200 blocks");
}

/// A listener on a wildcard address (as on a host with a floating or
/// secondary address) answers every request from the address the phone
/// sent it to, not from whichever address the route back prefers
/// (127.0.0.1 here): data, refusals and errors alike; on `[::]` too, for
/// IPv4 phones. The listener is bound to the wildcard for this, but every
/// packet stays on loopback.
async fn every_answer_leaves_from_the_address_asked(mode: Mode) {
    let f = Fixture::new().await;
    for wildcard in ["0.0.0.0:0", "[::]:0"] {
        let provisioner = f.provisioner.clone();
        let server = Server::start_on(wildcard, mode, provisioner, TftpOptions::default());
        let port = server.addr.port();
        for asked in ["127.0.0.5", "127.0.0.6"] {
            let to: SocketAddr = format!("{asked}:{port}").parse().unwrap();
            let (data, sources) = fetch_noting_sources("127.0.0.9", to, "001565000001.cfg");
            assert_eq!(data, expected(&f, "001565000001.cfg"));
            for from in sources {
                assert_eq!(
                    from.ip().to_string(),
                    asked,
                    "{wildcard}: DATA from {from}, asked {to}"
                );
                if mode == Mode::SinglePort {
                    assert_eq!(from.port(), port);
                }
            }
            for (packet, code) in [
                (request(2, "001565000001.cfg", &[]), 2),
                (request(1, "001565999999.cfg", &[]), 1),
            ] {
                let s = UdpSocket::bind("127.0.0.9:0").unwrap();
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                s.send_to(&packet, to).unwrap();
                let (reply, from) = recv(&s);
                assert_eq!((reply[1], reply[3] as u16), (5, code), "{reply:?}");
                assert_eq!(from, to, "{wildcard}: the error to {to} came from {from}");
            }
        }
    }
}

/// A source that asked for a phone's own file is known for the phone (a
/// place that passes its bans for that phone's files), and the fetch is in
/// the phone's history, only once it acknowledges a packet: a forged
/// source never hears the answer, four of them took every place the phone
/// has, and each wrote the phone a history row at an address it never had.
/// (In single-port mode a forger can send that ACK too; README says what
/// that costs.)
async fn a_source_is_known_for_a_phone_only_once_it_acknowledges(mode: Mode) {
    let f = Fixture::new().await;
    let mac: dialtone_sync::Mac = "001565000001".parse().unwrap();
    let phone = f.mirror.load().phone_by_mac(&mac).unwrap().id;
    let (sink, writer) = dialtone_sync::history::channel(f.store.clone(), 100);
    let provisioner = Arc::new(
        Provisioner::new(
            f.mirror.clone(),
            dialtone_sync::testing::test_key(),
            dialtone_tftp::Shipped::load(f._dir.path(), 1).unwrap(),
            dialtone_tftp::ProvisionOptions::default(),
        )
        .with_history(sink),
    );
    let server = Server::start(mode, provisioner.clone(), TftpOptions::default());
    let known = |ip: &str| {
        provisioner
            .guard()
            .known()
            .knows(ip.parse().unwrap(), phone)
    };
    // A forged request: its answer goes nowhere that acknowledges it.
    let forged = UdpSocket::bind("127.0.0.6:0").unwrap();
    forged
        .send_to(&request(1, "001565000001.cfg", &[]), server.addr)
        .unwrap();
    let s = UdpSocket::bind("127.0.0.7:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // Small blocks: the ACK of the OACK is answered with block 1, which
    // leaves only after that ACK has been taken as proof, or not.
    s.send_to(
        &request(1, "001565000001.cfg", &[("blksize", "8")]),
        server.addr,
    )
    .unwrap();
    let (oack, from) = recv(&s);
    assert_eq!(oack[1], 6, "the OACK");
    assert!(!known("127.0.0.7"), "known before any acknowledgement");
    ack(&s, from, 0);
    let (data, _) = recv(&s);
    assert_eq!(data[..4], [0, 3, 0, 1], "the first block");
    let _ = mode;
    assert!(known("127.0.0.7"), "not known after its acknowledgement");
    // Done: the server need not wait for this transfer at its shutdown.
    s.send_to(b"\0\x05\0\0done\0", from).unwrap();
    drop(server);
    let cancel = tokio_util::sync::CancellationToken::new();
    cancel.cancel();
    writer.run(cancel, Duration::from_secs(10)).await;
    let boots = f.store.recent_boots(&mac, None, 10).await.unwrap();
    let from: Vec<&str> = boots.iter().map(|b| b.remote_ip.as_str()).collect();
    assert_eq!(from, ["127.0.0.7"], "history of the phone: {boots:?}");
    assert!(!known("127.0.0.6"));
}

/// A client that ACKs a block now and then, each within the stall bound,
/// used to hold its slot for as long as it liked. Behind the minimum rate
/// by more than the slack it is told so and its transfer ends; a client
/// that keeps up, asking meanwhile, gets its whole file.
async fn a_client_behind_the_minimum_rate_is_cut_off(mode: Mode) {
    let (f, want) = many_blocks().await;
    let server = Server::start(
        mode,
        f.provisioner.clone(),
        TftpOptions {
            min_rate: 1000,
            min_rate_slack: Duration::from_secs(3),
            ..Default::default()
        },
    );
    let s = UdpSocket::bind("127.0.0.8:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.send_to(
        &request(1, "001565000009.cfg", &[("blksize", "8")]),
        server.addr,
    )
    .unwrap();
    let (oack, peer) = recv(&s);
    assert_eq!(oack[1], 6);
    ack(&s, peer, 0);
    // 8 bytes every 100 ms: the whole file would take well over a minute.
    let mut ended = None;
    for n in 0..300 {
        let (packet, _) = recv(&s);
        if packet[1] == 5 {
            ended = Some(String::from_utf8_lossy(&packet[4..]).into_owned());
            break;
        }
        assert_eq!(packet[1], 3, "expected DATA, got {packet:?}");
        if n == 3 {
            let (data, _, _) = fetch_raw(server.addr, "001565000009.cfg", &[]);
            assert_eq!(data, want, "the client that keeps up");
        }
        std::thread::sleep(Duration::from_millis(100));
        ack(&s, peer, u16::from_be_bytes([packet[2], packet[3]]));
    }
    let ended = ended.expect("the slow client was never cut off");
    assert!(ended.contains("too slow"), "{ended}");
}
