//! SQLite's part of bulk imports (`store/bulk.rs`): the read of what is
//! stored, staging tables, ids and multi-row INSERTs.

use sqlx::SqliteConnection;

use super::load::each_row;
use crate::error::SyncError;
use crate::model::Id;

use crate::store::bulk::directory::DIRECTORY_STAGE_COLUMNS;
use crate::store::bulk::{
    taken, Cell, ChangeLog, Stored, StoredLine, StoredPhone, LINE_READ, PHONE_READ,
};

/// SQLite reads one table after the other, on the one connection.
pub(crate) struct SecondReader;

/// Every phone row, then every line row, offered to `each` as [`Stored`]
/// describes. Read through rusqlite on the transaction's own connection,
/// so it sees what the transaction has written before: through sqlx rows
/// (a row object and a copy of every value, sent from its worker thread)
/// the read of 1,000,000 phones and lines took 17.9 s of an 18.8 s
/// re-import (BENCHMARKS.md, round 30).
pub(super) async fn read_stored(
    conn: &mut SqliteConnection,
    _: &SecondReader,
    _phones_in_run: usize,
    mut each: impl FnMut(Stored<'_>) -> Result<bool, SyncError>,
) -> Result<(), SyncError> {
    super::borrowed::on_connection(conn, |conn| {
        read_phones(conn, |row| taken(each(Stored::Phone(row))?))?;
        each(Stored::PhonesRead)?;
        read_lines(conn, |row| taken(each(Stored::Line(row))?))
    })
    .await
}

/// The bytes of a text cell (NULL an error), as the comparison takes them.
fn bytes<'r>(row: &'r rusqlite::Row<'_>, i: usize) -> Result<&'r [u8], SyncError> {
    Ok(row
        .get_ref(i)?
        .as_str()
        .map_err(rusqlite::Error::from)?
        .as_bytes())
}

fn opt_bytes<'r>(row: &'r rusqlite::Row<'_>, i: usize) -> Result<Option<&'r [u8]>, SyncError> {
    Ok(row
        .get_ref(i)?
        .as_str_or_null()
        .map_err(rusqlite::Error::from)?
        .map(str::as_bytes))
}

/// Every phone row, its text borrowed from SQLite.
fn read_phones(
    conn: &rusqlite::Connection,
    mut each: impl FnMut(StoredPhone<'_>) -> Result<(), SyncError>,
) -> Result<(), SyncError> {
    each_row(conn, &format!("SELECT {PHONE_READ} FROM phones"), |r| {
        each(StoredPhone {
            id: r.get(0)?,
            mac: bytes(r, 1)?,
            tenant_id: r.get(2)?,
            family: bytes(r, 3)?,
            model: opt_bytes(r, 4)?,
            label: opt_bytes(r, 5)?,
            variables: bytes(r, 6)?,
            http_user: opt_bytes(r, 7)?,
            http_password: opt_bytes(r, 8)?,
        })
    })
}

/// Every line row, its text borrowed from SQLite.
fn read_lines(
    conn: &rusqlite::Connection,
    mut each: impl FnMut(StoredLine<'_>) -> Result<(), SyncError>,
) -> Result<(), SyncError> {
    each_row(conn, &format!("SELECT {LINE_READ} FROM lines"), |r| {
        each(StoredLine {
            id: r.get(0)?,
            phone_id: r.get(1)?,
            position: r.get(2)?,
            extension: bytes(r, 3)?,
            display_name: bytes(r, 4)?,
            auth_user: bytes(r, 5)?,
            password: opt_bytes(r, 6)?,
            registrar: bytes(r, 7)?,
            proxy: opt_bytes(r, 8)?,
            settings: bytes(r, 9)?,
        })
    })
}

/// The transaction began IMMEDIATE, so it already excludes other writers;
/// the staging tables are keyed for the joins that apply them.
pub(super) async fn lock_for_import(conn: &mut SqliteConnection) -> Result<(), SyncError> {
    drop_staging(conn).await?;
    for ddl in [
        "CREATE TEMP TABLE import_phones (id INTEGER PRIMARY KEY, mac TEXT NOT NULL, tenant_id INTEGER NOT NULL, \
         family TEXT NOT NULL, model TEXT, label TEXT, variables TEXT NOT NULL, http_user TEXT, http_password TEXT, \
         updated_at INTEGER NOT NULL, kept INTEGER NOT NULL)",
        "CREATE TEMP TABLE import_lines (id INTEGER PRIMARY KEY, phone_id INTEGER NOT NULL, position INTEGER NOT NULL, \
         extension TEXT NOT NULL, display_name TEXT NOT NULL, auth_user TEXT NOT NULL, password TEXT, \
         registrar TEXT NOT NULL, proxy TEXT, settings TEXT NOT NULL, updated_at INTEGER NOT NULL, kept INTEGER NOT NULL)",
    ] {
        sqlx::query(ddl).execute(&mut *conn).await?;
    }
    Ok(())
}

/// `n` ids of `table` (phones, lines) for rows inserted with their ids;
/// returns the first. AUTOINCREMENT never reuses an id, so the range starts
/// past both the highest row and the highest id ever handed out.
pub(super) async fn reserve_ids(
    conn: &mut SqliteConnection,
    table: &'static str,
    n: i64,
) -> Result<Id, SyncError> {
    if n == 0 {
        return Ok(0);
    }
    let sql = format!(
        "SELECT max(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = $1), 0), \
         COALESCE((SELECT max(id) FROM {table}), 0)) + 1"
    );
    Ok(sqlx::query_scalar(&sql)
        .bind(table)
        .fetch_one(&mut *conn)
        .await?)
}

/// SQLite's planner probes the tables' id index for the staged rows anyway.
pub(super) async fn probe_joins(_: &mut SqliteConnection, _few: bool) -> Result<(), SyncError> {
    Ok(())
}

/// The directory entries' staging table, empty.
pub(super) async fn stage_directory(conn: &mut SqliteConnection) -> Result<(), SyncError> {
    sqlx::query("DROP TABLE IF EXISTS temp.import_directory")
        .execute(&mut *conn)
        .await?;
    sqlx::query(&format!(
        "CREATE TEMP TABLE import_directory {DIRECTORY_STAGE_COLUMNS}"
    ))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Temporary tables outlive the transaction on a pooled connection.
pub(super) async fn drop_staging(conn: &mut SqliteConnection) -> Result<(), SyncError> {
    for ddl in [
        "DROP TABLE IF EXISTS temp.import_phones",
        "DROP TABLE IF EXISTS temp.import_lines",
        "DROP TABLE IF EXISTS temp.import_directory",
    ] {
        sqlx::query(ddl).execute(&mut *conn).await?;
    }
    Ok(())
}

/// Bound parameters per statement, under SQLite's limit (32,766).
const STAGE_PARAMETERS: usize = 32_000;

/// Rows into a staging table, many per INSERT.
pub(super) struct Stager<'c> {
    conn: &'c mut SqliteConnection,
    table: &'static str,
    columns: &'static [&'static str],
    rows: Vec<Vec<Option<String>>>,
}

impl<'c> Stager<'c> {
    pub(super) async fn open(
        conn: &'c mut SqliteConnection,
        table: &'static str,
        columns: &'static [&'static str],
        // SQLite has no frozen rows: every row it writes is final.
        _frozen: bool,
    ) -> Result<Self, SyncError> {
        Ok(Stager {
            conn,
            table,
            columns,
            rows: Vec::new(),
        })
    }

    pub(super) async fn row(&mut self, cells: &[Cell<'_>]) -> Result<(), SyncError> {
        self.rows.push(cells.iter().map(Cell::to_text).collect());
        if (self.rows.len() + 1) * self.columns.len() > STAGE_PARAMETERS {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), SyncError> {
        if self.rows.is_empty() {
            return Ok(());
        }
        let mut insert = sqlx::QueryBuilder::<sqlx::Sqlite>::new(format!(
            "INSERT INTO {} ({}) ",
            self.table,
            self.columns.join(", ")
        ));
        insert.push_values(self.rows.drain(..), |mut row, cells| {
            for cell in cells {
                row.push_bind(cell);
            }
        });
        insert.build().execute(&mut *self.conn).await?;
        Ok(())
    }

    pub(super) async fn finish(mut self) -> Result<(), SyncError> {
        self.flush().await
    }
}

/// SQLite's change log is cheap (row triggers in its own VM), and a watcher
/// further behind than it fetches reloads anyway: every row is logged.
pub(super) async fn quiet_change_log(
    _conn: &mut SqliteConnection,
    _empty: bool,
) -> Result<ChangeLog, SyncError> {
    Ok(ChangeLog::PerRow)
}

pub(super) async fn loud_change_log(_conn: &mut SqliteConnection) -> Result<(), SyncError> {
    Ok(())
}
