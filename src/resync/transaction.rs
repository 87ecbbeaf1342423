//! Non-INVITE client transactions over UDP (RFC 3261 17.1.2): one socket
//! for all of them, responses handed to their transaction by Via branch
//! and CSeq method, and only from the address its request went to: the
//! branch alone let anyone who learned or guessed it end a transaction
//! with a status and reason of their own, shown in `/v1/resyncs`.
//!
//! Trying: the request is retransmitted when Timer E fires, E starting at
//! T1 and doubling up to T2. A provisional response moves to Proceeding,
//! where E fires every T2. A final response ends the transaction; Timer F
//! (64·T1) ends it unanswered. Completed's Timer K only absorbs
//! retransmitted finals, which an unknown branch is dropped as anyway, so
//! a transaction leaves the table the moment it has its answer.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;

use super::sip::{parse_response, Response};

#[derive(Clone, Copy, Debug)]
pub struct Timers {
    pub t1: Duration,
    pub t2: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Final {
        status: u16,
        reason: String,
    },
    /// Timer F fired: no final response.
    Timeout,
    /// The first transmission failed locally (no route, socket error).
    SendFailed(String),
}

/// Responses a transaction may have waiting: a 1xx or two and the final.
const PER_TRANSACTION: usize = 4;

/// How often an answer from the wrong address is logged at WARN.
const WRONG_SOURCE_LOG_EVERY: Duration = Duration::from_secs(60);

/// A live transaction: where its request went (every retransmission
/// too), the one address its answers may come from.
struct Waiting {
    dest: SocketAddr,
    tx: mpsc::Sender<Response>,
}

/// The shared socket and who waits on which branch.
pub struct Transport {
    socket: UdpSocket,
    waiting: Mutex<HashMap<String, Waiting>>,
    /// Answers with a live branch that came from another address.
    wrong_source: AtomicU64,
    /// When the last of those was logged, and how many went unlogged
    /// since: a proxy that answers from another of its addresses drops
    /// every answer, which must show in the log without filling it.
    wrong_source_logged: Mutex<(Option<Instant>, u64)>,
    /// Transactions that ended without a final answer, per destination
    /// someone asked about (`watch`): the proxy's addresses, so that the
    /// next NOTIFY can go to another. Only those: direct mode sends to
    /// every phone, which would grow it without bound.
    unanswered: Mutex<HashMap<SocketAddr, u64>>,
}

/// Takes a transaction's branch out of the table however its future ends
/// (answered, timed out, or dropped at shutdown).
struct Registration<'a> {
    transport: &'a Transport,
    branch: &'a str,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.transport.lock().remove(self.branch);
    }
}

impl Transport {
    pub fn new(socket: UdpSocket) -> Transport {
        Transport {
            socket,
            waiting: Mutex::default(),
            wrong_source: AtomicU64::new(0),
            wrong_source_logged: Mutex::default(),
            unanswered: Mutex::default(),
        }
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Waiting>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts, from now on, the transactions to `dests` that end without a
    /// final answer, and no longer those to any other destination.
    pub fn watch(&self, dests: &[SocketAddr]) {
        let mut unanswered = self.unanswered.lock().unwrap_or_else(|e| e.into_inner());
        unanswered.retain(|dest, _| dests.contains(dest));
        for dest in dests {
            unanswered.entry(*dest).or_insert(0);
        }
    }

    /// Transactions to `dest` that ended without a final answer (timed
    /// out or not sent) while it was watched.
    pub fn unanswered(&self, dest: SocketAddr) -> u64 {
        let unanswered = self.unanswered.lock().unwrap_or_else(|e| e.into_inner());
        unanswered.get(&dest).copied().unwrap_or(0)
    }

    /// Transactions waiting for an answer.
    #[cfg(test)]
    pub fn in_flight(&self) -> usize {
        self.lock().len()
    }

    /// Answers dropped for coming from elsewhere than their request went.
    #[cfg(test)]
    pub fn wrong_source(&self) -> u64 {
        self.wrong_source.load(Ordering::Relaxed)
    }

    /// Reads responses until cancelled. Anything that is not a response to
    /// a NOTIFY of a live transaction, from the address that transaction
    /// sent to, is dropped: the network is untrusted, and the branch, 64
    /// random bits, is seen by everyone on the request's path.
    pub async fn receive(&self, cancel: CancellationToken) {
        let mut buf = vec![0u8; 8192];
        loop {
            let (n, from) = tokio::select! {
                _ = cancel.cancelled() => return,
                r = self.socket.recv_from(&mut buf) => match r {
                    Ok(received) => received,
                    // ICMP errors surface here on some systems; the
                    // transaction's own timers deal with the silence. The
                    // pause keeps a socket that keeps failing from spinning.
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                },
            };
            let Some(response) = parse_response(&buf[..n]) else {
                continue;
            };
            // NOTIFYs, and the OPTIONS that asks a proxy whether it is
            // there when one of them went unanswered.
            if response.method != "NOTIFY" && response.method != "OPTIONS" {
                continue;
            }
            let waiting = self.lock();
            let Some(transaction) = waiting.get(&response.branch) else {
                continue;
            };
            if !same_endpoint(from, transaction.dest) {
                self.wrong_source.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("dialtone_resync_answers_dropped_total", "reason" => "wrong_source")
                    .increment(1);
                if let Some(unlogged) = self.may_log_wrong_source() {
                    tracing::warn!(%from, sent_to = %transaction.dest, status = response.status, unlogged,
                        "resync: dropped an answer from another address than the NOTIFY went to; \
                         a proxy that answers from another of its addresses leaves every resync unanswered");
                } else {
                    tracing::debug!(%from, sent_to = %transaction.dest, status = response.status,
                        "resync: dropped an answer from another address than the NOTIFY went to");
                }
                continue;
            }
            // A full channel means a flood of copies: the rest go.
            let _ = transaction.tx.try_send(response);
        }
    }

    /// `Some(answers not logged since the last line)` at most once a
    /// minute: a forger may send them at will.
    fn may_log_wrong_source(&self) -> Option<u64> {
        let mut logged = self
            .wrong_source_logged
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let (last, unlogged) = &mut *logged;
        let now = Instant::now();
        if last.is_some_and(|at| now.duration_since(at) < WRONG_SOURCE_LOG_EVERY) {
            *unlogged += 1;
            return None;
        }
        *last = Some(now);
        Some(std::mem::take(unlogged))
    }

    /// [`Transport::transact`], counting a transaction left unanswered:
    /// what the worker does for a proxy that is silent to its probe too.
    #[cfg(test)]
    pub async fn request(
        &self,
        dest: SocketAddr,
        branch: &str,
        request: &[u8],
        timers: Timers,
        proceeding: impl FnMut(),
    ) -> Outcome {
        let outcome = self
            .transact(dest, branch, request, timers, proceeding)
            .await;
        if !matches!(outcome, Outcome::Final { .. }) {
            self.count_unanswered(dest);
        }
        outcome
    }

    /// One more transaction to `dest` ended without a final answer, if
    /// `dest` is watched.
    pub fn count_unanswered(&self, dest: SocketAddr) {
        let mut unanswered = self.unanswered.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = unanswered.get_mut(&dest) {
            *count += 1;
        }
    }

    /// Runs one transaction for `request` (already carrying `branch` in its
    /// Via) to `dest`. `proceeding` is called on the first 1xx. A
    /// transaction left unanswered is not counted here: the caller decides
    /// whose silence it was (`count_unanswered`).
    pub async fn transact(
        &self,
        dest: SocketAddr,
        branch: &str,
        request: &[u8],
        timers: Timers,
        mut proceeding: impl FnMut(),
    ) -> Outcome {
        let (tx, mut rx) = mpsc::channel(PER_TRANSACTION);
        self.lock().insert(branch.to_string(), Waiting { dest, tx });
        let _registration = Registration {
            transport: self,
            branch,
        };
        if let Err(e) = self.socket.send_to(request, dest).await {
            return Outcome::SendFailed(e.to_string());
        }
        let start = Instant::now();
        let timer_f = start + timers.t1 * 64;
        let mut interval = timers.t1;
        let mut timer_e = start + interval;
        let mut in_proceeding = false;
        loop {
            tokio::select! {
                biased;
                response = rx.recv() => {
                    let Some(response) = response else { return Outcome::Timeout };
                    if response.status >= 200 {
                        return Outcome::Final { status: response.status, reason: response.reason };
                    }
                    if !in_proceeding {
                        in_proceeding = true;
                        proceeding();
                    }
                }
                _ = sleep_until(timer_f) => return Outcome::Timeout,
                _ = sleep_until(timer_e) => {
                    // A lost retransmission is like a lost first copy: the
                    // next one, or Timer F, follows.
                    let _ = self.socket.send_to(request, dest).await;
                    interval = if in_proceeding { timers.t2 } else { (interval * 2).min(timers.t2) };
                    timer_e = Instant::now() + interval;
                }
            }
        }
    }
}

/// One address and port, however the socket spells it: a dual-stack
/// socket reports an IPv4 sender as IPv4-mapped IPv6.
fn same_endpoint(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && a.ip().to_canonical() == b.ip().to_canonical()
}

#[cfg(test)]
#[path = "transaction_tests.rs"]
mod tests;
