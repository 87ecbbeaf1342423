//! The resync task: the receiver of answers, the sender (queue → client
//! transactions, at most `max_inflight` at once), and the refetch watch.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dialtone_sync::{now_millis, Mac, Millis};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::queue::Next;
use super::refetch::REFETCH_WINDOW_MS;
use super::sip::{self, Notify};
use super::track::{State, Via};
use super::transaction::{Outcome, Timers};
use super::ResyncService;

/// How long after sending its fetches are recorded in full, at least:
/// past timer F the answer is in, and a 2xx extends it.
const ANSWER_GRACE_MS: Millis = 5_000;

/// A sent resync's place in its tenant's share of those in flight
/// (`Queue::limit_inflight`), freed however the transaction ends, an abort
/// or a panic included: a place never freed would shrink the tenant's
/// share for good.
struct TenantPlace {
    service: ResyncService,
    seq: u64,
}

impl Drop for TenantPlace {
    fn drop(&mut self) {
        self.service.book().queue.finished(self.seq);
        self.service.inner.wake.notify_one();
    }
}

/// Ends a transaction that was dropped before its answer.
struct Interrupted {
    service: ResyncService,
    seq: Option<u64>,
}

impl Drop for Interrupted {
    fn drop(&mut self) {
        if let Some(seq) = self.seq {
            self.service.finish(
                seq,
                None,
                "interrupted: the resync task stopped before an answer".into(),
                "interrupted",
            );
        }
    }
}

impl ResyncService {
    /// Runs until cancelled. Queued and tracked resyncs live in the
    /// service, so a restart of this task loses only what was in flight;
    /// cancelled (shutdown), what still waits is dropped and counted.
    pub async fn run(self, cancel: CancellationToken) {
        let transport = self.inner.transport.clone();
        tokio::join!(
            transport.receive(cancel.clone()),
            self.clone().send(cancel.clone()),
            self.clone().watch_refetches(cancel.clone()),
        );
        if cancel.is_cancelled() {
            self.drop_queued();
        }
    }

    /// Drops every queued resync, and any a request releases later, for
    /// the sender is gone: each fails with a reason, and the count is
    /// logged and in `dialtone_resync_failed_total{reason="dropped"}`,
    /// where a 202 and an audit row saying "queued" would otherwise be the
    /// last trace of them. Returns how many.
    pub fn drop_queued(&self) -> usize {
        let mut book = self.book();
        book.stopped = true;
        let seqs = book.queue.clear();
        book.drop_unsent(&seqs);
        metrics::gauge!("dialtone_resync_waiting").set(book.queue.len() as f64);
        drop(book);
        if !seqs.is_empty() {
            metrics::counter!("dialtone_resync_failed_total", "reason" => "dropped")
                .increment(seqs.len() as u64);
            tracing::warn!(
                dropped = seqs.len(),
                "resync: queued resyncs dropped at shutdown (not kept across a restart; ask again)"
            );
        }
        seqs.len()
    }

    async fn send(self, cancel: CancellationToken) {
        let slots = Arc::new(Semaphore::new(self.inner.config.max_inflight));
        let mut running = JoinSet::new();
        loop {
            while let Some(done) = running.try_join_next() {
                // Its resync already reads "interrupted" (`Interrupted`);
                // the panic itself must not pass unseen.
                if let Err(e) = done {
                    if e.is_panic() {
                        let message = crate::supervise::panic_message(&*e.into_panic());
                        metrics::counter!("dialtone_task_panics_total", "task" => "resync-transaction")
                            .increment(1);
                        tracing::error!(panic = %message, "a resync transaction panicked");
                    }
                }
            }
            // Cancelled, nothing more leaves, even with a place free.
            let permit = tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                p = slots.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let next = {
                let mut book = self.book();
                let next = book.queue.pop(tokio::time::Instant::now());
                metrics::gauge!("dialtone_resync_waiting").set(book.queue.len() as f64);
                next
            };
            match next {
                Next::Send(seq) => {
                    // Made here, not in the task: a task aborted before its
                    // first poll drops it too.
                    let place = TenantPlace {
                        service: self.clone(),
                        seq,
                    };
                    running.spawn(self.clone().transact(seq, permit, place));
                }
                Next::Wait(at) => {
                    drop(permit);
                    let far = tokio::time::Instant::now() + Duration::from_secs(3600);
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = self.inner.wake.notified() => {}
                        _ = tokio::time::sleep_until(at.unwrap_or(far)) => {}
                    }
                }
            }
        }
        running.shutdown().await;
    }

    async fn transact(self, seq: u64, _slot: OwnedSemaphorePermit, _place: TenantPlace) {
        // A transaction the sender's shutdown (or restart) aborts still
        // ends in the table: otherwise it would show "sent" (or "queued")
        // to its tenant for good, and never be the first evicted.
        let mut interrupted = Interrupted {
            service: self.clone(),
            seq: Some(seq),
        };
        let Some((status, reason, label)) = self.exchange(seq).await else {
            interrupted.seq = None;
            self.book().unwait(seq);
            return;
        };
        interrupted.seq = None;
        self.finish(seq, status, reason, label);
    }

    /// Sends resync `seq` and waits for its final answer: the status, the
    /// reason and the failure label, or `None` if it is no longer tracked.
    async fn exchange(&self, seq: u64) -> Option<(Option<u16>, String, &'static str)> {
        let entry = self.book().table.get(seq).cloned()?;
        let current = match self.replan(seq, &entry) {
            Ok(current) => current,
            Err(reason) => return Some((None, reason, "changed")),
        };
        let dest = match self
            .destination(entry.view.via, &entry.mac, &current.tenant)
            .await
        {
            Ok(dest) => dest,
            Err((label, reason)) => return Some((None, reason.to_string(), label)),
        };
        let local = reachable_local(self.local_addr(), dest);
        let branch = format!("z9hG4bK{}", sip::random_hex(8));
        let (from_tag, call_id) = (sip::random_hex(4), sip::random_hex(12));
        let notify = Notify {
            aor: &current.job.target,
            event: current.job.event,
            local,
            branch: &branch,
            from_domain: &self.inner.sender_host,
            from_tag: &from_tag,
            call_id: &call_id,
        };
        let request = notify.to_bytes();
        if let Err(reason) = self.mark_sent(seq, &entry.mac) {
            return Some((None, reason, "changed"));
        }
        let timers = Timers {
            t1: Duration::from_millis(self.inner.config.t1_ms),
            t2: Duration::from_millis(self.inner.config.t2_ms),
        };
        let _inflight = Inflight::new();
        let transport = &self.inner.transport;
        let direct = entry.view.via == Via::Direct;
        // Through the proxy, whose silence is told from the phone's below.
        let outcome = transport
            .transact(dest, &branch, &request, timers, || {})
            .await;
        Some(match outcome {
            Outcome::Final { status, reason } => (Some(status), reason, "rejected"),
            // Direct mode sends to the phone itself: its silence is the
            // phone's (switched off, moved), not the proxy's, and must not
            // count toward the proxy's alert.
            Outcome::Timeout if direct => (None, "no answer (timer F)".into(), "phone_timeout"),
            // A proxy that relays to a phone gone silent (switched off, or
            // a contact a tenant registered where nothing answers) sends no
            // final answer for a NOTIFY either (RFC 4320): that silence,
            // too, is the phone's, and must neither page the operator nor
            // move NOTIFYs off a proxy that works.
            Outcome::Timeout if self.proxy_answers(&notify, dest, timers).await => (
                None,
                "no answer from the phone (timer F; the proxy answers)".into(),
                "phone_timeout",
            ),
            Outcome::Timeout => {
                transport.count_unanswered(dest);
                (None, "no answer (timer F)".into(), "timeout")
            }
            Outcome::SendFailed(e) => {
                tracing::warn!(error = %e, %dest, "resync: sending a NOTIFY failed");
                if direct {
                    (None, "could not send".into(), "phone_send")
                } else {
                    transport.count_unanswered(dest);
                    (None, "could not send".into(), "send")
                }
            }
        })
    }

    /// Whether the proxy at `dest` answers an OPTIONS meant for itself
    /// (`Notify::probe_bytes`) with a final answer below 500, within a
    /// quarter of a NOTIFY's wait (8 s by default): a proxy answers within
    /// a round trip.
    async fn proxy_answers(&self, notify: &Notify<'_>, dest: SocketAddr, timers: Timers) -> bool {
        let branch = format!("z9hG4bK{}", sip::random_hex(8));
        let probe = notify.probe_bytes(dest, &branch);
        let quick = Timers {
            t1: timers.t1 / 4,
            t2: timers.t2,
        };
        let answer = self
            .inner
            .transport
            .transact(dest, &branch, &probe, quick, || {})
            .await;
        // A proxy failing (500, 503) may still answer for itself while it
        // drops what it should relay: that silence is its own.
        matches!(answer, Outcome::Final { status, .. } if status < 500)
    }

    /// Spaces resync `seq` from now on, or says why it may not go (its
    /// line now names an address that waits or is spaced).
    fn mark_sent(&self, seq: u64, mac: &Mac) -> Result<(), String> {
        let now = now_millis();
        {
            let mut book = self.book();
            book.sending(seq, tokio::time::Instant::now())?;
            if let Some(entry) = book.table.get_mut(seq) {
                entry.view.state = State::Sent;
                entry.view.sent_at = Some(now);
            }
        }
        // Until the answer is in: a phone may fetch before its 2xx reaches
        // us, and a failure ends it early.
        if let Some(history) = &self.inner.history {
            let timer_f = 64 * self.inner.config.t1_ms.min(60_000) as Millis;
            history.record_next(&mac.to_string(), now + timer_f + ANSWER_GRACE_MS);
        }
        metrics::counter!("dialtone_resync_sent_total").increment(1);
        Ok(())
    }

    /// Records the end of a transaction; `label` names a failure for the
    /// metrics when there is no final 2xx. A 2xx is watched for the
    /// phone's refetch, and its fetches recorded in full meanwhile; any
    /// other end stops both, and once the NOTIFY was sent, counts for
    /// the spacing as a failure (one never sent reached nobody).
    fn finish(&self, seq: u64, status: Option<u16>, reason: String, label: &'static str) {
        let now = now_millis();
        let ok = status.is_some_and(|s| (200..300).contains(&s));
        if let Some(s) = status {
            let class = ["1xx", "2xx", "3xx", "4xx", "5xx", "6xx"][usize::from(s / 100 - 1).min(5)];
            metrics::counter!("dialtone_resync_answered_total", "class" => class).increment(1);
        }
        if !ok {
            metrics::counter!("dialtone_resync_failed_total", "reason" => label).increment(1);
        }
        let mut book = self.book();
        book.unwait(seq);
        if let Some(keys) = book.keys(seq) {
            book.spacing.ended(&keys, seq, ok);
        }
        let Some(entry) = book.table.get_mut(seq) else {
            return;
        };
        entry.view.state = if ok { State::Answered } else { State::Failed };
        entry.view.status = status;
        entry.view.reason = Some(reason);
        entry.view.answered_at = status.map(|_| now);
        let (mac, sent) = (entry.mac, entry.view.sent_at);
        if ok {
            book.watch.add(seq, tokio::time::Instant::now());
        }
        drop(book);
        if let (Some(history), Some(sent)) = (&self.inner.history, sent) {
            let until = if ok { sent + REFETCH_WINDOW_MS } else { now };
            history.record_next(&mac.to_string(), until);
        }
    }
}

/// Our address as `dest` sees it, for the Via: the socket's own, or when
/// bound to a wildcard, the one the kernel routes `dest` from (a UDP
/// connect sends nothing).
fn reachable_local(bound: std::io::Result<SocketAddr>, dest: SocketAddr) -> SocketAddr {
    let bound = bound.unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    if !bound.ip().is_unspecified() {
        return bound;
    }
    let probe = dialtone_tftp::dual_stack::bind_udp(SocketAddr::new(bound.ip(), 0))
        .and_then(|s| s.connect(dest).map(|_| s))
        .and_then(|s| s.local_addr());
    match probe {
        Ok(a) => SocketAddr::new(a.ip(), bound.port()),
        Err(_) => bound,
    }
}

/// One NOTIFY in `dialtone_resync_inflight` (its transaction, and the
/// proxy's probe after one left unanswered), however it ends:
/// a transaction task aborted at shutdown or after a panic left the gauge
/// one too high for good.
struct Inflight;

impl Inflight {
    fn new() -> Inflight {
        metrics::gauge!("dialtone_resync_inflight").increment(1.0);
        Inflight
    }
}

impl Drop for Inflight {
    fn drop(&mut self) {
        metrics::gauge!("dialtone_resync_inflight").decrement(1.0);
    }
}
