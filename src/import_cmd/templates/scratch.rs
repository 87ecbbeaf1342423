//! The plan's own phones to try templates on, where the database has no
//! phone of a template's scope (a fresh database, a new tenant): a
//! renderer of its own over a mirror holding only those phones, their
//! lines and tenants, so that a template renders for them exactly as the
//! admin API's create would if they were stored.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use dialtone_sync::model::{Cursor, Meta};
use dialtone_sync::{
    Dataset, Line, LoadedFrom, Mac, Mirror, MirrorState, Phone, Purpose, SecretKey, Tenant,
};
use dialtone_tftp::{ProvisionOptions, Provisioner, Shipped};

use super::after::After;

pub(super) struct Scratch {
    pub provisioner: Arc<Provisioner>,
    state: Arc<MirrorState>,
}

impl Scratch {
    /// A renderer for the plan's phones `macs`; None when there are none.
    pub fn of(
        macs: &BTreeSet<Mac>,
        after: &After<'_>,
        state: &MirrorState,
        options: ProvisionOptions,
    ) -> anyhow::Result<Option<Scratch>> {
        if macs.is_empty() {
            return Ok(None);
        }
        // Trial renders mask every line password and open no secret; the
        // key only seals the plan's passwords so that they read as set.
        let key = SecretKey::parse(&SecretKey::generate_hex())?;
        let mut data = Dataset::default();
        let mut tenant_ids: HashMap<&str, i64> = HashMap::new();
        for (phone_id, mac) in (1..).zip(macs) {
            let Some(planned) = after.phones.get(mac) else {
                continue;
            };
            let slug = planned.tenant();
            let next_id = tenant_ids.len() as i64 + 1;
            let tenant_id = *tenant_ids.entry(slug).or_insert_with(|| {
                let tenant = after.tenant(state, slug).unwrap_or_else(|| Tenant {
                    id: 0,
                    slug: slug.into(),
                    name: slug.into(),
                    default_region: "".into(),
                    settings: "{}".into(),
                    updated_at: 0,
                });
                data.tenants.push(Tenant {
                    id: next_id,
                    ..tenant
                });
                next_id
            });
            let phone = planned.batch.get(planned.index);
            data.phones.push(Phone {
                id: phone_id,
                tenant_id,
                mac: *mac,
                family: phone.family,
                model: phone.model.map(Arc::from),
                label: phone.label.map(Box::from),
                variables: phone.variables.into(),
                http_user: None,
                http_password: None,
                updated_at: 0,
            });
            for (position, flat) in (1..).zip(planned.batch.line_range(planned.index)) {
                let line = planned.batch.line(flat);
                data.lines.push(Line {
                    id: data.lines.len() as i64 + 1,
                    phone_id,
                    position,
                    extension: line.extension.into(),
                    display_name: line.display_name.into(),
                    auth_user: line.auth_user.into(),
                    password: (line.password).map(|p| key.seal(Purpose::LinePassword, p)),
                    registrar: line.registrar.into(),
                    proxy: line.proxy.map(Arc::from),
                    settings: line.settings.into(),
                    updated_at: 0,
                });
            }
        }
        let mirror = Arc::new(Mirror::new());
        mirror.reset(
            data,
            Cursor::default(),
            Meta::default(),
            LoadedFrom::Database,
        );
        let provisioner = Provisioner::new(mirror.clone(), key, Shipped::built_in(0), options);
        Ok(Some(Scratch {
            provisioner: Arc::new(provisioner),
            state: mirror.load(),
        }))
    }

    pub fn phone(&self, mac: &Mac) -> Option<Arc<Phone>> {
        self.state.phone_by_mac(mac).cloned()
    }
}
