//! The server's WAL timeline, read with every load and catch-up so the
//! watcher can tell a promoted standby from the primary it replaced.
//!
//! Promotion keeps everything a node compares otherwise: the address, the
//! database id (`dialtone_meta` is replicated) and a transaction counter
//! that goes on from where the standby's replay stopped, below what the
//! lost primary had issued. Once it has issued as many again, the ids
//! reused are at or past a cursor taken on the old primary, and the
//! rewind check (`changes.rs`) sees nothing: the node kept rows only the
//! lost primary had and skipped the new one's changes below its cursor.
//! Promotion always starts a new timeline, and a primary's never changes
//! while it runs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sqlx::PgConnection;

/// The timeline is the WAL file name's first eight hex digits.
/// `pg_control_checkpoint()` is not used: its timeline is the last
/// checkpoint's, the old one until the promoted server's first checkpoint.
const READ_TIMELINE: &str = "SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)";

/// After a failed read, how long reads are skipped: a role refused the
/// functions would otherwise leave an error in the server's log at every
/// poll of every node.
const RETRY_AFTER: Duration = Duration::from_secs(60);

// For the process, which serves one database: every store a tool opens
// is on the same server and role.
static WARNED: AtomicBool = AtomicBool::new(false);
static FAILED_AT: Mutex<Option<Instant>> = Mutex::new(None);

/// The timeline of the server `conn` is on, or `None` when it cannot be
/// read (a role refused the functions, a server still in recovery): then
/// the watcher keeps the timeline it had and relies on its other checks,
/// as before timelines were read. Run outside any transaction, so a
/// failure aborts nothing; it is the timeline of the transaction begun on
/// `conn` next, since a running primary never changes timeline and a
/// server in recovery fails the read.
pub(super) async fn read(conn: &mut PgConnection) -> Option<u32> {
    if let Some(at) = *FAILED_AT.lock().unwrap_or_else(|e| e.into_inner()) {
        if at.elapsed() < RETRY_AFTER {
            return None;
        }
    }
    let read: Result<String, String> = sqlx::query_scalar(READ_TIMELINE)
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| e.to_string());
    match read.and_then(|hex| parse(&hex)) {
        Ok(timeline) => Some(timeline),
        Err(e) => {
            *FAILED_AT.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
            if !WARNED.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    error = %e,
                    "cannot read the database's WAL timeline (tried again each minute, \
                     said only once): until it can, a failover to a standby is noticed \
                     only once the new primary's transaction ids are behind this node's cursor"
                );
            }
            None
        }
    }
}

fn parse(hex: &str) -> Result<u32, String> {
    u32::from_str_radix(hex, 16)
        .ok()
        .filter(|_| hex.len() == 8)
        .ok_or_else(|| format!("not a timeline: {hex:?}"))
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn a_wal_file_names_first_digits_are_the_timeline() {
        assert_eq!(parse("00000001"), Ok(1));
        assert_eq!(parse("0000001A"), Ok(26));
        assert!(parse("").is_err());
        assert!(parse("1").is_err());
        assert!(parse("0000000G").is_err());
    }
}
