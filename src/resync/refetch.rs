//! The refetch watch: answered resyncs joined with provisioning history,
//! each polled less often the longer its phone's fetch is not seen. Only
//! a 2xx is watched: a phone that did not take the NOTIFY has no reason
//! to fetch, and polling for it cost a history query a second for ten
//! minutes.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use dialtone_sync::store::BootRecord;
use dialtone_sync::{now_millis, Millis};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::ResyncService;

/// How long after sending a phone's fetch counts as its refetch, and its
/// fetches are recorded in history even if they repeat a recent one.
pub(super) const REFETCH_WINDOW_MS: Millis = 10 * 60_000;
/// Phones whose history is read per round (one query each).
const REFETCH_BATCH: usize = 200;
/// The first poll after the answer, and how often rounds run: a phone
/// fetches within seconds of a NOTIFY it acts on, or much later.
const FIRST_POLL: Duration = Duration::from_secs(1);
/// The longest wait between two polls of one resync.
const LAST_POLL: Duration = Duration::from_secs(30);
/// Longest one phone's history read may take; it takes milliseconds. A
/// read on a connection that died without a word (the store sets no
/// statement timeout, and no keepalive notices) never ends, and the
/// watch, which reads one phone at a time, stopped with it for good: no
/// refetch was seen again until restart.
pub(super) const HISTORY_READ_WITHIN: Duration = Duration::from_secs(5);
/// At most one warning of reads past their time this often.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// The latest stamp a fetch in history may be trusted at, shared with the
/// store's "latest" and "newest" choices so that one allowance holds.
pub(super) use dialtone_sync::trusted_until;

/// Answered resyncs whose refetch is not seen yet, by when each is polled
/// next. At most `capacity` (the table's): past it the oldest goes.
pub(super) struct Watch {
    capacity: usize,
    /// Each resync's next poll and the wait before it.
    by_seq: BTreeMap<u64, (Instant, Duration)>,
    due: BTreeSet<(Instant, u64)>,
}

impl Watch {
    pub(super) fn new(capacity: usize) -> Watch {
        Watch {
            capacity: capacity.max(1),
            by_seq: BTreeMap::new(),
            due: BTreeSet::new(),
        }
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.by_seq.len()
    }

    fn insert(&mut self, seq: u64, at: Instant, wait: Duration) {
        self.remove(seq);
        while self.by_seq.len() >= self.capacity {
            let Some((&oldest, _)) = self.by_seq.first_key_value() else {
                break;
            };
            self.remove(oldest);
        }
        self.by_seq.insert(seq, (at, wait));
        self.due.insert((at, seq));
    }

    fn remove(&mut self, seq: u64) {
        if let Some((at, _)) = self.by_seq.remove(&seq) {
            self.due.remove(&(at, seq));
        }
    }

    /// Resync `seq` was answered at `now`.
    pub(super) fn add(&mut self, seq: u64, now: Instant) {
        self.insert(seq, now + FIRST_POLL, FIRST_POLL);
    }

    /// At most `n` resyncs due by `now`, taken out, each with the wait
    /// that led to this poll.
    pub(super) fn take_due(&mut self, now: Instant, n: usize) -> Vec<(u64, Duration)> {
        let mut taken = Vec::new();
        while taken.len() < n {
            let Some(&(at, seq)) = self.due.first() else {
                break;
            };
            if at > now {
                break;
            }
            if let Some((_, wait)) = self.by_seq.get(&seq).copied() {
                taken.push((seq, wait));
            }
            self.remove(seq);
        }
        taken
    }

    /// Resync `seq` was taken out but not polled: it is due again at
    /// `now`, its wait unchanged.
    fn put_back(&mut self, seq: u64, waited: Duration, now: Instant) {
        self.insert(seq, now, waited);
    }

    /// Resync `seq`'s refetch was not seen after `waited`: it is polled
    /// again after twice that, at most [`LAST_POLL`].
    pub(super) fn again(&mut self, seq: u64, waited: Duration, now: Instant) {
        let wait = waited.saturating_mul(2).min(LAST_POLL);
        self.insert(seq, now + wait, wait);
    }
}

impl ResyncService {
    /// Joins answered resyncs with provisioning history: the first fetch
    /// of the phone's own file after the NOTIFY left ([`refetch_in`]).
    /// History is read from the database, so a fetch served by any node
    /// counts.
    pub(super) async fn watch_refetches(self, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(FIRST_POLL);
        let mut warned: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            let batch: Vec<_> = {
                let mut book = self.book();
                let due = book.watch.take_due(Instant::now(), REFETCH_BATCH);
                due.into_iter()
                    .filter_map(|(seq, waited)| {
                        let e = book.table.get(seq)?;
                        let sent = e.view.sent_at?;
                        e.view.refetched_at.is_none().then_some((
                            seq,
                            waited,
                            e.mac,
                            e.tenant_id,
                            sent,
                        ))
                    })
                    .collect()
            };
            let mut batch = batch.into_iter();
            while let Some((seq, waited, mac, tenant, sent)) = batch.next() {
                let own = mac.to_string();
                let now = now_millis();
                let read = tokio::select! {
                    _ = cancel.cancelled() => return,
                    read = tokio::time::timeout(
                        HISTORY_READ_WITHIN,
                        self.inner.store.served_boots(&mac, tenant, trusted_until(now), 20),
                    ) => read,
                };
                let Ok(read) = read else {
                    // The others would most likely wait as long, each: they
                    // wait for the next round, and this one is polled again.
                    metrics::counter!("dialtone_resync_refetch_reads_timed_out_total").increment(1);
                    if warned.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
                        warned = Some(Instant::now());
                        tracing::warn!(
                            within_s = HISTORY_READ_WITHIN.as_secs_f64(),
                            "resync refetch watch: a provisioning-history read did not end \
                             in time; given up, the watch goes on next round"
                        );
                    }
                    let now = Instant::now();
                    let mut book = self.book();
                    if now_millis() - sent < REFETCH_WINDOW_MS {
                        book.watch.again(seq, waited, now);
                    }
                    for (seq, waited, ..) in batch.by_ref() {
                        book.watch.put_back(seq, waited, now);
                    }
                    break;
                };
                let found = read
                    .ok()
                    .and_then(|rows| refetch_in(&rows, &own, sent, now));
                let mut book = self.book();
                match found {
                    Some(at) => {
                        if let Some(e) = book.table.get_mut(seq) {
                            e.view.refetched_at = Some(at);
                            metrics::counter!("dialtone_resync_refetched_total").increment(1);
                        }
                    }
                    None if now_millis() - sent < REFETCH_WINDOW_MS => {
                        book.watch.again(seq, waited, Instant::now());
                    }
                    None => {}
                }
            }
        }
    }
}

/// When the phone whose MAC reads `own` first fetched its own file after
/// a NOTIFY sent at `sent`, from its history `rows`. Served fetches only,
/// picked before the limit: refused ones naming the MAC (anyone can send
/// them) hid the refetch. `sent` is this node's clock and a fetch's time
/// the serving node's, so nodes' clocks must agree (NTP) to well under the
/// phone's delay (1-5 s). No tolerance is allowed for clocks apart: the
/// watch polls from the moment the NOTIFY is answered, and a fetch the
/// phone made just before it would pass for the refetch before the real
/// one came. Nor does a fetch stamped after [`trusted_until`]`(now)`: one
/// made before the NOTIFY by a node whose clock ran ahead would pass for
/// the refetch, however long before it was made.
pub(super) fn refetch_in(
    rows: &[BootRecord],
    own: &str,
    sent: Millis,
    now: Millis,
) -> Option<Millis> {
    rows.iter()
        .filter(|r| r.at >= sent && r.at <= trusted_until(now))
        .filter(|r| r.outcome == "ok" && r.file.to_ascii_lowercase().contains(own))
        .map(|r| r.at)
        .min()
}

#[cfg(test)]
#[path = "refetch_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "refetch_nodes_tests.rs"]
mod nodes_tests;
