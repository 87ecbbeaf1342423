//! Rows an export wrote that this release's import refuses: values an
//! earlier release stored before its checks grew (a line break in a line's
//! name, a number as a spreadsheet wrote it). The file
//! is written whole all the same, for it is the backup; the operator
//! learns which rows to fix before it is the way to another database,
//! rather than from an import refusing them there.

use std::sync::atomic::{AtomicBool, Ordering};

use dialtone_sync::checks::{self, LineText, PhoneText};
use dialtone_sync::export::Kind;
use dialtone_sync::store::DirectoryEntryInput;
use dialtone_sync::{DirectoryNumber, MirrorState, Sealed, Tenant};

/// How many refused rows the warning names.
const NAMED: usize = 5;

/// The rows refused: how many, and the first [`NAMED`], each as "where:
/// why".
#[derive(Default)]
pub(super) struct Refused {
    pub rows: u64,
    pub first: Vec<String>,
}

impl Refused {
    fn add(&mut self, whose: impl FnOnce() -> String, reason: &str) {
        self.rows += 1;
        if self.first.len() < NAMED {
            self.first.push(format!("{} {reason}", whose()));
        }
    }
}

/// `write` run here while `check` runs on a thread of its own: the check
/// reads the same snapshot the writer does, so its ~0.8 s at a million
/// phones overlaps the write, on the core the writer leaves idle, instead
/// of following it. A failed write stops the check, which it makes pointless. The
/// check's Err is its panic's text: the write's result is kept, and the
/// file written, all the same.
pub(super) fn alongside<T, E>(
    check: impl Fn(&AtomicBool) -> Refused + Sync,
    write: impl FnOnce() -> Result<T, E>,
) -> Result<(T, Result<Refused, String>), E> {
    let stop = AtomicBool::new(false);
    let (check, stop) = (&check, &stop);
    std::thread::scope(|scope| {
        let thread = std::thread::Builder::new()
            .name("export-check".into())
            .spawn_scoped(scope, move || check(stop));
        let written = write();
        if written.is_err() {
            stop.store(true, Ordering::Relaxed);
        }
        // Joined whatever the write did: a panic left unjoined would
        // become the scope's own, in place of the write's error.
        let checked = match thread {
            Ok(thread) => thread
                .join()
                .map_err(|panic| crate::supervise::panic_message(&*panic)),
            // No thread to be had: checked after the write, as it was.
            Err(_) => Ok(check(stop)),
        };
        written.map(|written| (written, checked))
    })
}

/// The rows of the tenants named by `slugs` (every tenant when none) of
/// `kinds` that the import's checks refuse, their text read as the import
/// reads it (trimmed; passwords not opened, see [`phones`]). Cut short,
/// and then incomplete, once `stop` is set.
pub(super) fn refused(
    state: &MirrorState,
    slugs: &[String],
    kinds: &[Kind],
    stop: &AtomicBool,
) -> Refused {
    let mut tenants: Vec<&Tenant> = if slugs.is_empty() {
        state.tenants().map(|t| &**t).collect()
    } else {
        (slugs.iter())
            .filter_map(|slug| state.tenant_by_slug(slug).map(|t| &**t))
            .collect()
    };
    tenants.sort_by(|a, b| a.slug.cmp(&b.slug));
    tenants.dedup_by_key(|t| t.id);
    let mut refused = Refused::default();
    for tenant in tenants {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        if kinds.contains(&Kind::Tenants) {
            tenant_row(tenant, &mut refused);
        }
        if kinds.contains(&Kind::Phones) {
            phones(state, tenant, stop, &mut refused);
        }
        if kinds.contains(&Kind::Directory) {
            directory(state, tenant, stop, &mut refused);
        }
    }
    refused
}

fn tenant_row(tenant: &Tenant, refused: &mut Refused) {
    let checked = checks::tenant_name(tenant.name.trim())
        .and_then(|()| checks::settings_text(&tenant.settings));
    if let Err(reason) = checked {
        refused.add(|| format!("tenant {}:", tenant.slug), &reason);
    }
}

/// A trimmed cell, none when empty, as the import reads one.
fn cell(text: &str) -> Option<&str> {
    Some(text.trim()).filter(|t| !t.is_empty())
}

/// Passwords are not opened again: the export has just opened each to
/// write it, and counted the line passwords the import refuses as it did
/// (`export::Drift`). A stored one stands in as a plain word here, so the
/// rules on a login's parts hold.
fn phones(state: &MirrorState, tenant: &Tenant, stop: &AtomicBool, refused: &mut Refused) {
    let open = |sealed: Option<&Sealed>| sealed.map(|_| "stored");
    let mut phones: Vec<_> = state.phones_of(tenant.id).collect();
    phones.sort_unstable_by_key(|p| p.mac);
    for phone in phones {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let http_password = open(phone.http_password.as_ref());
        let text = PhoneText {
            model: phone.model.as_deref().and_then(cell),
            label: phone.label.as_deref().and_then(cell),
            http_user: phone.http_user.as_deref().and_then(cell),
            http_password,
        };
        if let Err(r) = text.check() {
            refused.add(|| format!("phone {}", phone.mac), &r.reason);
        }
        for line in state.lines_of(phone.id) {
            let password = open(line.password.as_ref());
            let extension = line.extension.trim();
            let text = LineText {
                extension,
                display_name: Some(cell(&line.display_name).unwrap_or(extension)),
                auth_user: Some(cell(&line.auth_user).unwrap_or(extension)),
                password,
                registrar: line.registrar.trim(),
                proxy: line.proxy.as_deref().and_then(cell),
            };
            if let Err(r) = text.check() {
                let whose = || format!("phone {} line {}", phone.mac, line.position);
                refused.add(whose, &r.reason);
            }
        }
    }
}

fn directory(state: &MirrorState, tenant: &Tenant, stop: &AtomicBool, refused: &mut Refused) {
    let mut entries = state.directory_of(tenant.id);
    entries.sort_by(|a, b| a.external_id.cmp(&b.external_id));
    for entry in entries {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let input = DirectoryEntryInput {
            tenant: String::new(),
            external_id: entry.external_id.as_deref().unwrap_or("").trim().into(),
            name: entry.name.trim().into(),
            company: entry.company.as_deref().and_then(cell).map(Into::into),
            numbers: (entry.numbers.iter())
                .filter_map(|n| {
                    Some(DirectoryNumber {
                        number: cell(&n.number)?.into(),
                        kind: n.kind.trim().to_lowercase().into(),
                    })
                })
                .collect(),
        };
        let renamed = entry
            .external_id
            .as_deref()
            .filter(|id| **id != checks::generated_entry_key(&entry.name))
            .map_or(Ok(()), |id| checks::chosen_external_id(id.trim()));
        if let Err(r) = checks::directory_entry(&input).and(renamed) {
            let whose = || match &entry.external_id {
                Some(id) => format!("tenant {} directory entry {id:?}", tenant.slug),
                None => format!(
                    "tenant {} directory entry named {:?}",
                    tenant.slug, entry.name
                ),
            };
            refused.add(whose, &r.reason);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    use super::{alongside, Refused};

    fn found(rows: u64) -> Refused {
        Refused {
            rows,
            first: vec!["phone 001565000001 label: why".into()],
        }
    }

    #[test]
    fn the_check_is_told_once_the_write_is_done() {
        let (written, checked) = alongside(|_: &AtomicBool| found(3), || Ok::<_, ()>(7)).unwrap();
        assert_eq!(written, 7);
        let checked = checked.unwrap();
        assert_eq!((checked.rows, checked.first.len()), (3, 1));
    }

    #[test]
    fn a_check_that_panics_loses_neither_the_write_nor_the_export() {
        let check = |_: &AtomicBool| -> Refused { panic!("a bug in a check") };
        let (written, checked) = alongside(check, || Ok::<_, ()>("whole")).unwrap();
        assert_eq!(written, "whole");
        assert_eq!(checked.err().as_deref(), Some("a bug in a check"));
        // A failed write as well: its error, not the check's panic.
        assert_eq!(
            alongside(check, || Err::<(), _>("disk full")).err(),
            Some("disk full")
        );
    }

    #[test]
    fn a_failed_write_stops_the_check() {
        // A check that would run a minute unless stopped.
        let check = |stop: &AtomicBool| {
            let until = Instant::now() + Duration::from_secs(60);
            while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(1));
            }
            found(1)
        };
        let started = Instant::now();
        assert_eq!(
            alongside(check, || Err::<(), _>("disk full")).err(),
            Some("disk full")
        );
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{:?}",
            started.elapsed()
        );
    }
}
