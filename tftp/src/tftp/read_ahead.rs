//! A static file's bytes for one transfer, opened and read on the reader
//! threads (`read_pool`) a bounded stretch ahead of the client, so the
//! transfer's blocks come from memory and the listener's thread never
//! waits on a disk. A transfer whose next window is not read yet waits
//! for it (`Transfer` polls, within its timeout); it never blocks.

use std::io::{self, Read as _};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::sync::oneshot::{self, error::TryRecvError};

use super::limits::{source_of, LogLimit};
use super::read_pool::{self, ReadBudget};
use super::{transfer_failed, Refusal, TftpOptions};
use crate::guard::listed_in;
use crate::statics::{open_regular, stamp, Stamp};

/// How far ahead of the client a transfer reads at least: 64 blocks of
/// 512 bytes. A transfer of larger windows holds four of them: the next
/// read starts once a quarter is free, so it has two windows' round trips
/// to finish before the client would wait for it.
const READ_AHEAD: usize = 32 << 10;
const WINDOWS_AHEAD: usize = 4;

/// How often a waiting transfer looks for its bytes: soon at first (a
/// read from the page cache takes microseconds), less often the longer
/// it waits, so a disk that does not answer costs little until the
/// transfer's timeout.
const FIRST_LOOK: Duration = Duration::from_millis(1);
const LONGEST_LOOK: Duration = Duration::from_millis(50);

/// The next look of a transfer waiting since `since`.
pub(super) fn next_look(since: Instant, now: Instant) -> Instant {
    now + now
        .saturating_duration_since(since)
        .clamp(FIRST_LOOK, LONGEST_LOOK)
}

/// Whom a read counts against: its client's source, unless the source
/// is in an exempt network.
pub(super) fn reads_source(options: &TftpOptions, peer: SocketAddr) -> Option<IpAddr> {
    let ip = peer.ip();
    (!listed_in(&options.per_source_exempt, ip)).then(|| source_of(ip))
}

static BUSY_LOG: LogLimit = LogLimit::new();
static TIMED_OUT_LOG: LogLimit = LogLimit::new();

/// The error packet for a transfer whose file could not be read, counted
/// and logged by why.
pub(super) fn read_refusal(peer: SocketAddr, file: &str, e: &io::Error) -> Refusal {
    match e.kind() {
        io::ErrorKind::ResourceBusy => {
            metrics::counter!("dialtone_tftp_refused_total", "reason" => "reads_busy").increment(1);
            if let Some(skipped) = BUSY_LOG.allow() {
                tracing::warn!(client = %peer, file = &*dialtone_sync::log_text(file), skipped, "TFTP static-file reads all taken (a slow disk?); refusing (logged at most once a second)");
            }
            (0, "server busy, try again")
        }
        io::ErrorKind::TimedOut => {
            metrics::counter!("dialtone_tftp_read_timeouts_total").increment(1);
            if let Some(skipped) = TIMED_OUT_LOG.allow() {
                tracing::warn!(client = %peer, file = &*dialtone_sync::log_text(file), skipped, "TFTP static file not read within the transfer's timeout (a slow disk?); ending it (logged at most once a second)");
            }
            (0, "read timed out, try again")
        }
        _ => transfer_failed(peer, Some(file), e),
    }
}

/// One transfer's static file: at most one read of it runs at a time,
/// holding a turn of the budget of reads in flight.
pub(super) struct ReadAhead {
    state: State,
    /// Bytes read and not yet taken: `buffer[start..]`.
    buffer: Vec<u8>,
    start: usize,
    /// The file's length when it was opened, once it is: tsize, and no
    /// byte past it is sent (a file copied over in place grows).
    len: Option<u64>,
    /// Bytes of that length not read yet.
    unread: u64,
    /// How much it holds at most; it reads again once a quarter is free.
    /// Until its client is proven (`proven`), only what the first window
    /// sent without an OACK needs.
    capacity: usize,
    /// The capacity once its client is proven.
    proven_capacity: usize,
    budget: &'static ReadBudget,
    source: Option<IpAddr>,
    path: PathBuf,
    /// When the file was written last, as it was opened.
    stamp: Option<Stamp>,
    /// The file changed since it was opened: it ended short of `len`
    /// (truncated, or copied over in place by a shorter one), or was
    /// written to. Every later poll fails, so no short last block tells
    /// the client it has the whole file, nor any block it has one file
    /// when it has parts of two.
    changed: bool,
}

enum State {
    /// The budget had no read to spare for the open.
    Busy,
    /// The open, or a read, runs on a reader thread, holding the file.
    Reading(oneshot::Receiver<io::Result<Read>>),
    /// Between reads.
    Idle(std::fs::File),
    /// All read, or failed.
    Closed,
}

/// A read's answer.
struct Read {
    file: std::fs::File,
    /// The open's answer: the file's length and stamp.
    opened: Option<(u64, Stamp)>,
    bytes: Vec<u8>,
    /// Fewer bytes than asked: the file ended early (it shrank).
    ended: bool,
    /// The file's stamp once these bytes were read.
    stamp: Stamp,
}

/// A file that changed while it was sent. The kind is the one
/// `transfer_failed` tells the client as such; nothing else a transfer
/// reads fails with it (`read_to_end` never does).
pub(super) const CHANGED: io::ErrorKind = io::ErrorKind::UnexpectedEof;

impl ReadAhead {
    /// Opens `path` on a reader thread and reads its first `unproven`
    /// bytes; once its client is proven (`proven`), a transfer with
    /// windows of `window` bytes holds a few of them ahead. Before that the
    /// request may be forged: a flood of them from forged sources, each
    /// holding the slot it was given, must not hold four windows each (92
    /// KiB at 1468 × 16, or 256 MiB at the largest blocks and windows the
    /// settings allow) read for no one. Without a read to spare, `poll`
    /// says busy.
    pub(super) fn open(
        path: PathBuf,
        source: Option<IpAddr>,
        window: usize,
        unproven: usize,
        budget: &'static ReadBudget,
    ) -> ReadAhead {
        let proven_capacity = READ_AHEAD.max(window.saturating_mul(WINDOWS_AHEAD));
        let capacity = unproven.min(proven_capacity);
        let opened = path.clone();
        let state = match budget.try_take(source) {
            None => State::Busy,
            Some(permit) => State::Reading(read_pool::submit(permit, move || {
                #[cfg(test)]
                tests::wait_while_stuck(&opened);
                let (mut file, meta) = open_regular(&opened)?;
                let wanted = (capacity as u64).min(meta.len());
                let (bytes, now) = read_up_to(&mut file, wanted)?;
                Ok(Read {
                    ended: (bytes.len() as u64) < wanted,
                    file,
                    opened: Some((meta.len(), stamp(&meta))),
                    bytes,
                    stamp: now,
                })
            })),
        };
        ReadAhead {
            state,
            buffer: Vec::new(),
            start: 0,
            len: None,
            unread: 0,
            capacity,
            proven_capacity,
            budget,
            source,
            path,
            stamp: None,
            changed: false,
        }
    }

    /// The file's length when opened, once it is.
    pub(super) fn len(&self) -> Option<u64> {
        self.len
    }

    /// The client has acknowledged a packet: it reads ahead in full from
    /// here.
    pub(super) fn proven(&mut self) {
        if self.capacity < self.proven_capacity {
            self.capacity = self.proven_capacity;
            self.read_more();
        }
    }

    /// Takes in a read that has finished, and starts the next one when
    /// there is room. Never waits.
    pub(super) fn poll(&mut self) -> io::Result<()> {
        if let State::Busy = self.state {
            return Err(io::Error::new(
                io::ErrorKind::ResourceBusy,
                "every static-file read is taken",
            ));
        }
        if self.changed {
            return Err(self.changed_error());
        }
        if let State::Reading(answer) = &mut self.state {
            let answer = match answer.try_recv() {
                Err(TryRecvError::Empty) => return Ok(()),
                Ok(answer) => answer,
                Err(TryRecvError::Closed) => Err(io::Error::other("the file's read panicked")),
            };
            self.state = State::Closed;
            self.take_in(answer?);
            if self.changed {
                return Err(self.changed_error());
            }
        }
        self.read_more();
        Ok(())
    }

    /// Whether `wanted` bytes can be taken now, or the rest of the file.
    pub(super) fn has(&self, wanted: usize) -> bool {
        self.buffered() >= wanted || self.at_end()
    }

    /// Like `Read::read` on what is buffered: 0 only at the end. Past what
    /// is buffered, short of the end, `WouldBlock` (`has` says first).
    pub(super) fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = out.len().min(self.buffered());
        if n == 0 && !out.is_empty() && !self.at_end() {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "the file's next bytes are not read yet",
            ));
        }
        out[..n].copy_from_slice(&self.buffer[self.start..self.start + n]);
        self.start += n;
        // At once, not at the next poll: the client's next ACK then finds
        // it done.
        self.read_more();
        Ok(n)
    }

    pub(super) fn buffered(&self) -> usize {
        self.buffer.len() - self.start
    }

    fn at_end(&self) -> bool {
        self.len.is_some() && self.unread == 0
    }

    fn take_in(&mut self, read: Read) {
        if let Some((len, stamp)) = read.opened {
            self.len = Some(len);
            self.unread = len;
            self.stamp = Some(stamp);
        }
        // Short of what was asked, and so of the length announced, `unread`
        // stays above zero: the file is never at its end.
        self.changed = read.ended || self.stamp != Some(read.stamp);
        self.unread = self.unread.saturating_sub(read.bytes.len() as u64);
        self.buffer.drain(..self.start);
        self.start = 0;
        if self.buffer.is_empty() {
            self.buffer = read.bytes;
        } else {
            self.buffer.extend_from_slice(&read.bytes);
        }
        if self.unread > 0 && !self.changed {
            self.state = State::Idle(read.file);
        } else {
            read_pool::close_on_reader(read.file);
        }
    }

    fn changed_error(&self) -> io::Error {
        let len = self.len.unwrap_or_default();
        io::Error::new(
            CHANGED,
            format!(
                "{} changed while being sent, with {} of the {len} bytes announced read",
                dialtone_sync::log_text(&self.path.display().to_string()),
                len.saturating_sub(self.unread),
            ),
        )
    }

    /// Without a read to spare, the transfer waits for one at its next
    /// look, within its timeout, like for a slow read.
    fn read_more(&mut self) {
        // Before its client is proven, nothing past the first read.
        if self.capacity < self.proven_capacity {
            return;
        }
        let buffered = self.buffered();
        let room = self.capacity.saturating_sub(buffered);
        if self.unread == 0 || room == 0 || room < self.capacity / 4 {
            return;
        }
        self.state = match std::mem::replace(&mut self.state, State::Closed) {
            State::Idle(mut file) => match self.budget.try_take(self.source) {
                None => State::Idle(file),
                Some(permit) => {
                    let wanted = (room as u64).min(self.unread);
                    State::Reading(read_pool::submit(permit, move || {
                        let (bytes, now) = read_up_to(&mut file, wanted)?;
                        Ok(Read {
                            ended: (bytes.len() as u64) < wanted,
                            file,
                            opened: None,
                            bytes,
                            stamp: now,
                        })
                    }))
                }
            },
            other => other,
        };
    }
}

/// A transfer that ends between reads closes its file on a reader thread,
/// not on the listener's: on a FUSE mount that stopped answering, a close
/// waits like a read, and every transfer of that listener with it.
impl Drop for ReadAhead {
    fn drop(&mut self) {
        if let State::Idle(file) = std::mem::replace(&mut self.state, State::Closed) {
            read_pool::close_on_reader(file);
        }
    }
}

/// Up to `wanted` bytes, and the file's stamp after them: a write that
/// changed any of them moved it by then.
fn read_up_to(file: &mut std::fs::File, wanted: u64) -> io::Result<(Vec<u8>, Stamp)> {
    let mut bytes = Vec::with_capacity(wanted as usize);
    file.take(wanted).read_to_end(&mut bytes)?;
    Ok((bytes, stamp(&file.metadata()?)))
}

#[cfg(test)]
#[path = "read_ahead_tests.rs"]
mod tests;
