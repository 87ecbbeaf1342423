//! One read transfer as a state machine that does no I/O of its own:
//! option negotiation, the file's blocks (converted to netascii when
//! asked), windows, when to resend and when to give up, and the outcome.
//! Both front ends drive it: the default one from a task with a port of
//! its own, the single-port one from its listener's demux table and timer
//! wheel. So every rule a transfer follows is decided here, once.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::limits::{ActiveTransfer, Slot};
use super::packet::{error_packet, oack_packet, ReadRequest, OP_ACK, OP_DATA, OP_ERROR};
use super::TftpOptions;

/// What a transfer sends: a rendered body, or a static file read as it goes.
pub(super) enum Source {
    Memory(Arc<[u8]>),
    File { path: std::path::PathBuf },
}

/// Run once, at the client's first acknowledgement: what only a source
/// that receives what we send may earn (being known for a phone).
pub(super) type Proof = Box<dyn FnOnce() + Send + Sync>;

/// The stored bytes, read in order. Static files are read with plain
/// reads: they are firmware images the page cache holds after the first
/// phone, and a window is at most a few dozen KB. A file is read no
/// further than the length it had when opened, the one tsize announced:
/// a firmware image being copied over in place would otherwise grow the
/// transfer past it, and a phone that checks tsize refuses it.
enum Raw {
    Memory { body: Arc<[u8]>, position: usize },
    File(io::Take<io::BufReader<std::fs::File>>),
}

impl Raw {
    /// Like `read`: 0 only at the end.
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        match self {
            Raw::Memory { body, position } => {
                let n = out.len().min(body.len() - *position);
                out[..n].copy_from_slice(&body[*position..*position + n]);
                *position += n;
                Ok(n)
            }
            Raw::File(file) => file.read(out),
        }
    }
}

/// Netascii (RFC 1350, after Telnet): LF goes out as CR LF and CR as
/// CR NUL, which the client turns back into the stored bytes. The second
/// byte of a pair may have to wait for the next block.
struct Netascii {
    pending: Option<u8>,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

/// The size of `body` once converted to netascii, for tsize.
fn netascii_len(body: &[u8]) -> u64 {
    let expanded = body.iter().filter(|b| matches!(b, b'\n' | b'\r')).count();
    (body.len() + expanded) as u64
}

struct Reader {
    raw: Raw,
    netascii: Option<Netascii>,
}

impl Reader {
    /// Appends the next block to `out`: `size` bytes, fewer only at the end.
    fn block(&mut self, out: &mut Vec<u8>, size: usize) -> io::Result<()> {
        let Some(ascii) = &mut self.netascii else {
            let start = out.len();
            out.resize(start + size, 0);
            let mut filled = 0;
            while filled < size {
                let n = self.raw.read(&mut out[start + filled..])?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            out.truncate(start + filled);
            return Ok(());
        };
        let target = out.len() + size;
        while out.len() < target {
            if let Some(b) = ascii.pending.take() {
                out.push(b);
                continue;
            }
            if ascii.start == ascii.end {
                ascii.start = 0;
                ascii.end = self.raw.read(&mut ascii.buf)?;
                if ascii.end == 0 {
                    break;
                }
            }
            let b = ascii.buf[ascii.start];
            ascii.start += 1;
            match b {
                b'\n' => {
                    out.push(b'\r');
                    ascii.pending = Some(b'\n');
                }
                b'\r' => {
                    out.push(b'\r');
                    ascii.pending = Some(0);
                }
                b => out.push(b),
            }
        }
        Ok(())
    }
}

/// What a packet from the client did to the transfer.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Step {
    /// Nothing new (a duplicate or old ACK, something else): send nothing.
    /// Answering a duplicate ACK with a resend is the Sorcerer's Apprentice.
    Ignored,
    /// The window moved: send `outgoing()`.
    Advanced,
    /// The last block is acknowledged.
    Done,
    /// The client sent an ERROR: the transfer ends, and nothing is sent.
    Aborted,
}

/// What a transfer's timer says when it fires.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Timer {
    /// Not yet due (the deadline moved since the timer was set).
    Wait,
    /// Send `outgoing()` again.
    Resend,
    /// No progress within the retries or `stall`: send `stalled_packet()`
    /// and end the transfer.
    Stalled,
    /// Behind `min_rate` by more than `min_rate_slack`: send
    /// `too_slow_packet()` and end the transfer.
    TooSlow,
    /// Told to give way (`Slots::admit`): end without a packet, as it is
    /// most likely a forged source's.
    Evicted,
}

/// Resends of a transfer's first packet before any ACK: until one comes,
/// the source may be forged, and each resend is a block reflected at the
/// address's real owner. A real client whose first packet was lost still
/// gets it twice more.
const UNPROVEN_RESENDS: u32 = 2;

pub(super) struct Transfer {
    slot: Slot,
    _active: ActiveTransfer,
    started: Instant,
    reader: Reader,
    blksize: usize,
    windowsize: usize,
    timeout: Duration,
    retries: u32,
    stall: Duration,
    /// Bytes a second the client must average, after `slack`.
    min_rate: u64,
    slack: Duration,
    /// DATA bytes the client has acknowledged.
    acked: u64,
    /// Packets sent and not yet acknowledged, oldest first: the OACK
    /// ("block 0") alone, or a window of DATA blocks from `base` on.
    window: VecDeque<Vec<u8>>,
    /// The OACK is out and unacknowledged. Its own flag, not `base == 0`:
    /// DATA block numbers roll over from 65535 to 0, so past 32 MiB at 512
    /// bytes a block, a window can start at block 0 too.
    /// Acknowledged DATA buffers, reused for the next blocks.
    spare: Vec<Vec<u8>>,
    base: u16,
    read_all: bool,
    oack_out: bool,
    /// Resends of the current window so far.
    resent: u32,
    give_up: Instant,
    deadline: Instant,
    proof: Option<Proof>,
}

impl Transfer {
    /// Negotiates (RFC 2347-2349, 7440) and prepares the first packets:
    /// the OACK if any option was accepted, else the first window.
    pub fn start(
        options: &TftpOptions,
        request: &ReadRequest,
        source: Source,
        slot: Slot,
        now: Instant,
    ) -> io::Result<Transfer> {
        #[cfg(test)]
        super::fault_tests::on_start(&source);
        let (raw, tsize) = match source {
            Source::Memory(body) => {
                let len = if request.netascii {
                    netascii_len(&body)
                } else {
                    body.len() as u64
                };
                (Raw::Memory { body, position: 0 }, Some(len))
            }
            Source::File { path } => {
                let file = std::fs::File::open(&path)?;
                // The size of what is opened, not the static index's: a
                // firmware image copied over in place before the next
                // SIGHUP has another length, and phones that check tsize
                // refuse a transfer that disagrees with it.
                let len = file.metadata()?.len();
                (
                    Raw::File(io::BufReader::new(file).take(len)),
                    // The converted size of a file would cost reading it
                    // twice; tsize is optional, so a netascii client goes
                    // without.
                    (!request.netascii).then_some(len),
                )
            }
        };
        let reader = Reader {
            raw,
            netascii: request.netascii.then(|| Netascii {
                pending: None,
                buf: vec![0; 4096].into(),
                start: 0,
                end: 0,
            }),
        };
        let mut oack: Vec<(&str, String)> = Vec::new();
        let blksize = match request.blksize {
            Some(b) => {
                let b = b.min(options.blksize_limit.max(8));
                oack.push(("blksize", b.to_string()));
                b as usize
            }
            None => 512,
        };
        let windowsize = match request.windowsize {
            Some(w) => {
                let w = w.min(options.windowsize_limit.max(1));
                oack.push(("windowsize", w.to_string()));
                w as usize
            }
            None => 1,
        };
        let mut timeout = options.timeout;
        if let Some(t) = request.timeout {
            // RFC 2349 lets the server only accept the client's timeout as
            // it is or decline it: past our cap it is left out of the OACK
            // and our own applies.
            let asked = Duration::from_secs(t.into());
            if asked <= options.max_timeout {
                timeout = asked;
                oack.push(("timeout", t.to_string()));
            }
        }
        if let (true, Some(size)) = (request.tsize, tsize) {
            oack.push(("tsize", size.to_string()));
        }
        let mut transfer = Transfer {
            slot,
            _active: ActiveTransfer::start(),
            started: now,
            reader,
            blksize,
            windowsize,
            timeout,
            retries: options.max_send_retries,
            stall: options.stall,
            min_rate: options.min_rate.max(1).into(),
            slack: options.min_rate_slack,
            acked: 0,
            window: VecDeque::with_capacity(windowsize.min(16)),
            spare: Vec::new(),
            base: 0,
            oack_out: !oack.is_empty(),
            read_all: false,
            resent: 0,
            give_up: now,
            deadline: now,
            proof: None,
        };
        if oack.is_empty() {
            transfer.base = 1;
            transfer.fill()?;
        } else {
            transfer.window.push_back(oack_packet(&oack));
        }
        transfer.progressed(now);
        // Its first packet goes out now (both front ends send it at once).
        transfer.slot.sending(now);
        Ok(transfer)
    }

    /// `proof` runs at the client's first acknowledgement.
    pub fn on_proven(&mut self, proof: Option<Proof>) {
        self.proof = proof;
    }

    /// The transfer's slot id: tells one transfer of a client address and
    /// port from the next.
    pub fn id(&self) -> u64 {
        self.slot.id()
    }

    pub fn started(&self) -> Instant {
        self.started
    }

    /// When `on_timer` is next due. It only ever moves later.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The packets to send now: the whole current window.
    pub fn outgoing(&self) -> impl Iterator<Item = &[u8]> {
        self.window.iter().map(Vec::as_slice)
    }

    /// The error that ends a stalled transfer: a client that is merely
    /// slow learns it is over instead of waiting out its own timeouts.
    pub fn stalled_packet() -> Vec<u8> {
        error_packet(0, "timed out waiting for an acknowledgement")
    }

    /// The error that ends a transfer behind the minimum rate.
    pub fn too_slow_packet() -> Vec<u8> {
        error_packet(0, "transfer too slow")
    }

    /// A packet from the client, at `now`. An error reading the file ends
    /// the transfer (`Err`).
    pub fn on_packet(&mut self, packet: &[u8], now: Instant) -> io::Result<Step> {
        if packet.len() < 4 {
            return Ok(Step::Ignored);
        }
        match u16::from_be_bytes([packet[0], packet[1]]) {
            OP_ACK => {}
            OP_ERROR => return Ok(Step::Aborted),
            _ => return Ok(Step::Ignored),
        }
        let block = u16::from_be_bytes([packet[2], packet[3]]);
        #[cfg(test)]
        super::fault_tests::on_ack(self.window.front().map(Vec::as_slice));
        // How far into the window the ACK reaches (1..=len), with block
        // numbers wrapping past 65535.
        let reach = block.wrapping_sub(self.base).wrapping_add(1) as usize;
        if !(1..=self.window.len()).contains(&reach) {
            return Ok(Step::Ignored);
        }
        // The client gets what we send: not a forged source.
        self.slot.acknowledged();
        if let Some(proof) = self.proof.take() {
            proof();
        }
        for mut packet in self.window.drain(..reach) {
            if !self.oack_out {
                self.acked += (packet.len() - 4) as u64;
            }
            packet.clear();
            self.spare.push(packet);
        }
        self.base = self.base.wrapping_add(reach as u16);
        self.oack_out = false;
        if self.read_all && self.window.is_empty() {
            return Ok(Step::Done);
        }
        self.fill()?;
        self.progressed(now);
        Ok(Step::Advanced)
    }

    /// Resolves once a full server has told this transfer, unacknowledged,
    /// to give way (`Slots::admit`).
    pub async fn evicted(&self) {
        self.slot.evicted().await
    }

    pub fn is_evicted(&self) -> bool {
        self.slot.is_evicted()
    }

    /// The deadline passed (or a timer set for an older deadline fired).
    /// An evicted transfer ends at its next timer.
    pub fn on_timer(&mut self, now: Instant) -> Timer {
        if self.slot.is_evicted() {
            return Timer::Evicted;
        }
        if now < self.deadline {
            return Timer::Wait;
        }
        if now >= self.too_slow_at() {
            metrics::counter!("dialtone_tftp_too_slow_total").increment(1);
            return Timer::TooSlow;
        }
        let retries = if self.slot.is_proven() {
            self.retries
        } else {
            self.retries.min(UNPROVEN_RESENDS)
        };
        if self.resent >= retries || now >= self.give_up {
            metrics::counter!("dialtone_tftp_stalled_total").increment(1);
            return Timer::Stalled;
        }
        self.resent += 1;
        self.deadline = (now + self.timeout).min(self.give_up);
        Timer::Resend
    }

    /// Reads blocks until the window is full or the file ends.
    fn fill(&mut self) -> io::Result<()> {
        if self.oack_out {
            return Ok(());
        }
        while !self.read_all && self.window.len() < self.windowsize {
            let number = self.base.wrapping_add(self.window.len() as u16);
            let mut packet = self
                .spare
                .pop()
                .unwrap_or_else(|| Vec::with_capacity(4 + self.blksize));
            packet.extend_from_slice(&OP_DATA.to_be_bytes());
            packet.extend_from_slice(&number.to_be_bytes());
            self.reader.block(&mut packet, self.blksize)?;
            self.read_all = packet.len() - 4 < self.blksize;
            self.window.push_back(packet);
        }
        Ok(())
    }

    /// A new window went out: the retries and the stall bound start over.
    fn progressed(&mut self, now: Instant) {
        self.resent = 0;
        self.give_up = (now + self.stall).min(self.too_slow_at());
        self.deadline = (now + self.timeout).min(self.give_up);
    }

    /// When the client falls behind `min_rate` by more than `slack`. The
    /// stall bound alone let a client that ACKs a block of 8 bytes now and
    /// then hold its slot for ever; this ends every transfer, done or not,
    /// within `slack` plus its size at `min_rate`.
    fn too_slow_at(&self) -> Instant {
        let behind = Duration::from_secs(self.acked / self.min_rate)
            + Duration::from_nanos((self.acked % self.min_rate) * 1_000_000_000 / self.min_rate);
        self.started + self.slack + behind
    }
}

/// Every transfer's end is recorded the same way, whichever front end ran
/// it: "ok", "incomplete" or "panic".
pub(super) fn record_outcome(started: Instant, outcome: &'static str) {
    if outcome == "panic" {
        metrics::counter!("dialtone_tftp_transfer_panics_total").increment(1);
    }
    metrics::histogram!("dialtone_transfer_duration_seconds", "protocol" => "tftp", "outcome" => outcome)
        .record(started.elapsed().as_secs_f64());
}

#[cfg(test)]
mod tests {
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
        let mut t = start(b"\0\x01f\0octet\0", b"abc", &options, now);
        assert_eq!(t.deadline(), now + Duration::from_secs(1));
        assert_eq!(t.on_timer(now), Timer::Wait);
        let mut at = t.deadline();
        assert_eq!(t.on_timer(at), Timer::Resend);
        at = t.deadline();
        assert_eq!(t.on_timer(at), Timer::Resend);
        at = t.deadline();
        assert_eq!(t.on_timer(at), Timer::Stalled);
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
        let oack = t.outgoing().next().unwrap().to_vec();
        assert!(oack.ends_with(b"tsize\x0020\0"), "{oack:?}");
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        std::io::Write::write_all(&mut file, &[0xee; 100]).unwrap();
        assert_eq!(t.on_packet(&[0, 4, 0, 0], now).unwrap(), Step::Advanced);
        let (received, _) = run_to_end(&mut t, now);
        assert_eq!(received, opened);
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
}
