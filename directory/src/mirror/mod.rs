//! Mirror mode for LDAP sources (`"mode": "mirror"`): every entry that
//! matches the source's filter and has a number is read on a schedule into
//! an in-memory index, and lookups answer from that index alone, so a slow
//! or down directory costs nothing at call time.
//!
//! - `sync`: reading the directory (paged full reads, incremental reads by
//!   `uSNChanged` or `modifyTimestamp`), under caps a hostile server
//!   cannot talk its way past.
//! - `store`: the mirror on local disk, so a node restarted while the
//!   directory is unreachable still answers.
//! - `tasks`: one sync task per mirrored source, following its row, and
//!   the mirrors' status.
//! - `source_task`: one such task: the source's file, then its syncs.
//! - `gates`: a tenant's syncs, spaced and one at a time across its sources.
//! - `one_sync`: one sync: the read, then the merge.
//! - `publish`: a sync's result made current, in the index and the file.
//! - `schedule`: when its next sync is due, whatever the clock did.
//! - `work`: the node's places for the CPU work of every mirror.
//! - `leftovers`: files whose source or tenant is no longer there.

mod budget;
pub(crate) mod gates;
mod leftovers;
mod one_sync;
mod publish;
mod schedule;
mod source_task;
pub(crate) mod store;
pub(crate) mod sync;
pub(crate) mod tasks;
pub(crate) mod work;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;
use dialtone_sync::{now_millis, DirectorySource, Id};
use serde::{Deserialize, Serialize};

use crate::number_index::NumberIndex;
use crate::readings::Readings;

/// One directory entry as the mirror keeps it: what a lookup shows and
/// the numbers it is found by (normalized once, at sync).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorEntry {
    pub name: Box<str>,
    pub numbers: Vec<MirrorNumber>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorNumber {
    pub raw: Box<str>,
    /// With the tenant's region at the time; `None` when it would not
    /// normalize (then only its last digits find it).
    pub e164: Option<Box<str>>,
}

/// Where the next incremental read starts. Files keep it, and serde
/// numbers the kinds in order: a new one goes last.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Watermark {
    /// `highestCommittedUSN` before the last read, of a server that names
    /// no DC, or from a file written before the DC was kept.
    Usn(u64),
    /// OpenLDAP and others: the newest `modifyTimestamp` seen.
    ModifyTimestamp(String),
    /// Active Directory: the DC's `highestCommittedUSN` before the last
    /// read, and the DC (its `dsServiceName`): each DC counts its own.
    DcUsn { usn: u64, dc: Box<str> },
}

impl Watermark {
    pub fn label(&self) -> &'static str {
        match self {
            Watermark::Usn(_) | Watermark::DcUsn { .. } => "uSNChanged",
            Watermark::ModifyTimestamp(_) => "modifyTimestamp",
        }
    }
}

/// What a sync task owns and a file keeps: the entries by DN and where
/// they stand.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MirrorData {
    /// The region the numbers were normalized with.
    pub region: Box<str>,
    /// Whether another normalizer (another release's, or one an older file
    /// does not name) read the numbers: kept files outlive upgrades, and
    /// a changed reading rule must not wait for the next full sync.
    pub read_by_another_normalizer: bool,
    pub entries: BTreeMap<Box<str>, Arc<MirrorEntry>>,
    pub watermark: Option<Watermark>,
    pub last_full_sync: Option<i64>,
    pub last_full_ms: Option<u64>,
    pub last_incremental_sync: Option<i64>,
    pub last_incremental_ms: Option<u64>,
}

impl MirrorData {
    /// When the data was last known current (Unix ms).
    pub fn synced_at(&self) -> Option<i64> {
        self.last_full_sync.max(self.last_incremental_sync)
    }

    /// Whether the numbers must be read again before they answer in
    /// `region`.
    pub fn readings_stale(&self, region: &str) -> bool {
        *self.region != *region || self.read_by_another_normalizer
    }

    /// Normalizes every number again from its spelling after the tenant's
    /// region changed, or when another normalizer read them.
    pub fn renormalize(&mut self, region: &str) {
        if !self.readings_stale(region) {
            return;
        }
        let mut readings = Readings::new(region, self.entries.len());
        for entry in self.entries.values_mut() {
            let mut changed = (**entry).clone();
            for n in &mut changed.numbers {
                n.e164 = readings.read(&n.raw).map(Box::from);
            }
            *entry = Arc::new(changed);
        }
        self.region = region.into();
        self.read_by_another_normalizer = false;
    }

    /// The lookup index of the current entries, in DN order so that a
    /// number two entries share resolves the same way every time.
    pub fn index(&self, suffix_len: usize) -> Loaded {
        let mut index = NumberIndex::new(suffix_len, &self.region);
        for entry in self.entries.values() {
            for n in &entry.numbers {
                index.insert(&n.raw, n.e164.as_deref(), entry.clone());
            }
        }
        Loaded {
            index,
            entries: self.entries.len(),
            synced_at: self.synced_at(),
        }
    }
}

/// An entry as read from the directory, before normalization.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawEntry {
    pub dn: Box<str>,
    /// `None` when the entry has no name attribute: it is not kept.
    pub name: Option<Box<str>>,
    pub numbers: Vec<Box<str>>,
}

fn normalized(raw: RawEntry, readings: &mut Readings) -> Option<(Box<str>, Arc<MirrorEntry>)> {
    let name = raw.name?;
    if raw.numbers.is_empty() {
        return None;
    }
    let numbers = raw
        .numbers
        .into_iter()
        .map(|raw| MirrorNumber {
            e164: readings.read(&raw).map(Box::from),
            raw,
        })
        .collect();
    Some((raw.dn, Arc::new(MirrorEntry { name, numbers })))
}

/// The entries of a full read, replacing all others.
pub fn from_full(raw: Vec<RawEntry>, region: &str) -> BTreeMap<Box<str>, Arc<MirrorEntry>> {
    let mut readings = Readings::new(region, raw.len());
    raw.into_iter()
        .filter_map(|e| normalized(e, &mut readings))
        .collect()
}

/// Applies an incremental read: changed entries replace theirs, entries
/// that lost their name or numbers go. Stops adding new DNs at `max`.
/// Returns whether anything changed and whether the cap was hit.
pub fn merge(data: &mut MirrorData, raw: Vec<RawEntry>, max: usize) -> (bool, bool) {
    let (mut changed, mut capped) = (false, false);
    let region = data.region.clone();
    let mut readings = Readings::new(&region, raw.len());
    for entry in raw {
        let dn = entry.dn.clone();
        match normalized(entry, &mut readings) {
            Some((dn, entry)) => {
                let known = data.entries.contains_key(&dn);
                if !known && data.entries.len() >= max {
                    capped = true;
                    continue;
                }
                if data.entries.get(&dn).map(|e| &**e) != Some(&*entry) {
                    data.entries.insert(dn, entry);
                    changed = true;
                }
            }
            None => changed |= data.entries.remove(&dn).is_some(),
        }
    }
    (changed, capped)
}

/// The published, read-only side of a mirror.
pub struct Loaded {
    index: NumberIndex<Arc<MirrorEntry>>,
    pub entries: usize,
    pub synced_at: Option<i64>,
}

impl Loaded {
    /// The name for `e164`, by the same rules as the local directory.
    pub fn find(&self, e164: &str) -> Option<&str> {
        let (entries, _) = self.index.find(Some(e164), e164, Arc::ptr_eq)?;
        crate::shared_number::shown(entries.iter().map(|e| (&*e.name, None)))
    }
}

/// A mirrored source's state, as the admin API and `dialtone lookup` show
/// it. Times are Unix ms, durations ms.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MirrorStatus {
    pub entries: u64,
    pub last_full_sync: Option<i64>,
    pub last_full_ms: Option<u64>,
    pub last_incremental_sync: Option<i64>,
    pub last_incremental_ms: Option<u64>,
    /// The last sync's failure, or the entry cap it hit; never a secret,
    /// but it may name this node's files or the addresses the tenant's host
    /// resolved to here: for the operator.
    pub last_error: Option<String>,
    /// The kind of that failure (`DirectoryError::kind`): what a tenant is
    /// shown.
    pub last_error_kind: Option<&'static str>,
    /// Since the mirror was last known current; `None` before any sync.
    pub age_ms: Option<u64>,
    /// How changes between full syncs are found: `"uSNChanged"`,
    /// `"modifyTimestamp"`, or `None` (full syncs only).
    pub incremental: Option<&'static str>,
}

/// What the mirror says about a number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MirrorAnswer {
    Found(String),
    Missing,
    /// Nothing synced or loaded yet: not a miss.
    NotReady,
}

/// One mirrored source: the index lookups read (swapped whole after each
/// sync) and its status. Built with the source; synced by `tasks`.
pub struct SourceMirror {
    pub source_id: Id,
    pub tenant_id: Id,
    /// Names the settings the data was read with; a file for other
    /// settings (another server, base, filter or bind DN) is not loaded.
    pub fingerprint: String,
    pub live_fallback: bool,
    loaded: ArcSwapOption<Loaded>,
    status: Mutex<MirrorStatus>,
    /// Entries this mirror counts in `dialtone_directory_mirror_entries`.
    reported: AtomicU64,
    /// Whether its last sync failed (an entry cap it hit is no failure).
    sync_failed: AtomicBool,
}

impl Drop for SourceMirror {
    fn drop(&mut self) {
        let reported = self.reported.load(Ordering::Relaxed);
        metrics::gauge!("dialtone_directory_mirror_entries").decrement(reported as f64);
        // Its last holder may be the source registry, under the lock every
        // tenant's lookups take (a deleted source forgotten), or a runtime
        // worker: the index goes as `publish` sends an old one.
        if let Some(loaded) = self.loaded.swap(None) {
            free_off_worker(loaded);
        }
    }
}

/// Drops `value` on a blocking thread when inside the runtime: a quota's
/// index or entries are millions of allocations, and the runtime's
/// workers answer every tenant's lookups.
fn free_off_worker<T: Send + 'static>(value: T) {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => drop(runtime.spawn_blocking(move || drop(value))),
        Err(_) => drop(value),
    }
}

/// A sync task's own copy of its mirror's entries, freed off the runtime's
/// workers however the task ends (a source deleted or edited cancels it).
pub(crate) struct FreedOffWorker(pub(crate) MirrorData);

impl std::ops::Deref for FreedOffWorker {
    type Target = MirrorData;
    fn deref(&self) -> &MirrorData {
        &self.0
    }
}

impl std::ops::DerefMut for FreedOffWorker {
    fn deref_mut(&mut self) -> &mut MirrorData {
        &mut self.0
    }
}

impl Drop for FreedOffWorker {
    fn drop(&mut self) {
        let entries = std::mem::take(&mut self.0.entries);
        if !entries.is_empty() {
            free_off_worker(entries);
        }
    }
}

impl SourceMirror {
    pub fn new(row: &DirectorySource, live_fallback: bool) -> SourceMirror {
        SourceMirror {
            source_id: row.id,
            tenant_id: row.tenant_id,
            fingerprint: fingerprint(row),
            live_fallback,
            loaded: ArcSwapOption::empty(),
            status: Mutex::default(),
            reported: AtomicU64::new(0),
            sync_failed: AtomicBool::new(false),
        }
    }

    pub fn lookup(&self, e164: &str) -> MirrorAnswer {
        match &*self.loaded.load() {
            None => MirrorAnswer::NotReady,
            Some(loaded) => match loaded.find(e164) {
                Some(name) => MirrorAnswer::Found(name.to_string()),
                None => MirrorAnswer::Missing,
            },
        }
    }

    pub fn is_loaded(&self) -> bool {
        self.loaded.load().is_some()
    }

    /// Publishes a new index and the status that goes with it.
    pub(crate) fn publish(&self, loaded: Option<Loaded>, data: &MirrorData) {
        if let Some(loaded) = loaded {
            let old = self.loaded.swap(Some(Arc::new(loaded)));
            // Freeing a quota's index (millions of allocations) is not for
            // the runtime's workers: a blocking thread frees it, unless a
            // lookup still holds it and frees it when done.
            if let Some(old) = old {
                free_off_worker(old);
            }
        }
        let entries = data.entries.len();
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        status.entries = entries as u64;
        status.last_full_sync = data.last_full_sync;
        status.last_full_ms = data.last_full_ms;
        status.last_incremental_sync = data.last_incremental_sync;
        status.last_incremental_ms = data.last_incremental_ms;
        status.incremental = data.watermark.as_ref().map(Watermark::label);
        // One total for the node (see `source_task.rs` on labels): each mirror
        // adds what it holds beyond what it reported, and takes it all
        // back when dropped.
        let before = self.reported.swap(entries as u64, Ordering::Relaxed);
        metrics::gauge!("dialtone_directory_mirror_entries")
            .increment(entries as f64 - before as f64);
    }

    pub(crate) fn set_error(&self, error: Option<(&'static str, String)>) {
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        status.last_error_kind = error.as_ref().map(|(kind, _)| *kind);
        status.last_error = error.map(|(_, text)| text);
    }

    /// Records how the last sync ended.
    pub(crate) fn set_sync_failed(&self, failed: bool) {
        self.sync_failed.store(failed, Ordering::Relaxed);
    }

    /// Whether the mirror is behind at `now` (Unix ms): its last sync
    /// failed, or its data was last known current longer ago than twice
    /// `every` (ms, the source's full-sync interval as its syncs are
    /// spaced). One that has neither synced nor failed yet (its first sync
    /// is running, or waits its turn) is not.
    pub fn behind(&self, now: i64, every: i64) -> bool {
        if self.sync_failed.load(Ordering::Relaxed) {
            return true;
        }
        let status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        let synced = status.last_full_sync.max(status.last_incremental_sync);
        synced.is_some_and(|at| now.saturating_sub(at) > every.saturating_mul(2))
    }

    /// The last full sync's duration (ms), which spaces the next.
    pub(crate) fn last_full_ms(&self) -> Option<u64> {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .last_full_ms
    }

    pub fn status(&self) -> MirrorStatus {
        let mut status = self
            .status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let synced = status.last_full_sync.max(status.last_incremental_sync);
        status.age_ms = synced.map(|at| now_millis().saturating_sub(at).max(0) as u64);
        status
    }
}

/// Hex SHA-256 of what identifies a source's data: tenant, source id and
/// settings (server, base, filter, bind DN, attributes). Hashed so that a
/// file name or header never shows them.
fn fingerprint(row: &DirectorySource) -> String {
    use sha2::Digest;
    let mut hash = sha2::Sha256::new();
    hash.update(row.tenant_id.to_le_bytes());
    hash.update(row.id.to_le_bytes());
    hash.update(row.settings.as_bytes());
    hex::encode(&hash.finalize()[..16])
}

/// The tenant's `directory_entries` quota: its own setting
/// (`settings.quotas.directory_entries`, set by a global admin) or the
/// operator's default. Mirrored entries count against it as local ones do.
pub fn entry_quota(tenant_settings: &str, default: u64) -> u64 {
    if !tenant_settings.contains("directory_entries") {
        return default;
    }
    serde_json::from_str::<serde_json::Value>(tenant_settings)
        .ok()
        .and_then(|v| v.pointer("/quotas/directory_entries")?.as_u64())
        .unwrap_or(default)
}

#[cfg(test)]
mod clock_tests;
#[cfg(test)]
mod dc_tests;
#[cfg(test)]
mod hostile_tests;
#[cfg(test)]
mod leftovers_tests;
#[cfg(test)]
mod normalizer_tests;
#[cfg(test)]
mod slapd_tests;
#[cfg(test)]
mod spacing_tests;
#[cfg(test)]
mod store_tests;
#[cfg(test)]
mod tests;
