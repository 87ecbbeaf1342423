//! The CSV import formats: one kind per file, told apart by its header.
//! Phones take one row per line, gathered by MAC.

use std::path::Path;
use std::sync::Arc;

use super::*;
use crate::checks::{self, EntryField, LineText, PhoneText};
use crate::model::trim;
use crate::store::{DirectoryEntryInput, Kept, LineRef, PhoneFields, TenantInput};
use objects::Objects;
use read::{read_ahead, Lines, ReadAhead};

mod objects;
mod read;

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

/// Why a header names no kind of file. A spreadsheet set to a locale
/// whose decimal mark is the comma separates cells by `;`, and its tab
/// delimited text by tabs: the header is then one cell, whatever columns
/// are in it, and naming the columns a kind needs would mislead.
fn unknown_kind(headers: &[String]) -> String {
    let separator = match headers {
        [one] if one.contains(';') => Some("semicolons (;)"),
        [one] if one.contains('\t') => Some("tabs"),
        _ => None,
    };
    match separator {
        Some(separator) => format!(
            "the file's cells are separated by {separator}, not commas: save it as \
             comma-separated \"CSV UTF-8\""
        ),
        None => "cannot tell what this CSV holds: a tenants file has a `slug` column, a phones file a `mac` \
                 column, a directory file `tenant`, `name` and a number column (work, mobile, home, fax, ip_phone, other)"
            .into(),
    }
}

/// The fewest bytes a phone's CSV row takes (`t,001565000001,snom` and its
/// newline): the rows reserved for a file are no more than its bytes allow.
const MIN_PHONE_ROW_BYTES: usize = 20;

pub(crate) const TENANT_COLUMNS: &[&str] = &["slug", "name", "default_region", "settings"];
/// A column of any kind, its cells empty: the export's mark that a cell
/// beginning with `'` then `=`, `+`, `-`, `@`, `'`, a tab or a CR was
/// escaped for spreadsheets ([`crate::export::formula`]) and loses that
/// `'`. Without it every cell is read as written.
pub(crate) const ESCAPED_COLUMN: &str = "formulas_escaped";
pub(crate) const PHONE_COLUMNS: &[&str] = &[
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
pub(crate) const DIRECTORY_COLUMNS: &[&str] = &["tenant", "external_id", "name", "company"];

/// The highest line number a CSV row may give (JSON has no such bound).
pub const MAX_LINE: u32 = 128;

/// Indexes into [`PHONE_COLUMNS`]: a phones file's cells are found through
/// positions resolved once per file (by name, a row's fourteen lookups were
/// a fifth of the parse).
mod phone_column {
    pub const TENANT: usize = 0;
    pub const MAC: usize = 1;
    pub const FAMILY: usize = 2;
    pub const MODEL: usize = 3;
    pub const LABEL: usize = 4;
    pub const VARIABLES: usize = 5;
    pub const HTTP_USER: usize = 6;
    pub const HTTP_PASSWORD: usize = 7;
    pub const LINE: usize = 8;
    pub const EXTENSION: usize = 9;
    pub const DISPLAY_NAME: usize = 10;
    pub const AUTH_USER: usize = 11;
    pub const PASSWORD: usize = 12;
    pub const REGISTRAR: usize = 13;
    pub const PROXY: usize = 14;
    pub const LINE_SETTINGS: usize = 15;
}

struct CsvRow<'a> {
    file: &'a Arc<Path>,
    headers: &'a [String],
    /// Per entry of [`PHONE_COLUMNS`], its position in the record.
    phone_cells: &'a [Option<usize>],
    /// A phones file's columns left out, kept as stored.
    kept: Kept,
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

    /// The cell of [`PHONE_COLUMNS`]`[column]` (see [`phone_column`]).
    fn phone_cell(&self, column: usize) -> &str {
        self.phone_cells[column]
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

    /// The first cell holding U+0000, refused: PostgreSQL cannot store it
    /// in text, and SQLite would cut it short wherever a C string is made
    /// of it; the same file imports the same way into either.
    fn nul_cell(&self) -> ImportError {
        let index = (self.record.iter())
            .position(|cell| cell.contains('\0'))
            .unwrap_or(0);
        ImportError {
            location: Location {
                file: self.file.clone(),
                line: self.line,
                column: index as u64 + 1,
                field: self.headers.get(index).cloned(),
            },
            message: crate::model::NUL_TEXT.into(),
        }
    }

    fn fail(&self, column: &str, message: String) -> ImportError {
        ImportError {
            location: self.location(Some(column)),
            message,
        }
    }

    /// A JSON-object cell (`raw`, of `column`); empty means `{}`.
    fn object(&self, column: &str, raw: &str) -> Result<String, ImportError> {
        if raw.trim().is_empty() {
            return Ok("{}".into());
        }
        let value: serde_json::Value = serde_json::from_str(raw).map_err(|e| {
            self.fail(
                column,
                format!("not valid JSON: {}", strip_position(&e.to_string())),
            )
        })?;
        let text = check_object(column, &value).map_err(|m| self.fail(column, m))?;
        checks::object_depth(column, &text).map_err(|m| self.fail(column, m))?;
        Ok(text)
    }
}

/// Reads `input` as it goes: a file is never held whole in memory.
/// `size` (its line breaks, at least its records less one, and its bytes)
/// sizes the plan up front. Phones go to `phones`, a row at a time.
pub(super) fn plan(
    file: &Arc<Path>,
    input: impl std::io::Read + Send,
    size: (usize, usize),
    plan: &mut ImportPlan,
    phones: &mut Phones,
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
        .from_reader(Lines::new(input));
    // Its first cell as bytes: text in UTF-16 is not a header csv could
    // read, and its parser's complaint would not say why.
    if (reader.byte_headers().ok())
        .and_then(|h| h.get(0))
        .is_some_and(input::utf16)
    {
        return plan.whole_file_error(at(1, 1, input::UTF16.into()));
    }
    let headers: Vec<String> = match reader.headers() {
        Ok(h) => h.iter().map(|s| s.trim().to_ascii_lowercase()).collect(),
        Err(e) => return plan.whole_file_error(at(1, 1, format!("unreadable header: {e}"))),
    };
    let Some(kind) = csv_kind(&headers) else {
        return plan.whole_file_error(at(1, 1, unknown_kind(&headers)));
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
        // A second copy would be read as the first, its cells dropped.
        if headers[..i].contains(h) {
            plan.whole_file_error(at(1, i as u64 + 1, format!("column {h:?} is given twice")));
        } else if h != ESCAPED_COLUMN && !known.contains(&h.as_str()) {
            plan.whole_file_error(at(
                1,
                i as u64 + 1,
                format!(
                    "unknown column {h:?}; expected any of: {}",
                    known.join(", ")
                ),
            ));
        }
    }
    // A file of blank lines must not ask for more memory than the machine
    // has, which aborts rather than fails.
    let rows = size.0 + 1;
    let source = if kind == CsvKind::Phones {
        // A phone's text takes about its row's bytes; the reservation is
        // address space, touched only as it fills.
        phones.reserve(
            rows.min(size.1 / MIN_PHONE_ROW_BYTES + 1),
            size.1 + size.1 / 4,
        );
        phones.csv_file(file, &headers)
    } else {
        // Only a head start: past what can be had, rows grow as they come.
        let _ = plan.items.try_reserve(rows);
        0
    };
    let phone_cells: Vec<Option<usize>> = PHONE_COLUMNS
        .iter()
        .map(|c| headers.iter().position(|h| h == c))
        .collect();
    if kind == CsvKind::Tenants {
        let kept = TenantKept {
            default_region: !headers.iter().any(|h| h == "default_region"),
            settings: !headers.iter().any(|h| h == "settings"),
        };
        if kept.default_region || kept.settings {
            plan.tenant_files.push((file.clone(), kept));
        }
    }
    let kept = if kind == CsvKind::Phones {
        let kept = kept_columns(&phone_cells);
        if let Some(line_column) = lines_without_extension(&phone_cells, kept) {
            plan.whole_file_error(at(
                1,
                line_column as u64 + 1,
                format!(
                    "column {:?} needs the `extension` column: a phones file without it leaves \
                     every phone's lines as they are",
                    headers[line_column]
                ),
            ));
        }
        kept
    } else {
        Kept::NONE
    };
    // csv's tokenizing and the line count run on a thread of their own,
    // a batch of records ahead; the checks and the packing of each row run
    // here: the two halves of the parse on two cores.
    let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<ReadAhead>(2);
    let (empty_tx, empty_rx) = std::sync::mpsc::channel::<Vec<(::csv::StringRecord, u64)>>();
    let mac_cell = (kind == CsvKind::Phones)
        .then_some(phone_cells[phone_column::MAC])
        .flatten();
    let mut objects = Objects::default();
    std::thread::scope(|scope| {
        let escaped = headers.iter().any(|h| h == ESCAPED_COLUMN);
        scope.spawn(move || read_ahead(reader, mac_cell, escaped, &full_tx, &empty_rx));
        for ReadAhead {
            records,
            filled,
            malformed,
            failed,
        } in full_rx
        {
            // Good records up to each malformed one, then it: errors stay
            // in file order, and a batch without one is a single run.
            let mut from = 0;
            for bad in malformed.into_iter().map(Some).chain([None]) {
                let to = bad.as_ref().map_or(filled, |b| b.before);
                for (record, line) in &records[from..to] {
                    let row = CsvRow {
                        file,
                        headers: &headers,
                        phone_cells: &phone_cells,
                        kept,
                        record,
                        line: *line,
                    };
                    let result = match kind {
                        _ if memchr::memchr(0, record.as_slice().as_bytes()).is_some() => {
                            Err(row.nul_cell())
                        }
                        CsvKind::Tenants => {
                            csv_tenant(&row).map(|m| plan.items.push((m, row.location(None))))
                        }
                        CsvKind::Directory => {
                            csv_directory(&row).map(|m| plan.items.push((m, row.location(None))))
                        }
                        CsvKind::Phones => csv_phone(&row, phones, source, &mut objects),
                    };
                    if let Err(e) = result {
                        if kind == CsvKind::Phones {
                            if let Ok(mac) = row.phone_cell(phone_column::MAC).parse() {
                                phones.invalid_row(mac, source, row.line);
                            }
                        }
                        plan.errors.push(e);
                    }
                }
                from = to;
                let Some(bad) = bad else { break };
                if let Some(mac) = bad.mac {
                    phones.invalid_row(mac, source, bad.line);
                }
                plan.errors.push(ImportError {
                    location: Location {
                        file: file.clone(),
                        line: bad.line,
                        column: bad.cell.map_or(1, |c| c as u64 + 1),
                        field: bad.cell.and_then(|c| headers.get(c).cloned()),
                    },
                    message: bad.message,
                });
            }
            if let Some((line, message)) = failed {
                plan.whole_file_error(at(line, 1, message));
            }
            // The reader may have stopped: then the batch is simply dropped.
            let _ = empty_tx.send(records);
        }
    });
}

/// The fields a phones file's header leaves out, which its phones keep as
/// stored (a new phone or line takes the default). Without `extension` a
/// file gives no lines, so every phone keeps its line list.
fn kept_columns(phone_cells: &[Option<usize>]) -> Kept {
    use phone_column::*;
    [
        (MODEL, Kept::MODEL),
        (LABEL, Kept::LABEL),
        (VARIABLES, Kept::VARIABLES),
        (HTTP_USER, Kept::HTTP_USER),
        (HTTP_PASSWORD, Kept::HTTP_PASSWORD),
        (EXTENSION, Kept::LINES),
        (DISPLAY_NAME, Kept::DISPLAY_NAME),
        (AUTH_USER, Kept::AUTH_USER),
        (PASSWORD, Kept::PASSWORD),
        (PROXY, Kept::PROXY),
        (LINE_SETTINGS, Kept::LINE_SETTINGS),
    ]
    .into_iter()
    .filter(|&(column, _)| phone_cells[column].is_none())
    .fold(Kept::NONE, |kept, (_, field)| kept | field)
}

/// A line's column in a file that keeps every phone's lines: its cells
/// would be dropped silently.
fn lines_without_extension(phone_cells: &[Option<usize>], kept: Kept) -> Option<usize> {
    use phone_column::*;
    if !kept.contains(Kept::LINES) {
        return None;
    }
    [
        LINE,
        DISPLAY_NAME,
        AUTH_USER,
        PASSWORD,
        REGISTRAR,
        PROXY,
        LINE_SETTINGS,
    ]
    .into_iter()
    .filter_map(|column| phone_cells[column])
    .min()
}

/// A column the header leaves out reads as empty here, its default: a
/// tenant that exists gets what is stored instead, through
/// [`ImportPlan::keep_stored_tenants`].
fn csv_tenant(row: &CsvRow) -> Result<Mutation, ImportError> {
    let region = row.get("default_region");
    let slug = check_slug(row.get("slug")).map_err(|m| row.fail("slug", m))?;
    let name = non_empty("name", row.get("name")).map_err(|m| row.fail("name", m))?;
    checks::tenant_name(&name).map_err(|m| row.fail("name", m))?;
    Ok(Mutation::UpsertTenant(TenantInput {
        slug,
        name,
        default_region: if region.trim().is_empty() {
            "US".to_string()
        } else {
            check_region(region).map_err(|m| row.fail("default_region", m))?
        },
        settings: {
            let settings = row.object("settings", row.get("settings"))?;
            checks::settings_text(&settings).map_err(|m| row.fail("settings", m))?;
            settings
        },
    }))
}

/// A trimmed cell, `None` when empty, borrowed.
fn trimmed(value: &str) -> Option<&str> {
    let v = trim(value);
    (!v.is_empty()).then_some(v)
}

/// A row of a phones file: its phone, and the line it carries if any,
/// into `phones` (or nothing, if anything in the row is invalid). Later
/// rows of the same MAC are merged into the first by `Phones::finish`.
fn csv_phone(
    row: &CsvRow,
    phones: &mut Phones,
    source: u32,
    objects: &mut Objects,
) -> Result<(), ImportError> {
    let tenant =
        slug_of(row.phone_cell(phone_column::TENANT)).map_err(|m| row.fail("tenant", m))?;
    let mac = crate::model::Mac::parse_new(row.phone_cell(phone_column::MAC))
        .map_err(|e| row.fail("mac", e.to_string()))?;
    let family = row
        .phone_cell(phone_column::FAMILY)
        .parse()
        .map_err(|e: crate::SyncError| row.fail("family", e.to_string()))?;
    let variables = objects.canonical(row, "variables", row.phone_cell(phone_column::VARIABLES))?;
    let extension = trim(row.phone_cell(phone_column::EXTENSION));
    let line = if extension.is_empty() {
        None
    } else {
        let line_text = row.phone_cell(phone_column::LINE);
        let position: u32 = if trim(line_text).is_empty() {
            1
        } else {
            trim(line_text)
                .parse()
                .ok()
                .filter(|p| (1..=MAX_LINE).contains(p))
                .ok_or_else(|| {
                    row.fail(
                        "line",
                        format!("line {line_text:?} must be a number from 1 to {MAX_LINE}"),
                    )
                })?
        };
        let registrar = trim(row.phone_cell(phone_column::REGISTRAR));
        if registrar.is_empty() {
            return Err(row.fail("registrar", "registrar is required".into()));
        }
        let text = LineText {
            extension,
            display_name: trimmed(row.phone_cell(phone_column::DISPLAY_NAME)),
            auth_user: trimmed(row.phone_cell(phone_column::AUTH_USER)),
            password: Some(row.phone_cell(phone_column::PASSWORD)).filter(|p| !p.is_empty()),
            registrar,
            proxy: trimmed(row.phone_cell(phone_column::PROXY)),
        };
        text.check().map_err(|r| row.fail(r.field, r.reason))?;
        Some((
            position,
            text,
            objects.canonical(
                row,
                "line_settings",
                row.phone_cell(phone_column::LINE_SETTINGS),
            )?,
        ))
    };
    let fields = PhoneFields {
        tenant,
        mac,
        family,
        model: trimmed(row.phone_cell(phone_column::MODEL)),
        label: trimmed(row.phone_cell(phone_column::LABEL)),
        variables: &variables,
        http_user: trimmed(row.phone_cell(phone_column::HTTP_USER)),
        // Passwords are taken as written, spaces and all, as the line's is
        // here and both are from JSON and the API.
        http_password: Some(row.phone_cell(phone_column::HTTP_PASSWORD)).filter(|p| !p.is_empty()),
        kept: row.kept,
    };
    let text = PhoneText {
        model: fields.model,
        label: fields.label,
        http_user: fields.http_user,
        http_password: fields.http_password,
    };
    text.check().map_err(|r| row.fail(r.field, r.reason))?;
    // A login half left out keeps its stored half, which the file does not
    // show: only a login given whole is checked here.
    if !row.kept.contains(Kept::HTTP_USER) && !row.kept.contains(Kept::HTTP_PASSWORD) {
        checks::http_login(fields.http_user, fields.http_password)
            .map_err(|r| row.fail(r.field, r.reason))?;
    }
    let phone = phones
        .add(&fields, source, row.line)
        .ok_or_else(|| row.fail("mac", "the file has too many lines".into()))?;
    if let Some((position, text, settings)) = line {
        phones.builder.line(
            phone,
            position,
            &LineRef {
                extension,
                display_name: text.display_name.unwrap_or(extension),
                auth_user: text.auth_user.unwrap_or(extension),
                password: text.password,
                registrar: text.registrar,
                proxy: text.proxy,
                settings: &settings,
                kept: row.kept,
            },
        );
    }
    Ok(())
}

fn csv_directory(row: &CsvRow) -> Result<Mutation, ImportError> {
    let name = non_empty("name", row.get("name")).map_err(|m| row.fail("name", m))?;
    let tenant = check_slug(row.get("tenant")).map_err(|m| row.fail("tenant", m))?;
    let numbers = NUMBER_KINDS
        .iter()
        .map(|kind| DirectoryNumber {
            number: row.get(kind).into(),
            kind: (*kind).into(),
        })
        .collect();
    let external_id = row.get("external_id");
    checks::chosen_external_id(external_id).map_err(|r| row.fail("external_id", r.reason))?;
    let entry = DirectoryEntryInput {
        tenant,
        external_id: external_id_or_name(Some(external_id.to_string()), &name),
        company: opt_str(row.get("company")),
        numbers: given_numbers(numbers),
        name,
    };
    checks::directory_entry(&entry).map_err(|r| {
        let column = match r.field {
            EntryField::Name => "name",
            EntryField::Company => "company",
            // An id made of the name is too long because the name is.
            EntryField::ExternalId if external_id.trim().is_empty() => "name",
            EntryField::ExternalId => "external_id",
            EntryField::Numbers => NUMBER_KINDS
                .iter()
                .find(|k| row.headers.iter().any(|h| h == *k))
                .copied()
                .unwrap_or("work"),
            // A number's kind is the column it was given in.
            EntryField::Number(i) => &entry.numbers[i].kind,
        };
        row.fail(column, r.reason)
    })?;
    Ok(Mutation::UpsertDirectoryEntry(entry))
}
