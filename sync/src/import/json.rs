//! The JSON import format: one document with `tenants`, `phones`,
//! `directory`, `directory_sources` and `templates` arrays. Values are checked while parsing, so serde_json
//! reports the line and column of the bad value itself.

use std::path::Path;
use std::sync::Arc;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::*;
use crate::checks::{self, EntryField, LineText, PhoneText, Refused};
use crate::store::{DirectoryEntryInput, DirectorySourceInput, LineInput, PhoneInput, TenantInput};
use positions::ElementPositions;
use templates::JsonTemplate;

mod positions;
pub mod templates;

/// The document's members but its phones, which are packed as they are
/// read ([`PhoneSink`]): held as parsed structs, a million phones took
/// over a gigabyte, seven times their file.
#[derive(Default)]
struct JsonRest {
    tenants: Vec<JsonTenant>,
    directory: Vec<JsonDirectoryEntry>,
    directory_sources: Vec<JsonSource>,
    templates: Vec<JsonTemplate>,
}

const MEMBERS: &[&str] = &[
    "tenants",
    "phones",
    "directory",
    "directory_sources",
    "templates",
];

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
    de_with(d, |s| Mac::parse_new(&s).map_err(|e| e.to_string()))
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
fn de_given_region<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    de_region(d).map(Some)
}
fn de_given_object<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    de_object(d).map(Some)
}

/// `None` for a member left out: a stored tenant keeps what it has there
/// (its settings hold the provisioning networks, which must not reset to
/// "anywhere" on a rename); a new one takes the default. An explicit
/// `null` or `{}` is given, and replaces.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonTenant {
    #[serde(deserialize_with = "de_slug")]
    slug: String,
    #[serde(deserialize_with = "de_required")]
    name: String,
    #[serde(default, deserialize_with = "de_given_region")]
    default_region: Option<String>,
    #[serde(default, deserialize_with = "de_given_object")]
    settings: Option<String>,
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

pub(super) fn plan(file: &Arc<Path>, text: &str, plan: &mut ImportPlan, phones: &mut Phones) {
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
    let phone_pos = positions.take("phones");
    // Address space only, as for CSV: the batch does not grow by copies.
    phones.reserve(phone_pos.len(), text.len());
    let before = phones.len();
    let source = phones.json_file(file, phone_pos);
    let mut sink = PhoneSink {
        source,
        phones,
        read: 0,
        refused: Vec::new(),
    };
    let mut document = serde_json::Deserializer::from_str(text);
    let parsed = (Document { sink: &mut sink })
        .deserialize(&mut document)
        .and_then(|rest| document.end().map(|()| rest));
    let refused = std::mem::take(&mut sink.refused);
    let parsed = match parsed {
        Ok(p) => p,
        Err(e) => {
            // Its phones read before the error go too: the file is refused
            // whole, and they would only be reported again as duplicates.
            phones.forget_since(before);
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
    let tenant_pos = positions.take("tenants");
    let tenants = parsed.tenants;
    for (i, t) in tenants.into_iter().enumerate() {
        let mut location = loc("tenants", &tenant_pos, i);
        let refused = [
            ("name", checks::tenant_name(&t.name)),
            (
                "settings",
                t.settings
                    .as_deref()
                    .map_or(Ok(()), |s| checks::object_depth("settings", s)),
            ),
            (
                "settings",
                t.settings.as_deref().map_or(Ok(()), checks::settings_text),
            ),
        ]
        .into_iter()
        .find_map(|(field, checked)| Some((field, checked.err()?)));
        if let Some((field, message)) = refused {
            location.field = Some(format!("tenants[{i}] {field}"));
            plan.errors.push(ImportError { location, message });
            continue;
        }
        // A member left out keeps what is stored, object by object (a
        // tenants CSV says it once, in its header).
        let kept = TenantKept {
            default_region: t.default_region.is_none(),
            settings: t.settings.is_none(),
        };
        if kept.default_region || kept.settings {
            let at = (location.file.clone(), location.line, location.column);
            plan.tenant_objects.insert(at, kept);
        }
        plan.items.push((
            Mutation::UpsertTenant(TenantInput {
                slug: t.slug,
                name: t.name,
                default_region: t.default_region.unwrap_or_else(default_region),
                settings: t.settings.unwrap_or_else(empty_object),
            }),
            location,
        ));
    }
    for (i, refusal) in refused {
        let mut location = phones.element_location(source, u32::try_from(i).unwrap_or(u32::MAX));
        let message = match refusal {
            Refusal::Nul(field) => {
                location.field = Some(format!("phones[{i}] {field}"));
                crate::model::NUL_TEXT.to_string()
            }
            Refusal::Invalid(refused) => {
                location.field = Some(format!("phones[{i}] {}", refused.field));
                refused.reason
            }
            Refusal::TooMany => "too many phones in one file".into(),
        };
        plan.errors.push(ImportError { location, message });
    }
    let dir_pos = positions.take("directory");
    for (i, d) in parsed.directory.into_iter().enumerate() {
        let mut location = loc("directory", &dir_pos, i);
        let numbers = d
            .numbers
            .into_iter()
            .map(|n| DirectoryNumber {
                number: n.number.into(),
                kind: n.kind.into(),
            })
            .collect();
        if let Some(Err(refused)) = d.external_id.as_deref().map(checks::chosen_external_id) {
            location.field = Some(format!("directory[{i}] external_id"));
            plan.errors.push(ImportError {
                location,
                message: refused.reason,
            });
            continue;
        }
        let entry = DirectoryEntryInput {
            tenant: d.tenant,
            external_id: external_id_or_name(d.external_id, &d.name),
            name: d.name,
            company: opt(d.company),
            numbers: given_numbers(numbers),
        };
        match checks::directory_entry(&entry) {
            Ok(()) => plan
                .items
                .push((Mutation::UpsertDirectoryEntry(entry), location)),
            Err(refused) => {
                // Blank numbers are dropped before the check, so an index
                // into what is left would not name the file's element.
                let field = match refused.field {
                    EntryField::Name => "name",
                    EntryField::Company => "company",
                    EntryField::ExternalId => "external_id",
                    EntryField::Numbers | EntryField::Number(_) => "numbers",
                };
                location.field = Some(format!("directory[{i}] {field}"));
                plan.errors.push(ImportError {
                    location,
                    message: refused.reason,
                });
            }
        }
    }
    let source_pos = positions.take("directory_sources");
    for (i, d) in parsed.directory_sources.into_iter().enumerate() {
        let mut location = loc("directory_sources", &source_pos, i);
        let refused = [
            ("name", checks::source_name(&d.name)),
            ("timeout_ms", checks::source_timeout(d.timeout_ms)),
            ("settings", checks::object_depth("settings", &d.settings)),
        ]
        .into_iter()
        .find_map(|(field, checked)| Some((field, checked.err()?)));
        if let Some((field, message)) = refused {
            location.field = Some(format!("directory_sources[{i}] {field}"));
            plan.errors.push(ImportError { location, message });
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
    let template_pos = positions.take("templates");
    for (i, t) in parsed.templates.into_iter().enumerate() {
        let mut location = loc("templates", &template_pos, i);
        match t.mutation() {
            Ok(mutation) => plan.items.push((mutation, location)),
            Err((field, message)) => {
                location.field = Some(format!("templates[{i}] {field}"));
                plan.errors.push(ImportError { location, message });
            }
        }
    }
}

/// Takes the document's phones one by one into the plan's batch, so no
/// phone is held as a parsed struct past its own element.
struct PhoneSink<'a> {
    phones: &'a mut Phones,
    source: u32,
    /// Elements of `phones` read so far.
    read: usize,
    /// Phones not taken, by element.
    refused: Vec<(usize, Refusal)>,
}

enum Refusal {
    /// A field holding U+0000.
    Nul(String),
    /// A field the admin API would refuse, named as for `Nul`.
    Invalid(Refused<String>),
    TooMany,
}

/// [`crate::checks`] of a whole phone, a field named as
/// [`PhoneInput::nul_field`] names it.
fn check_phone(p: &PhoneInput) -> Result<(), Refused<String>> {
    let named = |prefix: &str, r: Refused| Refused {
        field: format!("{prefix}{}", r.field),
        reason: r.reason,
    };
    let phone = PhoneText {
        model: p.model.as_deref(),
        label: p.label.as_deref(),
        http_user: p.http_user.as_deref(),
        http_password: p.http_password.as_deref(),
    };
    phone.check().map_err(|r| named("", r))?;
    checks::http_login(phone.http_user, phone.http_password).map_err(|r| named("", r))?;
    let deep = |field: &'static str, text: &str| {
        checks::object_depth(field, text).map_err(|reason| Refused { field, reason })
    };
    deep("variables", &p.variables).map_err(|r| named("", r))?;
    for (k, l) in p.lines.iter().enumerate() {
        deep("settings", &l.settings).map_err(|r| named(&format!("line {} ", k + 1), r))?;
    }
    for (k, l) in p.lines.iter().enumerate() {
        let line = LineText {
            extension: &l.extension,
            display_name: Some(&l.display_name),
            auth_user: Some(&l.auth_user),
            password: l.password.as_deref(),
            registrar: &l.registrar,
            proxy: l.proxy.as_deref(),
        };
        line.check()
            .map_err(|r| named(&format!("line {} ", k + 1), r))?;
    }
    Ok(())
}

impl PhoneSink<'_> {
    fn take(&mut self, p: JsonPhone) {
        let i = self.read;
        self.read += 1;
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
            self.refused.push((i, Refusal::Nul(field)));
        } else if let Err(refused) = check_phone(&phone) {
            self.refused.push((i, Refusal::Invalid(refused)));
        } else if self
            .phones
            .add_input(&phone, self.source, i as u64)
            .is_none()
        {
            self.refused.push((i, Refusal::TooMany));
        }
    }
}

/// The root object, as `#[serde(deny_unknown_fields)]` with every member
/// optional would read it, but its `phones` go to the sink.
struct Document<'s, 'a> {
    sink: &'s mut PhoneSink<'a>,
}

impl<'de> DeserializeSeed<'de> for Document<'_, '_> {
    type Value = JsonRest;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<JsonRest, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Document<'_, '_> {
    type Value = JsonRest;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object of tenants, phones, directory, directory_sources and templates")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<JsonRest, A::Error> {
        let mut rest = JsonRest::default();
        let mut seen = [false; MEMBERS.len()];
        while let Some(key) = map.next_key::<String>()? {
            let Some(member) = MEMBERS.iter().position(|m| *m == key) else {
                return Err(de::Error::unknown_field(&key, MEMBERS));
            };
            if std::mem::replace(&mut seen[member], true) {
                return Err(de::Error::duplicate_field(MEMBERS[member]));
            }
            match MEMBERS[member] {
                "tenants" => rest.tenants = map.next_value()?,
                "phones" => map.next_value_seed(PhoneArray(&mut *self.sink))?,
                "directory" => rest.directory = map.next_value()?,
                "directory_sources" => rest.directory_sources = map.next_value()?,
                _ => rest.templates = map.next_value()?,
            }
        }
        Ok(rest)
    }
}

/// The `phones` array, each element into the sink as soon as it is read.
struct PhoneArray<'s, 'a>(&'s mut PhoneSink<'a>);

impl<'de> DeserializeSeed<'de> for PhoneArray<'_, '_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for PhoneArray<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a sequence of phones")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(phone) = seq.next_element::<JsonPhone>()? {
            self.0.take(phone);
        }
        Ok(())
    }
}
