//! Numbers the files list under several entries that share neither a name
//! nor a company: a lookup shows no name from the directory for them
//! (`dialtone_directory::shared_number`), which an operator importing a
//! household's landline or a desk two people share should hear now rather
//! than from a customer. Only a warning: the entries are right, and a
//! later source may name the caller.
//!
//! Numbers are grouped by their digits as written (`+1 212 555 0100` and
//! `+1-212-555-0100` together, `(212) 555-0100` apart): reading each as a
//! lookup does costs tens of microseconds a number, seconds for a large
//! directory, and a file usually spells its numbers one way. The stored
//! directory is not read: an entry already stored on the number is not
//! counted.

use std::collections::HashMap;

use dialtone_sync::import::{ImportPlan, Location};
use dialtone_sync::Mutation;

/// Numbers named one by one; the rest are counted.
const NAMED: usize = 10;
/// Entries named for each.
const NAMES: usize = 3;

/// The entries (their places in the files' order) listing one number,
/// each with its row.
type Listing<'p> = Vec<(usize, &'p Location)>;

/// A warning for each such number (ten named, the rest counted).
pub(super) fn unshown_numbers(plan: &ImportPlan) -> Vec<String> {
    let mut warnings = Vec::new();
    let mut listed: HashMap<(&str, String), Listing> = HashMap::new();
    let mut entries = Vec::new();
    for (mutation, location) in &plan.items {
        let Mutation::UpsertDirectoryEntry(entry) = mutation else {
            continue;
        };
        let at = entries.len();
        entries.push(entry);
        for number in &entry.numbers {
            let digits = digits_of(&number.number);
            if digits.is_empty() {
                continue;
            }
            let under = listed.entry((entry.tenant.as_str(), digits)).or_default();
            // One entry listing the number twice (work and mobile) is one.
            if under.last().is_none_or(|(last, _)| *last != at) {
                under.push((at, location));
            }
        }
    }
    let mut unshown: Vec<(&Location, &str, &str, &Listing)> = listed
        .iter()
        .filter(|(_, under)| under.len() > 1)
        .filter(|(_, under)| {
            // In name order, as a lookup reads them.
            let mut named: Vec<(&str, Option<&str>)> = under
                .iter()
                .map(|(i, _)| (entries[*i].name.as_str(), entries[*i].company.as_deref()))
                .collect();
            named.sort_unstable();
            dialtone_directory::shared_number::shown(named).is_none()
        })
        .map(|((tenant, digits), under)| (under[0].1, *tenant, digits.as_str(), under))
        .collect();
    unshown.sort_by(|a, b| (&a.0.file, a.0.line, a.2).cmp(&(&b.0.file, b.0.line, b.2)));
    for (first, tenant, digits, under) in unshown.iter().take(NAMED) {
        let number = &entries[under[0].0]
            .numbers
            .iter()
            .find(|n| digits_of(&n.number) == *digits)
            .map_or("", |n| &*n.number);
        let mut names: Vec<String> = under
            .iter()
            .take(NAMES)
            .map(|(i, _)| format!("{:?}", entries[*i].name))
            .collect();
        if under.len() > NAMES {
            names.push(format!("{} more", under.len() - NAMES));
        }
        warnings.push(format!(
            "{}:{}: {number:?} is listed by {} entries of tenant {tenant} that share \
             neither a name nor a company ({}): callers from it show no name from the directory",
            first.file.display(),
            first.line,
            under.len(),
            names.join(", ")
        ));
    }
    if unshown.len() > NAMED {
        warnings.push(format!(
            "... and {} more numbers whose entries share neither a name nor a company",
            unshown.len() - NAMED
        ));
    }
    warnings
}

/// The number's digits as written, without its extension (a lookup
/// matches the number, not the extension), with a leading `+` kept
/// (`+1 212` and `1 212` are not one number in every region).
fn digits_of(number: &str) -> String {
    let number = dialtone_directory::normalize::main_part(number);
    let plus = number.trim_start().starts_with('+');
    let digits = number.chars().filter(char::is_ascii_digit);
    plus.then_some('+').into_iter().chain(digits).collect()
}

#[cfg(test)]
mod tests {
    use dialtone_sync::import::plan_bytes;

    use super::*;

    fn found(csv: &str) -> usize {
        let plan = plan_bytes("dir.csv", false, csv.as_bytes());
        assert!(plan.errors.is_empty(), "{:?}", plan.errors);
        unshown_numbers(&plan).len()
    }

    #[test]
    fn numbers_whose_entries_disagree_are_found() {
        let header = "tenant,external_id,name,company,work,mobile\n";
        // A household, and a desk two colleagues of two companies share.
        let disagree = format!(
            "{header}acme,1,John Smith,,+1 212 555 0100,\nacme,2,Jane Smith,,+1-212-555-0100,\n\
             acme,3,Ann,Acme,+1 212 555 0200,\nacme,4,Bo,Globex,+1 (212) 555-0200,\n"
        );
        assert_eq!(found(&disagree), 2);
        // A switchboard, one person twice, one entry's two columns, one
        // number in two tenants, and two spellings of other digits.
        let agree = format!(
            "{header}acme,1,Ann,Acme,+1 212 555 0300,\nacme,2,Bo,ACME,+1 212 555 0300,\n\
             acme,3,Cy Cole,,+1 212 555 0400,\nacme,4,cy cole,Acme,+1 212 555 0400,\n\
             acme,5,Di,,+1 212 555 0500,+1 212 555 0500\n\
             acme,6,Ed,,+1 212 555 0600,\nglobex,6,Flo,,+1 212 555 0600,\n\
             acme,7,Gus,,+1 212 555 0700,\nacme,8,Hal,,(212) 555-0700,\n"
        );
        assert_eq!(found(&agree), 0);
    }

    #[test]
    fn extensions_are_one_number_and_each_shared_number_is_named() {
        let csv = "tenant,external_id,name,company,work,mobile\n\
                   acme,1,Ann,,+1 212 555 0800 x1,+1 212 555 0900\n\
                   acme,2,Bo,,+1 212 555 0800 ext 2,+1 212 555 0900\n";
        let plan = plan_bytes("dir.csv", false, csv.as_bytes());
        assert!(plan.errors.is_empty(), "{:?}", plan.errors);
        let warnings = unshown_numbers(&plan);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(
            warnings[0].contains("\"+1 212 555 0800 x1\""),
            "{warnings:?}"
        );
        assert!(warnings[1].contains("\"+1 212 555 0900\""), "{warnings:?}");
    }

    #[test]
    fn digits_keep_a_leading_plus() {
        assert_eq!(digits_of(" +1 (212) 555-0100"), "+12125550100");
        assert_eq!(digits_of("1 212 555 0100"), "12125550100");
        assert_eq!(digits_of("ext."), "");
        assert_eq!(digits_of("+1 212 555 0100 x101"), "+12125550100");
        assert_eq!(digits_of("+1 212 555 0100;ext=7"), "+12125550100");
    }
}
