//! When a clock's offset is worth a WARN: once as it goes past the
//! threshold, and again whenever it moves by more than the threshold since
//! the last warning. Once an excursion only, a clock stepped from an hour
//! ahead to an hour behind, or from a day ahead to a year, left the log
//! saying the old offset. Shared by PostgreSQL's check against the
//! database's clock and SQLite's against the time counted since opening.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use crate::model::Millis;

pub(super) struct OffsetWarning {
    threshold_ms: u64,
    /// The offset last warned of while past the threshold; [`NOT_WARNED`]
    /// once back within it.
    warned_at_ms: AtomicI64,
}

const NOT_WARNED: Millis = Millis::MIN;

impl OffsetWarning {
    pub(super) fn new(threshold: Duration) -> Self {
        OffsetWarning {
            threshold_ms: threshold.as_millis() as u64,
            warned_at_ms: AtomicI64::new(NOT_WARNED),
        }
    }

    /// Whether `offset_ms` (either sign) is news to warn of.
    pub(super) fn is_news(&self, offset_ms: Millis) -> bool {
        if offset_ms.unsigned_abs() <= self.threshold_ms {
            self.warned_at_ms.store(NOT_WARNED, Ordering::Relaxed);
            return false;
        }
        let last = self.warned_at_ms.load(Ordering::Relaxed);
        let news = last == NOT_WARNED || offset_ms.abs_diff(last) > self.threshold_ms;
        if news {
            self.warned_at_ms.store(offset_ms, Ordering::Relaxed);
        }
        news
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_offset_is_warned_once_per_excursion_and_again_when_it_moves() {
        let warning = OffsetWarning::new(Duration::from_secs(60));
        let minute = 60_000;
        let hour = 60 * minute;
        assert!(!warning.is_news(minute), "60 s is not past the limit");
        assert!(warning.is_news(hour));
        assert!(!warning.is_news(hour + 30_000), "as far off as warned");
        assert!(!warning.is_news(hour - minute), "within a minute of it");
        assert!(warning.is_news(-hour), "stepped to behind");
        assert!(warning.is_news(365 * 24 * hour), "stepped a year ahead");
        assert!(!warning.is_news(365 * 24 * hour));
        assert!(!warning.is_news(5));
        assert!(warning.is_news(-(minute + 1)), "back over after under");
    }
}
