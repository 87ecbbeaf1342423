//! Who makes room when a listener is full: the connection whose client
//! reads its response the slowest.
//!
//! `stall.rs` ends a write only after it has made no progress at all for
//! 30 s. A client that asks for a firmware image and then takes a few
//! bytes a second never trips that, and holds its place for hours; a few
//! hosts with their per-source share each would hold every place, and
//! every phone would get 503. So each connection measures how fast its
//! client takes what it is waiting to send (`Meter`), a connection that
//! falls below `MIN_READ_RATE` for a whole window is marked, and a newcomer
//! to a full listener takes the place of the slowest marked connection.
//!
//! Measuring costs a connection nothing shared: its own counters, a clock
//! read when a write starts and stops waiting, and a system call a window.
//! The registry's lock is taken when a connection is marked or unmarked,
//! when a marked one closes, and when a newcomer finds the listener full.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::BorrowedFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Context;
use std::time::Duration;

use futures::task::AtomicWaker;
use tokio::time::{Instant, Sleep};

/// The slowest a client may take a response that waits on it. A phone on
/// a poor line still reads tens of KiB a second or more, and an attacker
/// holding thousands of connections at this pace pays for megabytes a
/// second.
///
/// What the client took is read from its acknowledgements (the bytes
/// still unacknowledged in the socket, at each end of a window), not from
/// when our writes go through: a waiting write is woken only once the send
/// buffer has drained by a third, and a buffer of megabytes (on a fast
/// path, or loopback) drains by that much less often than once a window for
/// a client that reads steadily. Acknowledgements come a segment or two
/// at a time, far below a window's 40 KiB; TLS's own buffer (up to 64 KiB)
/// only moves bytes from one window to the next.
pub(super) const MIN_READ_RATE: u64 = 4 * 1024;

/// One measurement, in time spent waiting on the client: long enough for
/// a phone's pauses (a busy moment, a lost segment sent again) to be made
/// up within it, short against the 30 s after which `stall.rs` ends a
/// client that reads nothing.
pub(super) const SLOW_WINDOW: Duration = Duration::from_secs(10);

/// The connections marked slow, by the address of their `Reader` (unique
/// while listed: the entry holds the `Reader`).
pub(super) struct Readers {
    window: Duration,
    marked: Mutex<HashMap<usize, Marked>>,
}

struct Marked {
    since: Instant,
    /// What the client took in its last slow window: the slowest goes
    /// first. By the age of the mark alone, a client reading well every
    /// other window (and so marked anew each time) went after a phone
    /// reading steadily just under the floor.
    took: u64,
    reader: Arc<Reader>,
}

/// What the listener reaches a marked connection through.
struct Reader {
    peer: SocketAddr,
    /// A write waits on the client now. A marked connection between
    /// requests, or whose handler is still producing, is not reading
    /// slowly at the moment, and is left alone.
    waiting: AtomicBool,
    /// Its place has gone to a newcomer; every call on its stream fails.
    evicted: AtomicBool,
    waker: AtomicWaker,
}

fn key(reader: &Arc<Reader>) -> usize {
    Arc::as_ptr(reader) as usize
}

impl Readers {
    pub(super) fn new(window: Duration) -> Self {
        Readers {
            window: window.max(Duration::from_millis(1)),
            marked: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<usize, Marked>> {
        self.marked.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ends the slowest marked connection (the oldest mark among equals)
    /// among those waiting on their client now, and gives its peer. Its
    /// place is the caller's:
    /// it still gives its place back when it closes, a moment later, and
    /// the caller's own count stands for the newcomer.
    pub(super) fn evict(&self) -> Option<SocketAddr> {
        let reader = {
            let mut marked = self.lock();
            let key = marked
                .iter()
                .filter(|(_, m)| m.reader.waiting.load(Ordering::Acquire))
                .min_by_key(|(_, m)| (m.took, m.since))
                .map(|(key, _)| *key)?;
            let reader = marked.remove(&key)?.reader;
            // Under the lock: an owner that finds its entry gone knows why.
            reader.evicted.store(true, Ordering::Release);
            reader
        };
        reader.waker.wake();
        Some(reader.peer)
    }
}

/// One connection's measure of its client, kept by its stream.
pub(super) struct Meter {
    readers: Arc<Readers>,
    peer: SocketAddr,
    /// From the first write that waits on the client; a connection whose
    /// writes never wait reads no clock.
    measure: Option<Measure>,
    /// Ours while marked; kept once evicted, so the stream keeps failing.
    listed: Option<Arc<Reader>>,
}

struct Measure {
    /// Spent waiting on the client this window, up to `since`. Only
    /// waiting counts: time between requests or in a handler is not the
    /// client's.
    waited: Duration,
    /// What our writes handed to the socket (or TLS) this window.
    accepted: u64,
    /// Unacknowledged by the client when the window began.
    queued: u64,
    /// When the current wait began, while a write waits.
    since: Option<Instant>,
    /// Wakes a wait that outlasts the window, when no progress would.
    /// Not moved at each wait, so it may fire early, never late; early,
    /// it is set for what is left.
    end: Pin<Box<Sleep>>,
}

impl Meter {
    pub(super) fn new(readers: Arc<Readers>, peer: SocketAddr) -> Self {
        Meter {
            readers,
            peer,
            measure: None,
            listed: None,
        }
    }

    /// Fails once the connection's place has gone to a newcomer.
    pub(super) fn check(&self) -> io::Result<()> {
        match &self.listed {
            Some(reader) if reader.evicted.load(Ordering::Acquire) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "evicted: reading too slowly while the server was full",
            )),
            _ => Ok(()),
        }
    }

    /// A write (or flush) went through, `accepted` bytes of it.
    pub(super) fn progressed(&mut self, accepted: usize, socket: BorrowedFd<'_>) {
        let Some(measure) = &mut self.measure else {
            return;
        };
        measure.accepted += accepted as u64;
        let Some(since) = measure.since.take() else {
            return;
        };
        measure.waited += since.elapsed();
        if let Some(reader) = &self.listed {
            reader.waiting.store(false, Ordering::Release);
        }
        if measure.waited >= self.readers.window {
            self.judge(socket);
        }
    }

    /// A write waits on the client; fails if the connection is evicted.
    pub(super) fn waits(&mut self, cx: &mut Context<'_>, socket: BorrowedFd<'_>) -> io::Result<()> {
        let window = self.readers.window;
        let measure = self.measure.get_or_insert_with(|| Measure {
            waited: Duration::ZERO,
            accepted: 0,
            queued: unacknowledged(socket),
            since: None,
            end: Box::pin(tokio::time::sleep(window)),
        });
        if measure.since.is_none() {
            measure.since = Some(Instant::now());
            if let Some(reader) = &self.listed {
                reader.waiting.store(true, Ordering::Release);
            }
        }
        while let Some(measure) = &mut self.measure {
            if measure.end.as_mut().poll(cx).is_pending() {
                break;
            }
            let now = Instant::now();
            let since = measure.since.replace(now).unwrap_or(now);
            measure.waited += now - since;
            if measure.waited >= window {
                self.judge(socket);
            }
            if let Some(measure) = &mut self.measure {
                let left = window.saturating_sub(measure.waited);
                measure.end.as_mut().reset(now + left);
            }
        }
        if let Some(reader) = &self.listed {
            // Registered before `check` reads the flag: an eviction after
            // this wakes this waker, one before it is seen by `check`.
            reader.waker.register(cx.waker());
        }
        self.check()
    }

    /// Ends a window: marks a client that took less than the window's
    /// worth, clears a client that kept up.
    fn judge(&mut self, socket: BorrowedFd<'_>) {
        let Some(measure) = &mut self.measure else {
            return;
        };
        let queued = unacknowledged(socket);
        let took = (measure.accepted + measure.queued).saturating_sub(queued);
        let least = (self.readers.window.as_secs_f64() * MIN_READ_RATE as f64) as u64;
        let slow = took < least;
        let waiting = measure.since.is_some();
        measure.waited = Duration::ZERO;
        measure.accepted = 0;
        measure.queued = queued;
        if slow && self.listed.is_none() {
            let reader = Arc::new(Reader {
                peer: self.peer,
                waiting: AtomicBool::new(waiting),
                evicted: AtomicBool::new(false),
                waker: AtomicWaker::new(),
            });
            let marked = Marked {
                since: Instant::now(),
                took,
                reader: reader.clone(),
            };
            self.readers.lock().insert(key(&reader), marked);
            self.listed = Some(reader);
        } else if let (true, Some(reader)) = (slow, &self.listed) {
            if let Some(marked) = self.readers.lock().get_mut(&key(reader)) {
                marked.took = took;
            }
        } else if let Some(reader) = self.listed.as_ref().filter(|_| !slow) {
            // Gone from the registry already means evicted: kept.
            if self.readers.lock().remove(&key(reader)).is_some() {
                self.listed = None;
            }
        }
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        if let Some(reader) = self.listed.take() {
            self.readers.lock().remove(&key(&reader));
        }
    }
}

/// Bytes written to `socket` that the client has not acknowledged.
#[cfg(target_os = "linux")]
fn unacknowledged(socket: BorrowedFd<'_>) -> u64 {
    use std::os::fd::AsRawFd;
    let mut queued: libc::c_int = 0;
    // SAFETY: SIOCOUTQ (TIOCOUTQ on Linux) writes one `c_int`, here a live
    // local, and the descriptor is borrowed, so open.
    let read = unsafe { libc::ioctl(socket.as_raw_fd(), libc::TIOCOUTQ, &mut queued) };
    if read == 0 {
        queued.max(0) as u64
    } else {
        0
    }
}

/// Elsewhere, what went through our writes is all that is known.
#[cfg(not(target_os = "linux"))]
fn unacknowledged(_: BorrowedFd<'_>) -> u64 {
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(readers: &Readers, port: u16, took: u64, since: Instant) -> Arc<Reader> {
        let reader = Arc::new(Reader {
            peer: SocketAddr::from(([127, 0, 0, 1], port)),
            waiting: AtomicBool::new(true),
            evicted: AtomicBool::new(false),
            waker: AtomicWaker::new(),
        });
        let marked = Marked {
            since,
            took,
            reader: reader.clone(),
        };
        readers.lock().insert(key(&reader), marked);
        reader
    }

    /// The slowest goes first, however recent its mark: a client reading
    /// well every other window is marked anew each time, and by the age
    /// of marks a phone reading steadily just under the floor went first.
    #[tokio::test]
    async fn the_slowest_reader_goes_first_whatever_its_marks_age() {
        let readers = Readers::new(SLOW_WINDOW);
        let now = Instant::now();
        let steady = mark(&readers, 1, 30_000, now);
        let idle = mark(&readers, 2, 0, now);
        idle.waiting.store(false, Ordering::Release);
        let fresh = mark(&readers, 3, 10, now + Duration::from_secs(60));
        assert_eq!(readers.evict().map(|p| p.port()), Some(3));
        assert!(fresh.evicted.load(Ordering::Acquire));
        // Not waiting on its client (between requests): left alone.
        assert_eq!(readers.evict().map(|p| p.port()), Some(1));
        assert!(steady.evicted.load(Ordering::Acquire));
        assert_eq!(readers.evict(), None);
        assert!(!idle.evicted.load(Ordering::Acquire));
    }
}
