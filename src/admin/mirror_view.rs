//! The state of a mirrored LDAP source's copy, as the directory-source
//! views of the admin API show it.

use dialtone_directory::MirrorStatus;
use serde::Serialize;
use utoipa::ToSchema;

/// The state of a mirrored source's copy. Times are Unix milliseconds,
/// durations milliseconds; each node keeps its own copy, so two nodes may
/// differ by a sync.
#[derive(Serialize, ToSchema)]
pub struct MirrorView {
    /// Entries in the copy: those with a name and a number attribute.
    pub entries: u64,
    pub last_full_sync: Option<i64>,
    pub last_full_ms: Option<u64>,
    pub last_incremental_sync: Option<i64>,
    pub last_incremental_ms: Option<u64>,
    /// Why the last sync failed (or stopped at `max_entries`); the copy
    /// from before keeps answering.
    pub last_error: Option<String>,
    /// Since the copy was last known current; null before any sync.
    pub age_ms: Option<u64>,
    /// How changes between full syncs are found: `modifyTimestamp`,
    /// `uSNChanged`, or null (full syncs only).
    pub incremental: Option<String>,
}

impl From<MirrorStatus> for MirrorView {
    fn from(m: MirrorStatus) -> MirrorView {
        MirrorView {
            entries: m.entries,
            last_full_sync: m.last_full_sync,
            last_full_ms: m.last_full_ms,
            last_incremental_sync: m.last_incremental_sync,
            last_incremental_ms: m.last_incremental_ms,
            last_error: m.last_error,
            age_ms: m.age_ms,
            incremental: m.incremental.map(str::to_string),
        }
    }
}
