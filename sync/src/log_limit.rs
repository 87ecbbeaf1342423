//! A per-kind bound on log lines, shared by every crate.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// One log line a second for a kind of event a client or a tenant can
/// cause at will (a refused packet or request, a failing directory
/// source): a flood of them must not become a flood of log lines.
pub struct LogLimit {
    last: AtomicI64,
    skipped: AtomicU64,
}

impl Default for LogLimit {
    fn default() -> LogLimit {
        LogLimit::new()
    }
}

impl LogLimit {
    pub const fn new() -> LogLimit {
        LogLimit {
            last: AtomicI64::new(i64::MIN),
            skipped: AtomicU64::new(0),
        }
    }

    /// `Some(lines left out since the last one)` when a line may be written.
    pub fn allow(&self) -> Option<u64> {
        let now = monotonic_millis();
        let last = self.last.load(Ordering::Relaxed);
        if last > now.saturating_sub(1000)
            || self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(self.skipped.swap(0, Ordering::Relaxed))
    }
}

/// Milliseconds since the first call. Monotonic: a wall clock stepped
/// back would silence the log.
pub(crate) fn monotonic_millis() -> i64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_are_limited() {
        let limit = LogLimit::new();
        assert_eq!(limit.allow(), Some(0));
        assert_eq!(limit.allow(), None);
        assert_eq!(limit.allow(), None);
    }
}
