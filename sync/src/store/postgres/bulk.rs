//! PostgreSQL's part of bulk imports (`store/bulk.rs`): the lock, ids,
//! and COPY into staging and target tables. The read of what is stored is
//! `bulk_read.rs`; the quiet change log, `bulk_quiet.rs`.

use sqlx::PgConnection;

use crate::error::SyncError;
use crate::model::Id;

use crate::store::bulk::directory::DIRECTORY_STAGE_COLUMNS;
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
         updated_at BIGINT NOT NULL, kept BIGINT NOT NULL) ON COMMIT DROP",
        "CREATE TEMP TABLE import_lines (id BIGINT NOT NULL, phone_id BIGINT NOT NULL, position INTEGER NOT NULL, \
         extension TEXT NOT NULL, display_name TEXT NOT NULL, auth_user TEXT NOT NULL, password TEXT, \
         registrar TEXT NOT NULL, proxy TEXT, settings TEXT NOT NULL, updated_at BIGINT NOT NULL, kept BIGINT NOT NULL) ON COMMIT DROP",
    ] {
        sqlx::query(ddl).execute(&mut *conn).await?;
    }
    Ok(())
}

/// The directory entries' staging table, empty: dropped at commit, and
/// dropped here first for a second run in the same transaction.
pub(super) async fn stage_directory(conn: &mut PgConnection) -> Result<(), SyncError> {
    sqlx::query("DROP TABLE IF EXISTS pg_temp.import_directory")
        .execute(&mut *conn)
        .await?;
    sqlx::query(&format!(
        "CREATE TEMP TABLE import_directory {DIRECTORY_STAGE_COLUMNS} ON COMMIT DROP"
    ))
    .execute(&mut *conn)
    .await?;
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
pub(super) async fn join_method(
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
        frozen: bool,
    ) -> Result<Self, SyncError> {
        // `FREEZE` only into a table emptied anew in this transaction
        // (`ChangeLog::QuietOverFreshTables`); PostgreSQL refuses it
        // elsewhere.
        let statement = format!(
            "COPY {table} ({}) FROM STDIN (FORMAT binary{})",
            columns.join(", "),
            if frozen { ", FREEZE" } else { "" }
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
