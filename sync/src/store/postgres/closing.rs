//! Pool connections for work that a timeout may cut off.
//!
//! sqlx hands a dropped pool connection back through a task that pings it
//! first, with no time limit. A connection whose socket went silent (a
//! partition, a hung server) never answers that ping, so every query cut
//! off on one would keep a slot of the pool for good, and a few such cuts
//! would leave the node with no connection at all. Any store call may be
//! cut off: the watcher bounds its catch-ups, the admin API drops a
//! request's work at its ceiling, the refetch watch bounds its history
//! reads, the background writers bound their batches.

use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};

use crate::error::SyncError;

/// The counter of connections closed by [`ClosedUnlessReleased`]'s drop
/// (described by the binary).
const CONNECTIONS_CLOSED_METRIC: &str = "dialtone_store_connections_closed_total";

/// A pool connection that goes back to the pool only through
/// [`ClosedUnlessReleased::release`] (or [`ClosedUnlessReleased::settle`]).
/// Dropped before then (the work was cut off, or its connection failed),
/// it is taken out of the pool and its socket closed at once: the pool may
/// open another in its place, and PostgreSQL rolls back whatever it had
/// open.
pub(super) struct ClosedUnlessReleased(Option<PoolConnection<Postgres>>);

impl ClosedUnlessReleased {
    pub(super) async fn acquire(pool: &PgPool) -> Result<Self, SyncError> {
        Ok(ClosedUnlessReleased(Some(pool.acquire().await?)))
    }

    pub(super) fn conn(&mut self) -> &mut PgConnection {
        self.0.as_mut().expect("a connection not yet released")
    }

    /// A transaction on this connection. Cut off with `BEGIN` on the wire,
    /// the connection is closed with the cut, so the transaction block it
    /// may have opened reaches no other borrower (as it would through a
    /// pool connection that sqlx had not yet counted as in a transaction).
    pub(super) async fn begin(&mut self) -> Result<Transaction<'_, Postgres>, SyncError> {
        Ok(sqlx::Connection::begin(self.conn()).await?)
    }

    /// The work is done and the connection is idle: back to the pool.
    pub(super) fn release(mut self) {
        drop(self.0.take());
    }

    /// Gives the connection back once its work ended with `outcome`: at
    /// once after success. After a failure only once it has answered a
    /// ping, which also sends the rollback a dropped transaction left
    /// queued. That is the pool's own check on release, but awaited here,
    /// where the caller's time limit still holds, so a connection that
    /// failed, or went silent, is closed instead of kept; and one that
    /// only carried the server's refusal (a rejected import row) is kept,
    /// with no new connection to open for the next try.
    pub(super) async fn settle<T>(mut self, outcome: Result<T, SyncError>) -> Result<T, SyncError> {
        if outcome.is_ok() || sqlx::Connection::ping(self.conn()).await.is_ok() {
            self.release();
        }
        outcome
    }
}

impl Drop for ClosedUnlessReleased {
    fn drop(&mut self) {
        if let Some(conn) = self.0.take() {
            drop(conn.detach());
            metrics::counter!(CONNECTIONS_CLOSED_METRIC).increment(1);
        }
    }
}
