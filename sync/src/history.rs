//! Provisioning history, off the hot path. Front ends hand records to a
//! bounded queue without waiting; a background task writes them in batches.
//! When the queue is full (database slow or down) records are dropped and
//! counted: history is worth less than answering the next phone.
//!
//! History says when each phone last booted and what it fetched; it is not
//! a request log. The same fetch (phone, file, outcome, protocol, source)
//! repeated within [`REPEAT_WINDOW_MS`] is recorded once, so a phone in a
//! reboot loop, or a storm of retries, cannot flood the table.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::model::Millis;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::store::{BootRecord, Store};

/// Repeats of one fetch within this window are recorded once.
pub const REPEAT_WINDOW_MS: Millis = 60_000;
/// Fetches remembered for de-duplication; past it, old ones are forgotten.
const REMEMBERED: usize = 100_000;
/// Phones whose fetches are recorded in full at once (resyncs in flight).
pub const FRESH: usize = 20_000;

#[derive(Clone)]
pub struct HistorySink {
    tx: mpsc::Sender<BootRecord>,
    dropped: Arc<AtomicU64>,
    repeats: Arc<AtomicU64>,
    /// Hash of a fetch → when it was last recorded.
    recent: Arc<Mutex<HashMap<u64, Millis>>>,
    /// MAC → until when its fetches are never repeats (a resync asked for
    /// a fetch, and its row is how the fetch is seen). Counted apart so
    /// the hot path takes no extra lock while it is empty.
    fresh: Arc<Mutex<HashMap<String, Millis>>>,
    fresh_len: Arc<AtomicU64>,
}

impl HistorySink {
    /// Never blocks.
    pub fn record(&self, record: BootRecord) {
        if self.is_repeat(&record) {
            self.repeats.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if self.tx.try_send(record).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("dialtone_history_dropped_total").increment(1);
        }
    }

    /// Records every fetch of `mac` until `until`, repeats included.
    /// At most [`FRESH`] phones at once; past it, expired ones go, and if
    /// none has, the request is ignored (the fetch may then go unseen).
    pub fn record_next(&self, mac: &str, until: Millis) {
        let mut fresh = self.fresh.lock().unwrap_or_else(|e| e.into_inner());
        if fresh.len() >= FRESH && !fresh.contains_key(mac) {
            let now = crate::model::now_millis();
            fresh.retain(|_, u| *u > now);
            if fresh.len() >= FRESH {
                return;
            }
        }
        fresh.insert(mac.to_string(), until);
        self.fresh_len.store(fresh.len() as u64, Ordering::Relaxed);
    }

    fn is_fresh(&self, r: &BootRecord) -> bool {
        if self.fresh_len.load(Ordering::Relaxed) == 0 {
            return false;
        }
        let mut fresh = self.fresh.lock().unwrap_or_else(|e| e.into_inner());
        match fresh.get(&r.mac) {
            Some(until) if r.at <= *until => true,
            Some(_) => {
                fresh.remove(&r.mac);
                self.fresh_len.store(fresh.len() as u64, Ordering::Relaxed);
                false
            }
            None => false,
        }
    }

    fn is_repeat(&self, r: &BootRecord) -> bool {
        let fresh = self.is_fresh(r);
        let key = foldhash::fast::FixedState::with_seed(0x6869_7374).hash_one((
            &r.mac,
            &r.file,
            &r.outcome,
            &r.protocol,
            &r.remote_ip,
            // A new owner's first fetch is never a repeat of the last owner's.
            r.tenant_id,
        ));
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(at) = recent.get(&key).filter(|_| !fresh) {
            if r.at >= *at && r.at - *at < REPEAT_WINDOW_MS {
                return true;
            }
        }
        if recent.len() >= REMEMBERED {
            recent.retain(|_, at| r.at - *at < REPEAT_WINDOW_MS);
            if recent.len() >= REMEMBERED {
                recent.clear();
            }
        }
        recent.insert(key, r.at);
        false
    }

    /// Fetches not recorded because the same one was recorded moments ago.
    pub fn repeats(&self) -> u64 {
        self.repeats.load(Ordering::Relaxed)
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

pub struct HistoryWriter {
    rx: mpsc::Receiver<BootRecord>,
    store: Arc<dyn Store>,
    batch: usize,
    /// After the first record of a batch, how long to gather more. In a
    /// boot storm this turns thousands of one-row transactions (and as many
    /// wake-ups) into a few large ones; it was half the server's CPU.
    linger: Duration,
}

pub fn channel(store: Arc<dyn Store>, capacity: usize) -> (HistorySink, HistoryWriter) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    (
        HistorySink {
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
            repeats: Arc::new(AtomicU64::new(0)),
            recent: Arc::default(),
            fresh: Arc::default(),
            fresh_len: Arc::default(),
        },
        HistoryWriter {
            rx,
            store,
            batch: 500,
            linger: Duration::from_millis(200),
        },
    )
}

impl HistoryWriter {
    /// Runs until cancelled, then flushes what is queued.
    pub async fn run(mut self, cancel: CancellationToken) {
        let mut pending = Vec::with_capacity(self.batch);
        loop {
            let stop = crate::batch::next_batch(
                &mut self.rx,
                &mut pending,
                self.batch,
                self.linger,
                &cancel,
            )
            .await;
            if !pending.is_empty() {
                if let Err(e) = self.store.record_boots(&pending).await {
                    tracing::warn!(error = %e, records = pending.len(), "dropping provisioning history batch");
                }
                pending.clear();
            }
            if stop {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fetch(at: Millis) -> BootRecord {
        BootRecord {
            mac: "001565000001".into(),
            at,
            remote_ip: "192.0.2.1".into(),
            user_agent: None,
            protocol: "http".into(),
            file: "001565000001.cfg".into(),
            outcome: "ok".into(),
            bytes: 1,
            model: None,
            firmware: None,
            tenant_id: Some(1),
        }
    }

    #[test]
    fn a_fetch_asked_for_is_recorded_even_as_a_repeat() {
        let (tx, mut rx) = mpsc::channel(16);
        let sink = HistorySink {
            tx,
            dropped: Arc::default(),
            repeats: Arc::default(),
            recent: Arc::default(),
            fresh: Arc::default(),
            fresh_len: Arc::default(),
        };
        sink.record(fetch(1_000));
        sink.record(fetch(2_000));
        assert_eq!(sink.repeats(), 1);
        sink.record_next("001565000001", 10_000);
        sink.record(fetch(3_000));
        sink.record(fetch(4_000));
        // Past its window the filter is back.
        sink.record(fetch(70_000));
        sink.record(fetch(71_000));
        let mut seen = Vec::new();
        while let Ok(r) = rx.try_recv() {
            seen.push(r.at);
        }
        assert_eq!(seen, [1_000, 3_000, 4_000, 70_000]);
    }
}
