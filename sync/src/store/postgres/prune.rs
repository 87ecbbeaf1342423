//! Pruning on PostgreSQL, in batches that each commit.
//!
//! The pruner gives up on a prune that has not returned within
//! `watcher::PRUNE_LIMIT`, so that one caught on a connection gone silent
//! does not stop pruning for good. One statement deleting a large backlog
//! (the first prune after retention was shortened, or after pruning was
//! held up) could take longer than that, and cut off it would roll back
//! and start over at every round. In batches, what was deleted stays
//! deleted, and a prune starts no batch past [`BUDGET`], leaving the rest
//! to the next round: a healthy prune ends well within the limit.
//!
//! Each prune holds its connection as [`ClosedUnlessReleased`], so one cut
//! off takes no slot of the pool with it.

use std::time::{Duration, Instant};

use super::closing::ClosedUnlessReleased;
use super::PgStore;
use crate::error::SyncError;

/// Rows deleted by one statement: a few hundred milliseconds of work on a
/// healthy server.
const BATCH_ROWS: i64 = 10_000;

/// No batch starts after a prune has run this long.
const BUDGET: Duration = Duration::from_secs(60);

/// The tables pruned by age alone.
#[derive(Clone, Copy)]
pub(super) enum Aged {
    History,
    Audit,
    Tokens,
}

impl Aged {
    fn delete_batch(self) -> &'static str {
        match self {
            Aged::History => {
                "DELETE FROM provisioning_history WHERE id IN \
                 (SELECT id FROM provisioning_history WHERE at < $1 LIMIT $2)"
            }
            Aged::Audit => {
                "DELETE FROM audit_log WHERE id IN \
                 (SELECT id FROM audit_log WHERE at < $1 LIMIT $2)"
            }
            Aged::Tokens => {
                "DELETE FROM api_tokens WHERE id IN (SELECT id FROM api_tokens \
                 WHERE (revoked AND updated_at < $1) OR expires_at < $1 LIMIT $2)"
            }
        }
    }
}

/// Deletes `table`'s rows older than `retain` by the database's clock.
pub(super) async fn aged(store: &PgStore, table: Aged, retain: Duration) -> Result<u64, SyncError> {
    let started = Instant::now();
    let mut conn = ClosedUnlessReleased::acquire(&store.pool).await?;
    let cutoff = store.node_clock.cutoff(conn.conn(), retain).await?;
    let mut deleted = 0;
    loop {
        let batch = sqlx::query(table.delete_batch())
            .bind(cutoff)
            .bind(BATCH_ROWS)
            .execute(conn.conn())
            .await?
            .rows_affected();
        deleted += batch;
        if batch < BATCH_ROWS as u64 || started.elapsed() >= BUDGET {
            break;
        }
    }
    conn.release();
    Ok(deleted)
}

/// Deletes the change log's rows older than `retain`, and past its newest
/// `max_rows`.
pub(super) async fn change_log(
    store: &PgStore,
    retain: Duration,
    max_rows: i64,
) -> Result<u64, SyncError> {
    let started = Instant::now();
    let mut conn = ClosedUnlessReleased::acquire(&store.pool).await?;
    let cutoff = store.node_clock.cutoff(conn.conn(), retain).await?;
    // Prune a prefix in (txid, seq) order, and only below the horizon, so
    // "pruned through" is one cursor that every node can compare with.
    // Below the horizon no row can appear any more, so the prefix can be
    // deleted one batch at a time.
    let through: Option<(i64, i64)> = sqlx::query_as(
        "SELECT txid::text::bigint, seq FROM change_log \
         WHERE txid < pg_snapshot_xmin(pg_current_snapshot()) \
         AND (at < $1 OR seq <= (SELECT COALESCE(max(seq), 0) FROM change_log) - $2) \
         ORDER BY txid DESC, seq DESC LIMIT 1",
    )
    .bind(cutoff)
    .bind(max_rows)
    .fetch_optional(conn.conn())
    .await?;
    let Some(through) = through else {
        conn.release();
        return Ok(0);
    };
    let mut deleted = 0;
    loop {
        let batch_through: (i64, i64) = sqlx::query_as(
            "SELECT txid::text::bigint, seq FROM change_log \
             WHERE (txid, seq) <= ($1::bigint::text::xid8, $2) \
             ORDER BY txid, seq OFFSET $3 LIMIT 1",
        )
        .bind(through.0)
        .bind(through.1)
        .bind(BATCH_ROWS - 1)
        .fetch_optional(conn.conn())
        .await?
        .unwrap_or(through);
        deleted += delete_change_log_through(&mut conn, batch_through).await?;
        if batch_through == through || started.elapsed() >= BUDGET {
            break;
        }
    }
    conn.release();
    Ok(deleted)
}

/// Deletes the change log through `(txid, seq)` and says so in the same
/// transaction: a node whose cursor is below must learn that it missed rows.
async fn delete_change_log_through(
    conn: &mut ClosedUnlessReleased,
    (txid, seq): (i64, i64),
) -> Result<u64, SyncError> {
    let mut tx = sqlx::Connection::begin(conn.conn()).await?;
    let deleted =
        sqlx::query("DELETE FROM change_log WHERE (txid, seq) <= ($1::bigint::text::xid8, $2)")
            .bind(txid)
            .bind(seq)
            .execute(&mut *tx)
            .await?
            .rows_affected();
    sqlx::query(
        "UPDATE dialtone_meta SET pruned_txid = $1, pruned_seq = $2 \
         WHERE singleton = 1 AND (pruned_txid, pruned_seq) < ($1, $2)",
    )
    .bind(txid)
    .bind(seq)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(deleted)
}
