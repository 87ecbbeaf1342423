//! The render cache: rendered files, each stored with the inputs it was
//! rendered from and served only while those are still the mirror's.
//!
//! Invalidation from the change stream alone cannot keep a cache right: a
//! render that started on an older mirror state can store its result after
//! the invalidation for the newer one, and that entry would then be served
//! until evicted. So every entry carries [`Inputs`] (the rows it used, held
//! by `Arc` and compared by pointer, and the stamps of the template sets it
//! chose from), checked against the current state on fill and on every
//! read. The change stream still drops entries early, but only to free
//! memory: correctness never depends on it.
//!
//! Phone directories live here too, one entry per tenant, family and query
//! (not per phone: every phone of the tenant gets the same bytes), current
//! while the tenant's directory stamp and row are.

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use dialtone_sync::stamp::{Input, ScopeKey};
use dialtone_sync::{ChangeEvent, Entity, Family, Id, MirrorState, Phone, Template, Tenant};
use moka::sync::Cache;

use crate::error::ProvisionError;
use crate::provision::Rendered;

/// Failed renders remembered at most; each is a key and an error message.
const FAILURES: u64 = 4096;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct RenderKey {
    pub family: Family,
    pub file: Box<str>,
    pub phone: Option<Id>,
    /// Set for a phone directory, which is no template render.
    pub directory: Option<DirectoryKey>,
}

/// Which phone directory: whose, and the page and search the request
/// asked for, normalized (`phonebook::Query`), so spellings of one query
/// share an entry and the variants are bounded.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct DirectoryKey {
    pub tenant: Id,
    pub page: usize,
    pub search: Option<Box<str>>,
}

/// Everything a rendered file was made from besides the node's fixed
/// settings (secret key, base URL).
#[derive(Debug)]
pub(crate) struct Inputs {
    pub family: Family,
    /// The template name the file resolves through (`{mac}.cfg`).
    pub template: &'static str,
    pub phone: Option<Arc<Phone>>,
    pub tenant: Option<Arc<Tenant>>,
    pub line_ids: Option<Arc<[Id]>>,
    /// Stamps of the template keys resolution looks at for this file.
    pub templates: [u64; 4],
    /// Generation of the shipped templates.
    pub shipped: u64,
    /// The model the render saw: the phone's, or the request's when the
    /// phone has none (or there is no phone).
    pub model: Option<Box<str>>,
    /// A phone directory's tenant and its directory stamp; for these the
    /// template fields above are unused.
    pub directory: Option<(Id, u64)>,
}

fn same<T>(a: Option<&Arc<T>>, b: Option<&Arc<T>>) -> bool
where
    T: ?Sized,
{
    match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        (None, None) => true,
        _ => false,
    }
}

impl Inputs {
    /// The inputs of a render of `template` for `phone` from `state`.
    pub fn of(
        state: &MirrorState,
        shipped: u64,
        family: Family,
        template: &'static str,
        phone: Option<&Arc<Phone>>,
        model: Option<&str>,
    ) -> Inputs {
        Inputs {
            family,
            template,
            phone: phone.cloned(),
            tenant: phone.and_then(|p| state.tenant(p.tenant_id)).cloned(),
            line_ids: phone.and_then(|p| state.line_ids(p.id)).cloned(),
            templates: template_stamps(state, family, template, phone.map(|p| &**p), model),
            shipped,
            model: model.map(Box::from),
            directory: None,
        }
    }

    /// The inputs of `tenant`'s phone directory built from `state`: its
    /// entries (by stamp) and its row (the title).
    pub fn directory(
        state: &MirrorState,
        family: Family,
        template: &'static str,
        tenant: Id,
    ) -> Inputs {
        Inputs {
            family,
            template,
            phone: None,
            tenant: state.tenant(tenant).cloned(),
            line_ids: None,
            templates: [0; 4],
            shipped: 0,
            model: None,
            directory: Some((tenant, state.stamp(Input::Directory(tenant)))),
        }
    }

    /// Whether a render from `state` (with the request's `model`) would
    /// use exactly these inputs. Held `Arc`s make pointer equality exact:
    /// an allocation cannot be reused while the entry holds it.
    pub fn is_current(&self, state: &MirrorState, shipped: u64, model: Option<&str>) -> bool {
        if let Some((tenant, stamp)) = self.directory {
            return state.stamp(Input::Directory(tenant)) == stamp
                && same(state.tenant(tenant), self.tenant.as_ref());
        }
        if self.shipped != shipped
            || self.model.as_deref() != model
            || self.templates
                != template_stamps(
                    state,
                    self.family,
                    self.template,
                    self.phone.as_deref(),
                    self.model.as_deref(),
                )
        {
            return false;
        }
        let Some(phone) = &self.phone else {
            return true;
        };
        same(state.phone(phone.id), Some(phone))
            && same(state.tenant(phone.tenant_id), self.tenant.as_ref())
            && same(state.line_ids(phone.id), self.line_ids.as_ref())
    }

    /// The input a request would have: the phone's model wins over the
    /// request's.
    pub fn effective_model<'a>(
        phone: Option<&'a Arc<Phone>>,
        requested: Option<&'a str>,
    ) -> Option<&'a str> {
        phone.and_then(|p| p.model.as_deref()).or(requested)
    }
}

/// The stamps of the keys `templates::resolve` looks at, in its order
/// (phone, tenant, model, family); 0 for a key it does not look at. Only
/// these: another tenant's template of the same file is no change here.
fn template_stamps(
    state: &MirrorState,
    family: Family,
    file: &str,
    phone: Option<&Phone>,
    model: Option<&str>,
) -> [u64; 4] {
    let key = |scope| {
        state.stamp(Input::Template {
            family,
            file,
            scope,
        })
    };
    [
        phone.map_or(0, |p| key(ScopeKey::Phone(p.mac))),
        phone.map_or(0, |p| key(ScopeKey::Tenant(p.tenant_id))),
        model
            .filter(|m| !m.is_empty())
            .map_or(0, |m| key(ScopeKey::Model(m))),
        key(ScopeKey::Family),
    ]
}

/// Whether a template at `t`'s key could render the file `i` describes.
fn may_render(t: &Template, i: &Inputs) -> bool {
    if t.family != i.family || *t.file_pattern != *i.template {
        return false;
    }
    match ScopeKey::of(t) {
        ScopeKey::Family => true,
        ScopeKey::Model(model) => i.model.as_deref() == Some(model),
        ScopeKey::Tenant(tenant) => i.phone.as_ref().is_some_and(|p| p.tenant_id == tenant),
        ScopeKey::Phone(mac) => i.phone.as_ref().is_some_and(|p| p.mac == mac),
        ScopeKey::Other(_) => false,
    }
}

fn build(bytes: u64) -> Cache<RenderKey, Rendered> {
    Cache::builder()
        .max_capacity(bytes)
        .weigher(|k: &RenderKey, v: &Rendered| {
            // The held rows are shared with the mirror; count their pointers.
            let search = k.directory.as_ref().and_then(|d| d.search.as_ref());
            (v.body.len() + v.etag.len() + k.file.len() + search.map_or(0, |s| s.len()) + 256)
                .try_into()
                .unwrap_or(u32::MAX)
        })
        .support_invalidation_closures()
        .build()
}

pub(crate) struct RenderCache {
    /// Swapped whole (emptied) when its size changes on SIGHUP.
    files: ArcSwap<Cache<RenderKey, Rendered>>,
    /// Renders that failed (a template error, a blown budget), with what
    /// they were made from: served like files, while still current.
    failures: Cache<RenderKey, Arc<(Inputs, ProvisionError)>>,
    /// Keys the self-check has yet to visit in its current pass.
    unchecked: Mutex<Vec<RenderKey>>,
}

impl RenderCache {
    pub fn new(bytes: u64) -> RenderCache {
        RenderCache {
            files: ArcSwap::from_pointee(build(bytes)),
            failures: Cache::new(FAILURES),
            unchecked: Mutex::default(),
        }
    }

    /// The cached file, if it was rendered from what `state` holds now.
    pub fn get(
        &self,
        key: &RenderKey,
        state: &MirrorState,
        shipped: u64,
        model: Option<&str>,
    ) -> Option<Rendered> {
        let hit = self.files.load().get(key)?;
        let current = hit
            .inputs
            .as_ref()
            .is_some_and(|i| i.is_current(state, shipped, model));
        if !current {
            metrics::counter!("dialtone_render_cache_total", "result" => "outdated").increment(1);
            return None;
        }
        metrics::counter!("dialtone_render_cache_total", "result" => "hit").increment(1);
        Some(hit)
    }

    /// Stores `file` only if its inputs are those of `latest`, the newest
    /// state: a render from a state that has moved on would be outdated
    /// the moment it landed.
    pub fn fill(
        &self,
        key: RenderKey,
        file: &Rendered,
        latest: &MirrorState,
        shipped: u64,
        model: Option<&str>,
    ) -> bool {
        let current = file
            .inputs
            .as_ref()
            .is_some_and(|i| i.is_current(latest, shipped, model));
        if current {
            self.files.load().insert(key, file.clone());
        } else {
            metrics::counter!("dialtone_render_cache_fills_dropped_total").increment(1);
        }
        current
    }

    /// The error a render from what `state` holds now ended with, if any.
    pub fn failed(
        &self,
        key: &RenderKey,
        state: &MirrorState,
        shipped: u64,
        model: Option<&str>,
    ) -> Option<ProvisionError> {
        let failure = self.failures.get(key)?;
        failure
            .0
            .is_current(state, shipped, model)
            .then(|| failure.1.clone())
    }

    /// Remembers a failed render, on the same terms as `fill`.
    pub fn fail(
        &self,
        key: RenderKey,
        inputs: Inputs,
        error: &ProvisionError,
        latest: &MirrorState,
        shipped: u64,
        model: Option<&str>,
    ) {
        if inputs.is_current(latest, shipped, model) {
            self.failures.insert(key, Arc::new((inputs, error.clone())));
        }
    }

    pub fn peek(&self, key: &RenderKey) -> Option<Rendered> {
        self.files.load().get(key)
    }

    pub fn remove(&self, key: &RenderKey) {
        self.files.load().invalidate(key);
    }

    #[cfg(test)]
    pub fn put(&self, key: RenderKey, file: Rendered) {
        self.files.load().insert(key, file);
    }

    pub fn clear(&self) {
        self.files.load().invalidate_all();
        self.failures.invalidate_all();
    }

    pub fn len(&self) -> u64 {
        let files = self.files.load();
        files.run_pending_tasks();
        files.entry_count()
    }

    /// A cache of a new size, empty; false when the size is unchanged.
    pub fn resize(&self, bytes: u64) -> bool {
        if self.files.load().policy().max_capacity() == Some(bytes) {
            return false;
        }
        self.files.store(Arc::new(build(bytes)));
        true
    }

    /// Up to `count` keys the self-check has not visited in this pass; a
    /// new pass starts from the cache's keys when the last one is done.
    pub fn next_unchecked(&self, count: usize) -> Vec<RenderKey> {
        let mut pending = self.unchecked.lock().unwrap_or_else(|e| e.into_inner());
        if pending.is_empty() {
            pending.extend(self.files.load().iter().map(|(k, _)| (*k).clone()));
        }
        let keep = pending.len().saturating_sub(count);
        pending.split_off(keep)
    }

    /// Drops the entries a mirror change makes outdated. Only to free
    /// memory early: reads check inputs anyway.
    pub fn invalidate(&self, state: &MirrorState, event: &ChangeEvent) {
        let (keys, touched) = match event {
            ChangeEvent::Reset { .. } => return self.clear(),
            ChangeEvent::Changed { keys, tenants, .. } => (keys.clone(), tenants.clone()),
        };
        // A directory entry or tenant row changed: the tenants it belonged
        // to, before or after, have new directories.
        let directories = keys
            .iter()
            .any(|(e, _)| matches!(e, Entity::DirectoryEntry | Entity::Tenant));
        let mut phones = Vec::new();
        let mut tenants = Vec::new();
        let mut templates = Vec::new();
        for (entity, id) in keys.iter() {
            match entity {
                Entity::Phone => phones.push(*id),
                Entity::Tenant => tenants.push(*id),
                Entity::Line => phones.extend(state.phone_of_line(*id)),
                // A deleted template's key is gone with it; its files are
                // outdated by stamp and replaced when next read.
                Entity::Template => templates.extend(state.template(*id).cloned()),
                _ => {}
            }
        }
        if phones.is_empty() && tenants.is_empty() && templates.is_empty() && !directories {
            return;
        }
        let result = self
            .files
            .load()
            .invalidate_entries_if(move |_, v: &Rendered| {
                let Some(i) = &v.inputs else { return false };
                if let Some((tenant, _)) = i.directory {
                    return directories && touched.contains(&tenant);
                }
                i.phone
                    .as_ref()
                    .is_some_and(|p| phones.contains(&p.id) || tenants.contains(&p.tenant_id))
                    || templates.iter().any(|t| may_render(t, i))
            });
        if let Err(e) = result {
            tracing::warn!(error = %e, "precise invalidation unavailable; dropping the render cache");
            self.clear();
        }
    }
}
