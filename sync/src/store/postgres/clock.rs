//! Prune cutoffs on PostgreSQL come from the database server's clock. Every
//! node prunes the shared tables, and their rows were stamped by the
//! database (`change_log.at`) or by whichever node wrote them (audit and
//! history): one node whose clock ran a year ahead would otherwise delete
//! every tenant's audit log, history and change log on its first pass.
//! Reading the database's clock also measures this node's against it, which
//! the operator needs to see: node clocks also date Digest nonces, history
//! rows and token expiry.

use std::sync::atomic::{AtomicI64, Ordering};

use super::super::offset_warning::OffsetWarning;
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
    warning: OffsetWarning,
}

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
            warning: OffsetWarning::new(SKEW_WARNING),
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
        if self.warning.is_news(offset_ms) {
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
}
