//! Known-good (source, phone) pairs: a phone that fetched one of its own
//! files (a name with its MAC in it) from a source is remembered there for
//! a while, so a ban of that source (perhaps earned by forged TFTP misses)
//! still lets it boot. Keyed like the guard: IPv4 address or IPv6 /64.
//!
//! Bounded two ways. Only known phones' own files create entries, so the
//! phone table never holds more than the phones there are, and never more
//! than `known_phones`. Each phone keeps at most [`ADDRESSES_PER_PHONE`]
//! sources, and a live one is never replaced: forged fetches of a phone
//! whose MAC an attacker knows can take its free places, not push out the
//! source it really boots from. A phone past its places (or a table at its
//! bound) is just not remembered: it boots as before, without the exception.
//!
//! A place counts only under what it was learned under: the phone's tenant
//! and login ([`fingerprint`]). Places an attacker who knew the MAC took
//! while the phone had no credentials, or was another tenant's, would
//! otherwise outlive the change by the whole `known_ttl` and keep out the
//! office that proves the new password. Once the phone's fingerprint
//! changes, such places no longer count and are free to be replaced.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use dialtone_sync::{Family, Id, Phone};

use crate::guard::{family_bit, source_key};

/// Sources remembered per phone: an office's IPv4 and IPv6 and a move or two.
pub const ADDRESSES_PER_PHONE: usize = 4;

/// A full table is swept of expired entries at most this often (seconds).
const SWEEP_EVERY_S: u32 = 60;

#[derive(Clone, Copy, Default)]
struct Seen {
    source: Option<IpAddr>,
    /// Seconds since the table started.
    at: u32,
    /// The phone's fingerprint when it fetched from there (`None`: not
    /// noted yet, so it never counts).
    learned_under: Option<u64>,
}

impl Seen {
    fn counts_under(&self, current: Option<u64>) -> bool {
        self.learned_under.is_some() && self.learned_under == current
    }
}

/// One phone's places, and what they count under now.
#[derive(Default)]
struct Places {
    /// The phone's fingerprint as last noted ([`Known::note`]).
    current: Option<u64>,
    seen: [Seen; ADDRESSES_PER_PHONE],
}

/// What a phone's places are learned under: its tenant, its user and its
/// sealed password. Sealing is deterministic, so an edit that keeps the
/// password keeps the fingerprint, and a new password changes it.
pub(crate) fn fingerprint(phone: &Phone) -> u64 {
    let mut hasher = DefaultHasher::new();
    phone.tenant_id.hash(&mut hasher);
    phone.http_user.hash(&mut hasher);
    phone.http_password.hash(&mut hasher);
    hasher.finish()
}

/// The families of the phones known behind one source.
#[derive(Clone, Copy)]
struct Behind {
    families: u8,
    at: u32,
}

#[derive(Default)]
struct Tables {
    phones: HashMap<Id, Places>,
    sources: HashMap<IpAddr, Behind>,
    next_sweep: u32,
}

pub struct Known {
    ttl_s: AtomicU32,
    max_phones: usize,
    epoch: Instant,
    tables: Mutex<Tables>,
}

impl Known {
    pub fn new(ttl: Duration, max_phones: usize) -> Known {
        Known {
            ttl_s: AtomicU32::new(clamp_secs(ttl)),
            max_phones,
            epoch: Instant::now(),
            tables: Mutex::new(Tables::default()),
        }
    }

    pub fn set_ttl(&self, ttl: Duration) {
        self.ttl_s.store(clamp_secs(ttl), Ordering::Relaxed);
    }

    fn now(&self) -> u32 {
        u32::try_from(self.epoch.elapsed().as_secs()).unwrap_or(u32::MAX)
    }

    fn live(&self, now: u32) -> impl Fn(u32) -> bool {
        let ttl = self.ttl_s.load(Ordering::Relaxed);
        move |at| now.saturating_sub(at) < ttl
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `phone` is being answered as its row is now: places learned under
    /// another fingerprint stop counting, and one recorded for this
    /// request is learned under this one. Every answer for a phone notes
    /// it first (`device_auth.rs`); a phone not remembered yet takes a
    /// place in the table only while there is room.
    pub fn note(&self, phone: &Phone) {
        let current = Some(fingerprint(phone));
        let mut tables = self.lock();
        if let Some(places) = tables.phones.get_mut(&phone.id) {
            places.current = current;
        } else if tables.phones.len() < self.max_phones {
            let places = Places {
                current,
                ..Places::default()
            };
            tables.phones.insert(phone.id, places);
        }
    }

    /// `phone` (of `family`) fetched one of its own files from `source`,
    /// answered under `learned_under`, its fingerprint when the request
    /// was decided (a login changed since leaves the place stale, and a
    /// phone the table had no room to note still gets it). False when it
    /// could not be remembered (no place left). `exists`: whether a phone
    /// is still in the mirror, asked of each remembered one when a full
    /// table is swept.
    pub fn record(
        &self,
        source: IpAddr,
        phone: Id,
        family: Family,
        learned_under: u64,
        exists: impl Fn(Id) -> bool,
    ) -> bool {
        let source = source_key(source);
        let now = self.now();
        let live = self.live(now);
        let mut tables = self.lock();
        if !tables.phones.contains_key(&phone) && tables.phones.len() >= self.max_phones {
            self.sweep(&mut tables, now, &exists);
            if tables.phones.len() >= self.max_phones {
                return false;
            }
        }
        let places = tables.phones.entry(phone).or_insert_with(|| Places {
            current: Some(learned_under),
            ..Places::default()
        });
        let learned_under = Some(learned_under);
        let free = |s: &Seen| s.source.is_none() || !live(s.at) || !s.counts_under(learned_under);
        let at = (places.seen.iter().position(|s| s.source == Some(source)))
            .or_else(|| places.seen.iter().position(free));
        let Some(at) = at else {
            return false;
        };
        places.seen[at] = Seen {
            source: Some(source),
            at: now,
            learned_under,
        };
        let max_sources = self.max_phones.saturating_mul(ADDRESSES_PER_PHONE);
        if !tables.sources.contains_key(&source) && tables.sources.len() >= max_sources {
            self.sweep(&mut tables, now, &exists);
            if tables.sources.len() >= max_sources {
                // The phone's own files still pass; only common files won't.
                return true;
            }
        }
        let behind = tables.sources.entry(source).or_insert(Behind {
            families: 0,
            at: now,
        });
        if !live(behind.at) {
            behind.families = 0;
        }
        behind.families |= family_bit(family);
        behind.at = now;
        true
    }

    /// Drops expired entries and phones gone from the mirror; throttled,
    /// as it walks both tables. A deleted phone's places were live for the
    /// whole `known_ttl`, and a new phone is a new id: one tenant creating,
    /// fetching and deleting phones in a loop filled the node's table, and
    /// no other tenant's phone was remembered for a month.
    fn sweep(&self, tables: &mut Tables, now: u32, exists: &impl Fn(Id) -> bool) {
        if now < tables.next_sweep {
            return;
        }
        tables.next_sweep = now.saturating_add(SWEEP_EVERY_S);
        let live = self.live(now);
        tables.phones.retain(|id, places| {
            (places.seen.iter()).any(|s| s.source.is_some() && live(s.at)) && exists(*id)
        });
        tables.sources.retain(|_, behind| live(behind.at));
    }

    /// Whether `phone` fetched its own files from `source` lately, under
    /// its fingerprint as last noted.
    pub fn knows(&self, source: IpAddr, phone: Id) -> bool {
        self.knows_under(source, phone, None)
    }

    /// Whether `phone` fetched its own files from `source` lately, as its
    /// row is now.
    pub fn knows_phone(&self, source: IpAddr, phone: &Phone) -> bool {
        self.knows_under(source, phone.id, Some(fingerprint(phone)))
    }

    fn knows_under(&self, source: IpAddr, phone: Id, fingerprint: Option<u64>) -> bool {
        let source = source_key(source);
        let live = self.live(self.now());
        self.lock().phones.get(&phone).is_some_and(|places| {
            let current = fingerprint.or(places.current);
            (places.seen.iter())
                .any(|s| s.source == Some(source) && live(s.at) && s.counts_under(current))
        })
    }

    /// Whether a phone of one of `families` is known behind `source`.
    pub fn knows_family(&self, source: IpAddr, families: &[Family]) -> bool {
        let source = source_key(source);
        let live = self.live(self.now());
        let wanted = families.iter().fold(0u8, |m, f| m | family_bit(*f));
        self.lock()
            .sources
            .get(&source)
            .is_some_and(|b| live(b.at) && b.families & wanted != 0)
    }

    /// Phones remembered right now (tests, diagnostics).
    pub fn phones(&self) -> usize {
        self.lock().phones.len()
    }
}

fn clamp_secs(ttl: Duration) -> u32 {
    u32::try_from(ttl.as_secs()).unwrap_or(u32::MAX).max(1)
}

#[cfg(test)]
#[path = "known_tests.rs"]
mod tests;
