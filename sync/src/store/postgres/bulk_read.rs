//! The bulk import's read of what is stored (`store/bulk.rs`), through
//! binary COPY as the cold load, rows borrowed from the stream: a row
//! object and a `String` per cell through sqlx cost the re-import most of
//! its read.
//!
//! A large run reads phones and lines at once, on two connections that
//! share one snapshot, so PostgreSQL produces both streams on two cores
//! while this task compares. Read one after the other, PostgreSQL's side
//! alone was ~0.8 s of a re-import of 1,000,000 phones. A line is taken
//! only once its phone has been (the comparison places a line through its
//! phone's stored id), and phones only a bounded way ahead of the lines
//! (`bulk/comparison.rs`): a stream the comparison holds back is not
//! polled, and waits in PostgreSQL's send buffer.

use std::time::Duration;

use futures::TryStreamExt;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection};

use super::copy::{CopyDecoder, FieldError, Tuple};
use crate::error::SyncError;
use crate::store::bulk::{taken, Stored, StoredLine, StoredPhone, LINE_READ, PHONE_READ};

/// Below this many phones in a run, a second connection costs more than
/// reading one table after the other.
const TWO_CONNECTIONS_MIN_PHONES: usize = 20_000;

/// Fields of a row of [`PHONE_READ`] and of [`LINE_READ`].
const PHONE_FIELDS: usize = column_count(PHONE_READ);
const LINE_FIELDS: usize = column_count(LINE_READ);

const fn column_count(list: &str) -> usize {
    let bytes = list.as_bytes();
    let (mut at, mut count) = (0, 1);
    while at < bytes.len() {
        if bytes[at] == b',' {
            count += 1;
        }
        at += 1;
    }
    count
}

/// How a bulk import opens its second connection: the store's settings,
/// and what the transaction's statistics counted before it wrote.
pub(crate) struct SecondReader {
    pub connect: PgConnectOptions,
    pub timeout: Duration,
    /// Rows of phones and lines [`writes_counted`] gave as the transaction
    /// began, or `None` where no run of it is large enough to read on two
    /// connections. A backend sends its counts to the shared statistics at
    /// most about once a second, and only between transactions; until then
    /// `pg_stat_xact_user_tables` adds the earlier transactions' rows to
    /// the current one's, so a pooled connection that wrote a moment ago
    /// would otherwise look as if this transaction had.
    pub writes_before: Option<i64>,
}

impl SecondReader {
    /// Whether `mutations` may hold a run of phones read on two connections.
    pub fn wanted(mutations: &[crate::store::Mutation]) -> bool {
        use crate::store::Mutation;
        let phones: usize = mutations
            .iter()
            .map(|m| match m {
                Mutation::UpsertPhones(batch) => batch.len(),
                Mutation::UpsertPhone(_) => 1,
                _ => 0,
            })
            .sum();
        phones >= TWO_CONNECTIONS_MIN_PHONES
    }
}

/// Inserted, updated and deleted rows of phones and lines that `conn`'s
/// statistics hold and have not sent yet (see [`SecondReader`]), and
/// whether rows are counted at all (`track_counts`).
pub(crate) async fn writes_counted(conn: &mut PgConnection) -> Result<(i64, bool), SyncError> {
    Ok(sqlx::query_as(
        "SELECT COALESCE(sum(n_tup_ins + n_tup_upd + n_tup_del), 0)::int8, \
         current_setting('track_counts')::bool \
         FROM pg_stat_xact_user_tables WHERE relid IN ('phones'::regclass, 'lines'::regclass)",
    )
    .fetch_one(&mut *conn)
    .await?)
}

/// Every phone and line row, offered to `each` as [`Stored`] describes.
pub(crate) async fn read_stored(
    conn: &mut PgConnection,
    second: &SecondReader,
    phones_in_run: usize,
    mut each: impl FnMut(Stored<'_>) -> Result<bool, SyncError>,
) -> Result<(), SyncError> {
    let other = if phones_in_run >= TWO_CONNECTIONS_MIN_PHONES {
        second_connection(conn, second).await?
    } else {
        None
    };
    let Some(mut other) = other else {
        super::load::copy(conn, "phones", PHONE_READ, |t| {
            taken(offer_phone(t, &mut each)?)
        })
        .await?;
        each(Stored::PhonesRead)?;
        return super::load::copy(conn, "lines", LINE_READ, |t| {
            taken(offer_line(t, &mut each)?)
        })
        .await;
    };
    let read = both_at_once(conn, &mut other, &mut each).await;
    if read.is_ok() {
        // It only read: closing ends its transaction.
        let _ = other.close().await;
    }
    read
}

/// A connection that sees what `conn`'s transaction sees, or `None` where
/// there can be none: that transaction has written to phones or lines
/// already (another connection would not see those writes), the
/// connection fails, or it cannot lock the tables at once because an
/// exclusive request waits ([`super::load::second_reader_locks`]); then the
/// read goes on one connection, slower.
async fn second_connection(
    conn: &mut PgConnection,
    second: &SecondReader,
) -> Result<Option<PgConnection>, SyncError> {
    let Some(writes_before) = second.writes_before else {
        return Ok(None);
    };
    let (writes, counted) = writes_counted(conn).await?;
    if writes > writes_before || !counted {
        return Ok(None);
    }
    // Nothing to read; and an export would rule out the first import's
    // frozen load (`bulk_quiet.rs`).
    let empty: bool = sqlx::query_scalar("SELECT NOT EXISTS (SELECT FROM phones)")
        .fetch_one(&mut *conn)
        .await?;
    if empty {
        return Ok(None);
    }
    // Taken after the import's lock: no other writer can commit until the
    // import does, so this snapshot and the one `conn` reads with agree.
    let snapshot: String = sqlx::query_scalar("SELECT pg_export_snapshot()")
        .fetch_one(&mut *conn)
        .await?;
    // Held to the end of the transaction: `bulk_quiet.rs` writes nothing
    // frozen after one.
    sqlx::query("SET LOCAL dialtone.snapshot_exported = 'on'")
        .execute(&mut *conn)
        .await?;
    let set = format!("SET TRANSACTION SNAPSHOT '{}'", snapshot.replace('\'', ""));
    // The pool pinned `conn` to dialtone's schema (`search_path.rs`); the
    // second reads the same tables.
    let path: String = sqlx::query_scalar("SELECT current_setting('search_path')")
        .fetch_one(&mut *conn)
        .await?;
    let open = async {
        let mut other = second.connect.connect().await?;
        sqlx::query("SELECT set_config('search_path', $1, false)")
            .bind(&path)
            .execute(&mut other)
            .await?;
        for statement in ["BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", &set] {
            sqlx::query(statement).execute(&mut other).await?;
        }
        let locked = super::load::second_reader_locks(&mut other, "phones, lines").await?;
        Ok::<_, SyncError>(locked.then_some(other))
    };
    let (how, other) = match tokio::time::timeout(second.timeout, open).await {
        Ok(Ok(Some(other))) => (super::LargeRead::TwoConnections, Some(other)),
        Ok(Ok(None)) => {
            tracing::info!(
                "bulk phone import: another transaction waits to lock phones or lines \
                 exclusively; reading on one connection"
            );
            (super::LargeRead::LockQueued, None)
        }
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "bulk phone import: no second connection, reading on one");
            (super::LargeRead::NoConnection, None)
        }
        Err(_) => {
            tracing::debug!("bulk phone import: no second connection in time, reading on one");
            (super::LargeRead::NoConnection, None)
        }
    };
    how.count("import");
    Ok(other)
}

/// Phones on `conn`, lines on `other`, each line taken as soon as the
/// comparison can place it.
async fn both_at_once(
    conn: &mut PgConnection,
    other: &mut PgConnection,
    each: &mut impl FnMut(Stored<'_>) -> Result<bool, SyncError>,
) -> Result<(), SyncError> {
    each(Stored::Beside)?;
    let mut phones = conn
        .copy_out_raw(&super::load::copy_out("phones", PHONE_READ))
        .await?;
    let mut lines = other
        .copy_out_raw(&super::load::copy_out("lines", LINE_READ))
        .await?;
    let (mut phone_rows, mut line_rows) = (CopyDecoder::default(), CopyDecoder::default());
    let (mut phones_open, mut lines_open) = (true, true);
    // A stream whose next row the comparison left waits, not polled, until
    // the other has moved on.
    let (mut phone_waits, mut line_waits) = (false, false);
    while phones_open || lines_open {
        tokio::select! {
            biased;
            chunk = lines.try_next(), if lines_open && !line_waits => {
                match chunk? {
                    Some(chunk) => line_waits = !line_rows.feed_while(&chunk, |t| offer_line(t, each))?,
                    None => lines_open = false,
                }
                if phone_waits {
                    phone_waits = !phone_rows.feed_while(&[], |t| offer_phone(t, each))?;
                }
            },
            chunk = phones.try_next(), if phones_open && !phone_waits => {
                match chunk? {
                    Some(chunk) => phone_waits = !phone_rows.feed_while(&chunk, |t| offer_phone(t, each))?,
                    None => {
                        phones_open = false;
                        each(Stored::PhonesRead)?;
                    }
                }
                if line_waits {
                    line_waits = !line_rows.feed_while(&[], |t| offer_line(t, each))?;
                }
            },
            // Both wait: the comparison broke its word (checked below).
            else => break,
        }
    }
    drop((phones, lines));
    taken(!line_waits && !phone_waits)?;
    phone_rows.finish()?;
    line_rows.finish()?;
    Ok(())
}

/// A stored field that does not fit its column.
fn bad_field(table: &str, column: usize, what: FieldError) -> SyncError {
    SyncError::Invalid(format!("{table}: column {}: {what}", column + 1))
}

fn fields(table: &str, t: &Tuple<'_>, want: usize) -> Result<(), SyncError> {
    if t.len() == want {
        Ok(())
    } else {
        Err(SyncError::Invalid(format!(
            "{table}: COPY sent {} fields for {want} columns",
            t.len()
        )))
    }
}

fn offer_phone(
    t: &Tuple<'_>,
    each: &mut impl FnMut(Stored<'_>) -> Result<bool, SyncError>,
) -> Result<bool, SyncError> {
    fields("phones", t, PHONE_FIELDS)?;
    let row = (|| {
        Ok::<_, (usize, FieldError)>(StoredPhone {
            id: t.int8(0).map_err(|e| (0, e))?,
            mac: t.bytes(1).map_err(|e| (1, e))?,
            tenant_id: t.int8(2).map_err(|e| (2, e))?,
            family: t.bytes(3).map_err(|e| (3, e))?,
            model: t.opt_bytes(4),
            label: t.opt_bytes(5),
            variables: t.bytes(6).map_err(|e| (6, e))?,
            http_user: t.opt_bytes(7),
            http_password: t.opt_bytes(8),
        })
    })()
    .map_err(|(column, e)| bad_field("phones", column, e))?;
    each(Stored::Phone(row))
}

fn offer_line(
    t: &Tuple<'_>,
    each: &mut impl FnMut(Stored<'_>) -> Result<bool, SyncError>,
) -> Result<bool, SyncError> {
    fields("lines", t, LINE_FIELDS)?;
    let row = (|| {
        Ok::<_, (usize, FieldError)>(StoredLine {
            id: t.int8(0).map_err(|e| (0, e))?,
            phone_id: t.int8(1).map_err(|e| (1, e))?,
            position: t.int4(2).map_err(|e| (2, e))?,
            extension: t.bytes(3).map_err(|e| (3, e))?,
            display_name: t.bytes(4).map_err(|e| (4, e))?,
            auth_user: t.bytes(5).map_err(|e| (5, e))?,
            password: t.opt_bytes(6),
            registrar: t.bytes(7).map_err(|e| (7, e))?,
            proxy: t.opt_bytes(8),
            settings: t.bytes(9).map_err(|e| (9, e))?,
        })
    })()
    .map_err(|(column, e)| bad_field("lines", column, e))?;
    each(Stored::Line(row))
}
