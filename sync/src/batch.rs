//! The batching both background writers share (provisioning history,
//! unclaimed devices): many small sends from the hot path become one
//! statement every `linger` at most.
//!
//! A batch holds several tenants' records, and the one that makes its
//! write panic, or the database refuse it, may come from a hostile
//! tenant's phones. So a failed batch is split in halves and each written
//! again, down to the records that fail alone: those are dropped, counted
//! and logged, the others written, and the writer goes on. One bad record
//! in a batch of n costs 2·log2(n) more writes; a batch never costs more
//! than 2·log2(n) + 2 in all, and what is still unwritten then is dropped.
//! A database that cannot be reached is not bisected: every half would
//! fail too. A batch no connection could be had for (nothing of it was
//! sent) is kept and written again, the waits doubling from
//! [`RETRY_FIRST`] to [`RETRY_MOST`], while the queue fills behind it up
//! to its bound: an outage of a few minutes costs the fleet view none of
//! its boots, a longer one what the queue cannot hold.

use std::any::Any;
use std::ops::Range;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::queue::{self, Dropped};
use crate::SyncError;

/// The longest one write may take before the database counts as gone. A
/// batch is small and takes milliseconds; without a limit, a connection
/// that went silent (a failover without a reset) held the writer for as
/// long as TCP took to give up, while its queue filled and dropped.
const WRITE_LIMIT: Duration = Duration::from_secs(60);

/// First wait before a batch kept for an unreachable database is written
/// again; doubled up to the last.
const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_MOST: Duration = Duration::from_secs(30);

/// Writes one batch.
pub(crate) type Write<T> =
    Box<dyn for<'a> Fn(&'a [T]) -> BoxFuture<'a, Result<(), SyncError>> + Send + Sync>;

/// A queue's reading end and what writes its batches. Shared by the
/// writer's clones so that a supervisor's restart, after a panic outside
/// a write, resumes on the same queue; one run at a time holds it.
pub(crate) struct Writer<T> {
    inner: Arc<tokio::sync::Mutex<Inner<T>>>,
}

impl<T> Clone for Writer<T> {
    fn clone(&self) -> Self {
        Writer {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<T> {
    queue: queue::Receiver<T>,
    write: Write<T>,
    batch: usize,
    linger: Duration,
    /// For log lines: what the records are.
    what: &'static str,
    /// Taken off the queue and not yet written.
    pending: Vec<T>,
    /// Of `pending`, how many a write under way has written or dropped.
    settled: usize,
    /// Set while `pending` is kept for a database no connection could be
    /// had for: the wait before writing it again.
    retry_in: Option<Duration>,
}

impl<T: Send + Sync> Writer<T> {
    pub(crate) fn new(
        queue: queue::Receiver<T>,
        write: Write<T>,
        batch: usize,
        linger: Duration,
        what: &'static str,
    ) -> Self {
        let inner = Inner {
            queue,
            write,
            batch,
            linger,
            what,
            pending: Vec::with_capacity(batch),
            settled: 0,
            retry_in: None,
        };
        Writer {
            inner: Arc::new(tokio::sync::Mutex::new(inner)),
        }
    }

    /// Runs until `stop` (or every sender is gone), then takes what is
    /// queued and writes it within `final_limit`. The caller cancels `stop`
    /// only once nothing sends any more, so the last records are written,
    /// not dropped; the limit is there so that a dead database cannot hold
    /// the shutdown forever.
    pub(crate) async fn run(self, stop: CancellationToken, final_limit: Duration) {
        let mut inner = self.inner.lock().await;
        if !inner.pending.is_empty() {
            // Left by a run that panicked between taking and writing.
            Dropped::Panicked.count(inner.queue.metric(), inner.pending.len());
            inner.pending.clear();
            inner.retry_in = None;
        }
        // One deadline from the moment of the stop, for the batch under way
        // and the last one together: the shutdown waits for no more.
        let mut deadline = None;
        loop {
            if let Some(wait) = inner.retry_in {
                let stopped = tokio::select! {
                    _ = stop.cancelled() => true,
                    _ = tokio::time::sleep(wait) => false,
                };
                if stopped {
                    // The last batch is the kept one and all queued behind
                    // it, as `next_batch` takes it at a stop.
                    let Inner { queue, pending, .. } = &mut *inner;
                    queue.close_and_drain(pending).await;
                    let deadline = *deadline.get_or_insert_with(|| Instant::now() + final_limit);
                    inner.write_final(deadline, final_limit).await;
                    break;
                }
                inner
                    .write_until_stopped(&stop, final_limit, &mut deadline)
                    .await;
                continue;
            }
            let Inner {
                queue,
                pending,
                batch,
                linger,
                ..
            } = &mut *inner;
            if next_batch(queue, pending, *batch, *linger, &stop).await {
                let deadline = *deadline.get_or_insert_with(|| Instant::now() + final_limit);
                inner.write_final(deadline, final_limit).await;
                break;
            }
            if !inner.pending.is_empty() {
                inner
                    .write_until_stopped(&stop, final_limit, &mut deadline)
                    .await;
            }
        }
    }
}

impl<T: Send + Sync> Inner<T> {
    /// A batch written while running; a stop that comes meanwhile gives it
    /// `final_limit` more, as the last batch gets, and what it has not
    /// written by then counts as lost to the shutdown.
    /// `deadline` is set when the stop comes, during this write or before.
    async fn write_until_stopped(
        &mut self,
        stop: &CancellationToken,
        final_limit: Duration,
        deadline: &mut Option<Instant>,
    ) {
        let finished = {
            let write = self.write_pending();
            tokio::pin!(write);
            tokio::select! {
                biased;
                _ = &mut write => true,
                _ = stop.cancelled() => {
                    let until = *deadline.get_or_insert_with(|| Instant::now() + final_limit);
                    tokio::time::timeout_at(until, &mut write).await.is_ok()
                }
            }
        };
        if !finished {
            self.lost_to_shutdown(final_limit);
        }
    }

    fn lost_to_shutdown(&mut self, limit: Duration) {
        // Whatever the cut-off write left (it may have committed, which
        // nobody can tell from here) counts as lost to the shutdown.
        let records = self.pending.len() - self.settled;
        Dropped::Stopped.count(self.queue.metric(), records);
        tracing::warn!(
            records,
            what = self.what,
            limit_s = limit.as_secs_f64(),
            "the database did not take a batch before the shutdown's limit; dropped it"
        );
        self.pending.clear();
        self.settled = 0;
        self.retry_in = None;
    }

    /// The last batch: everything that was queued, at most the queue's
    /// capacity (plus sends that were under way).
    async fn write_final(&mut self, deadline: Instant, limit: Duration) {
        if self.pending.is_empty() {
            return;
        }
        let written = tokio::time::timeout_at(deadline, self.write_pending())
            .await
            .is_ok();
        // Kept for a retry there will not be.
        if !written || self.retry_in.is_some() {
            self.lost_to_shutdown(limit);
        }
    }

    /// Writes `pending`. A batch the database refuses for what is in it,
    /// or whose write panics, is split in halves and each written again,
    /// down to the records that fail alone, which are dropped: within
    /// [`max_writes`], past which what is left is dropped too. A database
    /// that cannot be reached is not bisected: every write would fail.
    async fn write_pending(&mut self) {
        self.settled = 0;
        let n = self.pending.len();
        let budget = max_writes(n);
        let mut writes = 0;
        // Depth first, each range with why its parent failed.
        let mut ranges: Vec<(Range<usize>, Dropped)> = vec![(0..n, Dropped::Failed)];
        while let Some((range, parent)) = ranges.pop() {
            if range.is_empty() {
                continue;
            }
            if writes == budget {
                self.drop_range(range, parent, "past the batch's rewrites");
                continue;
            }
            writes += 1;
            let failure = match self.attempt(range.clone()).await {
                Ok(()) => {
                    self.settled += range.len();
                    continue;
                }
                Err(failure) => failure,
            };
            let reason = failure.reason();
            // Nothing of a whole batch was sent: kept, and written again
            // once the database can be reached.
            if failure.nothing_sent() && range == (0..n) {
                let wait = self
                    .retry_in
                    .map_or(RETRY_FIRST, |last| (last * 2).min(RETRY_MOST));
                if self.retry_in.is_none() {
                    tracing::warn!(
                        records = n,
                        what = self.what,
                        cause = %failure,
                        "the database cannot be reached; keeping the batch and trying again"
                    );
                }
                self.retry_in = Some(wait);
                return;
            }
            if failure.is_transient() {
                self.drop_range(range, reason, &failure.to_string());
                for (range, _) in ranges.drain(..) {
                    self.drop_range(range, reason, "the database is unreachable");
                }
                break;
            }
            if range.len() == 1 {
                self.drop_range(range, reason, &failure.to_string());
                continue;
            }
            let mid = range.start + range.len() / 2;
            ranges.push((mid..range.end, reason));
            ranges.push((range.start..mid, reason));
        }
        self.pending.clear();
        self.settled = 0;
        self.retry_in = None;
    }

    async fn attempt(&self, range: Range<usize>) -> Result<(), Failure> {
        let records = &self.pending[range];
        // The closure is called inside, so a panic before its future
        // exists is caught too.
        let write = AssertUnwindSafe(async { (self.write)(records).await }).catch_unwind();
        match tokio::time::timeout(WRITE_LIMIT, write).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(Failure::Refused(e)),
            Ok(Err(panic)) => Err(Failure::Panicked(panic_text(&*panic).to_string())),
            Err(_) => Err(Failure::Stalled),
        }
    }

    fn drop_range(&mut self, range: Range<usize>, reason: Dropped, cause: &str) {
        let records = range.len();
        self.settled += records;
        reason.count(self.queue.metric(), records);
        let what = self.what;
        if reason == Dropped::Panicked {
            tracing::error!(
                records,
                what,
                cause,
                "writing records panicked; dropped them, writing on"
            );
        } else {
            tracing::warn!(
                records,
                what,
                cause,
                "dropping records the database did not take; writing on"
            );
        }
    }
}

/// The writes one batch of `n` may cost: the first, and then enough to
/// bisect down to one bad record (two a level).
fn max_writes(n: usize) -> usize {
    let levels = n.max(1).next_power_of_two().trailing_zeros() as usize;
    2 * levels + 2
}

/// Why a write did not go through.
enum Failure {
    Refused(SyncError),
    Panicked(String),
    /// No answer within [`WRITE_LIMIT`]: as good as unreachable.
    Stalled,
}

impl Failure {
    fn reason(&self) -> Dropped {
        match self {
            Failure::Refused(_) | Failure::Stalled => Dropped::Failed,
            Failure::Panicked(_) => Dropped::Panicked,
        }
    }

    /// No connection was had: the write never reached the database, so
    /// writing it again cannot make it twice.
    fn nothing_sent(&self) -> bool {
        matches!(self, Failure::Refused(e) if e.is_pool_timeout())
    }

    fn is_transient(&self) -> bool {
        match self {
            Failure::Refused(e) => e.is_transient(),
            Failure::Stalled => true,
            Failure::Panicked(_) => false,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Refused(e) => write!(f, "{e}"),
            Failure::Panicked(text) => write!(f, "the write panicked: {text}"),
            Failure::Stalled => write!(
                f,
                "no answer from the database within {} s",
                WRITE_LIMIT.as_secs()
            ),
        }
    }
}

fn panic_text(panic: &(dyn Any + Send)) -> &str {
    if let Some(text) = panic.downcast_ref::<&str>() {
        text
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text
    } else {
        "a panic without text"
    }
}

/// Fills `pending` with the next batch from `queue`: waits for a first
/// item, then up to `linger` for more, then takes what is queued up to
/// `batch` (everything, at shutdown, after closing the queue). True when
/// the writer stops after writing this batch: stopped, or every sender
/// gone.
pub(crate) async fn next_batch<T>(
    queue: &mut queue::Receiver<T>,
    pending: &mut Vec<T>,
    batch: usize,
    linger: Duration,
    stop_token: &CancellationToken,
) -> bool {
    // A stop wins over a queue with more in it: after the stop, what is
    // queued is one last batch, within the stop's deadline.
    let mut stop = tokio::select! {
        biased;
        _ = stop_token.cancelled() => true,
        n = queue.recv_many(pending, batch) => n == 0,
    };
    if !stop && pending.len() < batch {
        // Not polling the queue meanwhile, so senders wake nobody.
        stop = tokio::select! {
            biased;
            _ = stop_token.cancelled() => true,
            _ = tokio::time::sleep(linger) => false,
        };
    }
    if stop {
        queue.close_and_drain(pending).await;
    } else {
        queue.try_recv_many(pending, batch.saturating_sub(pending.len()));
    }
    stop
}
