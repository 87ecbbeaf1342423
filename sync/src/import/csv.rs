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
mod rows;

use rows::{csv_directory, csv_phone, csv_tenant};

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
