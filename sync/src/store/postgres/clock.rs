//! Prune cutoffs on PostgreSQL come from the database server's clock. Every
//! node prunes the shared tables, and their rows were stamped by the
//! database (`change_log.at`) or by whichever node wrote them (audit and
//! history): one node whose clock ran a year ahead would otherwise delete
//! every tenant's audit log, history and change log on its first pass.
//! Reading the database's clock also measures this node's against it, which
//! the operator needs to see: node clocks also date Digest nonces, history
//! rows and token expiry.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use sqlx::PgConnection;

use crate::error::SyncError;
use crate::model::{cutoff_before, now_millis, Millis};

/// This node's clock minus the database's, in seconds, as last measured
/// while pruning (positive: this node is ahead).
pub const CLOCK_OFFSET_METRIC: &str = "dialtone_clock_offset_seconds";

/// Synchronized clocks stay well within this; past it Digest nonces from
/// other nodes (30 s of slack) and token expiry go wrong in ways nobody
/// would trace to the clock.
const SKEW_WARNING: Duration = Duration::from_secs(60);

const DATABASE_NOW: &str = "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint";

/// This node's clock as the pruner sees it, and what it last measured.
pub(super) struct NodeClock {
    now: fn() -> Millis,
    offset_ms: AtomicI64,
    /// The offset last warned of while the skew stays past
    /// [`SKEW_WARNING`] ([`NOT_WARNED`] once it is back under): a node that
    /// stays as skewed warns once, not on every pass.
    warned_at_ms: AtomicI64,
}

const NOT_WARNED: Millis = Millis::MIN;

impl Default for NodeClock {
    fn default() -> Self {
        NodeClock::reading(now_millis)
    }
}

impl NodeClock {
    pub(super) fn reading(now: fn() -> Millis) -> Self {
        NodeClock {
            now,
            offset_ms: AtomicI64::new(0),
            warned_at_ms: AtomicI64::new(NOT_WARNED),
        }
    }

    /// The time `retain` before the database's now, read on `conn` (the
    /// connection that then deletes). Records this node's clock offset.
    pub(super) async fn cutoff(
        &self,
        conn: &mut PgConnection,
        retain: Duration,
    ) -> Result<Millis, SyncError> {
        let sent = (self.now)();
        let database_now: Millis = sqlx::query_scalar(DATABASE_NOW).fetch_one(conn).await?;
        let received = (self.now)();
        self.record(node_minus_database(sent, database_now, received));
        Ok(cutoff_before(database_now, retain))
    }

    fn record(&self, offset_ms: Millis) {
        self.offset_ms.store(offset_ms, Ordering::Relaxed);
        let seconds = offset_ms as f64 / 1000.0;
        metrics::gauge!(CLOCK_OFFSET_METRIC).set(seconds);
        if self.crossed_warning(offset_ms) {
            tracing::warn!(
                offset_s = seconds,
                "this node's clock is {:.0} s {} the database's: fix its time \
                 synchronization (Digest nonces, provisioning history and token \
                 expiry use this clock)",
                seconds.abs(),
                if offset_ms > 0 { "ahead of" } else { "behind" },
            );
        }
    }

    /// Whether `offset_ms` is to be warned of: it newly went past the
    /// threshold, or it moved by more than the threshold since the last
    /// warning. A clock stepped from an hour ahead to an hour behind, or
    /// from a day ahead to a year, left the log saying the old offset.
    fn crossed_warning(&self, offset_ms: Millis) -> bool {
        let threshold = SKEW_WARNING.as_millis() as u64;
        if offset_ms.unsigned_abs() <= threshold {
            self.warned_at_ms.store(NOT_WARNED, Ordering::Relaxed);
            return false;
        }
        let last = self.warned_at_ms.load(Ordering::Relaxed);
        let news = last == NOT_WARNED || offset_ms.abs_diff(last) > threshold;
        if news {
            self.warned_at_ms.store(offset_ms, Ordering::Relaxed);
        }
        news
    }
}

/// A machine's clock cannot be moved for a test; a store can be given
/// another.
#[cfg(feature = "testing")]
impl super::PgStore {
    /// This store as a node whose clock reads `now`.
    pub fn with_node_clock(mut self, now: fn() -> Millis) -> Self {
        self.node_clock = NodeClock::reading(now);
        self
    }

    /// This node's clock minus the database's, as last measured while
    /// pruning (0 before the first prune).
    pub fn clock_offset_ms(&self) -> Millis {
        self.node_clock.offset_ms.load(Ordering::Relaxed)
    }
}

/// This node's clock minus the database's, taking the database as having
/// read its clock halfway through the round trip.
fn node_minus_database(sent: Millis, database_now: Millis, received: Millis) -> Millis {
    let midway = sent.saturating_add(received.saturating_sub(sent) / 2);
    midway.saturating_sub(database_now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_takes_the_middle_of_the_round_trip() {
        assert_eq!(node_minus_database(1_000, 1_050, 1_100), 0);
        assert_eq!(node_minus_database(61_000, 1_050, 61_100), 60_000);
        assert_eq!(node_minus_database(1_000, 61_050, 1_100), -60_000);
    }

    #[test]
    fn skew_is_warned_once_per_excursion_and_again_when_it_moves() {
        let clock = NodeClock::default();
        let minute = 60_000;
        let hour = 60 * minute;
        assert!(!clock.crossed_warning(minute), "60 s is not past the limit");
        assert!(clock.crossed_warning(hour));
        assert!(!clock.crossed_warning(hour + 30_000), "as skewed as warned");
        assert!(
            !clock.crossed_warning(hour - minute),
            "within a minute of it"
        );
        assert!(clock.crossed_warning(-hour), "stepped to behind");
        assert!(
            clock.crossed_warning(365 * 24 * hour),
            "stepped a year ahead"
        );
        assert!(!clock.crossed_warning(365 * 24 * hour));
        assert!(!clock.crossed_warning(5));
        assert!(
            clock.crossed_warning(-(minute + 1)),
            "back over after under"
        );
    }
}
