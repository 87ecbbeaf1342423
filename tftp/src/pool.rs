//! The render pool: where template renders run, so that none runs on the
//! TFTP listener or blocks an async worker, and one tenant's renders cannot
//! take every core.
//!
//! A render waits in its tenant's queue for a slot of the pool (`threads`),
//! then runs on tokio's blocking threads holding the slot until it really
//! ends. A caller stops waiting at the render's time budget; the render
//! itself stops on its fuel soon after, and only then frees its slot, so the
//! pool's bound is real. Waiting is bounded too: per tenant and overall,
//! past which a request is refused.
//!
//! Free slots go first to tenants running fewer than their share
//! (`per_tenant`), round robin, so a tenant that floods the pool cannot make
//! another wait behind its queue. A slot nobody under their share wants is
//! lent past the share (work-conserving: one tenant's cold cache renders on
//! every core), but only to a tenant whose renders have been quick: a lent
//! slot is taken back only when its render ends, so a tenant that ran a
//! render longer than `BORROW_LIMIT` lends nothing for `SLOW_FOR`. The most
//! another tenant can wait for a lent slot is then one such render per
//! `SLOW_FOR`, and a render is always budgeted.
//!
//! Admin list walks run on a second pool of the same kind (`WALKS`),
//! never on the render pool's slots: a walk may run for seconds and cannot
//! be stopped, so two tenants walking under their render shares held
//! every slot and every other tenant's phones waited behind them. That
//! lane lends nothing: a lent slot comes back only when its walk ends.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use dialtone_sync::Id;
use tokio::sync::oneshot;

use crate::error::{ProvisionError, TIME_BUDGET};

/// A render this long stops its tenant from borrowing slots past its share.
const BORROW_LIMIT: Duration = Duration::from_millis(5);
/// For how long.
const SLOW_FOR: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolOptions {
    /// Renders running at once; 0: one per core.
    pub threads: usize,
    /// Renders one tenant may run at once while others wait; 0: half the
    /// threads (at least 1).
    pub per_tenant: usize,
    /// Renders waiting for a slot, all tenants together.
    pub queue: usize,
    /// Renders one tenant may have waiting.
    pub tenant_queue: usize,
}

impl Default for PoolOptions {
    fn default() -> Self {
        PoolOptions {
            threads: 0,
            per_tenant: 0,
            queue: 4096,
            tenant_queue: 1024,
        }
    }
}

impl PoolOptions {
    fn threads(&self) -> usize {
        match self.threads {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        }
    }

    fn per_tenant(&self) -> usize {
        match self.per_tenant {
            0 => (self.threads() / 2).max(1),
            n => n.min(self.threads()),
        }
    }

    /// The walk lane beside a render pool of these options: half its
    /// threads, so walks do not take every core from renders, but at least
    /// two, so one tenant's long walk (up to its 10 s) never holds every
    /// other tenant's lists; one walk per tenant at a time, and a short
    /// queue (no longer than the render pool's, so an operator who shrinks
    /// that shrinks this too). Walks run on threads of their own, so a
    /// render shares a core with them and never waits for one.
    pub(crate) fn walk_lane(&self) -> PoolOptions {
        PoolOptions {
            threads: (self.threads() / 2).max(2),
            per_tenant: 1,
            queue: self.queue.clamp(1, WALK_QUEUE),
            tenant_queue: self.tenant_queue.clamp(1, WALK_TENANT_QUEUE),
        }
    }
}

/// What a pool is for: the names its metrics go under, and whether it
/// lends slots past a tenant's share.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lane {
    pub wait_seconds: &'static str,
    pub refused_total: &'static str,
    pub timeouts_total: &'static str,
    pub lends: bool,
}

/// Phones' renders, previews and checks.
pub const RENDERS: Lane = Lane {
    wait_seconds: "dialtone_render_pool_wait_seconds",
    refused_total: "dialtone_render_pool_refused_total",
    timeouts_total: "dialtone_render_pool_timeouts_total",
    lends: true,
};

/// Tenants' admin list walks.
pub const WALKS: Lane = Lane {
    wait_seconds: "dialtone_list_walk_wait_seconds",
    refused_total: "dialtone_list_walks_refused_total",
    timeouts_total: "dialtone_list_walk_timeouts_total",
    lends: false,
};

/// Walks waiting, all tenants together, and one tenant's: a list is a
/// person (or a script) waiting for an answer, told to retry past these.
const WALK_QUEUE: usize = 64;
const WALK_TENANT_QUEUE: usize = 4;

/// The `reason` label of a lane's refusals (`refused_total`): `full`, the
/// pool's whole queue (`queue`) is waiting; `tenant_share`, the job's
/// owner holds its share of the queue (`tenant_queue`, or a quarter of
/// the room the others leave) while there is room for others.
pub const REFUSAL_REASONS: &[&str] = &["tenant_share", "full"];

/// `None` is renders for no known phone (common files).
type Owner = Option<Id>;

#[derive(Default)]
struct Tenant {
    running: usize,
    queue: VecDeque<oneshot::Sender<Slot>>,
    slow_until: Option<Instant>,
}

impl Tenant {
    fn may_borrow(&self, now: Instant) -> bool {
        self.slow_until.is_none_or(|until| until <= now)
    }

    fn idle(&self, now: Instant) -> bool {
        self.running == 0 && self.queue.is_empty() && self.may_borrow(now)
    }
}

struct Schedule {
    free: usize,
    waiting: usize,
    tenants: HashMap<Owner, Tenant>,
    /// Tenants with renders waiting, in the order they are next served.
    turns: VecDeque<Owner>,
}

struct Inner {
    lane: Lane,
    per_tenant: usize,
    queue: usize,
    tenant_queue: usize,
    schedule: Mutex<Schedule>,
}

/// A pool slot held by one render; handing it back serves the next waiter.
struct Slot {
    inner: Arc<Inner>,
    owner: Owner,
    started: Option<Instant>,
    /// False for a slot that never reached its caller: nothing to hand back.
    counted: bool,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if !self.counted {
            return;
        }
        let now = Instant::now();
        let mut schedule = self.inner.lock();
        schedule.free += 1;
        if let Some(tenant) = schedule.tenants.get_mut(&self.owner) {
            tenant.running -= 1;
            if self.inner.lane.lends && self.started.is_some_and(|s| now - s > BORROW_LIMIT) {
                tenant.slow_until = Some(now + SLOW_FOR);
            }
            if tenant.idle(now) {
                schedule.tenants.remove(&self.owner);
            }
        }
        self.inner.dispatch(&mut schedule, now);
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Schedule> {
        self.schedule.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands free slots to waiters: first to tenants under their share in
    /// turn, then, if any slot is left, to tenants allowed to borrow.
    fn dispatch(self: &Arc<Self>, schedule: &mut Schedule, now: Instant) {
        while schedule.free > 0 {
            let under_share = |t: &Tenant| t.running < self.per_tenant;
            let borrower = |t: &Tenant| self.lane.lends && t.may_borrow(now);
            let Some(position) = schedule
                .turns
                .iter()
                .position(|o| schedule.tenants.get(o).is_some_and(under_share))
                .or_else(|| {
                    schedule
                        .turns
                        .iter()
                        .position(|o| schedule.tenants.get(o).is_some_and(borrower))
                })
            else {
                return;
            };
            let Some(owner) = schedule.turns.remove(position) else {
                return;
            };
            let Some(tenant) = schedule.tenants.get_mut(&owner) else {
                continue;
            };
            let Some(waiter) = tenant.queue.pop_front() else {
                continue;
            };
            schedule.waiting -= 1;
            if !tenant.queue.is_empty() {
                schedule.turns.push_back(owner);
            }
            if waiter.is_closed() {
                continue; // its caller stopped waiting
            }
            tenant.running += 1;
            schedule.free -= 1;
            let slot = Slot {
                inner: self.clone(),
                owner,
                started: None,
                counted: true,
            };
            // A caller that went away since the check above: the slot goes
            // to the next waiter. (One that goes away after this hands it
            // back from its own thread, once this lock is released.)
            if let Err(mut slot) = waiter.send(slot) {
                slot.counted = false;
                schedule.free += 1;
                if let Some(tenant) = schedule.tenants.get_mut(&owner) {
                    tenant.running -= 1;
                }
            }
        }
    }

    /// Why a render of `owner`'s may not wait now, if so: one of
    /// [`REFUSAL_REASONS`]. An owner holds at most `tenant_queue` waiting,
    /// and at most a quarter of the room the other owners leave: with a
    /// fixed quarter each, four tenants (or three and the phones no tenant
    /// owns) filled the queue and every other tenant's miss was "busy".
    fn refusal(&self, s: &Schedule, owner: Owner) -> Option<&'static str> {
        if s.waiting >= self.queue {
            return Some("full");
        }
        let own = s.tenants.get(&owner).map_or(0, |t| t.queue.len());
        let left = self.queue.saturating_sub(s.waiting - own);
        let share = left.div_ceil(4).min(self.tenant_queue);
        (own >= share).then_some("tenant_share")
    }

    /// Drops waiters whose callers have gone, so they do not count against
    /// the queue bounds.
    fn prune(schedule: &mut Schedule) {
        let mut removed = 0;
        for tenant in schedule.tenants.values_mut() {
            let before = tenant.queue.len();
            tenant.queue.retain(|w| !w.is_closed());
            removed += before - tenant.queue.len();
        }
        schedule.waiting -= removed;
        let Schedule { turns, tenants, .. } = schedule;
        turns.retain(|o| tenants.get(o).is_some_and(|t| !t.queue.is_empty()));
    }
}

pub struct RenderPool {
    inner: Arc<Inner>,
}

impl RenderPool {
    pub fn new(options: PoolOptions, lane: Lane) -> Self {
        RenderPool {
            inner: Arc::new(Inner {
                lane,
                per_tenant: options.per_tenant(),
                queue: options.queue.max(1),
                tenant_queue: options.tenant_queue.max(1),
                schedule: Mutex::new(Schedule {
                    free: options.threads(),
                    waiting: 0,
                    tenants: HashMap::new(),
                    turns: VecDeque::new(),
                }),
            }),
        }
    }

    /// Jobs waiting for a slot now, all tenants together (a waiter whose
    /// caller left may count until the next refusal prunes it). For tests,
    /// which wait for jobs to queue rather than sleep, and for monitoring.
    pub fn waiting(&self) -> usize {
        self.inner.lock().waiting
    }

    fn enter(&self, owner: Owner) -> Result<oneshot::Receiver<Slot>, ProvisionError> {
        let inner = &self.inner;
        let mut schedule = inner.lock();
        if inner.refusal(&schedule, owner).is_some() {
            Inner::prune(&mut schedule);
            if let Some(reason) = inner.refusal(&schedule, owner) {
                metrics::counter!(inner.lane.refused_total, "reason" => reason).increment(1);
                return Err(ProvisionError::Busy);
            }
        }
        let now = Instant::now();
        // Tenants remembered only as slow are forgotten once that passes.
        if schedule.tenants.len() > 1024 {
            schedule.tenants.retain(|_, t| !t.idle(now));
        }
        let (sender, receiver) = oneshot::channel();
        let tenant = schedule.tenants.entry(owner).or_default();
        if tenant.queue.is_empty() {
            schedule.turns.push_back(owner);
        }
        let tenant = schedule.tenants.entry(owner).or_default();
        tenant.queue.push_back(sender);
        schedule.waiting += 1;
        inner.dispatch(&mut schedule, now);
        Ok(receiver)
    }

    /// Runs `job` for `tenant` on the pool; waits for it at most `time`
    /// once it has started. `label` names the work in errors.
    pub async fn run<T, F>(
        &self,
        tenant: Option<Id>,
        time: Duration,
        label: &str,
        job: F,
    ) -> Result<T, ProvisionError>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, ProvisionError> + Send + 'static,
    {
        let queued = Instant::now();
        let mut slot = self
            .enter(tenant)?
            .await
            .map_err(|_| ProvisionError::Busy)?;
        metrics::histogram!(self.inner.lane.wait_seconds).record(queued.elapsed().as_secs_f64());
        let task = tokio::task::spawn_blocking(move || {
            slot.started = Some(Instant::now());
            let _slot = slot;
            job()
        });
        // The engine checks the same deadline itself; the slack covers a
        // render that is between two checks.
        match tokio::time::timeout(time + Duration::from_millis(50), task).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(ProvisionError::Render {
                template: label.to_string(),
                line: None,
                column: None,
                message: "the render failed".into(),
            }),
            Err(_) => {
                metrics::counter!(self.inner.lane.timeouts_total).increment(1);
                Err(ProvisionError::Render {
                    template: label.to_string(),
                    line: None,
                    column: None,
                    // Its prefix tells the failure memo and the self-check
                    // that the inputs may well render next time.
                    message: format!("{TIME_BUDGET} of {} ms", time.as_millis()),
                })
            }
        }
    }
}

#[cfg(test)]
#[path = "pool_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "walk_tests.rs"]
mod walk_tests;
