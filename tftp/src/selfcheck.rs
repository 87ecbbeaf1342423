//! The render cache's self-check: a canary for any bug, present or future,
//! that lets the cache serve bytes a fresh render would not give.
//!
//! A few cached files a second are rendered again from the current mirror,
//! with a freshly compiled template, and compared byte for byte with what
//! the cache serves. A mismatch is counted
//! (`dialtone_render_cache_stale_total`), logged with the phone and file,
//! and the entry dropped. Its cost is bounded by the sample size.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::ProvisionError;
use crate::files::Target;
use crate::provision::Provisioner;

/// Longest one round of the self-check starts renders for. Its renders
/// run outside the render pool and its per-tenant shares, on one blocking
/// thread: without a bound, a tenant whose files each take nearly the
/// render time limit would keep that thread, a core, busy for good. A
/// round may overrun by one render.
const ROUND_TIME: Duration = Duration::from_millis(100);

/// What one round of the self-check found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SelfCheck {
    /// Entries rendered again and compared.
    pub compared: usize,
    /// Entries whose inputs had changed: never served again, so dropped
    /// without comparing.
    pub outdated: usize,
    /// Entries that differed from a fresh render of the same inputs.
    pub stale: usize,
    /// Entries left for the next round: the round's time was spent.
    pub skipped: usize,
}

impl Provisioner {
    /// Checks up to `sample` cached files, continuing a pass over the cache
    /// where the last call stopped, for at most `ROUND_TIME` (the files
    /// past it are the next round's first). CPU-bound: call it off async
    /// workers.
    pub fn self_check(&self, sample: usize) -> SelfCheck {
        self.self_check_within(sample, ROUND_TIME)
    }

    pub(crate) fn self_check_within(&self, sample: usize, time: Duration) -> SelfCheck {
        let mut report = SelfCheck::default();
        let started = Instant::now();
        let mut keys = self.rendered.next_unchecked(sample);
        // Taken from the end, as `next_unchecked` takes them from its list.
        while let Some(key) = keys.pop() {
            if started.elapsed() >= time {
                report.skipped = keys.len() + 1;
                keys.push(key);
                self.rendered.put_back_unchecked(keys);
                break;
            }
            let Some(cached) = self.rendered.peek(&key) else {
                continue;
            };
            let Some(inputs) = cached.inputs.clone() else {
                continue;
            };
            let state = self.mirror.load();
            let shipped = self.shipped.load();
            let model = inputs.model.as_deref();
            if !inputs.is_current(&state, shipped.generation, model) {
                report.outdated += 1;
                self.rendered.remove(&key);
                continue;
            }
            let target = Target {
                family: key.family,
                template: inputs.template,
                kind: cached.kind,
                file: &key.file,
                phone: inputs.phone.as_ref(),
                model,
            };
            let fresh = match key.directory {
                Some(_) => self.directory_file(&state, &key, inputs.template),
                None => self.render_target(&state, &shipped, &target, false),
            };
            // A render out of time (a busy machine, a stalled process) says
            // nothing of the cached file: kept, not compared, and not
            // counted stale, which operators are told to alert on.
            if fresh.as_ref().is_err_and(ProvisionError::is_out_of_time) {
                continue;
            }
            report.compared += 1;
            let same = fresh
                .as_ref()
                .is_ok_and(|f| f.body == cached.body && f.etag == cached.etag);
            if same {
                continue;
            }
            report.stale += 1;
            metrics::counter!("dialtone_render_cache_stale_total").increment(1);
            let mac = inputs.phone.as_ref().map(|p| p.mac.to_string());
            match &fresh {
                Ok(f) => tracing::error!(
                    mac, file = %key.file, cached_bytes = cached.body.len(), fresh_bytes = f.body.len(),
                    "render cache served a file that differs from a fresh render; dropped"
                ),
                Err(e) => tracing::error!(
                    mac, file = %key.file, error = &*e.to_string(),
                    "render cache served a file that no longer renders; dropped"
                ),
            }
            self.rendered.remove(&key);
        }
        metrics::counter!("dialtone_render_cache_checked_total").increment(report.compared as u64);
        report
    }

    /// Runs [`Provisioner::self_check`] on `per_second` files every second,
    /// on the blocking pool, until `shutdown` completes.
    pub async fn run_self_check(
        self: Arc<Self>,
        per_second: usize,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        // The series exist from the start, so a dashboard shows 0, not nothing.
        metrics::counter!("dialtone_render_cache_stale_total").increment(0);
        metrics::counter!("dialtone_render_cache_checked_total").increment(0);
        if per_second == 0 {
            return shutdown.await;
        }
        tokio::pin!(shutdown);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tick.tick() => {}
            }
            let this = self.clone();
            // A panic here is a bug of the check itself: passed on, so the
            // supervisor counts it and restarts the task.
            let round = tokio::task::spawn_blocking(move || this.self_check(per_second)).await;
            if let Err(e) = round {
                if e.is_panic() {
                    std::panic::resume_unwind(e.into_panic());
                }
                return;
            }
        }
    }
}
