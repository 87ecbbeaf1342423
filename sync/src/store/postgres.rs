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
use closing::{ClosedUnlessReleased, Pool};

mod changes;
mod clock;
mod closing;
mod commit;
mod complete;
mod copy;
mod load;
mod migrate;
mod notifier;
mod prune;
mod rekey;
mod search_path;
mod timeline;
mod write;

// Pruning here goes in batches (`prune.rs`), so the shared single-statement
// deletes serve SQLite alone.
#[allow(dead_code)]
mod sql {
    super::super::common::shared_sql!(
        sqlx::PgConnection,
        "id IN (SELECT (jsonb_array_elements_text($1::jsonb))::bigint)",
        " FOR UPDATE",
        crate::store::rows::READ_META_POSTGRES,
        "SELECT jsonb_array_elements_text($2::jsonb)"
    );
}

use crate::crypto::SecretKey;
use crate::error::SyncError;
use crate::model::*;
use crate::skew::trusted_until;
use crate::store::{
    Audit, AuditQuery, AuditRecord, BootRecord, Mutation, Progress, TemplateVersion, WriteReport,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

pub const NOTIFY_CHANNEL: &str = "dialtone_changes";
pub use clock::CLOCK_OFFSET_METRIC;

pub struct PgStore {
    pool: Pool,
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
    /// The schema every connection is pinned to (`search_path.rs`).
    schema: search_path::Pinned,
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
        let schema = search_path::Pinned::default();
        let pinned = schema.clone();
        let pool = Pool::connect_lazy(
            PgPoolOptions::new()
                .max_connections(options.max_connections.max(2))
                .acquire_timeout(options.acquire_timeout)
                .after_connect(move |conn, _| {
                    let pinned = pinned.clone();
                    Box::pin(async move { pinned.pin_pooled(conn).await })
                }),
            connect.clone(),
        );
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
            schema,
        })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
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

/// SQLSTATE feature_not_supported, the code PostgreSQL also gives a
/// prepared statement it will no longer run.
const FEATURE_NOT_SUPPORTED: &str = "0A000";

/// Whether `e` is PostgreSQL refusing a prepared statement because a column
/// it returns changed type, typmod or collation since it was prepared
/// ("cached plan must not change result type"). The routine tells it from
/// the code's other uses, in any server language.
fn is_stale_cached_plan(e: &SyncError) -> bool {
    let SyncError::Database(sqlx::Error::Database(db)) = e else {
        return false;
    };
    db.code().as_deref() == Some(FEATURE_NOT_SUPPORTED)
        && db
            .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
            .and_then(|pg| pg.routine())
            == Some("RevalidateCachedQuery")
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

impl PgStore {
    /// Runs `work` a second time when it failed on a statement whose plan
    /// went stale (`closing::Pool`): the connections that held it are
    /// retired by then, so the second try prepares afresh, and the
    /// watcher's catch-up or an admin write that met the change succeeds
    /// instead of failing until the next poll or the user's next try.
    async fn once_more_if_stale<T, F, Fut>(&self, mut work: F) -> Result<T, SyncError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, SyncError>>,
    {
        match work().await {
            Err(e) if is_stale_cached_plan(&e) => work().await,
            done => done,
        }
    }
}

/// Every call holds its pool connection as [`ClosedUnlessReleased`]: any
/// of them may be cut off by its caller's time limit (`closing.rs` says
/// whose), and one cut off on a silent socket would keep its slot of the
/// pool through sqlx's release ping.
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
        search_path::prepare(&self.connect, &self.schema, self.connect_timeout).await?;
        let mut conn = ClosedUnlessReleased::acquire(&self.pool).await?;
        let checked = async {
            sql::refuse_newer(conn.conn(), latest_known()).await?;
            // A wrong key is refused before it migrates anything.
            if sql::applied_migration(conn.conn()).await?.is_some() {
                sql::check_key(conn.conn(), &self.key, false).await?;
            }
            Ok(())
        }
        .await;
        conn.settle(checked).await?;
        migrate::run(
            &MIGRATOR,
            &self.connect,
            &self.schema,
            &self.migration_locks,
        )
        .await?;
        let mut conn = ClosedUnlessReleased::acquire(&self.pool).await?;
        let checked = sql::check_key(conn.conn(), &self.key, true).await;
        conn.settle(checked).await?;
        self.key_checked.set();
        Ok(())
    }

    async fn check_schema(&self) -> Result<(), SyncError> {
        search_path::prepare(&self.connect, &self.schema, self.connect_timeout).await?;
        let mut conn = ClosedUnlessReleased::acquire(&self.pool).await?;
        let checked = async {
            sql::check_schema(conn.conn(), latest_known()).await?;
            sql::check_key(conn.conn(), &self.key, true).await
        }
        .await;
        conn.settle(checked).await?;
        self.key_checked.set();
        Ok(())
    }

    async fn load_tables(&self) -> Result<(crate::mirror::Loading, Cursor, Meta), SyncError> {
        self.once_more_if_stale(|| load::load(&self.pool)).await
    }

    async fn changes_since(
        &self,
        cursor: Cursor,
        seen: Option<&SeenAbove>,
    ) -> Result<ChangeBatch, SyncError> {
        self.once_more_if_stale(|| async move {
            let mut conn = ClosedUnlessReleased::acquire(&self.pool).await?;
            let read = changes::since(&mut conn, self.max_catch_up_rows, cursor, seen).await;
            conn.settle(read).await
        })
        .await
    }

    async fn meta(&self) -> Result<Meta, SyncError> {
        let mut conn = ClosedUnlessReleased::acquire(&self.pool).await?;
        let read = sql::read_meta(conn.conn()).await;
        conn.settle(read).await
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
        // A statement that failed on its stale plan aborted the
        // transaction before its COMMIT was sent: nothing was written.
        self.once_more_if_stale(|| write::apply(self, mutations, audit, progress.clone(), ending))
            .await
    }

    async fn prune_change_log(&self, retain: Duration, max_rows: i64) -> Result<u64, SyncError> {
        prune::change_log(self, retain, max_rows).await
    }

    async fn bump_epoch(&self) -> Result<i64, SyncError> {
        let mut conn = ClosedUnlessReleased::acquire(&self.pool).await?;
        let bumped = async {
            let mut tx = conn.begin().await?;
            let epoch = sql::restart_change_feed(&mut tx).await?;
            // Wake the other nodes: the epoch row is not itself mirrored.
            sqlx::query("SELECT pg_notify($1, '')")
                .bind(NOTIFY_CHANNEL)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(epoch)
        }
        .await;
        conn.settle(bumped).await
    }

    async fn rekey(
        &self,
        new_key: &SecretKey,
        audit: &Audit,
    ) -> Result<super::RekeyReport, SyncError> {
        rekey::run(self, new_key, audit).await
    }

    async fn record_boots(&self, records: &[BootRecord]) -> Result<(), SyncError> {
        let mut conn = ClosedUnlessReleased::acquire(&self.pool).await?;
        let written = async {
            let mut tx = conn.begin().await?;
            sql::insert_boots(&mut tx, records).await?;
            Ok(tx.commit().await?)
        }
        .await;
        conn.settle(written).await
    }

    async fn recent_boots(
        &self,
        mac: &Mac,
        tenant: Option<Id>,
        limit: i64,
    ) -> Result<Vec<BootRecord>, SyncError> {
        let mut conn = ClosedUnlessReleased::acquire(&self.pool).await?;
        let read = sql::recent_boots(
            conn.conn(),
            mac,
            tenant,
            limit,
            false,
            trusted_until(now_millis()),
        )
        .await;
        conn.settle(read).await
    }

    async fn served_boots(
        &self,
        mac: &Mac,
        tenant: Id,
        stamped_by: Millis,
        limit: i64,
    ) -> Result<Vec<BootRecord>, SyncError> {
        let mut conn = ClosedUnlessReleased::acquire(&self.pool).await?;
        let read = sql::recent_boots(conn.conn(), mac, Some(tenant), limit, true, stamped_by).await;
        conn.settle(read).await
    }

    async fn fleet_history(
        &self,
        tenant: Id,
        macs: &[Mac],
        since: Millis,
    ) -> Result<super::FleetHistory, SyncError> {
        let mut conn = ClosedUnlessReleased::acquire(&self.pool).await?;
        let read = sql::fleet_history(
            conn.conn(),
            tenant,
            macs,
            since,
            trusted_until(now_millis()),
        )
        .await;
        conn.settle(read).await
    }

    async fn template_versions(&self, template_id: Id) -> Result<Vec<TemplateVersion>, SyncError> {
        let mut conn = ClosedUnlessReleased::acquire(&self.pool).await?;
        let read = sql::template_versions(conn.conn(), template_id).await;
        conn.settle(read).await
    }

    async fn template_version_list(
        &self,
        template_id: Id,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<super::TemplateVersionSummary>, SyncError> {
        let mut conn = ClosedUnlessReleased::acquire(&self.pool).await?;
        let read = sql::template_version_list(conn.conn(), template_id, before, limit).await;
        conn.settle(read).await
    }

    async fn template_version(
        &self,
        template_id: Id,
        version: i64,
    ) -> Result<Option<TemplateVersion>, SyncError> {
        let mut conn = ClosedUnlessReleased::acquire(&self.pool).await?;
        let read = sql::template_version(conn.conn(), template_id, version).await;
        conn.settle(read).await
    }

    async fn audit_log(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, SyncError> {
        let mut conn = ClosedUnlessReleased::acquire(&self.pool).await?;
        let read = sql::audit_log(conn.conn(), query).await;
        conn.settle(read).await
    }

    async fn prune_boots(&self, retain: Duration) -> Result<u64, SyncError> {
        prune::aged(self, prune::Aged::History, retain).await
    }

    async fn prune_audit(&self, retain: Duration) -> Result<u64, SyncError> {
        prune::aged(self, prune::Aged::Audit, retain).await
    }

    async fn prune_tokens(&self, retain: Duration) -> Result<u64, SyncError> {
        prune::aged(self, prune::Aged::Tokens, retain).await
    }

    async fn record_unclaimed(
        &self,
        devices: &[super::UnclaimedDevice],
        per_tenant: i64,
    ) -> Result<(), SyncError> {
        let trusted = trusted_until(now_millis());
        let mut conn = ClosedUnlessReleased::acquire(&self.pool).await?;
        let written = async {
            let mut tx = conn.begin().await?;
            sql::upsert_unclaimed(&mut tx, devices, per_tenant, trusted).await?;
            Ok(tx.commit().await?)
        }
        .await;
        conn.settle(written).await
    }

    async fn unclaimed_devices(
        &self,
        tenant: Id,
        limit: i64,
    ) -> Result<Vec<super::UnclaimedDevice>, SyncError> {
        let mut conn = ClosedUnlessReleased::acquire(&self.pool).await?;
        let read =
            sql::unclaimed_devices(conn.conn(), tenant, limit, trusted_until(now_millis())).await;
        conn.settle(read).await
    }

    async fn unclaimed_counts(&self, only: Option<Id>) -> Result<Vec<(Id, i64)>, SyncError> {
        let mut conn = ClosedUnlessReleased::acquire(&self.pool).await?;
        let read = sql::unclaimed_counts(conn.conn(), only).await;
        conn.settle(read).await
    }

    async fn remove_unclaimed(&self, tenant: Id, mac: &Mac) -> Result<bool, SyncError> {
        let mut conn = ClosedUnlessReleased::acquire(&self.pool).await?;
        let read = sql::delete_unclaimed(conn.conn(), tenant, mac).await;
        conn.settle(read).await
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
