//! The batching both background writers share (provisioning history,
//! unclaimed devices): many small sends from the hot path become one
//! statement every `linger` at most.
//!
//! A batch whose write panics is dropped, counted and logged, and the
//! writer goes on with the next: the panic costs that batch, not every
//! record after it. Writing it again could panic again, and the records
//! that caused it may come from a hostile tenant's phones.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use tokio_util::sync::CancellationToken;

use crate::queue::{self, Dropped};
use crate::SyncError;

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
        }
        loop {
            let Inner {
                queue,
                pending,
                batch,
                linger,
                ..
            } = &mut *inner;
            if next_batch(queue, pending, *batch, *linger, &stop).await {
                inner.write_final(final_limit).await;
                break;
            }
            if !inner.pending.is_empty() {
                inner.write_pending().await;
            }
        }
    }
}

impl<T: Send + Sync> Inner<T> {
    /// The last batch: everything that was queued, at most the queue's
    /// capacity (plus sends that were under way).
    async fn write_final(&mut self, limit: Duration) {
        if self.pending.is_empty() {
            return;
        }
        if tokio::time::timeout(limit, self.write_pending())
            .await
            .is_err()
        {
            // Whatever the cut-off write left (it may have committed, which
            // nobody can tell from here) counts as lost to the shutdown.
            let records = self.pending.len();
            Dropped::Stopped.count(self.queue.metric(), records);
            tracing::warn!(
                records,
                what = self.what,
                limit_s = limit.as_secs_f64(),
                "the database did not take the final batch in time; dropped it"
            );
            self.pending.clear();
        }
    }

    async fn write_pending(&mut self) {
        let records = self.pending.len();
        // The closure is called inside, so a panic before its future
        // exists is caught too.
        let written = AssertUnwindSafe(async { (self.write)(&self.pending).await })
            .catch_unwind()
            .await;
        self.pending.clear();
        let metric = self.queue.metric();
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                Dropped::Failed.count(metric, records);
                tracing::warn!(error = %e, records, what = self.what, "dropping a batch the database did not take");
            }
            Err(panic) => {
                Dropped::Panicked.count(metric, records);
                tracing::error!(
                    panic = %panic_text(&*panic),
                    records,
                    what = self.what,
                    "writing a batch panicked; dropped it, writing on"
                );
            }
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
    let mut stop = tokio::select! {
        _ = stop_token.cancelled() => true,
        n = queue.recv_many(pending, batch) => n == 0,
    };
    if !stop && pending.len() < batch {
        // Not polling the queue meanwhile, so senders wake nobody.
        stop = tokio::select! {
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
