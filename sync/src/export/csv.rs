//! CSV exports: one kind a file, with the import's own columns (the
//! header tells kinds apart), every one written, so a spreadsheet shows
//! them all.

use std::io::Write;

use super::*;
use crate::import::csv::{DIRECTORY_COLUMNS, MAX_LINE, PHONE_COLUMNS, TENANT_COLUMNS};
use crate::import::NUMBER_KINDS;

/// `kind` as a CSV file. Directory sources have no CSV form; an entry
/// with two numbers of one kind, or a kind without a column, has none
/// either, and is refused by name rather than written short.
pub fn write_csv(
    selection: &Selection<'_>,
    key: &SecretKey,
    kind: Kind,
    out: &mut dyn Write,
) -> Result<Exported, SyncError> {
    let mut writer = ::csv::WriterBuilder::new().flexible(false).from_writer(out);
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
    }
    writer.flush().map_err(write_err)?;
    Ok(exported)
}

type Writer<'w> = ::csv::Writer<&'w mut dyn Write>;

fn tenants(
    selection: &Selection<'_>,
    writer: &mut Writer<'_>,
    exported: &mut Exported,
) -> Result<(), SyncError> {
    writer.write_record(TENANT_COLUMNS).map_err(write_err)?;
    for t in &selection.tenants {
        tenant_settings(t, &mut exported.drift)?;
        writer
            .write_record([&*t.slug, &t.name, &t.default_region, &t.settings])
            .map_err(write_err)?;
        exported.tenants += 1;
    }
    Ok(())
}

fn phones(
    selection: &Selection<'_>,
    key: &SecretKey,
    writer: &mut Writer<'_>,
    exported: &mut Exported,
) -> Result<(), SyncError> {
    writer.write_record(PHONE_COLUMNS).map_err(write_err)?;
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
            writer.write_record(row).map_err(write_err)?;
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
            writer.write_record(row).map_err(write_err)?;
        }
        exported.phones += 1;
        exported.lines += lines.len() as u64;
    }
    Ok(())
}

fn directory(
    selection: &Selection<'_>,
    writer: &mut Writer<'_>,
    exported: &mut Exported,
) -> Result<(), SyncError> {
    let header = DIRECTORY_COLUMNS.iter().copied().chain(NUMBER_KINDS);
    writer.write_record(header).map_err(write_err)?;
    for (place, entry) in selection.directory() {
        let tenant = &*selection.tenants[place].slug;
        let whose = || format!("directory entry {:?} of {tenant}", entry.name);
        let mut numbers = [""; NUMBER_KINDS.len()];
        for n in &entry.numbers {
            let column = NUMBER_KINDS.iter().position(|k| *k == &*n.kind);
            match column {
                Some(c) if numbers[c].is_empty() => numbers[c] = &n.number,
                Some(_) => {
                    return Err(SyncError::Export(format!(
                        "{}: two {} numbers, and a CSV row holds one of each kind; export the directory as JSON",
                        whose(),
                        n.kind
                    )))
                }
                None => {
                    return Err(SyncError::Export(format!(
                        "{}: a number of kind {:?}, which has no CSV column; export the directory as JSON",
                        whose(),
                        n.kind
                    )))
                }
            }
        }
        let (external_id, company) = entry_cells(&entry, &mut exported.drift, whose);
        let row = [
            tenant,
            external_id.unwrap_or(""),
            &entry.name,
            company.unwrap_or(""),
        ]
        .into_iter()
        .chain(numbers);
        writer.write_record(row).map_err(write_err)?;
        exported.directory_entries += 1;
    }
    Ok(())
}
