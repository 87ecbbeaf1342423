//! The tenants' sync gates: every sync of a tenant's mirrored sources
//! moves its tenant's gate on, and one of them runs at a time, so a tenant
//! editing its sources gets no more syncs than one that leaves them alone.

use std::collections::HashMap;

use dialtone_sync::{now_millis, Id, MirrorState};

/// A sync starts no sooner after the previous one of its kind than this
/// many times that one's duration, whatever the source's interval says.
/// The interval is the tenant's (10 s at least), and a full read of
/// 96,000 entries took 2.9 s (BENCHMARKS.md, mirrored LDAP sources): at
/// 10 s a tenant's sources would keep a thread busy for good. Spaced, a
/// source's syncs take a twentieth of the time at most, and a directory
/// that takes 3 s to read is read in full at most once a minute.
pub(super) const SYNC_SPACING: i64 = 20;

/// Per tenant, the earliest a sync of any of its mirrored sources may start
/// (Unix ms). A source's own spacing is lost when its row changes: the new
/// task starts with an empty mirror and syncs at once. So every sync also
/// moves its tenant's gate [`SYNC_SPACING`] times its duration on, and a
/// tenant editing its sources again and again gets no more syncs than one
/// left alone. One sync of a tenant's runs at a time ([`SyncGates::start`]):
/// checked and moved only at the end, the gate let all of a tenant's due
/// sources (up to ten) start together. One entry per tenant that has
/// mirrored a source here and still exists ([`SyncGates::forget_gone`]).
#[derive(Default)]
pub(crate) struct SyncGates(std::sync::Mutex<HashMap<Id, Gate>>);

#[derive(Default)]
struct Gate {
    open_at: i64,
    /// What the last sync added to `open_at`.
    wait: i64,
    busy: bool,
}

impl Gate {
    /// `open_at`, but no later than the last wait from `now`, kept: moved
    /// on by a clock that has stepped back since, the gate held the
    /// tenant's syncs for the step's length.
    fn open_at(&mut self, now: i64) -> i64 {
        self.open_at = self.open_at.min(now.saturating_add(self.wait));
        self.open_at
    }
}

/// How often a source whose tenant has a sync running looks again.
const BUSY_RETRY_MS: i64 = 1000;

impl SyncGates {
    fn gates(&self) -> std::sync::MutexGuard<'_, HashMap<Id, Gate>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// When a sync of the tenant's may start: its gate, or soon if one of
    /// its syncs runs now.
    pub(super) fn open_at(&self, tenant: Id) -> i64 {
        let now = now_millis();
        match self.gates().get_mut(&tenant) {
            Some(gate) if gate.busy => now.saturating_add(BUSY_RETRY_MS),
            Some(gate) => gate.open_at(now),
            None => 0,
        }
    }

    /// The tenant's turn to sync, if its gate is open and none of its
    /// syncs runs; held until the sync ends (or its task does).
    pub(super) fn start(&self, tenant: Id, now: i64) -> Option<SyncTurn<'_>> {
        let mut gates = self.gates();
        let gate = gates.entry(tenant).or_default();
        if gate.busy || gate.open_at(now) > now {
            return None;
        }
        gate.busy = true;
        Some(SyncTurn {
            gates: self,
            tenant,
        })
    }

    /// A sync of `tenant`'s that ended at `ended` after `took` ms.
    pub(super) fn synced(&self, tenant: Id, ended: i64, took: u64) {
        let mut gates = self.gates();
        let gate = gates.entry(tenant).or_default();
        let wait = (took as i64).saturating_mul(SYNC_SPACING - 1);
        gate.wait = wait;
        gate.open_at = gate.open_at.max(ended).saturating_add(wait);
    }

    /// Drops the gates of deleted tenants, kept otherwise for the node's
    /// life. A live tenant keeps its gate with no mirrored source left:
    /// dropped, turning its sources' mirroring off and on would skip the
    /// spacing.
    pub(super) fn forget_gone(&self, state: &MirrorState) {
        self.gates()
            .retain(|tenant, _| state.tenant(*tenant).is_some());
    }
}

/// A tenant's one running sync; ends its turn when dropped, however the
/// sync ends (a panic included, or the tenant's syncs would stop for good).
pub(super) struct SyncTurn<'a> {
    gates: &'a SyncGates,
    tenant: Id,
}

impl Drop for SyncTurn<'_> {
    fn drop(&mut self) {
        if let Some(gate) = self.gates.gates().get_mut(&self.tenant) {
            gate.busy = false;
        }
    }
}

#[cfg(test)]
#[path = "gates_tests.rs"]
mod gates_tests;
