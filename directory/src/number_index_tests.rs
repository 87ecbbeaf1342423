//! Who a caller finds, with numbers read as a tenant's directory and its
//! lookups read them: the cases a review reproduced against the binary.

use super::NumberIndex;
use crate::normalize::normalize;

const SUFFIX: usize = 7;

/// A tenant's directory in `region`: names by the numbers as written.
fn index(region: &str, entries: &[(&'static str, &str)]) -> NumberIndex<&'static str> {
    let mut index = NumberIndex::new(SUFFIX, region);
    for (name, number) in entries {
        index.insert(number, normalize(number, region).ok().as_deref(), *name);
    }
    index
}

/// Each caller with the name it must find (`None`: a miss), in a tenant
/// of `region` with `entries`.
fn check(region: &str, entries: &[(&'static str, &str)], callers: &[(&str, Option<&str>)]) {
    let index = index(region, entries);
    let mut failures = Vec::new();
    for (caller, want) in callers {
        let e164 = normalize(caller, region).ok();
        let got = index
            .find(e164.as_deref(), caller, |a, b| a == b)
            .map(|(names, _)| names[0]);
        if got != *want {
            failures.push(format!(
                "{caller} ({e164:?}) in {region}: {got:?}, want {want:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Stina's Stockholm number is whole though it has nine digits with its
/// country code: it answers itself, not callers ending in its digits.
#[test]
fn a_short_valid_entry_answers_only_itself() {
    check(
        "SE",
        &[("Stina", "08-123 456")],
        &[
            ("+46 8 123 456", Some("Stina")),
            ("08-123 456", Some("Stina")),
            ("+1 212 812 3456", None),
            ("+49 30 18123456", None),
            ("+46 8 812 3456", None),
        ],
    );
    check(
        "AT",
        &[("Wien", "01 234567")],
        &[("+43 1 234567", Some("Wien")), ("+1 212 123 4567", None)],
    );
}

/// A caller whose short number is valid is whole: not matched by its
/// last digits against whole entries.
#[test]
fn a_short_valid_caller_is_not_matched_by_suffix() {
    check(
        "US",
        &[("Denver", "+1 303 881 2345")],
        &[("+298 812345", None), ("+1 303 881 2345", Some("Denver"))],
    );
    // Stockholm's +46 8 123 456 ends in the same seven digits as Lars.
    check(
        "SE",
        &[("Lars", "+46 8 812 3456")],
        &[("+46 8 123 456", None), ("08-123 456", None)],
    );
}

/// Short codes match nothing by their last digits: a suffix is taken
/// from the national number, never from the country code.
#[test]
fn short_codes_match_no_suffix() {
    check(
        "DE",
        &[
            ("Berlin", "030 19116116"),
            ("New York", "+1 212 491 1880"),
            ("Local", "8116116"),
        ],
        &[
            ("116116", None),
            ("11880", None),
            ("112", None),
            ("110", None),
            ("+49 30 19116116", Some("Berlin")),
        ],
    );
    check(
        "US",
        &[("Sue", "212-555-0911"), ("Lou", "555-0911")],
        &[("911", None), ("+1 911", None)],
    );
}

/// A local number without its area code answers callers of its
/// tenant's country only.
#[test]
fn a_loose_entry_answers_its_own_country_only() {
    check(
        "US",
        &[("Shop", "736-4321")],
        &[
            ("+1 212 736 4321", Some("Shop")),
            ("+44 20 7736 4321", None),
            ("+86 10 1736 4321", None),
        ],
    );
    // One that does not normalize at all is the region's too.
    check(
        "GB",
        &[("Old", "call 99-7364321 please")],
        &[("+44 20 7736 4321", Some("Old")), ("+1 212 736 4321", None)],
    );
}

/// Numbers that read right now find their entry exactly instead of a
/// wrong one by suffix, or nothing.
#[test]
fn readings_fixed_find_their_entry() {
    // A global phone-context: not +1 736 5000, which ended like another.
    check(
        "US",
        &[("Other", "+1 212 736 5000")],
        &[("tel:7365000;phone-context=+1415", None)],
    );
    check(
        "US",
        &[("Right", "+1 415 736 5000"), ("Other", "+1 212 736 5000")],
        &[("tel:7365000;phone-context=+1415", Some("Right"))],
    );
    check(
        "GB",
        &[("London", "+44 20 7946 0123")],
        &[("tel:79460123;phone-context=+4420", Some("London"))],
    );
    // E.164 digits without `+` in a DE tenant.
    check(
        "DE",
        &[("NY", "+1 212 736 5001")],
        &[("12127365001", Some("NY"))],
    );
    // Rome's 0 is dialled after +39.
    check(
        "GB",
        &[("Roma", "+39 (0)6 4567 8901")],
        &[("+39 06 4567 8901", Some("Roma"))],
    );
}
