//! One circuit breaker per remote source. After `threshold` consecutive
//! failures it opens: calls are refused at once instead of each waiting for
//! a timeout. After `cooldown` one probe goes through; its result closes
//! the breaker or opens it for another cool-down. A dead AD therefore costs
//! one timeout per cool-down, not one per call.

use std::sync::Mutex;
use std::time::Duration;

use crate::clock::Clock;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    /// A probe is out; everyone else is still refused.
    HalfOpen,
}

#[derive(Debug)]
struct Inner {
    consecutive_failures: u32,
    open_until: Option<Duration>,
    /// When the probe now out was let through. A probe whose caller never
    /// reports (its lookup cancelled at a deadline, or a panic in the
    /// client) would otherwise keep the source refused until its row
    /// changes; after a cool-down another probe may go.
    probing: Option<Duration>,
}

#[derive(Debug)]
pub struct Breaker {
    inner: Mutex<Inner>,
    threshold: u32,
    cooldown: Duration,
    clock: Clock,
}

/// Permission to call the source. Report how the call went with
/// [`Breaker::success`] or [`Breaker::failure`].
#[derive(Debug, PartialEq, Eq)]
pub enum Permit {
    Call,
    Probe,
}

impl Breaker {
    pub fn new(threshold: u32, cooldown: Duration, clock: Clock) -> Breaker {
        Breaker {
            inner: Mutex::new(Inner {
                consecutive_failures: 0,
                open_until: None,
                probing: None,
            }),
            threshold: threshold.max(1),
            cooldown,
            clock,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `None` while open: do not call the source.
    pub fn permit(&self) -> Option<Permit> {
        let mut inner = self.lock();
        let now = self.clock.now();
        match inner.open_until {
            None => Some(Permit::Call),
            Some(_)
                if inner
                    .probing
                    .is_some_and(|since| now < since + self.cooldown) =>
            {
                None
            }
            Some(until) if now >= until => {
                inner.probing = Some(now);
                Some(Permit::Probe)
            }
            Some(_) => None,
        }
    }

    /// `true` when this closed the breaker. The breaker knows no source:
    /// its owner says which one in the log (`RemoteSource::succeeded`).
    pub fn success(&self) -> bool {
        let mut inner = self.lock();
        let closed = inner.open_until.is_some();
        inner.consecutive_failures = 0;
        inner.open_until = None;
        inner.probing = None;
        closed
    }

    /// `Some(consecutive failures)` when this opened the breaker (not when
    /// a failed probe kept it open).
    pub fn failure(&self) -> Option<u32> {
        let mut inner = self.lock();
        inner.consecutive_failures = inner.consecutive_failures.saturating_add(1);
        let reopen = inner.probing.is_some() || inner.consecutive_failures >= self.threshold;
        inner.probing = None;
        if !reopen {
            return None;
        }
        let opened = inner
            .open_until
            .is_none()
            .then_some(inner.consecutive_failures);
        inner.open_until = Some(self.clock.now() + self.cooldown);
        opened
    }

    pub fn state(&self) -> BreakerState {
        let inner = self.lock();
        match (inner.open_until, inner.probing) {
            (None, _) => BreakerState::Closed,
            (Some(_), Some(_)) => BreakerState::HalfOpen,
            (Some(_), None) => BreakerState::Open,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_then_probes_once() {
        let clock = Clock::manual();
        let breaker = Breaker::new(3, Duration::from_secs(5), clock.clone());
        for _ in 0..2 {
            assert_eq!(breaker.permit(), Some(Permit::Call));
            breaker.failure();
        }
        assert_eq!(breaker.state(), BreakerState::Closed);
        breaker.failure();
        assert_eq!(breaker.state(), BreakerState::Open);
        assert_eq!(breaker.permit(), None);
        clock.advance(Duration::from_millis(4999));
        assert_eq!(breaker.permit(), None);
        clock.advance(Duration::from_millis(1));
        assert_eq!(breaker.permit(), Some(Permit::Probe));
        // Only one probe at a time.
        assert_eq!(breaker.permit(), None);
        // A failed probe reopens for a full cool-down.
        breaker.failure();
        assert_eq!(breaker.permit(), None);
        clock.advance(Duration::from_secs(5));
        assert_eq!(breaker.permit(), Some(Permit::Probe));
        breaker.success();
        assert_eq!(breaker.state(), BreakerState::Closed);
        assert_eq!(breaker.permit(), Some(Permit::Call));
    }

    #[test]
    fn a_probe_that_never_reports_does_not_close_the_source_for_good() {
        let clock = Clock::manual();
        let breaker = Breaker::new(1, Duration::from_secs(5), clock.clone());
        breaker.failure();
        clock.advance(Duration::from_secs(5));
        // Its caller was cancelled (or panicked): no success, no failure.
        assert_eq!(breaker.permit(), Some(Permit::Probe));
        clock.advance(Duration::from_millis(4999));
        assert_eq!(breaker.permit(), None);
        clock.advance(Duration::from_millis(1));
        assert_eq!(breaker.permit(), Some(Permit::Probe));
        breaker.success();
        assert_eq!(breaker.permit(), Some(Permit::Call));
    }

    #[test]
    fn a_success_resets_the_count() {
        let breaker = Breaker::new(2, Duration::from_secs(1), Clock::manual());
        breaker.failure();
        breaker.success();
        breaker.failure();
        assert_eq!(breaker.state(), BreakerState::Closed);
    }
}
