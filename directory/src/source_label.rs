//! Which remote source a log line is about. A source's name is its
//! tenant's to choose, and two tenants may both have a `crm`: every line
//! about a source carries its tenant's id and its own, and the name only
//! Debug-quoted (`source = ?label.name`), so that a name such as
//! `crm tenant=1` reads as one quoted value, not as a second field.

use std::sync::Arc;

use dialtone_sync::Id;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceLabel {
    pub tenant: Id,
    pub id: Id,
    pub name: Arc<str>,
}

impl SourceLabel {
    pub fn new(tenant: Id, id: Id, name: &str) -> SourceLabel {
        SourceLabel {
            tenant,
            id,
            name: name.into(),
        }
    }
}
