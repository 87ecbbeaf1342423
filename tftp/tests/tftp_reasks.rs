//! A client asking again from the same address and port for a file whose
//! transfer is still running: only a repeat of its request before it has
//! acknowledged anything is a retransmission; other options, a restart
//! after acknowledgements, or the same file again once a transfer has
//! ended are answered at once, not after the old transfer winds down.

mod common;
#[macro_use]
mod tftp_support;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::*;
use dialtone_tftp::tftp::TftpOptions;
use tftp_support::*;

both_modes!(
    other_options_right_after_an_oack_are_answered_at_once,
    a_client_restarting_mid_transfer_is_served_at_once,
    the_same_file_again_after_a_whole_transfer_is_served_at_once,
    an_identical_request_before_any_ack_is_a_retransmission,
);

const FILE: &str = "001565000001.cfg";

/// Long enough for any answer on loopback, shorter than any old transfer
/// takes to give up (its retries, 2 s apart by default).
const AT_ONCE: Duration = Duration::from_secs(3);

/// The first packet within `within` that `wanted` accepts, and whence.
fn wait_for(
    s: &UdpSocket,
    within: Duration,
    wanted: impl Fn(&[u8]) -> bool,
) -> Option<(Vec<u8>, SocketAddr)> {
    let deadline = Instant::now() + within;
    let mut buf = vec![0u8; 70_000];
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        s.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        if let Ok((n, from)) = s.recv_from(&mut buf) {
            if wanted(&buf[..n]) {
                return Some((buf[..n].to_vec(), from));
            }
        }
    }
}

fn oack_with(option: &'static str) -> impl Fn(&[u8]) -> bool {
    move |p: &[u8]| p[1] == 6 && p.windows(option.len()).any(|w| w == option.as_bytes())
}

fn abort(s: &UdpSocket, to: SocketAddr) {
    s.send_to(b"\0\x05\0\0done\0", to).unwrap();
}

/// The rest of a transfer from `peer` (packets from elsewhere, an older
/// transfer's resends, are skipped), from block `next` on.
fn finish(s: &UdpSocket, peer: SocketAddr, blksize: usize, next: u16) -> Vec<u8> {
    let (mut data, mut next) = (Vec::new(), next);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(Instant::now() < deadline, "transfer did not finish");
        let (p, from) = recv(s);
        if from != peer || p[1] != 3 {
            assert!(from != peer || p[1] != 5, "error: {p:?}");
            continue;
        }
        if u16::from_be_bytes([p[2], p[3]]) == next {
            data.extend_from_slice(&p[4..]);
            ack(s, peer, next);
            if p.len() - 4 < blksize {
                return data;
            }
            next += 1;
        }
    }
}

/// A PXE-style client asks for the size, aborts the OACK (or simply asks
/// anew), and at once asks for the file with the options it wants.
async fn other_options_right_after_an_oack_are_answered_at_once(mode: Mode) {
    let f = Fixture::new().await;
    let server = Server::start(mode, f.provisioner.clone(), TftpOptions::default());
    // Ported, the ERROR reaches the transfer's port and the new request the
    // listener at about the same time: a few tries catch either order.
    for aborted in [true, true, true, true, true, false] {
        let s = client();
        s.send_to(&request(1, FILE, &[("tsize", "0")]), server.addr)
            .unwrap();
        let (oack, first) = recv(&s);
        assert!(oack_with("tsize")(&oack), "{oack:?}");
        if aborted {
            s.send_to(b"\0\x05\0\x08tsize only\0", first).unwrap();
        }
        s.send_to(&request(1, FILE, &[("blksize", "1428")]), server.addr)
            .unwrap();
        let answer = wait_for(&s, AT_ONCE, oack_with("blksize"));
        let (_, second) = answer.unwrap_or_else(|| {
            panic!("the request with other options was ignored (aborted: {aborted})")
        });
        ack(&s, second, 0);
        assert_eq!(finish(&s, second, 1428, 1), expected(&f, FILE));
        if !aborted {
            abort(&s, first);
        }
    }
}

/// A phone that reboots halfway through a file asks for it again, the same
/// request from the same port: it has acknowledged blocks, so this is no
/// retransmission, and it gets the file from the start at once.
async fn a_client_restarting_mid_transfer_is_served_at_once(mode: Mode) {
    let f = Fixture::new().await;
    let server = Server::start(mode, f.provisioner.clone(), TftpOptions::default());
    let s = client();
    let ask = request(1, FILE, &[("blksize", "8")]);
    s.send_to(&ask, server.addr).unwrap();
    let (oack, first) = recv(&s);
    assert_eq!(oack[1], 6);
    ack(&s, first, 0);
    for block in 1..=3u16 {
        let (p, _) = recv(&s);
        assert_eq!(u16::from_be_bytes([p[2], p[3]]), block, "{p:?}");
        ack(&s, first, block);
    }
    let _block_4 = recv(&s);
    s.send_to(&ask, server.addr).unwrap();
    let (_, again) = wait_for(&s, AT_ONCE, oack_with("blksize"))
        .expect("the restarted request was ignored while the old transfer ran");
    ack(&s, again, 0);
    assert_eq!(finish(&s, again, 8, 1), expected(&f, FILE));
    if again != first {
        abort(&s, first);
    }
}

/// The whole file, then the same request again at once (a phone that
/// checks what it fetched): the transfer just ended, however soon its
/// end is noticed.
async fn the_same_file_again_after_a_whole_transfer_is_served_at_once(mode: Mode) {
    let f = Fixture::new().await;
    let server = Server::start(mode, f.provisioner.clone(), TftpOptions::default());
    let want = expected(&f, FILE);
    for _ in 0..10 {
        let s = client();
        for round in ["first", "again"] {
            s.send_to(&request(1, FILE, &[]), server.addr).unwrap();
            let (p, peer) = wait_for(&s, AT_ONCE, |p| p[..4] == [0, 3, 0, 1])
                .unwrap_or_else(|| panic!("{round}: no first block"));
            ack(&s, peer, 1);
            let mut data = p[4..].to_vec();
            if p.len() - 4 == 512 {
                data.extend(finish(&s, peer, 512, 2));
            }
            assert_eq!(data, want, "{round}");
        }
    }
}

/// Until the client acknowledges something, the same request again means
/// it has not heard our answer: the running transfer answers it at its
/// next resend, and no second transfer starts.
async fn an_identical_request_before_any_ack_is_a_retransmission(mode: Mode) {
    let f = Fixture::new().await;
    let server = Server::start(
        mode,
        f.provisioner.clone(),
        TftpOptions {
            timeout: Duration::from_secs(3),
            ..Default::default()
        },
    );
    for options in [&[][..], &[("blksize", "8")][..]] {
        let s = client();
        let ask = request(1, FILE, options);
        s.send_to(&ask, server.addr).unwrap();
        let (first, peer) = recv(&s);
        s.send_to(&ask, server.addr).unwrap();
        // A second transfer would answer at once; the first resends only
        // after its timeout.
        let second = wait_for(&s, Duration::from_secs(1), |_| true);
        assert!(second.is_none(), "{options:?}: answered again: {second:?}");
        let (blksize, next) = match first[1] {
            6 => {
                ack(&s, peer, 0);
                (8, 1)
            }
            _ => {
                ack(&s, peer, 1);
                (512, 2)
            }
        };
        let mut data = if first[1] == 3 {
            first[4..].to_vec()
        } else {
            Vec::new()
        };
        if first[1] == 6 || first.len() - 4 == blksize {
            data.extend(finish(&s, peer, blksize, next));
        }
        assert_eq!(data, expected(&f, FILE), "{options:?}");
    }
}
