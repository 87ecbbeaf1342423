//! The JSON export: one document, one array element a line, with the
//! import's member and field names; values the import would default
//! (an empty object, an absent name or user) are left out.

use std::io::Write;

use serde::Serialize;
use serde_json::value::RawValue;

use super::*;
use crate::model::TemplateScope;

fn is_empty_object(text: &str) -> bool {
    text == "{}"
}

#[derive(Serialize)]
struct TenantOut<'a> {
    slug: &'a str,
    name: &'a str,
    default_region: &'a str,
    #[serde(skip_serializing_if = "is_empty_raw")]
    settings: &'a RawValue,
}

fn is_empty_raw(raw: &&RawValue) -> bool {
    is_empty_object(raw.get())
}

#[derive(Serialize)]
struct LineOut<'a> {
    extension: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    display_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    auth_user: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    password: Option<String>,
    registrar: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    proxy: Option<&'a str>,
    #[serde(skip_serializing_if = "is_empty_raw")]
    settings: &'a RawValue,
}

#[derive(Serialize)]
struct PhoneOut<'a> {
    tenant: &'a str,
    mac: String,
    family: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    label: Option<&'a str>,
    #[serde(skip_serializing_if = "is_empty_raw")]
    variables: &'a RawValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    http_user: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    http_password: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    lines: Vec<LineOut<'a>>,
}

#[derive(Serialize)]
struct NumberOut<'a> {
    number: &'a str,
    kind: &'a str,
}

#[derive(Serialize)]
struct EntryOut<'a> {
    tenant: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    external_id: Option<&'a str>,
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    company: Option<&'a str>,
    numbers: Vec<NumberOut<'a>>,
}

#[derive(Serialize)]
struct SourceOut<'a> {
    tenant: &'a str,
    name: &'a str,
    kind: &'static str,
    priority: i32,
    enabled: bool,
    timeout_ms: i32,
    settings: &'a RawValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
}

/// A template's key is the member its scope names; `body` is its live
/// version.
#[derive(Serialize)]
struct TemplateOut<'a> {
    scope: &'static str,
    family: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tenant: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mac: Option<&'a str>,
    file_pattern: &'a str,
    body: &'a str,
}

/// One JSON document with the `kinds` asked for, one array element a line.
pub fn write_json(
    selection: &Selection<'_>,
    key: &SecretKey,
    kinds: &[Kind],
    out: &mut dyn Write,
) -> Result<Exported, SyncError> {
    let mut exported = Exported::default();
    out.write_all(b"{").map_err(write_err)?;
    let asked = Kind::ALL.into_iter().filter(|k| kinds.contains(k));
    for (members, kind) in asked.enumerate() {
        let name = match kind {
            Kind::Tenants => "tenants",
            Kind::Phones => "phones",
            Kind::Directory => "directory",
            Kind::DirectorySources => "directory_sources",
            Kind::Templates => "templates",
        };
        let separator = if members == 0 { "" } else { "," };
        write!(out, "{separator}\n\"{name}\": [").map_err(write_err)?;
        let mut array = JsonArray { out, elements: 0 };
        match kind {
            Kind::Tenants => tenants_json(selection, &mut array, &mut exported)?,
            Kind::Phones => phones_json(selection, key, &mut array, &mut exported)?,
            Kind::Directory => directory_json(selection, &mut array, &mut exported)?,
            Kind::DirectorySources => sources_json(selection, key, &mut array, &mut exported)?,
            Kind::Templates => templates_json(selection, &mut array, &mut exported)?,
        }
        let end = if array.elements == 0 { "]" } else { "\n]" };
        out.write_all(end.as_bytes()).map_err(write_err)?;
    }
    out.write_all(b"\n}\n").map_err(write_err)?;
    out.flush().map_err(write_err)?;
    Ok(exported)
}

struct JsonArray<'w> {
    out: &'w mut dyn Write,
    elements: u64,
}

impl JsonArray<'_> {
    fn push(&mut self, element: &impl Serialize) -> Result<(), SyncError> {
        let separator: &[u8] = if self.elements == 0 { b"\n" } else { b",\n" };
        self.out.write_all(separator).map_err(write_err)?;
        serde_json::to_writer(&mut *self.out, element).map_err(write_err)?;
        self.elements += 1;
        Ok(())
    }
}

fn tenants_json(
    selection: &Selection<'_>,
    array: &mut JsonArray<'_>,
    exported: &mut Exported,
) -> Result<(), SyncError> {
    for t in &selection.tenants {
        let settings = tenant_settings(t, &mut exported.drift)?;
        array.push(&TenantOut {
            slug: &t.slug,
            name: &t.name,
            default_region: &t.default_region,
            settings,
        })?;
        exported.tenants += 1;
    }
    Ok(())
}

fn phones_json(
    selection: &Selection<'_>,
    key: &SecretKey,
    array: &mut JsonArray<'_>,
    exported: &mut Exported,
) -> Result<(), SyncError> {
    for (tenant, phone) in selection.phones() {
        let mac = phone.mac.to_string();
        let lines = selection.lines(phone)?;
        let drift = &mut exported.drift;
        let mut lines_out = Vec::with_capacity(lines.len());
        for line in &lines {
            let cells = line_cells(line, &mac, key, drift)?;
            lines_out.push(LineOut {
                extension: &line.extension,
                display_name: defaulted(&line.display_name, line),
                auth_user: defaulted(&line.auth_user, line),
                password: cells.password,
                registrar: &line.registrar,
                proxy: cells.proxy,
                settings: cells.settings,
            });
        }
        let cells = phone_cells(phone, &mac, key, drift)?;
        array.push(&PhoneOut {
            tenant,
            family: phone.family.as_str(),
            model: cells.model,
            label: cells.label,
            variables: cells.variables,
            http_user: cells.http_user,
            http_password: cells.http_password,
            lines: lines_out,
            mac,
        })?;
        exported.phones += 1;
        exported.lines += lines.len() as u64;
    }
    Ok(())
}

fn directory_json(
    selection: &Selection<'_>,
    array: &mut JsonArray<'_>,
    exported: &mut Exported,
) -> Result<(), SyncError> {
    for (place, entry) in selection.directory()? {
        let tenant = &selection.tenants[place].slug;
        let whose = || format!("directory entry {:?} of {tenant}", entry.name);
        let (external_id, company) = entry_cells(&entry, &mut exported.drift, whose);
        array.push(&EntryOut {
            tenant,
            external_id,
            name: &entry.name,
            company,
            numbers: (entry.numbers.iter())
                .map(|n| NumberOut {
                    number: &n.number,
                    kind: &n.kind,
                })
                .collect(),
        })?;
        exported.directory_entries += 1;
    }
    Ok(())
}

fn sources_json(
    selection: &Selection<'_>,
    key: &SecretKey,
    array: &mut JsonArray<'_>,
    exported: &mut Exported,
) -> Result<(), SyncError> {
    for (place, source) in selection.sources()? {
        let tenant = &selection.tenants[place].slug;
        let whose = || format!("directory source {:?} of {tenant}", source.name);
        exported
            .drift
            .check(&source.name, || format!("{}: name", whose()));
        array.push(&SourceOut {
            tenant,
            name: &source.name,
            kind: source.kind.as_str(),
            priority: source.priority,
            enabled: source.enabled,
            timeout_ms: source.timeout_ms,
            settings: object(&source.settings, whose)?,
            secret: open(key, Purpose::SourceSecret, &source.secret, whose)?,
        })?;
        exported.directory_sources += 1;
    }
    Ok(())
}

fn templates_json(
    selection: &Selection<'_>,
    array: &mut JsonArray<'_>,
    exported: &mut Exported,
) -> Result<(), SyncError> {
    for named in selection.templates()? {
        let t = named.template;
        let key = |scope| (t.scope == scope).then_some(&*t.scope_key);
        array.push(&TemplateOut {
            scope: t.scope.as_str(),
            family: t.family.as_str(),
            model: key(TemplateScope::Model),
            tenant: named.tenant,
            mac: key(TemplateScope::Phone),
            file_pattern: &t.file_pattern,
            body: &t.body,
        })?;
        exported.templates += 1;
    }
    Ok(())
}
