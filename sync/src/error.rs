use std::path::PathBuf;

/// Every failure the data layer reports. Callers decide what is fatal; the
/// variants keep enough context for a one-line operator message.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("invalid data: {0}")]
    Invalid(String),

    // Not `#[source]`: the message already includes the cause, and chained
    // printing (anyhow's `{:#}`) would repeat it.
    #[error("database error: {0}")]
    Database(sqlx::Error),

    /// SQLite through rusqlite: the cold load's own connection
    /// (`store/sqlite/load.rs`) and an import's borrowed one
    /// (`store/sqlite/borrowed.rs`).
    #[error("database error: {0}")]
    Sqlite(rusqlite::Error),

    #[error("migration failed: {0}")]
    Migrate(sqlx::migrate::MigrateError),

    #[error(
        "a table the migration alters stayed in use for {tried_s} s \
         (a large import, a long query, or another node migrating), and the \
         migration stepped back each time so that queries on it went on; \
         run it again when that work is done ({detail})"
    )]
    MigrationLocked { tried_s: u64, detail: String },

    #[error(
        "the database schema is at migration {found}, newer than this binary knows ({known}); \
         upgrade dialtone before pointing it at this database"
    )]
    SchemaTooNew { found: i64, known: i64 },

    /// A PostgreSQL load found the mirrored tables without a change-log
    /// trigger or key the migrations make (`store/postgres/complete.rs`):
    /// a `pg_restore` that has not reached its post-data section. Passes
    /// like an outage, so it counts as transient.
    #[error(
        "the database's schema is incomplete ({0} missing): a restore in progress? \
         Nothing is loaded from it until it is whole"
    )]
    SchemaIncomplete(String),

    /// A SQLite database this binary must migrate, in a file it cannot
    /// write (a read-only mount, its permissions): refused before the
    /// migration, whose first write would fail with only SQLite's
    /// "attempt to write a readonly database". An outage, like the file
    /// not opening: it passes once the file is writable again.
    #[error(
        "the database file {path} cannot be written ({reason}), and this binary must migrate \
         its schema (from migration {found} to {known}) before it can use it: make the file \
         writable (mount it read-write, or give this user write access)"
    )]
    ReadOnlyMigration {
        path: PathBuf,
        reason: String,
        found: i64,
        known: i64,
    },

    #[error("unsupported database URL {0:?}: use sqlite://PATH or postgres://...")]
    UnsupportedUrl(String),

    #[error(
        "database URL parameter {0:?} is not one the PostgreSQL driver reads \
         (it would be ignored, and its value written to the log); known: {known}, options[NAME]",
        known = crate::store::PG_URL_PARAMS.join(", ")
    )]
    UnknownUrlParameter(String),

    #[error("secret key: {0}")]
    Key(String),

    #[error("cannot decrypt a stored secret: wrong key, or the value was tampered with")]
    Decrypt,

    #[error("snapshot {path}: {reason}")]
    Snapshot { path: PathBuf, reason: String },

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{0}")]
    Import(#[from] crate::import::ImportError),

    /// A row an export cannot write in the format asked for, or the writer
    /// failing; names the row.
    #[error("export: {0}")]
    Export(String),

    /// One mutation of a write was refused; `index` is its place in the
    /// batch, `item` the phone's place within an `UpsertPhones`.
    #[error("change #{}: {reason}", index + 1)]
    Rejected {
        index: usize,
        item: Option<usize>,
        reason: String,
    },

    #[error("not found: {0}")]
    NotFound(String),

    /// An `Expect` mutation found the row changed since the caller read it.
    #[error("{0} was changed by someone else; reload it and edit again")]
    Conflict(String),

    /// A delete that asked for an empty row found rows in it (written since
    /// the caller counted them).
    #[error("{0}")]
    NotEmpty(String),

    /// A create found its key taken: by its own check, or by a concurrent
    /// writer at the unique index.
    #[error("{0} already exists")]
    Taken(String),

    /// The connection failed once COMMIT was sent, and asking the database
    /// afterwards did not tell whether the transaction committed: the
    /// write may have been made. Not transient: writing it again blindly
    /// could make it twice.
    #[error(
        "the database did not confirm the commit, so the write may or may not have been made \
         (read it back before writing it again): {0}"
    )]
    CommitUnknown(sqlx::Error),
}

impl From<sqlx::Error> for SyncError {
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &e {
            if db.is_unique_violation() {
                return SyncError::Taken("a row with the same key".into());
            }
        }
        SyncError::Database(e)
    }
}

impl From<rusqlite::Error> for SyncError {
    fn from(e: rusqlite::Error) -> Self {
        SyncError::Sqlite(e)
    }
}

impl From<sqlx::migrate::MigrateError> for SyncError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        SyncError::Migrate(e)
    }
}

impl SyncError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        SyncError::Io {
            path: path.into(),
            source,
        }
    }

    /// True when no pooled connection came free within the acquire timeout:
    /// every one was busy, or none could be opened (sqlx cannot tell which).
    pub fn is_pool_timeout(&self) -> bool {
        matches!(self, SyncError::Database(sqlx::Error::PoolTimedOut))
    }

    /// True when the failure is the database being unreachable or overloaded
    /// (or half restored), as opposed to a bug or bad data: the caller
    /// should back off and retry.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            SyncError::Database(
                sqlx::Error::Io(_)
                    | sqlx::Error::PoolTimedOut
                    | sqlx::Error::PoolClosed
                    | sqlx::Error::Tls(_)
                    | sqlx::Error::WorkerCrashed
            )
        ) || matches!(self, SyncError::Database(sqlx::Error::Database(e)) if e.code().is_some_and(|c| c.starts_with("57") || c.starts_with("08")))
            || matches!(
                self,
                SyncError::Sqlite(rusqlite::Error::SqliteFailure(e, _))
                    if matches!(e.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
            )
            || matches!(self, SyncError::SchemaIncomplete(_))
            || self.is_sqlite_file_outage()
    }

    /// True when SQLite could not open or write its files for a cause
    /// outside the data: an I/O error (SQLite's own for a full disk when
    /// it grows its `-shm` file), a full disk, a file it cannot open, a
    /// read-only file or mount. They pass when an operator frees space or
    /// remounts, so they are an outage of the database, as a PostgreSQL
    /// server that does not answer is; not a corrupt file or one that
    /// was never a database, which need the operator first.
    pub fn is_sqlite_file_outage(&self) -> bool {
        // Primary result codes; the extended ones carry them in their low byte.
        const READONLY: i32 = 8;
        const IOERR: i32 = 10;
        const FULL: i32 = 13;
        const CANTOPEN: i32 = 14;
        let sqlx_code = |e: &sqlx::Error| match e {
            sqlx::Error::Database(db)
                if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() =>
            {
                db.code().and_then(|c| c.parse::<i32>().ok())
            }
            _ => None,
        };
        let code = match self {
            SyncError::ReadOnlyMigration { .. } => return true,
            SyncError::Database(e)
            | SyncError::Migrate(
                sqlx::migrate::MigrateError::Execute(e)
                | sqlx::migrate::MigrateError::ExecuteMigration(e, _),
            ) => sqlx_code(e),
            SyncError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => Some(e.extended_code),
            _ => None,
        };
        code.is_some_and(|c| matches!(c & 0xff, READONLY | IOERR | FULL | CANTOPEN))
    }
}
