//! An import's templates, checked before anything is written as the admin
//! API checks a template it creates (`admin/templates.rs`): a model key
//! in one case and no second spelling of a stored one, the tenant's size,
//! count and version quotas, and the body compiled and tried on a phone
//! of its scope on the render pool. The data layer cannot render, so
//! `dialtone import` and `POST /v1/import` both run these here. A refused
//! template is an invalid row at its place in the file.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Context;
use dialtone_sync::import::{ImportError, ImportPlan};
use dialtone_sync::store::{TemplateInput, TenantInput};
use dialtone_sync::{
    Mac, Mirror, MirrorState, Mutation, SecretKey, Store, TemplateKey, TemplateScope, Tenant,
};
use dialtone_tftp::identify::template_names;
use dialtone_tftp::preview::sample_phone;
use dialtone_tftp::templates::same_model;
use dialtone_tftp::{ProvisionError, ProvisionOptions, Provisioner, Shipped};

use crate::admin::quotas::{Quota, QuotaConfig};
use crate::config::Config;

/// Why a new model key in mixed case is refused, if it is: resolution
/// looks a phone's model up as recorded, in upper and in lower case, so
/// such a key would apply only to phones recorded in that very spelling.
pub(crate) fn mixed_case(model: &str) -> Option<String> {
    let mixed = model.chars().any(|c| c.is_ascii_uppercase())
        && model.chars().any(|c| c.is_ascii_lowercase());
    mixed.then(|| {
        format!(
            "model: {model} is in mixed case; write it in upper or lower case ({}), which \
             applies to phones whatever case their model is recorded in",
            model.to_ascii_uppercase()
        )
    })
}

/// What an import's templates are checked against.
pub(crate) struct TemplateChecks<'a> {
    pub provisioner: &'a Arc<Provisioner>,
    /// The database as the import finds it.
    pub state: Arc<MirrorState>,
    pub quotas: &'a QuotaConfig,
    /// Who the templates are written by.
    pub actor: String,
}

/// A refused template: the field at fault and why.
type Refusal = (&'static str, String);

fn template_of(mutation: &Mutation) -> Option<(&TemplateInput, Option<&str>)> {
    match mutation {
        Mutation::UpsertTemplate(t) => Some((t, None)),
        Mutation::UpsertTenantTemplate { tenant, template } => Some((template, Some(tenant))),
        _ => None,
    }
}

/// The tenants and phones as the import leaves them: the plan's own, else
/// those stored.
struct After<'p> {
    tenants: HashMap<&'p str, &'p TenantInput>,
    phones: HashMap<Mac, &'p str>,
}

impl<'p> After<'p> {
    fn of(plan: &'p ImportPlan) -> Self {
        let mut after = After {
            tenants: HashMap::new(),
            phones: HashMap::new(),
        };
        for (mutation, _) in &plan.items {
            match mutation {
                Mutation::UpsertTenant(t) => {
                    after.tenants.insert(&t.slug, t);
                }
                Mutation::UpsertPhones(batch) => {
                    for i in 0..batch.len() {
                        let tenant = &batch.tenants()[batch.tenant_index(i)];
                        after.phones.insert(batch.mac(i), tenant);
                    }
                }
                _ => {}
            }
        }
        after
    }
}

impl TemplateChecks<'_> {
    /// Checks every template of `plan`: a refused one becomes an error at
    /// its place and leaves the plan; the others are written by the actor
    /// and keep as many versions as their tenant's quota. Returns how many
    /// were refused; fails only when the render pool cannot take a check.
    pub(crate) async fn check(&self, plan: &mut ImportPlan) -> Result<usize, ProvisionError> {
        if !plan.items.iter().any(|(m, _)| template_of(m).is_some()) {
            return Ok(0);
        }
        let mut verdicts = Vec::new();
        {
            let after = After::of(plan);
            let mut counts = self.stored_counts();
            let mut models: Vec<&TemplateInput> = Vec::new();
            for (index, (mutation, _)) in plan.items.iter().enumerate() {
                let Some((template, tenant)) = template_of(mutation) else {
                    continue;
                };
                let verdict = self
                    .one(template, tenant, &after, &mut counts, &models)
                    .await?;
                if verdict.is_ok() && template.scope == TemplateScope::Model {
                    models.push(template);
                }
                verdicts.push((index, verdict));
            }
        }
        let mut refused = Vec::new();
        for (index, verdict) in verdicts {
            let (mutation, location) = &mut plan.items[index];
            match verdict {
                Ok(keep_versions) => {
                    if let Mutation::UpsertTemplate(t)
                    | Mutation::UpsertTenantTemplate { template: t, .. } = mutation
                    {
                        t.updated_by = self.actor.clone();
                        t.keep_versions = keep_versions;
                    }
                }
                Err((field, message)) => {
                    let mut location = location.clone();
                    let place = location.field.take().unwrap_or_default();
                    location.field = Some(format!("{place} {field}"));
                    plan.errors.push(ImportError { location, message });
                    refused.push(index);
                }
            }
        }
        let mut index = 0;
        plan.items.retain(|_| {
            index += 1;
            refused.binary_search(&(index - 1)).is_err()
        });
        Ok(refused.len())
    }

    /// Each stored tenant's tenant- and phone-scope templates, by slug.
    fn stored_counts(&self) -> HashMap<String, u64> {
        let state = &self.state;
        let mut counts = HashMap::new();
        for t in state.templates() {
            let tenant = match t.scope {
                TemplateScope::Tenant => t.scope_key.parse().ok(),
                TemplateScope::Phone => (t.scope_key.parse::<Mac>().ok())
                    .and_then(|mac| state.phone_by_mac(&mac))
                    .map(|p| p.tenant_id),
                TemplateScope::Family | TemplateScope::Model => None,
            };
            if let Some(tenant) = tenant.and_then(|id| state.tenant(id)) {
                *counts.entry(tenant.slug.to_string()).or_default() += 1;
            }
        }
        counts
    }

    /// The tenant a tenant- or phone-scope template belongs to once the
    /// import is written, with its settings (its quotas) as the import
    /// leaves them. None for one of a tenant that does not exist: the
    /// store refuses it, with every other row of that tenant.
    fn owner(&self, slug: &str, after: &After<'_>) -> Option<Tenant> {
        let stored = self.state.tenant_by_slug(slug);
        match after.tenants.get(slug) {
            Some(t) => Some(Tenant {
                id: stored.map_or(0, |s| s.id),
                slug: t.slug.as_str().into(),
                name: t.name.as_str().into(),
                default_region: t.default_region.as_str().into(),
                settings: t.settings.as_str().into(),
                updated_at: 0,
            }),
            None => stored.map(|t| (**t).clone()),
        }
    }

    async fn one(
        &self,
        t: &TemplateInput,
        tenant: Option<&str>,
        after: &After<'_>,
        counts: &mut HashMap<String, u64>,
        models: &[&TemplateInput],
    ) -> Result<Result<Option<u64>, Refusal>, ProvisionError> {
        let state = &self.state;
        let known = template_names(t.family);
        if !known.contains(&t.file_pattern.as_str()) {
            return Ok(Err((
                "file_pattern",
                format!(
                    "{} phones fetch no file by that pattern; known: {}",
                    t.family,
                    known.join(", ")
                ),
            )));
        }
        let owner_slug = match (t.scope, tenant) {
            (TemplateScope::Phone, _) => {
                let Ok(mac) = t.scope_key.parse::<Mac>() else {
                    return Ok(Err((
                        "mac",
                        format!("not a MAC address: {:?}", t.scope_key),
                    )));
                };
                let stored = (state.phone_by_mac(&mac))
                    .and_then(|p| state.tenant(p.tenant_id))
                    .map(|t| &*t.slug);
                match after.phones.get(&mac).copied().or(stored) {
                    Some(slug) => Some(slug.to_string()),
                    None => {
                        return Ok(Err((
                            "mac",
                            format!(
                            "phone {mac} does not exist; a phone-scope template needs its phone"
                        ),
                        )))
                    }
                }
            }
            (_, tenant) => tenant.map(str::to_string),
        };
        let owner = owner_slug
            .as_deref()
            .and_then(|slug| self.owner(slug, after));
        // A tenant the import creates has no share of the pool yet.
        let stored_owner = owner.as_ref().map(|o| o.id).filter(|&id| id != 0);
        // The key as stored here: a tenant's by its id in this database.
        let stored_tenant = tenant
            .and_then(|slug| state.tenant_by_slug(slug))
            .map(|t| t.id);
        let scope_key = match (t.scope, stored_tenant) {
            (TemplateScope::Tenant, Some(id)) => id.to_string(),
            _ => t.scope_key.clone(),
        };
        let key = TemplateKey {
            scope: t.scope,
            family: t.family,
            scope_key: scope_key.as_str().into(),
            file_pattern: t.file_pattern.as_str().into(),
        };
        let stored = (t.scope != TemplateScope::Tenant || stored_tenant.is_some())
            .then(|| state.template_by_key(&key))
            .flatten();
        if t.scope == TemplateScope::Model && stored.is_none() {
            if let Some(reason) = mixed_case(&t.scope_key) {
                return Ok(Err(("model", reason)));
            }
            if let Some(refusal) = self.second_spelling(t, models) {
                return Ok(Err(refusal));
            }
        }
        let mut keep_versions = None;
        if let Some(owner) = &owner {
            let quota = |quota, wanted| self.quotas.check(owner, quota, wanted);
            if let Err(e) = quota(Quota::TemplateBytes, t.body.len() as u64) {
                return Ok(Err(("body", e.message)));
            }
            if stored.is_none() {
                let count = counts.entry(owner.slug.to_string()).or_default();
                if let Err(e) = quota(Quota::Templates, *count + 1) {
                    return Ok(Err(("body", e.message)));
                }
                *count += 1;
            }
            keep_versions = Some(self.quotas.limit(owner, Quota::TemplateVersions));
        }
        let sample = (t.scope != TemplateScope::Tenant || stored_tenant.is_some())
            .then(|| sample_phone(state, t.scope, t.family, &scope_key).cloned())
            .flatten();
        let provisioner = self.provisioner.clone();
        let (family, file_pattern, body) = (t.family, t.file_pattern.clone(), t.body.clone());
        let tried = self
            .provisioner
            .on_pool(stored_owner, move || {
                provisioner.check_template(family, &file_pattern, &body, sample.as_deref())
            })
            .await;
        match tried {
            Ok(_) => Ok(Ok(keep_versions)),
            Err(e @ (ProvisionError::Render { .. } | ProvisionError::Data(_))) => {
                Ok(Err(("body", e.to_string())))
            }
            Err(e) => Err(e),
        }
    }

    /// A model template whose model is already another's, spelled
    /// otherwise (stored, or earlier in the import): models compare
    /// case-blind, so only one of them could apply.
    fn second_spelling(&self, t: &TemplateInput, models: &[&TemplateInput]) -> Option<Refusal> {
        let same = |family, file_pattern: &str, model: &str| {
            family == t.family
                && file_pattern == t.file_pattern
                && same_model(t.family, model, &t.scope_key)
        };
        let stored = (self.state.templates())
            .filter(|s| s.scope == TemplateScope::Model)
            .filter(|s| same(s.family, &s.file_pattern, &s.scope_key))
            .min_by_key(|s| s.id);
        if let Some(s) = stored {
            return Some((
                "model",
                format!(
                    "template #{} ({:?}) is already this model's template for this file; \
                     give its model as it is stored",
                    s.id, s.scope_key
                ),
            ));
        }
        let earlier = models
            .iter()
            .find(|m| same(m.family, &m.file_pattern, &m.scope_key))?;
        Some((
            "model",
            format!(
                "model {:?} is another template's model of this file, spelled otherwise; \
                 only one of them could apply",
                earlier.scope_key
            ),
        ))
    }
}

/// Whether `plan` holds any template.
pub(crate) fn planned(plan: &ImportPlan) -> bool {
    plan.items.iter().any(|(m, _)| template_of(m).is_some())
}

/// [`TemplateChecks::check`] for `dialtone import`: the database loaded as
/// `render` loads it, and a renderer of its own, as `render` builds one.
pub(super) async fn check_offline(
    config: &Config,
    store: &dyn Store,
    key: SecretKey,
    plan: &mut ImportPlan,
    actor: &str,
) -> anyhow::Result<()> {
    let mirror = Arc::new(Mirror::new());
    dialtone_sync::watcher::full_load(&mirror, store)
        .await
        .context("loading the database to check the templates")?;
    let source = config.provisioning.shipped_source();
    let shipped = Shipped::from_source(&source, 1)
        .with_context(|| format!("reading shipped templates ({source:?})"))?;
    let provisioner = Arc::new(Provisioner::new(
        mirror.clone(),
        key,
        shipped,
        ProvisionOptions {
            base_url: config.provisioning.base_url(),
            budget: config.provisioning.render_options().0,
            ..Default::default()
        },
    ));
    let checks = TemplateChecks {
        provisioner: &provisioner,
        state: mirror.load(),
        quotas: &config.quotas,
        actor: actor.to_string(),
    };
    checks
        .check(plan)
        .await
        .context("checking the import's templates")?;
    Ok(())
}
