//! Provisioning history, off the hot path. Front ends hand records to a
//! bounded queue without waiting; a background task writes them in batches.
//! When the queue is full (database slow or down), or a tenant holds its
//! share of it (`crate::queue`), records are dropped and counted: history
//! is worth less than answering the next phone.
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

use tokio_util::sync::CancellationToken;

use crate::batch::{Write, Writer};
use crate::queue;
use crate::store::{BootRecord, Store};

/// Repeats of one fetch within this window are recorded once.
pub const REPEAT_WINDOW_MS: Millis = 60_000;
/// Fetches remembered for de-duplication; past it, old ones are forgotten.
const REMEMBERED: usize = 100_000;
/// Phones whose fetches are recorded in full at once (resyncs in flight).
pub const FRESH: usize = 20_000;

#[derive(Clone)]
pub struct HistorySink {
    tx: queue::Sender<BootRecord>,
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
        if self.tx.send(record).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
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

    /// Records the queue refused: full, over their tenant's share, or the
    /// writer stopped. Batches the writer drops (a database error, a
    /// panic) are counted on `dialtone_history_dropped_total` only.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Writes the queued records in batches. Clones share the queue, one run
/// at a time: a restarted run resumes where the last one stopped.
#[derive(Clone)]
pub struct HistoryWriter(Writer<BootRecord>);

/// Records dropped, by reason (`crate::queue::DROP_REASONS`).
const DROPPED: &str = "dialtone_history_dropped_total";
const BATCH: usize = 500;
/// After the first record of a batch, how long to gather more. In a boot
/// storm this turns thousands of one-row transactions (and as many
/// wake-ups) into a few large ones; it was half the server's CPU.
const LINGER: Duration = Duration::from_millis(200);

pub fn channel(store: Arc<dyn Store>, capacity: usize) -> (HistorySink, HistoryWriter) {
    channel_with(
        capacity,
        LINGER,
        Box::new(move |records| {
            let store = store.clone();
            Box::pin(async move { store.record_boots(records).await })
        }),
    )
}

/// [`channel`] with the batch write given: tests stall it or make it panic.
fn channel_with(
    capacity: usize,
    linger: Duration,
    write: Write<BootRecord>,
) -> (HistorySink, HistoryWriter) {
    let (tx, rx) = queue::bounded(capacity, DROPPED, |r: &BootRecord| r.tenant_id);
    (
        HistorySink::new(tx),
        HistoryWriter(Writer::new(
            rx,
            write,
            BATCH,
            linger,
            "provisioning history",
        )),
    )
}

impl HistorySink {
    fn new(tx: queue::Sender<BootRecord>) -> Self {
        HistorySink {
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
            repeats: Arc::new(AtomicU64::new(0)),
            recent: Arc::default(),
            fresh: Arc::default(),
            fresh_len: Arc::default(),
        }
    }
}

impl HistoryWriter {
    /// Runs until `stop`, then writes what is queued within `final_limit`
    /// (past it, the rest is dropped and counted as `shutdown`). Cancel
    /// `stop` once nothing records any more, or the last fetches are lost.
    /// A batch whose write panics is dropped and counted; the run goes on.
    pub async fn run(self, stop: CancellationToken, final_limit: Duration) {
        self.0.run(stop, final_limit).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Id, Mac};
    use crate::testing::TestDb;
    use tokio::sync::{mpsc, Semaphore};

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

    /// A fetch of `file` by `tenant`'s phone (no repeat of another file).
    fn fetch_of(tenant: Option<Id>, mac: &str, file: &str) -> BootRecord {
        BootRecord {
            mac: mac.into(),
            file: file.into(),
            tenant_id: tenant,
            ..fetch(crate::model::now_millis())
        }
    }

    async fn stored(store: &dyn Store, mac: &str, tenant: Id) -> usize {
        let mac: Mac = mac.parse().unwrap();
        store
            .recent_boots(&mac, Some(tenant), 10_000)
            .await
            .unwrap()
            .len()
    }

    #[test]
    fn a_fetch_asked_for_is_recorded_even_as_a_repeat() {
        let (tx, mut rx) = queue::bounded(16, DROPPED, |r: &BootRecord| r.tenant_id);
        let sink = HistorySink::new(tx);
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
        rx.try_recv_many(&mut seen, usize::MAX);
        let seen: Vec<Millis> = seen.iter().map(|r| r.at).collect();
        assert_eq!(seen, [1_000, 3_000, 4_000, 70_000]);
    }

    /// One tenant's phones (or requests forged in their name) flood the
    /// sink while the writer is stuck on a slow database: another tenant's
    /// fetches, and unknown phones', still get in.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_tenant_flooding_leaves_room_for_the_others() {
        let db = TestDb::sqlite();
        let store = db.store().await;
        let (entered_tx, mut entered) = mpsc::unbounded_channel();
        let gate = Arc::new(Semaphore::new(0));
        let write: Write<BootRecord> = {
            let (store, gate) = (store.clone(), gate.clone());
            Box::new(move |records| {
                let (store, gate, entered) = (store.clone(), gate.clone(), entered_tx.clone());
                Box::pin(async move {
                    let _ = entered.send(());
                    let _slow = gate.acquire().await;
                    store.record_boots(records).await
                })
            })
        };
        let (sink, writer) = channel_with(64, Duration::ZERO, write);
        let cancel = CancellationToken::new();
        let task = tokio::spawn(writer.run(cancel.clone(), Duration::from_secs(10)));
        sink.record(fetch_of(Some(1), "001565000001", "first.cfg"));
        entered
            .recv()
            .await
            .expect("the writer takes the first batch");

        for n in 0..1_000 {
            sink.record(fetch_of(Some(1), "001565000001", &format!("{n}.cfg")));
        }
        for n in 0..3 {
            sink.record(fetch_of(Some(2), "001565000002", &format!("{n}.cfg")));
            sink.record(fetch_of(None, "001565999999", &format!("{n}.cfg")));
        }
        assert_eq!(sink.dropped(), 1_000 - 16, "tenant 1 holds a quarter of 64");

        gate.add_permits(Semaphore::MAX_PERMITS);
        cancel.cancel();
        task.await.unwrap();
        assert_eq!(stored(&*store, "001565000002", 2).await, 3);
        let unknown = store
            .recent_boots(&"001565999999".parse().unwrap(), None, 10)
            .await
            .unwrap();
        assert_eq!(unknown.len(), 3);
        assert_eq!(stored(&*store, "001565000001", 1).await, 1 + 16);
    }

    /// A database that never answers cannot hold the shutdown: the last
    /// batch gets its limit, then the writer ends.
    #[tokio::test]
    async fn a_final_batch_the_database_never_takes_ends_at_its_limit() {
        let write: Write<BootRecord> = Box::new(|_| Box::pin(std::future::pending()));
        let (sink, writer) = channel_with(16, Duration::from_secs(3_600), write);
        sink.record(fetch_of(Some(1), "001565000001", "last.cfg"));
        let stop = CancellationToken::new();
        stop.cancel();
        let run = writer.run(stop, Duration::from_millis(50));
        tokio::time::timeout(Duration::from_secs(10), run)
            .await
            .expect("the writer ends at its limit");
    }

    /// One poison record in a batch with another tenant's: the batch is
    /// bisected down to it, and only it is dropped, within 2·log2(n) + 2
    /// writes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_poison_record_costs_itself_not_its_batch() {
        let db = TestDb::sqlite();
        let store = db.store().await;
        let writes = Arc::new(AtomicU64::new(0));
        let write: Write<BootRecord> = {
            let (store, writes) = (store.clone(), writes.clone());
            Box::new(move |records| {
                let (store, writes) = (store.clone(), writes.clone());
                Box::pin(async move {
                    writes.fetch_add(1, Ordering::Relaxed);
                    if records.iter().any(|r| r.file == "poison.cfg") {
                        panic!("injected: the store panics on this record");
                    }
                    store.record_boots(records).await
                })
            })
        };
        // Room for tenant 2's sixteen within its share.
        let (sink, writer) = channel_with(256, Duration::ZERO, write);
        for n in 0..5 {
            sink.record(fetch_of(Some(2), "001565000002", &format!("{n}.cfg")));
        }
        sink.record(fetch_of(Some(1), "001565000001", "poison.cfg"));
        for n in 5..16 {
            sink.record(fetch_of(Some(2), "001565000002", &format!("{n}.cfg")));
        }
        // Stopped before it runs: all 17 are one batch.
        let stop = CancellationToken::new();
        stop.cancel();
        writer.run(stop, Duration::from_secs(10)).await;
        assert_eq!(sink.dropped(), 0);
        assert_eq!(stored(&*store, "001565000002", 2).await, 16);
        assert_eq!(stored(&*store, "001565000001", 1).await, 0);
        // 17 records: five levels of halves, two writes each, and the first.
        assert!(writes.load(Ordering::Relaxed) <= 2 * 5 + 2, "{writes:?}");
    }

    /// A database that cannot be reached fails every half too: the batch
    /// is dropped after one write, not bisected.
    #[tokio::test]
    async fn an_unreachable_database_is_not_bisected() {
        let writes = Arc::new(AtomicU64::new(0));
        let write: Write<BootRecord> = {
            let writes = writes.clone();
            Box::new(move |_| {
                writes.fetch_add(1, Ordering::Relaxed);
                Box::pin(async { Err(crate::SyncError::Database(sqlx::Error::PoolTimedOut)) })
            })
        };
        let (sink, writer) = channel_with(256, Duration::ZERO, write);
        for n in 0..16 {
            sink.record(fetch_of(Some(n), "001565000002", "a.cfg"));
        }
        let stop = CancellationToken::new();
        stop.cancel();
        writer.run(stop, Duration::from_secs(10)).await;
        assert_eq!(writes.load(Ordering::Relaxed), 1);
    }

    /// The store panics on one batch: that batch is dropped, the writer
    /// lives on and writes the next ones.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_that_panics_costs_that_batch_only() {
        let db = TestDb::sqlite();
        let store = db.store().await;
        let (written_tx, mut written) = mpsc::unbounded_channel();
        let write: Write<BootRecord> = {
            let store = store.clone();
            Box::new(move |records| {
                let (store, written) = (store.clone(), written_tx.clone());
                Box::pin(async move {
                    let result = if records.iter().any(|r| r.file == "poison.cfg") {
                        let _ = written.send(false);
                        panic!("injected: the store panics on this batch");
                    } else {
                        store.record_boots(records).await
                    };
                    let _ = written.send(true);
                    result
                })
            })
        };
        let (sink, writer) = channel_with(16, Duration::ZERO, write);
        let cancel = CancellationToken::new();
        let task = tokio::spawn(writer.run(cancel.clone(), Duration::from_secs(10)));

        sink.record(fetch_of(Some(1), "001565000001", "poison.cfg"));
        assert_eq!(written.recv().await, Some(false));
        for round in 0..3 {
            sink.record(fetch_of(Some(1), "001565000001", &format!("{round}.cfg")));
            assert_eq!(written.recv().await, Some(true), "round {round}");
        }
        assert_eq!(stored(&*store, "001565000001", 1).await, 3);
        cancel.cancel();
        task.await
            .expect("the writer ends on cancel, not by a panic");
    }
}
