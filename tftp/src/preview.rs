//! What the admin API shows before anything goes live: a phone's files as
//! they would be served (optionally with a draft template in place of a
//! stored one), and the checks a template passes before it is saved.
//!
//! Unlike `provision()`, nothing here is cached or recorded in history, and
//! line passwords are masked: previews go to people, not phones.

use std::sync::Arc;

use dialtone_sync::{Family, Id, Mac, MirrorState, Phone, Template, TemplateScope};

use crate::error::ProvisionError;
use crate::identify::{file_names, identify, template_names, FileKind};
use crate::provision::Provisioner;
use crate::render::{compile, content_type, render, Subject};
use crate::templates::{resolve, resolve_with, same_model, Draft, Origin, Resolved};

/// One file as a phone would get it.
#[derive(Clone, Debug)]
pub struct PreviewFile {
    pub file: String,
    /// Which template rendered it: `yealink/{mac}.cfg (stored #3 v2)`.
    pub template: String,
    /// True when the draft (if any) rendered this file; false when a
    /// template nearer the phone overrides it.
    pub from_draft: bool,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Provisioner {
    /// The files `phone` fetches that dialtone renders (boot, model and
    /// device files; not the directory, which is data, not a template):
    /// those a template resolves for, as [`Self::preview`] resolves it. A
    /// family asks for names no shipped file answers (a SPA's
    /// `ATA<MAC>.cnf.xml`, an enterprise Cisco's `SIP<MAC>.cnf`), and
    /// listing one made every preview of the phone "not found".
    pub fn rendered_files_of(&self, phone: &Phone) -> Vec<String> {
        let state = self.mirror.load();
        let shipped = self.shipped.load();
        file_names(phone.family, &phone.mac, phone.model.as_deref())
            .into_iter()
            .filter(|file| {
                identify(file, None).is_ok_and(|id| {
                    let model = phone.model.as_deref().or(id.model.as_deref());
                    matches!(
                        id.kind,
                        FileKind::Boot | FileKind::ModelCommon | FileKind::DeviceConfig
                    ) && resolve(
                        &state,
                        &shipped,
                        phone.family,
                        id.template,
                        Some(phone),
                        model,
                    )
                    .is_some()
                })
            })
            .collect()
    }

    /// The phones `template` reaches right now: those of its family in its
    /// scope whose file resolves to it, not to a template nearer the phone.
    /// These, and no others, see a change to it (and are the ones to tell
    /// with a resync). At most `limit`; the flag says whether there were more.
    pub fn phones_using(&self, template: &Template, limit: usize) -> (Vec<Arc<Phone>>, bool) {
        let Some(name) = template_names(template.family)
            .into_iter()
            .find(|n| *n == &*template.file_pattern)
        else {
            return (Vec::new(), false);
        };
        let state = self.mirror.load();
        let shipped = self.shipped.load();
        let key = &*template.scope_key;
        let candidates: Box<dyn Iterator<Item = &Arc<Phone>>> = match template.scope {
            // One phone: a lookup, not a walk over every phone.
            TemplateScope::Phone => Box::new(
                key.parse::<Mac>()
                    .ok()
                    .and_then(|mac| state.phone_by_mac(&mac))
                    .into_iter(),
            ),
            TemplateScope::Tenant => {
                let tenant = key.parse::<Id>().ok();
                Box::new(tenant.into_iter().flat_map(|t| state.phones_of(t)))
            }
            // Case-blind, as resolution is; resolution below then drops
            // phones another stored spelling of the model wins for.
            TemplateScope::Model => Box::new(state.phones().filter(move |p| {
                (p.model.as_deref()).is_some_and(|m| same_model(template.family, m, key))
            })),
            TemplateScope::Family => Box::new(state.phones()),
        };
        let mut phones = Vec::new();
        for phone in candidates.filter(|p| p.family == template.family) {
            let resolved = resolve(
                &state,
                &shipped,
                phone.family,
                name,
                Some(phone),
                phone.model.as_deref(),
            );
            if resolved
                .is_some_and(|r| matches!(r.origin, Origin::Stored { id, .. } if id == template.id))
            {
                if phones.len() == limit {
                    return (phones, true);
                }
                phones.push(phone.clone());
            }
        }
        (phones, false)
    }

    /// Renders `file` for `phone` (as the caller was allowed to see it)
    /// from the current mirror, with `draft` standing in for the stored
    /// template of its key. A phone that has since moved to another tenant
    /// is not found.
    pub fn preview(
        &self,
        phone: &Phone,
        file: &str,
        draft: Option<&Draft>,
    ) -> Result<PreviewFile, ProvisionError> {
        let state = self.mirror.load();
        let mac = &phone.mac;
        let phone = (state.phone_by_mac(mac))
            .filter(|now| now.id == phone.id && now.tenant_id == phone.tenant_id)
            .ok_or(ProvisionError::NotFound)?;
        let identity = identify(file, None).map_err(|_| ProvisionError::NotFound)?;
        if !matches!(
            identity.kind,
            FileKind::Boot | FileKind::ModelCommon | FileKind::DeviceConfig
        ) || !identity.candidates.contains(&phone.family)
            || identity.mac.is_some_and(|m| m != *mac)
        {
            return Err(ProvisionError::NotFound);
        }
        let model = phone.model.as_deref().or(identity.model.as_deref());
        let shipped = self.shipped.load();
        let template = resolve_with(
            &state,
            &shipped,
            phone.family,
            identity.template,
            Some(phone),
            model,
            draft,
        )
        .ok_or(ProvisionError::NotFound)?;
        let body = self.render_masked(&state, &template, Some(phone), model, &identity.file)?;
        Ok(PreviewFile {
            file: identity.file,
            from_draft: template.origin == Origin::Draft,
            template: template.label(),
            content_type: content_type(phone.family),
            body,
        })
    }

    /// Checks a template before it is stored: its file pattern must be one
    /// `family` serves, it must compile, and it must render for `sample` (a
    /// phone it applies to; none renders it as for an unknown phone).
    /// Errors carry the template's line and column. Returns the sample
    /// render (masked).
    pub fn check_template(
        &self,
        family: Family,
        file_pattern: &str,
        body: &str,
        sample: Option<&Phone>,
    ) -> Result<Vec<u8>, ProvisionError> {
        let known = template_names(family);
        let name = known
            .iter()
            .copied()
            .find(|n| *n == file_pattern)
            .ok_or_else(|| ProvisionError::Render {
                template: format!("{family}/{file_pattern}"),
                line: None,
                column: None,
                message: format!(
                    "{family} phones fetch no file by that pattern; known: {}",
                    known.join(", ")
                ),
            })?;
        let template = Resolved {
            origin: Origin::Draft,
            family,
            name,
            body: Arc::from(body),
        };
        let state = self.mirror.load();
        let sample = sample.filter(|p| p.family == family);
        let file = sample
            .and_then(|phone| {
                file_names(family, &phone.mac, phone.model.as_deref())
                    .into_iter()
                    .find(|f| identify(f, None).is_ok_and(|id| id.template == name))
            })
            .unwrap_or_else(|| name.to_string());
        let model = sample.and_then(|p| p.model.as_deref());
        self.render_masked(&state, &template, sample, model, &file)
    }

    fn render_masked(
        &self,
        state: &MirrorState,
        template: &Resolved,
        phone: Option<&Phone>,
        model: Option<&str>,
        file: &str,
    ) -> Result<Vec<u8>, ProvisionError> {
        // The phone as the caller was allowed to see it: read again from a
        // newer state, a phone moved to another tenant meanwhile would show
        // that tenant's lines.
        if let Some(p) = phone {
            if state
                .phone(p.id)
                .is_none_or(|now| now.tenant_id != p.tenant_id)
            {
                return Err(ProvisionError::NotFound);
            }
        }
        let engine = compile(template, &self.options.budget)?;
        let lines = phone.map(|p| state.lines_of(p.id)).unwrap_or_default();
        let tenant = phone.and_then(|p| state.tenant(p.tenant_id));
        let subject = Subject {
            mask_secrets: true,
            family: template.family,
            phone,
            lines: &lines,
            tenant: tenant.map(|t| &**t),
            model,
            file,
        };
        render(
            &engine,
            template,
            &subject,
            &self.key,
            &self.options.base_url,
            &self.options.budget,
        )
    }
}

/// A phone a template of this scope would render for, to try it on: the
/// named phone, or the first (by MAC) of the tenant, model or family.
pub fn sample_phone<'a>(
    state: &'a MirrorState,
    scope: TemplateScope,
    family: Family,
    scope_key: &str,
) -> Option<&'a Arc<Phone>> {
    // The key read once; a tenant scope visits only the tenant's phones.
    let tenant = match scope {
        TemplateScope::Phone => {
            let mac = scope_key.parse().ok()?;
            return state.phone_by_mac(&mac).filter(|p| p.family == family);
        }
        TemplateScope::Tenant => Some(scope_key.parse::<dialtone_sync::Id>().ok()?),
        TemplateScope::Model | TemplateScope::Family => None,
    };
    let matching = |p: &&Arc<Phone>| -> bool {
        p.family == family
            && match scope {
                TemplateScope::Model => p.model.as_deref() == Some(scope_key),
                TemplateScope::Tenant | TemplateScope::Phone | TemplateScope::Family => true,
            }
    };
    (state.phones_within(tenant))
        .filter(matching)
        .min_by_key(|p| p.mac)
}

#[cfg(test)]
#[path = "preview_tests.rs"]
mod tests;
