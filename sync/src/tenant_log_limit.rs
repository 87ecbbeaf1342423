//! A per-tenant bound on log lines, for events a tenant (or anyone naming
//! one of its phones) can cause at will.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::log_limit::monotonic_millis;
use crate::model::Id;

/// Lines a second across every tenant: each tenant's one a second must
/// not add up to a flood when many tenants fail at once.
pub const NODE_LINES_PER_SECOND: u32 = 20;
/// Tenants tracked at once; past it, untracked tenants share one line a
/// second, so the table's memory is bounded whatever the traffic names.
pub const MAX_TRACKED_TENANTS: usize = 1024;
/// A tenant quiet this long is forgotten, its skipped count with it.
const IDLE_MS: i64 = 60_000;
const LINE_INTERVAL_MS: i64 = 1000;

/// One log line a second per tenant and at most [`NODE_LINES_PER_SECOND`]
/// across them: one tenant's flood of an event (a failing template
/// fetched in a loop, its phones asked for from outside its networks)
/// must not hide another tenant's line of the same kind, as one
/// [`crate::LogLimit`] for the whole process did.
pub struct TenantLogLimit {
    node_lines_per_second: u32,
    max_tenants: usize,
    state: Mutex<State>,
}

struct State {
    tenants: BTreeMap<Id, Slot>,
    /// Tenants that found the table full share this one.
    untracked: Slot,
    window_start: i64,
    lines_in_window: u32,
    last_prune: i64,
}

#[derive(Clone, Copy)]
struct Slot {
    last_line: i64,
    last_seen: i64,
    skipped: u64,
}

impl Slot {
    const NEW: Slot = Slot {
        last_line: i64::MIN,
        last_seen: i64::MIN,
        skipped: 0,
    };
}

impl Default for TenantLogLimit {
    fn default() -> TenantLogLimit {
        TenantLogLimit::new()
    }
}

impl TenantLogLimit {
    pub const fn new() -> TenantLogLimit {
        TenantLogLimit::with_limits(NODE_LINES_PER_SECOND, MAX_TRACKED_TENANTS)
    }

    pub const fn with_limits(node_lines_per_second: u32, max_tenants: usize) -> TenantLogLimit {
        TenantLogLimit {
            node_lines_per_second,
            max_tenants,
            state: Mutex::new(State {
                tenants: BTreeMap::new(),
                untracked: Slot::NEW,
                window_start: i64::MIN,
                lines_in_window: 0,
                last_prune: i64::MIN,
            }),
        }
    }

    /// `Some(this tenant's lines left out since its last one)` when a line
    /// about `tenant` may be written. When the table is full, a tenant not
    /// in it is counted with every other such tenant: `skipped` is theirs
    /// together.
    pub fn allow(&self, tenant: Id) -> Option<u64> {
        self.allow_at(tenant, monotonic_millis())
    }

    fn allow_at(&self, tenant: Id, now: i64) -> Option<u64> {
        // A panic while holding it left only counters behind.
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let state = &mut *state;
        if !state.tenants.contains_key(&tenant) && state.tenants.len() >= self.max_tenants {
            state.prune(now);
        }
        let slot = if state.tenants.len() < self.max_tenants {
            state.tenants.entry(tenant).or_insert(Slot::NEW)
        } else {
            state
                .tenants
                .get_mut(&tenant)
                .unwrap_or(&mut state.untracked)
        };
        slot.last_seen = now;
        let due = slot.last_line <= now.saturating_sub(LINE_INTERVAL_MS);
        if now.saturating_sub(state.window_start) >= LINE_INTERVAL_MS {
            state.window_start = now;
            state.lines_in_window = 0;
        }
        if !due || state.lines_in_window >= self.node_lines_per_second {
            slot.skipped += 1;
            return None;
        }
        state.lines_in_window += 1;
        slot.last_line = now;
        Some(std::mem::take(&mut slot.skipped))
    }

    /// Tenants currently tracked.
    pub fn tracked(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .tenants
            .len()
    }
}

impl State {
    /// At most once a second, however many new tenants find the table
    /// full: each pass walks all of it.
    fn prune(&mut self, now: i64) {
        if now.saturating_sub(self.last_prune) < LINE_INTERVAL_MS {
            return;
        }
        self.last_prune = now;
        self.tenants.retain(|_, slot| {
            // Due for a line with nothing skipped: the same as absent.
            let nothing_held =
                slot.skipped == 0 && slot.last_line <= now.saturating_sub(LINE_INTERVAL_MS);
            let idle = slot.last_seen <= now.saturating_sub(IDLE_MS);
            !(nothing_held || idle)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_tenant_gets_its_line_in_the_same_second() {
        let limit = TenantLogLimit::new();
        assert_eq!(limit.allow_at(1, 0), Some(0));
        for _ in 0..100 {
            assert_eq!(limit.allow_at(1, 10), None);
        }
        assert_eq!(limit.allow_at(2, 20), Some(0));
        assert_eq!(limit.allow_at(2, 30), None);
        assert_eq!(limit.allow_at(1, 1000), Some(100), "tenant 1's own count");
        assert_eq!(limit.allow_at(2, 1020), Some(1), "tenant 2's own count");
    }

    #[test]
    fn a_tenant_past_the_node_wide_cap_is_suppressed_and_counted() {
        let limit = TenantLogLimit::with_limits(2, 100);
        assert_eq!(limit.allow_at(1, 0), Some(0));
        assert_eq!(limit.allow_at(2, 0), Some(0));
        assert_eq!(limit.allow_at(3, 0), None);
        assert_eq!(limit.allow_at(3, 1000), Some(1));
    }

    #[test]
    fn the_table_is_bounded_and_full_falls_back_to_one_shared_line() {
        let limit = TenantLogLimit::with_limits(1000, 4);
        for tenant in 0..4 {
            limit.allow_at(tenant, 0);
            limit.allow_at(tenant, 1);
        }
        for tenant in 4..1000 {
            limit.allow_at(tenant, 2);
        }
        assert_eq!(limit.tracked(), 4);
        // Untracked tenants share one line a second.
        assert_eq!(limit.allow_at(5000, 500), None);
        assert_eq!(limit.allow_at(5001, 1002), Some(996));
        assert_eq!(limit.allow_at(5002, 1003), None);
    }

    #[test]
    fn idle_tenants_make_room() {
        let limit = TenantLogLimit::with_limits(1000, 2);
        limit.allow_at(1, 0);
        limit.allow_at(1, 1);
        limit.allow_at(2, 0);
        limit.allow_at(2, 1);
        // Both still hold a skipped line, so nothing is pruned yet.
        assert_eq!(limit.allow_at(3, 500), Some(0), "the untracked line");
        assert_eq!(limit.tracked(), 2);
        // Past the idle time, tenant 3 gets a place of its own.
        assert_eq!(limit.allow_at(3, IDLE_MS + 10), Some(0));
        assert_eq!(limit.allow_at(4, IDLE_MS + 20), Some(0));
        assert_eq!(limit.tracked(), 2);
        assert_eq!(limit.allow_at(3, IDLE_MS + 30), None);
    }
}
