//! What became of each resync, in memory and bounded: newest last, and
//! when full the oldest finished entry goes first. Entries are per node
//! and do not survive a restart; they are a view of recent work, not a
//! record (the audit log records who asked).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use dialtone_sync::{Id, Mac, Millis};
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Queued,
    Sent,
    Answered,
    Failed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    Proxy,
    Direct,
}

/// One resync as the API shows it. Times are Unix milliseconds.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Resync {
    pub id: String,
    pub tenant: String,
    pub mac: String,
    pub family: String,
    /// The `Event` header sent.
    pub event: String,
    /// The Request-URI: the address of record of the phone's first line.
    pub target: String,
    pub via: Via,
    pub state: State,
    /// The final SIP status, once there is one.
    pub status: Option<u16>,
    /// The final response's reason phrase, or why there is none.
    pub reason: Option<String>,
    pub queued_at: Millis,
    pub sent_at: Option<Millis>,
    /// When the final response arrived.
    pub answered_at: Option<Millis>,
    /// The phone's first fetch of its own configuration after `sent_at`.
    pub refetched_at: Option<Millis>,
}

/// A tracked resync with what the API does not show.
#[derive(Clone, Debug)]
pub struct Entry {
    pub tenant_id: Id,
    pub mac: Mac,
    pub view: Resync,
}

impl Entry {
    fn finished(&self) -> bool {
        matches!(self.view.state, State::Answered | State::Failed)
    }
}

pub struct Table {
    capacity: usize,
    entries: BTreeMap<u64, Entry>,
    /// Each tenant's entries, oldest first: a tenant's list, and the
    /// eviction of the heaviest tenant's oldest, read these rather than
    /// scanning every tenant's entries under the one lock the sender and
    /// every request share.
    by_tenant: HashMap<Id, BTreeSet<u64>>,
}

impl Table {
    pub fn new(capacity: usize) -> Table {
        Table {
            capacity: capacity.max(1),
            entries: BTreeMap::new(),
            by_tenant: HashMap::new(),
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Adds an entry, making room first: the oldest finished entry of the
    /// tenant holding the most goes, so tenants that resync thousands of
    /// phones age out their own results, not a small tenant's. Then the
    /// oldest finished of anyone's, and only when nothing has finished
    /// (which the queue bounds keep from happening) the oldest.
    pub fn insert(&mut self, seq: u64, entry: Entry) {
        self.remove(seq);
        while self.entries.len() >= self.capacity {
            let heaviest = (self.by_tenant.iter())
                .max_by_key(|(_, seqs)| seqs.len())
                .map(|(t, _)| *t);
            let finished = |seq: &&u64| self.entries.get(seq).is_some_and(Entry::finished);
            let heaviests_oldest_finished = heaviest
                .and_then(|t| self.by_tenant.get(&t))
                .and_then(|seqs| seqs.iter().find(finished).copied());
            let victim = heaviests_oldest_finished
                .or_else(|| {
                    self.entries
                        .iter()
                        .find(|(_, e)| e.finished())
                        .map(|(k, _)| *k)
                })
                .or_else(|| self.entries.keys().next().copied());
            match victim {
                Some(k) => self.remove(k),
                None => break,
            };
        }
        self.by_tenant
            .entry(entry.tenant_id)
            .or_default()
            .insert(seq);
        self.entries.insert(seq, entry);
    }

    /// Drops an entry that never was (a request's held resync withdrawn).
    pub fn forget(&mut self, seq: u64) {
        self.remove(seq);
    }

    fn remove(&mut self, seq: u64) {
        let Some(gone) = self.entries.remove(&seq) else {
            return;
        };
        if let Some(seqs) = self.by_tenant.get_mut(&gone.tenant_id) {
            seqs.remove(&seq);
            if seqs.is_empty() {
                self.by_tenant.remove(&gone.tenant_id);
            }
        }
    }

    pub fn get(&self, seq: u64) -> Option<&Entry> {
        self.entries.get(&seq)
    }

    pub fn get_mut(&mut self, seq: u64) -> Option<&mut Entry> {
        self.entries.get_mut(&seq)
    }

    /// Newest first, at most `limit` of `tenant`'s (or everyone's), those
    /// `keep` says yes to.
    pub fn newest(
        &self,
        tenant: Option<Id>,
        limit: usize,
        keep: impl Fn(&Entry) -> bool,
    ) -> Vec<Resync> {
        let entries: Box<dyn Iterator<Item = &Entry>> = match tenant {
            Some(t) => Box::new(
                self.by_tenant
                    .get(&t)
                    .into_iter()
                    .flat_map(|seqs| seqs.iter().rev())
                    .filter_map(|seq| self.entries.get(seq)),
            ),
            None => Box::new(self.entries.values().rev()),
        };
        entries
            .filter(|e| keep(e))
            .take(limit)
            .map(|e| e.view.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(state: State) -> Entry {
        Entry {
            tenant_id: 1,
            mac: "001565000001".parse().unwrap(),
            view: Resync {
                id: String::new(),
                tenant: "acme".into(),
                mac: "001565000001".into(),
                family: "yealink".into(),
                event: "check-sync".into(),
                target: "sip:1@x".into(),
                via: Via::Proxy,
                state,
                status: None,
                reason: None,
                queued_at: 0,
                sent_at: None,
                answered_at: None,
                refetched_at: None,
            },
        }
    }

    /// A tenant resyncing many phones ages out its own results, not those
    /// of a tenant that resynced a few.
    #[test]
    fn the_tenant_holding_the_most_loses_its_oldest_first() {
        let mut t = Table::new(10);
        let of = |tenant: Id| Entry {
            tenant_id: tenant,
            ..entry(State::Answered)
        };
        t.insert(1, of(2));
        t.insert(2, of(2));
        for seq in 3..40 {
            t.insert(seq, of(1));
        }
        assert_eq!(t.len(), 10);
        assert!(
            t.get(1).is_some() && t.get(2).is_some(),
            "the small tenant's stay"
        );
        assert_eq!(t.by_tenant.get(&1).map(BTreeSet::len), Some(8));
        assert_eq!(t.by_tenant.get(&2).map(BTreeSet::len), Some(2));
        // Each tenant's list is its own, newest first, and in step.
        let small: Vec<String> = t
            .newest(Some(2), 10, |_| true)
            .into_iter()
            .map(|r| r.tenant)
            .collect();
        assert_eq!(small.len(), 2);
        assert_eq!(t.newest(Some(1), 100, |_| true).len(), 8);
        assert_eq!(t.by_tenant[&1].len(), 8);
        assert_eq!(t.by_tenant[&1].first(), Some(&32));
        assert!(t.newest(Some(3), 10, |_| true).is_empty());
    }

    #[test]
    fn a_full_table_drops_the_oldest_finished_first() {
        let mut t = Table::new(3);
        t.insert(1, entry(State::Queued));
        t.insert(2, entry(State::Answered));
        t.insert(3, entry(State::Failed));
        t.insert(4, entry(State::Queued));
        assert!(t.get(1).is_some() && t.get(2).is_none() && t.get(3).is_some());
        t.insert(5, entry(State::Sent));
        assert!(t.get(3).is_none());
        // Nothing finished: the oldest goes, the bound holds.
        t.insert(6, entry(State::Queued));
        assert!(t.get(1).is_none());
        assert_eq!(t.len(), 3);
        let ids: Vec<_> = t.entries.keys().rev().copied().collect();
        assert_eq!(ids, [6, 5, 4]);
        assert_eq!(t.newest(None, 2, |_| true).len(), 2);
    }
}
