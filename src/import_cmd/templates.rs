//! An import's templates, checked before anything is written as the admin
//! API checks a template it creates (`admin/templates.rs`): a model key
//! in one case and no second spelling of a stored one, the tenant's size,
//! count and version quotas, and the body compiled and tried on a phone
//! of its scope on the render pool. The data layer cannot render, so
//! `dialtone import` and `POST /v1/import` both run these here. A refused
//! template is an invalid row at its place in the file.

mod after;
mod scratch;
mod spelling;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use dialtone_sync::import::{ImportError, ImportPlan};
use dialtone_sync::store::TemplateInput;
use dialtone_sync::{
    Mac, Mirror, MirrorState, Mutation, Phone, SecretKey, Store, TemplateKey, TemplateScope, Tenant,
};
use dialtone_tftp::identify::template_names;
use dialtone_tftp::preview::sample_phone;
use dialtone_tftp::{ProvisionError, ProvisionOptions, Provisioner};

use self::after::After;
use self::scratch::Scratch;
use self::spelling::Spellings;
use crate::admin::quotas::{Quota, QuotaConfig};
use crate::config::Config;

/// Longest template body an import takes, of every scope: the admin API's
/// request body cap, which bounds every template it creates.
pub(crate) const MAX_BODY: usize = crate::admin::database_share::BODY_LIMIT;

/// Longest an import's templates may take to check, all of them. Each is
/// a trial render of up to the render time budget (250 ms by default), and
/// a family or model template's sample is a walk over every phone: five
/// minutes is thousands of templates on a platform of a million phones,
/// and a bound on a run that would otherwise seem hung. Past it the import
/// is refused whole, asking for smaller files.
pub(crate) const CHECK_TIME: Duration = Duration::from_secs(300);

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

/// The phone a template is tried on.
enum Sample {
    Stored(Arc<Phone>),
    /// The plan's phone of this MAC: the database has none of its scope.
    Planned(Mac),
    /// No phone of its scope anywhere: rendered as for an unknown phone,
    /// as the admin API renders one for a tenant without phones.
    None,
}

/// A template that differs from the stored one, if any, to check.
struct Pending<'p> {
    template: &'p TemplateInput,
    /// Its tenant as the import leaves it; None for a family or model one.
    owner: Option<Tenant>,
    /// Whether its key is new: it counts against its tenant's quota.
    new: bool,
    sample: Sample,
}

enum Step<'p> {
    Refused(Refusal),
    /// The stored body of its key is the same: nothing is written.
    Unchanged,
    Check(Pending<'p>),
}

/// What checking the templates needs besides the database and quotas.
pub(crate) struct CheckLimits {
    /// The renders' budget and base URL, for the plan's own phones.
    pub render: ProvisionOptions,
    /// See [`CHECK_TIME`].
    pub time: Duration,
}

impl Default for CheckLimits {
    fn default() -> Self {
        CheckLimits {
            render: ProvisionOptions::default(),
            time: CHECK_TIME,
        }
    }
}

impl TemplateChecks<'_> {
    /// Checks every template of `plan`: a refused one becomes an error at
    /// its place and leaves the plan; the others are written by the actor
    /// and keep as many versions as their tenant's quota. Returns how many
    /// were refused; fails only when the render pool cannot take a check.
    pub(crate) async fn check(&self, plan: &mut ImportPlan) -> Result<usize, ProvisionError> {
        let limits = CheckLimits {
            render: self.provisioner.options().clone(),
            time: CHECK_TIME,
        };
        self.check_within(plan, &limits).await
    }

    /// [`TemplateChecks::check`] within `limits`. Past the time, the run
    /// is refused whole: the templates not yet checked cannot be written.
    pub(crate) async fn check_within(
        &self,
        plan: &mut ImportPlan,
        limits: &CheckLimits,
    ) -> Result<usize, ProvisionError> {
        if !planned(plan) {
            return Ok(0);
        }
        let started = Instant::now();
        let mut verdicts = Vec::new();
        let mut stopped = None;
        {
            let after = After::of(plan);
            let mut steps = Vec::new();
            for (index, (mutation, _)) in plan.items.iter().enumerate() {
                let Some((template, tenant)) = template_of(mutation) else {
                    continue;
                };
                if started.elapsed() > limits.time {
                    stopped = Some(index);
                    break;
                }
                steps.push((index, self.prepare(template, tenant, &after)));
            }
            let planned_samples: BTreeSet<Mac> = (steps.iter())
                .filter_map(|(_, step)| match step {
                    Step::Check(Pending {
                        sample: Sample::Planned(mac),
                        ..
                    }) => Some(*mac),
                    _ => None,
                })
                .collect();
            let scratch = match stopped {
                Some(_) => None,
                None => Scratch::of(&planned_samples, &after, &self.state, limits.render.clone())
                    .map_err(|_| ProvisionError::Internal("the import's sample phones"))?,
            };
            let mut counts = self.stored_counts(&after);
            let mut spellings = Spellings::of(&self.state);
            for (index, step) in steps {
                if stopped.is_some() {
                    break;
                }
                if started.elapsed() > limits.time {
                    stopped = Some(index);
                    break;
                }
                let verdict = match step {
                    Step::Refused(refusal) => Err(refusal),
                    Step::Unchanged => Ok(None),
                    Step::Check(pending) => {
                        self.try_one(pending, &mut counts, &mut spellings, scratch.as_ref())
                            .await?
                    }
                };
                verdicts.push((index, verdict));
            }
        }
        if let Some(index) = stopped {
            let checked = verdicts.len();
            let location = plan.items[index].1.clone();
            plan.errors.push(ImportError {
                location,
                message: format!(
                    "checking the templates took longer than {} s ({checked} checked); \
                     nothing was written: import them in smaller files",
                    limits.time.as_secs()
                ),
            });
            plan.whole_file_errors += 1;
            return Ok(plan.errors.len());
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

    /// Each tenant's tenant- and phone-scope templates that the import
    /// leaves stored, by slug: a phone the import moves to another tenant
    /// loses its templates (the store deletes them), so they count for
    /// neither.
    fn stored_counts(&self, after: &After<'_>) -> HashMap<String, u64> {
        let state = &self.state;
        let mut counts = HashMap::new();
        for t in state.templates() {
            let slug = match t.scope {
                TemplateScope::Tenant => (t.scope_key.parse().ok())
                    .and_then(|id| state.tenant(id))
                    .map(|t| &*t.slug),
                TemplateScope::Phone => (t.scope_key.parse::<Mac>().ok())
                    .filter(|mac| !after.moves(state, mac))
                    .and_then(|mac| state.phone_by_mac(&mac))
                    .and_then(|p| state.tenant(p.tenant_id))
                    .map(|t| &*t.slug),
                TemplateScope::Family | TemplateScope::Model => None,
            };
            if let Some(slug) = slug {
                *counts.entry(slug.to_string()).or_default() += 1;
            }
        }
        counts
    }

    /// What needs no other template: the file pattern, the body's size,
    /// the phone and tenant it belongs to, whether it is unchanged, and
    /// the phone to try it on.
    fn prepare<'p>(
        &self,
        t: &'p TemplateInput,
        tenant: Option<&str>,
        after: &After<'_>,
    ) -> Step<'p> {
        let state = &self.state;
        let known = template_names(t.family);
        if !known.contains(&t.file_pattern.as_str()) {
            return Step::Refused((
                "file_pattern",
                format!(
                    "{} phones fetch no file by that pattern; known: {}",
                    t.family,
                    known.join(", ")
                ),
            ));
        }
        if t.body.len() > MAX_BODY {
            return Step::Refused((
                "body",
                format!(
                    "{} bytes; a template body is at most {MAX_BODY} bytes (2 MiB), as the \
                     admin API takes one",
                    t.body.len()
                ),
            ));
        }
        let mut moved = false;
        let owner_slug = match t.scope {
            TemplateScope::Phone => {
                let Ok(mac) = t.scope_key.parse::<Mac>() else {
                    let reason = format!("not a MAC address: {:?}", t.scope_key);
                    return Step::Refused(("mac", reason));
                };
                let Some(slug) = after.tenant_of(state, &mac) else {
                    return Step::Refused((
                        "mac",
                        format!(
                            "phone {mac} does not exist; a phone-scope template needs its phone"
                        ),
                    ));
                };
                moved = after.moves(state, &mac);
                Some(slug.to_string())
            }
            _ => tenant.map(str::to_string),
        };
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
        let keyed_here = t.scope != TemplateScope::Tenant || stored_tenant.is_some();
        // A moved phone's stored template is deleted before this one is
        // written: this one is new.
        let stored = (keyed_here && !moved)
            .then(|| state.template_by_key(&key))
            .flatten();
        if stored.is_some_and(|s| *s.body == *t.body) {
            return Step::Unchanged;
        }
        let sample = keyed_here
            .then(|| sample_phone(state, t.scope, t.family, &scope_key).cloned())
            .flatten();
        let sample = match sample {
            Some(phone) => Sample::Stored(phone),
            None => match after.sample(t.scope, t.family, &t.scope_key, tenant) {
                Some(mac) => Sample::Planned(mac),
                None => Sample::None,
            },
        };
        Step::Check(Pending {
            template: t,
            owner: owner_slug.and_then(|slug| after.tenant(state, &slug)),
            new: stored.is_none(),
            sample,
        })
    }

    /// The checks that depend on the templates before it (model
    /// spellings, the count quota), and the trial render. A template
    /// counts towards its tenant's quota only once it passed them all.
    async fn try_one(
        &self,
        pending: Pending<'_>,
        counts: &mut HashMap<String, u64>,
        spellings: &mut Spellings,
        scratch: Option<&Scratch>,
    ) -> Result<Result<Option<u64>, Refusal>, ProvisionError> {
        let Pending {
            template: t,
            owner,
            new,
            sample,
        } = pending;
        let is_model = t.scope == TemplateScope::Model;
        if is_model && new {
            if let Some(reason) = mixed_case(&t.scope_key) {
                return Ok(Err(("model", reason)));
            }
            if let Some(refusal) = second_spelling(spellings, t) {
                return Ok(Err(refusal));
            }
        }
        let mut keep_versions = None;
        if let Some(owner) = &owner {
            let quota = |quota, wanted| self.quotas.check(owner, quota, wanted);
            if let Err(e) = quota(Quota::TemplateBytes, t.body.len() as u64) {
                return Ok(Err(("body", e.message)));
            }
            let count = counts.get(&*owner.slug).copied().unwrap_or(0);
            if new {
                if let Err(e) = quota(Quota::Templates, count + 1) {
                    return Ok(Err((Quota::Templates.key(), e.message)));
                }
            }
            keep_versions = Some(self.quotas.limit(owner, Quota::TemplateVersions));
        }
        let (provisioner, sample) = match sample {
            Sample::Stored(phone) => (self.provisioner.clone(), Some(phone)),
            Sample::Planned(mac) => match scratch {
                Some(scratch) => (scratch.provisioner.clone(), scratch.phone(&mac)),
                None => (self.provisioner.clone(), None),
            },
            Sample::None => (self.provisioner.clone(), None),
        };
        // A tenant the import creates has no share of the pool yet.
        let pool_owner = owner.as_ref().map(|o| o.id).filter(|&id| id != 0);
        let (family, file_pattern, body) = (t.family, t.file_pattern.clone(), t.body.clone());
        let tried = self
            .provisioner
            .on_pool(pool_owner, move || {
                provisioner.check_template(family, &file_pattern, &body, sample.as_deref())
            })
            .await;
        match tried {
            Ok(_) => {}
            Err(e @ (ProvisionError::Render { .. } | ProvisionError::Data(_))) => {
                return Ok(Err(("body", e.to_string())))
            }
            Err(e) => return Err(e),
        }
        if let (Some(owner), true) = (&owner, new) {
            *counts.entry(owner.slug.to_string()).or_default() += 1;
        }
        if is_model && new {
            spellings.add(t.family, &t.file_pattern, &t.scope_key);
        }
        Ok(Ok(keep_versions))
    }
}

/// A new model template whose model is already another's, spelled
/// otherwise (stored, or earlier in the import): models compare
/// case-blind, so only one of them could apply.
fn second_spelling(spellings: &Spellings, t: &TemplateInput) -> Option<Refusal> {
    let other = spellings.find(t.family, &t.file_pattern, &t.scope_key)?;
    let message = match other.id {
        Some(id) => format!(
            "template #{id} ({:?}) is already this model's template for this file; \
             give its model as it is stored",
            other.model
        ),
        None => format!(
            "model {:?} is another template's model of this file, spelled otherwise; \
             only one of them could apply",
            other.model
        ),
    };
    Some(("model", message))
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
    let provisioner = Arc::new(crate::render_cmd::offline_provisioner(
        config,
        mirror.clone(),
        key,
    )?);
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
