//! Each source's share of a listener's connections, and which sources hold
//! the most of them.
//!
//! A source is capped at `max_per_source`, but a few sources, each within
//! its cap, can still hold every place of a full listener: trickling
//! headers, and reconnecting the moment a place is taken from them. When
//! the only places made were those of the connections waiting longest,
//! whoever they belonged to, a phone from elsewhere lost to each of them
//! in turn (four fetches in ten answered 503 in a flood from 16 hosts).
//! So a newcomer whose source holds fewer connections than the heaviest
//! source takes the place of one of that source's connections that has
//! nothing of ours in hand and has waited a second (`idle::Idle::evict_from`),
//! when no connection anywhere is idle enough to go first: a flood then
//! costs its own sources their places, and a source with few connections
//! gets in, while a busy office's phones are not cut between two fetches.
//!
//! The counts are kept ordered beside the map, so a connection's accept and
//! close cost two `O(log sources)` updates under one lock, and the memory
//! is one entry per source with a connection open.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};

/// How many of the heaviest sources a newcomer looks through for a place:
/// sources that tie may hold connections all busy with a request, and one
/// source choosing which of its connections stay busy must not shield the
/// others that hold as many.
const HEAVIEST_TRIED: usize = 4;

pub(super) struct Shares {
    max_per_source: usize,
    exempt: Vec<ipnet::IpNet>,
    counts: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    by_source: HashMap<IpAddr, usize>,
    /// `by_source` again, ordered by count, the most last.
    ranked: BTreeSet<(usize, IpAddr)>,
}

impl Counts {
    fn set(&mut self, source: IpAddr, from: usize, to: usize) {
        if from > 0 {
            self.ranked.remove(&(from, source));
        }
        if to > 0 {
            self.ranked.insert((to, source));
            self.by_source.insert(source, to);
        } else {
            self.by_source.remove(&source);
        }
    }
}

/// Whether `peer` is in an exempt network, matched as TFTP's are.
pub(crate) fn exempt(networks: &[ipnet::IpNet], peer: IpAddr) -> bool {
    dialtone_tftp::guard::listed_in(networks, peer)
}

impl Shares {
    pub(super) fn new(max_per_source: usize, exempt: Vec<ipnet::IpNet>) -> Shares {
        Shares {
            max_per_source: max_per_source.max(1),
            exempt,
            counts: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a connection against its source's share; `Err` past it.
    /// `None`: an exempt network's, counted nowhere.
    pub(super) fn take(&self, peer: IpAddr) -> Result<Option<IpAddr>, ()> {
        if exempt(&self.exempt, peer) {
            return Ok(None);
        }
        let source = dialtone_tftp::tftp::source_of(peer);
        let mut counts = self.lock();
        let count = counts.by_source.get(&source).copied().unwrap_or(0);
        if count >= self.max_per_source {
            return Err(());
        }
        counts.set(source, count, count + 1);
        Ok(Some(source))
    }

    pub(super) fn give(&self, source: IpAddr) {
        let mut counts = self.lock();
        if let Some(&count) = counts.by_source.get(&source) {
            counts.set(source, count, count - 1);
        }
    }

    /// The sources holding more connections than `source` (its newcomer
    /// counted), the most first, a few of them: where a newcomer from
    /// `source` to a full listener may take a place.
    pub(super) fn heavier_than(&self, source: IpAddr) -> Vec<IpAddr> {
        let counts = self.lock();
        let own = counts.by_source.get(&source).copied().unwrap_or(0);
        counts
            .ranked
            .iter()
            .rev()
            .take_while(|(count, _)| *count > own)
            .take(HEAVIEST_TRIED)
            .map(|(_, heavier)| *heavier)
            .collect()
    }

    #[cfg(test)]
    fn held(&self) -> (usize, usize) {
        let counts = self.lock();
        (counts.by_source.len(), counts.ranked.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn the_heaviest_sources_come_first_and_counts_go_when_given_back() {
        let shares = Shares::new(3, vec!["10.9.0.0/16".parse().unwrap()]);
        for _ in 0..3 {
            shares.take(ip("10.0.0.1")).unwrap();
        }
        assert!(shares.take(ip("10.0.0.1")).is_err(), "past its share");
        for _ in 0..2 {
            shares.take(ip("10.0.0.2")).unwrap();
        }
        let newcomer = shares.take(ip("10.0.0.3")).unwrap().unwrap();
        assert_eq!(
            shares.heavier_than(newcomer),
            [ip("10.0.0.1"), ip("10.0.0.2")]
        );
        assert_eq!(shares.heavier_than(ip("10.0.0.2")), [ip("10.0.0.1")]);
        assert!(shares.heavier_than(ip("10.0.0.1")).is_empty());
        assert_eq!(shares.take(ip("10.9.1.1")), Ok(None), "exempt");
        // Two addresses of one IPv6 /64 are one source.
        shares.take(ip("2001:db8::1")).unwrap();
        shares.take(ip("2001:db8::2")).unwrap();
        assert_eq!(
            shares.heavier_than(ip("10.0.0.3")),
            [ip("10.0.0.1"), ip("2001:db8::"), ip("10.0.0.2")]
        );
        for source in ["10.0.0.1", "10.0.0.1", "10.0.0.1", "10.0.0.2", "10.0.0.2"] {
            shares.give(ip(source));
        }
        shares.give(newcomer);
        shares.give(ip("2001:db8::"));
        shares.give(ip("2001:db8::"));
        assert_eq!(shares.held(), (0, 0));
    }
}
