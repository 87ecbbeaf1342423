//! Files that outlived what they were kept for: the mirror file of a source
//! that is gone, disabled or live again, and the kept number readings of a
//! tenant that is gone. A sync task removes its source's file when it ends
//! and a tenant's delete removes its readings, but only on a node that runs
//! then and sees it: a node down while a source or its tenant was deleted
//! through another one, or a source put back to `live` without a task that
//! noticed, kept the customer's names and numbers on its disk for good. So
//! each node also looks at the folder when it starts and at every periodic
//! reconcile.

use std::collections::HashMap;

use dialtone_sync::{DirectorySource, Id, LoadedFrom, MirrorHealth, MirrorState, SourceKind};
use serde::Deserialize;

use super::store;
use crate::service::LookupService;
use crate::settings::LdapMode;

/// Whether `row` is a source whose mirror a node keeps: an enabled LDAP
/// source in mirror mode. Read from its mode alone, so a row whose other
/// settings stopped building keeps its file for when they build again (a
/// file only ever loads for the settings it was read with).
pub(crate) fn keeps_a_mirror(row: &DirectorySource) -> bool {
    #[derive(Deserialize)]
    struct Mode {
        #[serde(default)]
        mode: LdapMode,
    }
    row.enabled
        && row.kind == SourceKind::Ldap
        && serde_json::from_str::<Mode>(&row.settings).is_ok_and(|m| m.mode == LdapMode::Mirror)
}

/// Whether `state` still has source `id` of `tenant` mirrored.
pub(crate) fn still_mirrored(state: &MirrorState, tenant: Id, id: Id) -> bool {
    state
        .sources_of(tenant)
        .iter()
        .any(|s| s.id == id && keeps_a_mirror(s))
}

/// Whether the mirror has matched the database since this process loaded
/// it. A snapshot's load carries its own, older sync time; a catch-up
/// after it marks the mirror synced at or past the load, and clears the
/// staleness an unreachable database set (which also covers a snapshot
/// whose sync time reads ahead of this node's clock).
fn synced_in_this_process(health: &MirrorHealth) -> bool {
    match health.loaded_from {
        None => false,
        Some(LoadedFrom::Database) => true,
        Some(LoadedFrom::Snapshot) => {
            health.stale_since.is_none()
                && health.last_sync_at.is_some()
                && health.last_sync_at >= health.loaded_at
        }
    }
}

impl LookupService {
    /// [`LookupService::remove_leftover_files`] in a place of the node's
    /// mirror work, off the runtime's workers.
    pub(super) async fn remove_leftovers(self) {
        let service = self.clone();
        let removed = self
            .inner
            .mirror_work
            .run(move || service.remove_leftover_files())
            .await;
        if let Err(e) = removed {
            tracing::error!(error = %e, "removing leftover mirror and readings files failed");
        }
    }

    /// Removes the mirror files of sources the mirror no longer has
    /// mirrored, and the kept readings of tenants it no longer has. Not
    /// before the mirror has been in sync with the database in this
    /// process: an empty one has no sources, and one loaded from the
    /// snapshot lacks those created since it was written, whose files
    /// spare them a full LDAP sync. Blocking.
    pub(crate) fn remove_leftover_files(&self) {
        let Some(dir) = &self.inner.options.mirror_dir else {
            return;
        };
        if !synced_in_this_process(&self.inner.mirror.health()) {
            return;
        }
        let files = store::files(dir);
        if !files.is_empty() {
            // Read after the listing: a file is written only by the task
            // of a source some state had mirrored, so none listed belongs
            // to a source newer than this state.
            let state = self.inner.mirror.load();
            let rows: HashMap<Id, std::sync::Arc<DirectorySource>> = state
                .tenants()
                .flat_map(|t| state.sources_of(t.id))
                .map(|s| (s.id, s))
                .collect();
            for (id, path) in files {
                if !rows.get(&id).is_some_and(|row| keeps_a_mirror(row)) {
                    store::remove_file(&path, id);
                }
            }
        }
        self.inner.local.remove_readings_of_gone_tenants();
    }
}
