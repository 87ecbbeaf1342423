//! Cold load from SQLite through rusqlite on a connection of its own,
//! stepped on a blocking thread, each row decoded from SQLite's own
//! buffers straight into the mirror's tables (`mirror::Loading`). Through
//! sqlx every row crossed from its worker thread to the task as a row
//! object with a copy of each value; a million phones took 16.5 s to load
//! that way, against 0.7 s for the `sqlite3` shell to read both tables
//! (BENCHMARKS.md, round 30).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{Connection, InterruptHandle, OpenFlags, Transaction};
use sqlx::sqlite::SqliteConnectOptions;

use crate::error::SyncError;
use crate::intern::Interner;
use crate::mirror::{LineRows, Loading, PhoneRows};
use crate::model::*;
use crate::store::rows;

/// Where the load's connection opens the database the pool has open.
#[derive(Clone)]
pub(super) struct LoadSource {
    filename: String,
    flags: OpenFlags,
    busy_timeout: Duration,
}

/// How sqlx names a `sqlite::memory:` database: every pooled connection
/// opens it with a shared cache, so they all see one database, and the
/// load's connection joins it the same way. If sqlx ever names it
/// otherwise, the load fails to open a file of that name (no create flag),
/// loudly, rather than reading some other database.
const SQLX_IN_MEMORY: &str = "file:sqlx-in-memory-";

impl LoadSource {
    pub(super) fn new(options: &SqliteConnectOptions, busy_timeout: Duration) -> Self {
        let filename = options.get_filename().to_string_lossy().into_owned();
        // Read and write, though it only reads (`query_only`): a read-only
        // connection to a WAL database cannot recover or create its shared
        // memory file.
        let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        if filename.starts_with(SQLX_IN_MEMORY) {
            flags |= OpenFlags::SQLITE_OPEN_MEMORY | OpenFlags::SQLITE_OPEN_SHARED_CACHE;
        }
        LoadSource {
            filename,
            flags,
            busy_timeout,
        }
    }

    /// Every mirrored row and the cursor they are consistent with, unless
    /// `cancel` stops it first. Blocking: run it on a blocking thread.
    pub(super) fn load(&self, cancel: &LoadCancel) -> Result<(Loading, Cursor, Meta), SyncError> {
        let mut conn = Connection::open_with_flags(&self.filename, self.flags)?;
        cancel.attach(conn.get_interrupt_handle())?;
        conn.busy_timeout(self.busy_timeout)?;
        conn.pragma_update(None, "query_only", true)?;
        let tx = conn.transaction()?;
        // The first read fixes the WAL snapshot every following read sees.
        let seq: i64 = tx.query_row("SELECT COALESCE(max(seq), 0) FROM change_log", [], |r| {
            r.get(0)
        })?;
        let meta = tx.query_row(rows::READ_META, [], |r| {
            Ok(Meta {
                epoch: r.get(0)?,
                pruned_through: Cursor {
                    txid: r.get(1)?,
                    seq: r.get(2)?,
                },
                database_id: r.get(3)?,
                timeline: None,
            })
        })?;
        cancel.check()?;
        let (phone_count, line_count) = (count(&tx, "phones")?, count(&tx, "lines")?);
        let (phones, lines) = std::thread::scope(|scope| {
            let (send, batches) = std::sync::mpsc::sync_channel(BATCHES_IN_FLIGHT);
            let building = scope.spawn(move || build(batches, phone_count, line_count));
            let read = read_phones_and_lines(&tx, send);
            // A builder that panicked fails this load like any other
            // error; the watcher tries again.
            let built = building
                .join()
                .map_err(|_| SyncError::Invalid("the mirror's table builder panicked".into()));
            built.and_then(|tables| read.map(|()| tables))
        })?;
        // Each table read is a statement of its own: the interrupt stops
        // the one running, and these stop the next from starting.
        cancel.check()?;
        let tenants = all(&tx, Entity::Tenant, |r, i| rows::tenant(r, i))?;
        cancel.check()?;
        let templates = all(&tx, Entity::Template, |r, i| rows::template(r, i))?;
        cancel.check()?;
        let directory_entries = all(&tx, Entity::DirectoryEntry, |r, i| {
            rows::directory_entry(r, i)
        })?;
        cancel.check()?;
        let directory_sources = all(&tx, Entity::DirectorySource, |r, i| {
            rows::directory_source(r, i)
        })?;
        cancel.check()?;
        let api_tokens = all(&tx, Entity::ApiToken, |r, i| rows::api_token(r, i))?;
        let loading = Loading {
            tenants,
            phones,
            lines,
            templates,
            directory_entries,
            directory_sources,
            api_tokens,
            seen_above: None,
        };
        cancel.check()?;
        tx.commit()?;
        // A log pruned empty leaves max(seq) at 0 while the meta row says
        // it was pruned through N: a cursor of 0 would read as "pruned past
        // us" and reload again at every poll until the next edit. The rows
        // just read hold every change through N, so the cursor is N.
        let seq = seq.max(meta.pruned_through.seq);
        Ok((loading, Cursor { txid: 0, seq }, meta))
    }
}

/// Stops a load whose caller has gone. A catch-up cut off by its time
/// limit (an admin write's 5 s, the watcher's `catch_up_limit`) dropped
/// the future awaiting the blocking load, and with it the catch-up turn,
/// while the thread read on: the next catch-up found a reload still due
/// and started a second whole-database load beside the first, twice the
/// memory, and on every later cut a third.
#[derive(Default)]
pub(super) struct LoadCancel {
    cancelled: AtomicBool,
    /// The load's connection, once open: interrupting it ends the
    /// statement it is stepping.
    connection: Mutex<Option<InterruptHandle>>,
}

impl LoadCancel {
    pub(super) fn cancel(&self) {
        self.cancelled.store(true, Ordering::Release);
        let connection = self.connection.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(handle) = connection.as_ref() {
            handle.interrupt();
        }
    }

    /// Holds the connection's handle, or refuses to start a load already
    /// cancelled (the handle would come too late to interrupt it).
    fn attach(&self, handle: InterruptHandle) -> Result<(), SyncError> {
        let mut connection = self.connection.lock().unwrap_or_else(|e| e.into_inner());
        self.check()?;
        *connection = Some(handle);
        Ok(())
    }

    /// An interrupt reaches only a statement running when it comes, so
    /// the load looks before each table too.
    fn check(&self) -> Result<(), SyncError> {
        if self.cancelled.load(Ordering::Acquire) {
            return Err(SyncError::Invalid(
                "mirror load cancelled: its catch-up was given up".into(),
            ));
        }
        Ok(())
    }
}

/// Rows decoded and not yet in the mirror's tables: the reading thread
/// steps SQLite and decodes while the building thread hashes and inserts,
/// the two halves of the work taking about as long as each other.
enum Batch {
    Phones(Vec<Phone>),
    Lines(Vec<Line>),
}

const BATCH_ROWS: usize = 4096;
const BATCHES_IN_FLIGHT: usize = 4;

fn read_phones_and_lines(
    tx: &Transaction<'_>,
    send: std::sync::mpsc::SyncSender<Batch>,
) -> Result<(), SyncError> {
    send_batches(
        tx,
        Entity::Phone,
        |r, i| rows::phone(r, i),
        Batch::Phones,
        &send,
    )?;
    send_batches(
        tx,
        Entity::Line,
        |r, i| rows::line(r, i),
        Batch::Lines,
        &send,
    )
}

fn send_batches<T>(
    tx: &Transaction<'_>,
    entity: Entity,
    decode: impl Fn(&rusqlite::Row<'_>, &mut Interner) -> Result<T, SyncError>,
    batch_of: fn(Vec<T>) -> Batch,
    send: &std::sync::mpsc::SyncSender<Batch>,
) -> Result<(), SyncError> {
    // Fails only when the builder is gone (it panicked; its join says so).
    let stopped = |_| SyncError::Invalid("the mirror's table builder stopped".into());
    let mut batch = Vec::with_capacity(BATCH_ROWS);
    each(tx, entity, |row, interner| {
        batch.push(decode(row, interner)?);
        if batch.len() == BATCH_ROWS {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH_ROWS));
            send.send(batch_of(full)).map_err(stopped)?;
        }
        Ok(())
    })?;
    send.send(batch_of(batch)).map_err(stopped)
}

fn build(
    batches: std::sync::mpsc::Receiver<Batch>,
    phone_count: usize,
    line_count: usize,
) -> (PhoneRows, LineRows) {
    let mut phones = PhoneRows::with_capacity(phone_count);
    let mut lines = LineRows::with_capacity(line_count);
    for batch in batches {
        match batch {
            Batch::Phones(rows) => rows.into_iter().for_each(|p| phones.push(p)),
            Batch::Lines(rows) => rows.into_iter().for_each(|l| lines.push(l)),
        }
    }
    (phones, lines)
}

/// Rows in `table`, to size its maps exactly.
fn count(tx: &Transaction<'_>, table: &str) -> Result<usize, SyncError> {
    let rows: i64 = tx.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))?;
    Ok(usize::try_from(rows).unwrap_or(0))
}

/// Hands every row of `entity`'s table to `f`, borrowed from SQLite.
fn each(
    tx: &Transaction<'_>,
    entity: Entity,
    mut f: impl FnMut(&rusqlite::Row<'_>, &mut Interner) -> Result<(), SyncError>,
) -> Result<(), SyncError> {
    let sql = format!("SELECT {} FROM {}", rows::columns(entity), entity.table());
    let mut interner = Interner::default();
    each_row(tx, &sql, |row| f(row, &mut interner))
}

/// Hands every row `sql` returns to `f`, borrowed from SQLite.
pub(super) fn each_row(
    conn: &Connection,
    sql: &str,
    mut f: impl FnMut(&rusqlite::Row<'_>) -> Result<(), SyncError>,
) -> Result<(), SyncError> {
    let mut statement = conn.prepare(sql)?;
    let mut found = statement.query([])?;
    while let Some(row) = found.next()? {
        f(row)?;
    }
    Ok(())
}

fn all<T>(
    tx: &Transaction<'_>,
    entity: Entity,
    decode: impl Fn(&rusqlite::Row<'_>, &mut Interner) -> Result<T, SyncError>,
) -> Result<Vec<T>, SyncError> {
    let mut out = Vec::new();
    each(tx, entity, |row, interner| {
        out.push(decode(row, interner)?);
        Ok(())
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreOptions;

    /// A load whose catch-up has been given up reads nothing more, and a
    /// load nobody cancelled reads everything.
    #[tokio::test]
    async fn a_cancelled_load_stops() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("d.db").display());
        let store = super::super::SqliteStore::connect(
            &url,
            crate::testing::test_key(),
            &StoreOptions::default(),
        )
        .await
        .unwrap();
        crate::store::Store::migrate(&store).await.unwrap();
        let source = store.load_source.clone();
        let cancel = LoadCancel::default();
        if let Err(e) = source.load(&cancel) {
            panic!("{e}");
        }
        cancel.cancel();
        let refused = source.load(&cancel).err().expect("a cancelled load fails");
        assert!(refused.to_string().contains("cancelled"), "{refused}");
    }
}
