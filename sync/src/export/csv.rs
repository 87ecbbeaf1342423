//! CSV exports: one kind a file, with the import's own columns (the
//! header tells kinds apart), every one written, so a spreadsheet shows
//! them all. A cell a spreadsheet would run as a formula is escaped
//! ([`super::formula`]), and a last, empty column named
//! [`ESCAPED_COLUMN`] tells the import to undo it: a file written by hand
//! is read as written, its `'`s kept (a password may begin with one).

use std::io::Write;

use super::*;
use crate::import::csv::{
    DIRECTORY_COLUMNS, ESCAPED_COLUMN, MAX_LINE, PHONE_COLUMNS, TENANT_COLUMNS,
};
use crate::import::NUMBER_KINDS;

/// `kind` as a CSV file. Directory sources have no CSV form; an entry
/// with two numbers of one kind, or a kind without a column, has none
/// either, and is refused by name (every such entry) rather than written
/// short.
pub fn write_csv(
    selection: &Selection<'_>,
    key: &SecretKey,
    kind: Kind,
    out: &mut dyn Write,
) -> Result<Exported, SyncError> {
    let writer = ::csv::WriterBuilder::new().flexible(false).from_writer(out);
    let mut writer = Rows(writer);
    let mut exported = Exported::default();
    match kind {
        Kind::Tenants => tenants(selection, &mut writer, &mut exported)?,
        Kind::Phones => phones(selection, key, &mut writer, &mut exported)?,
        Kind::Directory => directory(selection, &mut writer, &mut exported)?,
        Kind::DirectorySources => {
            return Err(SyncError::Export(
                "directory sources have no CSV form; export them as JSON".into(),
            ))
        }
        Kind::Templates => {
            return Err(SyncError::Export(
                "templates have no CSV form; export them as JSON".into(),
            ))
        }
    }
    writer.0.flush().map_err(write_err)?;
    Ok(exported)
}

/// The CSV writer, every cell it writes escaped where a spreadsheet would
/// take it for a formula.
struct Rows<'w>(::csv::Writer<&'w mut dyn Write>);

impl Rows<'_> {
    fn write_header<'c>(
        &mut self,
        names: impl IntoIterator<Item = &'c str>,
    ) -> Result<(), SyncError> {
        let names = names.into_iter().chain([ESCAPED_COLUMN]);
        self.0.write_record(names).map_err(write_err)
    }

    fn write_record<'c>(
        &mut self,
        cells: impl IntoIterator<Item = &'c str>,
    ) -> Result<(), SyncError> {
        let cells = cells.into_iter().map(super::formula::escape);
        self.0
            .write_record(cells.chain([std::borrow::Cow::Borrowed(&b""[..])]))
            .map_err(write_err)
    }
}

fn tenants(
    selection: &Selection<'_>,
    writer: &mut Rows<'_>,
    exported: &mut Exported,
) -> Result<(), SyncError> {
    writer.write_header(TENANT_COLUMNS.iter().copied())?;
    for t in &selection.tenants {
        tenant_settings(t, &mut exported.drift)?;
        writer.write_record([&*t.slug, &t.name, &t.default_region, &t.settings])?;
        exported.tenants += 1;
    }
    Ok(())
}

fn phones(
    selection: &Selection<'_>,
    key: &SecretKey,
    writer: &mut Rows<'_>,
    exported: &mut Exported,
) -> Result<(), SyncError> {
    writer.write_header(PHONE_COLUMNS.iter().copied())?;
    for (tenant, phone) in selection.phones() {
        let mac = phone.mac.to_string();
        let drift = &mut exported.drift;
        let cells = phone_cells(phone, &mac, key, drift)?;
        // Every row repeats the phone's own cells, as the import requires.
        let phone_cells = [
            tenant,
            &mac,
            phone.family.as_str(),
            cells.model.unwrap_or(""),
            cells.label.unwrap_or(""),
            cells.variables.get(),
            cells.http_user.unwrap_or(""),
            cells.http_password.as_deref().unwrap_or(""),
        ];
        let lines = selection.lines(phone)?;
        if let Some(line) = lines.iter().find(|l| l.position as u32 > MAX_LINE) {
            return Err(SyncError::Export(format!(
                "phone {mac} of {tenant} has a line {}, and CSV lines go up to {MAX_LINE}; export it as JSON",
                line.position
            )));
        }
        if lines.is_empty() {
            // A row without an extension is a phone with no line.
            let row = phone_cells.iter().copied().chain([""; 8]);
            writer.write_record(row)?;
        }
        for line in &lines {
            let cells = line_cells(line, &mac, key, drift)?;
            let position = line.position.to_string();
            let line_cells = [
                position.as_str(),
                &line.extension,
                &line.display_name,
                &line.auth_user,
                cells.password.as_deref().unwrap_or(""),
                &line.registrar,
                cells.proxy.unwrap_or(""),
                cells.settings.get(),
            ];
            let row = phone_cells.iter().copied().chain(line_cells);
            writer.write_record(row)?;
        }
        exported.phones += 1;
        exported.lines += lines.len() as u64;
    }
    Ok(())
}

fn directory(
    selection: &Selection<'_>,
    writer: &mut Rows<'_>,
    exported: &mut Exported,
) -> Result<(), SyncError> {
    let header = DIRECTORY_COLUMNS.iter().copied().chain(NUMBER_KINDS);
    writer.write_header(header)?;
    // Every entry a CSV row cannot hold is named, not only the first: a
    // tenant may have made any number of them through the API, and the
    // operator chooses between JSON and leaving tenants out knowing all.
    let mut unwritable = Vec::new();
    for (place, entry) in selection.directory()? {
        let tenant = &*selection.tenants[place].slug;
        let whose = || format!("directory entry {:?} of {tenant}", entry.name);
        let numbers = match numbers_by_column(&entry) {
            Ok(numbers) => numbers,
            Err(why) => {
                unwritable.push(format!("{}: {why}", whose()));
                continue;
            }
        };
        let (external_id, company) = entry_cells(&entry, &mut exported.drift, whose);
        let row = [
            tenant,
            external_id.unwrap_or(""),
            &entry.name,
            company.unwrap_or(""),
        ]
        .into_iter()
        .chain(numbers.map(|n| n.unwrap_or("")));
        writer.write_record(row)?;
        exported.directory_entries += 1;
    }
    if unwritable.is_empty() {
        return Ok(());
    }
    const SHOWN: usize = 10;
    let more = match unwritable.len().saturating_sub(SHOWN) {
        0 => String::new(),
        more => format!("; and {more} more"),
    };
    Err(SyncError::Export(format!(
        "{} directory entries have no CSV form, whose row holds one number of each of the \
         kinds {}: {}{more}; export the directory as JSON (--format json, or a .json file), \
         which carries every number",
        unwritable.len(),
        NUMBER_KINDS.join(", "),
        unwritable[..unwritable.len().min(SHOWN)].join("; "),
    )))
}

/// An entry's numbers in the columns of their kinds, or why a CSV row
/// cannot hold them.
fn numbers_by_column(entry: &DirectoryEntry) -> Result<[Option<&str>; NUMBER_KINDS.len()], String> {
    let mut numbers = [None; NUMBER_KINDS.len()];
    for n in &entry.numbers {
        match NUMBER_KINDS.iter().position(|k| *k == &*n.kind) {
            Some(column) if numbers[column].is_none() => numbers[column] = Some(&*n.number),
            Some(_) => return Err(format!("two {} numbers", n.kind)),
            None => {
                return Err(format!(
                    "a number of kind {:?}, which has no column",
                    n.kind
                ))
            }
        }
    }
    Ok(numbers)
}
