//! A pooled sqlx connection lent to rusqlite for one stretch of work, for
//! what must run inside that connection's transaction and costs too much
//! through sqlx, which sends every row from its worker thread with a copy
//! of each value: a bulk import's read of every stored phone and line
//! (ARCHITECTURE.md, Decisions).

use sqlx::SqliteConnection;

use crate::error::SyncError;

/// Runs `f` on `conn`'s own SQLite handle, inside whatever transaction it
/// has open. `f` blocks; other tasks on this worker thread are handed to
/// another worker meanwhile (a single-threaded runtime has none to take
/// them, and runs `f` in place).
pub(super) async fn on_connection<T>(
    conn: &mut SqliteConnection,
    f: impl FnOnce(&rusqlite::Connection) -> Result<T, SyncError>,
) -> Result<T, SyncError> {
    let mut locked = conn.lock_handle().await?;
    let handle = locked.as_raw_handle();
    crate::blocking::blocking_here(|| {
        // SAFETY: `locked` keeps sqlx's worker off this handle until it is
        // dropped, after `borrowed`; `from_handle` neither closes nor
        // configures it, and every statement prepared on `borrowed` is
        // finalized when it drops. sqlx and rusqlite build on one
        // libsqlite3-sys (cargo links one crate per native library), so
        // the handle's type is the type rusqlite expects.
        let borrowed = unsafe { rusqlite::Connection::from_handle(handle.as_ptr()) }?;
        f(&borrowed)
    })
}
