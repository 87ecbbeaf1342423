//! A write's COMMIT whose answer is lost. Once COMMIT is sent, a connection
//! that fails (reset, closed, the server restarting) leaves the outcome
//! open: PostgreSQL may have made the transaction durable before the answer
//! was lost. Reporting that as "nothing was changed" makes a client write
//! again: a second phone refused as taken, a second token nobody holds.
//! The transaction's id, read before COMMIT, is asked about on another
//! connection instead (`txid_status`), and only an answer the database
//! gives decides; otherwise the caller learns the outcome is unknown.

use std::time::Duration;

use sqlx::{Postgres, Transaction};

use super::closing::{ClosedUnlessReleased, Pool};
use crate::error::SyncError;

/// How long the question may take, all tries together: the caller (an
/// admin request, an import) is waiting for its answer.
const ASKING_FOR: Duration = Duration::from_secs(5);

/// Pause between asks while the transaction is still "in progress": its
/// backend has not yet noticed its client is gone.
const AGAIN_AFTER: Duration = Duration::from_millis(200);

/// A COMMIT whose answer was lost: the transaction's id and what cut it.
pub(super) struct Lost {
    xid: i64,
    error: sqlx::Error,
}

/// Commits `tx`: `None` once committed, [`Lost`] when the answer was lost,
/// to be settled with [`settle`] once the writer's connection is closed.
/// Asked while that connection is still held, the question would wait for
/// a pool slot the dead connection keeps, with the rest of the pool busy.
pub(super) async fn send(mut tx: Transaction<'_, Postgres>) -> Result<Option<Lost>, SyncError> {
    // A write has its id already; one that wrote nothing gets one here,
    // which costs a counter step and nothing else.
    let xid: i64 = sqlx::query_scalar("SELECT txid_current()")
        .fetch_one(&mut *tx)
        .await?;
    match tx.commit().await {
        Ok(()) => Ok(None),
        Err(error) if answer_lost(&error) => Ok(Some(Lost { xid, error })),
        // The server's own refusal (a deferred key, a serialization
        // failure): it rolled back.
        Err(e) => Err(e.into()),
    }
}

/// What a write on `conn` came to once its COMMIT was sent: its report,
/// with the connection given back or closed (`ClosedUnlessReleased::settle`).
/// When the COMMIT's answer was lost, the connection is closed (dropped)
/// before the database is asked, so its pool slot is free for that.
pub(super) async fn finish<T>(
    pool: &Pool,
    conn: ClosedUnlessReleased,
    written: Result<(T, Option<Lost>), SyncError>,
) -> Result<T, SyncError> {
    match written {
        Ok((report, Some(lost))) => {
            drop(conn);
            settle(pool, lost).await?;
            Ok(report)
        }
        written => conn.settle(written.map(|(report, _)| report)).await,
    }
}

/// Settles a lost commit's answer by asking the database.
pub(super) async fn settle(pool: &Pool, lost: Lost) -> Result<(), SyncError> {
    let Lost { xid, error: lost } = lost;
    match tokio::time::timeout(ASKING_FOR, status(pool, xid)).await {
        Ok(Ok(Status::Committed)) => {
            tracing::warn!(xid, error = %lost, "the commit's answer was lost; the database says it committed");
            Ok(())
        }
        Ok(Ok(Status::Aborted)) => Err(lost.into()),
        Ok(Ok(Status::Unknown)) | Ok(Err(_)) | Err(_) => Err(SyncError::CommitUnknown(lost)),
    }
}

/// Whether `e` leaves the commit's outcome open: the connection, not the
/// server, failed.
fn answer_lost(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::WorkerCrashed => true,
        // admin_shutdown, crash_shutdown, cannot_connect_now and the
        // connection-exception class: the server went away mid-commit.
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|c| c.starts_with("08") || c.starts_with("57P")),
        _ => false,
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Status {
    Committed,
    Aborted,
    /// Still in progress past the wait, or forgotten (older than the
    /// database keeps commit records for).
    Unknown,
}

/// Asked on a connection held as [`ClosedUnlessReleased`]: the question
/// is cut off at [`ASKING_FOR`], and a commit's answer is mostly lost to a
/// network that fails, which the next connection may go through too.
async fn status(pool: &Pool, xid: i64) -> Result<Status, SyncError> {
    loop {
        let mut conn = ClosedUnlessReleased::acquire(pool).await?;
        let answer = sqlx::query_scalar::<_, Option<String>>("SELECT txid_status($1)")
            .bind(xid)
            .fetch_one(conn.conn())
            .await
            .map_err(SyncError::from);
        let answer = conn.settle(answer).await?;
        match answer.as_deref() {
            Some("committed") => return Ok(Status::Committed),
            Some("aborted") => return Ok(Status::Aborted),
            Some("in progress") => tokio::time::sleep(AGAIN_AFTER).await,
            _ => return Ok(Status::Unknown),
        }
    }
}
