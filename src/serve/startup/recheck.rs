//! The checks a start from the snapshot deferred, made once the
//! database answers.

use std::time::Duration;

use dialtone_sync::{Store, SyncError};

use super::{reach_and_prepare, standby, unreachable, Preparing};
use crate::config::Config;

/// First wait between tries of a deferred check; doubled up to the last.
const RECHECK_FIRST: Duration = Duration::from_millis(500);
const RECHECK_MOST: Duration = Duration::from_secs(5);

/// The name /readyz's `degraded_tasks` and the log give a database that
/// answers as a standby.
pub(crate) const DATABASE_STANDBY: &str = "database-standby";

/// Whether `e` is a migration that waited past `migration_retry_s` for
/// its turn (another node migrating) or for a table in use: no refusal of
/// this node, only work it must wait for.
fn migration_kept_waiting(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<SyncError>(),
            Some(SyncError::MigrationLocked { .. })
        )
    })
}

/// The checks a start from the snapshot could not make, made once the
/// database answers: the schema (migrated where a start would migrate
/// it) and the key. A node with a key the database's secrets are not
/// sealed with, or a schema it cannot use, would have been refused at
/// start; it stops now with the same message (returned here; the caller
/// shuts the node down), and `serve` exits non-zero so the service
/// manager's restart meets the start's own refusal. A migration that
/// waits for another node's (or a busy table) is no refusal: the node
/// serves on and waits, where stopping would only restart it into the
/// same wait, over and over, for as long as the other migration runs;
/// nor is a standby, which the primary's failover or promotion mends.
/// Until the check the store refuses writes on its own (`KeyChecked` in
/// `dialtone-sync`).
pub(in crate::serve) async fn check_when_reachable(
    config: &Config,
    store: &dyn Store,
    cancel: &tokio_util::sync::CancellationToken,
    pending: Option<Preparing>,
    supervisor: &crate::supervise::Supervisor,
) -> Option<String> {
    let refused = check_until_done(config, store, cancel, pending, supervisor).await;
    // Checked, refused or shutting down: the standby is no longer this
    // check's to report.
    supervisor.hold(DATABASE_STANDBY, false);
    refused
}

async fn check_until_done(
    config: &Config,
    store: &dyn Store,
    cancel: &tokio_util::sync::CancellationToken,
    mut pending: Option<Preparing>,
    supervisor: &crate::supervise::Supervisor,
) -> Option<String> {
    // While the database answers as a standby every task runs and reads,
    // and only this check knows why admin writes are refused: /readyz and
    // `dialtone_degraded` say it for as long as it lasts.
    let standby_now = |on: bool| supervisor.hold(DATABASE_STANDBY, on);
    let mut wait = RECHECK_FIRST;
    let mut told_migration_waits = false;
    loop {
        let checked = match pending.take() {
            // The start's own check, still running: its outcome first.
            Some(preparing) => tokio::select! {
                _ = cancel.cancelled() => return None,
                done = preparing => done.unwrap_or_else(|e| Err(anyhow::anyhow!("the schema check stopped: {e}"))),
            },
            None => {
                tokio::select! {
                    _ = cancel.cancelled() => return None,
                    _ = tokio::time::sleep(wait) => {}
                }
                let check = reach_and_prepare(config, store);
                // A migration waiting on another node's lock must not hold
                // the drain up.
                tokio::select! {
                    _ = cancel.cancelled() => return None,
                    checked = check => checked,
                }
            }
        };
        match checked {
            Ok(()) => {
                tracing::info!(
                    "the database answers again; its schema and this node's key are checked"
                );
                return None;
            }
            Err(e) if unreachable(&e) => {
                standby_now(false);
                wait = (wait * 2).min(RECHECK_MOST);
            }
            // A failover half done (the URL still names the old primary,
            // now a replica): the snapshot serves on until it is promoted
            // or the name points at the new primary.
            Err(e) if standby(&e) => {
                // Said when the database turns standby, not at every try
                // (a failover left half done can last hours), nor when the
                // change listener said it first.
                if standby_now(true) {
                    tracing::warn!(
                        error = %format!("{e:#}"),
                        "the database answers as a standby in recovery; serving on from the \
                         snapshot, admin writes refused, until it is a primary"
                    );
                }
                wait = (wait * 2).min(RECHECK_MOST);
            }
            // The migration logs its own wait as it goes; this says once
            // why the node does not stop.
            Err(e) if migration_kept_waiting(&e) => {
                if !told_migration_waits {
                    tracing::warn!(
                        error = %format!("{e:#}"),
                        "the schema migration is still waiting; serving on from the snapshot \
                         and trying again"
                    );
                    told_migration_waits = true;
                }
                standby_now(false);
                wait = RECHECK_FIRST;
            }
            Err(e) => {
                let message = format!("the database came back and refuses this node: {e:#}");
                tracing::error!("{message}; shutting down");
                return Some(message);
            }
        }
    }
}
