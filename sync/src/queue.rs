//! The bounded queue between the hot path and a background writer
//! (provisioning history, unclaimed devices), with a share per tenant.
//!
//! Records come from phones and from anyone who can send a packet naming a
//! MAC (UDP sources can be forged, MACs are no secret). While the writer
//! waits on a slow database, one tenant's records, or unknown phones',
//! must not fill the queue and crowd every other tenant's out. So a tenant
//! (records of no tenant being one more) may hold at most a quarter of the
//! room the other tenants leave, and at least one record: alone, a quarter
//! of the queue; each further tenant flooding at once, a quarter of what
//! is still free. It takes some thirty tenants flooding together to fill a
//! queue of 10,000, not four.
//!
//! The counts are exact: taken before the send, given back when the send
//! fails or when the writer takes the record off the queue (or drops it
//! with the queue). The lock guards a map update, never an await.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::mpsc;

use crate::model::Id;

/// Whose share a record counts against: its tenant, or `None` for records
/// of no tenant (unknown phones), which share one.
pub(crate) type Bucket = Option<Id>;

/// A tenant may hold at most `1 / SHARE` of the room others leave.
const SHARE: usize = 4;

/// The `reason` label of a writer's dropped counter, by [`Dropped`]: a
/// fixed set, never a tenant (that would be a series per tenant).
pub const DROP_REASONS: [&str; 5] = [
    "queue_full",
    "tenant_share",
    "shutdown",
    "write_failed",
    "panic",
];

/// Why records were dropped; indexes [`DROP_REASONS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dropped {
    /// The queue had no room.
    Full = 0,
    /// Its tenant held its share of the queue.
    Share = 1,
    /// The writer had stopped.
    Stopped = 2,
    /// The database failed the batch.
    Failed = 3,
    /// Writing the batch panicked.
    Panicked = 4,
}

impl Dropped {
    pub(crate) fn count(self, metric: &'static str, records: usize) {
        metrics::counter!(metric, "reason" => DROP_REASONS[self as usize])
            .increment(records as u64);
    }
}

struct Shares {
    capacity: usize,
    /// The dropped counter, by reason.
    metric: &'static str,
    held: Mutex<Held>,
}

#[derive(Default)]
struct Held {
    /// A bucket at zero is removed: at most `capacity` entries.
    by_bucket: HashMap<Bucket, usize, foldhash::fast::RandomState>,
    total: usize,
}

impl Shares {
    fn lock(&self) -> MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn take(&self, bucket: Bucket) -> bool {
        let mut held = self.lock();
        let mine = held.by_bucket.get(&bucket).copied().unwrap_or(0);
        let others = held.total - mine;
        let limit = (self.capacity.saturating_sub(others) / SHARE).max(1);
        if mine >= limit {
            return false;
        }
        *held.by_bucket.entry(bucket).or_insert(0) += 1;
        held.total += 1;
        true
    }

    fn give_back(&self, buckets: impl Iterator<Item = Bucket>) {
        let mut held = self.lock();
        for bucket in buckets {
            let Some(mine) = held.by_bucket.get_mut(&bucket) else {
                debug_assert!(false, "a record given back that was never taken");
                continue;
            };
            *mine -= 1;
            if *mine == 0 {
                held.by_bucket.remove(&bucket);
            }
            held.total -= 1;
        }
    }
}

pub(crate) struct Sender<T> {
    tx: mpsc::Sender<T>,
    shares: Arc<Shares>,
    bucket: fn(&T) -> Bucket,
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        Sender {
            tx: self.tx.clone(),
            shares: self.shares.clone(),
            bucket: self.bucket,
        }
    }
}

pub(crate) struct Receiver<T> {
    rx: mpsc::Receiver<T>,
    shares: Arc<Shares>,
    bucket: fn(&T) -> Bucket,
}

/// A queue of `capacity` (at least 1) records, `bucket` naming each one's
/// tenant; records it drops are counted on `metric` by reason.
pub(crate) fn bounded<T>(
    capacity: usize,
    metric: &'static str,
    bucket: fn(&T) -> Bucket,
) -> (Sender<T>, Receiver<T>) {
    let capacity = capacity.max(1);
    let (tx, rx) = mpsc::channel(capacity);
    let shares = Arc::new(Shares {
        capacity,
        metric,
        held: Mutex::default(),
    });
    (
        Sender {
            tx,
            shares: shares.clone(),
            bucket,
        },
        Receiver { rx, shares, bucket },
    )
}

impl<T> Sender<T> {
    /// Never blocks. A record refused is counted here.
    pub(crate) fn send(&self, item: T) -> Result<(), Dropped> {
        let bucket = (self.bucket)(&item);
        let refused = if !self.shares.take(bucket) {
            Dropped::Share
        } else {
            match self.tx.try_send(item) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    self.shares.give_back(std::iter::once(bucket));
                    match e {
                        mpsc::error::TrySendError::Full(_) => Dropped::Full,
                        mpsc::error::TrySendError::Closed(_) => Dropped::Stopped,
                    }
                }
            }
        };
        refused.count(self.shares.metric, 1);
        Err(refused)
    }
}

impl<T> Receiver<T> {
    pub(crate) fn metric(&self) -> &'static str {
        self.shares.metric
    }

    fn given_back(&self, items: &[T]) {
        if !items.is_empty() {
            self.shares.give_back(items.iter().map(self.bucket));
        }
    }

    /// Waits for records and appends up to `limit` of them to `into`;
    /// 0 once every sender is gone (or the queue is closed) and it is empty.
    pub(crate) async fn recv_many(&mut self, into: &mut Vec<T>, limit: usize) -> usize {
        let start = into.len();
        let n = self.rx.recv_many(into, limit).await;
        self.given_back(&into[start..]);
        n
    }

    /// Appends up to `limit` records already queued to `into`, not waiting.
    pub(crate) fn try_recv_many(&mut self, into: &mut Vec<T>, limit: usize) {
        let start = into.len();
        while into.len() - start < limit {
            match self.rx.try_recv() {
                Ok(item) => into.push(item),
                Err(_) => break,
            }
        }
        self.given_back(&into[start..]);
    }

    /// Takes no more records (later sends are dropped as `shutdown`) and
    /// appends every queued one to `into`, including any whose send is
    /// still under way.
    pub(crate) async fn close_and_drain(&mut self, into: &mut Vec<T>) {
        self.rx.close();
        while self.recv_many(into, usize::MAX).await > 0 {}
    }
}

impl<T> Drop for Receiver<T> {
    /// The writer went without draining the queue (it never ran, or its
    /// task was dropped): what is left is dropped and counted.
    fn drop(&mut self) {
        self.rx.close();
        let mut left = Vec::new();
        self.try_recv_many(&mut left, usize::MAX);
        if !left.is_empty() {
            Dropped::Stopped.count(self.shares.metric, left.len());
            tracing::warn!(
                records = left.len(),
                metric = self.shares.metric,
                "queued records dropped with their writer"
            );
        }
    }
}

#[cfg(test)]
impl<T> Receiver<T> {
    /// Records held by `bucket` and in all, as the shares count them.
    pub(crate) fn held(&self, bucket: Bucket) -> (usize, usize) {
        let held = self.shares.lock();
        (
            held.by_bucket.get(&bucket).copied().unwrap_or(0),
            held.total,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(capacity: usize) -> (Sender<Id>, Receiver<Id>) {
        bounded(capacity, "test_dropped_total", |t: &Id| Some(*t))
    }

    #[test]
    fn a_tenant_alone_holds_a_quarter_and_at_least_one() {
        let (tx, rx) = queue(100);
        let sent = (0..1_000).filter(|_| tx.send(1).is_ok()).count();
        assert_eq!(sent, 25);
        assert_eq!(tx.send(1), Err(Dropped::Share));
        assert_eq!(rx.held(Some(1)), (25, 25));
        let (tx, _rx) = queue(2);
        assert_eq!(tx.send(1), Ok(()));
        assert_eq!(tx.send(1), Err(Dropped::Share));
        assert_eq!(tx.send(2), Ok(()), "another tenant still gets in");
        assert_eq!(tx.send(3), Err(Dropped::Full), "the queue's own bound");
    }

    #[test]
    fn many_tenants_flooding_leave_room_for_one_more() {
        let (tx, rx) = queue(10_000);
        // Ten tenants flood one after another: each takes a quarter of
        // what the others left, so the queue is still far from full.
        for tenant in 1..=10 {
            while tx.send(tenant).is_ok() {}
        }
        let (_, total) = rx.held(None);
        assert!(total < 10_000 - 500, "{total}");
        assert_eq!(tx.send(11), Ok(()));
    }

    #[tokio::test]
    async fn counts_are_given_back_when_taken_and_when_dropped() {
        let (tx, mut rx) = queue(32);
        for tenant in [1, 1, 2, 2, 3] {
            tx.send(tenant).unwrap();
        }
        let mut taken = Vec::new();
        assert_eq!(rx.recv_many(&mut taken, 2).await, 2);
        assert_eq!(rx.held(Some(1)), (0, 3));
        rx.try_recv_many(&mut taken, 1);
        assert_eq!(rx.held(Some(2)), (1, 2));
        let shares = rx.shares.clone();
        drop(rx);
        assert_eq!(shares.lock().total, 0);
        assert!(shares.lock().by_bucket.is_empty());
        assert_eq!(tx.send(1), Err(Dropped::Stopped));
        assert_eq!(shares.lock().total, 0);
    }

    #[tokio::test]
    async fn closing_drains_what_is_queued() {
        let (tx, mut rx) = queue(8);
        for tenant in [1, 2, 3] {
            tx.send(tenant).unwrap();
        }
        let mut taken = Vec::new();
        rx.close_and_drain(&mut taken).await;
        assert_eq!(taken, [1, 2, 3]);
        assert_eq!(rx.held(None), (0, 0));
        assert_eq!(tx.send(4), Err(Dropped::Stopped));
    }
}
