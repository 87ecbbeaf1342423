//! How often a tenant's own token may change its `default_region`. A
//! change renormalizes every number of the tenant's directory on every node
//! (its index is built whole, 10–18 s of a core at the 200,000-entry quota,
//! and each mirrored LDAP source renormalizes its entries), where an edit to
//! entries costs only what changed. A tenant switching its region back and
//! forth kept a core of every node busy for good. Real tenants change it
//! once, when it was set wrong; global admins are not held to this.
//!
//! The times are this node's: behind a balancer spreading a tenant's
//! requests over n nodes, it may change n times per interval, still bounded.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use dialtone_sync::Id;

/// Least time between two region changes of one tenant by its own tokens.
pub const REGION_CHANGE_SPACING: Duration = Duration::from_secs(10 * 60);

#[derive(Default)]
pub struct RegionChanges(Mutex<HashMap<Id, Instant>>);

impl RegionChanges {
    /// Takes `tenant`'s next region change, or says how long until it may
    /// change its region again. Taken before the write: a write that then
    /// fails still counts, which errs toward fewer rebuilds.
    pub fn take(&self, tenant: Id, now: Instant) -> Result<(), Duration> {
        let mut changes = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(last) = changes.get(&tenant) {
            let since = now.saturating_duration_since(*last);
            if since < REGION_CHANGE_SPACING {
                return Err(REGION_CHANGE_SPACING - since);
            }
        }
        // Only tenants that changed within the spacing are remembered.
        changes.retain(|_, last| now.saturating_duration_since(*last) < REGION_CHANGE_SPACING);
        changes.insert(tenant, now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_changes_its_region_once_per_spacing_and_others_are_not_held() {
        let changes = RegionChanges::default();
        let start = Instant::now();
        assert!(changes.take(1, start).is_ok());
        let wait = changes
            .take(1, start + Duration::from_secs(60))
            .unwrap_err();
        assert_eq!(wait, REGION_CHANGE_SPACING - Duration::from_secs(60));
        assert!(changes.take(2, start + Duration::from_secs(60)).is_ok());
        assert!(changes.take(1, start + REGION_CHANGE_SPACING).is_ok());
        // Forgotten once past the spacing: the map holds recent changes only.
        let later = start + 3 * REGION_CHANGE_SPACING;
        assert!(changes.take(3, later).is_ok());
        assert_eq!(changes.0.lock().unwrap().len(), 1);
    }
}
