//! The templates an export carries: each stored template's live body,
//! named by what the import can find in another database. A tenant-scope
//! template is stored under its tenant's id, which another database gives
//! another tenant, so it is written by the tenant's slug; a phone-scope
//! one by its MAC and its phone's tenant's slug, so that the import writes
//! it onto that tenant's phone only (a phone moved to another tenant since
//! lost its templates with the move). Earlier versions are not carried.

use crate::model::{Template, TemplateScope};
use crate::Mac;

use super::{Selection, SyncError};

/// A template with its key in the import's terms.
pub(super) struct NamedTemplate<'a> {
    pub template: &'a Template,
    /// Tenant and phone scope: the owning tenant's slug.
    pub tenant: Option<&'a str>,
}

impl NamedTemplate<'_> {
    /// The key the file names it by: empty, the model, slug or MAC.
    fn key(&self) -> &str {
        match (self.template.scope, self.tenant) {
            (TemplateScope::Tenant, Some(slug)) => slug,
            _ => &self.template.scope_key,
        }
    }
}

impl<'a> Selection<'a> {
    /// The selected tenants' tenant- and phone-scope templates (a phone's
    /// going with the tenant the phone is in now), and for the platform's
    /// export the family and model ones too, by scope, family, key, then
    /// file. The platform's export is refused, naming each, when a
    /// template it would write would not import.
    pub(super) fn templates(&self) -> Result<Vec<NamedTemplate<'a>>, SyncError> {
        let mut named = Vec::new();
        let mut unimportable = Vec::new();
        for template in self.state.templates() {
            let owner = match template.scope {
                TemplateScope::Family | TemplateScope::Model => {
                    if !self.platform {
                        continue;
                    }
                    if let Some(advice) = self.mixed_case_advice(template) {
                        unimportable.push((template.id, advice));
                    }
                    named.push(NamedTemplate {
                        template,
                        tenant: None,
                    });
                    continue;
                }
                TemplateScope::Tenant => {
                    (template.scope_key.parse().ok()).filter(|id| self.state.tenant(*id).is_some())
                }
                TemplateScope::Phone => (template.scope_key.parse::<Mac>().ok())
                    .and_then(|mac| self.state.phone_by_mac(&mac))
                    .map(|phone| phone.tenant_id),
            };
            let Some(owner) = owner else {
                // The store removes a tenant's and a phone's templates with
                // them; one left behind (SQL by hand) would not import.
                if self.platform {
                    let advice = format!(
                        "{} belongs to no {} stored: delete it (DELETE /v1/templates/{})",
                        described(template),
                        template.scope,
                        template.id
                    );
                    unimportable.push((template.id, advice));
                }
                continue;
            };
            let Some(tenant) = self.selected(owner) else {
                continue;
            };
            named.push(NamedTemplate {
                template,
                tenant: Some(&*tenant.slug),
            });
        }
        if !unimportable.is_empty() {
            return Err(refusal(unimportable));
        }
        fn order<'n>(n: &'n NamedTemplate<'_>) -> (TemplateScope, &'static str, &'n str, &'n str) {
            let t = n.template;
            (t.scope, t.family.as_str(), n.key(), &t.file_pattern)
        }
        named.sort_by(|a, b| order(a).cmp(&order(b)));
        Ok(named)
    }

    /// What to do about a model template whose model is in mixed case:
    /// the import refuses a new such key, as the API's create does (it
    /// would apply only to phones recorded in that very spelling), so the
    /// file would not load into another database.
    fn mixed_case_advice(&self, template: &Template) -> Option<String> {
        let model = &*template.scope_key;
        let mixed = template.scope == TemplateScope::Model
            && model.chars().any(|c| c.is_ascii_uppercase())
            && model.chars().any(|c| c.is_ascii_lowercase());
        if !mixed {
            return None;
        }
        let in_one_case = (self.state.templates()).find(|other| {
            other.id != template.id
                && other.scope == TemplateScope::Model
                && other.family == template.family
                && other.file_pattern == template.file_pattern
                && other.scope_key.eq_ignore_ascii_case(model)
                && (*other.scope_key == model.to_ascii_uppercase()
                    || *other.scope_key == model.to_ascii_lowercase())
        });
        let what = described(template);
        Some(match in_one_case {
            Some(other) => format!(
                "{what} has its model in mixed case, and template #{} ({:?}) is this model's \
                 template for this file already: delete #{} (DELETE /v1/templates/{})",
                other.id, other.scope_key, template.id, template.id
            ),
            None => format!(
                "{what} has its model in mixed case: make it again as model {:?} or {:?} \
                 (DELETE /v1/templates/{}, then POST /v1/templates with the same body; its \
                 earlier versions go)",
                model.to_ascii_uppercase(),
                model.to_ascii_lowercase(),
                template.id
            ),
        })
    }
}

fn described(template: &Template) -> String {
    format!(
        "template #{} ({} {:?}, {})",
        template.id, template.scope, template.scope_key, template.file_pattern
    )
}

/// How many unimportable templates a refusal names; the rest are counted.
const NAMED_IN_REFUSAL: usize = 20;

/// The export refused for `unimportable` templates (id, what to do), by id.
fn refusal(mut unimportable: Vec<(i64, String)>) -> SyncError {
    unimportable.sort();
    let named: Vec<&str> = (unimportable.iter())
        .take(NAMED_IN_REFUSAL)
        .map(|(_, advice)| advice.as_str())
        .collect();
    let more = match unimportable.len().saturating_sub(NAMED_IN_REFUSAL) {
        0 => String::new(),
        more => format!("; and {more} more"),
    };
    let count = match unimportable.len() {
        1 => "1 template".to_string(),
        n => format!("{n} templates"),
    };
    SyncError::Export(format!(
        "{count} would not import: {}{more}; then export again",
        named.join("; ")
    ))
}
