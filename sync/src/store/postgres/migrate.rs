//! Migrations on PostgreSQL, each statement under a lock timeout. A
//! migration's `ALTER TABLE` asks for an exclusive lock; while it waits for
//! a transaction already on the table (an import, a node's load, a long
//! report), every later query on that table queues behind the request, so
//! a new node migrating during a rolling upgrade would stall every other
//! node's catch-up and admin writes for as long as that transaction runs.
//! A wait past [`MigrationLocks::wait`] is called off instead: the
//! migration's transaction rolls back whole (sqlx runs each migration and
//! its bookkeeping in one), the queue behind it moves on, and the run is
//! tried again on a fresh connection until [`MigrationLocks::retry_for`]
//! has passed, then fails with a message that says why. Another node's
//! migration (sqlx's advisory lock) is waited for the same way, and named:
//! the wait for it is no table in use.

use std::time::{Duration, Instant};

use sqlx::migrate::{Migrate, MigrateError, Migrator};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};

use crate::error::SyncError;

/// How long a try waits for one lock, and how long tries go on; and how
/// long a try's connection may take to open (the pool's acquire timeout).
pub(super) struct MigrationLocks {
    pub wait: Duration,
    pub retry_for: Duration,
    pub connect_timeout: Duration,
}

/// Between tries: long enough for the queue behind the called-off request
/// to drain, short against the transactions it waits for.
const PAUSE: Duration = Duration::from_millis(500);

/// How often a node waiting for another node's migration says it still is.
const STILL_WAITING_EVERY: Duration = Duration::from_secs(30);

pub(super) async fn run(
    migrator: &Migrator,
    connect: &PgConnectOptions,
    schema: &super::search_path::Pinned,
    locks: &MigrationLocks,
) -> Result<(), SyncError> {
    let started = Instant::now();
    // Set by statement, not as a startup option, which a connection
    // pooler in front of PostgreSQL may refuse. The session's setting
    // covers the migration lock too: a node waiting for another node's
    // migration tries again as well.
    let set_timeout = format!("SET lock_timeout = {}", locks.wait.as_millis().max(1));
    let mut attempt = 0u32;
    let mut told_turn_at: Option<Instant> = None;
    loop {
        attempt += 1;
        let mut conn = tokio::time::timeout(locks.connect_timeout, schema.connect(connect))
            .await
            .map_err(|_| SyncError::Database(sqlx::Error::PoolTimedOut))??;
        sqlx::query(&set_timeout).execute(&mut conn).await?;
        let tried = try_once(migrator, &mut conn).await;
        let tried = match tried {
            Err(Stopped::Failed(e)) => Err(Stopped::Failed(
                super::sql::newer_schema_or(&mut conn, super::latest_known(), e).await,
            )),
            other => other,
        };
        // Also lets go of the migration lock, held by the session.
        let _ = conn.close().await;
        let in_time = started.elapsed() < locks.retry_for;
        match tried {
            Ok(()) => return Ok(()),
            Err(Stopped::OtherNodeMigrating(e)) => {
                if !in_time {
                    return Err(SyncError::MigrationLocked {
                        tried_s: started.elapsed().as_secs(),
                        detail: format!(
                            "the wait is for another node's migration of the schema: that node \
                             holds the migration lock ({e})"
                        ),
                    });
                }
                if told_turn_at.is_none_or(|at| at.elapsed() >= STILL_WAITING_EVERY) {
                    tracing::warn!(
                        waited_s = started.elapsed().as_secs(),
                        "migration: another node is migrating the schema (it holds the \
                         migration lock); waiting for it to finish"
                    );
                    told_turn_at = Some(Instant::now());
                }
            }
            Err(Stopped::TableInUse(e)) => {
                if !in_time {
                    return Err(SyncError::MigrationLocked {
                        tried_s: started.elapsed().as_secs(),
                        detail: e.to_string(),
                    });
                }
                tracing::warn!(
                    attempt,
                    error = %e,
                    wait_ms = locks.wait.as_millis() as u64,
                    "migration: a table it alters is in use; stepped back so that \
                     queries on it are not held up, trying again"
                );
            }
            Err(Stopped::Failed(e)) => return Err(e),
        }
        tokio::time::sleep(PAUSE).await;
    }
}

/// Why a try did not migrate.
enum Stopped {
    /// Another session holds the migration lock: a node migrating.
    OtherNodeMigrating(MigrateError),
    /// A table a migration alters was locked past the wait.
    TableInUse(MigrateError),
    Failed(SyncError),
}

/// One try on `conn`. The migration lock is taken here before sqlx's run
/// takes it again (a session's advisory locks stack, and the second is
/// granted at once): a wait for it is then told apart from a wait for a
/// table, and a node that waits for another node's migration says so.
async fn try_once(migrator: &Migrator, conn: &mut PgConnection) -> Result<(), Stopped> {
    match conn.lock().await {
        Ok(()) => {}
        Err(e) if lock_timed_out(&e) => return Err(Stopped::OtherNodeMigrating(e)),
        Err(e) => return Err(Stopped::Failed(e.into())),
    }
    // `run` would take the connection through `Acquire`, whose future
    // is not `Send` for every lifetime inside an `async_trait` method;
    // sqlx offers `run_direct` for that.
    match migrator.run_direct(conn).await {
        Ok(()) => Ok(()),
        Err(e) if lock_timed_out(&e) => Err(Stopped::TableInUse(e)),
        Err(e) => Err(Stopped::Failed(e.into())),
    }
}

fn lock_timed_out(e: &MigrateError) -> bool {
    match e {
        MigrateError::Execute(e) | MigrateError::ExecuteMigration(e, _) => {
            super::lock_not_available(e)
        }
        _ => false,
    }
}
