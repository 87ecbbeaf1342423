//! Bulk import: CSV and JSON files of tenants, phones with lines, and
//! directory entries, turned into [`Mutation`]s. Every mutation remembers
//! where it came from, so an error names file, line and column. The caller
//! applies them in one transaction.
//!
//! Formats are documented in the README ("Import formats").

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::model::*;
use crate::store::Mutation;

mod csv;
mod json;

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
        fn rank(m: &Mutation) -> u8 {
            match m {
                Mutation::UpsertTenant(_) => 0,
                Mutation::UpsertPhone(_) => 1,
                Mutation::UpsertDirectoryEntry(_) => 2,
                Mutation::UpsertDirectorySource(_) => 3,
                _ => 4,
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
        match ext.as_str() {
            "json" => match std::fs::read_to_string(path) {
                Ok(text) => json::plan(file, &text, &mut plan),
                Err(e) => plan.errors.push(cannot_read(e)),
            },
            "csv" => match std::fs::File::open(path).and_then(|f| Ok((count_lines(&f)?, f))) {
                Ok((lines, f)) => csv::plan(
                    file,
                    std::io::BufReader::with_capacity(1 << 16, f),
                    lines,
                    &mut plan,
                ),
                Err(e) => plan.errors.push(cannot_read(e)),
            },
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

/// Line breaks in `file` (an upper bound of its records), read through
/// once so the plan's vectors and maps are sized before the parse: growing
/// them by doubling copied a million phones' mutations into fresh pages
/// again and again (the copies and their page faults were about a quarter
/// of a re-import's profile). The file is left at its start.
fn count_lines(mut file: &std::fs::File) -> std::io::Result<usize> {
    use std::io::{Read, Seek};
    let mut buf = vec![0u8; 1 << 16];
    let mut lines = 0;
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => lines += buf[..n].iter().filter(|&&b| b == b'\n').count(),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    file.rewind()?;
    Ok(lines)
}

/// Parses one document given as text (the admin API's bulk import); `name`
/// stands in for the file name in error locations.
pub fn plan_text(name: &str, json: bool, text: &str) -> ImportPlan {
    let mut plan = ImportPlan::default();
    let path: Arc<Path> = Arc::from(Path::new(name));
    if json {
        json::plan(&path, text, &mut plan);
    } else {
        let lines = text.bytes().filter(|&b| b == b'\n').count();
        csv::plan(&path, text.as_bytes(), lines, &mut plan);
    }
    check_duplicates(&mut plan);
    plan.sort();
    plan
}

fn check_duplicates(plan: &mut ImportPlan) {
    use std::collections::hash_map::Entry;
    /// Borrowed natural keys: a million phones cost no string per phone.
    #[derive(PartialEq, Eq, Hash)]
    enum Key<'a> {
        Tenant(&'a str),
        Entry(&'a str, &'a str),
        Source(&'a str, &'a str),
    }
    // Phones in a map of their own: 16 bytes a slot instead of the
    // borrowed pairs' 48, for the one kind that comes by the million.
    let mut macs: foldhash::HashMap<Mac, usize> =
        foldhash::HashMap::with_capacity_and_hasher(plan.items.len(), Default::default());
    let mut seen: foldhash::HashMap<Key, usize> = Default::default();
    let mut errors = Vec::new();
    for (index, (m, loc)) in plan.items.iter().enumerate() {
        let first = match m {
            Mutation::UpsertPhone(p) => match macs.entry(p.mac) {
                Entry::Occupied(e) => (*e.get(), format!("phone {}", p.mac)),
                Entry::Vacant(e) => {
                    e.insert(index);
                    continue;
                }
            },
            other => {
                let key = match other {
                    Mutation::UpsertTenant(t) => Key::Tenant(&t.slug),
                    Mutation::UpsertDirectoryEntry(d) => Key::Entry(&d.tenant, &d.external_id),
                    Mutation::UpsertDirectorySource(s) => Key::Source(&s.tenant, &s.name),
                    _ => continue,
                };
                match seen.entry(key) {
                    Entry::Occupied(e) => {
                        let what = match *e.key() {
                            Key::Tenant(slug) => format!("tenant {slug:?}"),
                            Key::Entry(tenant, id) => format!("directory entry {tenant:?}/{id:?}"),
                            Key::Source(tenant, name) => {
                                format!("directory source {tenant:?}/{name:?}")
                            }
                        };
                        (*e.get(), what)
                    }
                    Entry::Vacant(e) => {
                        e.insert(index);
                        continue;
                    }
                }
            }
        };
        let (first, what) = first;
        errors.push(ImportError {
            location: loc.clone(),
            message: format!("duplicate {what}, first given at {}", plan.items[first].1),
        });
    }
    plan.errors.extend(errors);
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
    value.as_deref().and_then(opt_str)
}

/// A trimmed cell, `None` when empty.
fn opt_str(value: &str) -> Option<String> {
    let v = value.trim();
    (!v.is_empty()).then(|| v.to_string())
}

pub(crate) const NUMBER_KINDS: [&str; 6] = ["work", "mobile", "home", "fax", "ip_phone", "other"];

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

/// serde_json appends " at line X column Y"; we print the position up front.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::PhoneInput;

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
    fn csv_lines_ordered_and_gaps_rejected() {
        let plan = plan_text(
            "phones.csv",
            "tenant,mac,family,line,extension,registrar\n\
             acme,0004f2000001,poly,3,103,sip\n\
             acme,0004f2000002,poly,2,202,sip\n\
             acme,0004f2000001,poly,1,101,sip\n\
             acme,0004f2000003,poly,1,301,sip\n\
             acme,0004f2000001,poly,2,102,sip\n",
        );
        let text: Vec<String> = plan.errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(text.len(), 1, "{text:?}");
        assert!(
            text[0].contains("phones.csv:3:1: phone 0004f2000002: line numbers must run")
                && text[0].ends_with("got [2]"),
            "{text:?}"
        );
        let phones: Vec<&PhoneInput> = plan
            .items
            .iter()
            .map(|(m, _)| match m {
                Mutation::UpsertPhone(p) => p,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(phones.len(), 2);
        assert_eq!(phones[0].mac.to_string(), "0004f2000001");
        let extensions: Vec<&str> = phones[0]
            .lines
            .iter()
            .map(|l| l.extension.as_str())
            .collect();
        assert_eq!(extensions, ["101", "102", "103"]);
        assert_eq!(phones[1].lines[0].extension, "301");
        assert_eq!(plan.items[1].1.line, 5);
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
    fn duplicate_phone_across_files_names_both() {
        let dir = tempfile::tempdir().unwrap();
        let head = "tenant,mac,family,extension,registrar\n";
        let a = dir.path().join("a.csv");
        let b = dir.path().join("b.csv");
        std::fs::write(&a, format!("{head}acme,001565aabb01,yealink,101,sip\n")).unwrap();
        std::fs::write(
            &b,
            format!("{head}acme,001565aabb02,yealink,102,sip\nacme,001565AABB01,yealink,103,sip\n"),
        )
        .unwrap();
        let plan = plan_files(&[a, b]);
        let text: Vec<String> = plan.errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(text.len(), 1, "{text:?}");
        assert!(
            text[0].contains("b.csv:3:1: duplicate phone 001565aabb01, first given at ")
                && text[0].ends_with("a.csv:2:1"),
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
