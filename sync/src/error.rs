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

    /// dialtone's tables found in more than one schema of the connection's
    /// `search_path` (`store/postgres/search_path.rs`): which one is
    /// meant is the operator's to say.
    #[error(
        "dialtone's tables are in more than one schema on the database role's search_path \
         ({}): set the role's search_path to the one to use \
         (ALTER ROLE <role> SET search_path = <schema>), or drop the other copy",
        schemas.join(", ")
    )]
    SchemaAmbiguous { schemas: Vec<String> },

    /// No schema of the connection's `search_path` exists, so a fresh
    /// database has nowhere to put dialtone's tables.
    #[error(
        "no schema on the database role's search_path ({0}) exists to hold dialtone's tables: \
         create one (CREATE SCHEMA), or set the role's search_path to an existing one"
    )]
    NoSchema(String),

    /// PostgreSQL in recovery: it takes reads, but refuses every write
    /// and the change listener's `LISTEN`.
    #[error("the database at {0} is a standby in recovery; point nodes at the primary")]
    Standby(String),

    /// A connection pooler that gives one client several server sessions
    /// (pgbouncer's transaction or statement pooling): sqlx's prepared
    /// statements, the pinned `search_path` and `LISTEN` all live on a
    /// session.
    #[error(
        "{0}: the connection pooler in front of PostgreSQL is not in session mode; dialtone \
         keeps prepared statements, its search_path and its change listener's LISTEN on one \
         server session, so it needs session pooling (pgbouncer: pool_mode = session) or a \
         direct connection"
    )]
    PoolerMode(String),

    /// pgbouncer refusing a startup parameter sqlx sends.
    #[error(
        "{0}: the connection pooler (pgbouncer) refuses a startup parameter the PostgreSQL \
         driver sends: add `ignore_startup_parameters = extra_float_digits` to its [pgbouncer] \
         section (and use pool_mode = session: dialtone needs session pooling or a direct \
         connection)"
    )]
    PoolerParameter(String),

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
        pooler_refusal(&e).unwrap_or(SyncError::Database(e))
    }
}

/// SQLSTATE duplicate_prepared_statement and invalid_sql_statement_name:
/// sqlx names its statements `sqlx_s_N` per connection, so one it made
/// already existing, or one it made missing, means the client's session
/// is not one server session.
const POOLED_STATEMENT_CODES: [&str; 2] = ["42P05", "26000"];

/// `e` as a connection pooler refusing dialtone, which otherwise reads as
/// an outage (pgbouncer's refusal is a protocol violation, SQLSTATE class
/// 08) or an error that never says why.
fn pooler_refusal(e: &sqlx::Error) -> Option<SyncError> {
    let sqlx::Error::Database(db) = e else {
        return None;
    };
    if db.message().contains("unsupported startup parameter") {
        return Some(SyncError::PoolerParameter(db.message().to_string()));
    }
    let code = db.code()?;
    POOLED_STATEMENT_CODES
        .contains(&code.as_ref())
        .then(|| SyncError::PoolerMode(db.message().to_string()))
}

impl From<rusqlite::Error> for SyncError {
    fn from(e: rusqlite::Error) -> Self {
        SyncError::Sqlite(e)
    }
}

impl From<sqlx::migrate::MigrateError> for SyncError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        use sqlx::migrate::MigrateError;
        match &e {
            MigrateError::Execute(db) | MigrateError::ExecuteMigration(db, _) => {
                pooler_refusal(db).unwrap_or(SyncError::Migrate(e))
            }
            _ => SyncError::Migrate(e),
        }
    }
}

/// SQLSTATE class 53 (insufficient resources) that passes on its own: the
/// server out of connection slots (53300, also "too many connections for
/// role"), memory or disk. A statement refused so did not commit. Not
/// 53400 (configuration_limit_exceeded, e.g. `temp_file_limit`), which the
/// same work meets again.
const OUT_OF_RESOURCES: [&str; 4] = ["53000", "53100", "53200", "53300"];

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

    /// True when PostgreSQL refused a statement as read-only (SQLSTATE
    /// 25006): the server is a standby in recovery (a failover half done),
    /// or, for a write, the role's, database's or server's transactions are
    /// read-only. A `LISTEN` is refused so only in recovery.
    pub fn is_read_only(&self) -> bool {
        const READ_ONLY_SQL_TRANSACTION: &str = "25006";
        matches!(self, SyncError::Database(sqlx::Error::Database(e))
            if e.code().is_some_and(|c| c == READ_ONLY_SQL_TRANSACTION))
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
        ) || matches!(self, SyncError::Database(sqlx::Error::Database(e)) if e.code().is_some_and(|c| c.starts_with("57") || c.starts_with("08") || OUT_OF_RESOURCES.contains(&c.as_ref())))
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

#[cfg(test)]
#[path = "error_tests.rs"]
mod tests;
