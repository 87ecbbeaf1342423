//! An import that replaces directories: for each tenant whose entries the
//! files hold, its stored entries they do not hold are deleted in the same
//! transaction. An address book exported again is the whole directory, and
//! without this the entries of people who left went on naming callers
//! from numbers since given to others. A tenant the files hold no entry
//! for keeps its directory: leaving a tenant out never empties it.

use std::collections::{BTreeMap, HashSet};

use super::{ImportPlan, Location};
use crate::store::Mutation;

impl ImportPlan {
    /// The tenants whose directories the files hold entries of.
    pub fn directory_tenants(&self) -> Vec<String> {
        let tenants: std::collections::BTreeSet<&str> = self
            .items
            .iter()
            .filter_map(|(m, _)| match m {
                Mutation::UpsertDirectoryEntry(d) => Some(d.tenant.as_str()),
                _ => None,
            })
            .collect();
        tenants.into_iter().map(str::to_string).collect()
    }

    /// Deletes, after everything else, each stored entry (`stored`: a
    /// tenant's keys, as [`crate::store::Store::directory_keys`] reads
    /// them) of a tenant the files hold entries of, unless they hold it
    /// too. Returns how many deletions were added. A deletion is placed at
    /// its tenant's first entry in the files, where a refusal names it.
    pub fn replace_directories(&mut self, stored: &BTreeMap<String, Vec<String>>) -> usize {
        let mut held: BTreeMap<&str, (HashSet<&str>, &Location)> = BTreeMap::new();
        for (mutation, location) in &self.items {
            if let Mutation::UpsertDirectoryEntry(d) = mutation {
                held.entry(d.tenant.as_str())
                    .or_insert_with(|| (HashSet::new(), location))
                    .0
                    .insert(d.external_id.as_str());
            }
        }
        let mut deletions = Vec::new();
        for (tenant, (keys, location)) in &held {
            let Some(stored) = stored.get(*tenant) else {
                continue;
            };
            for key in stored.iter().filter(|key| !keys.contains(key.as_str())) {
                deletions.push((
                    Mutation::DeleteDirectoryEntry {
                        tenant: tenant.to_string(),
                        external_id: key.clone(),
                    },
                    (*location).clone(),
                ));
            }
        }
        let added = deletions.len();
        self.items.extend(deletions);
        added
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use crate::import::plan_bytes;

    #[test]
    fn only_the_tenants_in_the_files_lose_what_the_files_do_not_hold() {
        let mut plan = plan_bytes(
            "dir.csv",
            false,
            b"tenant,external_id,name,work\nacme,1,Alice,+1 555 0100\nacme,,Bob,+1 555 0101\n",
        );
        assert!(plan.errors.is_empty(), "{:?}", plan.errors);
        assert_eq!(plan.directory_tenants(), ["acme"]);
        let stored = BTreeMap::from([
            (
                "acme".to_string(),
                vec!["1".into(), "2".into(), "name:bob".into()],
            ),
            ("globex".to_string(), vec!["9".into()]),
        ]);
        let before = plan.changes();
        assert_eq!(plan.replace_directories(&stored), 1);
        assert_eq!(plan.changes(), before + 1);
        let deleted: Vec<String> = plan
            .take_mutations()
            .into_iter()
            .filter_map(|m| match m {
                crate::store::Mutation::DeleteDirectoryEntry {
                    tenant,
                    external_id,
                } => Some(format!("{tenant}/{external_id}")),
                _ => None,
            })
            .collect();
        assert_eq!(deleted, ["acme/2"]);
    }
}
