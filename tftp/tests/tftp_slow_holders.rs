//! Slow but real clients (each ACKing a block now and then, well above
//! nothing and well below a phone's pace) from a few sources hold every
//! slot. Once that meant "server busy" for everyone else until they were
//! done, hours for a firmware image; now a newcomer from a lighter source
//! takes a slot of the source holding the most, and a source within its
//! fair share keeps its own. Loopback addresses stand for the internet.

mod common;
#[macro_use]
mod tftp_support;

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use common::*;
use dialtone_tftp::tftp::TftpOptions;
use tftp_support::*;

both_modes!(
    a_newcomer_gets_its_file_past_slow_holders,
    a_source_within_its_fair_share_keeps_its_slots,
);

/// The file the holders crawl through: eighty lines, hundreds of 8-byte
/// blocks.
const LARGE: &str = "001565000009.cfg";

async fn fixture() -> Fixture {
    let f = Fixture::new().await;
    f.write(&[phone(
        "00:15:65:00:00:09",
        dialtone_sync::Family::Yealink,
        "T46S",
        &["A"; 80],
    )])
    .await;
    f
}

fn options() -> TftpOptions {
    TftpOptions {
        max_transfers: 6,
        max_per_source: 4,
        per_source_exempt: Vec::new(),
        // The holders still running when a test ends need not be waited for.
        shutdown_grace: Duration::from_millis(500),
        ..Default::default()
    }
}

/// A client that ACKs one 8-byte block every 300 ms until told to stop,
/// then once more to hear whether its transfer still runs.
struct Holder {
    stop: Arc<AtomicBool>,
    /// The error that ended its transfer, if one did.
    thread: JoinHandle<Option<String>>,
}

/// Starts a slow transfer from `from` (an address of 127/8) and returns
/// once the server has taken its first ACK (its first DATA came): the
/// transfer is proven.
fn hold(from: &str, server: SocketAddr) -> Holder {
    let s = UdpSocket::bind(format!("{from}:0")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.send_to(&request(1, LARGE, &[("blksize", "8")]), server)
        .unwrap();
    let (first, peer) = recv(&s);
    assert_eq!(first[1], 6, "expected the OACK, got {first:?}");
    ack(&s, peer, 0);
    let mut next = Some(recv(&s).0);
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = stop.clone();
    let thread = std::thread::spawn(move || loop {
        let packet = next.take().unwrap_or_else(|| recv(&s).0);
        if packet[1] == 5 {
            return Some(String::from_utf8_lossy(&packet[4..]).into_owned());
        }
        let block = u16::from_be_bytes([packet[2], packet[3]]);
        if stopping.load(Ordering::Acquire) {
            return answer_to_one_more_ack(&s, peer, block);
        }
        std::thread::sleep(Duration::from_millis(300));
        ack(&s, peer, block);
    });
    Holder { stop, thread }
}

/// ACKs `block` and returns the error the server answers with, or `None`
/// if it sends the next block: the transfer still runs. Waiting for that
/// answer rather than for a while: in single-port mode an evicted transfer
/// says "busy" only on its client's next packet or at its next timer
/// (`timeout` later), so a holder told to stop between its ACK and the
/// DATA it earned would seem to run on, and under CPU load that window is
/// wide. Every eviction comes before the stop, so the server's state when
/// this ACK arrives decides the answer.
fn answer_to_one_more_ack(s: &UdpSocket, peer: SocketAddr, block: u16) -> Option<String> {
    ack(s, peer, block);
    loop {
        // `recv`'s bound: a server that answers nothing fails the test.
        let packet = recv(s).0;
        match packet[1] {
            5 => return Some(String::from_utf8_lossy(&packet[4..]).into_owned()),
            // A resend of the block in hand (or older) was on its way before
            // the ACK; the next block answers it.
            3 if u16::from_be_bytes([packet[2], packet[3]]) == block.wrapping_add(1) => {
                return None
            }
            3 => {}
            _ => panic!("expected DATA or an error, got {packet:?}"),
        }
    }
}

/// The errors that ended each holder's transfer (`None`: still running,
/// it answered one more ACK with DATA).
fn ended(holders: Vec<Holder>) -> Vec<Option<String>> {
    holders
        .iter()
        .for_each(|h| h.stop.store(true, Ordering::Release));
    holders
        .into_iter()
        .map(|h| h.thread.join().unwrap())
        .collect()
}

/// A phone at `from` fetching `file`, asking again after "busy" as phones
/// do: the bytes, or each refusal's message once it gives up.
fn fetch_with_retries(from: &str, server: SocketAddr, file: &str) -> Result<Vec<u8>, Vec<String>> {
    let mut refusals = Vec::new();
    for _ in 0..4 {
        let s = UdpSocket::bind(format!("{from}:0")).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.send_to(&request(1, file, &[]), server).unwrap();
        let (mut packet, peer) = recv(&s);
        if packet[1] == 5 {
            refusals.push(String::from_utf8_lossy(&packet[4..]).into_owned());
            std::thread::sleep(Duration::from_millis(500));
            continue;
        }
        let mut data = Vec::new();
        loop {
            assert_eq!(packet[1], 3, "expected DATA, got {packet:?}");
            data.extend_from_slice(&packet[4..]);
            ack(&s, peer, u16::from_be_bytes([packet[2], packet[3]]));
            if packet.len() - 4 < 512 {
                return Ok(data);
            }
            packet = recv(&s).0;
        }
    }
    Err(refusals)
}

/// Two sources' slow transfers fill the server; a phone from a third is
/// served within a few tries, and the transfer that gave way is told
/// "busy" (its client ACKed, so it is real and asks again later).
async fn a_newcomer_gets_its_file_past_slow_holders(mode: Mode) {
    let f = fixture().await;
    let want = expected(&f, "001565000002.cfg");
    let server = Server::start(mode, f.provisioner.clone(), options());
    let holders: Vec<Holder> = ["127.0.0.2"; 4]
        .into_iter()
        .chain(["127.0.0.3"; 2])
        .map(|from| hold(from, server.addr))
        .collect();
    let fetched = fetch_with_retries("127.0.0.4", server.addr, "001565000002.cfg");
    assert_eq!(fetched, Ok(want), "the phone never got its file");
    let ended = ended(holders);
    assert!(
        ended[..4]
            .iter()
            .any(|e| e.as_deref().is_some_and(|e| e.contains("busy"))),
        "{ended:?}"
    );
    assert_eq!(ended[4..], [None, None], "127.0.0.3 holds its fair share");
}

/// With three sources the fair share of six slots is two: a newcomer
/// holding slow transfers itself takes the heaviest source's slots until
/// it holds as many, then hears "busy"; the source holding two keeps them.
async fn a_source_within_its_fair_share_keeps_its_slots(mode: Mode) {
    let f = fixture().await;
    let server = Server::start(mode, f.provisioner.clone(), options());
    let holders: Vec<Holder> = ["127.0.0.2"; 4]
        .into_iter()
        .chain(["127.0.0.3"; 2])
        .map(|from| hold(from, server.addr))
        .collect();
    let newcomers: Vec<Holder> = (0..2).map(|_| hold("127.0.0.4", server.addr)).collect();
    let (code, message) = {
        let s = UdpSocket::bind("127.0.0.4:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.send_to(&request(1, LARGE, &[]), server.addr).unwrap();
        let (reply, _) = recv(&s);
        assert_eq!(reply[1], 5, "expected busy, got {reply:?}");
        let code = u16::from_be_bytes([reply[2], reply[3]]);
        (code, String::from_utf8_lossy(&reply[4..]).into_owned())
    };
    assert_eq!(code, 0);
    assert!(message.contains("busy"), "{message}");
    let ended = ended(holders);
    let gave_way = ended[..4].iter().filter(|e| e.is_some()).count();
    assert_eq!(gave_way, 2, "{ended:?}");
    assert_eq!(ended[4..], [None, None], "127.0.0.3 holds its fair share");
    assert_eq!(self::ended(newcomers), [None, None]);
}
