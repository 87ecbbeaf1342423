//! The tenants and phones as an import leaves them, read from the plan
//! once: what a template's checks need of the file besides the database.

use std::collections::HashMap;

use dialtone_sync::store::{PhoneBatch, TenantInput};
use dialtone_sync::{Family, Mac, MirrorState, Mutation, TemplateScope, Tenant};

use dialtone_sync::import::ImportPlan;

/// A phone of the plan: its batch and its place there.
#[derive(Clone, Copy)]
pub(super) struct Planned<'p> {
    pub batch: &'p PhoneBatch,
    pub index: usize,
}

impl<'p> Planned<'p> {
    pub fn tenant(&self) -> &'p str {
        &self.batch.tenants()[self.batch.tenant_index(self.index)]
    }
}

/// The plan's tenants and phones, and its first phone (by MAC, as
/// `sample_phone` picks a stored one) of each tenant, model and family.
pub(super) struct After<'p> {
    pub tenants: HashMap<&'p str, &'p TenantInput>,
    pub phones: HashMap<Mac, Planned<'p>>,
    first_of_tenant: HashMap<(&'p str, Family), Mac>,
    first_of_model: HashMap<(Family, &'p str), Mac>,
    first_of_family: HashMap<Family, Mac>,
}

fn keep_first<K: std::hash::Hash + Eq>(firsts: &mut HashMap<K, Mac>, key: K, mac: Mac) {
    let first = firsts.entry(key).or_insert(mac);
    *first = (*first).min(mac);
}

impl<'p> After<'p> {
    pub fn of(plan: &'p ImportPlan) -> Self {
        let mut tenants = HashMap::new();
        let mut phones = HashMap::new();
        for (mutation, _) in &plan.items {
            match mutation {
                Mutation::UpsertTenant(t) => {
                    tenants.insert(t.slug.as_str(), t);
                }
                Mutation::UpsertPhones(batch) => {
                    for index in 0..batch.len() {
                        phones.insert(batch.mac(index), Planned { batch, index });
                    }
                }
                _ => {}
            }
        }
        let mut after = After {
            tenants,
            phones,
            first_of_tenant: HashMap::new(),
            first_of_model: HashMap::new(),
            first_of_family: HashMap::new(),
        };
        // From the phones as the plan leaves them: a MAC given twice is
        // its last phone's.
        for (&mac, planned) in &after.phones {
            let phone = planned.batch.get(planned.index);
            keep_first(
                &mut after.first_of_tenant,
                (phone.tenant, phone.family),
                mac,
            );
            keep_first(&mut after.first_of_family, phone.family, mac);
            if let Some(model) = phone.model {
                keep_first(&mut after.first_of_model, (phone.family, model), mac);
            }
        }
        after
    }

    /// The slug of the tenant phone `mac` belongs to once the import is
    /// written: the plan's, else the stored one's.
    pub fn tenant_of<'s>(&self, state: &'s MirrorState, mac: &Mac) -> Option<&'s str>
    where
        'p: 's,
    {
        match self.phones.get(mac) {
            Some(planned) => Some(planned.tenant()),
            None => (state.phone_by_mac(mac))
                .and_then(|p| state.tenant(p.tenant_id))
                .map(|t| &*t.slug),
        }
    }

    /// Whether the plan moves stored phone `mac` to another tenant: the
    /// store then deletes its phone-scope templates before the plan's own
    /// are written.
    pub fn moves(&self, state: &MirrorState, mac: &Mac) -> bool {
        let Some(planned) = self.phones.get(mac) else {
            return false;
        };
        (state.phone_by_mac(mac))
            .and_then(|p| state.tenant(p.tenant_id))
            .is_some_and(|stored| *stored.slug != *planned.tenant())
    }

    /// The plan's phone a template would be tried on, picked as
    /// `sample_phone` picks a stored one: the phone itself, or the first
    /// by MAC of the tenant (by slug), model or family.
    pub fn sample(
        &self,
        scope: TemplateScope,
        family: Family,
        key: &str,
        tenant: Option<&str>,
    ) -> Option<Mac> {
        let mac = match scope {
            TemplateScope::Phone => key.parse().ok(),
            TemplateScope::Tenant => self.first_of_tenant.get(&(tenant?, family)).copied(),
            TemplateScope::Model => self.first_of_model.get(&(family, key)).copied(),
            TemplateScope::Family => self.first_of_family.get(&family).copied(),
        }?;
        let planned = self.phones.get(&mac)?;
        (planned.batch.get(planned.index).family == family).then_some(mac)
    }

    /// Tenant `slug` as the import leaves it (its settings, its quotas
    /// among them): the plan's, over the stored one, whose id it keeps. A
    /// tenant the import creates has id 0.
    pub fn tenant(&self, state: &MirrorState, slug: &str) -> Option<Tenant> {
        let stored = state.tenant_by_slug(slug);
        match self.tenants.get(slug) {
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
}
