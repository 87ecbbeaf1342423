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
    /// from before keeps answering. A global admin reads the node's text; a
    /// tenant's token reads its kind (`ldap`, `auth`, `timeout`,
    /// `mirror_limit`, ...), since the text may name this node's files or
    /// the addresses the tenant's host resolved to here.
    pub last_error: Option<String>,
    /// Since the copy was last known current; null before any sync.
    pub age_ms: Option<u64>,
    /// How changes between full syncs are found: `modifyTimestamp`,
    /// `uSNChanged`, or null (full syncs only).
    pub incremental: Option<String>,
}

impl MirrorView {
    /// The view of `m`; `detail` for a global admin.
    pub fn of(m: MirrorStatus, detail: bool) -> MirrorView {
        let last_error = if detail {
            m.last_error
        } else {
            m.last_error_kind.map(str::to_string)
        };
        MirrorView {
            entries: m.entries,
            last_full_sync: m.last_full_sync,
            last_full_ms: m.last_full_ms,
            last_incremental_sync: m.last_incremental_sync,
            last_incremental_ms: m.last_incremental_ms,
            last_error,
            age_ms: m.age_ms,
            incremental: m.incremental.map(str::to_string),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_reads_the_kind_of_a_failure_and_the_operator_its_text() {
        let status = MirrorStatus {
            entries: 3,
            last_full_sync: Some(1),
            last_full_ms: Some(2),
            last_incremental_sync: None,
            last_incremental_ms: None,
            last_error: Some("connecting to 10.1.2.3:389: connection refused".into()),
            last_error_kind: Some("ldap"),
            age_ms: Some(5),
            incremental: None,
        };
        let tenant = MirrorView::of(status.clone(), false);
        assert_eq!(tenant.last_error.as_deref(), Some("ldap"));
        let operator = MirrorView::of(status, true);
        assert!(operator.last_error.unwrap().contains("10.1.2.3"));
    }
}
