//! Prune cutoffs on SQLite come from this node's clock, which stamped the
//! rows, but not from the wall clock as it reads at the pass: a forward step
//! larger than a table's retention (a bad NTP source, an operator's typo)
//! would delete every row older than the step in one pass, and nothing
//! brings them back. The pruner goes by the wall clock as read when the
//! store was opened plus the time counted since on the monotonic clock,
//! which no step moves; the wall clock may run ahead of that by [`SLACK`]
//! (NTP's small corrections), and where it runs behind (a backward step)
//! it is used as it reads, so a step back only prunes less.
//!
//! A clock already wrong when the store is opened is not caught: the
//! counted time starts from it. The monotonic clock stops while the machine
//! is suspended, so after a suspension pruning lags by its length, which is
//! the safe way to be wrong, until the next start.

use std::time::{Duration, Instant};

use super::super::offset_warning::OffsetWarning;
use crate::model::{cutoff_before, now_millis, Millis};

/// How far the wall clock may run ahead of the counted time and still be
/// used: NTP's slewing and small steps stay well within it.
const SLACK: Duration = Duration::from_secs(60);

/// The clock the SQLite pruner reads; anchored when the store is opened.
pub(super) struct PruneClock {
    wall: fn() -> Millis,
    anchor_wall: Millis,
    anchor: Instant,
    /// Of the wall clock running ahead (behind is safe, and not warned).
    warning: OffsetWarning,
}

impl Default for PruneClock {
    fn default() -> Self {
        PruneClock::anchored(now_millis, now_millis(), Instant::now())
    }
}

impl PruneClock {
    fn anchored(wall: fn() -> Millis, anchor_wall: Millis, anchor: Instant) -> Self {
        PruneClock {
            wall,
            anchor_wall,
            anchor,
            warning: OffsetWarning::new(SLACK),
        }
    }

    /// The time `retain` before the prune clock's now.
    pub(super) fn cutoff(&self, retain: Duration) -> Millis {
        cutoff_before(self.now_at((self.wall)(), Instant::now()), retain)
    }

    /// The prune clock when the wall clock reads `wall` at `instant`: the
    /// wall clock, but no further than [`SLACK`] past the counted time.
    fn now_at(&self, wall: Millis, instant: Instant) -> Millis {
        let elapsed = instant.saturating_duration_since(self.anchor).as_millis();
        let counted = self
            .anchor_wall
            .saturating_add(i64::try_from(elapsed).unwrap_or(i64::MAX));
        let ahead_ms = wall.saturating_sub(counted);
        if self.warning.is_news(ahead_ms.max(0)) {
            let seconds = ahead_ms as f64 / 1000.0;
            tracing::warn!(
                ahead_s = seconds,
                "this node's clock is {seconds:.0} s ahead of the time counted \
                 since the database was opened: pruning goes by the counted \
                 time; fix its time synchronization before restarting, as a \
                 restart counts from the clock as it then reads (Digest \
                 nonces, provisioning history and token expiry use this clock)",
            );
        }
        let limit = counted.saturating_add(SLACK.as_millis() as i64);
        wall.min(limit)
    }
}

/// A machine's clock cannot be stepped for a test; a store can be given
/// another after it is opened.
#[cfg(feature = "testing")]
impl super::SqliteStore {
    /// This store as a node whose clock reads `now` from here on, as if
    /// stepped: the counted time still starts from the clock as it read
    /// when the store was opened.
    pub fn with_node_clock(mut self, now: fn() -> Millis) -> Self {
        self.prune_clock.wall = now;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Millis = 1_800_000_000_000;
    const DAY_MS: Millis = 86_400_000;

    fn anchored_at_t() -> (PruneClock, Instant) {
        let start = Instant::now();
        (PruneClock::anchored(now_millis, T, start), start)
    }

    #[test]
    fn a_clock_in_step_is_used_as_it_reads() {
        let (clock, start) = anchored_at_t();
        assert_eq!(clock.now_at(T, start), T);
        let later = start + Duration::from_secs(3_600);
        assert_eq!(clock.now_at(T + 3_600_000, later), T + 3_600_000);
        assert_eq!(clock.now_at(T + 3_659_000, later), T + 3_659_000, "slew");
    }

    #[test]
    fn a_forward_step_is_held_to_the_counted_time() {
        let (clock, start) = anchored_at_t();
        let eight_s = start + Duration::from_secs(8);
        assert_eq!(clock.now_at(T + 401 * DAY_MS, eight_s), T + 8_000 + 60_000);
        let a_day = start + Duration::from_secs(86_400);
        assert_eq!(clock.now_at(T + 2 * DAY_MS, a_day), T + DAY_MS + 60_000);
    }

    #[test]
    fn a_backward_step_prunes_less() {
        let (clock, start) = anchored_at_t();
        let later = start + Duration::from_secs(10);
        assert_eq!(clock.now_at(T - DAY_MS, later), T - DAY_MS);
    }

    #[test]
    fn the_cutoff_saturates() {
        let (clock, _) = anchored_at_t();
        assert!(clock.cutoff(Duration::MAX) < 0);
    }

    #[test]
    fn the_pass_that_finds_a_step_warns_and_behind_is_not_warned() {
        let (stepped, start) = anchored_at_t();
        stepped.now_at(T + DAY_MS, start);
        assert!(!stepped.warning.is_news(DAY_MS), "the reading warned");
        let (behind, start) = anchored_at_t();
        behind.now_at(T - DAY_MS, start);
        assert!(
            behind.warning.is_news(DAY_MS),
            "a clock behind was not warned of"
        );
    }
}
