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
//!
//! The store's [`Pool`] is here too: a connection is also closed, with
//! every one opened before it, once its prepared statements went stale.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};

use crate::error::SyncError;

/// The counter of connections closed by [`ClosedUnlessReleased`]'s drop
/// (described by the binary).
const CONNECTIONS_CLOSED_METRIC: &str = "dialtone_store_connections_closed_total";

/// The store's pool. sqlx keeps each connection's prepared statements for
/// the connection's life, and PostgreSQL refuses to run one whose result
/// changed type, typmod or collation since it was prepared (an `ALTER
/// COLUMN ... TYPE`). Every connection that had prepared a statement on
/// that column would fail it again at each use until sqlx retired the
/// connection (up to its 30-minute lifetime): the node stale, its writes
/// refused. The first such failure retires the connection it came on and
/// every other one opened before it, as the pool hands them out, so what
/// runs next prepares its statements afresh.
#[derive(Clone)]
pub(super) struct Pool {
    pg: PgPool,
    plans_changed: Arc<PlansChanged>,
}

impl Pool {
    pub(super) fn connect_lazy(options: PgPoolOptions, connect: PgConnectOptions) -> Pool {
        let plans_changed = Arc::new(PlansChanged::default());
        let seen = plans_changed.clone();
        let pg = options
            .before_acquire(move |_, opened| {
                let fresh = !seen.predates(opened.age);
                Box::pin(async move { Ok(fresh) })
            })
            .connect_lazy_with(connect);
        Pool { pg, plans_changed }
    }
}

impl std::ops::Deref for Pool {
    type Target = PgPool;

    fn deref(&self) -> &PgPool {
        &self.pg
    }
}

/// When a statement last failed on a plan the server no longer accepts.
#[derive(Default)]
struct PlansChanged(Mutex<Option<Instant>>);

impl PlansChanged {
    fn seen(&self) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
    }

    /// Whether a connection opened `age` ago was opened before the last
    /// failure, so may hold statements prepared before the change.
    fn predates(&self, age: Duration) -> bool {
        let seen = *self.0.lock().unwrap_or_else(PoisonError::into_inner);
        seen.is_some_and(|at| age >= at.elapsed())
    }
}

/// A pool connection that goes back to the pool only through
/// [`ClosedUnlessReleased::release`] (or [`ClosedUnlessReleased::settle`]).
/// Dropped before then (the work was cut off, or its connection failed),
/// it is taken out of the pool and its socket closed at once: the pool may
/// open another in its place, and PostgreSQL rolls back whatever it had
/// open.
pub(super) struct ClosedUnlessReleased {
    conn: Option<PoolConnection<Postgres>>,
    plans_changed: Arc<PlansChanged>,
}

impl ClosedUnlessReleased {
    pub(super) async fn acquire(pool: &Pool) -> Result<Self, SyncError> {
        Ok(ClosedUnlessReleased {
            conn: Some(pool.pg.acquire().await?),
            plans_changed: pool.plans_changed.clone(),
        })
    }

    pub(super) fn conn(&mut self) -> &mut PgConnection {
        self.conn.as_mut().expect("a connection not yet released")
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
        drop(self.conn.take());
    }

    /// Gives the connection back once its work ended with `outcome`: at
    /// once after success. After a failure only once it has answered a
    /// ping, which also sends the rollback a dropped transaction left
    /// queued. That is the pool's own check on release, but awaited here,
    /// where the caller's time limit still holds, so a connection that
    /// failed, or went silent, is closed instead of kept; and one that
    /// only carried the server's refusal (a rejected import row) is kept,
    /// with no new connection to open for the next try. One whose
    /// statement's plan went stale is closed, and with it every connection
    /// opened before ([`Pool`] says why).
    pub(super) async fn settle<T>(mut self, outcome: Result<T, SyncError>) -> Result<T, SyncError> {
        match &outcome {
            Ok(_) => self.release(),
            Err(e) if super::is_stale_cached_plan(e) => {
                self.plans_changed.seen();
                tracing::warn!(
                    error = %e,
                    "a column this node reads changed type or collation; \
                     its connections are reopened"
                );
            }
            Err(_) => {
                if sqlx::Connection::ping(self.conn()).await.is_ok() {
                    self.release();
                }
            }
        }
        outcome
    }
}

impl Drop for ClosedUnlessReleased {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            drop(conn.detach());
            metrics::counter!(CONNECTIONS_CLOSED_METRIC).increment(1);
        }
    }
}
