//! A TFTP request flood far past the transfer cap: the process survives
//! with bounded memory, and the excess gives way (a request no ACK has
//! answered, loopback's too, makes room for the next) or is refused with
//! error packets, instead of queuing without bound.

mod common;

use std::collections::HashMap;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

use common::*;

const REQUESTS: u32 = 20_000;
const CAP: u32 = 1_000;
const SOCKETS: u32 = 500;

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Datagrams the kernel dropped on the UDP sockets bound to `port` (all
/// of the server's listeners share it), for their full receive buffers.
fn kernel_drops(port: u16) -> u64 {
    let wanted = format!(":{port:04X}");
    std::fs::read_to_string("/proc/net/udp")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter(|line| {
            line.split_whitespace()
                .nth(1)
                .is_some_and(|local| local.ends_with(&wanted))
        })
        .filter_map(|line| line.split_whitespace().last()?.parse::<u64>().ok())
        .sum()
}

#[test]
fn a_flood_of_requests_past_the_cap_is_refused_with_errors() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    // A distinct phone for every request: no request is a retransmission
    // of another, so every one needs a slot.
    let tenants = write_file(dir.path(), "tenants.csv", TENANTS_CSV);
    let phones = write_file(dir.path(), "phones.csv", &phones_csv(0, REQUESTS));
    let mut import = dialtone(dir.path(), &url);
    import.arg("import").arg(&tenants).arg(&phones);
    let out = run(import);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let server = Server::start_with_env(
        dir.path(),
        &url,
        &[],
        &[
            (
                "DIALTONE_PROVISIONING__TFTP_MAX_TRANSFERS",
                &CAP.to_string(),
            ),
            // Flood clients never ACK: their slots free after 0.5 s x 2.
            ("DIALTONE_PROVISIONING__TFTP_TIMEOUT_MS", "500"),
            ("DIALTONE_PROVISIONING__TFTP_MAX_SEND_RETRIES", "1"),
        ],
    );
    let pid = server.child.id();
    let rss_before = status_kib(pid, "VmRSS:");

    let sockets: Vec<UdpSocket> = (0..SOCKETS)
        .map(|_| {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.set_nonblocking(true).unwrap();
            s
        })
        .collect();
    let drops_before = kernel_drops(server.tftp_addr.port());
    let started = Instant::now();
    for n in 0..REQUESTS {
        let file = format!("00156500{:02x}{:02x}.cfg", n / 256, n % 256);
        sockets[(n % SOCKETS) as usize]
            .send_to(&rrq(&file), server.tftp_addr)
            .unwrap();
        // In bursts of 500: the flood, not the client, is under test.
        if n % 500 == 499 {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let sent_in = started.elapsed();

    // Collect answers until the line goes quiet (bounded).
    let mut answers: HashMap<&str, u32> = HashMap::new();
    // A transfer is a server port per client socket: block 1 is resent
    // when the client never ACKs, so count transfers, not packets.
    let mut transfers = std::collections::HashSet::new();
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut quiet_since = Instant::now();
    while Instant::now() < deadline && quiet_since.elapsed() < Duration::from_millis(1500) {
        let mut got = false;
        for (index, socket) in sockets.iter().enumerate() {
            while let Ok((len, from)) = socket.recv_from(&mut buf) {
                got = true;
                if len >= 4 && buf[1] == 3 {
                    transfers.insert((index, from));
                }
                let kind = match (len >= 4, buf[1]) {
                    (true, 3) if buf[2..4] == [0, 1] => "first block",
                    (true, 3) => "later block",
                    (true, 5) if String::from_utf8_lossy(&buf[4..len]).contains("busy") => "busy",
                    // A transfer the client never ACKs ends at its stall bound.
                    (true, 5) if String::from_utf8_lossy(&buf[4..len]).contains("timed out") => {
                        "stalled"
                    }
                    (true, 5) => "other error",
                    _ => "other",
                };
                *answers.entry(kind).or_default() += 1;
            }
        }
        if got {
            quiet_since = Instant::now();
        } else {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let peak = status_kib(pid, "VmHWM:");
    let dropped = (kernel_drops(server.tftp_addr.port()) - drops_before) as u32;
    let accepted = transfers.len() as u32;
    let busy = answers.get("busy").copied().unwrap_or(0);
    eprintln!(
        "{REQUESTS} requests sent in {sent_in:?} with a cap of {CAP}: {accepted} transfers started, {busy} refused busy, \
         {dropped} dropped by the kernel, packets {answers:?}; server RSS {rss_before} KiB before, peak {peak} KiB"
    );
    // None of these clients ever ACKs, so each is as good as forged: past
    // the cap the oldest gives way to the newest (most before their file
    // was even rendered, so nothing went out for them), and only with the
    // cap's worth already giving way is one refused busy.
    let evicted = server.metric_sum("dialtone_tftp_evicted_total") as u32;
    assert!(
        accepted > 0 && evicted >= CAP,
        "{accepted} started, {evicted} gave way"
    );
    // What is neither served nor refused was dropped by the kernel when the
    // listening socket's buffer overflowed (more of them when the machine
    // is busy); a phone retries those. Every request the server read was
    // answered one way or the other.
    assert!(
        accepted + busy + evicted + dropped >= REQUESTS * 9 / 10,
        "nearly every request was answered, gave way or was dropped: {answers:?}, {evicted} gave way, \
         {dropped} dropped"
    );
    assert_eq!(answers.get("other error"), None, "{answers:?}");
    // Bounded memory: a cap of 1,000 transfers, whatever the flood.
    assert!(peak < 400 * 1024, "peak resident memory {peak} KiB");
    // Still serving.
    assert_eq!(server.readyz()["ready"], true);
    let fetched = wait_until(Duration::from_secs(10), || {
        tftp_fetch(dir.path(), &url, server.tftp_addr, "001565000001.cfg").is_some()
    });
    assert!(fetched.is_some(), "still serving after the flood");
    assert_eq!(server.stop(), 0);
}
