//! The change feed's catch-up read (`Store::changes_since`), on a
//! connection held as [`ClosedUnlessReleased`]: the watcher cuts off a
//! catch-up past its `catch_up_limit`, and the admin API one past its
//! request's ceiling.

use super::closing::ClosedUnlessReleased;
use super::{parse_snapshot, sql, CURRENT_SNAPSHOT, READ_SNAPSHOT};
use crate::error::SyncError;
use crate::model::*;
use crate::store::ChangeBatch;

/// The changes after `cursor`, at most `max_rows` of them (else
/// `too_far_behind`); `seen` is what the last read saw above its horizon.
pub(super) async fn since(
    conn: &mut ClosedUnlessReleased,
    max_rows: i64,
    cursor: Cursor,
    seen: Option<&SeenAbove>,
) -> Result<ChangeBatch, SyncError> {
    let timeline = super::timeline::read(conn.conn()).await;
    let mut tx = conn.begin().await?;
    sqlx::query(READ_SNAPSHOT).execute(&mut *tx).await?;
    let snapshot: String = sqlx::query_scalar(CURRENT_SNAPSHOT)
        .fetch_one(&mut *tx)
        .await?;
    let (horizon, seen_now) = parse_snapshot(&snapshot)?;
    let meta = Meta {
        timeline,
        ..sql::read_meta(&mut tx).await?
    };
    // Transaction ids only grow in a cluster: ids behind the cursor
    // are a cluster restored to an earlier point, or another one. A
    // standby promoted at the same address passes this once its ids
    // reach the cursor; the timeline in `meta` tells it apart
    // (`timeline.rs`).
    if seen_now.xmax < cursor.txid {
        tx.rollback().await?;
        return Ok(ChangeBatch {
            meta,
            rewound: true,
            next_cursor: cursor,
            ..Default::default()
        });
    }
    let entries: Vec<(String, i64)> = match seen {
        // Two index ranges: the transactions that were still running at
        // the last read, and those that started after it.
        Some(seen) => {
            let after = cursor.max(Cursor {
                txid: seen.xmax,
                seq: 0,
            });
            sqlx::query_as(
                "SELECT entity, row_id FROM ( \
                   SELECT txid, seq, entity, row_id FROM change_log \
                   WHERE (txid, seq) > ($1::bigint::text::xid8, $2) \
                   UNION ALL \
                   SELECT txid, seq, entity, row_id FROM change_log \
                   WHERE txid IN (SELECT x::text::xid8 FROM unnest($3::bigint[]) AS x) \
                   AND (txid, seq) > ($4::bigint::text::xid8, $5) \
                 ) AS new ORDER BY txid, seq LIMIT $6",
            )
            .bind(after.txid)
            .bind(after.seq)
            .bind(&seen.running)
            .bind(cursor.txid)
            .bind(cursor.seq)
            .bind(max_rows + 1)
            .fetch_all(&mut *tx)
            .await?
        }
        None => {
            sqlx::query_as(
                "SELECT entity, row_id FROM change_log \
                 WHERE (txid, seq) > ($1::bigint::text::xid8, $2) ORDER BY txid, seq LIMIT $3",
            )
            .bind(cursor.txid)
            .bind(cursor.seq)
            .bind(max_rows + 1)
            .fetch_all(&mut *tx)
            .await?
        }
    };
    if entries.len() as i64 > max_rows {
        tx.rollback().await?;
        return Ok(ChangeBatch {
            meta,
            too_far_behind: true,
            next_cursor: cursor,
            ..Default::default()
        });
    }
    let changes = sql::reload_changes(&mut tx, &entries).await?;
    tx.commit().await?;
    // Every entry below the horizon was in this (complete) page.
    let next_cursor = cursor.max(Cursor {
        txid: horizon,
        seq: 0,
    });
    Ok(ChangeBatch {
        changes,
        next_cursor,
        meta,
        too_far_behind: false,
        rewound: false,
        seen_above: Some(std::sync::Arc::new(seen_now)),
    })
}
