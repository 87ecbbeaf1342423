//! Migrations on SQLite, one process at a time. sqlx's migration lock does
//! nothing on SQLite: two processes migrating one file (a service restarted
//! during an operator's `import`, which migrates SQLite too) each listed the
//! migrations missing, and the later one failed on the tables and rows the
//! other had just made ("table dialtone_meta already exists", "UNIQUE
//! constraint failed: _sqlx_migrations.version").
//!
//! The turn is an `flock` on a file beside the database, not a transaction:
//! an exclusive one would have to be the migrator's own (SQLite's locks
//! belong to a connection, so it would shut out the migrator's connection as
//! well), sqlx runs each migration in a transaction of its own, and
//! SQLite's busy timeout would bound the wait by seconds where a migration
//! of a large database can take minutes. Not an `flock` on the database
//! file itself: opening and closing another descriptor of it would drop
//! the POSIX locks SQLite holds on it in this process. The kernel lets go
//! of the turn when its holder's process dies, so a killed migration never
//! leaves the others waiting.
//!
//! Processes starting at once on a new file race before that, too: see
//! [`open_pool`].

use std::path::PathBuf;
use std::time::{Duration, Instant};

use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::SqlitePool;

use super::sql;
use crate::crypto::SecretKey;
use crate::error::SyncError;

/// How often a process waiting for the turn asks for it again.
const POLL: Duration = Duration::from_millis(50);
/// How often a wait for the turn says it is still waiting.
const STILL_WAITING_EVERY: Duration = Duration::from_secs(30);
/// How sqlx names a `sqlite::memory:` database; it belongs to one process.
const SQLX_IN_MEMORY: &str = "file:sqlx-in-memory-";

/// The pool, its first connection open. Turning a new file to WAL takes
/// an exclusive lock that SQLite's busy timeout does not wait for, so a
/// process opening the file at that moment gets "database is locked" at
/// once; the switch is quick, and is tried again within `busy_timeout`.
pub(super) async fn open_pool(
    pool: SqlitePoolOptions,
    connect: &SqliteConnectOptions,
    busy_timeout: Duration,
) -> Result<SqlitePool, SyncError> {
    create_private(connect);
    let started = Instant::now();
    loop {
        match pool.clone().connect_with(connect.clone()).await {
            Err(e) if busy(&e) && started.elapsed() < busy_timeout => {
                tokio::time::sleep(POLL).await
            }
            opened => return Ok(opened?),
        }
    }
}

/// Makes a new database file readable by its owner only, whatever the
/// umask: it holds what the snapshot does (0600 too), plus history, audit
/// and template bodies. SQLite gives its -wal and -shm files the database
/// file's mode. An existing file keeps the mode its operator gave it, and
/// a failure here is left for SQLite's own open to report.
pub(super) fn create_private(connect: &SqliteConnectOptions) {
    use std::os::unix::fs::OpenOptionsExt;
    let database = connect.get_filename();
    if database.to_string_lossy().starts_with(SQLX_IN_MEMORY) || database.as_os_str().is_empty() {
        return;
    }
    let _ = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(database);
}

/// SQLITE_BUSY, extended codes included.
fn busy(e: &sqlx::Error) -> bool {
    const SQLITE_BUSY: i32 = 5;
    matches!(e, sqlx::Error::Database(db)
        if db.code().and_then(|c| c.parse::<i32>().ok()).is_some_and(|c| c & 0xff == SQLITE_BUSY))
}

/// Refuses a newer binary's schema and a key that is not the database's,
/// then applies what is missing, taking turns with other processes.
pub(super) async fn run(
    migrator: &Migrator,
    pool: &SqlitePool,
    connect: &SqliteConnectOptions,
    key: &SecretKey,
    known: i64,
) -> Result<(), SyncError> {
    let mut conn = pool.acquire().await?;
    // A database already at this version is only read: no turn to wait
    // for, and no lock file for a start that migrates nothing.
    let applied = sql::applied_migration(&mut conn).await?;
    let pending = applied < Some(known);
    drop(conn);
    if pending {
        refuse_read_only(connect, applied, known)?;
    }
    let _turn = if pending {
        Turn::take(connect).await?
    } else {
        None
    };
    // Read under the turn: what an earlier holder applied is seen here, so
    // its migrations are not applied again, and its newer schema is refused.
    let mut conn = pool.acquire().await?;
    sql::refuse_newer(&mut conn, known).await?;
    // A wrong key is refused before it migrates anything.
    if sql::applied_migration(&mut conn).await?.is_some() {
        sql::check_key(&mut conn, key, false).await?;
    }
    drop(conn);
    if let Err(e) = migrator.run(pool).await {
        return Err(match pool.acquire().await {
            Ok(mut conn) => sql::newer_schema_or(&mut conn, known, e.into()).await,
            Err(_) => e.into(),
        });
    }
    let mut conn = pool.acquire().await?;
    sql::check_key(&mut conn, key, true).await
}

/// SQLite opens a file it cannot write read-only, without a word, and a
/// migration then failed at its first write with "attempt to write a
/// readonly database", after a warning that the lock file could not be
/// made. Refused before, naming the file. Asked of the kernel by path
/// (`faccessat`): opening and closing the database file here would drop
/// the POSIX locks SQLite holds on it in this process.
fn refuse_read_only(
    connect: &SqliteConnectOptions,
    applied: Option<i64>,
    known: i64,
) -> Result<(), SyncError> {
    use std::os::unix::ffi::OsStrExt;
    let database = connect.get_filename();
    if database.to_string_lossy().starts_with(SQLX_IN_MEMORY) || database.as_os_str().is_empty() {
        return Ok(());
    }
    let Ok(path) = std::ffi::CString::new(database.as_os_str().as_bytes()) else {
        return Ok(());
    };
    // SAFETY: a NUL-terminated path that lives across the call.
    let writable =
        unsafe { libc::faccessat(libc::AT_FDCWD, path.as_ptr(), libc::W_OK, libc::AT_EACCESS) }
            == 0;
    if writable {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EROFS | libc::EACCES | libc::EPERM) => Err(SyncError::ReadOnlyMigration {
            path: database.to_path_buf(),
            reason: e.to_string(),
            found: applied.unwrap_or(0),
            known,
        }),
        // Anything else (the file gone since it was opened) is left to
        // the migration's own error.
        _ => Ok(()),
    }
}

/// The turn to migrate, held until dropped: closing the file releases it.
struct Turn {
    _locked: std::fs::File,
}

impl Turn {
    /// Waits for the turn. None for an in-memory database, and for a
    /// filesystem that cannot lock: the migration runs without a turn,
    /// as it did before there were turns.
    async fn take(connect: &SqliteConnectOptions) -> Result<Option<Turn>, SyncError> {
        let database = connect.get_filename();
        if database.to_string_lossy().starts_with(SQLX_IN_MEMORY) {
            return Ok(None);
        }
        let mut name = database.as_os_str().to_owned();
        name.push(".migrate-lock");
        let path = PathBuf::from(name);
        // Opened for writing: over NFS an exclusive lock needs it.
        let opened = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path);
        let file = match opened {
            Ok(file) => file,
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot open the migration lock file; migrating without waiting for other processes");
                return Ok(None);
            }
        };
        let started = Instant::now();
        let mut told_at: Option<Instant> = None;
        loop {
            match try_lock(&file) {
                Ok(()) => {
                    if told_at.is_some() {
                        tracing::info!(
                            waited_ms = started.elapsed().as_millis() as u64,
                            "the other process's migration is done; migrating"
                        );
                    }
                    return Ok(Some(Turn { _locked: file }));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if told_at.is_none_or(|at| at.elapsed() >= STILL_WAITING_EVERY) {
                        tracing::warn!(
                            file = %path.display(),
                            waited_s = started.elapsed().as_secs(),
                            "another process is migrating this database; waiting for it to finish"
                        );
                        told_at = Some(Instant::now());
                    }
                    tokio::time::sleep(POLL).await;
                }
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "cannot lock the migration lock file; migrating without waiting for other processes");
                    return Ok(None);
                }
            }
        }
    }
}

/// An exclusive `flock` on `file`, without waiting: WouldBlock while
/// another descriptor holds it, in this process or another.
fn try_lock(file: &std::fs::File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid descriptor, borrowed from `file` for the call.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
