//! Bulk import: CSV and JSON files of tenants, phones with lines, and
//! directory entries, turned into [`Mutation`]s. Every mutation remembers
//! where it came from, so an error names file, line and column. The caller
//! applies them in one transaction.
//!
//! Formats are documented in the README ("Import formats").

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::model::*;
use crate::store::{DirectoryEntryInput, LineInput, Mutation, PhoneInput, TenantInput};

/// Where a mutation came from in its file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    pub file: PathBuf,
    pub line: u64,
    pub column: u64,
    /// The field (CSV header) at fault, when known.
    pub field: Option<String>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)?;
        if let Some(field) = &self.field {
            write!(f, " ({field})")?;
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{location}: {message}")]
pub struct ImportError {
    pub location: Location,
    pub message: String,
}

/// Mutations with their origins, in apply order: tenants, phones, directory.
#[derive(Debug, Default)]
pub struct ImportPlan {
    pub items: Vec<(Mutation, Location)>,
    pub errors: Vec<ImportError>,
}

impl ImportPlan {
    pub fn mutations(&self) -> Vec<Mutation> {
        self.items.iter().map(|(m, _)| m.clone()).collect()
    }

    fn sort(&mut self) {
        let rank = |m: &Mutation| match m {
            Mutation::UpsertTenant(_) => 0,
            Mutation::UpsertPhone(_) => 1,
            Mutation::UpsertDirectoryEntry(_) => 2,
            _ => 3,
        };
        // Stable: file order is kept within each kind.
        self.items.sort_by_key(|(m, _)| rank(m));
    }
}

/// Parses every file. Errors are collected (all of them, so an operator can
/// fix a file in one pass), not returned early.
pub fn plan_files(files: &[PathBuf]) -> ImportPlan {
    let mut plan = ImportPlan::default();
    for file in files {
        let at = |line, column| Location {
            file: file.clone(),
            line,
            column,
            field: None,
        };
        let text = match std::fs::read_to_string(file) {
            Ok(t) => t,
            Err(e) => {
                plan.errors.push(ImportError {
                    location: at(0, 0),
                    message: format!("cannot read: {e}"),
                });
                continue;
            }
        };
        let ext = file
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        match ext.as_str() {
            "json" => plan_json(file, &text, &mut plan),
            "csv" => plan_csv(file, &text, &mut plan),
            other => plan.errors.push(ImportError {
                location: at(0, 0),
                message: format!("unknown file type {other:?}: expected .csv or .json"),
            }),
        }
    }
    check_duplicates(&mut plan);
    plan.sort();
    plan
}

fn check_duplicates(plan: &mut ImportPlan) {
    let mut seen: HashMap<String, Location> = HashMap::new();
    for (m, loc) in &plan.items {
        let key = match m {
            Mutation::UpsertTenant(t) => format!("tenant {:?}", t.slug),
            Mutation::UpsertPhone(p) => format!("phone {}", p.mac),
            Mutation::UpsertDirectoryEntry(d) => {
                format!("directory entry {:?}/{:?}", d.tenant, d.external_id)
            }
            _ => continue,
        };
        if let Some(first) = seen.get(&key) {
            plan.errors.push(ImportError {
                location: loc.clone(),
                message: format!("duplicate {key}, first given at {first}"),
            });
        } else {
            seen.insert(key, loc.clone());
        }
    }
}

// ---- validation shared by both formats ----

fn check_slug(slug: &str) -> Result<String, String> {
    let s = slug.trim();
    if s.is_empty()
        || s.len() > 63
        || !s
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err(format!(
            "tenant slug {slug:?} must be 1-63 of a-z, 0-9 and -"
        ));
    }
    Ok(s.to_string())
}

fn check_region(region: &str) -> Result<String, String> {
    let r = region.trim().to_ascii_uppercase();
    if r.len() != 2 || !r.chars().all(|c| c.is_ascii_uppercase()) {
        return Err(format!(
            "default_region {region:?} must be an ISO 3166 two-letter code such as US or GB"
        ));
    }
    Ok(r)
}

fn check_object(what: &str, value: &serde_json::Value) -> Result<String, String> {
    match value {
        serde_json::Value::Null => Ok("{}".into()),
        serde_json::Value::Object(map) => {
            // serde_json's Map is sorted, so the text is canonical and
            // re-importing the same data compares equal.
            Ok(serde_json::to_string(map).unwrap_or_else(|_| "{}".into()))
        }
        _ => Err(format!("{what} must be a JSON object")),
    }
}

fn non_empty(what: &str, value: &str) -> Result<String, String> {
    let v = value.trim();
    if v.is_empty() {
        Err(format!("{what} is required"))
    } else {
        Ok(v.to_string())
    }
}

fn opt(value: Option<String>) -> Option<String> {
    value
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

const NUMBER_KINDS: [&str; 6] = ["work", "mobile", "home", "fax", "ip_phone", "other"];

fn check_numbers(numbers: Vec<DirectoryNumber>) -> Result<Vec<DirectoryNumber>, String> {
    let numbers: Vec<DirectoryNumber> = numbers
        .into_iter()
        .filter(|n| !n.number.trim().is_empty())
        .map(|n| DirectoryNumber {
            number: n.number.trim().into(),
            kind: n.kind.trim().to_ascii_lowercase().into(),
        })
        .collect();
    if numbers.is_empty() {
        return Err("a directory entry needs at least one number".into());
    }
    for n in &numbers {
        if !n.number.chars().any(|c| c.is_ascii_digit()) {
            return Err(format!("{:?} is not a phone number", n.number));
        }
    }
    Ok(numbers)
}

fn external_id_or_name(external_id: Option<String>, name: &str) -> String {
    // Without an id from the source system, the name is the natural key, so
    // importing the same file twice still updates instead of duplicating.
    opt(external_id).unwrap_or_else(|| format!("name:{}", name.trim().to_lowercase()))
}

// ---- JSON ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonFile {
    #[serde(default)]
    tenants: Vec<JsonTenant>,
    #[serde(default)]
    phones: Vec<JsonPhone>,
    #[serde(default)]
    directory: Vec<JsonDirectoryEntry>,
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

/// Finds the line and column of the `index`-th element of a top-level array
/// member, for errors found after parsing (duplicates, database rejections).
fn element_positions(text: &str, member: &str) -> Vec<(u64, u64)> {
    // A second, lenient pass over the raw text: good enough for positions of
    // well-formed documents, which is all that reaches this point.
    let mut out = Vec::new();
    let needle = format!("\"{member}\"");
    let Some(start) = text.find(&needle) else {
        return out;
    };
    let bytes = text.as_bytes();
    let mut i = start + needle.len();
    while i < bytes.len() && bytes[i] != b'[' {
        i += 1;
    }
    let (mut depth, mut in_str, mut escape) = (0i32, false, false);
    while i < bytes.len() {
        let c = bytes[i];
        if in_str {
            match (escape, c) {
                (true, _) => escape = false,
                (false, b'\\') => escape = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
        } else {
            match c {
                b'"' => in_str = true,
                b'[' | b'{' => {
                    if depth == 1 && c == b'{' {
                        let line = text[..i].matches('\n').count() as u64 + 1;
                        let col = (i - text[..i].rfind('\n').map_or(0, |p| p + 1)) as u64 + 1;
                        out.push((line, col));
                    }
                    depth += 1;
                }
                b']' | b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                _ => {}
            }
        }
        i += 1;
    }
    out
}

fn plan_json(file: &Path, text: &str, plan: &mut ImportPlan) {
    let parsed: JsonFile = match serde_json::from_str(text) {
        Ok(p) => p,
        Err(e) => {
            plan.errors.push(ImportError {
                location: Location {
                    file: file.to_path_buf(),
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
            file: file.to_path_buf(),
            line,
            column,
            field: Some(format!("{member}[{index}]")),
        }
    };
    let tenant_pos = element_positions(text, "tenants");
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
    let phone_pos = element_positions(text, "phones");
    for (i, p) in parsed.phones.into_iter().enumerate() {
        plan.items.push((
            Mutation::UpsertPhone(PhoneInput {
                tenant: p.tenant,
                mac: p.mac,
                family: p.family,
                model: opt(p.model),
                label: opt(p.label),
                variables: p.variables,
                http_user: opt(p.http_user),
                http_password: p.http_password.filter(|p| !p.is_empty()),
                lines: p.lines.into_iter().map(line_input).collect(),
            }),
            loc("phones", &phone_pos, i),
        ));
    }
    let dir_pos = element_positions(text, "directory");
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
}

/// serde_json appends " at line X column Y"; we print the position up front.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

// ---- CSV ----

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CsvKind {
    Tenants,
    Phones,
    Directory,
}

fn csv_kind(headers: &[String]) -> Option<CsvKind> {
    let has = |h: &str| headers.iter().any(|x| x == h);
    if has("mac") {
        Some(CsvKind::Phones)
    } else if has("slug") {
        Some(CsvKind::Tenants)
    } else if has("name") && has("tenant") && NUMBER_KINDS.iter().any(|k| has(k)) {
        Some(CsvKind::Directory)
    } else {
        None
    }
}

const TENANT_COLUMNS: &[&str] = &["slug", "name", "default_region", "settings"];
const PHONE_COLUMNS: &[&str] = &[
    "tenant",
    "mac",
    "family",
    "model",
    "label",
    "variables",
    "http_user",
    "http_password",
    "line",
    "extension",
    "display_name",
    "auth_user",
    "password",
    "registrar",
    "proxy",
    "line_settings",
];
const DIRECTORY_COLUMNS: &[&str] = &["tenant", "external_id", "name", "company"];

struct CsvRow<'a> {
    file: &'a Path,
    headers: &'a [String],
    record: &'a csv::StringRecord,
    line: u64,
}

impl CsvRow<'_> {
    fn get(&self, column: &str) -> String {
        self.headers
            .iter()
            .position(|h| h == column)
            .and_then(|i| self.record.get(i))
            .unwrap_or("")
            .to_string()
    }

    fn location(&self, column: Option<&str>) -> Location {
        let index = column.and_then(|c| self.headers.iter().position(|h| h == c));
        Location {
            file: self.file.to_path_buf(),
            line: self.line,
            column: index.map_or(1, |i| i as u64 + 1),
            field: column.map(str::to_string),
        }
    }

    fn fail(&self, column: &str, message: String) -> ImportError {
        ImportError {
            location: self.location(Some(column)),
            message,
        }
    }

    /// A JSON-object cell; empty means `{}`.
    fn object(&self, column: &str) -> Result<String, ImportError> {
        let raw = self.get(column);
        if raw.trim().is_empty() {
            return Ok("{}".into());
        }
        let value: serde_json::Value = serde_json::from_str(&raw).map_err(|e| {
            self.fail(
                column,
                format!("not valid JSON: {}", strip_position(&e.to_string())),
            )
        })?;
        check_object(column, &value).map_err(|m| self.fail(column, m))
    }
}

fn plan_csv(file: &Path, text: &str, plan: &mut ImportPlan) {
    let at = |line: u64, column: u64, message: String| ImportError {
        location: Location {
            file: file.to_path_buf(),
            line,
            column,
            field: None,
        },
        message,
    };
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::Headers)
        .flexible(false)
        .from_reader(text.as_bytes());
    let headers: Vec<String> = match reader.headers() {
        Ok(h) => h.iter().map(|s| s.trim().to_ascii_lowercase()).collect(),
        Err(e) => {
            return plan
                .errors
                .push(at(1, 1, format!("unreadable header: {e}")))
        }
    };
    let Some(kind) = csv_kind(&headers) else {
        return plan.errors.push(at(
            1,
            1,
            "cannot tell what this CSV holds: a tenants file has a `slug` column, a phones file a `mac` \
             column, a directory file `tenant`, `name` and a number column (work, mobile, home, fax, ip_phone, other)"
                .into(),
        ));
    };
    let known: Vec<&str> = match kind {
        CsvKind::Tenants => TENANT_COLUMNS.to_vec(),
        CsvKind::Phones => PHONE_COLUMNS.to_vec(),
        CsvKind::Directory => DIRECTORY_COLUMNS
            .iter()
            .chain(NUMBER_KINDS.iter())
            .copied()
            .collect(),
    };
    for (i, h) in headers.iter().enumerate() {
        if !known.contains(&h.as_str()) {
            plan.errors.push(at(
                1,
                i as u64 + 1,
                format!(
                    "unknown column {h:?}; expected any of: {}",
                    known.join(", ")
                ),
            ));
        }
    }
    // Phones span several rows (one per line); gather them by MAC first.
    let mut phones: BTreeMap<Mac, PendingPhone> = BTreeMap::new();
    let mut phone_order: Vec<Mac> = Vec::new();
    let mut record = csv::StringRecord::new();
    loop {
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                plan.errors.push(at(line, 1, format!("malformed CSV: {e}")));
                break;
            }
        }
        let line = record.position().map_or(0, |p| p.line());
        if record.iter().all(|f| f.trim().is_empty()) {
            continue;
        }
        let row = CsvRow {
            file,
            headers: &headers,
            record: &record,
            line,
        };
        let result = match kind {
            CsvKind::Tenants => csv_tenant(&row).map(|m| plan.items.push((m, row.location(None)))),
            CsvKind::Directory => csv_directory(&row).map(|m| plan.items.push((m, row.location(None)))),
            CsvKind::Phones => csv_phone(&row).and_then(|(phone, line_input)| {
                let mac = phone.mac;
                match phones.get_mut(&mac) {
                    None => {
                        phone_order.push(mac);
                        phones.insert(mac, (row.location(None), phone, line_input.into_iter().collect()));
                    }
                    Some((_, first, lines)) => {
                        if first.tenant != phone.tenant || first.family != phone.family || first.model != phone.model {
                            return Err(row.fail(
                                "mac",
                                format!("phone {mac} appears again with a different tenant, family or model"),
                            ));
                        }
                        lines.extend(line_input);
                    }
                }
                Ok(())
            }),
        };
        if let Err(e) = result {
            plan.errors.push(e);
        }
    }
    for mac in phone_order {
        let Some((location, mut phone, mut lines)) = phones.remove(&mac) else {
            continue;
        };
        lines.sort_by_key(|(pos, _)| *pos);
        let positions: Vec<i32> = lines.iter().map(|(p, _)| *p).collect();
        if positions
            .iter()
            .enumerate()
            .any(|(i, p)| *p != i as i32 + 1)
        {
            plan.errors.push(ImportError {
                location,
                message: format!("phone {mac}: line numbers must run 1, 2, 3... without gaps or repeats, got {positions:?}"),
            });
            continue;
        }
        phone.lines = lines.into_iter().map(|(_, l)| l).collect();
        plan.items.push((Mutation::UpsertPhone(phone), location));
    }
}

fn csv_tenant(row: &CsvRow) -> Result<Mutation, ImportError> {
    let region = row.get("default_region");
    Ok(Mutation::UpsertTenant(TenantInput {
        slug: check_slug(&row.get("slug")).map_err(|m| row.fail("slug", m))?,
        name: non_empty("name", &row.get("name")).map_err(|m| row.fail("name", m))?,
        default_region: if region.trim().is_empty() {
            default_region()
        } else {
            check_region(&region).map_err(|m| row.fail("default_region", m))?
        },
        settings: row.object("settings")?,
    }))
}

/// A CSV row of a phones file: the phone, and the line it carries if any.
type PhoneRow = (PhoneInput, Option<(i32, LineInput)>);

/// A phone gathered from its rows: where it first appeared, and its lines by position.
type PendingPhone = (Location, PhoneInput, Vec<(i32, LineInput)>);

fn csv_phone(row: &CsvRow) -> Result<PhoneRow, ImportError> {
    let phone = PhoneInput {
        tenant: check_slug(&row.get("tenant")).map_err(|m| row.fail("tenant", m))?,
        mac: row
            .get("mac")
            .parse()
            .map_err(|e: crate::SyncError| row.fail("mac", e.to_string()))?,
        family: row
            .get("family")
            .parse()
            .map_err(|e: crate::SyncError| row.fail("family", e.to_string()))?,
        model: opt(Some(row.get("model"))),
        label: opt(Some(row.get("label"))),
        variables: row.object("variables")?,
        http_user: opt(Some(row.get("http_user"))),
        http_password: opt(Some(row.get("http_password"))),
        lines: Vec::new(),
    };
    let extension = row.get("extension").trim().to_string();
    if extension.is_empty() {
        return Ok((phone, None));
    }
    let line_text = row.get("line");
    let position: i32 = if line_text.trim().is_empty() {
        1
    } else {
        line_text
            .trim()
            .parse()
            .ok()
            .filter(|p| (1..=128).contains(p))
            .ok_or_else(|| {
                row.fail(
                    "line",
                    format!("line {line_text:?} must be a number from 1 to 128"),
                )
            })?
    };
    let registrar =
        non_empty("registrar", &row.get("registrar")).map_err(|m| row.fail("registrar", m))?;
    let line = LineInput {
        display_name: opt(Some(row.get("display_name"))).unwrap_or_else(|| extension.clone()),
        auth_user: opt(Some(row.get("auth_user"))).unwrap_or_else(|| extension.clone()),
        password: Some(row.get("password")).filter(|p| !p.is_empty()),
        registrar,
        proxy: opt(Some(row.get("proxy"))),
        settings: row.object("line_settings")?,
        extension,
    };
    Ok((phone, Some((position, line))))
}

fn csv_directory(row: &CsvRow) -> Result<Mutation, ImportError> {
    let name = non_empty("name", &row.get("name")).map_err(|m| row.fail("name", m))?;
    let numbers = NUMBER_KINDS
        .iter()
        .map(|kind| DirectoryNumber {
            number: row.get(kind).into(),
            kind: (*kind).into(),
        })
        .collect();
    let first_number_column = NUMBER_KINDS
        .iter()
        .find(|k| row.headers.iter().any(|h| h == *k))
        .copied()
        .unwrap_or("work");
    Ok(Mutation::UpsertDirectoryEntry(DirectoryEntryInput {
        tenant: check_slug(&row.get("tenant")).map_err(|m| row.fail("tenant", m))?,
        external_id: external_id_or_name(Some(row.get("external_id")), &name),
        company: opt(Some(row.get("company"))),
        numbers: check_numbers(numbers).map_err(|m| row.fail(first_number_column, m))?,
        name,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_text(name: &str, text: &str) -> ImportPlan {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        plan_files(&[path])
    }

    #[test]
    fn csv_phones_group_lines_by_mac() {
        let plan = plan_text(
            "phones.csv",
            "tenant,mac,family,model,line,extension,display_name,password,registrar\n\
             acme,00:15:65:aa:bb:01,yealink,T46S,2,102,Reception 2,pw2,sip.example.net\n\
             acme,001565aabb01,yealink,T46S,1,101,Reception,pw1,sip.example.net\n\
             acme,0004f2aabb02,poly,VVX 450,,201,,,sip.example.net\n",
        );
        assert!(plan.errors.is_empty(), "{:?}", plan.errors);
        assert_eq!(plan.items.len(), 2);
        let Mutation::UpsertPhone(p) = &plan.items[0].0 else {
            panic!()
        };
        assert_eq!(p.mac.to_string(), "001565aabb01");
        assert_eq!(p.lines.len(), 2);
        assert_eq!(p.lines[0].extension, "101");
        assert_eq!(p.lines[1].display_name, "Reception 2");
        let Mutation::UpsertPhone(p) = &plan.items[1].0 else {
            panic!()
        };
        assert_eq!(p.lines[0].display_name, "201");
        assert_eq!(p.lines[0].password, None);
    }

    #[test]
    fn csv_bad_mac_names_line_and_column() {
        let plan = plan_text(
            "phones.csv",
            "tenant,mac,family,extension,registrar\nacme,001565aabb01,yealink,101,sip\nacme,00156zzz,yealink,102,sip\n",
        );
        assert_eq!(plan.errors.len(), 1);
        let e = &plan.errors[0];
        assert_eq!((e.location.line, e.location.column), (3, 2));
        assert!(e.to_string().contains("phones.csv:3:2 (mac)"), "{e}");
        assert!(e.message.contains("not a MAC"), "{e}");
    }

    #[test]
    fn json_bad_value_names_line_and_column() {
        let plan = plan_text(
            "data.json",
            "{\n  \"tenants\": [{\"slug\": \"acme\", \"name\": \"Acme\"}],\n  \"phones\": [\n    {\"tenant\": \"acme\", \"mac\": \"nope\", \"family\": \"snom\"}\n  ]\n}\n",
        );
        assert_eq!(plan.errors.len(), 1, "{:?}", plan.errors);
        let e = &plan.errors[0];
        assert_eq!(e.location.line, 4);
        assert!(e.location.column > 20, "{e}");
        assert!(e.message.contains("not a MAC"), "{e}");
    }

    #[test]
    fn json_positions_and_order() {
        let plan = plan_text(
            "data.json",
            "{\"phones\": [\n {\"tenant\": \"acme\", \"mac\": \"0004132a0001\", \"family\": \"snom\", \"lines\": [{\"extension\": \"1\", \"registrar\": \"r\"}]}\n],\n\"tenants\": [\n {\"slug\": \"acme\", \"name\": \"Acme\", \"default_region\": \"gb\"}\n],\n\"directory\": [{\"tenant\": \"acme\", \"name\": \"Bob\", \"numbers\": [{\"number\": \"+1 (555) 010-1234\"}]}]}",
        );
        assert!(plan.errors.is_empty(), "{:?}", plan.errors);
        assert!(matches!(&plan.items[0].0, Mutation::UpsertTenant(t) if t.default_region == "GB"));
        assert_eq!(plan.items[1].1.line, 2);
        assert!(
            matches!(&plan.items[2].0, Mutation::UpsertDirectoryEntry(d) if d.external_id == "name:bob")
        );
    }

    #[test]
    fn duplicates_and_unknown_columns_are_errors() {
        let plan = plan_text(
            "t.csv",
            "slug,name,colour\nacme,Acme,red\nacme,Acme again,blue\n",
        );
        let text: Vec<String> = plan.errors.iter().map(|e| e.to_string()).collect();
        assert!(
            text.iter().any(|e| e.contains("unknown column \"colour\"")),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|e| e.contains("duplicate tenant") && e.contains("t.csv:3")),
            "{text:?}"
        );
    }

    #[test]
    fn directory_csv_collects_number_columns() {
        let plan = plan_text(
            "dir.csv",
            "tenant,external_id,name,company,work,mobile\nacme,42,Alice,Acme,555.010.1234,\nacme,,Bob,,,\n",
        );
        assert_eq!(plan.errors.len(), 1);
        assert!(plan.errors[0].message.contains("at least one number"));
        let Mutation::UpsertDirectoryEntry(d) = &plan.items[0].0 else {
            panic!()
        };
        assert_eq!(d.numbers.len(), 1);
        assert_eq!(&*d.numbers[0].kind, "work");
    }
}
