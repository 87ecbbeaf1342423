//! One CSV row to its mutation, by the file's kind: a tenant, a phone's
//! line (gathered by MAC in `csv.rs`), a directory entry. Each refusal
//! names the row's field.

use super::*;

/// A column the header leaves out reads as empty here, its default: a
/// tenant that exists gets what is stored instead, through
/// [`ImportPlan::keep_stored_tenants`].
pub(super) fn csv_tenant(row: &CsvRow) -> Result<Mutation, ImportError> {
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
pub(super) fn csv_phone(
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

pub(super) fn csv_directory(row: &CsvRow) -> Result<Mutation, ImportError> {
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
