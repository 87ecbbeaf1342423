//! What the mirror's changes do to the answers: a change to a tenant, its
//! directory or its sources drops the tenant's cached answers and makes
//! its running loads unable to fill the cache; `follow` applies them as
//! they come.

use std::sync::atomic::Ordering;

use dialtone_sync::{ChangeEvent, Entity, Id};

use super::LookupService;

impl LookupService {
    /// Drops every cached answer of `tenant`, and makes running loads for
    /// it unable to fill the cache.
    pub fn invalidate_tenant(&self, tenant: Id) {
        let generations = &self.inner.generations;
        generations.bump(tenant);
        // A deleted tenant keeps no generation. Looked at after the bump: a
        // sync publishing as its tenant is deleted would otherwise put the
        // entry back after the delete's change had dropped it.
        if self.inner.mirror.load().tenant(tenant).is_none() {
            generations.forget(tenant);
        }
    }

    /// Applies one mirror change: a tenant's directory, sources or region
    /// changed, so its answers may be wrong now.
    pub fn apply_change(&self, event: &ChangeEvent) {
        let inner = &self.inner;
        inner.local.invalidate(event);
        match event {
            ChangeEvent::Reset { .. } => {
                inner.generations.bump_all();
                inner.sources.retain_current(&inner.mirror.load());
            }
            ChangeEvent::Changed { keys, tenants, .. } => {
                let relevant = keys.iter().any(|(entity, _)| {
                    matches!(
                        entity,
                        Entity::Tenant | Entity::DirectoryEntry | Entity::DirectorySource
                    )
                });
                if relevant {
                    for tenant in tenants.iter() {
                        self.invalidate_tenant(*tenant);
                    }
                }
                if keys
                    .iter()
                    .any(|(entity, _)| *entity == Entity::DirectorySource)
                {
                    inner.sources.retain_current(&inner.mirror.load());
                }
            }
        }
    }

    /// Follows the mirror's change stream until `shutdown` resolves. A
    /// lagging receiver missed events, so it drops everything.
    pub async fn follow(self, shutdown: impl std::future::Future<Output = ()>) {
        let mut events = self.inner.mirror.subscribe();
        // A restarted follower may have missed events while it was down;
        // the first one starts with an empty cache and has missed nothing.
        if self.inner.followed.swap(true, Ordering::AcqRel) {
            self.apply_change(&ChangeEvent::Reset { version: 0 });
        }
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                event = events.recv() => match event {
                    Ok(event) => self.apply_change(&event),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        self.apply_change(&ChangeEvent::Reset { version: 0 });
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    }
}
