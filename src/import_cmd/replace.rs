//! `--replace-directory` (and `/v1/import?replace_directory=true`): the
//! stored keys of each tenant whose entries the files hold, read before
//! the write, so the plan deletes the entries the files leave out. An
//! entry written meanwhile by the admin API survives (it was not read);
//! one deleted meanwhile is deleted again, which deletes nothing.

use std::collections::BTreeMap;

use anyhow::Result;
use dialtone_sync::import::ImportPlan;
use dialtone_sync::store::Store;
use dialtone_sync::MirrorState;

/// From the database, for `dialtone import`. Returns the tenants whose
/// directories the run replaces.
pub(crate) async fn from_store(store: &dyn Store, plan: &mut ImportPlan) -> Result<Vec<String>> {
    let tenants = plan.directory_tenants();
    let mut stored = BTreeMap::new();
    for tenant in &tenants {
        stored.insert(tenant.clone(), store.directory_keys(tenant).await?);
    }
    plan.replace_directories(&stored);
    Ok(tenants)
}

/// From this node's mirror, for `/v1/import`: what the admin API reads
/// everything else from.
pub(crate) fn from_mirror(state: &MirrorState, plan: &mut ImportPlan) -> Vec<String> {
    let tenants = plan.directory_tenants();
    let stored: BTreeMap<String, Vec<String>> = tenants
        .iter()
        .filter_map(|slug| {
            let tenant = state.tenant_by_slug(slug)?;
            let keys = state
                .directory_of(tenant.id)
                .iter()
                .filter_map(|entry| entry.external_id.as_deref().map(str::to_string))
                .collect();
            Some((slug.clone(), keys))
        })
        .collect();
    plan.replace_directories(&stored);
    tenants
}
