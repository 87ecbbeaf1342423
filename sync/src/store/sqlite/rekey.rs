//! SQLite's re-key (`store/rekey.rs`): inside BEGIN IMMEDIATE, whose
//! write lock keeps every other writer out until the commit, the sealed
//! columns are read, re-sealed, staged in a temporary table by multi-row
//! INSERTs and written with one `UPDATE … FROM` a column. The reads and
//! writes run through rusqlite on the transaction's own connection
//! (`borrowed.rs`): through sqlx each of a million rows would cross from
//! its worker thread as a row object.

use rusqlite::Connection;

use super::load::each_row;
use super::{latest_known, sql, SqliteStore, Writing};
use crate::crypto::{Sealed, SecretKey};
use crate::error::SyncError;
use crate::model::Id;
use crate::store::rekey::{self, RekeyReport, SealedColumn, Unopened, STAGED};
use crate::store::{Audit, Ending};

/// Rows a staging INSERT carries: two parameters each, well under SQLite's
/// 32,766.
const ROWS_PER_INSERT: usize = 4096;

pub(super) async fn run(
    store: &SqliteStore,
    new_key: &SecretKey,
    audit: &Audit,
) -> Result<RekeyReport, SyncError> {
    rekey::refuse_same_key(&store.key, new_key)?;
    rekey::check_audit(audit)?;
    let mut writing = Writing::begin(&store.pool).await?;
    let result = async {
        let conn = writing.conn();
        sql::check_schema(conn, latest_known()).await?;
        sql::check_key(conn, &store.key, true).await?;
        let report = super::borrowed::on_connection(conn, |conn| {
            reseal_every_column(conn, &store.key, new_key)
        })
        .await?;
        sql::finish_rekey(conn, new_key, audit, &report).await?;
        Ok(report)
    }
    .await;
    store.end(writing, result, Ending::Commit).await
}

/// Reads and re-seals every column before it writes any, so a value that
/// does not open refuses the run with nothing staged.
fn reseal_every_column(
    conn: &Connection,
    current: &SecretKey,
    new: &SecretKey,
) -> Result<RekeyReport, SyncError> {
    let mut resealed = Vec::new();
    let mut unopened = Unopened::default();
    for column in SealedColumn::ALL {
        let stored = read(conn, column)?;
        match rekey::reseal(current, new, column, &stored) {
            Ok(values) => resealed.push((column, values)),
            Err(ids) => unopened.add(column, ids),
        }
    }
    if !unopened.is_empty() {
        let mut named = Vec::new();
        for (column, id) in unopened.to_name() {
            let mut statement = conn.prepare(column.naming_sql())?;
            let name = statement
                .query_row([id], |row| row.get::<_, String>(0))
                .map(Some)
                .or_else(|e| match e {
                    rusqlite::Error::QueryReturnedNoRows => Ok(None),
                    e => Err(e),
                })?;
            named.push(rekey::named_or_id(column, id, name));
        }
        return Err(unopened.refusal(&named));
    }
    let mut report = RekeyReport::default();
    for (column, values) in &resealed {
        write(conn, *column, values)?;
        report.add(*column, values.len());
    }
    Ok(report)
}

/// Every non-empty value of the column, by row id.
fn read(conn: &Connection, column: SealedColumn) -> Result<Vec<(Id, Sealed)>, SyncError> {
    let sql = format!(
        "SELECT id, {column} FROM {table} WHERE {column} IS NOT NULL AND {column} <> ''",
        column = column.column(),
        table = column.table(),
    );
    let mut values = Vec::new();
    each_row(conn, &sql, |row| {
        let sealed = row.get_ref(1)?.as_str().map_err(rusqlite::Error::from)?;
        values.push((row.get(0)?, Sealed(sealed.into())));
        Ok(())
    })?;
    Ok(values)
}

/// The values staged, then written in one statement. The staged table
/// lives on the pooled connection past the transaction unless dropped.
fn write(
    conn: &Connection,
    column: SealedColumn,
    values: &[(Id, Sealed)],
) -> Result<(), SyncError> {
    if values.is_empty() {
        return Ok(());
    }
    conn.execute_batch(&format!(
        "DROP TABLE IF EXISTS temp.{STAGED}; \
         CREATE TEMP TABLE {STAGED} (id INTEGER PRIMARY KEY, sealed TEXT NOT NULL);"
    ))?;
    let insert = |rows: usize| {
        let mut sql = format!("INSERT INTO temp.{STAGED} (id, sealed) VALUES ");
        for i in 0..rows {
            sql.push_str(if i == 0 { "(?, ?)" } else { ", (?, ?)" });
        }
        conn.prepare(&sql)
    };
    let mut full = insert(ROWS_PER_INSERT.min(values.len()))?;
    for chunk in values.chunks(ROWS_PER_INSERT) {
        let mut last;
        let statement = if chunk.len() == full.parameter_count() / 2 {
            &mut full
        } else {
            last = insert(chunk.len())?;
            &mut last
        };
        for (i, (id, sealed)) in chunk.iter().enumerate() {
            statement.raw_bind_parameter(2 * i + 1, id)?;
            statement.raw_bind_parameter(2 * i + 2, &*sealed.0)?;
        }
        statement.raw_execute()?;
    }
    drop(full);
    conn.execute(&column.update_from_staged_sql(), [])?;
    conn.execute_batch(&format!("DROP TABLE temp.{STAGED}"))?;
    Ok(())
}
