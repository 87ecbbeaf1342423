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
pub fn number_forms(e164: &str) -> Vec<String> {
    let digits: String = e164.chars().filter(char::is_ascii_digit).collect();
    let mut forms = vec![e164.to_string(), digits];
    if let Ok(number) = crate::normalize::parse_number(None, e164) {
        let code = number.code().value();
        let national = number.format().mode(Mode::National).to_string();
        let international = number.format().mode(Mode::International).to_string();
        let significant = number.national().to_string();
        forms.extend(national_spellings(&national));
        forms.push(significant.clone());
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
        let us = number_forms("+15550101234");
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
        let uk = number_forms("+441632960123");
        for want in [
            "01632 960123",
            "01632960123",
            "+44 1632 960123",
            "0044 1632 960123",
        ] {
            assert!(uk.contains(&want.to_string()), "{want} missing from {uk:?}");
        }
        let au = number_forms("+61255501234");
        assert!(
            au.contains(&"(02) 5550 1234".to_string()) || au.contains(&"02 5550 1234".to_string()),
            "{au:?}"
        );
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
        let real = build_filter(&settings, &number_forms("+15550101234"));
        assert!(ldap3::parse_filter(&real).is_ok(), "{real}");
    }
}
