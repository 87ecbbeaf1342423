//! One tenant's directory indexed by number, as of one mirror stamp.
//!
//! Normalizing is what an index costs (tens of microseconds a number, so
//! seconds at the entry quota). A new index is therefore made from the
//! tenant's last one whenever there is one: the entries an edit did not
//! touch keep their filing, and only the numbers of changed, new and
//! removed entries are normalized again. Both indexes share every shard
//! the change did not reach, so the old one stays whole for the lookups
//! still using it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use dialtone_sync::{DirectoryEntry, Id, MirrorState, Tenant};

use crate::cow_map::CowMap;
use crate::normalize::normalize;
use crate::number_index::{Changes, NumberIndex};
use crate::readings::{Bound, ReadingMap, Readings};

pub(crate) struct TenantIndex {
    /// The tenant's directory stamp it is current at.
    pub stamp: u64,
    /// The region its national numbers were read in.
    region: Box<str>,
    /// Entry ids by number; the ids under a number in (name, id) order,
    /// so a number two entries share resolves the same way every time.
    numbers: NumberIndex<Id>,
    /// The tenant's entries at `stamp`: what a match shows, and what the
    /// next index compares with.
    entries: CowMap<Id, Arc<DirectoryEntry>>,
}

/// A whole build: the index, and the readings it made or took.
pub(crate) struct WholeBuild {
    pub index: TenantIndex,
    /// Every spelling of the directory with its reading.
    pub readings: ReadingMap,
    /// How many of them were taken from kept readings, not made.
    pub taken: usize,
    /// Whether they are just the kept readings, none made, none left.
    pub as_kept: bool,
}

/// A match: the name to show, the entry (the first in name order of those
/// that list the number) and whether it came from the weaker suffix index.
#[derive(Clone, Debug)]
pub struct Found {
    /// The entry's name, or the company every entry listing the number
    /// shares (`crate::shared_number`).
    pub name: Box<str>,
    pub entry: Arc<DirectoryEntry>,
    pub by_suffix: bool,
}

/// Whether two versions of an entry are filed under the same numbers in
/// the same place: the rest of an entry is only shown.
fn same_filing(a: &DirectoryEntry, b: &DirectoryEntry) -> bool {
    a.name == b.name
        && a.numbers.len() == b.numbers.len()
        && a.numbers
            .iter()
            .zip(&b.numbers)
            .all(|(x, y)| x.number == y.number)
}

/// Every number with its entry ids, and every entry by id.
#[cfg(test)]
type Listing = (Vec<(String, Vec<Id>)>, Vec<(Id, Arc<DirectoryEntry>)>);

fn numbers_of<'a>(entries: impl IntoIterator<Item = &'a Arc<DirectoryEntry>>) -> usize {
    entries.into_iter().map(|e| e.numbers.len()).sum()
}

/// Files the entry's numbers under their readings.
fn file(changes: &mut Changes<Id>, entry: &DirectoryEntry, readings: &mut Readings) {
    for n in &entry.numbers {
        changes.insert(&n.number, readings.read(&n.number), entry.id);
    }
}

/// Takes the entry off its numbers.
fn unfile(changes: &mut Changes<Id>, entry: &DirectoryEntry, readings: &mut Readings) {
    for n in &entry.numbers {
        changes.remove(&n.number, readings.read(&n.number), entry.id);
    }
}

impl TenantIndex {
    /// Normalizes every number of the tenant's directory.
    #[cfg(test)]
    pub fn build(
        state: &MirrorState,
        tenant: &Tenant,
        stamp: u64,
        suffix_len: usize,
    ) -> TenantIndex {
        let never = AtomicBool::new(false);
        Self::build_unless(state, tenant, stamp, suffix_len, &never, |_| {
            ReadingMap::new()
        })
        .expect("not stopped")
        .index
    }

    /// [`TenantIndex::build`], from the readings `kept` gives (asked once,
    /// with the directory's bound), or `None` soon after `stop`
    /// is set: a build runs seconds on a blocking thread, which the
    /// runtime waits for before the process can exit.
    pub fn build_unless(
        state: &MirrorState,
        tenant: &Tenant,
        stamp: u64,
        suffix_len: usize,
        stop: &AtomicBool,
        kept: impl FnOnce(Bound) -> ReadingMap,
    ) -> Option<WholeBuild> {
        let mut entries = state.directory_of(tenant.id);
        entries.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
        let numbers = numbers_of(&entries);
        let mut index = TenantIndex {
            stamp,
            region: tenant.default_region.clone(),
            numbers: NumberIndex::with_capacity(suffix_len, &tenant.default_region, numbers),
            entries: CowMap::with_capacity(entries.len()),
        };
        // About 30 MB at the quota while it runs when every number differs.
        let bound = Bound::of(entries.iter().flat_map(|e| &e.numbers).map(|n| &*n.number));
        let mut readings = Readings::with_kept(&tenant.default_region, numbers, kept(bound));
        for (i, entry) in entries.iter().enumerate() {
            if i % 1024 == 0 && stop.load(Ordering::Relaxed) {
                return None;
            }
            // In (name, id) order already: each is filed after the rest.
            for n in &entry.numbers {
                let e164 = readings.read(&n.number);
                index.numbers.insert(&n.number, e164, entry.id);
            }
            index.entries.insert(entry.id, entry.clone());
        }
        Some(WholeBuild {
            index,
            taken: readings.taken(),
            as_kept: readings.met_just_the_kept(),
            readings: readings.into_map(),
        })
    }

    /// This index brought to `state`, normalizing only what changed; `None`
    /// when a build would normalize fewer numbers (most entries changed),
    /// must normalize all of them (the tenant's region changed), the change
    /// would normalize more than `most` numbers, or soon after `stop` is
    /// set (an update normalizes up to half a directory).
    pub fn update(
        &self,
        state: &MirrorState,
        tenant: &Tenant,
        stamp: u64,
        most: usize,
        stop: &AtomicBool,
    ) -> Option<TenantIndex> {
        if self.region != tenant.default_region {
            return None;
        }
        let now = state.directory_of(tenant.id);
        let mut next = TenantIndex {
            stamp,
            region: self.region.clone(),
            numbers: self.numbers.clone(),
            entries: self.entries.clone(),
        };
        // Each changed entry with its last version, if it had one.
        let (mut kept, mut changed) = (0, Vec::new());
        for entry in now.iter() {
            match self.entries.get(&entry.id) {
                Some(old) if Arc::ptr_eq(old, entry) => kept += 1,
                Some(old) if same_filing(old, entry) => {
                    // A new company, or the same row read again by a reload.
                    kept += 1;
                    next.entries.insert(entry.id, entry.clone());
                }
                Some(old) => {
                    kept += 1;
                    changed.push((Some(old.clone()), entry.clone()));
                }
                None => changed.push((None, entry.clone())),
            }
        }
        let removed: Vec<Arc<DirectoryEntry>> = if kept < self.entries.len() {
            self.entries
                .iter()
                .filter(|(id, _)| {
                    state
                        .directory_entry(**id)
                        .is_none_or(|e| e.tenant_id != tenant.id)
                })
                .map(|(_, entry)| entry.clone())
                .collect()
        } else {
            Vec::new()
        };
        // A number an entry keeps through a change is read once.
        let to_normalize = numbers_of(&removed)
            + changed
                .iter()
                .map(|(old, new)| {
                    let old = old.as_deref().map_or(&[][..], |o| &o.numbers[..]);
                    old.len()
                        + new
                            .numbers
                            .iter()
                            .filter(|n| !old.iter().any(|o| o.number == n.number))
                            .count()
                })
                .sum::<usize>();
        if to_normalize >= numbers_of(&now) || to_normalize > most {
            return None;
        }
        // One spelling is read once however many entries a change moves
        // it on and off: a company's line under every renamed contact.
        let region = self.region.clone();
        let mut readings = Readings::new(&region, to_normalize);
        let stopped = |i: usize| i.is_multiple_of(1024) && stop.load(Ordering::Relaxed);
        // Gathered in the order they are filed in, so that each number's
        // sort of what it gains finds it sorted, with no look-up of two
        // names a comparison.
        changed.sort_by(|(_, a), (_, b)| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
        // Made at once, by number: a number most of the directory shares
        // (a company's line) is gone through once, not once per entry
        // moved on or off it.
        let mut changes = next.numbers.changes();
        for (i, old) in removed.iter().enumerate() {
            if stopped(i) {
                return None;
            }
            unfile(&mut changes, old, &mut readings);
            next.entries.remove(&old.id);
        }
        for (i, (old, entry)) in changed.iter().enumerate() {
            if stopped(i) {
                return None;
            }
            if let Some(old) = old {
                unfile(&mut changes, old, &mut readings);
            }
            file(&mut changes, entry, &mut readings);
            next.entries.insert(entry.id, entry.clone());
        }
        // Filing orders by the names of the entries already under a
        // number, so every entry is in `entries` by now.
        let entries = &next.entries;
        let name = |id: &Id| entries.get(id).map(|e| &*e.name);
        next.numbers
            .apply_by(changes, |a, b| name(a).cmp(&name(b)).then(a.cmp(b)));
        next.numbers.fit();
        next.entries.fit();
        Some(next)
    }

    pub fn entries(&self) -> usize {
        self.entries.len()
    }

    /// An exact E.164 match wins, shown as `crate::shared_number` says
    /// when several entries list it; otherwise a suffix match counts only
    /// when it is unambiguous, since showing the wrong name is worse than
    /// showing none.
    pub fn find(&self, number: &str) -> Option<Found> {
        let e164 = normalize(number, &self.region).ok();
        let (ids, by_suffix) = self.numbers.find(e164.as_deref(), number, |a, b| a == b)?;
        let entries = ids.iter().filter_map(|id| self.entries.get(id));
        let name =
            crate::shared_number::shown(entries.clone().map(|e| (&*e.name, e.company.as_deref())))?;
        Some(Found {
            name: name.into(),
            entry: entries.clone().next()?.clone(),
            by_suffix,
        })
    }

    /// The entries filed under `number`'s whole reading.
    pub fn listed_by(&self, number: &str) -> usize {
        let Ok(e164) = normalize(number, &self.region) else {
            return 0;
        };
        match self.numbers.find(Some(&e164), number, |a, b| a == b) {
            // An entry listing the number twice is filed twice, side by side.
            Some((ids, false)) => ids.chunk_by(|a, b| a == b).count(),
            _ => 0,
        }
    }

    /// Every number with its entry ids, and the entries, for comparing an
    /// updated index with a built one.
    #[cfg(test)]
    pub fn listing(&self) -> Listing {
        let mut entries: Vec<_> = self
            .entries
            .iter()
            .map(|(id, e)| (*id, e.clone()))
            .collect();
        entries.sort_by_key(|(id, _)| *id);
        (self.numbers.listing(), entries)
    }

    /// Shards shared with `other`, and this index's shard count.
    #[cfg(test)]
    pub fn shared_with(&self, other: &TenantIndex) -> (usize, usize) {
        let (numbers, of) = self.numbers.shared_with(&other.numbers);
        (
            numbers + self.entries.shared_with(&other.entries),
            of + self.entries.shard_count(),
        )
    }
}

#[cfg(test)]
#[path = "tenant_index_tests.rs"]
mod tests;
