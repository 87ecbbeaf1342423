//! Phones whose MAC's vendor prefix belongs to another family than their
//! row names: a CSV's family column filled down a sheet of mixed phones.
//! Such a phone's own files are refused to its User-Agent (a family
//! mismatch), so the import says so before it writes. Only a warning: a
//! vendor's prefix on another's phone (relabelled hardware) is rare but
//! real, and the operator knows the hardware.

use dialtone_sync::import::ImportPlan;
use dialtone_sync::{Family, Mutation};

/// Rows named one by one; the rest are counted.
const NAMED: usize = 10;

/// A warning for each such phone (ten named, the rest counted).
pub(super) fn other_vendors(plan: &ImportPlan) -> Vec<String> {
    let mut warnings = Vec::new();
    let mut found = 0;
    for (mutation, _) in &plan.items {
        let Mutation::UpsertPhones(batch) = mutation else {
            continue;
        };
        for i in 0..batch.len() {
            let (mac, family) = (batch.mac(i), batch.family(i));
            let Some(vendor) = other_vendor(&mac, family) else {
                continue;
            };
            if found < NAMED {
                warnings.push(format!(
                    "{}: MAC {mac} has a {vendor} vendor prefix but the family is {family}; \
                     its own files are refused to a {vendor} phone's User-Agent",
                    plan.phones.location(i)
                ));
            }
            found += 1;
        }
    }
    if found > NAMED {
        warnings.push(format!(
            "... and {} more phones whose MAC has another family's vendor prefix",
            found - NAMED
        ));
    }
    warnings
}

/// The family `mac`'s vendor prefix belongs to, when not `family`.
fn other_vendor(mac: &dialtone_sync::Mac, family: Family) -> Option<Family> {
    dialtone_tftp::family_by_oui(mac, Family::ALL).filter(|vendor| *vendor != family)
}
