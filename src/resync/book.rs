//! The queue, the table, the spacing and the refetch watch list, under
//! the one lock the sender and every request share.
//!
//! A resync waits, and is spaced, both as its phone's and as its
//! target's: the Request-URI is made of tenant data, so a tenant can give
//! many phones one address of record and register any contact for it. Kept
//! apart by phone alone, one request then reached that contact once per
//! phone (and each unanswered NOTIFY five more times, retransmitted).
//! Both wait until the NOTIFY goes on the wire, and are spaced from then.

use std::collections::HashMap;

use dialtone_sync::Mac;
use tokio::time::Instant;

use super::queue::Queue;
use super::refetch::Watch;
use super::spacing::{Key, Spaced, Spacing};
use super::track::{Entry, State, Table};

/// Why a queued resync ended unsent at shutdown.
pub(super) const DROPPED: &str =
    "not sent: the node shut down before its turn (queued resyncs are not kept across a restart); ask again";

/// A resync of the phone, or to the address, that waits: the same address
/// gets one NOTIFY at a time, whichever of the tenant's phones asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SameTarget {
    /// The phone whose resync carries the NOTIFY.
    pub mac: Mac,
    pub target: String,
}

impl std::fmt::Display for SameTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "not queued: phone {}'s resync to the same line-1 address {} is waiting, and an address is sent one resync at a time",
            self.mac, self.target
        )
    }
}

/// The queue, the table and the refetch watch list, under one lock: a
/// resync moves between them in one step.
pub(super) struct Book {
    pub(super) queue: Queue,
    /// Each phone and each target with a resync not sent yet (waiting in
    /// `queue`, or taken from it and not yet on the wire): a second request
    /// for either gets the resync already waiting (or, for another phone
    /// with the same target, a reason), so a tenant can fill the queue
    /// neither with one phone nor with one address.
    waiting: HashMap<Key, u64>,
    /// The keys each resync in `waiting` holds, as it was queued: its line
    /// may change before it is sent.
    waiting_as: HashMap<u64, [Key; 2]>,
    pub(super) spacing: Spacing,
    pub(super) table: Table,
    /// Answered resyncs whose refetch is not seen yet.
    pub(super) watch: Watch,
    /// Set once the task stopped for good (shutdown): what a request
    /// releases after that is dropped, not queued for a sender that is gone.
    pub(super) stopped: bool,
}

impl Book {
    pub(super) fn new(queue: Queue, spacing: Spacing, table: Table, watch: Watch) -> Book {
        Book {
            queue,
            waiting: HashMap::new(),
            waiting_as: HashMap::new(),
            spacing,
            table,
            watch,
            stopped: false,
        }
    }

    /// The keys `seq` is spaced as, as planned last.
    pub(super) fn keys(&self, seq: u64) -> Option<[Key; 2]> {
        let entry = self.table.get(seq)?;
        Some([
            Key::phone(entry.tenant_id, entry.mac),
            Key::target(entry.tenant_id, &entry.view.target),
        ])
    }

    /// The tracked resync not sent yet that holds `key`.
    pub(super) fn waiting(&self, key: &Key) -> Option<&Entry> {
        self.table.get(*self.waiting.get(key)?)
    }

    /// `seq`, just queued, holds its phone and its target.
    pub(super) fn wait_as(&mut self, seq: u64, keys: [Key; 2]) {
        for key in &keys {
            self.waiting.insert(key.clone(), seq);
        }
        self.waiting_as.insert(seq, keys);
    }

    /// `seq` is sent, or will never be: its phone and target are free.
    pub(super) fn unwait(&mut self, seq: u64) {
        for key in self.waiting_as.remove(&seq).into_iter().flatten() {
            if self.waiting.get(&key) == Some(&seq) {
                self.waiting.remove(&key);
            }
        }
    }

    /// Ends resyncs that will never be sent (the node is shutting down):
    /// failed, with the reason, and no longer waiting.
    pub(super) fn drop_unsent(&mut self, seqs: &[u64]) {
        for &seq in seqs {
            self.unwait(seq);
            if let Some(entry) = self.table.get_mut(seq) {
                entry.view.state = State::Failed;
                entry.view.reason = Some(DROPPED.into());
            }
        }
    }

    /// Whether any of `keys` (a phone's, then its target's) was sent a
    /// resync too recently for another.
    pub(super) fn spaced(&mut self, keys: &[Key], now: Instant) -> Option<Spaced> {
        keys.iter().find_map(|key| {
            let mut spaced = self.spacing.check(key, now)?;
            if let Key::Target(..) = key {
                spaced.target = self.spaced_target(key);
            }
            Some(spaced)
        })
    }

    /// The Request-URI of the resync that spaces `key`, as sent.
    fn spaced_target(&self, key: &Key) -> Option<String> {
        let entry = self.table.get(self.spacing.seq_of(key)?);
        Some(entry.map_or_else(
            || "the same line-1 address".to_string(),
            |e| e.view.target.clone(),
        ))
    }

    /// Resync `seq`, planned again, is about to go on the wire: its phone
    /// and the target it goes to now are spaced from here, in the same
    /// step as they stop waiting. A target other than the one it was
    /// queued for must be neither waiting nor spaced, or a tenant could
    /// queue phones with distinct lines and give them all one line before
    /// their turn.
    pub(super) fn sending(&mut self, seq: u64, now: Instant) -> Result<(), String> {
        let Some(keys) = self.keys(seq) else {
            return Ok(());
        };
        let queued = self.waiting_as.get(&seq).map(|[_, target]| target);
        if queued.is_some_and(|queued| *queued != keys[1]) {
            let target = self.table.get(seq).map(|e| e.view.target.clone());
            let target = target.unwrap_or_default();
            if let Some(other) = self.waiting(&keys[1]) {
                return Err(format!(
                    "not sent: line 1 changed to {target} after the resync was queued, and phone {}'s resync to it is waiting",
                    other.mac
                ));
            }
            if let Some(spaced) = self.spacing.check(&keys[1], now) {
                return Err(format!(
                    "not sent: line 1 changed to {target} after the resync was queued, and it was sent a resync {} s ago; ask again in {} s",
                    spaced.ago_s, spaced.left_s
                ));
            }
        }
        self.unwait(seq);
        self.spacing.sent(&keys, seq, now);
        Ok(())
    }
}
