//! How many of one kind of work a tenant has running, where one tenant's
//! could crowd out everyone else's. A source test opens a connection to
//! wherever the tenant's source points and may wait out two lookup
//! timeouts; a database-bound admin request holds one of the pool's few
//! connections (`database_share.rs`). Without a cap one tenant could hold
//! any number of either at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use dialtone_sync::Id;

pub struct Running {
    per_tenant: usize,
    counts: Mutex<HashMap<Id, usize>>,
}

/// A place taken; given back when dropped.
pub struct Place {
    running: Arc<Running>,
    tenant: Id,
}

impl Running {
    pub fn new(per_tenant: usize) -> Arc<Running> {
        Arc::new(Running {
            per_tenant: per_tenant.max(1),
            counts: Mutex::new(HashMap::new()),
        })
    }

    /// A place for `tenant`, or `None` when it already runs `per_tenant`.
    pub fn take(self: &Arc<Self>, tenant: Id) -> Option<Place> {
        self.take_counted(tenant).map(|(place, _)| place)
    }

    /// A place for `tenant` and how many it runs with this one (1: this is
    /// its only one), or `None` when it already runs `per_tenant`.
    pub fn take_counted(self: &Arc<Self>, tenant: Id) -> Option<(Place, usize)> {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let count = counts.entry(tenant).or_default();
        if *count >= self.per_tenant {
            return None;
        }
        *count += 1;
        let running = *count;
        Some((
            Place {
                running: self.clone(),
                tenant,
            },
            running,
        ))
    }

    pub fn per_tenant(&self) -> usize {
        self.per_tenant
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut counts = self
            .running
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(count) = counts.get_mut(&self.tenant) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.tenant);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Running;

    #[test]
    fn each_tenant_has_its_own_places_and_gets_them_back() {
        let running = Running::new(2);
        let (a1, a2) = (running.take(1).unwrap(), running.take(1).unwrap());
        assert!(running.take(1).is_none(), "a third for tenant 1");
        let b = running
            .take(2)
            .expect("tenant 2 is not held up by tenant 1");
        drop(a1);
        let a3 = running.take(1).expect("a place comes back when dropped");
        drop((a2, a3, b));
        assert!(running.counts.lock().unwrap().is_empty());
    }
}
