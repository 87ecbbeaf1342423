//! The CSV import formats: one kind per file, told apart by its header.
//! Phones take one row per line, gathered by MAC.

use std::path::Path;
use std::sync::Arc;

use super::*;
use crate::store::{DirectoryEntryInput, LineInput, PhoneInput, TenantInput};

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
    file: &'a Arc<Path>,
    headers: &'a [String],
    record: &'a ::csv::StringRecord,
    line: u64,
}

impl CsvRow<'_> {
    /// The cell, borrowed: a row allocates only what its mutation keeps.
    fn get(&self, column: &str) -> &str {
        self.headers
            .iter()
            .position(|h| h == column)
            .and_then(|i| self.record.get(i))
            .unwrap_or("")
    }

    fn location(&self, column: Option<&str>) -> Location {
        let index = column.and_then(|c| self.headers.iter().position(|h| h == c));
        Location {
            file: self.file.clone(),
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
        let value: serde_json::Value = serde_json::from_str(raw).map_err(|e| {
            self.fail(
                column,
                format!("not valid JSON: {}", strip_position(&e.to_string())),
            )
        })?;
        check_object(column, &value).map_err(|m| self.fail(column, m))
    }
}

/// Reads `input` as it goes: a file is never held whole in memory.
/// `lines` (its line breaks, at least its records less one) sizes the
/// plan up front.
pub(super) fn plan(
    file: &Arc<Path>,
    input: impl std::io::Read,
    lines: usize,
    plan: &mut ImportPlan,
) {
    let at = |line: u64, column: u64, message: String| ImportError {
        location: Location {
            file: file.clone(),
            line,
            column,
            field: None,
        },
        message,
    };
    let mut reader = ::csv::ReaderBuilder::new()
        .trim(::csv::Trim::Headers)
        .flexible(false)
        .from_reader(input);
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
    // Phones span several rows (one per line): a phone goes into the plan
    // at its first row, later rows add lines to it there. Each line's
    // position is kept beside it, in file order, until all rows are read.
    // Sized from the line count: a multi-line phone file over-reserves
    // address space that is never touched.
    let rows = lines + 1;
    plan.items.reserve(rows);
    let phone_rows = if kind == CsvKind::Phones { rows } else { 0 };
    let mut phones: foldhash::HashMap<Mac, usize> =
        foldhash::HashMap::with_capacity_and_hasher(phone_rows, Default::default());
    let mut positions: Vec<(usize, i32)> = Vec::with_capacity(phone_rows);
    let mut record = ::csv::StringRecord::new();
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
            CsvKind::Phones => csv_phone(&row).and_then(|(mut phone, line_input)| {
                let mac = phone.mac;
                match phones.get(&mac) {
                    None => {
                        let item = plan.items.len();
                        phones.insert(mac, item);
                        if let Some((position, line)) = line_input {
                            positions.push((item, position));
                            phone.lines.push(line);
                        }
                        plan.items.push((Mutation::UpsertPhone(phone), row.location(None)));
                    }
                    Some(&item) => {
                        let Mutation::UpsertPhone(first) = &mut plan.items[item].0 else {
                            unreachable!("phones index only phone mutations")
                        };
                        if first.tenant != phone.tenant || first.family != phone.family || first.model != phone.model {
                            return Err(row.fail(
                                "mac",
                                format!("phone {mac} appears again with a different tenant, family or model"),
                            ));
                        }
                        if let Some((position, line)) = line_input {
                            positions.push((item, position));
                            first.lines.push(line);
                        }
                    }
                }
                Ok(())
            }),
        };
        if let Err(e) = result {
            plan.errors.push(e);
        }
    }
    drop(phones);
    order_lines(plan, positions);
}

/// Puts each phone's lines in position order, and drops (with an error)
/// phones whose positions do not run 1, 2, 3... `positions` holds each
/// line's phone (plan index) and position, in the order the lines were
/// added to the phone.
fn order_lines(plan: &mut ImportPlan, mut positions: Vec<(usize, i32)>) {
    // Stable: a phone's lines stay in file order.
    if !positions.is_sorted_by_key(|p| p.0) {
        positions.sort_by_key(|p| p.0);
    }
    let mut dropped: Vec<usize> = Vec::new();
    for group in positions.chunk_by(|a, b| a.0 == b.0) {
        // The usual case: one row per line, in order.
        if group.iter().enumerate().all(|(i, p)| p.1 == i as i32 + 1) {
            continue;
        }
        let item = group[0].0;
        let (Mutation::UpsertPhone(phone), location) = &mut plan.items[item] else {
            continue;
        };
        let mut lines: Vec<(i32, LineInput)> = group
            .iter()
            .map(|p| p.1)
            .zip(phone.lines.drain(..))
            .collect();
        lines.sort_by_key(|(pos, _)| *pos);
        let sorted: Vec<i32> = lines.iter().map(|(p, _)| *p).collect();
        if sorted.iter().enumerate().any(|(i, p)| *p != i as i32 + 1) {
            plan.errors.push(ImportError {
                location: location.clone(),
                message: format!(
                    "phone {}: line numbers must run 1, 2, 3... without gaps or repeats, got {sorted:?}",
                    phone.mac
                ),
            });
            dropped.push(item);
            continue;
        }
        phone.lines = lines.into_iter().map(|(_, l)| l).collect();
    }
    if !dropped.is_empty() {
        let mut index = 0;
        plan.items.retain(|_| {
            index += 1;
            dropped.binary_search(&(index - 1)).is_err()
        });
    }
}

fn csv_tenant(row: &CsvRow) -> Result<Mutation, ImportError> {
    let region = row.get("default_region");
    Ok(Mutation::UpsertTenant(TenantInput {
        slug: check_slug(row.get("slug")).map_err(|m| row.fail("slug", m))?,
        name: non_empty("name", row.get("name")).map_err(|m| row.fail("name", m))?,
        default_region: if region.trim().is_empty() {
            "US".to_string()
        } else {
            check_region(region).map_err(|m| row.fail("default_region", m))?
        },
        settings: row.object("settings")?,
    }))
}

/// A CSV row of a phones file: the phone, and the line it carries if any.
type PhoneRow = (PhoneInput, Option<(i32, LineInput)>);

fn csv_phone(row: &CsvRow) -> Result<PhoneRow, ImportError> {
    let phone = PhoneInput {
        tenant: check_slug(row.get("tenant")).map_err(|m| row.fail("tenant", m))?,
        mac: row
            .get("mac")
            .parse()
            .map_err(|e: crate::SyncError| row.fail("mac", e.to_string()))?,
        family: row
            .get("family")
            .parse()
            .map_err(|e: crate::SyncError| row.fail("family", e.to_string()))?,
        model: opt_str(row.get("model")),
        label: opt_str(row.get("label")),
        variables: row.object("variables")?,
        http_user: opt_str(row.get("http_user")),
        http_password: opt_str(row.get("http_password")),
        lines: Vec::new(),
    };
    let extension = row.get("extension").trim();
    if extension.is_empty() {
        return Ok((phone, None));
    }
    let extension = extension.to_string();
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
        non_empty("registrar", row.get("registrar")).map_err(|m| row.fail("registrar", m))?;
    let line = LineInput {
        display_name: opt_str(row.get("display_name")).unwrap_or_else(|| extension.clone()),
        auth_user: opt_str(row.get("auth_user")).unwrap_or_else(|| extension.clone()),
        password: Some(row.get("password"))
            .filter(|p| !p.is_empty())
            .map(str::to_string),
        registrar,
        proxy: opt_str(row.get("proxy")),
        settings: row.object("line_settings")?,
        extension,
    };
    Ok((phone, Some((position, line))))
}

fn csv_directory(row: &CsvRow) -> Result<Mutation, ImportError> {
    let name = non_empty("name", row.get("name")).map_err(|m| row.fail("name", m))?;
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
        tenant: check_slug(row.get("tenant")).map_err(|m| row.fail("tenant", m))?,
        external_id: external_id_or_name(Some(row.get("external_id").to_string()), &name),
        company: opt_str(row.get("company")),
        numbers: check_numbers(numbers).map_err(|m| row.fail(first_number_column, m))?,
        name,
    }))
}
