//! Bulk import: CSV and JSON files of tenants, phones with lines,
//! directory entries, and (JSON only) directory sources and templates,
//! turned into [`Mutation`]s. Every mutation remembers
//! where it came from, so an error names file, line and column (`-` is
//! standard input, named `stdin`). The caller applies them in one
//! transaction.
//!
//! Formats are documented in the README ("Import formats").

use std::borrow::Cow;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::model::*;
use crate::store::Mutation;

pub(crate) mod csv;
mod input;
mod json;
mod phones;
mod replace;

pub use json::templates::IMPORTED_BY;

use input::{count_lines, plan_json_bytes, plan_stdin};
pub use phones::PhoneOrigins;
use phones::Phones;

/// Where a mutation came from in its file. The file name is shared by
/// every row of the file (a million phones cost no path each).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    pub file: Arc<Path>,
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

/// Mutations with their origins, in apply order: tenants, phones, directory,
/// sources, templates (a phone's needs its phone, a tenant's its tenant).
/// The phones are one `UpsertPhones` (its location is its first phone's),
/// each phone's origin in `phones`.
#[derive(Debug, Default)]
pub struct ImportPlan {
    pub items: Vec<(Mutation, Location)>,
    pub errors: Vec<ImportError>,
    pub phones: PhoneOrigins,
    /// Of `errors`, those that spoil a whole file: it could not be read
    /// to its end or parsed, or its header is wrong. `--skip-invalid`
    /// skips rows, not files, so any of these stops the import: skipping
    /// one would import the rest of the run without part of its data.
    pub whole_file_errors: usize,
    /// Tenants files whose header leaves out a column, and which.
    tenant_files: Vec<(Arc<Path>, TenantKept)>,
    /// JSON tenant objects that leave out a member, by where they are
    /// (file, line, column), and which: in JSON each object says for
    /// itself.
    tenant_objects: std::collections::HashMap<(Arc<Path>, u64, u64), TenantKept>,
}

/// The columns of a tenants file that its tenants keep as stored.
#[derive(Clone, Copy, Debug)]
struct TenantKept {
    default_region: bool,
    settings: bool,
}

impl ImportPlan {
    pub(crate) fn whole_file_error(&mut self, error: ImportError) {
        self.whole_file_errors += 1;
        self.errors.push(error);
    }

    /// Rows to write, a batch of phones counting each phone (what the
    /// audit row and the progress bar count).
    pub fn changes(&self) -> usize {
        self.items
            .iter()
            .map(|(m, _)| match m {
                Mutation::UpsertPhones(batch) => batch.len(),
                Mutation::Expect { .. } => 0,
                _ => 1,
            })
            .sum()
    }

    /// Whether a tenant of the plan is to keep stored values its file
    /// leaves out: [`ImportPlan::keep_stored_tenants`] wants the stored
    /// tenants then.
    pub fn keeps_stored_tenants(&self) -> bool {
        (!self.tenant_files.is_empty() || !self.tenant_objects.is_empty())
            && (self.items.iter()).any(|(m, _)| matches!(m, Mutation::UpsertTenant(_)))
    }

    /// Gives each tenant whose tenants file leaves out `default_region` or
    /// `settings` what `stored` (a tenant by slug, as stored) holds there;
    /// a tenant not stored keeps the defaults. The store writes a tenant
    /// whole, so what it keeps is read before the write: each tenant that
    /// keeps anything is preceded by an [`Mutation::Expect`] of the row it
    /// was read from, so that a change made meanwhile fails the import
    /// rather than being undone by it.
    pub fn keep_stored_tenants<'t>(&mut self, stored: impl Fn(&str) -> Option<&'t Tenant>) {
        let files = std::mem::take(&mut self.tenant_files);
        let objects = std::mem::take(&mut self.tenant_objects);
        if files.is_empty() && objects.is_empty() {
            return;
        }
        let items = std::mem::take(&mut self.items);
        self.items.reserve(items.len());
        for (mut mutation, location) in items {
            if let Mutation::UpsertTenant(t) = &mut mutation {
                let kept = (files.iter())
                    .find_map(|(f, k)| (*f == location.file).then_some(*k))
                    .or_else(|| {
                        let at = (location.file.clone(), location.line, location.column);
                        objects.get(&at).copied()
                    });
                if let Some((kept, s)) = kept.zip(stored(&t.slug)) {
                    if kept.default_region {
                        t.default_region = s.default_region.to_string();
                    }
                    if kept.settings {
                        t.settings = s.settings.to_string();
                    }
                    let target = crate::store::Target::Tenant {
                        slug: t.slug.clone(),
                    };
                    let expect = Mutation::Expect {
                        target,
                        etag: crate::etag_of(s),
                    };
                    self.items.push((expect, location.clone()));
                }
            }
            self.items.push((mutation, location));
        }
    }

    /// The mutations, leaving the plan without them (a million phones are
    /// not copied).
    pub fn take_mutations(&mut self) -> Vec<Mutation> {
        std::mem::take(&mut self.items)
            .into_iter()
            .map(|(m, _)| m)
            .collect()
    }

    fn sort(&mut self) {
        fn rank(m: &Mutation) -> u8 {
            match m {
                Mutation::UpsertTenant(_) => 0,
                Mutation::UpsertPhone(_) | Mutation::UpsertPhones(_) => 1,
                Mutation::UpsertDirectoryEntry(_) => 2,
                Mutation::UpsertDirectorySource(_) => 3,
                Mutation::UpsertTemplate(_) | Mutation::UpsertTenantTemplate { .. } => 4,
                _ => 5,
            }
        }
        // One file of one kind is already in order: no copy of a million
        // mutations through the merge sort's buffer.
        if self.items.is_sorted_by_key(|(m, _)| rank(m)) {
            return;
        }
        // Stable: file order is kept within each kind.
        self.items.sort_by_key(|(m, _)| rank(m));
    }
}

/// Parses every file. Errors are collected (all of them, so an operator can
/// fix a file in one pass), not returned early.
pub fn plan_files(files: &[PathBuf]) -> ImportPlan {
    let mut plan = ImportPlan::default();
    let mut phones = Phones::default();
    let mut stdin_read = false;
    for path in files {
        let file: Arc<Path> = Arc::from(path.as_path());
        let file = &file;
        let at = |line, column| Location {
            file: file.clone(),
            line,
            column,
            field: None,
        };
        let ext = file
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        let cannot_read = |e: std::io::Error| ImportError {
            location: at(0, 0),
            message: format!("cannot read: {e}"),
        };
        if path.as_os_str() == "-" {
            plan_stdin(&mut plan, &mut phones, &mut stdin_read);
            continue;
        }
        match ext.as_str() {
            "json" => match std::fs::read(path) {
                Ok(bytes) => plan_json_bytes(file, &bytes, &mut plan, &mut phones),
                Err(e) => plan.whole_file_error(cannot_read(e)),
            },
            "csv" => match std::fs::File::open(path).and_then(|f| Ok((count_lines(&f)?, f))) {
                Ok(((lines, bytes), f)) => csv::plan(
                    file,
                    std::io::BufReader::with_capacity(1 << 16, f),
                    (lines, bytes),
                    &mut plan,
                    &mut phones,
                ),
                Err(e) => plan.whole_file_error(cannot_read(e)),
            },
            other => plan.whole_file_error(ImportError {
                location: at(0, 0),
                message: format!("unknown file type {other:?}: expected .csv or .json"),
            }),
        }
    }
    finish(plan, phones)
}

/// The phones into the plan, duplicates reported, kinds in apply order.
fn finish(mut plan: ImportPlan, phones: Phones) -> ImportPlan {
    let (batch, origins) = phones.finish(&mut plan.errors);
    if !batch.is_empty() {
        plan.items
            .push((Mutation::UpsertPhones(batch), origins.location(0)));
    }
    plan.phones = origins;
    check_duplicates(&mut plan);
    plan.sort();
    plan
}

/// Parses one document given whole (the admin API's bulk import) as a
/// file of its kind is: a byte-order mark, UTF-16 and bytes that are not
/// UTF-8 are answered alike. `name` stands in for the file name in error
/// locations.
pub fn plan_bytes(name: &str, json: bool, bytes: &[u8]) -> ImportPlan {
    let mut plan = ImportPlan::default();
    let mut phones = Phones::default();
    let path: Arc<Path> = Arc::from(Path::new(name));
    if json {
        plan_json_bytes(&path, bytes, &mut plan, &mut phones);
    } else {
        let lines = memchr::memchr_iter(b'\n', bytes).count();
        csv::plan(&path, bytes, (lines, bytes.len()), &mut plan, &mut phones);
    }
    finish(plan, phones)
}

/// [`plan_bytes`] of a document already known to be text.
pub fn plan_text(name: &str, json: bool, text: &str) -> ImportPlan {
    plan_bytes(name, json, text.as_bytes())
}

/// Tenants, directory entries and sources given twice (phones are
/// checked as their batch is built). Each later copy is reported and
/// left out, as a phone's is: under `--skip-invalid` the row the error
/// names is the one skipped, not written over the first.
fn check_duplicates(plan: &mut ImportPlan) {
    use std::collections::hash_map::Entry;
    /// Borrowed natural keys.
    #[derive(PartialEq, Eq, Hash)]
    enum Key<'a> {
        Tenant(&'a str),
        Entry(&'a str, &'a str),
        Source(&'a str, &'a str),
        /// Scope, family, key as the file gives it, file pattern.
        Template(TemplateScope, Family, &'a str, &'a str),
    }
    let mut seen: foldhash::HashMap<Key, usize> = Default::default();
    let (mut errors, mut again) = (Vec::new(), Vec::new());
    for (index, (m, loc)) in plan.items.iter().enumerate() {
        let key = match m {
            Mutation::UpsertTenant(t) => Key::Tenant(&t.slug),
            Mutation::UpsertDirectoryEntry(d) => Key::Entry(&d.tenant, &d.external_id),
            Mutation::UpsertDirectorySource(s) => Key::Source(&s.tenant, &s.name),
            Mutation::UpsertTemplate(t) => {
                Key::Template(t.scope, t.family, &t.scope_key, &t.file_pattern)
            }
            Mutation::UpsertTenantTemplate { tenant, template } => Key::Template(
                template.scope,
                template.family,
                match template.scope {
                    TemplateScope::Phone => &template.scope_key,
                    _ => tenant,
                },
                &template.file_pattern,
            ),
            _ => continue,
        };
        let (first, what) = match seen.entry(key) {
            Entry::Occupied(e) => {
                let what = match *e.key() {
                    Key::Tenant(slug) => format!("tenant {slug:?}"),
                    // Two people of one name are common, and neither row
                    // showed the key it was given: say what to do.
                    Key::Entry(tenant, id) => {
                        match id.strip_prefix(crate::checks::GENERATED_ENTRY_KEY_PREFIX) {
                            Some(_) => format!(
                                "directory entry of {tenant:?}: two entries of this name and no \
                             external_id (an entry without one is keyed by its name; give \
                             each an external_id to keep both)"
                            ),
                            None => format!("directory entry {tenant:?}/{id:?}"),
                        }
                    }
                    Key::Source(tenant, name) => format!("directory source {tenant:?}/{name:?}"),
                    Key::Template(scope, family, key, file) => {
                        format!("{scope} template {family}/{key:?}/{file:?}")
                    }
                };
                (*e.get(), what)
            }
            Entry::Vacant(e) => {
                e.insert(index);
                continue;
            }
        };
        errors.push(ImportError {
            location: loc.clone(),
            message: format!("duplicate {what}, first given at {}", plan.items[first].1),
        });
        again.push(index);
    }
    plan.errors.extend(errors);
    if !again.is_empty() {
        let mut index = 0;
        plan.items.retain(|_| {
            index += 1;
            again.binary_search(&(index - 1)).is_err()
        });
    }
}

// ---- validation shared by both formats ----

fn check_slug(slug: &str) -> Result<String, String> {
    slug_of(slug).map(str::to_string)
}

/// [`check_slug`], borrowed: a phones row names its tenant, and the batch
/// keeps a tenant's slug once, not a copy a row.
fn slug_of(slug: &str) -> Result<&str, String> {
    let s = crate::model::trim(slug);
    // As the admin API checks a new tenant's: a leading dash would read
    // as an option on a command line (`--tenant -x`).
    if s.is_empty()
        || s.len() > 63
        || s.starts_with('-')
        || !s
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
    {
        return Err(format!(
            "tenant slug {slug:?} must be 1-63 of a-z, 0-9 and -, not starting with -"
        ));
    }
    Ok(s)
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
    value.as_deref().and_then(opt_str)
}

/// A trimmed cell, `None` when empty.
fn opt_str(value: &str) -> Option<String> {
    let v = value.trim();
    (!v.is_empty()).then(|| v.to_string())
}

pub(crate) const NUMBER_KINDS: [&str; 6] = ["work", "mobile", "home", "fax", "ip_phone", "other"];

/// The numbers given, trimmed, kinds lower-cased; whether they are enough
/// is [`crate::checks::directory_entry`]'s to say.
fn given_numbers(numbers: Vec<DirectoryNumber>) -> Vec<DirectoryNumber> {
    numbers
        .into_iter()
        .filter(|n| !n.number.trim().is_empty())
        .map(|n| DirectoryNumber {
            number: n.number.trim().into(),
            kind: n.kind.trim().to_ascii_lowercase().into(),
        })
        .collect()
}

fn external_id_or_name(external_id: Option<String>, name: &str) -> String {
    entry_key(external_id.as_deref(), name).into_owned()
}

/// The key an import stores a directory entry under: its id trimmed, or
/// without one its name's, so importing the same file twice still updates
/// instead of duplicating. The export reads it to find entries an import
/// would take for one.
pub(crate) fn entry_key<'a>(external_id: Option<&'a str>, name: &str) -> Cow<'a, str> {
    match external_id.map(str::trim).filter(|id| !id.is_empty()) {
        Some(id) => Cow::Borrowed(id),
        None => crate::checks::generated_entry_key(name).into(),
    }
}

/// serde_json appends " at line X column Y"; we print the position up front.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

#[cfg(test)]
mod check_tests;
#[cfg(test)]
mod encoding_tests;
#[cfg(test)]
mod generated_tests;
#[cfg(test)]
mod identity_tests;
#[cfg(test)]
mod tests;
