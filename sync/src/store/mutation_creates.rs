//! What a create-only mutation (`CreateTenant`, `CreatePhone`, …) reports
//! when its key is taken. The store refuses it in two places: its own
//! check finds the row, or, when two creates race on PostgreSQL, the
//! unique index refuses the later INSERT. Both answers name the key the
//! caller sent.

use crate::error::SyncError;
use crate::store::{Mutation, Target};

impl Mutation {
    /// The row a create-only mutation makes, as its refusal names it;
    /// `None` for a mutation that may write over a stored row.
    pub(crate) fn created_row(&self) -> Option<String> {
        let target = match self {
            Mutation::CreateTenant(t) => Target::Tenant {
                slug: t.slug.clone(),
            },
            Mutation::CreatePhone(p) => Target::Phone { mac: p.mac },
            // Not a create, but it takes a MAC as a create does.
            Mutation::ReplacePhoneMac { to, .. } => Target::Phone { mac: *to },
            Mutation::CreateDirectoryEntry(d) => Target::DirectoryEntry {
                tenant: d.tenant.clone(),
                external_id: d.external_id.clone(),
            },
            Mutation::CreateDirectorySource(s) => Target::DirectorySource {
                tenant: s.tenant.clone(),
                name: s.name.clone(),
            },
            // As the audit log keys a template's create; the store has no
            // id to name before the row exists.
            Mutation::CreateTemplate(t) => {
                return Some(format!(
                    "template {}/{}/{}/{}",
                    t.scope, t.family, t.scope_key, t.file_pattern
                ))
            }
            _ => return None,
        };
        Some(target.to_string())
    }

    /// The refusal of this create when `existed`: the row is there.
    pub(crate) fn refused_if(&self, existed: bool) -> Result<(), SyncError> {
        match self.created_row().filter(|_| existed) {
            Some(row) => Err(SyncError::Taken(row)),
            None => Ok(()),
        }
    }
}

/// `e` with a unique index's refusal of a create named as the create's
/// row: the index's own words say only "a row with the same key".
pub(crate) fn name_taken(e: SyncError, mutation: &Mutation) -> SyncError {
    match (e, mutation.created_row()) {
        (SyncError::Taken(_), Some(row)) => SyncError::Taken(row),
        (e, _) => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Family, TemplateScope};
    use crate::store::TemplateInput;
    use crate::testing::build;

    #[test]
    fn a_create_names_its_row_and_an_upsert_names_none() {
        let Mutation::UpsertTenant(tenant) = build::tenant("acme", "US") else {
            unreachable!("the builder makes an upsert")
        };
        assert_eq!(
            Mutation::CreateTenant(tenant.clone()).created_row(),
            Some("tenant acme".into())
        );
        assert_eq!(Mutation::UpsertTenant(tenant).created_row(), None);
        let template = Mutation::CreateTemplate(TemplateInput {
            scope: TemplateScope::Tenant,
            family: Family::Yealink,
            scope_key: "7".into(),
            file_pattern: "{mac}.cfg".into(),
            body: String::new(),
            updated_by: "ops".into(),
            keep_versions: None,
        });
        let raced = name_taken(
            SyncError::Taken("a row with the same key".into()),
            &template,
        );
        assert_eq!(
            raced.to_string(),
            "template tenant/yealink/7/{mac}.cfg already exists"
        );
        assert!(template.refused_if(false).is_ok());
        assert!(matches!(
            template.refused_if(true),
            Err(SyncError::Taken(_))
        ));
    }
}
