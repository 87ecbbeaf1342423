//! One read transfer as a state machine that does no I/O of its own:
//! option negotiation, the file's blocks (converted to netascii when
//! asked), windows, when to resend and when to give up, and the outcome.
//! Both front ends drive it: the default one from a task with a port of
//! its own, the single-port one from its listener's demux table and timer
//! wheel. So every rule a transfer follows is decided here, once.

use std::collections::VecDeque;
use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::ending::{client_error, TransferEnd, Witness};
use super::limits::{ActiveTransfer, Slot};
use super::packet::{error_packet, oack_packet, ReadRequest, OP_ACK, OP_DATA, OP_ERROR};
use super::read_ahead::{next_look, reads_source, ReadAhead};
use super::read_pool::ReadBudget;
use super::{Refusal, TftpOptions};

/// What a transfer sends: a rendered body, or a static file read as it goes.
pub(super) enum Source {
    Memory(Arc<[u8]>),
    File { path: std::path::PathBuf },
}

/// The stored bytes, read in order. A static file is read ahead on
/// threads of its own (`ReadAhead`), never on the listener's, and no
/// further than the length it had when opened, the one tsize announced:
/// a firmware image being copied over in place would otherwise grow the
/// transfer past it, and a phone that checks tsize refuses it.
enum Raw {
    Memory { body: Arc<[u8]>, position: usize },
    File(ReadAhead),
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

    /// The length of what is sent, once known (a file's once it is open).
    fn len(&self) -> Option<u64> {
        match self {
            Raw::Memory { body, .. } => Some(body.len() as u64),
            Raw::File(file) => file.len(),
        }
    }

    /// Whether `wanted` bytes (or the rest) can be read without waiting.
    fn ready(&mut self, wanted: usize) -> io::Result<bool> {
        match self {
            Raw::Memory { .. } => Ok(true),
            Raw::File(file) => {
                file.poll()?;
                Ok(file.has(wanted))
            }
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

/// How much longer an IPv6 header is than an IPv4 one (40 bytes, 20).
const IPV6_HEADER_GROWTH: u16 = 20;

/// The largest block `peer` may negotiate. The limit is sized for IPv4
/// (the default 1468 + 4 TFTP + 8 UDP + 20 IPv4 fills a 1500-byte MTU);
/// the same block over IPv6 is fragmented, and IPv6 fragments are often
/// dropped on the way, so a real IPv6 peer gets 20 bytes less. An
/// IPv4-mapped peer (an IPv4 phone on a dual-stack listener) sends IPv4.
fn blksize_cap(limit: u16, peer: IpAddr) -> u16 {
    let cap = match peer {
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => limit.saturating_sub(IPV6_HEADER_GROWTH),
        _ => limit,
    };
    cap.max(8)
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
    /// No progress within the retries or `stall`, or the file could not
    /// be read in time: send `stalled_packet()` (if there is one) and end
    /// the transfer.
    Stalled,
    /// Behind `min_rate` by more than `min_rate_slack`: send
    /// `too_slow_packet()` (if there is one) and end the transfer.
    TooSlow,
    /// Told to give way (`Slots::admit`): send `evicted_packet()` (if
    /// there is one) and end the transfer.
    Evicted,
}

/// Resends of a transfer's first packet by timer before any ACK: until
/// one comes, the source may be forged, and each resend is a block
/// reflected at the address's real owner. A real client whose first packet
/// was lost gets it once more, and again each time it repeats its request
/// (see `REQUESTED_RESENDS`): a forger gets no more than it sends.
const UNPROVEN_RESENDS: u32 = 1;

/// Resends before any ACK that a repeat of the request earns past
/// `UNPROVEN_RESENDS`, one per repeat, at the next timer: phones repeat
/// their request when the first DATA does not come. Bounded, so repeats
/// cannot keep an unacknowledged transfer sending until `stall`.
const REQUESTED_RESENDS: u32 = 3;

/// How many times `min_rate` a transfer is measured against when its
/// source holds more than its share of a full server (`Slots::admit`):
/// the one furthest behind gives way. Well above the minimum, so a
/// client just keeping to it is the first to go.
const EVICTION_PACE: u64 = 4;

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
    /// Resends that repeats of the request have earned so far.
    requested_resends: u32,
    give_up: Instant,
    deadline: Instant,
    /// The file asked for, for the log.
    file: Box<str>,
    /// The client has acknowledged a packet: it receives what we send.
    acknowledged: bool,
    /// Why the transfer ends, once that is decided: the first reason
    /// given stands.
    ended: Option<TransferEnd>,
    witness: Option<Box<dyn Witness>>,
    /// Since when the next packets wait for the file (its open, or its
    /// next bytes): the timer looks for them until `timeout` has passed.
    waiting: Option<Instant>,
    /// The options to acknowledge once the file is open, and whether its
    /// length goes with them as tsize.
    opening: Option<(Vec<(&'static str, String)>, bool)>,
    /// The file could not be read: the error that ends the transfer.
    unreadable: Option<Refusal>,
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
        let mut oack: Vec<(&'static str, String)> = Vec::new();
        let blksize = match request.blksize {
            Some(b) => {
                let b = b.min(blksize_cap(options.blksize_limit, slot.peer().ip()));
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
        // A file's tsize is the size of what is opened, not the static
        // index's: a firmware image copied over in place before the next
        // SIGHUP has another length, and phones that check tsize refuse a
        // transfer that disagrees with it. Its converted size would cost
        // reading it twice; tsize is optional, so a netascii client goes
        // without.
        let file_tsize = request.tsize && !request.netascii;
        let raw = match source {
            Source::Memory(body) => {
                if request.tsize {
                    let len = match request.netascii {
                        true => netascii_len(&body),
                        false => body.len() as u64,
                    };
                    oack.push(("tsize", len.to_string()));
                }
                Raw::Memory { body, position: 0 }
            }
            Source::File { path } => {
                let source = reads_source(options, slot.peer());
                let window = blksize * windowsize;
                // Before an ACK, only a first window sent without an OACK
                // is read; an OACK needs the file's length alone.
                let oack_first = !oack.is_empty() || file_tsize;
                let unproven = if oack_first { 0 } else { window };
                let budget = ReadBudget::shared();
                Raw::File(ReadAhead::open(path, source, window, unproven, budget))
            }
        };
        let from_file = matches!(raw, Raw::File(_));
        let reader = Reader {
            raw,
            netascii: request.netascii.then(|| Netascii {
                pending: None,
                buf: vec![0; 4096].into(),
                start: 0,
                end: 0,
            }),
        };
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
            oack_out: false,
            read_all: false,
            resent: 0,
            requested_resends: 0,
            give_up: now,
            deadline: now,
            file: request.file.as_str().into(),
            acknowledged: false,
            ended: None,
            witness: None,
            waiting: None,
            opening: None,
            unreadable: None,
        };
        if from_file {
            // Its first packets go out once it is open (`on_timer`).
            transfer.opening = Some((oack, file_tsize));
            transfer.waiting = Some(now);
        } else {
            transfer.begin(oack, now)?;
        }
        transfer.progressed(now);
        // Its first packet goes out now (both front ends send it at once).
        transfer.slot.sending(now);
        transfer
            .slot
            .expecting(transfer.min_rate.saturating_mul(EVICTION_PACE));
        Ok(transfer)
    }

    /// `witness` is told of the client's first acknowledgement and, if
    /// one came, of the transfer's end (when it is dropped).
    pub fn witnessed_by(&mut self, witness: Option<Box<dyn Witness>>) {
        self.witness = witness;
    }

    /// Why the transfer ends, when its front end decides it (a shutdown,
    /// the client's next request); a reason already given stands. One
    /// never given is `Failed`: a send or a read that failed, a panic.
    pub fn end(&mut self, how: TransferEnd) {
        self.ended.get_or_insert(how);
    }

    /// The transfer's slot id: tells one transfer of a client address and
    /// port from the next.
    pub fn id(&self) -> u64 {
        self.slot.id()
    }

    pub fn started(&self) -> Instant {
        self.started
    }

    /// When `on_timer` is next due. It only ever moves later, but when
    /// the transfer starts to wait for its file: then it is soon, and a
    /// front end still holding a later timer looks for the file at that.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The packets to send now: the whole current window.
    pub fn outgoing(&self) -> impl Iterator<Item = &[u8]> {
        self.window.iter().map(Vec::as_slice)
    }

    /// The error that ends a stalled transfer: a client that is merely
    /// slow learns it is over instead of waiting out its own timeouts.
    /// A file that could not be read is told even to a client that has
    /// acknowledged nothing: the error takes the place of a packet it would
    /// have been sent anyway.
    pub fn stalled_packet(&self) -> Option<Vec<u8>> {
        if let Some((code, message)) = self.unreadable {
            return Some(error_packet(code, message));
        }
        self.to_the_client(|| error_packet(0, "timed out waiting for an acknowledgement"))
    }

    /// The error that ends a transfer behind the minimum rate.
    pub fn too_slow_packet(&self) -> Option<Vec<u8>> {
        self.to_the_client(|| error_packet(0, "transfer too slow"))
    }

    /// The error that ends a transfer told to give way to another
    /// source's: its client has acknowledged something, so is real, and
    /// tries again later. One never acknowledged gets nothing, as it is
    /// most likely a forged source's.
    pub fn evicted_packet(&self) -> Option<Vec<u8>> {
        self.to_the_client(|| error_packet(0, "server busy, try again"))
    }

    /// A packet that ends the transfer goes only to a client that has
    /// acknowledged something, in an exempt network too: before that the
    /// request may have been forged, and the packet would be reflected at
    /// someone who never spoke to us.
    fn to_the_client(&self, packet: impl FnOnce() -> Vec<u8>) -> Option<Vec<u8>> {
        self.slot.is_proven().then(packet)
    }

    /// A packet from the client, at `now`. An error reading the file ends
    /// the transfer (`Err`).
    pub fn on_packet(&mut self, packet: &[u8], now: Instant) -> io::Result<Step> {
        if packet.len() < 4 {
            return Ok(Step::Ignored);
        }
        match u16::from_be_bytes([packet[0], packet[1]]) {
            OP_ACK => {}
            OP_ERROR => {
                let refused = client_error(packet, self.slot.peer(), &self.file);
                self.end(refused);
                return Ok(Step::Aborted);
            }
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
        if !self.acknowledged {
            self.acknowledged = true;
            if let Raw::File(ahead) = &mut self.reader.raw {
                ahead.proven();
            }
            if let Some(witness) = &mut self.witness {
                witness.proven();
            }
        }
        for mut packet in self.window.drain(..reach) {
            if !self.oack_out {
                self.acked += (packet.len() - 4) as u64;
            }
            packet.clear();
            self.spare.push(packet);
        }
        self.slot.delivered(self.acked);
        self.base = self.base.wrapping_add(reach as u16);
        self.oack_out = false;
        if self.read_all && self.window.is_empty() {
            self.end(TransferEnd::Completed);
            return Ok(Step::Done);
        }
        self.fill(now)?;
        self.progressed(now);
        Ok(Step::Advanced)
    }

    /// Resolves once a full server has told this transfer to give way
    /// (`Slots::admit`).
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
            self.end(TransferEnd::Evicted);
            return Timer::Evicted;
        }
        if self.waiting.is_some() || self.unreadable.is_some() {
            return self.on_wait(now);
        }
        if now < self.deadline {
            return Timer::Wait;
        }
        if now >= self.too_slow_at() {
            metrics::counter!("dialtone_tftp_too_slow_total").increment(1);
            self.end(TransferEnd::TooSlow);
            return Timer::TooSlow;
        }
        let retries = if self.slot.is_proven() {
            self.retries
        } else {
            self.retries.min(UNPROVEN_RESENDS)
        };
        // Taken either way: a resend by timer answers a repeated request too.
        let asked_again = self.slot.take_asked_again();
        let out_of_retries = self.resent >= retries;
        let requested = out_of_retries
            && asked_again
            && !self.acknowledged
            && self.requested_resends < REQUESTED_RESENDS;
        if (out_of_retries && !requested) || now >= self.give_up {
            metrics::counter!("dialtone_tftp_stalled_total").increment(1);
            self.end(TransferEnd::Stalled);
            return Timer::Stalled;
        }
        if requested {
            self.requested_resends += 1;
        } else {
            self.resent += 1;
        }
        self.deadline = (now + self.timeout).min(self.give_up);
        Timer::Resend
    }

    /// The first packets: the OACK if any option was accepted, else the
    /// first window.
    fn begin(&mut self, oack: Vec<(&'static str, String)>, now: Instant) -> io::Result<()> {
        if oack.is_empty() {
            self.base = 1;
            return self.fill(now);
        }
        self.oack_out = true;
        self.window.push_back(oack_packet(&oack));
        Ok(())
    }

    /// Reads blocks until the window is full or the file ends. Blocks go
    /// out a whole window at a time: until the file's bytes for all of
    /// them are read, none is added, and the transfer waits.
    fn fill(&mut self, now: Instant) -> io::Result<()> {
        if self.oack_out || self.read_all {
            return Ok(());
        }
        let missing = self.windowsize.saturating_sub(self.window.len());
        if !self.reader.raw.ready(missing * self.blksize)? {
            self.waiting.get_or_insert(now);
            return Ok(());
        }
        self.waiting = None;
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
    /// One still waiting for its file looks for it first.
    fn progressed(&mut self, now: Instant) {
        self.resent = 0;
        self.give_up = (now + self.stall).min(self.too_slow_at());
        self.deadline = (now + self.timeout).min(self.give_up);
        if let Some(since) = self.waiting {
            self.deadline = self.deadline.min(next_look(since, now));
        }
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

impl Drop for Transfer {
    /// However the transfer ended, its witness hears of it once: as the
    /// phone's line if the client acknowledged something (before that the
    /// source may be forged, and a forged request must leave no line for
    /// the phone), else, if the client never answered or only refused, as
    /// a log line for the operator.
    fn drop(&mut self) {
        let Some(witness) = self.witness.take() else {
            return;
        };
        let how = self.ended.take().unwrap_or(TransferEnd::Failed);
        if self.acknowledged {
            witness.ended(&how, self.acked);
        } else if how.is_the_clients() {
            witness.unanswered(&how);
        }
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

#[path = "transfer_wait.rs"]
mod wait;

#[cfg(test)]
#[path = "transfer_tests.rs"]
mod tests;
