//! PostgreSQL's re-key (`store/rekey.rs`): the sealed columns read with
//! binary COPY, re-sealed, staged with binary COPY into a temporary table
//! and written with one `UPDATE … FROM` a column.

use std::time::Duration;

use sqlx::PgConnection;

use super::bulk::Stager;
use super::closing::ClosedUnlessReleased;
use super::commit::{self, Lost};
use super::{latest_known, load, lock_not_available, sql, PgStore};
use crate::crypto::{Sealed, SecretKey};
use crate::error::SyncError;
use crate::model::Id;
use crate::store::bulk::Cell;
use crate::store::rekey::{self, RekeyReport, SealedColumn, Unopened, STAGED};
use crate::store::Audit;

/// Writers of the three tables wait until the run commits (readers do
/// not: nodes go on serving and loading), so no value sealed with the old
/// key is written between the read and the commit. `SHARE ROW EXCLUSIVE`
/// also excludes a second run, which then finds the new key's check value
/// and is refused. A transaction that already writes one of the tables
/// and then another (an import naming sources before phones) can deadlock
/// with the run; PostgreSQL then aborts one of them, and an aborted run
/// has written nothing.
///
/// A writer queued behind this lock goes on once the run commits and is
/// refused at its end (`confirm_key_unchanged`, which reads the check
/// value `FOR SHARE`). That read adds no deadlock: a writer takes it last,
/// waiting for nothing after it but its commit, and the run updates the
/// check value only once it holds these locks, waiting for nothing after
/// that but its audit row (an insert no writer blocks) and its commit.
const LOCK: &str = "LOCK TABLE phones, lines, directory_sources IN SHARE ROW EXCLUSIVE MODE";

/// Tries at [`LOCK`], each waiting at most the store's lock wait
/// (`database.migration_lock_wait_ms`), and the pause between them. A
/// queued lock request makes every later writer of the tables queue
/// behind it, so a run stuck behind a session idle in its transaction, or
/// a long import, would stop every admin write for as long: it steps back
/// instead, and gives up after the last try (the caller says why).
const LOCK_TRIES: u32 = 4;
const LOCK_PAUSE: Duration = Duration::from_secs(1);

pub(super) async fn run(
    store: &PgStore,
    new_key: &SecretKey,
    audit: &Audit,
) -> Result<RekeyReport, SyncError> {
    rekey::refuse_same_key(&store.key, new_key)?;
    rekey::check_audit(audit)?;
    let mut conn = ClosedUnlessReleased::acquire(&store.pool).await?;
    let mut attempt = 1;
    let written = loop {
        match reseal_locked(&mut conn, store, new_key, audit).await {
            Err(Locking::TimedOut(_)) if attempt < LOCK_TRIES => {
                tracing::warn!(
                    attempt,
                    wait_ms = store.migration_locks.wait.as_millis() as u64,
                    "rekey: phones, lines or directory_sources is held by another transaction; \
                     stepped back so that writes are not held up, trying again"
                );
                attempt += 1;
                tokio::time::sleep(LOCK_PAUSE).await;
            }
            Err(Locking::TimedOut(e)) | Err(Locking::Failed(e)) => break Err(e),
            Ok(done) => break Ok(done),
        }
    };
    commit::finish(&store.pool, conn, written).await
}

/// Why a try of the run ended without a report.
enum Locking {
    /// [`LOCK`] waited past the lock wait; the try rolled back.
    TimedOut(SyncError),
    Failed(SyncError),
}

impl From<SyncError> for Locking {
    fn from(e: SyncError) -> Self {
        Locking::Failed(e)
    }
}

impl From<sqlx::Error> for Locking {
    fn from(e: sqlx::Error) -> Self {
        Locking::Failed(e.into())
    }
}

/// One try: the tables locked, every value re-sealed, the check value
/// moved and the commit sent.
async fn reseal_locked(
    conn: &mut ClosedUnlessReleased,
    store: &PgStore,
    new_key: &SecretKey,
    audit: &Audit,
) -> Result<(RekeyReport, Option<Lost>), Locking> {
    let mut tx = conn.begin().await?;
    // Local to the transaction, and put back once the tables are locked:
    // the run's own updates may wait on a row a writer holds, which
    // commits without waiting on the run.
    let wait_ms = store.migration_locks.wait.as_millis().max(1);
    sqlx::query(&format!("SET LOCAL lock_timeout = {wait_ms}"))
        .execute(&mut *tx)
        .await?;
    match sqlx::query(LOCK).execute(&mut *tx).await {
        Ok(_) => {}
        Err(e) if lock_not_available(&e) => {
            tx.rollback().await?;
            return Err(Locking::TimedOut(e.into()));
        }
        Err(e) => return Err(e.into()),
    }
    sqlx::query("SET LOCAL lock_timeout = DEFAULT")
        .execute(&mut *tx)
        .await?;
    sql::check_schema(&mut tx, latest_known()).await?;
    sql::check_key(&mut tx, &store.key, true).await?;
    let mut resealed = Vec::new();
    let mut unopened = Unopened::default();
    for column in SealedColumn::ALL {
        let stored = read(&mut tx, column).await?;
        let done =
            crate::blocking::blocking_here(|| rekey::reseal(&store.key, new_key, column, &stored));
        match done {
            Ok(values) => resealed.push((column, values)),
            Err(ids) => unopened.add(column, ids),
        }
    }
    if !unopened.is_empty() {
        let mut named = Vec::new();
        for (column, id) in unopened.to_name() {
            let name = sqlx::query_scalar(column.naming_sql())
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
            named.push(rekey::named_or_id(column, id, name));
        }
        return Err(unopened.refusal(&named).into());
    }
    let mut report = RekeyReport::default();
    for (column, values) in &resealed {
        write(&mut tx, *column, values).await?;
        report.add(*column, values.len());
    }
    sql::finish_rekey(&mut tx, new_key, audit, &report).await?;
    let lost = commit::send(tx).await?;
    Ok((report, lost))
}

/// Every non-empty value of the column, by row id.
async fn read(
    conn: &mut PgConnection,
    column: SealedColumn,
) -> Result<Vec<(Id, Sealed)>, SyncError> {
    let table = column.table();
    let bad = |what: &str| SyncError::Invalid(format!("{table}.{}: {what}", column.column()));
    let mut values = Vec::new();
    load::copy(conn, table, &format!("id, {}", column.column()), |tuple| {
        let id = tuple.int8(0).map_err(bad)?;
        if let Some(sealed) = tuple.opt_text(1).map_err(bad)? {
            if !sealed.is_empty() {
                values.push((id, Sealed(sealed.into())));
            }
        }
        Ok(())
    })
    .await?;
    Ok(values)
}

/// The re-sealed values staged by binary COPY, then written in one
/// statement. The staged table is analyzed first: without statistics
/// PostgreSQL guesses a few rows and probes the table's index once per
/// staged row, where a million rows are joined faster by hash.
async fn write(
    conn: &mut PgConnection,
    column: SealedColumn,
    values: &[(Id, Sealed)],
) -> Result<(), SyncError> {
    if values.is_empty() {
        return Ok(());
    }
    for ddl in [
        format!("DROP TABLE IF EXISTS pg_temp.{STAGED}"),
        format!(
            "CREATE TEMP TABLE {STAGED} (id BIGINT NOT NULL, sealed TEXT NOT NULL) ON COMMIT DROP"
        ),
    ] {
        sqlx::query(&ddl).execute(&mut *conn).await?;
    }
    let mut stager = Stager::open(conn, STAGED, &["id", "sealed"], false).await?;
    for (id, sealed) in values {
        stager.row(&[Cell::Int(*id), Cell::text(&sealed.0)]).await?;
    }
    stager.finish().await?;
    sqlx::query(&format!("ANALYZE {STAGED}"))
        .execute(&mut *conn)
        .await?;
    sqlx::query(&column.update_from_staged_sql())
        .execute(&mut *conn)
        .await?;
    Ok(())
}
