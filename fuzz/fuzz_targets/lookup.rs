//! Numbers and names in lookups come from PBXes and directories: anything.
//! Input: a region selector byte, then the text. Beyond "no panic":
//! normalization is idempotent and yields E.164, every LDAP filter built
//! from anything parses with exactly the structure we meant (no injected
//! parentheses), and cleaned names are safe for a SIP display name.
#![no_main]

use dialtone_directory::filter::{build_filter, number_forms};
use dialtone_directory::name::{clean_name, is_hidden, MAX_NAME_CHARS};
use dialtone_directory::normalize;
use dialtone_directory::settings::LdapSettings;
use libfuzzer_sys::fuzz_target;

const REGIONS: [&str; 6] = ["US", "GB", "AU", "DE", "FR", "XX"];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    let Ok(text) = std::str::from_utf8(rest) else { return };
    let region = REGIONS[selector as usize % REGIONS.len()];

    if let Ok(e164) = normalize(text, region) {
        assert!(e164.starts_with('+'), "{text:?} -> {e164:?}");
        assert!(e164[1..].bytes().all(|b| b.is_ascii_digit()), "{text:?} -> {e164:?}");
        assert!((4..=16).contains(&e164.len()), "{text:?} -> {e164:?}");
        assert_eq!(normalize(&e164, region).as_deref(), Ok(e164.as_str()), "not idempotent for {text:?}");
    }

    let settings = LdapSettings::parse(
        "fuzz",
        r#"{"url":"ldap://x/","base_dn":"dc=x","filter":"(objectClass=person)","number_attributes":["telephoneNumber","mobile"]}"#,
    )
    .expect("fixed settings");
    // Both the forms of a real number and the raw text itself (as a source
    // would receive it if normalization were bypassed).
    let mut forms = vec![text.to_string()];
    if let Ok(e164) = normalize(text, region) {
        forms.extend(number_forms(&e164, region));
    }
    let filter = build_filter(&settings, &forms);
    assert!(ldap3::parse_filter(&filter).is_ok(), "{filter:?}");
    // (&(objectClass=person)(|...)): 3 pairs of parentheses plus one per clause.
    let clauses = settings.number_attributes.len() * forms.len();
    assert_eq!(filter.matches('(').count(), 3 + clauses, "{filter:?}");
    assert_eq!(filter.matches(')').count(), 3 + clauses, "{filter:?}");

    if let Some(name) = clean_name(text) {
        assert!(name.chars().count() <= MAX_NAME_CHARS);
        assert!(!name.chars().any(|c| c.is_control() || c == '"' || c == '\\'), "{name:?}");
        assert_eq!(name.trim(), name);
        // Nothing invisible is left but what joins or selects something, so
        // no name shows as blank or passes for a placeholder.
        let kept = |c: char| matches!(c, '\u{200c}' | '\u{200d}' | '\u{fe0e}' | '\u{fe0f}');
        assert!(name.chars().filter(|&c| is_hidden(c)).all(kept), "{name:?}");
        assert!(name.chars().any(|c| !is_hidden(c) && c != ' '), "{name:?}");
        assert_eq!(clean_name(&name).as_deref(), Some(name.as_str()), "not idempotent for {text:?}");
    }
});
