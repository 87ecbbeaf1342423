//! Templates by owner. A tenant's template list and its quota count visit
//! its own templates: walking every template on the platform made each
//! such request of any tenant cost about a second of a core at the quota
//! ceiling (2,000 tenants of 500 templates).
//!
//! A phone-scope template belongs to whichever tenant its phone is in now,
//! so a phone's move, swap or delete regroups the templates of its MACs.
//! The store deletes or rekeys them in the same transaction, but the
//! mirror may apply the phone's row before theirs.

use std::sync::Arc;

use super::{group_build, group_insert, group_remove, Group, MirrorState};
use crate::model::*;
use crate::shard::ShardedMap;

/// Whose templates a group holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum TemplateGroup {
    /// Family and model templates: a global admin's, for every tenant.
    Platform,
    /// A tenant's tenant-scope templates and those of its phones.
    Tenant(Id),
}

/// A phone-scope template's MAC.
fn phone_mac(template: &Template) -> Option<Mac> {
    match template.scope {
        TemplateScope::Phone => template.scope_key.parse().ok(),
        _ => None,
    }
}

impl MirrorState {
    /// The tenant a template belongs to: a tenant-scope one's, or a
    /// phone-scope one's phone's now. Family and model templates belong to
    /// none, nor does a phone's whose phone this state does not hold.
    pub fn template_tenant(&self, template: &Template) -> Option<Id> {
        match template.scope {
            TemplateScope::Tenant => template.scope_key.parse().ok(),
            TemplateScope::Phone => phone_mac(template)
                .and_then(|mac| self.phone_by_mac(&mac))
                .map(|p| p.tenant_id),
            TemplateScope::Family | TemplateScope::Model => None,
        }
    }

    fn template_group(&self, template: &Template) -> Option<TemplateGroup> {
        match template.scope {
            TemplateScope::Family | TemplateScope::Model => Some(TemplateGroup::Platform),
            _ => self.template_tenant(template).map(TemplateGroup::Tenant),
        }
    }

    fn grouped_templates(&self, group: TemplateGroup) -> impl Iterator<Item = &Arc<Template>> {
        self.templates_by_group
            .get(&group)
            .into_iter()
            .flat_map(|ids| ids.iter())
            .filter_map(|id| self.templates.get(&id))
    }

    /// The templates [`MirrorState::template_tenant`] gives to `tenant_id`,
    /// in id order, without visiting anyone else's.
    pub fn templates_of(&self, tenant_id: Id) -> impl Iterator<Item = &Arc<Template>> {
        self.grouped_templates(TemplateGroup::Tenant(tenant_id))
    }

    /// A tenant's templates, or every template on the platform when
    /// `tenant` is `None` (a global admin's unfiltered list).
    pub fn templates_within(
        &self,
        tenant: Option<Id>,
    ) -> Box<dyn Iterator<Item = &Arc<Template>> + '_> {
        match tenant {
            Some(id) => Box::new(self.templates_of(id)),
            None => Box::new(self.templates()),
        }
    }

    /// How many templates the tenant has, without visiting them.
    pub fn template_count(&self, tenant_id: Id) -> usize {
        self.templates_by_group
            .get(&TemplateGroup::Tenant(tenant_id))
            .map_or(0, |ids| ids.len())
    }

    /// The family and model templates, in id order.
    pub fn platform_templates(&self) -> impl Iterator<Item = &Arc<Template>> {
        self.grouped_templates(TemplateGroup::Platform)
    }

    /// Files `template` under its owner and its MAC (`join`), or takes it
    /// out, as this state places it.
    pub(super) fn group_template(&mut self, template: &Template, join: bool) {
        let id = template.id;
        if let Some(group) = self.template_group(template) {
            if join {
                group_insert(&mut self.templates_by_group, group, id);
            } else {
                group_remove(&mut self.templates_by_group, group, id);
            }
        }
        if let Some(mac) = phone_mac(template) {
            if join {
                group_insert(&mut self.templates_by_mac, mac, id);
            } else {
                group_remove(&mut self.templates_by_mac, mac, id);
            }
        }
    }

    /// The MACs whose templates may change owner when phone `id`'s row
    /// changes to `new`: its MAC before and after, those that have
    /// templates. Not only on a move or swap: while two phones hold one
    /// MAC (a swap half applied), any write of either decides which one
    /// the MAC finds.
    pub(super) fn template_macs(&self, id: Id, new: Option<&Phone>) -> Vec<Mac> {
        let before = self.phones.get(&id).map(|p| p.mac);
        let mut macs: Vec<Mac> = before.into_iter().chain(new.map(|p| p.mac)).collect();
        macs.dedup();
        macs.retain(|mac| self.templates_by_mac.get(mac).is_some());
        macs
    }

    /// Files the phone-scope templates of `macs` under their phone's tenant
    /// as this state has it (`join`), or takes them out of it.
    pub(super) fn group_phone_templates(&mut self, macs: &[Mac], join: bool) {
        for mac in macs {
            let Some(ids) = self.templates_by_mac.get(mac).cloned() else {
                continue;
            };
            let Some(tenant) = self.phone_by_mac(mac).map(|p| p.tenant_id) else {
                continue;
            };
            let group = TemplateGroup::Tenant(tenant);
            for id in ids.iter() {
                if join {
                    group_insert(&mut self.templates_by_group, group, id);
                } else {
                    group_remove(&mut self.templates_by_group, group, id);
                }
            }
        }
    }

    /// Both template indexes, built from the tables (a load).
    pub(super) fn template_groups(
        &self,
    ) -> (ShardedMap<TemplateGroup, Group>, ShardedMap<Mac, Group>) {
        let by_group = group_build(
            self.templates
                .values()
                .filter_map(|t| Some((self.template_group(t)?, t.id))),
        );
        let by_mac = group_build(
            self.templates
                .values()
                .filter_map(|t| Some((phone_mac(t)?, t.id))),
        );
        (by_group, by_mac)
    }
}
