//! A large import's quiet change log on PostgreSQL (`store/bulk.rs` decides
//! when): the locks, triggers off, keys and indexes dropped, and all of it
//! put back with an epoch bump before the commit.

use sqlx::PgConnection;

use super::bulk::join_method;
use super::complete::change_log_triggers;
use super::{sql, NOTIFY_CHANNEL};
use crate::error::SyncError;
use crate::store::bulk::ChangeLog;

/// For an import that changes more rows than a watcher would fetch one by
/// one: the phones' and lines' change-log triggers are off for this
/// transaction (DDL, so it commits or rolls back with it), and
/// [`loud_change_log`] bumps the epoch so every node reloads. Only the
/// tables' owner may; anyone else logs every row.
///
/// Their foreign keys are dropped too and [`loud_change_log`] adds them
/// back, from the definitions saved here: one set-based check of every row
/// instead of a trigger query per row inserted, which took half of a
/// first import's time. The drop locks readers of the two tables and of
/// tenants out until the commit, which a change this large makes every
/// node reload anyway; [`lock_exclusively`] takes those locks first, so
/// that the import cannot deadlock with an edit.
///
/// When both tables were empty (`empty`, a first import), their indexes
/// and key constraints go too and are built again after the load, by sort
/// instead of a row at a time: on the server alone, `COPY` of 1,000,000
/// phones and 1,000,000 lines into the indexed tables took 4.6 s, into
/// bare ones 1.65 s and then the five indexes 1.37 s. Then both tables
/// are also emptied anew ([`truncate_if_empty`]) so the load can write
/// its rows frozen.
pub(super) async fn quiet_change_log(
    conn: &mut PgConnection,
    empty: bool,
) -> Result<ChangeLog, SyncError> {
    let owner: bool = sqlx::query_scalar(
        "SELECT bool_and(pg_has_role(current_user, relowner, 'USAGE')) FROM pg_class \
         WHERE oid IN ('phones'::regclass, 'lines'::regclass)",
    )
    .fetch_one(&mut *conn)
    .await?;
    if !owner || !lock_exclusively(conn).await? {
        return Ok(ChangeLog::PerRow);
    }
    switch_triggers(conn, "DISABLE").await?;
    for ddl in [
        "DROP TABLE IF EXISTS pg_temp.import_foreign_keys",
        "CREATE TEMP TABLE import_foreign_keys ON COMMIT DROP AS \
         SELECT conrelid::regclass::text AS tab, conname AS name, \
         confrelid IN ('phones'::regclass, 'lines'::regclass) AS within, \
         format('ALTER TABLE %s ADD CONSTRAINT %I %s', conrelid::regclass, conname, pg_get_constraintdef(oid)) AS ddl \
         FROM pg_constraint WHERE contype = 'f' AND conrelid IN ('phones'::regclass, 'lines'::regclass)",
    ] {
        sqlx::query(ddl).execute(&mut *conn).await?;
    }
    let keys: Vec<(String, String)> =
        sqlx::query_as("SELECT tab, name FROM import_foreign_keys ORDER BY tab, name")
            .fetch_all(&mut *conn)
            .await?;
    for (table, name) in keys {
        sqlx::query(&format!(
            "ALTER TABLE {table} DROP CONSTRAINT {}",
            quote_ident(&name)
        ))
        .execute(&mut *conn)
        .await?;
    }
    if empty && drop_indexes(conn).await? && truncate_if_empty(conn).await? {
        return Ok(ChangeLog::QuietOverFreshTables);
    }
    Ok(ChangeLog::Quiet)
}

/// Empties phones and lines anew (`TRUNCATE`: new, empty files) when they
/// hold no row, so the first import's `COPY` may write its rows frozen:
/// visible to every transaction and marked all-visible as they are
/// written. The key checks that follow then read both tables' indexes
/// alone instead of visiting every new row (the lines-to-phones check of
/// 1,000,000 lines took 0.23–0.28 s against 0.53–0.87 s), and a later
/// vacuum finds nothing to freeze.
///
/// Frozen rows ignore MVCC: a transaction whose snapshot predates the
/// commit sees them once it can read the tables (the `ACCESS EXCLUSIVE`
/// lock holds it off until then), where it would have seen the empty
/// tables. The full load (`load.rs`) locks its tables before it takes its
/// snapshot so that it never does; a catch-up fetches only rows of changes
/// logged before the import, whose ids the import's rows never take.
///
/// PostgreSQL refuses `FREEZE` once the transaction holds more than one
/// registered snapshot, and each snapshot exported for the second reader
/// (`bulk_read.rs`) is held to the end of the transaction; one apply may
/// hold several (runs apart, each read on two connections, their tables
/// emptied by a delete before the last). So any export marks
/// `dialtone.snapshot_exported`, and then the tables are not truncated.
/// The reader exports nothing for empty tables, so a first import is not
/// marked.
async fn truncate_if_empty(conn: &mut PgConnection) -> Result<bool, SyncError> {
    let fresh: bool = sqlx::query_scalar(
        "SELECT NOT EXISTS (SELECT FROM phones) AND NOT EXISTS (SELECT FROM lines) \
         AND current_setting('dialtone.snapshot_exported', true) IS DISTINCT FROM 'on'",
    )
    .fetch_one(&mut *conn)
    .await?;
    if fresh {
        sqlx::query("TRUNCATE phones, lines")
            .execute(&mut *conn)
            .await?;
    }
    Ok(fresh)
}

/// Takes the locks the quiet path's DDL needs (`ACCESS EXCLUSIVE` on
/// phones, lines and the tables their foreign keys reference) at once, or
/// answers false and leaves the transaction as it was.
///
/// Never by waiting in the lock queue. The import already holds `SHARE ROW
/// EXCLUSIVE` on phones and lines, so an edit that read them and then
/// writes waits on the import; had the import queued for these locks
/// behind that edit's read, PostgreSQL would abort one of the two as a
/// deadlock, and an edit arriving while the import queued would be
/// aborted at once (its read blocks the queued import). So each try is
/// `NOWAIT`, in a savepoint, and a busy table is tried again shortly: a
/// watching node's reads last milliseconds. Tables still busy after
/// [`QUIET_LOCK_TRIES`] (an edit waiting on the import, or a long read)
/// make the import log every row instead.
async fn lock_exclusively(conn: &mut PgConnection) -> Result<bool, SyncError> {
    let lock: String = sqlx::query_scalar(
        "SELECT 'LOCK TABLE ' || string_agg(DISTINCT t::regclass::text, ', ') \
         || ' IN ACCESS EXCLUSIVE MODE NOWAIT' FROM ( \
         SELECT unnest(ARRAY['phones'::regclass, 'lines'::regclass]) AS t UNION \
         SELECT confrelid FROM pg_constraint WHERE contype = 'f' \
         AND conrelid IN ('phones'::regclass, 'lines'::regclass)) tables",
    )
    .fetch_one(&mut *conn)
    .await?;
    for attempt in 1..=QUIET_LOCK_TRIES {
        sqlx::query("SAVEPOINT import_quiet_locks")
            .execute(&mut *conn)
            .await?;
        match sqlx::query(&lock).execute(&mut *conn).await {
            Ok(_) => {
                release_savepoint(conn).await?;
                return Ok(true);
            }
            Err(e) if super::lock_not_available(&e) => {
                // Releases whatever part of the list was locked.
                sqlx::query("ROLLBACK TO SAVEPOINT import_quiet_locks")
                    .execute(&mut *conn)
                    .await?;
                release_savepoint(conn).await?;
                if attempt < QUIET_LOCK_TRIES {
                    tokio::time::sleep(QUIET_LOCK_PAUSE).await;
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    tracing::info!(
        tries = QUIET_LOCK_TRIES,
        "bulk import: phones or lines stayed in use; logging every row"
    );
    Ok(false)
}

async fn release_savepoint(conn: &mut PgConnection) -> Result<(), SyncError> {
    sqlx::query("RELEASE SAVEPOINT import_quiet_locks")
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// How often, and how far apart, [`lock_exclusively`] tries: about a
/// second in all, against the seconds a change log row per row would cost
/// an import this large.
const QUIET_LOCK_TRIES: u32 = 40;
const QUIET_LOCK_PAUSE: std::time::Duration = std::time::Duration::from_millis(25);

/// Saves the definitions of the two tables' indexes (those behind primary
/// key and unique constraints as the constraints) and drops them; read
/// from the catalog, so they cannot drift from the migrations. False when
/// another table's key depends on them, and then nothing is dropped.
async fn drop_indexes(conn: &mut PgConnection) -> Result<bool, SyncError> {
    // A key another table's foreign key depends on cannot be dropped.
    let referenced: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT FROM pg_constraint WHERE contype = 'f' \
         AND confrelid IN ('phones'::regclass, 'lines'::regclass) \
         AND conrelid NOT IN ('phones'::regclass, 'lines'::regclass))",
    )
    .fetch_one(&mut *conn)
    .await?;
    if referenced {
        return Ok(false);
    }
    for ddl in [
        "DROP TABLE IF EXISTS pg_temp.import_indexes",
        "CREATE TEMP TABLE import_indexes ON COMMIT DROP AS \
         SELECT i.indrelid::regclass::text AS tab, i.indexrelid::regclass::text AS index_name, \
         c.conname AS constraint_name, COALESCE(c.contype = 'p', false) AS primary_key, \
         CASE WHEN c.oid IS NULL THEN pg_get_indexdef(i.indexrelid) \
         ELSE format('ALTER TABLE %s ADD CONSTRAINT %I %s', i.indrelid::regclass, c.conname, pg_get_constraintdef(c.oid)) \
         END AS ddl \
         FROM pg_index i LEFT JOIN pg_constraint c \
         ON c.conindid = i.indexrelid AND c.conrelid = i.indrelid AND c.contype IN ('p', 'u') \
         WHERE i.indrelid IN ('phones'::regclass, 'lines'::regclass)",
    ] {
        sqlx::query(ddl).execute(&mut *conn).await?;
    }
    let indexes: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT tab, index_name, constraint_name FROM import_indexes ORDER BY tab, index_name",
    )
    .fetch_all(&mut *conn)
    .await?;
    for (table, index, constraint) in indexes {
        let ddl = match constraint {
            Some(name) => format!("ALTER TABLE {table} DROP CONSTRAINT {}", quote_ident(&name)),
            None => format!("DROP INDEX {index}"),
        };
        sqlx::query(&ddl).execute(&mut *conn).await?;
    }
    Ok(true)
}

/// Builds again what [`drop_indexes`] dropped in this transaction, primary
/// keys first (the foreign keys added after need them).
async fn rebuild_indexes(conn: &mut PgConnection) -> Result<(), SyncError> {
    let dropped: bool =
        sqlx::query_scalar("SELECT to_regclass('pg_temp.import_indexes') IS NOT NULL")
            .fetch_one(&mut *conn)
            .await?;
    if !dropped {
        return Ok(());
    }
    let ddls: Vec<String> = sqlx::query_scalar(
        "SELECT ddl FROM import_indexes ORDER BY primary_key DESC, tab, index_name",
    )
    .fetch_all(&mut *conn)
    .await?;
    for ddl in ddls {
        sqlx::query(&ddl).execute(&mut *conn).await?;
    }
    Ok(())
}

/// A constraint name as an SQL identifier.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `ENABLE`s or `DISABLE`s the phones' and lines' change-log triggers.
async fn switch_triggers(conn: &mut PgConnection, switch: &str) -> Result<(), SyncError> {
    for table in ["phones", "lines"] {
        for trigger in change_log_triggers(table) {
            sqlx::query(&format!("ALTER TABLE {table} {switch} TRIGGER {trigger}"))
                .execute(&mut *conn)
                .await?;
        }
    }
    Ok(())
}

pub(super) async fn loud_change_log(conn: &mut PgConnection) -> Result<(), SyncError> {
    switch_triggers(conn, "ENABLE").await?;
    rebuild_indexes(conn).await?;
    // A key between the two tables is checked by one join of both, each
    // just indexed by the joined column: merged along the indexes it took
    // 420 ms for 1,000,000 lines, hashed 670 ms. A key into a small table
    // (tenants) hashes best.
    let keys: Vec<(String, bool)> =
        sqlx::query_as("SELECT ddl, within FROM import_foreign_keys ORDER BY tab, name")
            .fetch_all(&mut *conn)
            .await?;
    for (ddl, within) in keys {
        if within {
            join_method(conn, "enable_hashjoin", false).await?;
        }
        sqlx::query(&ddl).execute(&mut *conn).await?;
        if within {
            join_method(conn, "enable_hashjoin", true).await?;
        }
    }
    sql::bump_epoch(conn).await?;
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(NOTIFY_CHANNEL)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
