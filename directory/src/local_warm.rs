//! Building the large directories' indexes when a node starts, before
//! their first lookups ([`LocalDirectory::warm`]), and removing the
//! readings kept for tenants that are gone.

use dialtone_sync::Id;

use super::LocalDirectory;

/// The smallest directory [`LocalDirectory::warm`] builds ahead of its
/// lookups. Below it a first build takes tens of milliseconds (25–45 µs a
/// number), within a lookup's deadline; above a few thousand entries it
/// does not fit the default 300 ms, and the tenant's first lookups after a
/// start answer `NotReady` (no name, not even from the sources after the
/// directory) until the build ends: seconds at the entry quota.
pub const WARM_MIN_ENTRIES: usize = 1_000;

/// What one [`LocalDirectory::warm`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Warmed {
    /// Tenants whose index is ready (built now, or already).
    pub tenants: usize,
    /// Their entries.
    pub entries: usize,
    /// Whether shutdown stopped it before the last tenant.
    pub stopped: bool,
}

impl LocalDirectory {
    /// Makes ready, one tenant after another, the indexes of every tenant
    /// with at least [`WARM_MIN_ENTRIES`] entries, largest first and no
    /// more than the index cache keeps, so that a node's first lookups
    /// after a start find them built. One build at a time, on a blocking
    /// thread, each the very build a lookup of the tenant would start or
    /// join: a start costs one core for the while, not every core, and a
    /// lookup arriving meanwhile never builds the same index twice. Each
    /// tenant is built at the mirror's state when its turn comes, so edits
    /// made meanwhile are in. Stops between tenants when `shutdown`
    /// resolves (a build already running ends on its own).
    ///
    /// With readings kept on disk, it first removes the files of tenants
    /// it will not build: the builds that would read them are those of
    /// the tenants it does, so the files stay as many as the index cache
    /// keeps, each bounded by its tenant's entry quota.
    pub async fn warm(&self, shutdown: impl std::future::Future<Output = ()>) -> Warmed {
        let indexes = &self.indexes;
        let state = indexes.mirror.load();
        let mut queue: Vec<(usize, Id)> = state
            .tenants()
            .map(|t| (state.directory_len(t.id), t.id))
            .filter(|(len, _)| *len >= WARM_MIN_ENTRIES)
            .collect();
        queue.sort_unstable_by(|a, b| b.cmp(a));
        let capacity = usize::try_from(indexes.tenants.policy().max_capacity().unwrap_or(0))
            .unwrap_or(usize::MAX);
        queue.truncate(capacity);
        drop(state);
        if indexes.kept.is_some() {
            // Only these tenants' builds read kept readings at start.
            let keep: std::collections::HashSet<Id> = queue.iter().map(|(_, id)| *id).collect();
            let indexes = indexes.clone();
            let _ = tokio::task::spawn_blocking(move || {
                if let Some(files) = &indexes.kept {
                    files.remove_except(|id| keep.contains(&id));
                }
            })
            .await;
        }
        let mut warmed = Warmed::default();
        tokio::pin!(shutdown);
        for (_, tenant_id) in queue {
            let state = indexes.mirror.load();
            if state.tenant(tenant_id).is_none() {
                continue;
            }
            tokio::select! {
                biased;
                _ = &mut shutdown => {
                    warmed.stopped = true;
                    break;
                }
                built = indexes.ready(&state, tenant_id) => {
                    if let Ok(index) = built {
                        warmed.tenants += 1;
                        warmed.entries += index.entries();
                    }
                }
            }
        }
        warmed
    }

    /// Removes the readings kept for tenants the mirror no longer has (and
    /// temporary files another process left), whether or not the node
    /// builds ahead: only [`LocalDirectory::warm`] removed any, so a node
    /// that builds on first lookups, or was down when a tenant was
    /// deleted, kept that tenant's numbers on disk for good. Nothing before
    /// the mirror is loaded. Blocking.
    pub(crate) fn remove_readings_of_gone_tenants(&self) {
        let indexes = &self.indexes;
        let Some(files) = &indexes.kept else {
            return;
        };
        if !indexes.mirror.is_loaded() {
            return;
        }
        // The state as each file is met: a tenant created since the
        // listing began may have one already.
        files.remove_except(|id| indexes.mirror.load().tenant(id).is_some());
    }
}
