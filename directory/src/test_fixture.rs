//! What the crate's unit tests over a whole service start from: a mirror
//! of plain tenants, changed one row at a time as the store's follower
//! would change it.

use dialtone_sync::testing::build::mirror_of;
use dialtone_sync::{Dataset, Entity, Id, Mirror, Row, Tenant};

use crate::{LookupOptions, LookupService};

/// A tenant known only by its id: slug `t<id>`, region US, no settings.
pub(crate) fn tenant(id: Id) -> Tenant {
    Tenant {
        id,
        slug: format!("t{id}").into(),
        name: format!("T{id}").into(),
        default_region: "US".into(),
        settings: "{}".into(),
        updated_at: 0,
    }
}

/// A service with the default options over a mirror of tenants 1 and 2.
pub(crate) fn service_of_two_tenants() -> LookupService {
    let mirror = mirror_of(Dataset {
        tenants: vec![tenant(1), tenant(2)],
        ..Dataset::default()
    });
    LookupService::new(mirror, None, LookupOptions::default())
}

/// Applies one row's change (`None`: deleted) to the mirror as it stands.
pub(crate) fn apply(mirror: &Mirror, change: (Entity, Id, Option<Row>)) {
    let state = mirror.load();
    mirror.apply(vec![change], state.cursor(), state.meta().clone());
}
