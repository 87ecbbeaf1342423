//! What a rendered file was made from, and whether the mirror still holds
//! exactly that: the render cache's test of an entry on fill and on read.

use std::sync::Arc;

use dialtone_sync::stamp::{Input, ScopeKey};
use dialtone_sync::{Family, Id, MirrorState, Phone, Template, Tenant};

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
        // Any change at any spelling resolution looks at moves that
        // spelling's stamp past every earlier one, so the largest changes.
        model.filter(|m| !m.is_empty()).map_or(0, |m| {
            (crate::models::spellings(family, m).iter())
                .map(|spelling| {
                    state.stamp(Input::Template {
                        family,
                        file,
                        scope: ScopeKey::Model(spelling),
                    })
                })
                .max()
                .unwrap_or(0)
        }),
        key(ScopeKey::Family),
    ]
}

/// Whether a template at `t`'s key could render the file `i` describes.
pub(crate) fn may_render(t: &Template, i: &Inputs) -> bool {
    if t.family != i.family || *t.file_pattern != *i.template {
        return false;
    }
    match ScopeKey::of(t) {
        ScopeKey::Family => true,
        ScopeKey::Model(model) => {
            (i.model.as_deref()).is_some_and(|m| crate::templates::same_model(t.family, m, model))
        }
        ScopeKey::Tenant(tenant) => i.phone.as_ref().is_some_and(|p| p.tenant_id == tenant),
        ScopeKey::Phone(mac) => i.phone.as_ref().is_some_and(|p| p.mac == mac),
        ScopeKey::Other(_) => false,
    }
}
