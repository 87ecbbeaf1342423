//! The embedded default. WAL mode: readers never block the writer. With
//! `synchronous=FULL`, each commit's WAL frames reach the disk before the
//! commit returns: with `NORMAL` a power cut could take back a write the
//! API had answered 201 for (a tenant, a phone, a token and its audit
//! row). It costs one fsync a transaction; writes are few and imports are
//! one transaction.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, Sqlite, SqliteConnection, SqlitePool};
use tokio::sync::Notify;

use super::{Backend, ChangeBatch, Ending, Notifier, Store, StoreOptions};

mod borrowed;
mod clock;
mod load;
mod migrate;
mod rekey;
mod sql {
    super::super::common::shared_sql!(
        sqlx::SqliteConnection,
        "id IN (SELECT value FROM json_each($1))",
        "",
        crate::store::rows::READ_META,
        "SELECT value FROM json_each($2)"
    );
}

use crate::crypto::SecretKey;
use crate::error::SyncError;
use crate::model::*;
use crate::skew::trusted_until;
use crate::store::rekey::KEY_CHECK_NOW;
use crate::store::{
    Audit, AuditQuery, AuditRecord, BootRecord, Mutation, Progress, TemplateVersion, WriteReport,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

/// How often the watcher asks SQLite whether another process wrote.
const DATA_VERSION_POLL: Duration = Duration::from_millis(500);

pub struct SqliteStore {
    pool: SqlitePool,
    connect: SqliteConnectOptions,
    load_source: load::LoadSource,
    key: SecretKey,
    max_catch_up_rows: i64,
    /// Our own commits wake the watcher at once instead of at the next poll.
    local_commit: Arc<Notify>,
    key_checked: super::KeyChecked,
    /// Anchored here, so a clock stepped forward while the store is open
    /// cannot empty the pruned tables.
    prune_clock: clock::PruneClock,
}

impl SqliteStore {
    pub async fn connect(
        url: &str,
        key: SecretKey,
        options: &StoreOptions,
    ) -> Result<Self, SyncError> {
        let (connect, pool) = Self::options(url, options)?;
        let pool = migrate::open_pool(pool, &connect, options.busy_timeout).await?;
        Ok(Self::with_pool(pool, connect, key, options))
    }

    /// Opens nothing yet: each use opens the file until it opens, as a
    /// PostgreSQL store connects. For a node that serves its snapshot
    /// while the file cannot be opened (a full disk, a read-only mount).
    pub fn connect_lazily(
        url: &str,
        key: SecretKey,
        options: &StoreOptions,
    ) -> Result<Self, SyncError> {
        let (connect, pool) = Self::options(url, options)?;
        migrate::create_private(&connect);
        let pool = pool.connect_lazy_with(connect.clone());
        Ok(Self::with_pool(pool, connect, key, options))
    }

    fn options(
        url: &str,
        options: &StoreOptions,
    ) -> Result<(SqliteConnectOptions, SqlitePoolOptions), SyncError> {
        let connect = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(options.busy_timeout)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(options.max_connections.max(2))
            .acquire_timeout(options.acquire_timeout);
        Ok((connect, pool))
    }

    fn with_pool(
        pool: SqlitePool,
        connect: SqliteConnectOptions,
        key: SecretKey,
        options: &StoreOptions,
    ) -> Self {
        SqliteStore {
            pool,
            load_source: load::LoadSource::new(&connect, options.busy_timeout),
            connect,
            key,
            max_catch_up_rows: options.max_catch_up_rows,
            local_commit: Arc::new(Notify::new()),
            key_checked: Default::default(),
            prune_clock: Default::default(),
        }
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// SQLite's deferred transactions fail with SQLITE_BUSY when a reader
    /// upgrades to a writer while another process writes; BEGIN IMMEDIATE
    /// takes the write lock up front, so busy_timeout can do its job.
    async fn write_txn<T, F>(&self, body: F) -> Result<T, SyncError>
    where
        F: for<'c> FnOnce(
            &'c mut SqliteConnection,
        ) -> futures::future::BoxFuture<'c, Result<T, SyncError>>,
    {
        let mut writing = Writing::begin(&self.pool).await?;
        let result = body(writing.conn()).await;
        self.end(writing, result, Ending::Commit).await
    }

    /// Commits (`Ending::Commit` and `result` Ok) or rolls back the
    /// write transaction, and answers `result` or the commit's error.
    async fn end<T>(
        &self,
        mut writing: Writing,
        result: Result<T, SyncError>,
        ending: Ending,
    ) -> Result<T, SyncError> {
        let result = match (result, ending) {
            (Ok(value), Ending::Commit) => {
                match sqlx::query("COMMIT").execute(writing.conn()).await {
                    Ok(_) => {
                        drop(writing.release());
                        self.local_commit.notify_one();
                        return Ok(value);
                    }
                    Err(e) => Err(e.into()),
                }
            }
            // A failure, or a rehearsal.
            (result, _) => result,
        };
        match sqlx::query("ROLLBACK").execute(writing.conn()).await {
            Ok(_) => drop(writing.release()),
            // Never hand a connection with an open transaction back to the
            // pool; closing it rolls back.
            Err(_) => {
                let _ = writing.release().detach().close().await;
            }
        }
        result
    }
}

/// A pooled connection inside BEGIN IMMEDIATE, until [`SqliteStore::end`]
/// releases it. The transaction is ours, not a sqlx `Transaction`: that one
/// would roll back on drop too, but it keeps the connection, so `end` could
/// not close one whose ROLLBACK failed, and its depth count stays up when
/// SQLite has already rolled back by itself (SQLITE_FULL, say), so every
/// later `begin_with` on that pooled connection would fail.
struct Writing(Option<PoolConnection<Sqlite>>);

impl Writing {
    async fn begin(pool: &SqlitePool) -> Result<Writing, SyncError> {
        // Armed before BEGIN: waiting out busy_timeout for the lock is where
        // a cancelled write most likely is, and the BEGIN goes on to take
        // the lock on its connection with no one left to await it.
        let mut writing = Writing(Some(pool.acquire().await?));
        if let Err(e) = sqlx::query("BEGIN IMMEDIATE").execute(writing.conn()).await {
            // No transaction began: the connection is fit for the pool.
            drop(writing.release());
            return Err(e.into());
        }
        Ok(writing)
    }

    fn conn(&mut self) -> &mut SqliteConnection {
        self.0.as_mut().expect("a write transaction's connection")
    }

    fn release(&mut self) -> PoolConnection<Sqlite> {
        self.0.take().expect("a write transaction's connection")
    }
}

impl Drop for Writing {
    /// Dropped before `end`: the write's future was cancelled (a client gone
    /// mid-import, hyper dropping its handler) or a panic unwound. Back in
    /// the pool the connection would keep the transaction: SQLite's write
    /// lock, so every other writer gets "database is locked", and its partial
    /// write, seen by its next reader. Closed instead, SQLite rolls back; no
    /// await is possible here, and closing needs none.
    fn drop(&mut self) {
        if let Some(conn) = self.0.take() {
            drop(conn.detach());
        }
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    async fn ping(&self) -> Result<(), SyncError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn migrate(&self) -> Result<(), SyncError> {
        migrate::run(
            &MIGRATOR,
            &self.pool,
            &self.connect,
            &self.key,
            latest_known(),
        )
        .await?;
        self.key_checked.set();
        Ok(())
    }

    async fn check_schema(&self) -> Result<(), SyncError> {
        let mut conn = self.pool.acquire().await?;
        sql::check_schema(&mut conn, latest_known()).await?;
        sql::check_key(&mut conn, &self.key, true).await?;
        self.key_checked.set();
        Ok(())
    }

    async fn load_tables(&self) -> Result<(crate::mirror::Loading, Cursor, Meta), SyncError> {
        let source = self.load_source.clone();
        let cancel = std::sync::Arc::new(load::LoadCancel::default());
        // Dropped with this future: a catch-up given up stops its load.
        // Dropped after the load ended, it changes nothing.
        struct CancelOnDrop(std::sync::Arc<load::LoadCancel>);
        impl Drop for CancelOnDrop {
            fn drop(&mut self) {
                self.0.cancel();
            }
        }
        let _cancel_on_drop = CancelOnDrop(cancel.clone());
        tokio::task::spawn_blocking(move || source.load(&cancel))
            .await
            .map_err(|e| SyncError::Invalid(format!("mirror load failed: {e}")))?
    }

    async fn changes_since(
        &self,
        cursor: Cursor,
        _seen: Option<&SeenAbove>,
    ) -> Result<ChangeBatch, SyncError> {
        let mut conn = self.pool.acquire().await?;
        let mut tx = conn.begin().await?;
        let meta = sql::read_meta(&mut tx).await?;
        // AUTOINCREMENT's counter outlives the rows `reload-all` and
        // pruning delete, so it is below a cursor only in an older copy.
        let issued: i64 = sqlx::query_scalar(
            "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'change_log'), 0)",
        )
        .fetch_one(&mut *tx)
        .await?;
        if issued < cursor.seq {
            return Ok(ChangeBatch {
                meta,
                rewound: true,
                next_cursor: cursor,
                ..Default::default()
            });
        }
        let entries: Vec<(i64, String, i64)> = sqlx::query_as(
            "SELECT seq, entity, row_id FROM change_log WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(cursor.seq)
        .bind(self.max_catch_up_rows + 1)
        .fetch_all(&mut *tx)
        .await?;
        if entries.len() as i64 > self.max_catch_up_rows {
            return Ok(ChangeBatch {
                meta,
                too_far_behind: true,
                next_cursor: cursor,
                ..Default::default()
            });
        }
        let next_cursor = entries
            .last()
            .map_or(cursor, |(seq, _, _)| Cursor { txid: 0, seq: *seq });
        let keys: Vec<(String, Id)> = entries.into_iter().map(|(_, e, id)| (e, id)).collect();
        let changes = sql::reload_changes(&mut tx, &keys).await?;
        tx.commit().await?;
        Ok(ChangeBatch {
            changes,
            next_cursor,
            meta,
            too_far_behind: false,
            rewound: false,
            seen_above: None,
        })
    }

    async fn meta(&self) -> Result<Meta, SyncError> {
        let mut conn = self.pool.acquire().await?;
        sql::read_meta(&mut conn).await
    }

    async fn notifier(&self) -> Result<Box<dyn Notifier>, SyncError> {
        // data_version is per connection and changes only for other
        // connections' commits, so the notifier keeps a connection of its own.
        let mut conn = SqliteConnection::connect_with(&self.connect).await?;
        let version = data_version(&mut conn).await?;
        Ok(Box::new(SqliteNotifier {
            conn,
            version,
            local_commit: self.local_commit.clone(),
        }))
    }

    async fn apply_with_progress(
        &self,
        mutations: &[Mutation],
        audit: &Audit,
        progress: Option<Progress>,
        ending: Ending,
    ) -> Result<WriteReport, SyncError> {
        // Not through `write_txn`: its closure would need the mutations
        // copied (an import's are hundreds of MB).
        let mut writing = Writing::begin(&self.pool).await?;
        let checked =
            sql::check_once(writing.conn(), &self.key, latest_known(), &self.key_checked).await;
        if let Err(e) = checked {
            return self.end(writing, Err(e), Ending::RollBack).await;
        }
        let result = sql::apply_all(
            writing.conn(),
            &self.key,
            &SecondReader,
            mutations,
            audit,
            progress,
            ending,
        )
        .await;
        // Inside BEGIN IMMEDIATE, so no re-key commits between this read
        // and the commit.
        let result = match result {
            Ok(report) => sql::confirm_key_unchanged(writing.conn(), &self.key, KEY_CHECK_NOW)
                .await
                .map(|()| report),
            refused => refused,
        };
        self.end(writing, result, ending).await
    }

    async fn prune_change_log(&self, retain: Duration, max_rows: i64) -> Result<u64, SyncError> {
        let cutoff = self.prune_clock.cutoff(retain);
        self.write_txn(move |conn| {
            Box::pin(async move {
                let through: Option<i64> = sqlx::query_scalar(
                    "SELECT max(seq) FROM change_log WHERE at < $1 \
                     OR seq <= (SELECT COALESCE(max(seq), 0) FROM change_log) - $2",
                )
                .bind(cutoff)
                .bind(max_rows)
                .fetch_one(&mut *conn)
                .await?;
                let Some(through) = through else { return Ok(0) };
                let deleted = sqlx::query("DELETE FROM change_log WHERE seq <= $1")
                    .bind(through)
                    .execute(&mut *conn)
                    .await?
                    .rows_affected();
                sqlx::query(
                    "UPDATE dialtone_meta SET pruned_txid = 0, pruned_seq = max(pruned_seq, $1) WHERE singleton = 1",
                )
                .bind(through)
                .execute(&mut *conn)
                .await?;
                Ok(deleted)
            })
        })
        .await
    }

    async fn bump_epoch(&self) -> Result<i64, SyncError> {
        self.write_txn(|conn| Box::pin(async move { sql::restart_change_feed(conn).await }))
            .await
    }

    async fn rekey(
        &self,
        new_key: &SecretKey,
        audit: &Audit,
    ) -> Result<super::RekeyReport, SyncError> {
        rekey::run(self, new_key, audit).await
    }

    async fn record_boots(&self, records: &[BootRecord]) -> Result<(), SyncError> {
        let records = records.to_vec();
        // Not a mirrored table: no need to wake the watcher, but the write
        // still takes the lock properly.
        self.write_txn(move |conn| Box::pin(async move { sql::insert_boots(conn, &records).await }))
            .await
    }

    async fn recent_boots(
        &self,
        mac: &Mac,
        tenant: Option<Id>,
        limit: i64,
    ) -> Result<Vec<BootRecord>, SyncError> {
        let mut conn = self.pool.acquire().await?;
        sql::recent_boots(
            &mut conn,
            mac,
            tenant,
            limit,
            false,
            trusted_until(now_millis()),
        )
        .await
    }

    async fn served_boots(
        &self,
        mac: &Mac,
        tenant: Id,
        stamped_by: Millis,
        limit: i64,
    ) -> Result<Vec<BootRecord>, SyncError> {
        let mut conn = self.pool.acquire().await?;
        sql::recent_boots(&mut conn, mac, Some(tenant), limit, true, stamped_by).await
    }

    async fn fleet_history(
        &self,
        tenant: Id,
        macs: &[Mac],
        since: Millis,
    ) -> Result<super::FleetHistory, SyncError> {
        let mut conn = self.pool.acquire().await?;
        sql::fleet_history(&mut conn, tenant, macs, since, trusted_until(now_millis())).await
    }

    async fn template_versions(&self, template_id: Id) -> Result<Vec<TemplateVersion>, SyncError> {
        let mut conn = self.pool.acquire().await?;
        sql::template_versions(&mut conn, template_id).await
    }

    async fn template_version_list(
        &self,
        template_id: Id,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<super::TemplateVersionSummary>, SyncError> {
        let mut conn = self.pool.acquire().await?;
        sql::template_version_list(&mut conn, template_id, before, limit).await
    }

    async fn template_version(
        &self,
        template_id: Id,
        version: i64,
    ) -> Result<Option<TemplateVersion>, SyncError> {
        let mut conn = self.pool.acquire().await?;
        sql::template_version(&mut conn, template_id, version).await
    }

    async fn audit_log(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, SyncError> {
        let mut conn = self.pool.acquire().await?;
        sql::audit_log(&mut conn, query).await
    }

    async fn prune_boots(&self, retain: Duration) -> Result<u64, SyncError> {
        let cutoff = self.prune_clock.cutoff(retain);
        self.write_txn(move |conn| {
            Box::pin(async move { sql::delete_boots_before(conn, cutoff).await })
        })
        .await
    }

    async fn prune_audit(&self, retain: Duration) -> Result<u64, SyncError> {
        let cutoff = self.prune_clock.cutoff(retain);
        self.write_txn(move |conn| {
            Box::pin(async move { sql::delete_audit_before(conn, cutoff).await })
        })
        .await
    }

    async fn prune_tokens(&self, retain: Duration) -> Result<u64, SyncError> {
        let cutoff = self.prune_clock.cutoff(retain);
        self.write_txn(move |conn| {
            Box::pin(async move { sql::delete_tokens_ended_before(conn, cutoff).await })
        })
        .await
    }

    async fn record_unclaimed(
        &self,
        devices: &[super::UnclaimedDevice],
        per_tenant: i64,
    ) -> Result<(), SyncError> {
        let devices = devices.to_vec();
        let trusted = trusted_until(now_millis());
        self.write_txn(move |conn| {
            Box::pin(
                async move { sql::upsert_unclaimed(conn, &devices, per_tenant, trusted).await },
            )
        })
        .await
    }

    async fn unclaimed_devices(
        &self,
        tenant: Id,
        limit: i64,
    ) -> Result<Vec<super::UnclaimedDevice>, SyncError> {
        let mut conn = self.pool.acquire().await?;
        sql::unclaimed_devices(&mut conn, tenant, limit, trusted_until(now_millis())).await
    }

    async fn unclaimed_counts(&self, only: Option<Id>) -> Result<Vec<(Id, i64)>, SyncError> {
        let mut conn = self.pool.acquire().await?;
        sql::unclaimed_counts(&mut conn, only).await
    }

    async fn remove_unclaimed(&self, tenant: Id, mac: &Mac) -> Result<bool, SyncError> {
        let mac = *mac;
        self.write_txn(move |conn| {
            Box::pin(async move { sql::delete_unclaimed(conn, tenant, &mac).await })
        })
        .await
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}

fn latest_known() -> i64 {
    MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
}

async fn data_version(conn: &mut SqliteConnection) -> Result<i64, SyncError> {
    Ok(sqlx::query_scalar("PRAGMA data_version")
        .fetch_one(&mut *conn)
        .await?)
}

struct SqliteNotifier {
    conn: SqliteConnection,
    version: i64,
    local_commit: Arc<Notify>,
}

#[async_trait]
impl Notifier for SqliteNotifier {
    async fn wait(&mut self) -> Result<(), SyncError> {
        loop {
            tokio::select! {
                _ = self.local_commit.notified() => return Ok(()),
                _ = tokio::time::sleep(DATA_VERSION_POLL) => {
                    let version = data_version(&mut self.conn).await?;
                    if version != self.version {
                        self.version = version;
                        return Ok(());
                    }
                }
            }
        }
    }
}

// Bulk imports: the hooks `store/bulk.rs` calls.
mod bulk;
use bulk::{
    drop_staging, lock_for_import, loud_change_log, probe_joins, quiet_change_log, read_stored,
    reserve_ids, stage_directory, SecondReader, Stager,
};
