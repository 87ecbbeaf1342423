//! The forms a number takes in directories, and the LDAP filter that
//! matches any of them. Real directories mix formats within one entry
//! ("+1 (555) 010-1234" beside "555.010.1234"), and Active Directory has no
//! `telephoneNumberMatch` to ignore punctuation, so the filter ORs the
//! common spellings instead. Every value is escaped per RFC 4515.

use ldap3::ldap_escape;
use phonenumber::Mode;

use crate::settings::LdapSettings;

/// How a national number is commonly written: as the metadata formats
/// it, and with its groups joined by hyphens, dots, spaces or nothing.
fn national_spellings(grouped: &str) -> Vec<String> {
    let groups: Vec<&str> = grouped
        .split(|c: char| !c.is_ascii_digit())
        .filter(|g| !g.is_empty())
        .collect();
    let mut out = vec![grouped.to_string()];
    for sep in ["-", ".", " ", ""] {
        out.push(groups.join(sep));
    }
    out
}

/// Spellings of an E.164 number, most common first, without duplicates.
/// A number from abroad keeps a national spelling (no country code) only
/// if `region`, the tenant's, reads no other number from it: a US entry's
/// `2079460000` is (207) 946-0000, not London's +44 20 7946 0000, while
/// `02 5550 1234` is no valid US number and can only be the Sydney one.
pub fn number_forms(e164: &str, region: &str) -> Vec<String> {
    let digits: String = e164.chars().filter(char::is_ascii_digit).collect();
    let mut forms = vec![e164.to_string(), digits];
    if let Ok(number) = crate::normalize::parse_number(None, e164) {
        let code = number.code().value();
        let national = number.format().mode(Mode::National).to_string();
        let international = number.format().mode(Mode::International).to_string();
        let significant = number.national().to_string();
        let home = phonenumber::metadata::DATABASE
            .by_id(region.trim().to_ascii_uppercase().as_str())
            .is_some_and(|meta| meta.country_code() == code);
        // Validity, not length alone: `02 5550 1234` has a US number's
        // length, but no US number begins with 0.
        let another = |spelling: &str| {
            crate::normalize::normalize(spelling, region).is_ok_and(|e| {
                e != e164
                    && crate::normalize::parse_number(None, &e)
                        .is_ok_and(|n| phonenumber::is_valid(&n))
            })
        };
        // Every national spelling holds the national format's digits: two
        // readings decide them all.
        if home || !another(&national) {
            forms.extend(national_spellings(&national));
        }
        if home || !another(&significant) {
            forms.push(significant.clone());
        }
        forms.push(format!("{code}{significant}"));
        forms.extend(national_spellings(&international));
        // "+1 (555) 010-1234": the national format after the country code,
        // for countries whose national format has no trunk prefix.
        if !national.starts_with('0') {
            forms.push(format!("+{code} {national}"));
        }
        let after_code = international
            .strip_prefix(&format!("+{code}"))
            .unwrap_or(&international)
            .trim()
            .to_string();
        forms.push(format!("+{code}-{}", after_code.replace(' ', "-")));
        forms.push(format!("00{code} {after_code}"));
    }
    let mut seen = std::collections::HashSet::new();
    forms.retain(|f| !f.is_empty() && seen.insert(f.clone()));
    forms
}

/// `(&<configured filter>(|(attr=form)...))`, every form escaped.
pub fn build_filter(settings: &LdapSettings, forms: &[String]) -> String {
    let mut any = String::from("(|");
    for attr in &settings.number_attributes {
        for form in forms {
            any.push('(');
            any.push_str(attr);
            any.push('=');
            any.push_str(&ldap_escape(form.as_str()));
            any.push(')');
        }
    }
    any.push(')');
    match &settings.filter {
        Some(extra) => format!("(&{extra}{any})"),
        None => any,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_cover_the_spellings_directories_use() {
        let us = number_forms("+15550101234", "us");
        for want in [
            "+15550101234",
            "15550101234",
            "5550101234",
            "(555) 010-1234",
            "555-010-1234",
            "555.010.1234",
            "555 010 1234",
            "+1 555-010-1234",
            "+1 (555) 010-1234",
        ] {
            assert!(us.contains(&want.to_string()), "{want} missing from {us:?}");
        }
        let uk = number_forms("+441632960123", "GB");
        for want in [
            "01632 960123",
            "01632960123",
            "+44 1632 960123",
            "0044 1632 960123",
        ] {
            assert!(uk.contains(&want.to_string()), "{want} missing from {uk:?}");
        }
        let au = number_forms("+61255501234", "AU");
        assert!(
            au.contains(&"(02) 5550 1234".to_string()) || au.contains(&"02 5550 1234".to_string()),
            "{au:?}"
        );
    }

    /// A caller from abroad is not asked for in national spellings that
    /// are another number in the tenant's region.
    #[test]
    fn a_foreign_number_has_no_spelling_of_a_local_one() {
        let london = number_forms("+442079460000", "US");
        for unwanted in ["2079460000", "207-946-0000", "207 946 0000"] {
            assert!(
                !london.contains(&unwanted.to_string()),
                "{unwanted} in {london:?}"
            );
        }
        // A trunk prefix reads as no US number: only London's.
        for want in [
            "+442079460000",
            "442079460000",
            "+44 20 7946 0000",
            "0044 20 7946 0000",
            "020 7946 0000",
        ] {
            assert!(
                london.contains(&want.to_string()),
                "{want} missing from {london:?}"
            );
        }
        // Canada shares the US's country code and numbering plan.
        assert!(number_forms("+15550101234", "CA").contains(&"555-010-1234".to_string()));
    }

    #[test]
    fn filters_escape_and_parse() {
        let settings =
            LdapSettings::parse("t", r#"{"url":"ldap://x/","base_dn":"dc=x","filter":"(objectClass=person)","number_attributes":["mobile"]}"#)
                .unwrap();
        let hostile = [
            "*".to_string(),
            ")(uid=*".to_string(),
            "\\2a".to_string(),
            "a\0b".to_string(),
        ];
        let filter = build_filter(&settings, &hostile);
        assert_eq!(
            filter,
            r"(&(objectClass=person)(|(mobile=\2a)(mobile=\29\28uid=\2a)(mobile=\5c2a)(mobile=a\00b)))"
        );
        assert!(ldap3::parse_filter(&filter).is_ok());
        let real = build_filter(&settings, &number_forms("+15550101234", "US"));
        assert!(ldap3::parse_filter(&real).is_ok(), "{real}");
    }
}
