//! The transfer state machine alone, driven by hand: windows, block
//! number rollover, resends and stalls, the minimum rate, netascii.

use super::super::limits::{Admission, Slots};
use super::super::packet::parse_request;
use super::*;

fn start(rrq: &[u8], body: &[u8], options: &TftpOptions, now: Instant) -> Transfer {
    start_from(rrq, Source::Memory(body.into()), options, now)
}

fn start_from(rrq: &[u8], source: Source, options: &TftpOptions, now: Instant) -> Transfer {
    let slots = Arc::new(Slots::new(4, 4, 4, vec![]));
    let Admission::Granted(slot) = slots.admit("192.0.2.1:1000".parse().unwrap(), b"f") else {
        panic!("granted")
    };
    let request = parse_request(rrq).unwrap();
    Transfer::start(options, &request, source, slot, now).unwrap()
}

fn blocks(t: &Transfer) -> Vec<u16> {
    t.outgoing()
        .map(|p| u16::from_be_bytes([p[2], p[3]]))
        .collect()
}

#[test]
fn duplicate_acks_send_nothing_and_windows_slide() {
    let now = Instant::now();
    let body = vec![7u8; 8 * 5 + 3];
    let rrq = b"\0\x01f\0octet\0blksize\x008\0windowsize\x002\0";
    let mut t = start(rrq, &body, &TftpOptions::default(), now);
    assert_eq!(t.outgoing().next().unwrap()[1], 6, "the OACK first");
    assert_eq!(t.on_packet(&[0, 4, 0, 0], now).unwrap(), Step::Advanced);
    assert_eq!(blocks(&t), [1, 2]);
    // An ACK of the OACK again, or of nothing sent yet: nothing.
    assert_eq!(t.on_packet(&[0, 4, 0, 0], now).unwrap(), Step::Ignored);
    assert_eq!(t.on_packet(&[0, 4, 0, 9], now).unwrap(), Step::Ignored);
    // A partial ACK slides the window by one.
    assert_eq!(t.on_packet(&[0, 4, 0, 1], now).unwrap(), Step::Advanced);
    assert_eq!(blocks(&t), [2, 3]);
    assert_eq!(t.on_packet(&[0, 4, 0, 1], now).unwrap(), Step::Ignored);
    assert_eq!(t.on_packet(&[0, 4, 0, 3], now).unwrap(), Step::Advanced);
    assert_eq!(blocks(&t), [4, 5]);
    assert_eq!(t.on_packet(&[0, 4, 0, 5], now).unwrap(), Step::Advanced);
    assert_eq!(blocks(&t), [6]);
    assert_eq!(t.outgoing().next().unwrap().len(), 4 + 3);
    assert_eq!(t.on_packet(&[0, 4, 0, 6], now).unwrap(), Step::Done);
}

/// Drives a transfer to its end, acknowledging each window whole, and
/// returns the bytes sent and the block numbers seen.
fn run_to_end(t: &mut Transfer, now: Instant) -> (Vec<u8>, Vec<u16>) {
    let (mut received, mut numbers) = (Vec::new(), Vec::new());
    for _ in 0..1_000_000 {
        let last = *blocks(t).last().expect("a window to send");
        for p in t.outgoing() {
            received.extend_from_slice(&p[4..]);
            numbers.push(u16::from_be_bytes([p[2], p[3]]));
        }
        let [hi, lo] = last.to_be_bytes();
        match t.on_packet(&[0, 4, hi, lo], now).unwrap() {
            Step::Advanced => {}
            Step::Done => return (received, numbers),
            other => panic!("after block {last}: {other:?}"),
        }
    }
    panic!("the transfer never ended");
}

#[test]
fn block_numbers_roll_over_past_65535() {
    let now = Instant::now();
    // 65,537 full blocks and a short one: past the rollover, at the
    // smallest block size, in windows of 1 and of 5 (a divisor of
    // 65535, so a window ends exactly on it), with and without an OACK.
    let body: Vec<u8> = (0..8 * 65_537 + 3).map(|i: u32| (i % 251) as u8).collect();
    for rrq in [
        &b"\0\x01f\0octet\0blksize\x008\0"[..],
        b"\0\x01f\0octet\0blksize\x008\0windowsize\x005\0",
    ] {
        let mut t = start(rrq, &body, &TftpOptions::default(), now);
        assert_eq!(t.on_packet(&[0, 4, 0, 0], now).unwrap(), Step::Advanced);
        let (received, numbers) = run_to_end(&mut t, now);
        assert_eq!(received, body, "the bytes sent");
        assert_eq!(numbers.len(), 65_538);
        assert_eq!(&numbers[65_533..], [65_534, 65_535, 0, 1, 2]);
    }
    // Without options (512-byte blocks): 65,536 blocks, the last one empty.
    let body = vec![1u8; 512 * 65_535];
    let mut t = start(b"\0\x01f\0octet\0", &body, &TftpOptions::default(), now);
    let (received, numbers) = run_to_end(&mut t, now);
    assert_eq!(received.len(), body.len());
    assert_eq!(numbers.last(), Some(&0));
}

#[test]
fn silence_is_resent_within_the_retries_then_the_transfer_stalls() {
    let now = Instant::now();
    let options = TftpOptions {
        timeout: Duration::from_secs(1),
        max_send_retries: 2,
        ..Default::default()
    };
    // A client that has acknowledged block 1 goes silent.
    let mut t = start(b"\0\x01f\0octet\0", &[7u8; 600], &options, now);
    assert_eq!(t.on_packet(&[0, 4, 0, 1], now).unwrap(), Step::Advanced);
    assert_eq!(t.deadline(), now + Duration::from_secs(1));
    assert_eq!(t.on_timer(now), Timer::Wait);
    let mut at = t.deadline();
    assert_eq!(t.on_timer(at), Timer::Resend);
    at = t.deadline();
    assert_eq!(t.on_timer(at), Timer::Resend);
    at = t.deadline();
    assert_eq!(t.on_timer(at), Timer::Stalled);
    assert!(t.stalled_packet().is_some(), "the client is told");
    // A client's ERROR ends it at once.
    let mut t = start(b"\0\x01f\0octet\0", b"abc", &options, now);
    assert_eq!(t.on_packet(b"\0\x05\0\0x\0", now).unwrap(), Step::Aborted);
}

/// Until the client's first ACK the source may be forged: its first
/// packet is resent only `UNPROVEN_RESENDS` times, not reflected at
/// the address's owner for every retry. Proven, a client gets them all.
#[test]
fn a_first_packet_no_ack_answered_is_resent_fewer_times() {
    let now = Instant::now();
    let options = TftpOptions {
        timeout: Duration::from_secs(1),
        max_send_retries: 4,
        ..Default::default()
    };
    let resends = |t: &mut Transfer| {
        let mut at = t.deadline();
        let mut n = 0;
        while t.on_timer(at) == Timer::Resend {
            n += 1;
            at = t.deadline();
        }
        n
    };
    let body = vec![7u8; 600];
    let mut unproven = start(b"\0\x01f\0octet\0", &body, &options, now);
    assert_eq!(resends(&mut unproven), UNPROVEN_RESENDS);
    let mut proven = start(b"\0\x01f\0octet\0", &body, &options, now);
    assert_eq!(
        proven.on_packet(&[0, 4, 0, 1], now).unwrap(),
        Step::Advanced
    );
    assert_eq!(resends(&mut proven), 4);
}

/// A transfer no ACK has answered may be a forged source's: it ends
/// without an error packet, which would go to someone who never asked.
#[test]
fn a_transfer_never_acknowledged_ends_without_a_packet() {
    let now = Instant::now();
    let options = TftpOptions {
        timeout: Duration::from_secs(1),
        ..Default::default()
    };
    let mut t = start(b"\0\x01f\0octet\0", &[7u8; 600], &options, now);
    assert_eq!(t.on_timer(t.deadline()), Timer::Resend);
    assert_eq!(t.on_timer(t.deadline()), Timer::Stalled);
    assert_eq!(t.stalled_packet(), None);
    assert_eq!(t.too_slow_packet(), None);
}

/// A client that repeats its request has not heard the first packet: each
/// repeat earns one more resend past the timer's, up to a bound.
#[test]
fn a_repeated_request_earns_a_resend_before_any_ack() {
    let now = Instant::now();
    let options = TftpOptions {
        timeout: Duration::from_secs(1),
        ..Default::default()
    };
    let slots = Arc::new(Slots::new(4, 4, 4, vec![]));
    let peer = "192.0.2.1:1000".parse().unwrap();
    let rrq = b"\0\x01f\0octet\0";
    let Admission::Granted(slot) = slots.admit(peer, rrq) else {
        panic!("granted")
    };
    let request = parse_request(rrq).unwrap();
    let body = Source::Memory(vec![7u8; 600].into());
    let mut t = Transfer::start(&options, &request, body, slot, now).unwrap();
    assert_eq!(t.on_timer(t.deadline()), Timer::Resend, "by timer");
    let mut repeats = 0;
    loop {
        assert!(matches!(slots.admit(peer, rrq), Admission::Retransmission));
        match t.on_timer(t.deadline()) {
            Timer::Resend => repeats += 1,
            Timer::Stalled => break,
            other => panic!("{other:?}"),
        }
        assert!(repeats <= REQUESTED_RESENDS, "unbounded");
    }
    assert_eq!(repeats, REQUESTED_RESENDS);
}

#[test]
fn the_stall_bound_holds_whatever_the_timeout() {
    let now = Instant::now();
    let options = TftpOptions {
        max_timeout: Duration::from_secs(60),
        stall: Duration::from_secs(15),
        ..Default::default()
    };
    let mut t = start(b"\0\x01f\0octet\0timeout\x0060\0", b"abc", &options, now);
    assert_eq!(t.deadline(), now + Duration::from_secs(15));
    assert_eq!(t.on_timer(t.deadline()), Timer::Stalled);
}

/// Acknowledges each block `every` after the last, firing the timers
/// due in between; returns how the transfer ended and when.
fn pace(t: &mut Transfer, start: Instant, every: Duration) -> (Result<Step, Timer>, Instant) {
    let mut at = start;
    for _ in 0..100_000 {
        at += every;
        while t.deadline() <= at {
            let due = t.deadline();
            match t.on_timer(due) {
                Timer::Wait | Timer::Resend => {}
                ended => return (Err(ended), due),
            }
        }
        let last = *blocks(t).last().expect("a window to send");
        let [hi, lo] = last.to_be_bytes();
        match t.on_packet(&[0, 4, hi, lo], at).unwrap() {
            Step::Advanced => {}
            ended => return (Ok(ended), at),
        }
    }
    panic!("the transfer never ended");
}

/// A client that keeps ACKing, a block now and then, used to hold its
/// slot for ever: every ACK reset the stall bound. Behind `min_rate`
/// by more than the slack, it ends; one at the rate is never cut off.
#[test]
fn a_client_behind_the_minimum_rate_is_cut_off() {
    let now = Instant::now();
    let options = TftpOptions {
        min_rate: 100,
        min_rate_slack: Duration::from_secs(10),
        timeout: Duration::from_secs(1),
        ..Default::default()
    };
    let body = vec![7u8; 8 * 1000];
    let rrq = b"\0\x01f\0octet\0blksize\x008\0";
    // 8 bytes every 2 s, each ACK well within the stall bound.
    let mut trickle = start(rrq, &body, &options, now);
    assert_eq!(
        trickle.on_packet(&[0, 4, 0, 0], now).unwrap(),
        Step::Advanced
    );
    let (ended, at) = pace(&mut trickle, now, Duration::from_secs(2));
    assert_eq!(ended, Err(Timer::TooSlow));
    // The slack, plus the 40-odd bytes acknowledged by then at 100 B/s.
    let elapsed = at - now;
    assert!(
        elapsed >= Duration::from_secs(10) && elapsed < Duration::from_secs(11),
        "{elapsed:?}"
    );
    // 8 bytes every 50 ms is 160 B/s: the whole file, however long.
    let mut steady = start(rrq, &body, &options, now);
    assert_eq!(
        steady.on_packet(&[0, 4, 0, 0], now).unwrap(),
        Step::Advanced
    );
    let (ended, at) = pace(&mut steady, now, Duration::from_millis(50));
    assert_eq!(ended, Ok(Step::Done));
    assert!(at - now > Duration::from_secs(40), "{:?}", at - now);
}

/// What tsize announced is what is sent: a file that grows once the
/// transfer has started (copied over in place) is cut at the length
/// it had when opened.
#[test]
fn a_file_is_sent_up_to_its_length_when_opened() {
    let now = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fw.bin");
    let opened: Vec<u8> = (0..20u8).collect();
    std::fs::write(&path, &opened).unwrap();
    let rrq = b"\0\x01f\0octet\0blksize\x008\0tsize\x000\0";
    let mut t = start_from(
        rrq,
        Source::File { path: path.clone() },
        &TftpOptions::default(),
        now,
    );
    // Opened on a reader thread: the OACK goes out at a timer after that.
    for _ in 0..5_000 {
        std::thread::sleep(t.deadline().saturating_duration_since(Instant::now()));
        if t.on_timer(Instant::now()) == Timer::Resend {
            break;
        }
    }
    let oack = t.outgoing().next().unwrap().to_vec();
    assert!(oack.ends_with(b"tsize\x0020\0"), "{oack:?}");
    // Its blocks are read once the client has acknowledged the OACK.
    assert_eq!(t.on_packet(&[0, 4, 0, 0], now).unwrap(), Step::Advanced);
    for _ in 0..5_000 {
        if t.outgoing().next().is_some() {
            break;
        }
        std::thread::sleep(t.deadline().saturating_duration_since(Instant::now()));
        let _ = t.on_timer(Instant::now());
    }
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    std::io::Write::write_all(&mut file, &[0xee; 100]).unwrap();
    let (received, _) = run_to_end(&mut t, now);
    assert_eq!(received, opened);
}

/// Bytes the transfer's file holds read and not yet sent.
fn read_ahead(t: &Transfer) -> usize {
    match &t.reader.raw {
        Raw::File(ahead) => ahead.buffered(),
        Raw::Memory { .. } => panic!("not a file"),
    }
}

/// A request may be forged: its OACK goes out with the file's length
/// alone read, and the transfer reads ahead (four windows) only once
/// its client has acknowledged the OACK.
#[test]
fn a_file_is_read_ahead_only_for_a_client_that_acknowledged() {
    let now = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fw.bin");
    std::fs::write(&path, vec![3u8; 1 << 20]).unwrap();
    let rrq = b"\0\x01f\0octet\0blksize\x001468\0windowsize\x0016\0";
    let mut t = start_from(rrq, Source::File { path }, &TftpOptions::default(), now);
    for _ in 0..5_000 {
        std::thread::sleep(t.deadline().saturating_duration_since(Instant::now()));
        if t.on_timer(Instant::now()) == Timer::Resend {
            break;
        }
    }
    assert!(t.outgoing().next().unwrap().starts_with(&[0, 6]), "an OACK");
    assert_eq!(read_ahead(&t), 0);
    assert_eq!(
        t.on_packet(&[0, 4, 0, 0], Instant::now()).unwrap(),
        Step::Advanced
    );
    let give_up = Instant::now() + Duration::from_secs(5);
    while read_ahead(&t) < 2 * 1468 * 16 && Instant::now() < give_up {
        std::thread::sleep(Duration::from_millis(1));
        let _ = t.on_timer(Instant::now());
    }
    assert!(read_ahead(&t) >= 2 * 1468 * 16, "{}", read_ahead(&t));
}

fn convert(body: &[u8], size: usize) -> Vec<Vec<u8>> {
    let mut reader = Reader {
        raw: Raw::Memory {
            body: body.into(),
            position: 0,
        },
        netascii: Some(Netascii {
            pending: None,
            buf: vec![0; 3].into(),
            start: 0,
            end: 0,
        }),
    };
    let mut blocks = Vec::new();
    loop {
        let mut block = Vec::new();
        reader.block(&mut block, size).unwrap();
        let last = block.len() < size;
        blocks.push(block);
        if last {
            return blocks;
        }
    }
}

#[test]
fn netascii_pairs_split_across_blocks() {
    let body = b"a\nb\rc\r\n\n";
    let blocks = convert(body, 2);
    let joined: Vec<u8> = blocks.concat();
    assert_eq!(joined, b"a\r\nb\r\0c\r\0\r\n\r\n");
    assert_eq!(netascii_len(body), joined.len() as u64);
    // 13 bytes in blocks of 2: six full ones, and CR's pair LF last.
    assert_eq!(blocks.len(), 7);
    assert_eq!(blocks[6], b"\n");
    // Converted to a whole number of blocks: an empty one ends it.
    assert_eq!(convert(b"ab\n", 2), [&b"ab"[..], b"\r\n", b""]);
}
