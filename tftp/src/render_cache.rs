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
use dialtone_sync::{ChangeEvent, Entity, Family, Id, Mac, MirrorState};
use moka::sync::Cache;

use crate::render_files::Files;

use crate::error::ProvisionError;
use crate::provision::Rendered;
use crate::render_inputs::may_render;
pub(crate) use crate::render_inputs::Inputs;

/// Bytes of failed renders remembered at most, counted by what each holds:
/// its key, its error message, and the rows it was made from. Those rows
/// stay alive as long as the entry, whatever the mirror holds since: 4,096
/// entries counted by number, each holding a tenant row with 64 KiB of
/// settings and a phone with 16 KiB of variables, kept some 320 MiB of
/// old rows for a tenant whose template always fails.
const FAILURES_BYTES: u64 = 16 << 20;

fn failure_weight(key: &RenderKey, failure: &Arc<(Inputs, ProvisionError)>) -> u32 {
    let (inputs, error) = &**failure;
    let tenant = inputs.tenant.as_ref().map_or(0, |t| {
        t.settings.len() + t.name.len() + t.slug.len() + t.default_region.len()
    });
    let phone = inputs.phone.as_ref().map_or(0, |p| {
        p.variables.len()
            + p.label.as_ref().map_or(0, |l| l.len())
            + p.model.as_ref().map_or(0, |m| m.len())
            + p.http_user.as_ref().map_or(0, |u| u.len())
    });
    let lines = inputs.line_ids.as_ref().map_or(0, |ids| ids.len() * 8);
    let search = key.directory.as_ref().and_then(|d| d.search.as_ref());
    (512 + key.file.len()
        + search.map_or(0, |s| s.len())
        + error.to_string().len()
        + tenant
        + phone
        + lines)
        .try_into()
        .unwrap_or(u32::MAX)
}

/// Phone files whose spelling is remembered at most (about 100 bytes each).
const SPELLINGS: u64 = 1 << 20;

/// One phone's file by the rule it matched, whatever its spelling. The
/// MAC is the phone's when it was rendered: a hardware swap keeps the
/// phone's id, and its file under the new MAC is no spelling of the old
/// one's. Taken for one, a failure remembered under the old name (or a
/// render that landed after the swap's invalidation) kept the new name
/// out of the cache, and charged its fetches from sources the phone had
/// not fetched from as misses, up to a ban.
type SpellingKey = (Family, Id, Mac, &'static str);

/// How a phone's file is cached: the name as asked, the model asked with
/// (a phone recorded without one takes its User-Agent's, free to change
/// with every request like the name's case), and whether a source known
/// for the phone filled it: such a spelling stays put, any other may be
/// replaced.
#[derive(Clone)]
struct Spelling {
    file: Box<str>,
    model: Option<Box<str>>,
    from_known: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct RenderKey {
    pub family: Family,
    pub file: Box<str>,
    pub phone: Option<Id>,
    /// For a file made for no phone: the User-Agent's model it was made
    /// for, in its one spelling (`models::canonical`: `spa504g`,
    /// `SPASPA504G` and `SPA504G` are one). Under one entry per name,
    /// phones of two models asking in turn had each other's entry rendered
    /// anew every time, uncharged; spellings of one model still replace
    /// each other's entry, and a model nobody here has costs a miss.
    pub model: Option<Box<str>>,
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

/// A phone's own template render: what one spelling per rule applies to.
fn spelling_key(
    key: &RenderKey,
    mac: Option<Mac>,
    rule: Option<&'static str>,
) -> Option<SpellingKey> {
    match (key.phone, mac, &key.directory, rule) {
        (Some(phone), Some(mac), None, Some(rule)) if rule.contains("{mac}") => {
            Some((key.family, phone, mac, rule))
        }
        _ => None,
    }
}

/// The MAC of the phone `inputs` were rendered for.
fn mac_of(inputs: Option<&Inputs>) -> Option<Mac> {
    inputs.and_then(|i| i.phone.as_ref()).map(|p| p.mac)
}

/// Who a render was for, as far as keeping it goes.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Asker {
    /// Asked by a source known for the phone whose own file it is.
    pub from_known: bool,
    /// A common or boot file for a model nobody here has, asked from
    /// where no phone of its family is known to fetch: kept apart
    /// (`render_files.rs`).
    pub unmodeled: bool,
    /// A model nobody here has, wherever it is kept: its failure is not
    /// remembered (each costs its source a miss anyway, and the memo is
    /// every tenant's).
    pub made_up: bool,
}

pub(crate) struct RenderCache {
    /// Swapped whole (emptied) when its size changes on SIGHUP.
    files: ArcSwap<Files>,
    /// Renders that failed (a template error, a blown budget), with what
    /// they were made from: served like files, while still current.
    failures: Cache<RenderKey, Arc<(Inputs, ProvisionError)>>,
    /// Keys the self-check has yet to visit in its current pass.
    unchecked: Mutex<Vec<RenderKey>>,
    /// The spelling a phone's file is cached under, by rule. A file name's
    /// case and a Snom name's model part are free, so one phone's file has
    /// endless spellings, each a render; cached side by side, anyone who
    /// knows a MAC could fill the cache every tenant shares. A phone keeps
    /// one entry per rule. Another spelling replaces it, unless a source
    /// known for the phone filled it; then it is rendered and not cached
    /// (`provision.rs` decides).
    spellings: Cache<SpellingKey, Spelling>,
    /// Held while a phone's file is filled: two renders of two spellings
    /// filling at once would each see the same spelling before, both stay
    /// cached, and only one be remembered, the other never dropped.
    spelling_fills: Mutex<()>,
}

impl RenderCache {
    pub fn new(bytes: u64) -> RenderCache {
        RenderCache {
            files: ArcSwap::from_pointee(Files::new(bytes)),
            failures: Cache::builder()
                .max_capacity(FAILURES_BYTES)
                .weigher(failure_weight)
                .build(),
            unchecked: Mutex::default(),
            spellings: Cache::new(SPELLINGS),
            spelling_fills: Mutex::default(),
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
        asker: Asker,
    ) -> bool {
        let current = file
            .inputs
            .as_ref()
            .is_some_and(|i| i.is_current(latest, shipped, model));
        if !current {
            metrics::counter!("dialtone_render_cache_fills_dropped_total").increment(1);
            return false;
        }
        let files = self.files.load();
        // Decided before the spelling drops the entry held before: a
        // file refused its place must not cost the phone the one it had.
        if files.admits(&key, file, asker.unmodeled) {
            let rule = file.inputs.as_ref().map(|i| i.template);
            let mac = mac_of(file.inputs.as_deref());
            self.with_spelling(&key, mac, rule, model, asker.from_known, || {
                files.insert(key.clone(), file.clone(), asker.unmodeled);
            });
        }
        true
    }

    /// Runs `store` as the one cached spelling of `key`'s phone file (when
    /// it is one), dropping the spelling held before, rendered or failed.
    fn with_spelling(
        &self,
        key: &RenderKey,
        mac: Option<Mac>,
        rule: Option<&'static str>,
        model: Option<&str>,
        from_known: bool,
        store: impl FnOnce(),
    ) {
        let Some(spelling) = spelling_key(key, mac, rule) else {
            return store();
        };
        let _one_at_a_time = self
            .spelling_fills
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(before) = self
            .spellings
            .get(&spelling)
            .filter(|b| *b.file != *key.file)
        {
            let before = RenderKey {
                file: before.file,
                ..key.clone()
            };
            self.files.load().invalidate(&before);
            self.failures.invalidate(&before);
        }
        let held = Spelling {
            file: key.file.clone(),
            model: model.map(Box::from),
            from_known,
        };
        self.spellings.insert(spelling, held);
        store();
    }

    /// When `key` is a phone's file held (rendered, or its failure) under
    /// another spelling of the same `rule`, or asked with another model:
    /// whether a source known for the phone filled that one. Once its
    /// entry is gone (evicted, dropped by an edit), the next spelling to
    /// be rendered takes its place.
    pub fn other_spelling(
        &self,
        key: &RenderKey,
        mac: Option<Mac>,
        rule: &'static str,
        model: Option<&str>,
    ) -> Option<bool> {
        spelling_key(key, mac, Some(rule))
            .and_then(|spelling| self.spellings.get(&spelling))
            .filter(|cached| *cached.file != *key.file || cached.model.as_deref() != model)
            .filter(|cached| {
                let held = RenderKey {
                    file: cached.file.clone(),
                    ..key.clone()
                };
                self.files.load().contains_key(&held) || self.failures.contains_key(&held)
            })
            .map(|cached| cached.from_known)
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

    /// Remembers a failed render, on the same terms as `fill`: a phone's
    /// file fails under its one spelling too, or each spelling would be a
    /// full render again, and each would push another tenant's failure out
    /// of the memo.
    #[allow(clippy::too_many_arguments)]
    pub fn fail(
        &self,
        key: RenderKey,
        inputs: Inputs,
        error: &ProvisionError,
        latest: &MirrorState,
        shipped: u64,
        model: Option<&str>,
        asker: Asker,
    ) {
        if inputs.is_current(latest, shipped, model) && !asker.made_up {
            let rule = Some(inputs.template);
            let mac = mac_of(Some(&inputs));
            self.with_spelling(&key, mac, rule, model, asker.from_known, || {
                self.failures
                    .insert(key.clone(), Arc::new((inputs, error.clone())))
            });
        }
    }

    pub fn peek(&self, key: &RenderKey) -> Option<Rendered> {
        self.files.load().get(key)
    }

    pub fn remove(&self, key: &RenderKey) {
        self.files.load().invalidate(key);
    }

    #[cfg(test)]
    pub fn files(&self) -> Arc<Files> {
        self.files.load_full()
    }

    #[cfg(test)]
    pub fn put(&self, key: RenderKey, file: Rendered) {
        self.files.load().insert(key, file, false);
    }

    pub fn clear(&self) {
        // Not between a fill's spelling and its file: that file would stay
        // with no spelling recorded.
        let _no_fill = self
            .spelling_fills
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        self.files.load().invalidate_all();
        self.failures.invalidate_all();
        self.spellings.invalidate_all();
    }

    pub fn len(&self) -> u64 {
        self.files.load().entry_count()
    }

    /// A cache of a new size, empty; false when the size is unchanged.
    pub fn resize(&self, bytes: u64) -> bool {
        if self.files.load().capacity() == bytes {
            return false;
        }
        self.files.store(Arc::new(Files::new(bytes)));
        true
    }

    /// Up to `count` keys the self-check has not visited in this pass; a
    /// new pass starts from the cache's keys when the last one is done.
    /// Keys taken by `next_unchecked` and not visited: checked first in
    /// the pass's next round, not skipped until the pass after.
    pub fn put_back_unchecked(&self, keys: Vec<RenderKey>) {
        self.unchecked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(keys);
    }

    pub fn next_unchecked(&self, count: usize) -> Vec<RenderKey> {
        let mut pending = self.unchecked.lock().unwrap_or_else(|e| e.into_inner());
        if pending.is_empty() {
            pending.extend(self.files.load().keys());
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
            .invalidate_entries_if(move |_: &RenderKey, v: &Rendered| {
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

#[cfg(test)]
mod failure_tests {
    use super::*;
    use dialtone_sync::testing::build::tenant_row;

    /// Failed renders are counted by the rows they keep alive: a tenant
    /// with 64 KiB of settings whose template always fails keeps a few
    /// hundred of them, not 4,096 of ~80 KiB each.
    #[test]
    fn failures_are_bounded_by_the_rows_they_hold() {
        let cache = RenderCache::new(1 << 20);
        let settings = format!("{{\"x\": \"{}\"}}", "a".repeat(64 * 1024));
        for phone in 0..2_000 {
            let tenant = Arc::new(tenant_row(&settings));
            let inputs = Inputs {
                family: Family::Yealink,
                template: "{mac}.cfg",
                phone: None,
                tenant: Some(tenant),
                line_ids: None,
                templates: [0; 4],
                shipped: 0,
                model: None,
                directory: None,
            };
            let key = RenderKey {
                family: Family::Yealink,
                file: "001565000001.cfg".into(),
                phone: Some(phone),
                model: None,
                directory: None,
            };
            cache
                .failures
                .insert(key, Arc::new((inputs, ProvisionError::NotFound)));
        }
        cache.failures.run_pending_tasks();
        assert!(cache.failures.weighted_size() <= FAILURES_BYTES);
        let kept = cache.failures.entry_count();
        assert!(kept <= FAILURES_BYTES / (64 * 1024), "{kept} kept");
    }
}
