//! Cold load from PostgreSQL. Phones and lines, nearly all of a large
//! mirror, come through binary COPY (`copy.rs`) on two connections that
//! share one exported snapshot, and each row goes straight into the
//! mirror's tables (`mirror::Loading`) as it is decoded: no row objects, no
//! intermediate vectors, maps sized from the planner's row estimates. The
//! small tables are read as rows on the first connection, and lines too
//! when the second cannot lock them at once ([`second_reader_locks`]) or
//! the pool has no second connection to give.

use futures::TryStreamExt;
use sqlx::postgres::PgRow;
use sqlx::PgConnection;

use super::closing::{ClosedUnlessReleased, Pool};
use super::copy::{CopyDecoder, Tuple};
use super::{parse_snapshot, sql, LargeRead, CURRENT_SNAPSHOT, READ_SNAPSHOT};
use crate::error::SyncError;
use crate::intern::Interner;
use crate::mirror::{LineRows, Loading, PhoneRows};
use crate::model::*;
use crate::store::rows::{self, line, phone, LINE_COLUMNS, PHONE_COLUMNS};

/// How long a load waits on its tables' locks before it says so.
const LOCK_WAIT_TOLD_AFTER: std::time::Duration = std::time::Duration::from_secs(5);

/// Every table a load reads.
const LOADED_TABLES: &str = "dialtone_meta, tenants, phones, lines, templates, \
     directory_entries, directory_sources, api_tokens";

/// Both connections are held as [`ClosedUnlessReleased`]: the watcher
/// cuts off a load past its `catch_up_limit`.
pub(super) async fn load(pool: &Pool) -> Result<(Loading, Cursor, Meta), SyncError> {
    let mut conn = ClosedUnlessReleased::acquire(pool).await?;
    let loaded = load_on(&mut conn, pool).await;
    conn.settle(loaded).await
}

async fn load_on(
    conn: &mut ClosedUnlessReleased,
    pool: &Pool,
) -> Result<(Loading, Cursor, Meta), SyncError> {
    let timeline = super::timeline::read(conn.conn()).await;
    let mut tx = conn.begin().await?;
    sqlx::query(READ_SNAPSHOT).execute(&mut *tx).await?;
    // Locked before the snapshot is taken (the first query takes it), so a
    // first import holding its exclusive locks (`bulk_quiet.rs`) is waited
    // for before the snapshot and not after it. Its rows are written
    // frozen, visible even to a snapshot older than its commit, while the
    // tenants created in the same run are not: a load that took its
    // snapshot first held every new phone without its tenant until the
    // next reload. The lock conflicts with nothing but such exclusive
    // locks, and the load takes it on each table anyway as it reads.
    {
        let lock = format!("LOCK TABLE {LOADED_TABLES} IN ACCESS SHARE MODE");
        let mut locking = std::pin::pin!(sqlx::query(&lock).execute(&mut *tx));
        if let Ok(locked) = tokio::time::timeout(LOCK_WAIT_TOLD_AFTER, &mut locking).await {
            locked?;
        } else {
            // A node starting now would otherwise wait without a word.
            tracing::warn!(
                waited_s = LOCK_WAIT_TOLD_AFTER.as_secs(),
                "mirror load: waiting for the mirrored tables, which another \
                 transaction holds exclusively (a large import or a migration)"
            );
            locking.await?;
            tracing::info!("mirror load: the mirrored tables are free; loading");
        }
    }
    let current: String = sqlx::query_scalar(CURRENT_SNAPSHOT)
        .fetch_one(&mut *tx)
        .await?;
    let (xmin, seen_above) = parse_snapshot(&current)?;
    // In the load's own snapshot, before anything is read: a restore's
    // rows are all there once its post-data section has begun.
    super::complete::check(&mut tx).await?;
    let snapshot: String = sqlx::query_scalar("SELECT pg_export_snapshot()")
        .fetch_one(&mut *tx)
        .await?;
    let (phones_estimate, lines_estimate): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT reltuples::int8 FROM pg_class WHERE oid = 'phones'::regclass), \
                (SELECT reltuples::int8 FROM pg_class WHERE oid = 'lines'::regclass)",
    )
    .fetch_one(&mut *tx)
    .await?;
    let pool = pool.clone();
    // Aborted if this load fails or is dropped first: a detached loader
    // would hold a pooled connection and the whole lines table, and the
    // watcher retries a failed load every poll.
    let lines = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
        // A pool that other work holds (admin requests, the writers) would
        // otherwise fail the whole load after the acquire timeout, and a
        // node that reloads after a large import would keep its old data
        // until it found two connections free at once.
        let mut conn = match ClosedUnlessReleased::acquire(&pool).await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::debug!(error = %e, "mirror load: no second connection");
                return Ok(Err(LargeRead::NoConnection));
            }
        };
        match lines_beside(&mut conn, &snapshot, lines_estimate).await {
            // Its BEGIN failed: closed (dropped), not handed back as idle.
            Ok(Err(LargeRead::NoConnection)) => Ok(Err(LargeRead::NoConnection)),
            read => conn.settle(read).await,
        }
    }));
    let meta = Meta {
        timeline,
        ..sql::read_meta(&mut tx).await?
    };
    let mut loading = Loading {
        tenants: small(&mut tx, "tenants", rows::TENANT_COLUMNS, rows::tenant).await?,
        phones: PhoneRows::with_capacity(estimate(phones_estimate)),
        lines: LineRows::with_capacity(0),
        templates: small(&mut tx, "templates", rows::TEMPLATE_COLUMNS, rows::template).await?,
        directory_entries: small(
            &mut tx,
            "directory_entries",
            rows::DIRECTORY_ENTRY_COLUMNS,
            rows::directory_entry,
        )
        .await?,
        directory_sources: small(
            &mut tx,
            "directory_sources",
            rows::DIRECTORY_SOURCE_COLUMNS,
            rows::directory_source,
        )
        .await?,
        api_tokens: small(
            &mut tx,
            "api_tokens",
            rows::API_TOKEN_COLUMNS,
            rows::api_token,
        )
        .await?,
        seen_above: Some(std::sync::Arc::new(seen_above)),
    };
    let mut interner = Interner::default();
    let phones = &mut loading.phones;
    copy(&mut tx, "phones", PHONE_COLUMNS, |t| {
        phones.push(phone(t, &mut interner)?);
        Ok(())
    })
    .await?;
    let lines = lines
        .await
        .map_err(|e| SyncError::Invalid(format!("line loader failed: {e}")))??;
    loading.lines = match lines {
        Ok(rows) => {
            LargeRead::TwoConnections.count("mirror_load");
            rows
        }
        Err(why) => {
            why.count("mirror_load");
            tracing::info!(
                "mirror load: reading lines after phones, on one connection ({})",
                match why {
                    LargeRead::LockQueued => "another transaction waits to lock lines exclusively",
                    _ => "no second connection from the pool",
                }
            );
            read_lines(&mut tx, lines_estimate).await?
        }
    };
    tx.commit().await?;
    Ok((loading, Cursor { txid: xmin, seq: 0 }, meta))
}

/// Lines, read in the exported `snapshot` on a second connection, or why
/// they are not.
async fn lines_beside(
    conn: &mut ClosedUnlessReleased,
    snapshot: &str,
    lines_estimate: i64,
) -> Result<Result<LineRows, LargeRead>, SyncError> {
    let mut tx = match conn.begin().await {
        Ok(tx) => tx,
        Err(e) => {
            tracing::debug!(error = %e, "mirror load: no second connection");
            return Ok(Err(LargeRead::NoConnection));
        }
    };
    sqlx::query(READ_SNAPSHOT).execute(&mut *tx).await?;
    let set = format!("SET TRANSACTION SNAPSHOT '{}'", snapshot.replace('\'', ""));
    sqlx::query(&set).execute(&mut *tx).await?;
    if !second_reader_locks(&mut tx, "lines").await? {
        tx.rollback().await?;
        return Ok(Err(LargeRead::LockQueued));
    }
    let rows = read_lines(&mut tx, lines_estimate).await?;
    tx.commit().await?;
    Ok(Ok(rows))
}

/// Locks `tables` for a connection that reads beside one already holding
/// their locks, or says it cannot at once (`false`). Queued, its request
/// would wait behind any exclusive one made since (a migration's `ALTER
/// TABLE`), which itself waits for the first connection, which waits for
/// this one's rows: a cycle through the client that PostgreSQL's deadlock
/// check cannot see, and every later query on the table queued behind it.
/// `NOWAIT` fails instead, and the first connection reads alone: its own
/// locks let it pass the waiting request.
pub(super) async fn second_reader_locks(
    conn: &mut PgConnection,
    tables: &str,
) -> Result<bool, SyncError> {
    let lock = format!("LOCK TABLE {tables} IN ACCESS SHARE MODE NOWAIT");
    match sqlx::query(&lock).execute(&mut *conn).await {
        Ok(_) => Ok(true),
        Err(e) if super::lock_not_available(&e) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

async fn read_lines(conn: &mut PgConnection, lines_estimate: i64) -> Result<LineRows, SyncError> {
    let mut rows = LineRows::with_capacity(estimate(lines_estimate));
    let mut interner = Interner::default();
    copy(conn, "lines", LINE_COLUMNS, |t| {
        rows.push(line(t, &mut interner)?);
        Ok(())
    })
    .await?;
    Ok(rows)
}

/// The planner's row count: -1 for a table never analyzed, and only ever
/// used to size maps (a wrong one costs a rehash or is given back).
fn estimate(reltuples: i64) -> usize {
    usize::try_from(reltuples).unwrap_or(0)
}

async fn small<T>(
    conn: &mut PgConnection,
    table: &str,
    columns: &str,
    decode: fn(&PgRow, &mut Interner) -> Result<T, SyncError>,
) -> Result<Vec<T>, SyncError> {
    use futures::TryStreamExt;
    let sql = format!("SELECT {columns} FROM {table}");
    // Decoded as they arrive: directory entries are up to 200,000 a
    // tenant, and held all at once the driver's rows doubled the load's
    // peak beside the state it replaces.
    let mut found = sqlx::query(&sql).fetch(&mut *conn);
    let mut interner = Interner::default();
    let mut rows = Vec::new();
    while let Some(row) = found.try_next().await? {
        rows.push(decode(&row, &mut interner)?);
    }
    Ok(rows)
}

/// The statement that streams `columns` of every row of `table`. The
/// table form, not `COPY (SELECT …)`: it scans the heap without the
/// executor's plan and projection, and PostgreSQL's own `COPY` of
/// 1,000,000 phones to `/dev/null` took 0.49–0.72 s against 0.62–0.80 s
/// (lines: 0.70–1.05 s against 0.77–0.96 s). The mirrored tables are
/// plain tables (the migrations make them), which the table form needs.
pub(super) fn copy_out(table: &str, columns: &str) -> String {
    format!("COPY {table} ({columns}) TO STDOUT (FORMAT binary)")
}

/// Every row of `table` through binary COPY, decoded by `each` (also the
/// bulk import's read of what it compares with, `bulk.rs`).
pub(super) async fn copy(
    conn: &mut PgConnection,
    table: &str,
    columns: &str,
    mut each: impl FnMut(&Tuple<'_>) -> Result<(), SyncError>,
) -> Result<(), SyncError> {
    let statement = copy_out(table, columns);
    let fields = columns.split(',').count();
    let mut decoder = CopyDecoder::default();
    let mut stream = conn.copy_out_raw(&statement).await?;
    while let Some(chunk) = stream.try_next().await? {
        decoder.feed(&chunk, |t| {
            if t.len() != fields {
                return Err(SyncError::Invalid(format!(
                    "{table}: COPY sent {} fields for {fields} columns",
                    t.len()
                )));
            }
            each(t)
        })?;
    }
    drop(stream);
    decoder.finish()?;
    Ok(())
}
