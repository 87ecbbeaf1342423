//! An import that replaces directories: for each tenant whose entries the
//! files hold, its stored entries they do not hold are deleted by the
//! run's last statement for that tenant, in the run's own transaction
//! ([`Mutation::ReplaceDirectory`]), whoever wrote them and however many.
//! An address book exported again is the whole directory, and without
//! this the entries of people who left went on naming callers from
//! numbers since given to others. A tenant the files hold no entry for
//! keeps its directory: leaving a tenant out never empties it.

use std::collections::{BTreeMap, BTreeSet};

use super::{ImportPlan, Location};
use crate::store::Mutation;

impl ImportPlan {
    /// Appends, after everything else, one replacement per tenant the
    /// files hold entries of, keeping those entries' keys. Placed at the
    /// tenant's first entry in the files, where a refusal names it. Each
    /// may delete at most `most_deleted_percent` of its tenant's entries.
    /// Returns the tenants.
    pub fn replace_directories(&mut self, most_deleted_percent: u8) -> Vec<String> {
        let mut held: BTreeMap<&str, (BTreeSet<&str>, &Location)> = BTreeMap::new();
        for (mutation, location) in &self.items {
            if let Mutation::UpsertDirectoryEntry(d) = mutation {
                held.entry(d.tenant.as_str())
                    .or_insert_with(|| (BTreeSet::new(), location))
                    .0
                    .insert(d.external_id.as_str());
            }
        }
        let replacements: Vec<(Mutation, Location)> = held
            .into_iter()
            .map(|(tenant, (keep, location))| {
                let keep = keep.into_iter().map(str::to_string).collect();
                let tenant = tenant.to_string();
                (
                    Mutation::ReplaceDirectory {
                        tenant,
                        keep,
                        most_deleted_percent,
                    },
                    location.clone(),
                )
            })
            .collect();
        let tenants = replacements
            .iter()
            .filter_map(|(m, _)| match m {
                Mutation::ReplaceDirectory { tenant, .. } => Some(tenant.clone()),
                _ => None,
            })
            .collect();
        self.items.extend(replacements);
        tenants
    }
}

#[cfg(test)]
mod tests {
    use crate::import::plan_bytes;
    use crate::store::Mutation;

    #[test]
    fn each_tenant_in_the_files_keeps_the_keys_they_hold() {
        let mut plan = plan_bytes(
            "dir.csv",
            false,
            b"tenant,external_id,name,work\nacme,1,Alice,+1 555 0100\nacme,,Bob,+1 555 0101\n\
              globex,9,Gina,+1 555 0109\n",
        );
        assert!(plan.errors.is_empty(), "{:?}", plan.errors);
        let before = plan.changes();
        assert_eq!(plan.replace_directories(40), ["acme", "globex"]);
        assert_eq!(plan.changes(), before + 2);
        let mutations = plan.take_mutations();
        let replaced: Vec<(String, Vec<String>)> = mutations
            .iter()
            .filter_map(|m| match m {
                Mutation::ReplaceDirectory {
                    tenant,
                    keep,
                    most_deleted_percent: 40,
                } => Some((tenant.clone(), keep.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(
            replaced,
            [
                (
                    "acme".to_string(),
                    vec!["1".to_string(), "name:bob".to_string()]
                ),
                ("globex".to_string(), vec!["9".to_string()]),
            ]
        );
        // After every upsert of the run.
        assert!(matches!(
            mutations.last(),
            Some(Mutation::ReplaceDirectory { .. })
        ));
        assert!(matches!(
            mutations[mutations.len() - 3],
            Mutation::UpsertDirectoryEntry(_)
        ));
    }
}
