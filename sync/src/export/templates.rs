//! The templates an export carries: each stored template's live body,
//! named by what the import can find in another database. A tenant-scope
//! template is stored under its tenant's id, which another database gives
//! another tenant, so it is written by the tenant's slug; a phone-scope
//! one by its MAC. Earlier versions are not carried.

use crate::model::{Template, TemplateScope};
use crate::Mac;

use super::{Selection, SyncError};

/// A template with its key in the import's terms.
pub(super) struct NamedTemplate<'a> {
    pub template: &'a Template,
    /// Tenant scope: the tenant's slug.
    pub tenant: Option<&'a str>,
}

impl NamedTemplate<'_> {
    /// The key the file names it by: empty, the model, slug or MAC.
    fn key(&self) -> &str {
        self.tenant.unwrap_or(&self.template.scope_key)
    }
}

impl<'a> Selection<'a> {
    /// The selected tenants' tenant- and phone-scope templates (a phone's
    /// going with the tenant the phone is in now), and for the platform's
    /// export the family and model ones too, by scope, family, key, then
    /// file.
    pub(super) fn templates(&self) -> Result<Vec<NamedTemplate<'a>>, SyncError> {
        let mut named = Vec::new();
        for template in self.state.templates() {
            let owner = match template.scope {
                TemplateScope::Family | TemplateScope::Model => {
                    if self.platform {
                        named.push(NamedTemplate {
                            template,
                            tenant: None,
                        });
                    }
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
                    return Err(SyncError::Export(format!(
                        "template #{} ({} {:?}, {}) belongs to no {} stored; it would not \
                         import: delete it (DELETE /v1/templates/{}), then export again",
                        template.id,
                        template.scope,
                        template.scope_key,
                        template.file_pattern,
                        template.scope,
                        template.id
                    )));
                }
                continue;
            };
            let Some(tenant) = self.selected(owner) else {
                continue;
            };
            named.push(NamedTemplate {
                template,
                tenant: (template.scope == TemplateScope::Tenant).then_some(&*tenant.slug),
            });
        }
        fn order<'n>(n: &'n NamedTemplate<'_>) -> (TemplateScope, &'static str, &'n str, &'n str) {
            let t = n.template;
            (t.scope, t.family.as_str(), n.key(), &t.file_pattern)
        }
        named.sort_by(|a, b| order(a).cmp(&order(b)));
        Ok(named)
    }
}
