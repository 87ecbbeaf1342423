//! What text a phone shows or sends may hold: rendered into `key = value`
//! files and XML, a control character splits a line (a key of the value's
//! own) or makes a file no parser reads.

/// What has no place in a line of text a phone shows or sends: control
/// characters but tab (line breaks split the `key = value` files, and XML
/// 1.0 has no C0 character but three), the Unicode line and paragraph
/// separators, and noncharacters (U+FFFE and U+FFFF are not XML either).
pub fn unfit(c: char) -> bool {
    (c.is_control() && c != '\t') || matches!(c, '\u{2028}' | '\u{2029}') || noncharacter(c)
}

/// [`unfit`] but for U+0000, which every write refuses with a reason of
/// its own, naming the line as well as the field (`store/nul.rs`).
pub(super) fn unfit_text(c: char) -> bool {
    c != '\0' && unfit(c)
}

/// A Unicode noncharacter: U+FDD0 to U+FDEF and the last two of each plane.
fn noncharacter(c: char) -> bool {
    matches!(c, '\u{fdd0}'..='\u{fdef}') || u32::from(c) & 0xfffe == 0xfffe
}

/// Not a character of XML 1.0: a C0 control but tab, line feed and
/// carriage return, or U+FFFE or U+FFFF. No XML file can carry one.
/// U+0000 is left to its own reason, as in [`unfit_text`].
pub fn not_xml(c: char) -> bool {
    matches!(c, '\u{1}'..='\u{8}' | '\u{b}' | '\u{c}' | '\u{e}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}')
}

pub(super) fn unfit_reason(field: &str, bad: char) -> String {
    format!(
        "{field}: U+{:04X} is a control character, a line or paragraph separator or a \
         noncharacter, which provisioning files cannot carry",
        u32::from(bad)
    )
}

/// A tenant's settings as written: every string in them, at any depth,
/// free of what [`unfit`] names but line breaks. Templates print them into
/// every phone's files (`ntp_server`, `timezone`, `language`, and whatever
/// a tenant's own template reads). A line break may stay: a tenant's
/// template may carry a PEM certificate into an XML attribute, where the
/// writer keeps it as `&#10;`, and a `key = value` file gets a space.
/// Not a check of stored rows, nor of directory sources' settings.
pub fn settings_strings(settings: &serde_json::Value) -> Result<(), String> {
    match unfit_string(settings) {
        Some((path, bad)) => Err(unfit_reason(&format!("settings{path}"), bad)),
        None => Ok(()),
    }
}

/// [`settings_strings`] of a settings object's JSON text; text that is not
/// JSON is for the caller's parse to refuse.
pub fn settings_text(json: &str) -> Result<(), String> {
    match serde_json::from_str(json) {
        Ok(settings) => settings_strings(&settings),
        Err(_) => Ok(()),
    }
}

/// The first string of `value` holding an [`unfit`] character: where it is
/// (`.a[2].b`) and the character. The path is made only for a refusal; the
/// depth is the parser's (128 levels at most).
fn unfit_string(value: &serde_json::Value) -> Option<(String, char)> {
    match value {
        serde_json::Value::String(text) => (text.chars())
            .find(|&c| unfit(c) && !matches!(c, '\n' | '\r'))
            .map(|c| (String::new(), c)),
        serde_json::Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| unfit_string(item).map(|(path, c)| (format!("[{i}]{path}"), c))),
        serde_json::Value::Object(members) => members.iter().find_map(|(key, member)| {
            unfit_string(member).map(|(path, c)| (format!(".{key}{path}"), c))
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::{LineText, PhoneText};
    use super::{settings_strings, settings_text};

    fn line(field: &str, text: &str) -> LineText<'static> {
        let text: &'static str = Box::leak(text.to_string().into_boxed_str());
        let mut line = LineText {
            extension: "101",
            display_name: Some("Reception"),
            auth_user: Some("u101"),
            password: Some("pw"),
            registrar: "sip.example.net",
            proxy: Some("edge.example.net"),
        };
        match field {
            "extension" => line.extension = text,
            "display_name" => line.display_name = Some(text),
            "auth_user" => line.auth_user = Some(text),
            "password" => line.password = Some(text),
            "registrar" => line.registrar = text,
            "proxy" => line.proxy = Some(text),
            _ => unreachable!("{field}"),
        }
        line
    }

    #[test]
    fn a_lines_shown_fields_refuse_what_files_cannot_carry() {
        // U+0000 has its own reason (`store/nul.rs`).
        let unfit = [
            "\u{1}",
            "\n",
            "\r",
            "\u{b}",
            "\u{1b}",
            "\u{7f}",
            "\u{85}",
            "\u{9f}",
            "\u{2028}",
            "\u{2029}",
            "\u{fffe}",
            "\u{ffff}",
            "\u{fdd0}",
            "\u{1ffff}",
        ];
        for field in [
            "extension",
            "display_name",
            "auth_user",
            "registrar",
            "proxy",
        ] {
            for c in unfit {
                let refused = line(field, &format!("a{c}b")).check().unwrap_err();
                assert_eq!(refused.field, field, "{c:?}");
                assert!(refused.reason.starts_with(field), "{}", refused.reason);
            }
        }
        for field in ["display_name", "registrar", "proxy"] {
            for fine in ["Müller & Co \"q\" 東京 😀", "tab\there", "\u{202e}x"] {
                assert_eq!(line(field, fine).check(), Ok(()), "{field} {fine:?}");
            }
        }
    }

    #[test]
    fn a_password_refuses_only_what_xml_cannot_carry() {
        for c in ["\u{1}", "\u{b}", "\u{c}", "\u{1f}", "\u{fffe}", "\u{ffff}"] {
            let refused = line("password", &format!("p{c}w")).check().unwrap_err();
            assert_eq!(refused.field, "password", "{c:?}");
        }
        for fine in [
            "tab\there",
            "l\nf",
            "c\rr",
            "\u{7f}\u{85}\u{2028}",
            "p%# &=;<>\"'\\$",
        ] {
            assert_eq!(line("password", fine).check(), Ok(()), "{fine:?}");
        }
    }

    #[test]
    fn a_label_is_one_line() {
        let label = PhoneText {
            label: Some("Lab\naccount.1.sip_server.1.address = evil"),
            ..Default::default()
        };
        assert_eq!(label.check().unwrap_err().field, "label");
    }

    #[test]
    fn settings_strings_are_held_to_a_lines_rule() {
        let settings = serde_json::json!({
            "ntp_server": "pool.ntp.org",
            "quotas": {"phones": 10},
            "line_keys": [{"label": "ok"}, {"label": "a\u{2028}b"}],
        });
        let refused = settings_strings(&settings).unwrap_err();
        assert!(
            refused.starts_with("settings.line_keys[1].label: U+2028"),
            "{refused}"
        );
        assert!(settings_text(r#"{"language": "English\u000b"}"#).is_err());
        assert_eq!(
            settings_text(r#"{"language": "Deutsch\t", "n": [1, null]}"#),
            Ok(())
        );
        let pem = "-----BEGIN CERTIFICATE-----\r\nMIIB\n-----END CERTIFICATE-----\n";
        assert_eq!(settings_strings(&serde_json::json!({ "ca": pem })), Ok(()));
    }

    /// An import refuses what the API refuses (`src/admin/tenants.rs`).
    #[test]
    fn an_import_refuses_such_tenant_settings() {
        let files = [
            (
                "tenants.json",
                true,
                r#"{"tenants": [{"slug": "acme", "name": "Acme", "settings": {"ntp_server": "a\u000bb = 1"}}]}"#,
            ),
            (
                "tenants.csv",
                false,
                "slug,name,default_region,settings\nacme,Acme,US,\"{\"\"ntp_server\"\": \"\"a\\u2028b\"\"}\"\n",
            ),
        ];
        for (name, json, text) in files {
            let plan = crate::import::plan_text(name, json, text);
            assert!(plan.items.is_empty(), "{name}");
            let messages: Vec<&str> = plan.errors.iter().map(|e| &*e.message).collect();
            assert!(
                messages
                    .iter()
                    .any(|m| m.contains("settings.ntp_server: U+")),
                "{name}: {messages:?}"
            );
        }
    }
}
