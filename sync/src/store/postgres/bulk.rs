//! PostgreSQL's part of bulk imports (`store/bulk.rs`): the lock, ids,
//! COPY into staging and target tables, and the quiet change log. The
//! read of what is stored is `bulk_read.rs`.

use sqlx::PgConnection;

use super::{sql, NOTIFY_CHANNEL};
use crate::error::SyncError;
use crate::model::Id;

use crate::store::bulk::Cell;

/// Other writers of the imported tables wait until the import commits
/// (readers do not), so what the import compared against stays exact.
pub(super) async fn lock_for_import(conn: &mut PgConnection) -> Result<(), SyncError> {
    sqlx::query("LOCK TABLE phones, lines IN SHARE ROW EXCLUSIVE MODE")
        .execute(&mut *conn)
        .await?;
    for ddl in [
        "DROP TABLE IF EXISTS pg_temp.import_phones",
        "DROP TABLE IF EXISTS pg_temp.import_lines",
        "CREATE TEMP TABLE import_phones (id BIGINT NOT NULL, mac TEXT NOT NULL, tenant_id BIGINT NOT NULL, \
         family TEXT NOT NULL, model TEXT, label TEXT, variables TEXT NOT NULL, http_user TEXT, http_password TEXT, \
         updated_at BIGINT NOT NULL) ON COMMIT DROP",
        "CREATE TEMP TABLE import_lines (id BIGINT NOT NULL, phone_id BIGINT NOT NULL, position INTEGER NOT NULL, \
         extension TEXT NOT NULL, display_name TEXT NOT NULL, auth_user TEXT NOT NULL, password TEXT, \
         registrar TEXT NOT NULL, proxy TEXT, settings TEXT NOT NULL, updated_at BIGINT NOT NULL) ON COMMIT DROP",
    ] {
        sqlx::query(ddl).execute(&mut *conn).await?;
    }
    Ok(())
}

/// `n` ids of `table` (phones, lines) for rows inserted with their ids;
/// returns the first. Nobody else inserts into the table until the import
/// commits (`lock_for_import`), so the range is ours.
pub(super) async fn reserve_ids(
    conn: &mut PgConnection,
    table: &'static str,
    n: i64,
) -> Result<Id, SyncError> {
    if n == 0 {
        return Ok(0);
    }
    let first: Id = sqlx::query_scalar("SELECT nextval(pg_get_serial_sequence($1, 'id'))")
        .bind(table)
        .fetch_one(&mut *conn)
        .await?;
    if n > 1 {
        sqlx::query("SELECT setval(pg_get_serial_sequence($1, 'id'), $2)")
            .bind(table)
            .bind(first + n - 1)
            .execute(&mut *conn)
            .await?;
    }
    Ok(first)
}

/// With `few` staged rows against their tables, joins by index only, for
/// the rest of the transaction or until called again without. PostgreSQL
/// has no statistics of a temporary table and picked a hash or merge join,
/// a pass over the whole table or its index: 10,000 lines of 1,000,000 took
/// 200-260 ms to join that way and 23 ms by probing the id index per row.
pub(super) async fn probe_joins(conn: &mut PgConnection, few: bool) -> Result<(), SyncError> {
    for setting in ["enable_hashjoin", "enable_mergejoin"] {
        join_method(conn, setting, !few).await?;
    }
    Ok(())
}

/// Turns a join method (`enable_hashjoin`, ...) off for the rest of the
/// transaction, or back to the server's setting.
async fn join_method(
    conn: &mut PgConnection,
    setting: &'static str,
    allowed: bool,
) -> Result<(), SyncError> {
    let value = if allowed { "DEFAULT" } else { "off" };
    sqlx::query(&format!("SET LOCAL {setting} TO {value}"))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Staged rows leave with the transaction (`ON COMMIT DROP`).
pub(super) async fn drop_staging(_conn: &mut PgConnection) -> Result<(), SyncError> {
    Ok(())
}

/// Rows into a staging or target table through one binary COPY, sent in
/// 1 MiB pieces. Binary, not text: PostgreSQL takes integers as they are
/// and text without looking for escapes, and so does the import. A million
/// lines went in in 0.97-1.0 s against 1.16 s as text, a million phones in
/// 0.77-0.81 s against 0.89 s (the server's own `COPY` of the same rows,
/// varied data); on a first import the server sets the pace.
pub(super) struct Stager<'c> {
    copy: sqlx::postgres::PgCopyIn<&'c mut PgConnection>,
    buf: Vec<u8>,
}

const COPY_PIECE: usize = 1 << 20;

/// The binary format's signature, flags (none) and header extension (none).
const BINARY_HEADER: &[u8; 19] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// A field count of -1 ends the data.
const BINARY_TRAILER: [u8; 2] = (-1i16).to_be_bytes();

impl<'c> Stager<'c> {
    pub(super) async fn open(
        conn: &'c mut PgConnection,
        table: &'static str,
        columns: &'static [&'static str],
    ) -> Result<Self, SyncError> {
        let statement = format!(
            "COPY {table} ({}) FROM STDIN (FORMAT binary)",
            columns.join(", ")
        );
        let mut buf = Vec::with_capacity(COPY_PIECE + 4096);
        buf.extend_from_slice(BINARY_HEADER);
        Ok(Stager {
            copy: conn.copy_in_raw(&statement).await?,
            buf,
        })
    }

    pub(super) async fn row(&mut self, cells: &[Cell<'_>]) -> Result<(), SyncError> {
        encode_row(cells, &mut self.buf)?;
        if self.buf.len() >= COPY_PIECE {
            let piece = std::mem::replace(&mut self.buf, Vec::with_capacity(COPY_PIECE + 4096));
            self.copy.send(piece).await?;
        }
        Ok(())
    }

    pub(super) async fn finish(mut self) -> Result<(), SyncError> {
        self.buf.extend_from_slice(&BINARY_TRAILER);
        self.copy.send(std::mem::take(&mut self.buf)).await?;
        self.copy.finish().await?;
        Ok(())
    }
}

/// One row of binary COPY: the field count, then each field's length (-1
/// for NULL) and bytes, big-endian, as the column's type takes it.
/// A row or cell past what the format can say is refused, never a panic.
fn encode_row(cells: &[Cell<'_>], out: &mut Vec<u8>) -> Result<(), SyncError> {
    let count = i16::try_from(cells.len())
        .map_err(|_| SyncError::Invalid(format!("a row of {} columns", cells.len())))?;
    out.extend_from_slice(&count.to_be_bytes());
    let field = |out: &mut Vec<u8>, bytes: &[u8]| {
        let len = i32::try_from(bytes.len())
            .map_err(|_| SyncError::Invalid(format!("a text field of {} bytes", bytes.len())))?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(bytes);
        Ok::<(), SyncError>(())
    };
    for cell in cells {
        match cell {
            Cell::Null => out.extend_from_slice(&(-1i32).to_be_bytes()),
            Cell::Text(text) => field(out, text.as_bytes())?,
            Cell::Int(n) => field(out, &n.to_be_bytes())?,
            Cell::Int32(n) => field(out, &n.to_be_bytes())?,
            Cell::Mac(mac) => field(out, &mac.hex())?,
        }
    }
    Ok(())
}

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
/// bare ones 1.65 s and then the five indexes 1.37 s.
pub(super) async fn quiet_change_log(
    conn: &mut PgConnection,
    empty: bool,
) -> Result<bool, SyncError> {
    let owner: bool = sqlx::query_scalar(
        "SELECT bool_and(pg_has_role(current_user, relowner, 'USAGE')) FROM pg_class \
         WHERE oid IN ('phones'::regclass, 'lines'::regclass)",
    )
    .fetch_one(&mut *conn)
    .await?;
    if !owner || !lock_exclusively(conn).await? {
        return Ok(false);
    }
    for ddl in [
        "ALTER TABLE phones DISABLE TRIGGER phones_log_insert",
        "ALTER TABLE phones DISABLE TRIGGER phones_log_update",
        "ALTER TABLE phones DISABLE TRIGGER phones_log_delete",
        "ALTER TABLE lines DISABLE TRIGGER lines_log_insert",
        "ALTER TABLE lines DISABLE TRIGGER lines_log_update",
        "ALTER TABLE lines DISABLE TRIGGER lines_log_delete",
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
    if empty {
        drop_indexes(conn).await?;
    }
    Ok(true)
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
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some(LOCK_NOT_AVAILABLE) => {
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

/// SQLSTATE of a lock not granted at once under `NOWAIT`.
const LOCK_NOT_AVAILABLE: &str = "55P03";

/// Saves the definitions of the two tables' indexes (those behind primary
/// key and unique constraints as the constraints) and drops them; read
/// from the catalog, so they cannot drift from the migrations.
async fn drop_indexes(conn: &mut PgConnection) -> Result<(), SyncError> {
    // A key another table's foreign key depends on cannot be dropped.
    let referenced: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT FROM pg_constraint WHERE contype = 'f' \
         AND confrelid IN ('phones'::regclass, 'lines'::regclass) \
         AND conrelid NOT IN ('phones'::regclass, 'lines'::regclass))",
    )
    .fetch_one(&mut *conn)
    .await?;
    if referenced {
        return Ok(());
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
    Ok(())
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

pub(super) async fn loud_change_log(conn: &mut PgConnection) -> Result<(), SyncError> {
    for ddl in [
        "ALTER TABLE phones ENABLE TRIGGER phones_log_insert",
        "ALTER TABLE phones ENABLE TRIGGER phones_log_update",
        "ALTER TABLE phones ENABLE TRIGGER phones_log_delete",
        "ALTER TABLE lines ENABLE TRIGGER lines_log_insert",
        "ALTER TABLE lines ENABLE TRIGGER lines_log_update",
        "ALTER TABLE lines ENABLE TRIGGER lines_log_delete",
    ] {
        sqlx::query(ddl).execute(&mut *conn).await?;
    }
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

#[cfg(test)]
mod tests {
    use super::{encode_row, BINARY_HEADER, BINARY_TRAILER};
    use crate::store::bulk::Cell;

    /// The bytes PostgreSQL's binary COPY reads: a count, then each field
    /// at its type's width, NULL as length -1; text as it is, escapes and
    /// all.
    #[test]
    fn binary_rows_carry_each_cell_at_its_width() {
        let mac = "00156512abef".parse().unwrap();
        let cells = [
            Cell::Int(-2),
            Cell::Int32(3),
            Cell::Null,
            Cell::text("a\\b\tc\nnaïve"),
            Cell::Mac(mac),
        ];
        let mut out = Vec::new();
        encode_row(&cells, &mut out).unwrap();
        let mut want = vec![0, 5];
        want.extend_from_slice(&[0, 0, 0, 8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe]);
        want.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 3]);
        want.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        want.extend_from_slice(&[0, 0, 0, 12]);
        want.extend_from_slice("a\\b\tc\nnaïve".as_bytes());
        want.extend_from_slice(&[0, 0, 0, 12]);
        want.extend_from_slice(b"00156512abef");
        assert_eq!(out, want);
        assert_eq!(&BINARY_HEADER[..11], b"PGCOPY\n\xff\r\n\0");
        assert_eq!(BINARY_TRAILER, [0xff, 0xff]);
    }
}
