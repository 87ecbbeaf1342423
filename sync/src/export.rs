//! The import formats written back out (`dialtone export`): a fleet's
//! tenants, phones with their lines, directory entries, directory
//! sources and templates (their live bodies), from one mirror state, in a file `dialtone import` reads back
//! to the same rows. Secrets are opened, since an import seals them anew:
//! the file is as secret as the key.
//!
//! The order is fixed (tenants by slug, phones by tenant then MAC,
//! entries and sources by tenant then key, templates by scope, family,
//! key and file), so two exports of the same
//! data are the same bytes and a diff between two shows what changed.

use std::borrow::Cow;
use std::sync::Arc;

use serde_json::value::RawValue;

use crate::crypto::{Purpose, Sealed, SecretKey};
use crate::import::entry_key;
use crate::model::{DirectoryEntry, DirectorySource, Line, Phone, Tenant};
use crate::Id;
use crate::{MirrorState, SyncError};

mod csv;
pub(crate) mod formula;
mod json;
mod templates;

pub use self::csv::write_csv;
pub use self::json::write_json;

/// What an export holds. CSV files hold one kind each; directory sources
/// and templates have no CSV form, as for import.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Tenants,
    Phones,
    Directory,
    DirectorySources,
    Templates,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Tenants,
        Kind::Phones,
        Kind::Directory,
        Kind::DirectorySources,
        Kind::Templates,
    ];
}

/// The tenants an export covers, in slug order, with their rows found in
/// one mirror state.
pub struct Selection<'a> {
    state: &'a MirrorState,
    tenants: Vec<&'a Arc<Tenant>>,
    /// Every tenant, not those named: the family and model templates,
    /// which are no tenant's, go with the platform's export only.
    platform: bool,
}

impl<'a> Selection<'a> {
    /// Every tenant when `slugs` is empty; else those named, each of which
    /// must exist.
    pub fn new(state: &'a MirrorState, slugs: &[String]) -> Result<Selection<'a>, SyncError> {
        let mut tenants: Vec<&Arc<Tenant>> = if slugs.is_empty() {
            state.tenants().collect()
        } else {
            (slugs.iter())
                .map(|slug| {
                    (state.tenant_by_slug(slug))
                        .ok_or_else(|| SyncError::NotFound(format!("tenant {slug:?}")))
                })
                .collect::<Result<_, _>>()?
        };
        tenants.sort_by(|a, b| a.slug.cmp(&b.slug));
        tenants.dedup_by_key(|t| t.id);
        Ok(Selection {
            state,
            tenants,
            platform: slugs.is_empty(),
        })
    }

    fn selected(&self, tenant: Id) -> Option<&'a Arc<Tenant>> {
        self.tenants.iter().copied().find(|t| t.id == tenant)
    }

    /// The selected tenants' phones with their tenant's slug, by tenant
    /// then MAC: each tenant's own phones, not a walk of the platform's.
    fn phones(&self) -> Vec<(&'a str, &'a Arc<Phone>)> {
        let mut phones = Vec::new();
        for tenant in &self.tenants {
            let mut own: Vec<&Arc<Phone>> = self.state.phones_of(tenant.id).collect();
            own.sort_unstable_by_key(|p| p.mac);
            phones.extend(own.into_iter().map(|p| (&*tenant.slug, p)));
        }
        phones
    }

    /// A phone's lines, which the import formats number 1, 2, 3… by
    /// place: a gap (only SQL by hand can leave one) would move them.
    fn lines(&self, phone: &Phone) -> Result<Vec<Arc<Line>>, SyncError> {
        let lines = self.state.lines_of(phone.id);
        if let Some((i, line)) =
            (lines.iter().enumerate()).find(|(i, l)| l.position != *i as i32 + 1)
        {
            return Err(SyncError::Export(format!(
                "phone {}: its line {} is at position {}; the import formats number lines 1, 2, 3…",
                phone.mac,
                i + 1,
                line.position
            )));
        }
        Ok(lines)
    }

    fn directory(&self) -> Result<Vec<(usize, Arc<DirectoryEntry>)>, SyncError> {
        let mut entries = Vec::new();
        for (place, t) in self.tenants.iter().enumerate() {
            let mut of_tenant = self.state.directory_of(t.id);
            of_tenant.sort_by(|a, b| a.external_id.cmp(&b.external_id));
            let keys = (of_tenant.iter()).map(|e| entry_key(e.external_id.as_deref(), &e.name));
            one_row_per_key(&t.slug, "directory entries", keys, |i| {
                match &of_tenant[i].external_id {
                    Some(id) => format!("{id:?}"),
                    None => format!("(no external_id, named {:?})", of_tenant[i].name),
                }
            })?;
            entries.extend(of_tenant.into_iter().map(|e| (place, e)));
        }
        Ok(entries)
    }

    fn sources(&self) -> Result<Vec<(usize, Arc<DirectorySource>)>, SyncError> {
        let mut sources = Vec::new();
        for (place, t) in self.tenants.iter().enumerate() {
            let mut of_tenant = self.state.sources_of(t.id);
            of_tenant.sort_by(|a, b| a.name.cmp(&b.name));
            let keys = (of_tenant.iter()).map(|s| s.name.trim().into());
            one_row_per_key(&t.slug, "directory sources", keys, |i| {
                format!("{:?}", of_tenant[i].name)
            })?;
            sources.extend(of_tenant.into_iter().map(|s| (place, s)));
        }
        Ok(sources)
    }
}

/// Refuses two rows of a tenant that the import would read as one row:
/// it trims keys (and gives an entry without an id its name's), so keys
/// such as ` e1 ` and `e1`, which older versions of the API stored as
/// sent, would make the whole file fail to import as a duplicate, every
/// tenant's rows with it. Better told now than at the restore. `stored`
/// names a row, by its place among `keys`, as it is stored.
fn one_row_per_key<'k>(
    tenant: &str,
    what: &str,
    keys: impl Iterator<Item = Cow<'k, str>>,
    stored: impl Fn(usize) -> String,
) -> Result<(), SyncError> {
    let mut seen: foldhash::HashMap<Cow<'k, str>, usize> = Default::default();
    for (place, key) in keys.enumerate() {
        use std::collections::hash_map::Entry;
        match seen.entry(key) {
            Entry::Vacant(e) => {
                e.insert(place);
            }
            Entry::Occupied(e) => {
                return Err(SyncError::Export(format!(
                    "tenant {tenant}: {what} {} and {} would import as one, {:?} (an import \
                     trims keys), and the file would not import; rename or remove one of them, \
                     then export again",
                    stored(*e.get()),
                    stored(place),
                    e.key()
                )));
            }
        }
    }
    Ok(())
}

/// What was written, and how many values an import would not read back
/// as they are stored.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Exported {
    pub tenants: u64,
    pub phones: u64,
    pub lines: u64,
    pub directory_entries: u64,
    pub directory_sources: u64,
    pub templates: u64,
    pub drift: Drift,
}

/// Values the import formats cannot carry as stored: the import trims
/// text (passwords aside) and reads an empty optional value as none, so a
/// label stored with surrounding spaces through the API comes back
/// trimmed. Counted, with the first one named, so the operator knows a
/// re-import will change them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Drift {
    pub values: u64,
    pub first: Option<String>,
    /// Line passwords an earlier release stored with a character this
    /// release's writes refuse (`checks::not_xml`): counted here, where the
    /// export opens each password anyway, not opened again to be named.
    pub refused_passwords: u64,
    pub first_refused_password: Option<String>,
}

impl Drift {
    fn check(&mut self, value: &str, name: impl FnOnce() -> String) {
        if value.is_empty() || value.trim() != value {
            self.values += 1;
            if self.first.is_none() {
                self.first = Some(name());
            }
        }
    }
}

/// Opens a stored secret, naming the row when the key does not fit.
fn open(
    key: &SecretKey,
    purpose: Purpose,
    sealed: &Option<Sealed>,
    whose: impl FnOnce() -> String,
) -> Result<Option<String>, SyncError> {
    let Some(sealed) = sealed else {
        return Ok(None);
    };
    key.open(purpose, sealed).map(Some).map_err(|_| {
        SyncError::Export(format!(
            "{}: the stored secret does not open with this key (another node's key, or the wrong secrets.key)",
            whose()
        ))
    })
}

/// A stored JSON object's text, written as JSON rather than as a string.
fn object(text: &str, whose: impl FnOnce() -> String) -> Result<&RawValue, SyncError> {
    serde_json::from_str(text)
        .map_err(|e| SyncError::Export(format!("{}: stored text is not JSON ({e})", whose())))
}

/// An entry's optional cells as the import formats give them, its text
/// checked for drift: the key is none when it is the one the import
/// derives from the name (an entry imported without an id), so the import
/// derives it again. A key the import would read otherwise (padded, or
/// none stored at all) would make a second entry, and counts as drift.
fn entry_cells<'e>(
    entry: &'e DirectoryEntry,
    drift: &mut Drift,
    whose: impl Fn() -> String,
) -> (Option<&'e str>, Option<&'e str>) {
    drift.check(&entry.name, || format!("{}: name", whose()));
    for n in &entry.numbers {
        drift.check(&n.number, || format!("{}: number", whose()));
    }
    let derived = entry_key(None, &entry.name);
    let external_id = match entry.external_id.as_deref() {
        Some(id) if id == derived => None,
        Some(id) => optional(drift, Some(id), || format!("{}: external_id", whose())),
        None => {
            drift.check("", || format!("{}: external_id", whose()));
            None
        }
    };
    let company = optional(drift, entry.company.as_deref(), || {
        format!("{}: company", whose())
    });
    (external_id, company)
}

fn write_err(e: impl std::fmt::Display) -> SyncError {
    SyncError::Export(format!("cannot write: {e}"))
}

/// Optional text as the import reads it: absent when empty.
fn optional<'t>(
    drift: &mut Drift,
    value: Option<&'t str>,
    name: impl FnOnce() -> String,
) -> Option<&'t str> {
    let value = value?;
    drift.check(value, name);
    Some(value)
}

/// A tenant's settings as both formats write them, its name checked for
/// drift.
fn tenant_settings<'t>(tenant: &'t Tenant, drift: &mut Drift) -> Result<&'t RawValue, SyncError> {
    drift.check(&tenant.name, || format!("tenant {}: name", tenant.slug));
    object(&tenant.settings, || format!("tenant {}", tenant.slug))
}

/// A phone's own values as both formats write them: text checked for
/// drift, the HTTP password opened, variables checked as JSON.
struct PhoneCells<'p> {
    model: Option<&'p str>,
    label: Option<&'p str>,
    variables: &'p RawValue,
    http_user: Option<&'p str>,
    http_password: Option<String>,
}

fn phone_cells<'p>(
    phone: &'p Phone,
    mac: &str,
    key: &SecretKey,
    drift: &mut Drift,
) -> Result<PhoneCells<'p>, SyncError> {
    let whose = || format!("phone {mac}");
    let field = |name: &str| format!("{}: {name}", whose());
    Ok(PhoneCells {
        model: optional(drift, phone.model.as_deref(), || field("model")),
        label: optional(drift, phone.label.as_deref(), || field("label")),
        variables: object(&phone.variables, whose)?,
        http_user: optional(drift, phone.http_user.as_deref(), || field("http_user")),
        http_password: open(
            key,
            Purpose::DeviceHttpPassword,
            &phone.http_password,
            whose,
        )?,
    })
}

/// A line's values as both formats write them, likewise.
struct LineCells<'l> {
    password: Option<String>,
    proxy: Option<&'l str>,
    settings: &'l RawValue,
}

fn line_cells<'l>(
    line: &'l Line,
    mac: &str,
    key: &SecretKey,
    drift: &mut Drift,
) -> Result<LineCells<'l>, SyncError> {
    let whose = || format!("phone {mac} line {}", line.position);
    let field = |name: &str| format!("{}: {name}", whose());
    drift.check(&line.extension, || field("extension"));
    drift.check(&line.display_name, || field("display_name"));
    drift.check(&line.auth_user, || field("auth_user"));
    drift.check(&line.registrar, || field("registrar"));
    let password = open(key, Purpose::LinePassword, &line.password, whose)?;
    if password
        .as_deref()
        .is_some_and(|p| p.chars().any(crate::checks::not_xml))
    {
        drift.refused_passwords += 1;
        if drift.first_refused_password.is_none() {
            drift.first_refused_password = Some(field("password"));
        }
    }
    Ok(LineCells {
        password,
        proxy: optional(drift, line.proxy.as_deref(), || field("proxy")),
        settings: object(&line.settings, whose)?,
    })
}

/// A line's name or user, left out when it is the extension, which the
/// import takes for either when absent.
fn defaulted<'t>(value: &'t str, line: &Line) -> Option<&'t str> {
    (value != &*line.extension).then_some(value)
}

#[cfg(test)]
mod template_tests;
#[cfg(test)]
mod tests;
