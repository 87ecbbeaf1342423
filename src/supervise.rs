//! Background tasks run under a supervisor: a task that panics or returns
//! early is logged and restarted with exponential backoff, and the process
//! keeps serving. Every task selects on the shared cancellation token.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub fn supervise<F, Fut>(
    tracker: &TaskTracker,
    cancel: &CancellationToken,
    name: &'static str,
    make: F,
) where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let cancel = cancel.clone();
    tracker.spawn(async move {
        let mut backoff = Duration::from_millis(100);
        loop {
            let outcome = tokio::spawn(make()).await;
            if cancel.is_cancelled() {
                break;
            }
            match outcome {
                Ok(()) => tracing::warn!(task = name, "background task stopped; restarting"),
                Err(e) if e.is_panic() => {
                    let panic = e.into_panic();
                    let message = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "non-text panic".into());
                    tracing::error!(task = name, panic = %message, "background task panicked; restarting");
                }
                Err(_) => tracing::warn!(task = name, "background task cancelled; restarting"),
            }
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    });
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn a_panicking_task_is_restarted_and_stops_on_cancel() {
        let runs = Arc::new(AtomicU32::new(0));
        let tracker = TaskTracker::new();
        let cancel = CancellationToken::new();
        let (counter, token) = (runs.clone(), cancel.clone());
        supervise(&tracker, &cancel, "flaky", move || {
            let (counter, token) = (counter.clone(), token.clone());
            async move {
                if counter.fetch_add(1, Ordering::SeqCst) < 2 {
                    panic!("injected failure");
                }
                token.cancelled().await;
            }
        });
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while runs.load(Ordering::SeqCst) < 3 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            runs.load(Ordering::SeqCst),
            3,
            "two panics, then a healthy run"
        );
        cancel.cancel();
        tracker.close();
        tokio::time::timeout(Duration::from_secs(10), tracker.wait())
            .await
            .expect("supervisor stops on cancel");
        assert_eq!(runs.load(Ordering::SeqCst), 3, "not restarted after cancel");
    }
}
