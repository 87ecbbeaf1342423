//! The guard's miss table: what each tracked source owes, bounded, and
//! which source to forget when it is full.
//!
//! A source's debt is kept as one number, the time its allowance is whole
//! again (GCRA's theoretical arrival time: a token bucket in one `u64`).
//!
//! When the table is full the choice is made like TinyLFU's admission, but
//! exactly where it matters: the victim is the tracked source owing least,
//! and a newcomer takes its place only if a frequency sketch has seen the
//! newcomer miss more often lately than the victim. A flood of forged
//! one-shot sources therefore leaves the table as it is (each looks like
//! one miss, and so do the one-shots already tracked), while a scanner is
//! admitted by its second or third miss and then cannot be pushed out by
//! sources that miss less. moka's own admission works alike, but it
//! records reads on a channel that drops them when full, that is under
//! exactly such a flood, so it cannot promise this.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::BuildHasher;
use std::net::IpAddr;

/// Counters per sketch row (indexes are 16-bit slices of one hash).
const WIDTH: usize = 1 << 16;
const DEPTH: usize = 4;

/// A count-min sketch of recent misses per source, in fixed memory
/// (256 KiB), with conservative update (only the smallest counters grow, so
/// estimates stay close) and aging (every counter halves after `10 *
/// WIDTH` misses, so old floods fade). Keyed with a random hash key, so no
/// one can pick sources that collide with a given scanner.
struct Sketch {
    counters: Box<[u8]>,
    hasher: std::collections::hash_map::RandomState,
    added: usize,
}

impl Sketch {
    fn new() -> Sketch {
        Sketch {
            counters: vec![0u8; WIDTH * DEPTH].into_boxed_slice(),
            hasher: Default::default(),
            added: 0,
        }
    }

    fn slots(&self, source: &IpAddr) -> [usize; DEPTH] {
        let hash = self.hasher.hash_one(source);
        std::array::from_fn(|row| row * WIDTH + ((hash >> (16 * row)) as usize & (WIDTH - 1)))
    }

    fn estimate(&self, source: &IpAddr) -> u8 {
        self.slots(source)
            .iter()
            .map(|&i| self.counters[i])
            .min()
            .unwrap_or(0)
    }

    /// Counts one miss; the source's estimate after it.
    fn add(&mut self, source: &IpAddr) -> u8 {
        let slots = self.slots(source);
        let least = slots.iter().map(|&i| self.counters[i]).min().unwrap_or(0);
        for i in slots {
            if self.counters[i] == least {
                self.counters[i] = least.saturating_add(1);
            }
        }
        self.added += 1;
        if self.added >= 10 * WIDTH {
            self.added = 0;
            self.counters.iter_mut().for_each(|c| *c /= 2);
        }
        least.saturating_add(1)
    }
}

pub(crate) struct Debts {
    capacity: usize,
    due: HashMap<IpAddr, u64>,
    by_due: BTreeSet<(u64, IpAddr)>,
    /// Tracked sources owing a miss made over UDP, whose source address
    /// anyone could have forged; forgotten with the debt.
    forgeable: HashSet<IpAddr>,
    sketch: Sketch,
}

impl Debts {
    pub(crate) fn new(capacity: usize) -> Debts {
        Debts {
            capacity: capacity.max(1),
            due: HashMap::new(),
            by_due: BTreeSet::new(),
            forgeable: HashSet::new(),
            sketch: Sketch::new(),
        }
    }

    /// Forgets every source whose allowance is whole again: it owes nothing.
    fn settle(&mut self, now: u64) {
        while let Some(&(due, source)) = self.by_due.first() {
            if due > now {
                break;
            }
            self.by_due.pop_first();
            self.due.remove(&source);
            self.forgeable.remove(&source);
        }
    }

    fn set(&mut self, source: IpAddr, due: u64) {
        if let Some(old) = self.due.insert(source, due) {
            self.by_due.remove(&(old, source));
        }
        self.by_due.insert((due, source));
    }

    pub(crate) fn forget(&mut self, source: IpAddr) {
        if let Some(old) = self.due.remove(&source) {
            self.by_due.remove(&(old, source));
        }
        self.forgeable.remove(&source);
    }

    /// Notes that `source`'s debt holds a miss whose source could be
    /// forged (TFTP); a no-op for a source not tracked.
    pub(crate) fn mark_forgeable(&mut self, source: IpAddr) {
        if self.due.contains_key(&source) {
            self.forgeable.insert(source);
        }
    }

    /// Whether `source`'s debt holds a miss that could have been forged.
    pub(crate) fn is_forgeable(&self, source: IpAddr) -> bool {
        self.forgeable.contains(&source)
    }

    /// What `source` owes at `now` (microseconds), without charging it.
    pub(crate) fn owed(&mut self, source: IpAddr, now: u64) -> u64 {
        self.settle(now);
        self.due
            .get(&source)
            .map_or(0, |due| due.saturating_sub(now))
    }

    /// Counts a miss by `source` at `now` (microseconds) costing `interval`;
    /// returns what it owes now (0 when it could not be tracked).
    pub(crate) fn charge(&mut self, source: IpAddr, now: u64, interval: u64) -> u64 {
        self.settle(now);
        let seen = self.sketch.add(&source);
        let tracked = self.due.get(&source).copied();
        let due = tracked.unwrap_or(now).max(now).saturating_add(interval);
        if tracked.is_none() && self.due.len() >= self.capacity && !self.admit(seen) {
            return 0;
        }
        self.set(source, due);
        due - now
    }

    /// Makes room for a newcomer seen missing `seen` times lately, if the
    /// tracked source owing least has missed less often.
    fn admit(&mut self, seen: u8) -> bool {
        let Some(&(_, victim)) = self.by_due.first() else {
            return true;
        };
        if seen <= self.sketch.estimate(&victim) {
            return false;
        }
        self.forget(victim);
        metrics::counter!("dialtone_provisioning_sources_evicted_total").increment(1);
        true
    }

    pub(crate) fn len(&mut self, now: u64) -> usize {
        self.settle(now);
        self.due.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const MINUTE: u64 = 60_000_000;

    fn forged(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n))
    }

    #[test]
    fn the_table_is_bounded_and_settled_sources_leave() {
        let mut debts = Debts::new(100);
        for n in 0..10_000 {
            debts.charge(forged(n), n as u64, MINUTE);
        }
        assert_eq!(debts.len(10_000), 100);
        // A minute later every one of them owes nothing.
        assert_eq!(debts.len(10_000 + MINUTE), 0);
    }

    /// The eviction answer, on the table alone: between each pair of a
    /// scanner's misses, one-shot sources five times the table's size.
    #[test]
    fn one_shot_floods_never_push_out_a_scanner() {
        let mut debts = Debts::new(1_000);
        let scanner: IpAddr = "198.51.100.7".parse().unwrap();
        let (mut next, mut now, mut owed) = (0u32, 0u64, Vec::new());
        for _ in 0..30 {
            for _ in 0..5_000 {
                next += 1;
                now += 1;
                debts.charge(forged(next), now, MINUTE);
            }
            now += 1;
            owed.push(debts.charge(scanner, now, MINUTE).div_ceil(MINUTE));
        }
        // Tracked by its second or third miss, then never forgotten: it
        // owes one more miss each time.
        let first = owed.iter().position(|&o| o > 0).expect("never tracked");
        assert!(first <= 2, "tracked only at miss {}: {owed:?}", first + 1);
        for (i, pair) in owed[first..].windows(2).enumerate() {
            assert_eq!(
                pair[1],
                pair[0] + 1,
                "forgotten after miss {}: {owed:?}",
                first + i + 1
            );
        }
        assert!(debts.len(now) <= 1_000);
    }

    /// Sources that really miss again are admitted over one-shots.
    #[test]
    fn a_repeat_source_is_admitted_into_a_full_table() {
        let mut debts = Debts::new(10);
        for n in 0..10 {
            debts.charge(forged(n), 0, MINUTE);
        }
        let repeat: IpAddr = "192.0.2.1".parse().unwrap();
        let owed: Vec<u64> = (1..=3).map(|t| debts.charge(repeat, t, MINUTE)).collect();
        assert!(owed[2] > 0, "{owed:?}");
        assert_eq!(debts.len(3), 10);
    }
}
