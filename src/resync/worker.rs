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
use super::sip::{self, Notify};
use super::track::State;
use super::transaction::{Outcome, Timers};
use super::ResyncService;

/// How long after sending a phone's fetch counts as its refetch, and its
/// fetches are recorded in history even if they repeat a recent one.
const REFETCH_WINDOW_MS: Millis = 10 * 60_000;
/// Phones whose history is read per refetch round (one query each).
const REFETCH_BATCH: usize = 200;
const REFETCH_POLL: Duration = Duration::from_secs(1);

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
    /// service, so a restart of this task loses only what was in flight.
    pub async fn run(self, cancel: CancellationToken) {
        let transport = self.inner.transport.clone();
        tokio::join!(
            transport.receive(cancel.clone()),
            self.clone().send(cancel.clone()),
            self.watch_refetches(cancel.clone()),
        );
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
            let permit = tokio::select! {
                _ = cancel.cancelled() => break,
                p = slots.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let next = {
                let mut book = self.book();
                let next = book.queue.pop(tokio::time::Instant::now());
                if let Next::Send(seq) = next {
                    book.leaves_queue(seq, tokio::time::Instant::now());
                }
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
        let request = Notify {
            aor: &current.job.target,
            event: current.job.event,
            local,
            branch: &branch,
            from_domain: &self.inner.sender_host,
            from_tag: &sip::random_hex(4),
            call_id: &sip::random_hex(12),
        }
        .to_bytes();
        self.mark_sent(seq, &entry.mac);
        let timers = Timers {
            t1: Duration::from_millis(self.inner.config.t1_ms),
            t2: Duration::from_millis(self.inner.config.t2_ms),
        };
        let inflight = Inflight::new();
        let outcome = self
            .inner
            .transport
            .request(dest, &branch, &request, timers, || {})
            .await;
        drop(inflight);
        Some(match outcome {
            Outcome::Final { status, reason } => (Some(status), reason, "rejected"),
            Outcome::Timeout => (None, "no answer (timer F)".into(), "timeout"),
            Outcome::SendFailed(e) => {
                tracing::warn!(error = %e, %dest, "resync: sending a NOTIFY failed");
                (None, "could not send".into(), "send")
            }
        })
    }

    fn mark_sent(&self, seq: u64, mac: &Mac) {
        let now = now_millis();
        let mut book = self.book();
        let Some(entry) = book.table.get_mut(seq) else {
            return;
        };
        entry.view.state = State::Sent;
        entry.view.sent_at = Some(now);
        let bound = book.table.len();
        if book.watch.len() >= bound {
            book.watch.pop_front();
        }
        book.watch.push_back(seq);
        drop(book);
        if let Some(history) = &self.inner.history {
            history.record_next(&mac.to_string(), now + REFETCH_WINDOW_MS);
        }
        metrics::counter!("dialtone_resync_sent_total").increment(1);
    }

    /// Records the end of a transaction; `label` names a failure for the
    /// metrics when there is no final 2xx.
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
        if let Some(entry) = book.table.get_mut(seq) {
            entry.view.state = if ok { State::Answered } else { State::Failed };
            entry.view.status = status;
            entry.view.reason = Some(reason);
            entry.view.answered_at = status.map(|_| now);
        }
    }

    /// Joins sent resyncs with provisioning history: the first fetch of
    /// the phone's own file after the NOTIFY left. History is read from the
    /// database, so a fetch served by any node counts.
    async fn watch_refetches(self, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(REFETCH_POLL);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            let batch: Vec<_> = {
                let mut book = self.book();
                let n = book.watch.len().min(REFETCH_BATCH);
                let seqs: Vec<u64> = book.watch.drain(..n).collect();
                seqs.into_iter()
                    .filter_map(|seq| {
                        let e = book.table.get(seq)?;
                        let sent = e.view.sent_at?;
                        e.view
                            .refetched_at
                            .is_none()
                            .then_some((seq, e.mac, e.tenant_id, sent))
                    })
                    .collect()
            };
            for (seq, mac, tenant, sent) in batch {
                if cancel.is_cancelled() {
                    return;
                }
                let own = mac.to_string();
                // Served fetches only, picked before the limit: refused
                // ones naming the MAC (anyone can send them) hid the refetch.
                let found = match self.inner.store.served_boots(&mac, tenant, 20).await {
                    Ok(rows) => rows
                        .iter()
                        .filter(|r| {
                            r.at >= sent
                                && r.outcome == "ok"
                                && r.file.to_ascii_lowercase().contains(&own)
                        })
                        .map(|r| r.at)
                        .min(),
                    Err(_) => None,
                };
                let mut book = self.book();
                match found {
                    Some(at) => {
                        if let Some(e) = book.table.get_mut(seq) {
                            e.view.refetched_at = Some(at);
                            metrics::counter!("dialtone_resync_refetched_total").increment(1);
                        }
                    }
                    None if now_millis() - sent < REFETCH_WINDOW_MS => book.watch.push_back(seq),
                    None => {}
                }
            }
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
    let probe = std::net::UdpSocket::bind(SocketAddr::new(bound.ip(), 0))
        .and_then(|s| s.connect(dest).map(|_| s))
        .and_then(|s| s.local_addr());
    match probe {
        Ok(a) => SocketAddr::new(a.ip(), bound.port()),
        Err(_) => bound,
    }
}

/// One NOTIFY transaction in `dialtone_resync_inflight`, however it ends:
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
