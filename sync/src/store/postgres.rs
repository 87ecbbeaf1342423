//! PostgreSQL: production and multi-node. Cursors are `(txid, seq)`. A
//! transaction can take a low seq and commit after one with a higher seq, so
//! reading "seq > cursor" would skip it for good. Instead every read also
//! takes the snapshot's xmin (the oldest transaction still running): below it
//! nothing can appear any more, so the cursor only ever advances to there.
//! Rows above it that are already visible are applied at once (low latency)
//! and simply seen again on the next pass until the horizon passes them.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgConnection, PgPool};

use super::{Backend, ChangeBatch, Ending, Notifier, Store, StoreOptions};

mod clock;
mod closing;
mod commit;
mod copy;
mod load;
mod migrate;
mod notifier;
mod prune;

// Pruning here goes in batches (`prune.rs`), so the shared single-statement
// deletes serve SQLite alone.
#[allow(dead_code)]
mod sql {
    super::super::common::shared_sql!(
        sqlx::PgConnection,
        "id IN (SELECT (jsonb_array_elements_text($1::jsonb))::bigint)",
        " FOR UPDATE",
        crate::store::rows::READ_META_POSTGRES
    );
}

use crate::crypto::SecretKey;
use crate::error::SyncError;
use crate::model::*;
use crate::store::{
    Audit, AuditQuery, AuditRecord, BootRecord, Mutation, Progress, TemplateVersion, WriteReport,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

pub const NOTIFY_CHANNEL: &str = "dialtone_changes";
pub use clock::CLOCK_OFFSET_METRIC;

pub struct PgStore {
    pool: PgPool,
    connect: PgConnectOptions,
    connect_timeout: Duration,
    key: SecretKey,
    max_catch_up_rows: i64,
    migration_locks: migrate::MigrationLocks,
    /// Set once this process has checked its key against the database's
    /// (`KeyChecked`).
    key_checked: super::KeyChecked,
    node_clock: clock::NodeClock,
    listener_heartbeat: notifier::Heartbeat,
}

impl PgStore {
    /// Connects lazily: a node that starts while the database is down can
    /// serve from its snapshot and connect when the database returns.
    pub async fn connect(
        url: &str,
        key: SecretKey,
        options: &StoreOptions,
    ) -> Result<Self, SyncError> {
        let connect = PgConnectOptions::from_str(url)?.application_name("dialtone");
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections.max(2))
            .acquire_timeout(options.acquire_timeout)
            .connect_lazy_with(connect.clone());
        Ok(PgStore {
            pool,
            connect,
            connect_timeout: options.acquire_timeout,
            key,
            max_catch_up_rows: options.max_catch_up_rows,
            migration_locks: migrate::MigrationLocks {
                wait: options.migration_lock_wait,
                retry_for: options.migration_retry_for,
                connect_timeout: options.acquire_timeout,
            },
            key_checked: Default::default(),
            node_clock: Default::default(),
            listener_heartbeat: Default::default(),
        })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// `pool.begin()`, in a task of its own so that it always finishes.
///
/// sqlx 0.8 counts a transaction only once `BEGIN` has been answered, and
/// queues a `ROLLBACK` on drop only for a counted one. A caller dropped while
/// `BEGIN` is on the wire (a client gone, a timeout) would leave the
/// connection inside a transaction block, and the pool, whose release check
/// does not look at the block, would hand it to the next borrower: its
/// statements would run, and hold their locks, inside that block. Here the
/// task finishes the `BEGIN`, and a transaction nobody waits for any more is
/// dropped counted, so its `ROLLBACK` is flushed on release.
/// (`tests/cancelled_write.rs` shows both.)
pub(super) async fn begin(
    pool: &PgPool,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, SyncError> {
    let pool = pool.clone();
    match tokio::spawn(async move { pool.begin().await }).await {
        Ok(begun) => Ok(begun?),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // Only a runtime shutting down cancels the task.
        Err(_) => Err(SyncError::Database(sqlx::Error::PoolClosed)),
    }
}

/// Must be the first statement of the transaction, before the snapshot is taken.
const READ_SNAPSHOT: &str = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY";
/// The read's snapshot: its xmin is the horizon below which nothing new can
/// appear, and its running list and xmax say what it saw above.
const CURRENT_SNAPSHOT: &str = "SELECT pg_current_snapshot()::text";

fn parse_snapshot(text: &str) -> Result<(i64, SeenAbove), SyncError> {
    SeenAbove::from_pg_snapshot(text)
        .ok_or_else(|| SyncError::Invalid(format!("unreadable snapshot from PostgreSQL: {text:?}")))
}
/// SQLSTATE of a lock not granted at once under `NOWAIT`.
const LOCK_NOT_AVAILABLE: &str = "55P03";

/// Whether `e` is PostgreSQL refusing a `NOWAIT` lock.
fn lock_not_available(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.code().as_deref() == Some(LOCK_NOT_AVAILABLE))
}

/// How a large read was done; an operator seeing `lock_queued` or
/// `no_connection` often knows why loads and imports ran slow.
#[derive(Clone, Copy)]
enum LargeRead {
    /// Two tables read at once, one on each connection.
    TwoConnections,
    /// One connection: another transaction waited to lock a table exclusively.
    LockQueued,
    /// One connection: a second could not be opened in time.
    NoConnection,
}

impl LargeRead {
    /// `read` is `mirror_load` or `import`.
    fn count(self, read: &'static str) {
        let connections = match self {
            LargeRead::TwoConnections => "two_connections",
            LargeRead::LockQueued => "lock_queued",
            LargeRead::NoConnection => "no_connection",
        };
        metrics::counter!(LARGE_READS_METRIC, "read" => read, "connections" => connections)
            .increment(1);
    }
}

/// The counter [`LargeRead::count`] increments (described by the binary).
const LARGE_READS_METRIC: &str = "dialtone_store_large_reads_total";

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    async fn ping(&self) -> Result<(), SyncError> {
        use sqlx::Connection;
        match tokio::time::timeout(
            self.connect_timeout,
            PgConnection::connect_with(&self.connect),
        )
        .await
        {
            Ok(Ok(conn)) => {
                let _ = conn.close().await;
                Ok(())
            }
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(SyncError::Database(sqlx::Error::PoolTimedOut)),
        }
    }

    async fn migrate(&self) -> Result<(), SyncError> {
        let mut conn = self.pool.acquire().await?;
        sql::refuse_newer(&mut conn, latest_known()).await?;
        // A wrong key is refused before it migrates anything.
        if sql::applied_migration(&mut conn).await?.is_some() {
            sql::check_key(&mut conn, &self.key, false).await?;
        }
        drop(conn);
        migrate::run(&MIGRATOR, &self.connect, &self.migration_locks).await?;
        let mut conn = self.pool.acquire().await?;
        sql::check_key(&mut conn, &self.key, true).await?;
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
        load::load(&self.pool).await
    }

    async fn changes_since(
        &self,
        cursor: Cursor,
        seen: Option<&SeenAbove>,
    ) -> Result<ChangeBatch, SyncError> {
        let mut tx = begin(&self.pool).await?;
        sqlx::query(READ_SNAPSHOT).execute(&mut *tx).await?;
        let snapshot: String = sqlx::query_scalar(CURRENT_SNAPSHOT)
            .fetch_one(&mut *tx)
            .await?;
        let (horizon, seen_now) = parse_snapshot(&snapshot)?;
        let meta = sql::read_meta(&mut tx).await?;
        // Transaction ids only grow in a cluster: ids behind the cursor
        // are a cluster restored to an earlier point, or another one.
        if seen_now.xmax < cursor.txid {
            return Ok(ChangeBatch {
                meta,
                rewound: true,
                next_cursor: cursor,
                ..Default::default()
            });
        }
        let entries: Vec<(String, i64)> = match seen {
            // Two index ranges: the transactions that were still running at
            // the last read, and those that started after it.
            Some(seen) => {
                let after = cursor.max(Cursor {
                    txid: seen.xmax,
                    seq: 0,
                });
                sqlx::query_as(
                    "SELECT entity, row_id FROM ( \
                       SELECT txid, seq, entity, row_id FROM change_log \
                       WHERE (txid, seq) > ($1::bigint::text::xid8, $2) \
                       UNION ALL \
                       SELECT txid, seq, entity, row_id FROM change_log \
                       WHERE txid IN (SELECT x::text::xid8 FROM unnest($3::bigint[]) AS x) \
                       AND (txid, seq) > ($4::bigint::text::xid8, $5) \
                     ) AS new ORDER BY txid, seq LIMIT $6",
                )
                .bind(after.txid)
                .bind(after.seq)
                .bind(&seen.running)
                .bind(cursor.txid)
                .bind(cursor.seq)
                .bind(self.max_catch_up_rows + 1)
                .fetch_all(&mut *tx)
                .await?
            }
            None => {
                sqlx::query_as(
                    "SELECT entity, row_id FROM change_log \
                     WHERE (txid, seq) > ($1::bigint::text::xid8, $2) ORDER BY txid, seq LIMIT $3",
                )
                .bind(cursor.txid)
                .bind(cursor.seq)
                .bind(self.max_catch_up_rows + 1)
                .fetch_all(&mut *tx)
                .await?
            }
        };
        if entries.len() as i64 > self.max_catch_up_rows {
            return Ok(ChangeBatch {
                meta,
                too_far_behind: true,
                next_cursor: cursor,
                ..Default::default()
            });
        }
        let changes = sql::reload_changes(&mut tx, &entries).await?;
        tx.commit().await?;
        // Every entry below the horizon was in this (complete) page.
        let next_cursor = cursor.max(Cursor {
            txid: horizon,
            seq: 0,
        });
        Ok(ChangeBatch {
            changes,
            next_cursor,
            meta,
            too_far_behind: false,
            rewound: false,
            seen_above: Some(std::sync::Arc::new(seen_now)),
        })
    }

    async fn meta(&self) -> Result<Meta, SyncError> {
        let mut conn = self.pool.acquire().await?;
        sql::read_meta(&mut conn).await
    }

    async fn notifier(&self) -> Result<Box<dyn Notifier>, SyncError> {
        let notifier = notifier::PgNotifier::open(
            &self.pool,
            &self.connect,
            self.connect_timeout,
            self.listener_heartbeat,
        )
        .await?;
        Ok(Box::new(notifier))
    }

    async fn apply_with_progress(
        &self,
        mutations: &[Mutation],
        audit: &Audit,
        progress: Option<Progress>,
        ending: Ending,
    ) -> Result<WriteReport, SyncError> {
        let mut tx = begin(&self.pool).await?;
        sql::check_once(&mut tx, &self.key, latest_known(), &self.key_checked).await?;
        let writes_before = if SecondReader::wanted(mutations) {
            Some(bulk_read::writes_counted(&mut tx).await?.0)
        } else {
            None
        };
        let second = SecondReader {
            connect: self.connect.clone(),
            timeout: self.connect_timeout,
            writes_before,
        };
        let report =
            sql::apply_all(&mut tx, &self.key, &second, mutations, audit, progress).await?;
        match ending {
            Ending::Commit => commit::settled(&self.pool, tx).await?,
            Ending::RollBack => tx.rollback().await?,
        }
        Ok(report)
    }

    async fn prune_change_log(&self, retain: Duration, max_rows: i64) -> Result<u64, SyncError> {
        prune::change_log(self, retain, max_rows).await
    }

    async fn bump_epoch(&self) -> Result<i64, SyncError> {
        let mut tx = begin(&self.pool).await?;
        let epoch = sql::restart_change_feed(&mut tx).await?;
        // Wake the other nodes: the epoch row is not itself mirrored.
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(NOTIFY_CHANNEL)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(epoch)
    }

    async fn record_boots(&self, records: &[BootRecord]) -> Result<(), SyncError> {
        let mut tx = begin(&self.pool).await?;
        sql::insert_boots(&mut tx, records).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn recent_boots(
        &self,
        mac: &Mac,
        tenant: Option<Id>,
        limit: i64,
    ) -> Result<Vec<BootRecord>, SyncError> {
        let mut conn = self.pool.acquire().await?;
        sql::recent_boots(&mut conn, mac, tenant, limit, false).await
    }

    async fn served_boots(
        &self,
        mac: &Mac,
        tenant: Id,
        limit: i64,
    ) -> Result<Vec<BootRecord>, SyncError> {
        let mut conn = self.pool.acquire().await?;
        sql::recent_boots(&mut conn, mac, Some(tenant), limit, true).await
    }

    async fn fleet_history(
        &self,
        tenant: Id,
        macs: &[Mac],
        since: Millis,
    ) -> Result<super::FleetHistory, SyncError> {
        let mut conn = self.pool.acquire().await?;
        sql::fleet_history(&mut conn, tenant, macs, since).await
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
        prune::aged(self, prune::Aged::History, retain).await
    }

    async fn prune_audit(&self, retain: Duration) -> Result<u64, SyncError> {
        prune::aged(self, prune::Aged::Audit, retain).await
    }

    async fn record_unclaimed(
        &self,
        devices: &[super::UnclaimedDevice],
        per_tenant: i64,
    ) -> Result<(), SyncError> {
        let mut tx = begin(&self.pool).await?;
        sql::upsert_unclaimed(&mut tx, devices, per_tenant).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn unclaimed_devices(
        &self,
        tenant: Id,
        limit: i64,
    ) -> Result<Vec<super::UnclaimedDevice>, SyncError> {
        let mut conn = self.pool.acquire().await?;
        sql::unclaimed_devices(&mut conn, tenant, limit).await
    }

    async fn unclaimed_counts(&self, only: Option<Id>) -> Result<Vec<(Id, i64)>, SyncError> {
        let mut conn = self.pool.acquire().await?;
        sql::unclaimed_counts(&mut conn, only).await
    }

    async fn remove_unclaimed(&self, tenant: Id, mac: &Mac) -> Result<bool, SyncError> {
        let mut conn = self.pool.acquire().await?;
        sql::delete_unclaimed(&mut conn, tenant, mac).await
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}

fn latest_known() -> i64 {
    MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
}

// Bulk imports: the hooks `store/bulk.rs` calls.
mod bulk;
mod bulk_quiet;
mod bulk_read;
use bulk::{drop_staging, lock_for_import, probe_joins, reserve_ids, stage_directory, Stager};
use bulk_quiet::{loud_change_log, quiet_change_log};
use bulk_read::{read_stored, SecondReader};
