//! Non-INVITE client transactions over UDP (RFC 3261 17.1.2): one socket
//! for all of them, responses handed to their transaction by Via branch
//! and CSeq method.
//!
//! Trying: the request is retransmitted when Timer E fires, E starting at
//! T1 and doubling up to T2. A provisional response moves to Proceeding,
//! where E fires every T2. A final response ends the transaction; Timer F
//! (64·T1) ends it unanswered. Completed's Timer K only absorbs
//! retransmitted finals, which an unknown branch is dropped as anyway, so
//! a transaction leaves the table the moment it has its answer.

use std::collections::HashMap;
use std::net::SocketAddr;
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

/// The shared socket and who waits on which branch.
pub struct Transport {
    socket: UdpSocket,
    waiting: Mutex<HashMap<String, mpsc::Sender<Response>>>,
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
            unanswered: Mutex::default(),
        }
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, mpsc::Sender<Response>>> {
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

    /// Reads responses until cancelled. Anything that is not a response to
    /// a NOTIFY of a live transaction is dropped: the network is untrusted,
    /// and the branch is 64 random bits.
    pub async fn receive(&self, cancel: CancellationToken) {
        let mut buf = vec![0u8; 8192];
        loop {
            let n = tokio::select! {
                _ = cancel.cancelled() => return,
                r = self.socket.recv_from(&mut buf) => match r {
                    Ok((n, _)) => n,
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
            if response.method != "NOTIFY" {
                continue;
            }
            let waiting = self.lock();
            if let Some(tx) = waiting.get(&response.branch) {
                // A full channel means a flood of copies: the rest go.
                let _ = tx.try_send(response);
            }
        }
    }

    /// Runs one transaction for `request` (already carrying `branch` in its
    /// Via) to `dest`. `proceeding` is called on the first 1xx.
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
            let mut unanswered = self.unanswered.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(count) = unanswered.get_mut(&dest) {
                *count += 1;
            }
        }
        outcome
    }

    async fn transact(
        &self,
        dest: SocketAddr,
        branch: &str,
        request: &[u8],
        timers: Timers,
        mut proceeding: impl FnMut(),
    ) -> Outcome {
        let (tx, mut rx) = mpsc::channel(PER_TRANSACTION);
        self.lock().insert(branch.to_string(), tx);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resync::sip;
    use std::sync::Arc;

    const TIMERS: Timers = Timers {
        t1: Duration::from_millis(20),
        t2: Duration::from_millis(80),
    };

    async fn setup() -> (Arc<Transport>, UdpSocket, CancellationToken) {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let transport = Arc::new(Transport::new(socket));
        let cancel = CancellationToken::new();
        let (t, c) = (transport.clone(), cancel.clone());
        tokio::spawn(async move { t.receive(c).await });
        let far = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        (transport, far, cancel)
    }

    fn request(local: SocketAddr, branch: &str) -> Vec<u8> {
        sip::Notify {
            aor: "sip:1001@sip.example.net",
            event: "check-sync",
            local,
            branch,
            from_domain: "sip.example.net",
            from_tag: "t",
            call_id: "c",
        }
        .to_bytes()
    }

    fn answer(status: &str, branch: &str) -> Vec<u8> {
        format!("SIP/2.0 {status}\r\nVia: SIP/2.0/UDP 127.0.0.1;branch={branch};rport=1\r\nCSeq: 1 NOTIFY\r\nContent-Length: 0\r\n\r\n").into_bytes()
    }

    #[tokio::test]
    async fn a_trying_then_ok_ends_answered_after_retransmissions_at_t2() {
        let (transport, far, _cancel) = setup().await;
        let dest = far.local_addr().unwrap();
        let local = transport.local_addr().unwrap();
        let phone = tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            let (n, from) = far.recv_from(&mut buf).await.unwrap();
            let text = String::from_utf8_lossy(&buf[..n]).to_string();
            far.send_to(&answer("100 Trying", "z9hG4bKa"), from)
                .await
                .unwrap();
            // Proceeding: retransmissions keep coming, T2 apart.
            let (_, _) = far.recv_from(&mut buf).await.unwrap();
            let t = Instant::now();
            let (_, _) = far.recv_from(&mut buf).await.unwrap();
            let gap = t.elapsed();
            // Someone else's answer, then ours.
            far.send_to(&answer("500 Other", "z9hG4bKother"), from)
                .await
                .unwrap();
            far.send_to(&answer("200 OK", "z9hG4bKa"), from)
                .await
                .unwrap();
            (text, gap)
        });
        let mut provisional = 0;
        let outcome = transport
            .request(
                dest,
                "z9hG4bKa",
                &request(local, "z9hG4bKa"),
                TIMERS,
                || provisional += 1,
            )
            .await;
        assert_eq!(
            outcome,
            Outcome::Final {
                status: 200,
                reason: "OK".into()
            }
        );
        assert_eq!(provisional, 1);
        let (text, gap) = phone.await.unwrap();
        assert!(text.starts_with("NOTIFY sip:1001@sip.example.net SIP/2.0\r\n"));
        assert!(gap >= Duration::from_millis(60), "{gap:?}");
        assert_eq!(transport.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_final_error_is_kept_with_its_reason() {
        let (transport, far, _cancel) = setup().await;
        let dest = far.local_addr().unwrap();
        let local = transport.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            let (_, from) = far.recv_from(&mut buf).await.unwrap();
            far.send_to(&answer("404 Not Found", "z9hG4bKb"), from)
                .await
                .unwrap();
        });
        let outcome = transport
            .request(dest, "z9hG4bKb", &request(local, "z9hG4bKb"), TIMERS, || {})
            .await;
        assert_eq!(
            outcome,
            Outcome::Final {
                status: 404,
                reason: "Not Found".into()
            }
        );
    }

    #[tokio::test]
    async fn silence_ends_at_timer_f_after_doubling_retransmissions() {
        let (transport, far, _cancel) = setup().await;
        let dest = far.local_addr().unwrap();
        let local = transport.local_addr().unwrap();
        let counter = tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            let mut at = Vec::new();
            while let Ok(Ok(_)) =
                tokio::time::timeout(Duration::from_millis(500), far.recv_from(&mut buf)).await
            {
                at.push(Instant::now());
            }
            at
        });
        let start = Instant::now();
        let outcome = transport
            .request(dest, "z9hG4bKc", &request(local, "z9hG4bKc"), TIMERS, || {})
            .await;
        let took = start.elapsed();
        assert_eq!(outcome, Outcome::Timeout);
        assert!(took >= TIMERS.t1 * 64, "{took:?}");
        let at = counter.await.unwrap();
        // E: 20, 40, 80, then every 80 ms up to F at 1280 ms: 1 + 3 + 14ish.
        assert!((12..=20).contains(&at.len()), "{} sends", at.len());
        let first_gap = at[1] - at[0];
        let later_gap = at[5] - at[4];
        assert!(first_gap < later_gap, "{first_gap:?} vs {later_gap:?}");
        assert_eq!(transport.in_flight(), 0);
    }

    /// The proxy's addresses are watched: one whose NOTIFY went unanswered
    /// says so, an answered one does not, and nothing else is counted.
    #[tokio::test]
    async fn unanswered_transactions_are_counted_for_watched_destinations() {
        const QUICK: Timers = Timers {
            t1: Duration::from_millis(2),
            t2: Duration::from_millis(8),
        };
        let (transport, far, _cancel) = setup().await;
        let silent = far.local_addr().unwrap();
        let unwatched = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let unwatched = unwatched.local_addr().unwrap();
        let answering = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let answers = answering.local_addr().unwrap();
        let local = transport.local_addr().unwrap();
        transport.watch(&[silent, answers]);
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            let (_, from) = answering.recv_from(&mut buf).await.unwrap();
            answering
                .send_to(&answer("200 OK", "z9hG4bKok"), from)
                .await
                .unwrap();
        });
        for (dest, branch) in [
            (silent, "z9hG4bKs"),
            (unwatched, "z9hG4bKu"),
            (answers, "z9hG4bKok"),
        ] {
            transport
                .request(dest, branch, &request(local, branch), QUICK, || {})
                .await;
        }
        assert_eq!(transport.unanswered(silent), 1);
        assert_eq!(transport.unanswered(unwatched), 0);
        assert_eq!(transport.unanswered(answers), 0);
        transport.watch(&[answers]);
        assert_eq!(transport.unanswered(silent), 0);
    }
}
