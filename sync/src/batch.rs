//! The batching both background writers share (provisioning history,
//! unclaimed devices): many small sends from the hot path become one
//! statement every `linger` at most.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Fills `pending` with the next batch from `rx`: waits for a first item,
/// then up to `linger` for more, then takes what is queued up to `batch`
/// (everything, at shutdown). True when the writer stops after writing
/// this batch: cancelled, or every sender gone.
pub(crate) async fn next_batch<T>(
    rx: &mut mpsc::Receiver<T>,
    pending: &mut Vec<T>,
    batch: usize,
    linger: Duration,
    cancel: &CancellationToken,
) -> bool {
    let mut stop = tokio::select! {
        _ = cancel.cancelled() => true,
        n = rx.recv_many(pending, batch) => n == 0,
    };
    if !stop && pending.len() < batch {
        // Not polling the queue meanwhile, so senders wake nobody.
        stop = tokio::select! {
            _ = cancel.cancelled() => true,
            _ = tokio::time::sleep(linger) => false,
        };
    }
    while pending.len() < batch || stop {
        match rx.try_recv() {
            Ok(item) => pending.push(item),
            Err(_) => break,
        }
    }
    stop
}
