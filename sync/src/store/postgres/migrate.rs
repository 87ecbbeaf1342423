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
//! has passed, then fails with a message that says why.

use std::time::{Duration, Instant};

use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};

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

pub(super) async fn run(
    migrator: &Migrator,
    connect: &PgConnectOptions,
    locks: &MigrationLocks,
) -> Result<(), SyncError> {
    let started = Instant::now();
    // Set by statement, not as a startup option, which a connection
    // pooler in front of PostgreSQL may refuse. The session's setting
    // covers sqlx's advisory lock too: a node waiting for another node's
    // migration tries again as well.
    let set_timeout = format!("SET lock_timeout = {}", locks.wait.as_millis().max(1));
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let mut conn = tokio::time::timeout(locks.connect_timeout, connect.connect())
            .await
            .map_err(|_| SyncError::Database(sqlx::Error::PoolTimedOut))??;
        sqlx::query(&set_timeout).execute(&mut conn).await?;
        // `run` would take the connection through `Acquire`, whose future
        // is not `Send` for every lifetime inside an `async_trait` method;
        // sqlx offers `run_direct` for that.
        let ran = migrator.run_direct(&mut conn).await;
        let _ = conn.close().await;
        match ran {
            Ok(()) => return Ok(()),
            Err(e) if lock_timed_out(&e) && started.elapsed() < locks.retry_for => {
                tracing::warn!(
                    attempt,
                    error = %e,
                    wait_ms = locks.wait.as_millis() as u64,
                    "migration: a table it alters is in use; stepped back so that \
                     queries on it are not held up, trying again"
                );
                tokio::time::sleep(PAUSE).await;
            }
            Err(e) if lock_timed_out(&e) => {
                return Err(SyncError::MigrationLocked {
                    tried_s: started.elapsed().as_secs(),
                    detail: e.to_string(),
                })
            }
            Err(e) => return Err(e.into()),
        }
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
