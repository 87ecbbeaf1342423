//! Static files read off the listener's thread: whole through short
//! stretches, a FIFO refused at once, the budget of reads in flight, and
//! a transfer whose read never comes ended at its timeout with an error.
//! A read "stuck" here stands for a dead NFS server or a disk retrying
//! EIO: its open waits until the test lets it go.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::super::limits::{Admission, Slots};
use super::super::packet::parse_request;
use super::super::transfer::{Source, Timer, Transfer};
use super::*;

static STUCK: (Mutex<Vec<PathBuf>>, Condvar) = (Mutex::new(Vec::new()), Condvar::new());

/// Called by a reader thread before it opens `path`.
pub(super) fn wait_while_stuck(path: &Path) {
    let (stuck, released) = &STUCK;
    let mut stuck = stuck.lock().unwrap_or_else(PoisonError::into_inner);
    while stuck.iter().any(|p| p == path) {
        stuck = released.wait(stuck).unwrap_or_else(PoisonError::into_inner);
    }
}

/// Opens of `path` wait until this is dropped.
struct Stuck(PathBuf);

impl Stuck {
    fn new(path: &Path) -> Stuck {
        STUCK.0.lock().unwrap().push(path.to_path_buf());
        Stuck(path.to_path_buf())
    }
}

impl Drop for Stuck {
    fn drop(&mut self) {
        STUCK
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|p| *p != self.0);
        STUCK.1.notify_all();
    }
}

fn budget(total: usize, per_source: usize) -> &'static ReadBudget {
    Box::leak(Box::new(ReadBudget::new(total, per_source)))
}

/// Polls until the open has answered (or 5 s have passed).
fn opened(file: &mut ReadAhead) -> io::Result<()> {
    let give_up = Instant::now() + Duration::from_secs(5);
    while file.len().is_none() && Instant::now() < give_up {
        file.poll()?;
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

#[test]
fn a_file_is_read_whole_through_short_stretches() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fw.bin");
    let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&path, &body).unwrap();
    let mut file = ReadAhead::open(path, None, 512, 512, budget(2, 2));
    opened(&mut file).unwrap();
    assert_eq!(file.len(), Some(body.len() as u64));
    file.proven();
    let mut read = Vec::new();
    let give_up = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < give_up, "read {} bytes", read.len());
        file.poll().unwrap();
        if !file.has(1_000) {
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        let mut chunk = [0u8; 1_000];
        let n = file.read(&mut chunk).unwrap();
        if n == 0 {
            break;
        }
        read.extend_from_slice(&chunk[..n]);
    }
    assert!(read == body, "read {} bytes of {}", read.len(), body.len());
}

/// Polls until `wanted` bytes are buffered (or 5 s have passed).
fn buffered(file: &mut ReadAhead, wanted: usize) -> bool {
    let give_up = Instant::now() + Duration::from_secs(5);
    while Instant::now() < give_up {
        file.poll().unwrap();
        if file.has(wanted) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    false
}

/// A request may be forged: before its client's first ACK a transfer
/// holds only what its first window needs (nothing when an OACK goes
/// first), not the four windows it reads ahead once proven.
#[test]
fn before_its_client_is_proven_a_transfer_reads_only_its_first_window() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fw.bin");
    std::fs::write(&path, vec![7u8; 1 << 20]).unwrap();
    let window = 1468 * 16;
    let mut oack_first = ReadAhead::open(path.clone(), None, window, 0, budget(4, 4));
    opened(&mut oack_first).unwrap();
    assert_eq!(oack_first.len(), Some(1 << 20));
    for _ in 0..20 {
        oack_first.poll().unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(oack_first.buffered(), 0);
    assert!(oack_first.buffer.capacity() == 0 && !oack_first.has(1));
    oack_first.proven();
    assert!(
        buffered(&mut oack_first, 4 * window),
        "read ahead once proven"
    );

    let mut plain = ReadAhead::open(path, None, 512, 512, budget(4, 4));
    assert!(buffered(&mut plain, 512));
    for _ in 0..20 {
        plain.poll().unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(plain.buffered(), 512);
    let mut block = [0u8; 512];
    assert_eq!(plain.read(&mut block).unwrap(), 512);
    for _ in 0..20 {
        plain.poll().unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(
        plain.buffered() == 0 && matches!(plain.state, State::Idle(_)),
        "read on before an ACK"
    );
    plain.proven();
    assert!(buffered(&mut plain, READ_AHEAD));
}

fn mkfifo(path: &Path) {
    let made = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap();
    assert!(made.success());
}

#[test]
fn a_fifo_in_a_files_place_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fw.bin");
    mkfifo(&path);
    let mut file = ReadAhead::open(path, None, 512, 512, budget(2, 2));
    let refused = opened(&mut file).expect_err("a FIFO is no static file");
    assert_eq!(refused.kind(), io::ErrorKind::InvalidInput, "{refused}");
}

#[test]
fn past_the_budget_of_reads_a_file_is_busy() {
    let dir = tempfile::tempdir().unwrap();
    let (slow, other) = (dir.path().join("slow.bin"), dir.path().join("other.bin"));
    std::fs::write(&slow, b"slow").unwrap();
    std::fs::write(&other, b"other").unwrap();
    let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
    let budget = budget(2, 1);
    let stuck = Stuck::new(&slow);
    let mut held = ReadAhead::open(slow.clone(), Some(a), 512, 512, budget);
    // Its source's share is taken; another source still has a turn.
    let mut same_source = ReadAhead::open(other.clone(), Some(a), 512, 512, budget);
    let busy = same_source.poll().expect_err("a's share is taken");
    assert_eq!(busy.kind(), io::ErrorKind::ResourceBusy);
    let mut from_b = ReadAhead::open(slow.clone(), Some(b), 512, 512, budget);
    // Both turns are taken now (b's read is stuck too), whoever asks.
    let busy = ReadAhead::open(other.clone(), None, 512, 512, budget).poll();
    assert_eq!(busy.unwrap_err().kind(), io::ErrorKind::ResourceBusy);
    drop(stuck);
    opened(&mut held).unwrap();
    opened(&mut from_b).unwrap();
    assert_eq!(held.len(), Some(4));
    let mut again = ReadAhead::open(other, Some(a), 512, 512, budget);
    opened(&mut again).unwrap();
    assert_eq!(again.len(), Some(5));
}

/// A transfer whose file is never read ends with an error packet once
/// its timeout has passed, though its client has acknowledged nothing;
/// until then each timer only looks again.
#[test]
fn a_read_slower_than_the_timeout_ends_the_transfer_with_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fw.bin");
    std::fs::write(&path, vec![1u8; 10_000]).unwrap();
    let _stuck = Stuck::new(&path);
    let options = TftpOptions {
        timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let slots = Arc::new(Slots::new(4, 4, 4, vec![]));
    let Admission::Granted(slot) = slots.admit("192.0.2.1:1000".parse().unwrap(), b"f") else {
        panic!("granted")
    };
    let request = parse_request(b"\0\x01fw.bin\0octet\0").unwrap();
    let started = Instant::now();
    let mut t = Transfer::start(&options, &request, Source::File { path }, slot, started).unwrap();
    assert_eq!(t.outgoing().count(), 0, "nothing to send before the read");
    let mut looks = 0;
    let ended = loop {
        assert!(looks < 1_000, "the transfer never ended");
        std::thread::sleep(t.deadline().saturating_duration_since(Instant::now()));
        match t.on_timer(Instant::now()) {
            Timer::Wait => looks += 1,
            other => break other,
        }
    };
    assert_eq!(ended, Timer::Stalled);
    assert!(
        started.elapsed() >= options.timeout,
        "{:?}",
        started.elapsed()
    );
    assert!(looks > 1, "looked for the read {looks} times");
    let packet = t.stalled_packet().expect("an error packet");
    assert_eq!(&packet[..4], &[0, 5, 0, 0]);
    assert!(
        packet.starts_with(b"\0\x05\0\0read timed out"),
        "{packet:?}"
    );
}
