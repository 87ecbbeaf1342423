//! The JSON import format: one document with `tenants`, `phones` and
//! `directory` arrays. Values are checked while parsing, so serde_json
//! reports the line and column of the bad value itself.

use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;

use super::*;
use crate::store::{DirectoryEntryInput, DirectorySourceInput, LineInput, PhoneInput, TenantInput};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonFile {
    #[serde(default)]
    tenants: Vec<JsonTenant>,
    #[serde(default)]
    phones: Vec<JsonPhone>,
    #[serde(default)]
    directory: Vec<JsonDirectoryEntry>,
    #[serde(default)]
    directory_sources: Vec<JsonSource>,
}

fn default_priority() -> i32 {
    10
}
fn default_enabled() -> bool {
    true
}
fn default_timeout_ms() -> i32 {
    250
}
fn de_kind<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SourceKind, D::Error> {
    de_with(d, |s| s.parse::<SourceKind>().map_err(|e| e.to_string()))
}

/// An LDAP or upstream HTTP source. Its settings are checked against the
/// kind by the binary before anything is written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonSource {
    #[serde(deserialize_with = "de_slug")]
    tenant: String,
    #[serde(deserialize_with = "de_required")]
    name: String,
    #[serde(deserialize_with = "de_kind")]
    kind: SourceKind,
    #[serde(default = "default_priority")]
    priority: i32,
    #[serde(default = "default_enabled")]
    enabled: bool,
    #[serde(default = "default_timeout_ms")]
    timeout_ms: i32,
    #[serde(deserialize_with = "de_object")]
    settings: String,
    /// Left out: keep the stored secret.
    secret: Option<String>,
}

fn de_with<'de, D, T>(d: D, check: impl FnOnce(String) -> Result<T, String>) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let s = String::deserialize(d)?;
    check(s).map_err(serde::de::Error::custom)
}

fn de_slug<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    de_with(d, |s| check_slug(&s))
}
fn de_region<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    de_with(d, |s| check_region(&s))
}
fn de_mac<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Mac, D::Error> {
    de_with(d, |s| s.parse::<Mac>().map_err(|e| e.to_string()))
}
fn de_family<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Family, D::Error> {
    de_with(d, |s| s.parse::<Family>().map_err(|e| e.to_string()))
}
fn de_object<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    check_object("this field", &v).map_err(serde::de::Error::custom)
}
fn de_required<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    de_with(d, |s| non_empty("value", &s))
}

fn default_region() -> String {
    "US".into()
}
fn empty_object() -> String {
    "{}".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonTenant {
    #[serde(deserialize_with = "de_slug")]
    slug: String,
    #[serde(deserialize_with = "de_required")]
    name: String,
    #[serde(default = "default_region", deserialize_with = "de_region")]
    default_region: String,
    #[serde(default = "empty_object", deserialize_with = "de_object")]
    settings: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonLine {
    #[serde(deserialize_with = "de_required")]
    extension: String,
    display_name: Option<String>,
    auth_user: Option<String>,
    password: Option<String>,
    #[serde(deserialize_with = "de_required")]
    registrar: String,
    proxy: Option<String>,
    #[serde(default = "empty_object", deserialize_with = "de_object")]
    settings: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonPhone {
    #[serde(deserialize_with = "de_slug")]
    tenant: String,
    #[serde(deserialize_with = "de_mac")]
    mac: Mac,
    #[serde(deserialize_with = "de_family")]
    family: Family,
    model: Option<String>,
    label: Option<String>,
    #[serde(default = "empty_object", deserialize_with = "de_object")]
    variables: String,
    http_user: Option<String>,
    http_password: Option<String>,
    #[serde(default)]
    lines: Vec<JsonLine>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonNumber {
    number: String,
    #[serde(default = "default_kind")]
    kind: String,
}

fn default_kind() -> String {
    "work".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonDirectoryEntry {
    #[serde(deserialize_with = "de_slug")]
    tenant: String,
    external_id: Option<String>,
    #[serde(deserialize_with = "de_required")]
    name: String,
    company: Option<String>,
    numbers: Vec<JsonNumber>,
}

fn line_input(l: JsonLine) -> LineInput {
    let extension = l.extension;
    LineInput {
        display_name: opt(l.display_name).unwrap_or_else(|| extension.clone()),
        auth_user: opt(l.auth_user).unwrap_or_else(|| extension.clone()),
        password: l.password.filter(|p| !p.is_empty()),
        registrar: l.registrar,
        proxy: opt(l.proxy),
        settings: l.settings,
        extension,
    }
}

/// Where each element of the document's top-level arrays (`tenants`,
/// `phones`, …) begins, as line and byte column from 1, for errors found
/// after parsing (duplicates, database rejections). Read from a document
/// serde has already accepted, in one pass: an element's line was once
/// counted from the start of the text, so a JSON import of 40,000 phones
/// took three minutes, and only a key of the root object names a member
/// (the first `"phones"` anywhere in the text, a tenant's setting say,
/// put every phone at the wrong place).
#[derive(Default)]
struct ElementPositions {
    members: Vec<(String, Vec<(u64, u64)>)>,
}

impl ElementPositions {
    fn read(text: &str) -> Self {
        let bytes = text.as_bytes();
        let mut members: Vec<(String, Vec<(u64, u64)>)> = Vec::new();
        let (mut line, mut line_start) = (1u64, 0usize);
        let (mut depth, mut in_str, mut escape) = (0u32, false, false);
        // The root object's last key, and the array its value is, if any.
        let (mut key_start, mut key, mut array): (usize, Option<&str>, Option<usize>) =
            (0, None, None);
        let mut element_next = false;
        for (i, &c) in bytes.iter().enumerate() {
            if c == b'\n' {
                (line, line_start) = (line + 1, i + 1);
            }
            if in_str {
                match (escape, c) {
                    (true, _) => escape = false,
                    (false, b'\\') => escape = true,
                    (false, b'"') => {
                        in_str = false;
                        if depth == 1 {
                            key = Some(&text[key_start..i]);
                        }
                    }
                    _ => {}
                }
                continue;
            }
            if c.is_ascii_whitespace() {
                continue;
            }
            if element_next && depth == 2 && c != b']' {
                if let Some(array) = array {
                    members[array].1.push((line, (i - line_start) as u64 + 1));
                }
                element_next = false;
            }
            match c {
                b'"' => (in_str, key_start) = (true, i + 1),
                b'[' | b'{' => {
                    depth += 1;
                    if depth == 2 && c == b'[' {
                        members.push((unescape(key.take().unwrap_or_default()), Vec::new()));
                        array = Some(members.len() - 1);
                        element_next = true;
                    }
                }
                b']' | b'}' => {
                    depth = depth.saturating_sub(1);
                    if depth == 1 {
                        array = None;
                    }
                }
                b',' if depth == 2 => element_next = true,
                b',' if depth == 1 => key = None,
                _ => {}
            }
        }
        ElementPositions { members }
    }

    /// The positions of `member`'s elements, taken out.
    fn take(&mut self, member: &str) -> Vec<(u64, u64)> {
        (self.members.iter_mut())
            .find(|(name, _)| name == member)
            .map(|(_, positions)| std::mem::take(positions))
            .unwrap_or_default()
    }
}

/// A key as its raw text between quotes, escapes decoded (`"ph\u006fnes"`
/// is the member `phones` to serde too).
fn unescape(raw: &str) -> String {
    if !raw.contains('\\') {
        return raw.to_string();
    }
    serde_json::from_str(&format!("\"{raw}\"")).unwrap_or_default()
}

pub(super) fn plan(file: &Arc<Path>, text: &str, plan: &mut ImportPlan, phones: &mut Phones) {
    let parsed: JsonFile = match serde_json::from_str(text) {
        Ok(p) => p,
        Err(e) => {
            plan.whole_file_error(ImportError {
                location: Location {
                    file: file.clone(),
                    line: e.line() as u64,
                    column: e.column() as u64,
                    field: None,
                },
                message: strip_position(&e.to_string()),
            });
            return;
        }
    };
    let loc = |member: &str, positions: &[(u64, u64)], index: usize| {
        let (line, column) = positions.get(index).copied().unwrap_or((0, 0));
        Location {
            file: file.clone(),
            line,
            column,
            field: Some(format!("{member}[{index}]")),
        }
    };
    let mut positions = ElementPositions::read(text);
    let tenant_pos = positions.take("tenants");
    for (i, t) in parsed.tenants.into_iter().enumerate() {
        plan.items.push((
            Mutation::UpsertTenant(TenantInput {
                slug: t.slug,
                name: t.name,
                default_region: t.default_region,
                settings: t.settings,
            }),
            loc("tenants", &tenant_pos, i),
        ));
    }
    let phone_pos = positions.take("phones");
    let source = phones.json_file(file, phone_pos.clone());
    for (i, p) in parsed.phones.into_iter().enumerate() {
        let phone = PhoneInput {
            tenant: p.tenant,
            mac: p.mac,
            family: p.family,
            model: opt(p.model),
            label: opt(p.label),
            variables: p.variables,
            http_user: opt(p.http_user),
            http_password: p.http_password.filter(|p| !p.is_empty()),
            lines: p.lines.into_iter().map(line_input).collect(),
        };
        if let Some(field) = phone.nul_field() {
            let mut location = loc("phones", &phone_pos, i);
            location.field = Some(format!("phones[{i}] {field}"));
            plan.errors.push(ImportError {
                location,
                message: crate::model::NUL_TEXT.into(),
            });
            continue;
        }
        if phones.add_input(&phone, source, i as u64).is_none() {
            plan.errors.push(ImportError {
                location: loc("phones", &phone_pos, i),
                message: "too many phones in one file".into(),
            });
        }
    }
    let dir_pos = positions.take("directory");
    for (i, d) in parsed.directory.into_iter().enumerate() {
        let location = loc("directory", &dir_pos, i);
        let numbers = d
            .numbers
            .into_iter()
            .map(|n| DirectoryNumber {
                number: n.number.into(),
                kind: n.kind.into(),
            })
            .collect();
        match check_numbers(numbers) {
            Ok(numbers) => plan.items.push((
                Mutation::UpsertDirectoryEntry(DirectoryEntryInput {
                    tenant: d.tenant,
                    external_id: external_id_or_name(d.external_id, &d.name),
                    name: d.name,
                    company: opt(d.company),
                    numbers,
                }),
                location,
            )),
            Err(message) => plan.errors.push(ImportError { location, message }),
        }
    }
    let source_pos = positions.take("directory_sources");
    for (i, d) in parsed.directory_sources.into_iter().enumerate() {
        let location = loc("directory_sources", &source_pos, i);
        if d.timeout_ms <= 0 {
            plan.errors.push(ImportError {
                location,
                message: "timeout_ms must be positive".into(),
            });
            continue;
        }
        plan.items.push((
            Mutation::UpsertDirectorySource(DirectorySourceInput {
                tenant: d.tenant,
                name: d.name,
                kind: d.kind,
                priority: d.priority,
                enabled: d.enabled,
                settings: d.settings,
                secret: d.secret,
                timeout_ms: d.timeout_ms,
            }),
            location,
        ));
    }
}
