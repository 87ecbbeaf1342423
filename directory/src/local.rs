//! The local directory source: a tenant's `directory_entries` from the
//! mirror, indexed by normalized number. The index of a tenant is built on
//! its first lookup and used while the mirror's stamp of the tenant's
//! directory (its entries and its region) is the one it was built at, so
//! lookups never scan, never touch SQL and never see an outdated index. The
//! change stream drops outdated indexes early, to free memory.

use std::collections::HashMap;
use std::sync::Arc;

use dialtone_sync::stamp::Input;
use dialtone_sync::{ChangeEvent, DirectoryEntry, Entity, Id, Mirror, MirrorState};
use moka::sync::Cache;

use crate::normalize::{normalize, suffix};

/// How many trailing digits identify a number that will not normalize.
pub const DEFAULT_SUFFIX_LEN: usize = 7;

/// Numbers to whoever has them: exact E.164, and the last digits for
/// numbers that do not normalize. Shared by the local directory and the
/// LDAP mirror (`crate::mirror`), so both match a number the same way.
pub struct NumberIndex<T> {
    suffix_len: usize,
    by_e164: HashMap<Box<str>, Vec<T>>,
    by_suffix: HashMap<Box<str>, Vec<T>>,
}

impl<T: Clone> NumberIndex<T> {
    pub fn new(suffix_len: usize) -> NumberIndex<T> {
        NumberIndex {
            suffix_len: suffix_len.max(4),
            by_e164: HashMap::new(),
            by_suffix: HashMap::new(),
        }
    }

    /// Files `item` under a number already normalized (`e164`), or under
    /// the raw spelling's last digits when it would not normalize.
    pub fn insert(&mut self, raw: &str, e164: Option<&str>, item: T) {
        let spelled = e164.unwrap_or(raw);
        if let Some(s) = suffix(spelled, self.suffix_len) {
            self.by_suffix
                .entry(s.into_boxed_str())
                .or_default()
                .push(item.clone());
        }
        if let Some(e164) = e164 {
            self.by_e164.entry(e164.into()).or_default().push(item);
        }
    }

    /// An exact E.164 match wins; otherwise a suffix match counts only
    /// when every item under it is the same one (`same`), since showing
    /// the wrong name is worse than showing none. The flag says "by suffix".
    pub fn find(
        &self,
        e164: Option<&str>,
        raw: &str,
        same: impl Fn(&T, &T) -> bool,
    ) -> Option<(&T, bool)> {
        if let Some(item) = e164
            .and_then(|n| self.by_e164.get(n))
            .and_then(|v| v.first())
        {
            return Some((item, false));
        }
        let key = suffix(e164.unwrap_or(raw), self.suffix_len)?;
        match self.by_suffix.get(key.as_str()).map(Vec::as_slice) {
            Some([first, rest @ ..]) if rest.iter().all(|e| same(first, e)) => Some((first, true)),
            _ => None,
        }
    }

    /// Numbers filed under E.164.
    pub fn numbers(&self) -> usize {
        self.by_e164.len()
    }
}

struct TenantIndex {
    /// The tenant's directory stamp it was built at.
    stamp: u64,
    numbers: NumberIndex<Arc<DirectoryEntry>>,
}

pub struct LocalDirectory {
    mirror: Arc<Mirror>,
    suffix_len: usize,
    tenants: Cache<Id, Arc<TenantIndex>>,
}

/// A match: the entry and whether it came from the weaker suffix index.
#[derive(Clone, Debug)]
pub struct Found {
    pub entry: Arc<DirectoryEntry>,
    pub by_suffix: bool,
}

impl LocalDirectory {
    pub fn new(mirror: Arc<Mirror>, suffix_len: usize, max_tenants: u64) -> LocalDirectory {
        LocalDirectory {
            mirror,
            suffix_len: suffix_len.max(4),
            tenants: Cache::builder().max_capacity(max_tenants).build(),
        }
    }

    fn index(&self, state: &MirrorState, tenant_id: Id) -> Option<Arc<TenantIndex>> {
        let tenant = state.tenant(tenant_id)?;
        let stamp = state.stamp(Input::Directory(tenant_id));
        if let Some(index) = self.tenants.get(&tenant_id) {
            if index.stamp == stamp {
                return Some(index);
            }
        }
        let mut index = TenantIndex {
            stamp,
            numbers: NumberIndex::new(self.suffix_len),
        };
        let mut entries = state.directory_of(tenant_id);
        // Stable order: the same number in two entries resolves the same way.
        entries.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
        for entry in entries {
            for n in &entry.numbers {
                let e164 = normalize(&n.number, &tenant.default_region).ok();
                index
                    .numbers
                    .insert(&n.number, e164.as_deref(), entry.clone());
            }
        }
        let index = Arc::new(index);
        // Built from a state that has moved on, it would be outdated the
        // moment it landed: serve this lookup from it, keep it for none.
        if self.mirror.load().stamp(Input::Directory(tenant_id)) == stamp {
            self.tenants.insert(tenant_id, index.clone());
        }
        Some(index)
    }

    /// Who has `number` in the tenant's directory. An exact E.164 match
    /// wins; otherwise a suffix match counts only when it is unambiguous,
    /// since showing the wrong name is worse than showing none.
    /// Answers from `state`, the one mirror state the caller works from.
    pub fn lookup(&self, state: &MirrorState, tenant_id: Id, number: &str) -> Option<Found> {
        let region = &state.tenant(tenant_id)?.default_region;
        let index = self.index(state, tenant_id)?;
        let e164 = normalize(number, region).ok();
        let (entry, by_suffix) = index
            .numbers
            .find(e164.as_deref(), number, |a, b| a.id == b.id)?;
        Some(Found {
            entry: entry.clone(),
            by_suffix,
        })
    }

    /// Drops the indexes a mirror change makes stale.
    pub fn invalidate(&self, event: &ChangeEvent) {
        match event {
            ChangeEvent::Reset { .. } => self.tenants.invalidate_all(),
            ChangeEvent::Changed { keys, tenants, .. } => {
                let relevant = keys
                    .iter()
                    .any(|(entity, _)| matches!(entity, Entity::Tenant | Entity::DirectoryEntry));
                if relevant {
                    for tenant in tenants.iter() {
                        self.tenants.invalidate(tenant);
                    }
                }
            }
        }
    }
}
