//! What a row may hold, whoever writes it: the admin API and an import
//! refuse the same rows for the same reasons (the import was once the way
//! around the API's limits). A check answers with the reason, a sentence
//! an operator reads as it is; the caller says where (the API's reply, an
//! import's file, line and cell). Checks allocate only to refuse: an
//! import runs them on every cell of a million rows.

use crate::store::DirectoryEntryInput;
use spreadsheet::{decimal, grouped, scientific, spreadsheet, DECIMAL, GROUPED, SCIENTIFIC};

mod ignorable;
mod printable;
mod several;
mod spreadsheet;

pub use printable::{not_xml, settings_strings, settings_text, unfit};
use printable::{unfit_reason, unfit_text};

pub use ignorable::is_default_ignorable;

/// A refusal: the field at fault, named as an import's column is, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused<F = &'static str> {
    pub field: F,
    pub reason: String,
}

fn refuse<F, T>(field: F, reason: String) -> Result<T, Refused<F>> {
    Err(Refused { field, reason })
}

/// The longest text field of a phone or line. Every node holds every
/// phone in memory, so a tenant's phones cost what the quotas allow, not
/// what a request body or a file can carry (JSON objects have their own
/// cap).
pub const MAX_PHONE_FIELD: usize = 256;

/// A phone's own text fields as given (`None`: not given), borrowed.
#[derive(Clone, Copy, Debug, Default)]
pub struct PhoneText<'a> {
    pub model: Option<&'a str>,
    pub label: Option<&'a str>,
    pub http_user: Option<&'a str>,
    pub http_password: Option<&'a str>,
}

/// A line's text fields as given, borrowed.
#[derive(Clone, Copy, Debug, Default)]
pub struct LineText<'a> {
    pub extension: &'a str,
    pub display_name: Option<&'a str>,
    pub auth_user: Option<&'a str>,
    pub password: Option<&'a str>,
    pub registrar: &'a str,
    pub proxy: Option<&'a str>,
}

/// The first of `fields` past [`MAX_PHONE_FIELD`].
fn phone_fields<'a>(
    fields: impl IntoIterator<Item = (&'static str, Option<&'a str>)>,
) -> Result<(), Refused> {
    match (fields.into_iter()).find(|(_, text)| text.is_some_and(|t| t.len() > MAX_PHONE_FIELD)) {
        Some((field, _)) => refuse(
            field,
            format!("a phone's and its lines' text fields are at most {MAX_PHONE_FIELD} bytes"),
        ),
        None => Ok(()),
    }
}

impl PhoneText<'_> {
    /// Each field within [`MAX_PHONE_FIELD`]; a model also names files
    /// (`snom{model}.htm`, `{model}-3PCC.xml`), so it is a plain name.
    pub fn check(&self) -> Result<(), Refused> {
        phone_fields([
            ("model", self.model),
            ("label", self.label),
            ("http_user", self.http_user),
            ("http_password", self.http_password),
        ])?;
        let plain = |m: &str| {
            m.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'+' | b' '))
                && !m.starts_with(['.', ' '])
        };
        if self.model.is_some_and(|model| !plain(model)) {
            return refuse(
                "model",
                "model: letters, digits, spaces, '-', '_', '.' and '+' only, not starting with '.' or a space"
                    .into(),
            );
        }
        match self
            .label
            .and_then(|label| label.chars().find(|&c| unfit_text(c)))
        {
            Some(bad) => refuse("label", unfit_reason("label", bad)),
            None => Ok(()),
        }
    }
}

impl LineText<'_> {
    /// Each field within [`MAX_PHONE_FIELD`]. The extension is a SIP
    /// URI's user part, and the authentication user a Digest username: a
    /// phone given a newline or a space in either could never register,
    /// and the admin would never learn why. Only what breaks them is
    /// refused, not all RFC 3261 leaves out: extensions with a bare `#`
    /// and `user@domain` auth names are in service, and a stored line is
    /// sent again with every edit of its phone.
    pub fn check(&self) -> Result<(), Refused> {
        phone_fields([
            ("extension", Some(self.extension)),
            ("display_name", self.display_name),
            ("auth_user", self.auth_user),
            ("password", self.password),
            ("registrar", Some(self.registrar)),
            ("proxy", self.proxy),
        ])?;
        let shown = [
            ("display_name", self.display_name),
            ("registrar", Some(self.registrar)),
            ("proxy", self.proxy),
        ];
        for (field, text) in shown {
            if let Some(bad) = text.and_then(|t| t.chars().find(|&c| unfit_text(c))) {
                return refuse(field, unfit_reason(field, bad));
            }
        }
        // Templates write `{{ line.registrar }}:{{ settings.sip_port }}`:
        // a bare `2001:db8::5` would become `2001:db8::5:5070`, itself an
        // address, and another host (resync refuses the bare form too).
        for (field, text) in [("registrar", Some(self.registrar)), ("proxy", self.proxy)] {
            if text.is_some_and(bare_ipv6) {
                return refuse(
                    field,
                    format!(
                        "{field}: an IPv6 address goes in brackets, as [2001:db8::5], so that \
                         a port can follow it"
                    ),
                );
            }
        }
        // A password is the phone's to send, not to show: anything it can
        // type goes, but for what an XML file cannot carry at all.
        if let Some(bad) = self.password.and_then(|p| p.chars().find(|&c| not_xml(c))) {
            return refuse(
                "password",
                format!(
                    "password: U+{:04X} is a control character XML files cannot carry",
                    u32::from(bad)
                ),
            );
        }
        if let Some(bad) = (self.extension.chars()).find(|&c| breaks_sip_user(c) || unfit(c)) {
            return refuse(
                "extension",
                format!(
                    "extension: {bad:?} cannot be in a SIP user part (no spaces, control \
                     characters, '@', ':', '<', '>' or '\"')"
                ),
            );
        }
        if let Some(bad) = self
            .auth_user
            .and_then(|user| user.chars().find(|&c| c.is_whitespace() || unfit(c)))
        {
            return refuse(
                "auth_user",
                format!("auth_user: {bad:?}: no spaces or control characters"),
            );
        }
        for (field, text) in [
            ("extension", Some(self.extension)),
            ("auth_user", self.auth_user),
        ] {
            if let Some(text) = text.filter(|t| scientific(t)) {
                return refuse(field, spreadsheet(field, text, SCIENTIFIC));
            }
        }
        Ok(())
    }
}

/// An IPv6 address without the brackets a host needs before a port.
fn bare_ipv6(text: &str) -> bool {
    text.parse::<std::net::Ipv6Addr>().is_ok()
}

/// What cannot stand in a SIP URI's user part even where phones and
/// PBXs are lenient: it ends the user part, the URI or the header line.
fn breaks_sip_user(c: char) -> bool {
    c.is_whitespace() || c.is_control() || matches!(c, '@' | ':' | '<' | '>' | '"')
}

/// A phone's HTTP login as it is to be stored: either half alone makes
/// the phone refuse every fetch (`device_auth`), which is never what was
/// meant.
pub fn http_login(user: Option<&str>, password: Option<&str>) -> Result<(), Refused> {
    match (user, password) {
        (Some(_), None) => refuse(
            "http_password",
            "http_password: required when http_user is set".into(),
        ),
        (None, Some(_)) => refuse(
            "http_user",
            "http_user: required when http_password is set".into(),
        ),
        _ => Ok(()),
    }
}

/// An entry is a person or a place, not a store: every node holds it.
pub const MAX_ENTRY_NUMBERS: usize = 16;
pub const MAX_ENTRY_FIELD: usize = 256;

/// The part of a directory entry a refusal is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryField {
    Name,
    Company,
    ExternalId,
    /// The list as a whole: none, or too many.
    Numbers,
    /// The number at this index of the list (its text or its kind).
    Number(usize),
}

/// A directory entry as it is to be stored: its fields bounded, and one to
/// [`MAX_ENTRY_NUMBERS`] numbers of at least three digits each.
pub fn directory_entry(entry: &DirectoryEntryInput) -> Result<(), Refused<EntryField>> {
    let size = || {
        format!(
            "an entry has at most {MAX_ENTRY_NUMBERS} numbers and fields of at most {MAX_ENTRY_FIELD} bytes"
        )
    };
    let numbers = || "numbers: at least one, each with at least three digits".to_string();
    let long = |text: &str| text.len() > MAX_ENTRY_FIELD;
    if long(&entry.name) {
        return refuse(EntryField::Name, size());
    }
    if entry.company.as_deref().is_some_and(long) {
        return refuse(EntryField::Company, size());
    }
    if long(&entry.external_id) {
        return refuse(EntryField::ExternalId, size());
    }
    if entry.numbers.len() > MAX_ENTRY_NUMBERS {
        return refuse(EntryField::Numbers, size());
    }
    if entry.numbers.is_empty() {
        return refuse(EntryField::Numbers, numbers());
    }
    for (i, n) in entry.numbers.iter().enumerate() {
        if long(&n.number) || long(&n.kind) {
            return refuse(EntryField::Number(i), size());
        }
        if n.number.bytes().filter(u8::is_ascii_digit).count() < 3 {
            return refuse(EntryField::Number(i), numbers());
        }
        if let Some(between) = several::several(&n.number) {
            return refuse(
                EntryField::Number(i),
                several::one_number_each("numbers", between),
            );
        }
        let mangled = [
            (scientific as fn(&str) -> bool, SCIENTIFIC),
            (decimal, DECIMAL),
            (grouped, GROUPED),
        ];
        if let Some((_, cause)) = mangled.iter().find(|(test, _)| test(&n.number)) {
            return refuse(
                EntryField::Number(i),
                spreadsheet("numbers", &n.number, cause),
            );
        }
    }
    Ok(())
}

/// The prefix of the key an import gives an entry that has no id of its
/// own (`name:` and its lowercased name).
pub const GENERATED_ENTRY_KEY_PREFIX: &str = "name:";

/// The key an entry without an id of its own is stored under: the prefix
/// and its name, trimmed and lowercased.
pub fn generated_entry_key(name: &str) -> String {
    format!("{GENERATED_ENTRY_KEY_PREFIX}{}", name.trim().to_lowercase())
}

/// A change of name for an entry stored under `external_id`: one keyed by
/// its name (an import gave it no id of its own) may not leave that key,
/// for the export would then write the key as an id, which no import takes
/// (see [`chosen_external_id`]), and a restore of every tenant would stop
/// at it.
pub fn entry_renamed(external_id: &str, name: &str) -> Result<(), Refused<EntryField>> {
    if external_id.starts_with(GENERATED_ENTRY_KEY_PREFIX)
        && generated_entry_key(name) != external_id
    {
        return refuse(
            EntryField::Name,
            format!(
                "name: this entry was imported without an id and is keyed by its name \
                 ({external_id:?}), so its name can change only in case; \
                 to rename it, create it anew with an external_id of its own and remove this one"
            ),
        );
    }
    Ok(())
}

/// An `external_id` a writer chose: one in the generated keys' namespace
/// would be taken over, silently, by a later import of an entry of that
/// name without an id.
pub fn chosen_external_id(external_id: &str) -> Result<(), Refused<EntryField>> {
    if external_id.trim().starts_with(GENERATED_ENTRY_KEY_PREFIX) {
        return refuse(
            EntryField::ExternalId,
            format!(
                "external_id: the prefix {GENERATED_ENTRY_KEY_PREFIX:?} is reserved for entries \
                 imported without an id; choose another id"
            ),
        );
    }
    Ok(())
}

/// A directory source's name: it is logged, and a line break in it would
/// forge a log line. So would a Unicode line or paragraph separator to a
/// reader that splits on them, and bidi controls make a line read as
/// other text: a tenant's name could pass for the `ban` lines fail2ban
/// reads.
pub fn source_name(name: &str) -> Result<(), String> {
    if name.trim().is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
        return Err("name: 1 to 64 characters, none of them control characters".into());
    }
    if let Some(c) = (name.chars()).find(|&c| is_format(c) || matches!(c, '\u{2028}' | '\u{2029}'))
    {
        return Err(format!(
            "name holds U+{:04X}, a line break or invisible formatting character \
             that could make a log line read as another",
            u32::from(c)
        ));
    }
    Ok(())
}

/// How long a lookup waits on a source.
pub fn source_timeout(timeout_ms: i32) -> Result<(), String> {
    if !(1..=10_000).contains(&timeout_ms) {
        return Err("timeout_ms: 1 to 10000".into());
    }
    Ok(())
}

/// How deep a stored settings or variables object may nest. Templates read
/// a few levels; the export writes each object three or four levels into
/// its file, and the import's JSON reader stops at 128: an object stored
/// 125 deep (1 KB, well under the size cap) made every later export of the
/// whole platform fail to import.
pub const MAX_OBJECT_DEPTH: usize = 32;

/// The nesting of a JSON text, objects and arrays counted alike (`{}` is
/// 1), read off its brackets outside strings: an import checks a million
/// phones' variables as text, without parsing each again.
pub fn nesting(json: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for byte in json.bytes() {
        match (in_string, byte) {
            (true, _) if escaped => escaped = false,
            (true, b'\\') => escaped = true,
            (true, b'"') => in_string = false,
            (true, _) => {}
            (false, b'"') => in_string = true,
            (false, b'{' | b'[') => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            (false, b'}' | b']') => depth = depth.saturating_sub(1),
            (false, _) => {}
        }
    }
    deepest
}

/// A settings or variables object's text `what` nests at most
/// [`MAX_OBJECT_DEPTH`].
pub fn object_depth(what: &str, json: &str) -> Result<(), String> {
    let depth = nesting(json);
    if depth > MAX_OBJECT_DEPTH {
        return Err(format!(
            "{what} nests {depth} levels deep; at most {MAX_OBJECT_DEPTH}"
        ));
    }
    Ok(())
}

pub const MAX_TENANT_NAME_CHARS: usize = 256;

/// A tenant's display name: every node holds it, and a tenant's own token
/// may set it.
pub fn tenant_name(name: &str) -> Result<(), String> {
    if name.trim().is_empty() {
        return Err("name must not be empty".into());
    }
    if name.chars().count() > MAX_TENANT_NAME_CHARS {
        return Err(format!("name: at most {MAX_TENANT_NAME_CHARS} characters"));
    }
    // The admin page lists tenants by name: a bidi override or an
    // invisible character lets one tenant's name pass for another's (a
    // Hangul filler alone looks blank), and a control character does not
    // belong in one line of text.
    let hidden = |c: char| c.is_control() || is_format(c) || is_default_ignorable(c);
    if let Some(c) = name.chars().find(|&c| hidden(c)) {
        return Err(format!(
            "tenant name holds U+{:04X}, a control or invisible character \
             that could make it pass for another name",
            u32::from(c)
        ));
    }
    Ok(())
}

/// Whether `c` is of general category Cf (format), as of Unicode 15: bidi
/// marks, overrides and isolates, zero-width characters, the soft hyphen,
/// tags and the like. Most show nothing themselves, yet change how the
/// text around them shows or compares: with them, text an attacker chose
/// passes for other text. The standard library has no category test, and
/// the list changes rarely (Unicode 15 added U+13439-U+1343F).
pub fn is_format(c: char) -> bool {
    matches!(
        c,
        '\u{ad}'
            | '\u{600}'..='\u{605}'
            | '\u{61c}'
            | '\u{6dd}'
            | '\u{70f}'
            | '\u{890}'..='\u{891}'
            | '\u{8e2}'
            | '\u{180e}'
            | '\u{200b}'..='\u{200f}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206f}'
            | '\u{feff}'
            | '\u{fff9}'..='\u{fffb}'
            | '\u{110bd}'
            | '\u{110cd}'
            | '\u{13430}'..='\u{1343f}'
            | '\u{1bca0}'..='\u{1bca3}'
            | '\u{1d173}'..='\u{1d17a}'
            | '\u{e0001}'
            | '\u{e0020}'..='\u{e007f}'
    )
}

#[cfg(test)]
mod nesting_tests {
    use super::{nesting, object_depth, MAX_OBJECT_DEPTH};

    #[test]
    fn nesting_counts_brackets_outside_strings() {
        assert_eq!(nesting("{}"), 1);
        assert_eq!(nesting(r#"{"a":[{"b":1}],"c":{}}"#), 3);
        assert_eq!(nesting(r#"{"a":"[[[{{{","b":"\\\"[["}"#), 1);
        let deep = format!(
            "{}{}",
            "[".repeat(MAX_OBJECT_DEPTH + 1),
            "]".repeat(MAX_OBJECT_DEPTH + 1)
        );
        assert!(object_depth("variables", &deep)
            .unwrap_err()
            .contains("variables nests 33"));
        assert!(object_depth("variables", &deep[1..deep.len() - 1]).is_ok());
    }
}

#[cfg(test)]
mod host_tests {
    use super::LineText;

    fn line<'a>(registrar: &'a str, proxy: Option<&'a str>) -> LineText<'a> {
        LineText {
            extension: "101",
            registrar,
            proxy,
            ..LineText::default()
        }
    }

    #[test]
    fn a_bare_ipv6_registrar_or_proxy_is_refused_and_names_the_brackets() {
        for bare in ["2001:db8::5", "2001:db8::5:5070", "::1", "fd00::2"] {
            let refused = line(bare, None).check().unwrap_err();
            assert_eq!(refused.field, "registrar", "{bare}");
            assert!(
                refused.reason.contains("[2001:db8::5]"),
                "{}",
                refused.reason
            );
            let refused = line("sip.example.net", Some(bare)).check().unwrap_err();
            assert_eq!(refused.field, "proxy", "{bare}");
        }
    }

    #[test]
    fn bracketed_ipv6_names_and_ports_pass() {
        for host in [
            "[2001:db8::5]",
            "[2001:db8::5]:5070",
            "sip.example.net",
            "sip.example.net:5070",
            "192.0.2.10:5060",
        ] {
            assert!(line(host, Some(host)).check().is_ok(), "{host}");
        }
    }
}
