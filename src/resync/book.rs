//! The queue, the table, the spacing and the refetch watch list, under
//! the one lock the sender and every request share.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use dialtone_sync::{Id, Mac};
use tokio::time::Instant;

use super::queue::Queue;
use super::track::{State, Table};

/// A phone sent a resync less than `phone_spacing_s` ago.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spaced {
    /// Seconds since the last one left the queue.
    pub ago_s: u64,
    /// Seconds until another may be queued (at least 1).
    pub left_s: u64,
    pub spacing_s: u64,
}

impl std::fmt::Display for Spaced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "not queued: sent a resync {} s ago, and a phone is sent at most one every {} s; ask again in {} s",
            self.ago_s, self.spacing_s, self.left_s
        )
    }
}

/// The queue, the table and the refetch watch list, under one lock: a
/// resync moves between them in one step.
pub(super) struct Book {
    pub(super) queue: Queue,
    /// Each phone waiting in `queue`, by tenant: a second request for it
    /// gets the resync already waiting, so a tenant cannot fill the queue
    /// with one phone.
    pub(super) waiting: HashMap<(Id, Mac), u64>,
    /// Each phone's last resync to leave the queue, for `phone_spacing_s`
    /// after it left, and the same phones in the order they left: a phone
    /// that reboots on `check-sync` would otherwise reboot in a loop for as
    /// long as someone (a script, a double click) keeps asking, since it
    /// waits in the queue only until its tenant's next token.
    pub(super) sent: HashMap<(Id, Mac), (Instant, u64)>,
    pub(super) sent_order: VecDeque<(Instant, (Id, Mac))>,
    /// A monotonic clock's: a wall clock stepped back left the order
    /// unsorted and the wait to tell negative.
    pub(super) spacing: Duration,
    pub(super) table: Table,
    /// Sent resyncs whose refetch is not seen yet, oldest first.
    pub(super) watch: VecDeque<u64>,
}

impl Book {
    /// `seq` was taken from the queue to be sent: its phone may be queued
    /// again once `phone_spacing_s` have passed.
    pub(super) fn leaves_queue(&mut self, seq: u64, now: Instant) {
        if let Some(entry) = self.table.get(seq) {
            let key = (entry.tenant_id, entry.mac);
            if self.waiting.get(&key) == Some(&seq) {
                self.waiting.remove(&key);
            }
            if !self.spacing.is_zero() {
                self.forget_sent(now);
                self.sent.insert(key, (now, seq));
                self.sent_order.push_back((now, key));
            }
        }
    }

    /// Forgets sends older than the spacing: the two hold at most what
    /// the global rate sends in `phone_spacing_s`.
    fn forget_sent(&mut self, now: Instant) {
        while let Some(&(at, key)) = self.sent_order.front() {
            if now.saturating_duration_since(at) < self.spacing {
                break;
            }
            self.sent_order.pop_front();
            if self.sent.get(&key).is_some_and(|&(last, _)| last == at) {
                self.sent.remove(&key);
            }
        }
    }

    /// Whether `key`'s phone was sent a resync too recently for another.
    /// One that failed (no answer, an error status, no address) does not
    /// count: the phone did not act on it, and asking again is how an
    /// admin retries.
    pub(super) fn spaced(&mut self, key: (Id, Mac), now: Instant) -> Option<Spaced> {
        self.forget_sent(now);
        let &(at, seq) = self.sent.get(&key)?;
        let entry = self.table.get(seq)?;
        if entry.view.state == State::Failed {
            return None;
        }
        let ago = now.saturating_duration_since(at);
        let left = self.spacing.saturating_sub(ago);
        Some(Spaced {
            ago_s: ago.as_secs(),
            left_s: left.as_millis().div_ceil(1000).max(1) as u64,
            spacing_s: self.spacing.as_secs(),
        })
    }
}
