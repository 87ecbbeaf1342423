//! The in-memory mirror: every mirrored table, indexed, published as an
//! immutable [`MirrorState`] behind an `ArcSwap`. Readers take a consistent
//! snapshot with one atomic load and never wait on the watcher or on SQL.
//! The watcher is the only writer; it builds the next state copy-on-write and
//! swaps it in, then announces which keys changed.

use std::collections::BTreeSet;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use serde::Serialize;
use tokio::sync::broadcast;

use crate::model::*;
use crate::shard::ShardedMap;
use crate::stamp::{Input, Stamps};
use crate::store::RowChange;

mod build;
mod group;
mod templates;

pub use build::{LineGroups, LineKey, LineRows, Loading, PhoneRows};
use group::IdGroup;
use templates::TemplateGroup;

/// Bound of the change stream. A subscriber that falls further behind gets
/// `RecvError::Lagged` and must treat it like [`ChangeEvent::Reset`].
pub const CHANGE_STREAM_CAPACITY: usize = 4096;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChangeEvent {
    /// These rows changed (inserted, updated or deleted) in `version`.
    Changed {
        version: u64,
        keys: Arc<[(Entity, Id)]>,
        /// Every tenant a changed row belonged to, before or after the
        /// change, so that consumers can drop per-tenant state even for rows
        /// that are gone.
        tenants: Arc<[Id]>,
    },
    /// Everything may have changed (full reload): drop all derived state.
    Reset { version: u64 },
}

/// A tenant's ids of one table (`mirror/group.rs`).
type Group = Arc<IdGroup>;

/// One consistent version of every mirrored table.
#[derive(Clone, Default)]
pub struct MirrorState {
    version: u64,
    cursor: Cursor,
    seen_above: Option<Arc<SeenAbove>>,
    meta: Meta,
    tenants: ShardedMap<Id, Arc<Tenant>>,
    tenant_by_slug: ShardedMap<Box<str>, Id>,
    phones: ShardedMap<Id, Arc<Phone>>,
    phone_by_mac: ShardedMap<Mac, Id>,
    /// Phone ids of each tenant, so that a tenant's lists, counts, fleets
    /// and resyncs visit its own phones, not the platform's.
    phones_by_tenant: ShardedMap<Id, Group>,
    lines: ShardedMap<Id, Arc<Line>>,
    /// Line ids of a phone, sorted by position.
    lines_by_phone: ShardedMap<Id, Arc<[Id]>>,
    templates: ShardedMap<Id, Arc<Template>>,
    template_by_key: ShardedMap<TemplateKey, Id>,
    /// Template ids by owner (`mirror/templates.rs`), so that a tenant's
    /// list and quota count visit its own templates, not the platform's.
    templates_by_group: ShardedMap<TemplateGroup, Group>,
    /// Phone-scope template ids by MAC, so that a phone's change finds the
    /// templates that follow it to another tenant.
    templates_by_mac: ShardedMap<Mac, Group>,
    directory: ShardedMap<Id, Arc<DirectoryEntry>>,
    directory_by_tenant: ShardedMap<Id, Group>,
    /// Numbers all of a tenant's entries list, kept as rows apply: the
    /// `directory_numbers` quota's count, without a walk of the entries.
    directory_numbers: ShardedMap<Id, u64>,
    sources: ShardedMap<Id, Arc<DirectorySource>>,
    sources_by_tenant: ShardedMap<Id, Group>,
    tokens: ShardedMap<Id, Arc<ApiToken>>,
    token_by_hash: ShardedMap<Box<str>, Id>,
    stamps: Stamps,
}

/// Adds `id` to `group`'s ids. The group and the chunk it edits are copied
/// the first time a batch touches them, then changed in place: a batch of
/// thousands of rows into one large tenant copies its chunk list once, not
/// once per row.
fn group_insert<K: Hash + Eq + Clone>(map: &mut ShardedMap<K, Group>, group: K, id: Id) {
    if map.get(&group).is_some_and(|g| g.contains(id)) {
        return;
    }
    match map.get_mut(&group) {
        Some(ids) => {
            Arc::make_mut(ids).insert(id);
        }
        None => {
            map.insert(group, Arc::new(IdGroup::from_ids(vec![id])));
        }
    }
}

/// Adds `entry`'s numbers to its tenant's count, or takes them off; a
/// tenant whose count reaches nothing leaves the map.
fn count_numbers(map: &mut ShardedMap<Id, u64>, entry: &DirectoryEntry, add: bool) {
    let numbers = entry.numbers.len() as u64;
    let held = map.get(&entry.tenant_id).copied().unwrap_or(0);
    let now = if add {
        held.saturating_add(numbers)
    } else {
        held.saturating_sub(numbers)
    };
    if now == 0 {
        map.remove(&entry.tenant_id);
    } else {
        map.insert(entry.tenant_id, now);
    }
}

fn group_remove<K: Hash + Eq + Clone>(map: &mut ShardedMap<K, Group>, group: K, id: Id) {
    if !map.get(&group).is_some_and(|g| g.contains(id)) {
        return;
    }
    let Some(ids) = map.get_mut(&group) else {
        return;
    };
    let ids = Arc::make_mut(ids);
    ids.remove(id);
    if ids.is_empty() {
        map.remove(&group);
    }
}

fn group_build<K: Hash + Eq + Clone>(pairs: impl Iterator<Item = (K, Id)>) -> ShardedMap<K, Group> {
    let mut grouping = group::Grouping::default();
    pairs.for_each(|(group, id)| grouping.push(group, id));
    grouping.finish()
}

type Swapped<T> = (Option<Arc<T>>, Option<Arc<T>>);

/// Puts `new` (or nothing) at `id`. Returns the old and new values, or
/// `None` when the row is unchanged.
fn swap<T: PartialEq>(
    map: &mut ShardedMap<Id, Arc<T>>,
    id: Id,
    new: Option<T>,
) -> Option<Swapped<T>> {
    let old = map.get(&id).cloned();
    if old.as_deref() == new.as_ref() {
        return None;
    }
    let new = new.map(Arc::new);
    match &new {
        Some(value) => map.insert(id, value.clone()),
        None => map.remove(&id),
    };
    Some((old, new))
}

/// Removes `key` from a unique index only if it still points at `id`.
fn unindex<K: std::hash::Hash + Eq + Clone>(map: &mut ShardedMap<K, Id>, key: &K, id: Id) {
    if map.get(key) == Some(&id) {
        map.remove(key);
    }
}

impl MirrorState {
    /// Builds every table and index from a full dataset (cold start, reload).
    pub fn build(data: Dataset, cursor: Cursor, meta: Meta, version: u64) -> MirrorState {
        MirrorState::from_loading(Loading::from_dataset(data), cursor, meta, version)
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn cursor(&self) -> Cursor {
        self.cursor
    }

    /// What the read that brought this state to its cursor saw above it.
    pub fn seen_above(&self) -> Option<&SeenAbove> {
        self.seen_above.as_deref()
    }

    /// The version at which `input` last changed (see [`crate::stamp`]).
    pub fn stamp(&self, input: Input<'_>) -> u64 {
        self.stamps.get(input)
    }

    /// How many inputs changed since the last full build.
    pub fn stamped_inputs(&self) -> usize {
        self.stamps.len()
    }

    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    pub fn tenant(&self, id: Id) -> Option<&Arc<Tenant>> {
        self.tenants.get(&id)
    }

    pub fn tenant_by_slug(&self, slug: &str) -> Option<&Arc<Tenant>> {
        self.tenant_by_slug
            .get(&Box::from(slug))
            .and_then(|id| self.tenants.get(id))
    }

    pub fn tenants(&self) -> impl Iterator<Item = &Arc<Tenant>> {
        self.tenants.values()
    }

    pub fn phone(&self, id: Id) -> Option<&Arc<Phone>> {
        self.phones.get(&id)
    }

    pub fn phone_by_mac(&self, mac: &Mac) -> Option<&Arc<Phone>> {
        self.phone_by_mac
            .get(mac)
            .and_then(|id| self.phones.get(id))
    }

    /// Every phone on the platform. A tenant's are [`MirrorState::phones_of`].
    pub fn phones(&self) -> impl Iterator<Item = &Arc<Phone>> {
        self.phones.values()
    }

    /// A tenant's phones, in id order, without visiting anyone else's.
    pub fn phones_of(&self, tenant_id: Id) -> impl Iterator<Item = &Arc<Phone>> {
        self.phones_by_tenant
            .get(&tenant_id)
            .into_iter()
            .flat_map(|ids| ids.iter())
            .filter_map(|id| self.phones.get(&id))
    }

    /// A tenant's phones, or every phone on the platform when `tenant` is
    /// `None` (a global admin's unfiltered list).
    pub fn phones_within(&self, tenant: Option<Id>) -> Box<dyn Iterator<Item = &Arc<Phone>> + '_> {
        match tenant {
            Some(id) => Box::new(self.phones_of(id)),
            None => Box::new(self.phones()),
        }
    }

    /// How many phones the tenant has, without visiting them.
    pub fn phone_count(&self, tenant_id: Id) -> usize {
        self.phones_by_tenant
            .get(&tenant_id)
            .map_or(0, |ids| ids.len())
    }

    /// A phone's lines in key order.
    pub fn lines_of(&self, phone_id: Id) -> Vec<Arc<Line>> {
        self.lines_by_phone
            .get(&phone_id)
            .map(|ids| {
                ids.iter()
                    .filter_map(|id| self.lines.get(id).cloned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A phone's line ids in key order. Any change to any line of the
    /// phone (a new line, a removed or moved one, a new value) gives a new
    /// `Arc`, so a held one compared by pointer tells whether the phone's
    /// lines are still the ones it was taken with.
    pub fn line_ids(&self, phone_id: Id) -> Option<&Arc<[Id]>> {
        self.lines_by_phone.get(&phone_id)
    }

    /// The phone a line belongs to.
    pub fn phone_of_line(&self, line_id: Id) -> Option<Id> {
        self.lines.get(&line_id).map(|l| l.phone_id)
    }

    pub fn template(&self, id: Id) -> Option<&Arc<Template>> {
        self.templates.get(&id)
    }

    pub fn template_by_key(&self, key: &TemplateKey) -> Option<&Arc<Template>> {
        self.template_by_key
            .get(key)
            .and_then(|id| self.templates.get(id))
    }

    pub fn templates(&self) -> impl Iterator<Item = &Arc<Template>> {
        self.templates.values()
    }

    pub fn directory_entry(&self, id: Id) -> Option<&Arc<DirectoryEntry>> {
        self.directory.get(&id)
    }

    pub fn directory_of(&self, tenant_id: Id) -> Vec<Arc<DirectoryEntry>> {
        self.directory_by_tenant
            .get(&tenant_id)
            .map(|ids| {
                ids.iter()
                    .filter_map(|id| self.directory.get(&id).cloned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The tenant's entry with `external_id`, found without collecting the
    /// tenant's directory (a walk of its ids all the same).
    pub fn directory_entry_by_external_id(
        &self,
        tenant_id: Id,
        external_id: &str,
    ) -> Option<&Arc<DirectoryEntry>> {
        self.directory_by_tenant
            .get(&tenant_id)?
            .iter()
            .filter_map(|id| self.directory.get(&id))
            .find(|e| e.external_id.as_deref() == Some(external_id))
    }

    /// The tenant's first entry, as [`MirrorState::directory_of`] would
    /// list it first, without collecting the rest.
    pub fn first_directory_entry(&self, tenant_id: Id) -> Option<&Arc<DirectoryEntry>> {
        self.directory_by_tenant
            .get(&tenant_id)?
            .iter()
            .find_map(|id| self.directory.get(&id))
    }

    /// How many directory entries the tenant has, without collecting them.
    pub fn directory_len(&self, tenant_id: Id) -> usize {
        self.directory_by_tenant
            .get(&tenant_id)
            .map_or(0, |ids| ids.len())
    }

    /// How many numbers the tenant's entries list together.
    pub fn directory_numbers(&self, tenant_id: Id) -> u64 {
        self.directory_numbers.get(&tenant_id).copied().unwrap_or(0)
    }

    /// How many directory sources the tenant has, without collecting them.
    pub fn source_count(&self, tenant_id: Id) -> usize {
        self.sources_by_tenant
            .get(&tenant_id)
            .map_or(0, |ids| ids.len())
    }

    /// A tenant's directory sources, in priority order.
    pub fn sources_of(&self, tenant_id: Id) -> Vec<Arc<DirectorySource>> {
        let mut list: Vec<Arc<DirectorySource>> = self
            .sources_by_tenant
            .get(&tenant_id)
            .map(|ids| {
                ids.iter()
                    .filter_map(|id| self.sources.get(&id).cloned())
                    .collect()
            })
            .unwrap_or_default();
        list.sort_by_key(|s| (s.priority, s.id));
        list
    }

    pub fn api_tokens(&self) -> impl Iterator<Item = &Arc<ApiToken>> {
        self.tokens.values()
    }

    pub fn api_token(&self, id: Id) -> Option<&Arc<ApiToken>> {
        self.tokens.get(&id)
    }

    pub fn token_by_hash(&self, hash: &str) -> Option<&Arc<ApiToken>> {
        self.token_by_hash
            .get(&Box::from(hash))
            .and_then(|id| self.tokens.get(id))
    }

    pub fn counts(&self) -> MirrorCounts {
        MirrorCounts {
            tenants: self.tenants.len(),
            phones: self.phones.len(),
            lines: self.lines.len(),
            templates: self.templates.len(),
            directory_entries: self.directory.len(),
            directory_sources: self.sources.len(),
            api_tokens: self.tokens.len(),
        }
    }

    /// Every row, sorted by id: for snapshots and for comparing with the database.
    pub fn to_dataset(&self) -> Dataset {
        fn all<T: Clone>(map: &ShardedMap<Id, Arc<T>>) -> Vec<T> {
            map.values().map(|v| (**v).clone()).collect()
        }
        let mut data = Dataset {
            tenants: all(&self.tenants),
            phones: all(&self.phones),
            lines: all(&self.lines),
            templates: all(&self.templates),
            directory_entries: all(&self.directory),
            directory_sources: all(&self.sources),
            api_tokens: all(&self.tokens),
        };
        data.sort();
        data
    }

    pub(crate) fn tables(&self) -> Tables<'_> {
        Tables { state: self }
    }

    /// Applies one row change; returns false when it changed nothing (the
    /// change feed may show a row again that is already current).
    /// The tenant a row belongs to; templates belong to none.
    fn tenant_of(&self, entity: Entity, id: Id) -> Option<Id> {
        match entity {
            Entity::Tenant => Some(id),
            Entity::Phone => self.phones.get(&id).map(|p| p.tenant_id),
            Entity::Line => {
                let phone = self.lines.get(&id)?.phone_id;
                self.phones.get(&phone).map(|p| p.tenant_id)
            }
            Entity::Template => None,
            Entity::DirectoryEntry => self.directory.get(&id).map(|d| d.tenant_id),
            Entity::DirectorySource => self.sources.get(&id).map(|s| s.tenant_id),
            Entity::ApiToken => self.tokens.get(&id).and_then(|t| t.tenant_id),
        }
    }

    /// Stamp slots the change touches are pushed onto `bumps`.
    fn apply_row(
        &mut self,
        entity: Entity,
        id: Id,
        row: Option<Row>,
        bumps: &mut Vec<u64>,
    ) -> bool {
        if let Some(row) = &row {
            if row.entity() != entity || row.id() != id {
                tracing::error!(
                    ?entity,
                    id,
                    "change feed returned a row for another key; ignored"
                );
                return false;
            }
        }
        macro_rules! take {
            ($variant:ident) => {
                match row {
                    Some(Row::$variant(r)) => Some(r),
                    _ => None,
                }
            };
        }
        match entity {
            Entity::Tenant => {
                let Some((old, new)) = swap(&mut self.tenants, id, take!(Tenant)) else {
                    return false;
                };
                bumps.extend([Input::Directory(id).slot(), Input::Sources(id).slot()]);
                if let Some(old) = old {
                    unindex(&mut self.tenant_by_slug, &old.slug, id);
                }
                if let Some(new) = new {
                    self.tenant_by_slug.insert(new.slug.clone(), id);
                }
            }
            Entity::Phone => {
                let new = take!(Phone);
                // The phone-scope templates of its MACs leave their
                // tenant's group under the phone as it was and join one
                // under the phone as it is: a move takes them along.
                let macs = self.template_macs(id, new.as_ref());
                self.group_phone_templates(&macs, false);
                let Some((old, new)) = swap(&mut self.phones, id, new) else {
                    self.group_phone_templates(&macs, true);
                    return false;
                };
                let (old_tenant, new_tenant) = (
                    old.as_ref().map(|p| p.tenant_id),
                    new.as_ref().map(|p| p.tenant_id),
                );
                if let Some(old) = old {
                    unindex(&mut self.phone_by_mac, &old.mac, id);
                }
                if let Some(new) = new {
                    self.phone_by_mac.insert(new.mac, id);
                }
                if old_tenant != new_tenant {
                    if let Some(tenant) = old_tenant {
                        group_remove(&mut self.phones_by_tenant, tenant, id);
                    }
                    if let Some(tenant) = new_tenant {
                        group_insert(&mut self.phones_by_tenant, tenant, id);
                    }
                }
                self.group_phone_templates(&macs, true);
            }
            Entity::Line => {
                let Some((old, new)) = swap(&mut self.lines, id, take!(Line)) else {
                    return false;
                };
                let mut touched: Vec<Id> =
                    old.iter().chain(new.iter()).map(|l| l.phone_id).collect();
                touched.dedup();
                for phone in touched {
                    self.reindex_lines(phone, id);
                }
            }
            Entity::Template => {
                let Some((old, new)) = swap(&mut self.templates, id, take!(Template)) else {
                    return false;
                };
                for t in old.iter().chain(new.iter()) {
                    bumps.push(Input::of_template(t).slot());
                }
                if let Some(old) = &old {
                    self.group_template(old, false);
                }
                if let Some(new) = &new {
                    self.group_template(new, true);
                }
                if let Some(old) = old {
                    unindex(&mut self.template_by_key, &old.key(), id);
                }
                if let Some(new) = new {
                    self.template_by_key.insert(new.key(), id);
                }
            }
            Entity::DirectoryEntry => {
                let Some((old, new)) = swap(&mut self.directory, id, take!(DirectoryEntry)) else {
                    return false;
                };
                for d in old.iter().chain(new.iter()) {
                    bumps.push(Input::Directory(d.tenant_id).slot());
                }
                if let Some(old) = old {
                    group_remove(&mut self.directory_by_tenant, old.tenant_id, id);
                    count_numbers(&mut self.directory_numbers, &old, false);
                }
                if let Some(new) = new {
                    group_insert(&mut self.directory_by_tenant, new.tenant_id, id);
                    count_numbers(&mut self.directory_numbers, &new, true);
                }
            }
            Entity::DirectorySource => {
                let Some((old, new)) = swap(&mut self.sources, id, take!(DirectorySource)) else {
                    return false;
                };
                for d in old.iter().chain(new.iter()) {
                    bumps.push(Input::Sources(d.tenant_id).slot());
                }
                if let Some(old) = old {
                    group_remove(&mut self.sources_by_tenant, old.tenant_id, id);
                }
                if let Some(new) = new {
                    group_insert(&mut self.sources_by_tenant, new.tenant_id, id);
                }
            }
            Entity::ApiToken => {
                let Some((old, new)) = swap(&mut self.tokens, id, take!(ApiToken)) else {
                    return false;
                };
                if let Some(old) = old {
                    unindex(&mut self.token_by_hash, &old.token_hash, id);
                }
                if let Some(new) = new {
                    self.token_by_hash.insert(new.token_hash.clone(), id);
                }
            }
        }
        true
    }

    /// Rebuilds one phone's line list after line `changed` moved, appeared or went.
    fn reindex_lines(&mut self, phone: Id, changed: Id) {
        let mut ids: Vec<Id> = self
            .lines_by_phone
            .get(&phone)
            .map(|ids| ids.iter().copied().filter(|id| *id != changed).collect())
            .unwrap_or_default();
        if self
            .lines
            .get(&changed)
            .is_some_and(|l| l.phone_id == phone)
        {
            ids.push(changed);
        }
        ids.sort_by_key(|id| self.lines.get(id).map(|l| (l.position, l.id)));
        if ids.is_empty() {
            self.lines_by_phone.remove(&phone);
        } else {
            self.lines_by_phone.insert(phone, ids.into());
        }
    }
}

/// Borrowed view of all tables, written by the snapshot writer without
/// first copying the rows.
pub(crate) struct Tables<'a> {
    state: &'a MirrorState,
}

impl<'a> Tables<'a> {
    pub(crate) fn cursor(&self) -> Cursor {
        self.state.cursor
    }
    pub(crate) fn meta(&self) -> &Meta {
        &self.state.meta
    }
    pub(crate) fn tenants(&self) -> impl Iterator<Item = &'a Tenant> {
        self.state.tenants.values().map(|v| &**v)
    }
    /// In id order, as the lines are: a load then finds each tenant's
    /// phone ids already sorted.
    pub(crate) fn phones(&self) -> impl Iterator<Item = &'a Phone> {
        let mut phones: Vec<&Phone> = self.state.phones.values().map(|v| &**v).collect();
        phones.sort_unstable_by_key(|p| p.id);
        phones.into_iter()
    }
    /// Each phone's lines together, in key order, so that a load groups
    /// them without reordering.
    pub(crate) fn lines_by_phone(&self) -> Vec<&'a Line> {
        let s = self.state;
        let mut phones: Vec<(Id, &Arc<[Id]>)> = s
            .phones
            .values()
            .filter_map(|p| Some((p.id, s.lines_by_phone.get(&p.id)?)))
            .collect();
        phones.sort_unstable_by_key(|(id, _)| *id);
        let mut lines: Vec<&Line> = Vec::with_capacity(s.lines.len());
        for (_, ids) in phones {
            lines.extend(ids.iter().filter_map(|id| s.lines.get(id).map(|l| &**l)));
        }
        // Lines of phones that are not (yet) in the mirror: kept all the same.
        if lines.len() < s.lines.len() {
            let mut orphans: Vec<&Line> = s
                .lines
                .values()
                .filter(|l| s.phones.get(&l.phone_id).is_none())
                .map(|l| &**l)
                .collect();
            orphans.sort_unstable_by_key(|l| (l.phone_id, l.position, l.id));
            lines.extend(orphans);
        }
        lines
    }
    pub(crate) fn templates(&self) -> impl Iterator<Item = &'a Template> {
        self.state.templates.values().map(|v| &**v)
    }
    pub(crate) fn directory_entries(&self) -> impl Iterator<Item = &'a DirectoryEntry> {
        self.state.directory.values().map(|v| &**v)
    }
    pub(crate) fn directory_sources(&self) -> impl Iterator<Item = &'a DirectorySource> {
        self.state.sources.values().map(|v| &**v)
    }
    pub(crate) fn api_tokens(&self) -> impl Iterator<Item = &'a ApiToken> {
        self.state.tokens.values().map(|v| &**v)
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MirrorCounts {
    pub tenants: usize,
    pub phones: usize,
    pub lines: usize,
    pub templates: usize,
    pub directory_entries: usize,
    pub directory_sources: usize,
    pub api_tokens: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadedFrom {
    Database,
    Snapshot,
}

/// What `/readyz` reports about the mirror.
#[derive(Clone, Debug, Default, Serialize)]
pub struct MirrorHealth {
    pub loaded_from: Option<LoadedFrom>,
    pub loaded_at: Option<Millis>,
    /// Last time the watcher heard from the database successfully.
    pub last_sync_at: Option<Millis>,
    /// Set while the database is unreachable: since when we serve old data.
    pub stale_since: Option<Millis>,
    /// [`MirrorHealth::last_sync_at`] on the monotonic clock. Readiness is
    /// measured on it: after a wall-clock step, `stale_since` is off by
    /// the step, and a node stayed ready that long past its allowance (or
    /// went not-ready at once).
    #[serde(skip)]
    pub last_sync_instant: Option<Instant>,
    /// [`MirrorHealth::stale_since`] on the monotonic clock.
    #[serde(skip)]
    pub stale_since_instant: Option<Instant>,
    pub last_error: Option<String>,
    pub full_reloads: u64,
}

/// The shared handle: current state, change stream and health.
pub struct Mirror {
    state: ArcSwap<MirrorState>,
    events: broadcast::Sender<ChangeEvent>,
    health: Mutex<MirrorHealth>,
    /// Held while catching up, so the watcher and a writer that wants to
    /// read its own write never apply batches over each other.
    catch_up: tokio::sync::Mutex<()>,
}

impl Default for Mirror {
    fn default() -> Self {
        Self::new()
    }
}

impl Mirror {
    /// An empty, not-yet-loaded mirror.
    pub fn new() -> Mirror {
        Mirror {
            state: ArcSwap::from_pointee(MirrorState::default()),
            events: broadcast::channel(CHANGE_STREAM_CAPACITY).0,
            health: Mutex::new(MirrorHealth::default()),
            catch_up: tokio::sync::Mutex::new(()),
        }
    }

    /// The current state: one atomic load, no lock.
    pub fn load(&self) -> Arc<MirrorState> {
        self.state.load_full()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<ChangeEvent> {
        self.events.subscribe()
    }

    pub fn is_loaded(&self) -> bool {
        self.health().loaded_from.is_some()
    }

    pub fn health(&self) -> MirrorHealth {
        self.health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn update_health(&self, f: impl FnOnce(&mut MirrorHealth)) {
        f(&mut self.health.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// Replaces everything (cold start, snapshot, full reload).
    pub fn reset(&self, data: Dataset, cursor: Cursor, meta: Meta, from: LoadedFrom) {
        let loading = crate::blocking::blocking_here(|| Loading::from_dataset(data));
        self.reset_loaded(loading, cursor, meta, from);
    }

    /// Replaces everything with a load built as it was read.
    pub fn reset_loaded(&self, loading: Loading, cursor: Cursor, meta: Meta, from: LoadedFrom) {
        let version = self.load().version + 1;
        // Building a whole state (the line index's sort, every table's
        // maps) and freeing the old one take hundreds of milliseconds at a
        // million phones: not on an async worker, whose lookups and
        // fetches would wait that long.
        crate::blocking::blocking_here(|| {
            let state = MirrorState::from_loading(loading, cursor, meta, version);
            drop(self.state.swap(Arc::new(state)));
        });
        let now = now_millis();
        self.update_health(|h| {
            if h.loaded_from.is_some() {
                h.full_reloads += 1;
            }
            h.loaded_from = Some(from);
            h.loaded_at = Some(now);
            if from == LoadedFrom::Database {
                h.last_sync_at = Some(now);
                h.last_sync_instant = Some(Instant::now());
                h.stale_since = None;
                h.stale_since_instant = None;
                h.last_error = None;
            }
        });
        let _ = self.events.send(ChangeEvent::Reset { version });
    }

    /// Taken by [`crate::watcher::catch_up`]: one catch-up at a time.
    pub async fn lock_catch_up(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.catch_up.lock().await
    }

    /// Applies a batch from the change feed and moves the cursor. Callers
    /// hold [`Mirror::lock_catch_up`] (or are the only writer, as at start),
    /// so batches never interleave.
    pub fn apply(&self, changes: Vec<RowChange>, cursor: Cursor, meta: Meta) -> usize {
        self.apply_read(changes, cursor, None, meta)
    }

    /// [`Mirror::apply`] for a batch read from the change feed, which may say
    /// what it saw above `cursor`. Without that, what was known stays known
    /// only while the cursor stays.
    pub fn apply_read(
        &self,
        changes: Vec<RowChange>,
        cursor: Cursor,
        seen_above: Option<Arc<SeenAbove>>,
        meta: Meta,
    ) -> usize {
        let current = self.load();
        let mut next = (*current).clone();
        if next.cursor != cursor {
            next.seen_above = None;
        }
        next.seen_above = seen_above.or(next.seen_above);
        let mut keys = Vec::new();
        let mut tenants = BTreeSet::new();
        let mut bumps = Vec::new();
        for (entity, id, row) in changes {
            let before = next.tenant_of(entity, id);
            if next.apply_row(entity, id, row, &mut bumps) {
                keys.push((entity, id));
                tenants.extend(before);
                tenants.extend(next.tenant_of(entity, id));
            }
        }
        next.cursor = cursor;
        next.meta = meta;
        let changed = keys.len();
        if changed > 0 {
            next.version += 1;
            for slot in bumps {
                next.stamps.bump(slot, next.version);
            }
        }
        let version = next.version;
        self.state.store(Arc::new(next));
        if changed > 0 {
            let _ = self.events.send(ChangeEvent::Changed {
                version,
                keys: keys.into(),
                tenants: tenants.into_iter().collect(),
            });
        }
        changed
    }

    pub fn mark_synced(&self) {
        let now = now_millis();
        self.update_health(|h| {
            h.last_sync_at = Some(now);
            h.last_sync_instant = Some(Instant::now());
            h.stale_since_instant = None;
            if h.stale_since.take().is_some() {
                tracing::info!("database reachable again; mirror is current");
            }
            h.last_error = None;
        });
    }

    /// A snapshot just loaded was last in sync with the database at `at`:
    /// the moment its staleness counts from, not this start. `at` is by
    /// the wall clock of the node that wrote it, which may have been ahead:
    /// a snapshot from the future is current now, not for the step's length.
    pub fn synced_at_least_at(&self, at: Millis) {
        let age = Duration::from_millis(now_millis().saturating_sub(at).max(0) as u64);
        let synced = monotonic_ago(age);
        self.update_health(|h| {
            h.last_sync_at = Some(h.last_sync_at.map_or(at, |known| known.max(at)));
            h.last_sync_instant = Some(h.last_sync_instant.map_or(synced, |k| k.max(synced)));
        });
    }

    pub fn mark_unreachable(&self, error: &str) {
        let now = now_millis();
        self.update_health(|h| {
            if h.stale_since.is_none() {
                tracing::warn!(error, "database unreachable; serving the last known state");
                // Stale since the last moment we know we were current.
                h.stale_since = Some(h.last_sync_at.unwrap_or(now));
                h.stale_since_instant = Some(h.last_sync_instant.unwrap_or_else(Instant::now));
            }
            h.last_error = Some(error.to_string());
        });
    }
}

/// `age` ago on the monotonic clock, or as long ago as it reaches (it may
/// start at boot): a snapshot older than that is stale for at least as long.
fn monotonic_ago(age: Duration) -> Instant {
    let now = Instant::now();
    let mut back = age;
    loop {
        if let Some(at) = now.checked_sub(back) {
            return at;
        }
        back /= 2;
    }
}

#[cfg(test)]
mod health_tests {
    use super::*;

    /// A snapshot written by a node whose clock was ahead is stale from
    /// now, not from the future; one written a minute ago, from then.
    #[test]
    fn staleness_counts_from_the_snapshots_age_on_the_monotonic_clock() {
        let ahead = Mirror::new();
        ahead.synced_at_least_at(now_millis() + 86_400_000);
        ahead.mark_unreachable("connection refused");
        let since = ahead.health().stale_since_instant.unwrap();
        assert!(since.elapsed() < Duration::from_secs(5), "{since:?}");

        let behind = Mirror::new();
        behind.synced_at_least_at(now_millis() - 60_000);
        behind.mark_unreachable("connection refused");
        let stale_for = behind.health().stale_since_instant.unwrap().elapsed();
        assert!(
            (Duration::from_secs(60)..Duration::from_secs(65)).contains(&stale_for),
            "{stale_for:?}"
        );
    }
}
