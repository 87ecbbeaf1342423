//! Pool connections for work that a timeout may cut off.
//!
//! sqlx hands a dropped pool connection back through a task that pings it
//! first, with no time limit. A connection whose socket went silent (a
//! partition, a hung server) never answers that ping, so every query cut
//! off on one would keep a slot of the pool for good, and a few such cuts
//! would leave the node with no connection at all.

use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, PgPool, Postgres};

use crate::error::SyncError;

/// A pool connection that goes back to the pool only through
/// [`ClosedUnlessReleased::release`]. Dropped before then (the work was
/// cut off, or failed), it is taken out of the pool and its socket closed
/// at once: the pool may open another in its place, and PostgreSQL rolls
/// back whatever it had open.
pub(super) struct ClosedUnlessReleased(Option<PoolConnection<Postgres>>);

impl ClosedUnlessReleased {
    pub(super) async fn acquire(pool: &PgPool) -> Result<Self, SyncError> {
        Ok(ClosedUnlessReleased(Some(pool.acquire().await?)))
    }

    pub(super) fn conn(&mut self) -> &mut PgConnection {
        self.0.as_mut().expect("a connection not yet released")
    }

    /// The work is done and the connection is idle: back to the pool.
    pub(super) fn release(mut self) {
        drop(self.0.take());
    }
}

impl Drop for ClosedUnlessReleased {
    fn drop(&mut self) {
        if let Some(conn) = self.0.take() {
            drop(conn.detach());
        }
    }
}
