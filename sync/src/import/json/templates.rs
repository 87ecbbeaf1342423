//! The JSON import's `templates`: each names its key by the member of its
//! scope (`model`, `tenant` by slug, `mac`), as the admin API's create
//! does, and is checked here for what the data layer can tell: names
//! the API bounds, a model a phone could have. A phone's names its
//! tenant too: the template is that tenant's, and the store writes it
//! only onto a phone of that tenant. Its body compiles and renders, and
//! a tenant's quotas hold, only the binary can tell.

use serde::Deserialize;

use crate::checks::{PhoneText, MAX_PHONE_FIELD};
use crate::model::{Family, Mac, TemplateScope, NUL_TEXT};
use crate::store::{Mutation, TemplateInput};

/// Who an imported template is written by until the caller names the
/// importer.
pub const IMPORTED_BY: &str = "import";

fn de_scope<'de, D: serde::Deserializer<'de>>(d: D) -> Result<TemplateScope, D::Error> {
    super::de_with(d, |s| s.parse::<TemplateScope>().map_err(|e| e.to_string()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct JsonTemplate {
    #[serde(deserialize_with = "de_scope")]
    scope: TemplateScope,
    #[serde(deserialize_with = "super::de_family")]
    family: Family,
    model: Option<String>,
    tenant: Option<String>,
    mac: Option<String>,
    file_pattern: String,
    body: String,
}

impl JsonTemplate {
    /// The template's write, or the field at fault and why.
    pub(super) fn mutation(self) -> Result<Mutation, (&'static str, String)> {
        let names = [
            ("file_pattern", Some(&*self.file_pattern)),
            ("model", self.model.as_deref()),
            ("tenant", self.tenant.as_deref()),
            ("mac", self.mac.as_deref()),
            ("body", Some(&*self.body)),
        ];
        for (field, value) in names {
            let Some(value) = value else { continue };
            if value.contains('\0') {
                return Err((field, NUL_TEXT.into()));
            }
            // The API's bound on every name a template request gives.
            if field != "body" && value.len() > MAX_PHONE_FIELD {
                return Err((field, format!("at most {MAX_PHONE_FIELD} bytes")));
            }
        }
        if self.file_pattern.is_empty() {
            return Err(("file_pattern", "file_pattern is required".into()));
        }
        // A member of another scope would be ignored: the template would
        // apply elsewhere than the file seems to say.
        let members = [
            (
                "model",
                self.model.is_some(),
                "a model",
                &[TemplateScope::Model][..],
            ),
            (
                "tenant",
                self.tenant.is_some(),
                "a tenant- or phone",
                &[TemplateScope::Tenant, TemplateScope::Phone],
            ),
            (
                "mac",
                self.mac.is_some(),
                "a phone",
                &[TemplateScope::Phone],
            ),
        ];
        if let Some((field, _, whose, _)) = (members.into_iter())
            .find(|(_, given, _, scopes)| *given && !scopes.contains(&self.scope))
        {
            return Err((
                field,
                format!("only {whose}-scope template names a {field}"),
            ));
        }
        let required = |field: &'static str, value: Option<String>| {
            value.filter(|v| !v.is_empty()).ok_or_else(|| {
                (
                    field,
                    format!("a {}-scope template needs {field}", self.scope),
                )
            })
        };
        let slug = |tenant| {
            let slug = required("tenant", tenant)?;
            crate::import::check_slug(&slug).map_err(|e| ("tenant", e))
        };
        let (scope_key, tenant) = match self.scope {
            TemplateScope::Family => (String::new(), None),
            TemplateScope::Model => {
                let model = required("model", self.model)?;
                // A key no phone's model can be would never apply.
                let as_phone_model = PhoneText {
                    model: Some(&model),
                    ..Default::default()
                };
                as_phone_model.check().map_err(|r| ("model", r.reason))?;
                (model, None)
            }
            TemplateScope::Tenant => (String::new(), Some(slug(self.tenant)?)),
            TemplateScope::Phone => {
                let mac: Mac = required("mac", self.mac)?
                    .parse()
                    .map_err(|e: crate::SyncError| ("mac", e.to_string()))?;
                (mac.to_string(), Some(slug(self.tenant)?))
            }
        };
        let template = TemplateInput {
            scope: self.scope,
            family: self.family,
            scope_key,
            file_pattern: self.file_pattern,
            body: self.body,
            updated_by: IMPORTED_BY.into(),
            keep_versions: None,
        };
        Ok(match tenant {
            Some(tenant) => Mutation::UpsertTenantTemplate { tenant, template },
            None => Mutation::UpsertTemplate(template),
        })
    }
}
