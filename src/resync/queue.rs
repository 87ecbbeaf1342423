//! Resyncs waiting to be sent: FIFO per tenant, tenants served round robin,
//! each send taking a token from the global bucket and from its tenant's.
//! A tenant that asks for thousands waits behind its own bucket, and
//! another tenant's single resync goes out on the next round.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use dialtone_sync::Id;
use tokio::time::Instant;

/// A token bucket holding at most a second's worth of tokens.
#[derive(Clone, Debug)]
struct Bucket {
    tokens: f64,
    rate: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: u32, now: Instant) -> Bucket {
        let rate = f64::from(rate.max(1));
        Bucket {
            tokens: rate,
            rate,
            at: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        self.at = now;
    }

    fn ready(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= 1.0
    }

    /// When the next token is there (after a `ready` that said no).
    fn next_token(&self) -> Instant {
        self.at + Duration::from_secs_f64(((1.0 - self.tokens) / self.rate).max(0.0))
    }

    fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= self.rate
    }
}

/// Why a batch cannot be queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Full {
    Global,
    Tenant,
}

/// What the sender does next.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Send this resync (its tracking sequence number).
    Send(u64),
    /// Nothing may go before this instant (`None`: nothing is queued, or
    /// what is queued waits for a tenant's NOTIFYs to be answered).
    Wait(Option<Instant>),
}

pub struct Queue {
    limit: usize,
    tenant_limit: usize,
    tenant_rate: u32,
    global: Bucket,
    waiting: HashMap<Id, VecDeque<u64>>,
    /// Places held for a request until its audit row is written
    /// ([`Queue::reserve`]): counted as waiting, not yet sendable.
    reserved: HashMap<Id, usize>,
    /// Buckets outlive their queues, so emptying a queue does not refill it.
    buckets: HashMap<Id, Bucket>,
    /// Tenants with something waiting, in serving order.
    rotation: VecDeque<Id>,
    len: usize,
    /// Sent and not yet finished, by resync and by tenant.
    inflight: HashMap<u64, Id>,
    inflight_of: HashMap<Id, usize>,
    inflight_limit: usize,
}

/// A tenant may fill at most this part of the room other tenants leave.
const TENANT_PART_OF_ROOM: usize = 4;

/// Tenants' idle buckets are forgotten past this many (a forgotten bucket
/// is a full one, which is what an idle bucket is anyway).
const BUCKETS_KEPT: usize = 4096;

impl Queue {
    pub fn new(limit: usize, tenant_limit: usize, rate: u32, tenant_rate: u32) -> Queue {
        Queue {
            limit,
            tenant_limit,
            tenant_rate,
            global: Bucket::new(rate, Instant::now()),
            waiting: HashMap::new(),
            reserved: HashMap::new(),
            buckets: HashMap::new(),
            rotation: VecDeque::new(),
            len: 0,
            inflight: HashMap::new(),
            inflight_of: HashMap::new(),
            inflight_limit: usize::MAX,
        }
    }

    /// At most `limit` sent and unanswered at once, and a tenant at most a
    /// quarter of what the other tenants leave of them: a tenant whose
    /// phones never answer holds each NOTIFY until timer F (32 s by
    /// default), and at its rate would otherwise hold enough of them to
    /// slow every other tenant's resyncs. The sender's semaphore holds the
    /// overall bound; this one decides whose turn may use a free place.
    pub fn limit_inflight(mut self, limit: usize) -> Queue {
        self.inflight_limit = limit.max(1);
        self
    }

    /// Whether `tenant` may have one more in flight.
    fn may_send(&self, tenant: Id) -> bool {
        let own = self.inflight_of.get(&tenant).copied().unwrap_or(0);
        let others = self.inflight.len() - own;
        let share = self
            .inflight_limit
            .saturating_sub(others)
            .div_ceil(TENANT_PART_OF_ROOM);
        own < share
    }

    /// Resync `seq`, returned by [`Queue::pop`], has its answer (or will
    /// never get one): its tenant's place is free again.
    pub fn finished(&mut self, seq: u64) {
        let Some(tenant) = self.inflight.remove(&seq) else {
            return;
        };
        if let Some(n) = self.inflight_of.get_mut(&tenant) {
            *n -= 1;
            if *n == 0 {
                self.inflight_of.remove(&tenant);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// How many more of `tenant`'s fit: at most `tenant_limit` waiting,
    /// and at most a quarter of the room the other tenants leave, so a few
    /// tenants together never fill the queue for everyone else (each new
    /// one gets a quarter of what is left). `Full::Global` when the others
    /// leave no room at all, `Full::Tenant` when this tenant holds its
    /// share.
    pub fn room(&self, tenant: Id) -> Result<usize, Full> {
        let own = self.waiting.get(&tenant).map_or(0, VecDeque::len)
            + self.reserved.get(&tenant).copied().unwrap_or(0);
        let left = self.limit.saturating_sub(self.len - own);
        let share = left.div_ceil(TENANT_PART_OF_ROOM).min(self.tenant_limit);
        match share.saturating_sub(own) {
            0 if share == 0 => Err(Full::Global),
            0 => Err(Full::Tenant),
            room => Ok(room),
        }
    }

    /// Whether `n` more of `tenant`'s fit.
    pub fn check(&self, tenant: Id, n: usize) -> Result<(), Full> {
        if n > self.room(tenant)? {
            return Err(Full::Tenant);
        }
        Ok(())
    }

    /// Queues `items` of one tenant, all or none: the tests' way in; the
    /// service reserves first (`enqueue.rs`).
    #[cfg(test)]
    pub fn push(&mut self, tenant: Id, items: &[u64]) -> Result<(), Full> {
        if items.is_empty() {
            return Ok(());
        }
        self.check(tenant, items.len())?;
        self.append(tenant, items);
        Ok(())
    }

    /// Holds `n` places of `tenant`'s, all or none: the room is taken
    /// now, while nothing can be sent before [`Queue::push_reserved`].
    pub fn reserve(&mut self, tenant: Id, n: usize) -> Result<(), Full> {
        if n == 0 {
            return Ok(());
        }
        self.check(tenant, n)?;
        *self.reserved.entry(tenant).or_default() += n;
        self.len += n;
        Ok(())
    }

    /// Gives back `n` of `tenant`'s reserved places.
    pub fn unreserve(&mut self, tenant: Id, n: usize) {
        let Some(held) = self.reserved.get_mut(&tenant) else {
            return;
        };
        let n = n.min(*held);
        *held -= n;
        if *held == 0 {
            self.reserved.remove(&tenant);
        }
        self.len -= n;
    }

    /// Queues `items` in places reserved for them. Not checked again:
    /// others' pushes since may have shrunk this tenant's share, but the
    /// places were counted as taken all along.
    pub fn push_reserved(&mut self, tenant: Id, items: &[u64]) {
        self.unreserve(tenant, items.len());
        self.append(tenant, items);
    }

    fn append(&mut self, tenant: Id, items: &[u64]) {
        if items.is_empty() {
            return;
        }
        let queue = self.waiting.entry(tenant).or_default();
        if queue.is_empty() {
            self.rotation.push_back(tenant);
        }
        queue.extend(items);
        self.len += items.len();
        if self.buckets.len() > BUCKETS_KEPT {
            let now = Instant::now();
            let waiting = &self.waiting;
            self.buckets
                .retain(|t, b| waiting.contains_key(t) || !b.is_full(now));
        }
    }

    /// Takes out everything waiting (not what is reserved), tenant by
    /// tenant: the sender is gone for good.
    pub fn clear(&mut self) -> Vec<u64> {
        self.rotation.clear();
        let taken: Vec<u64> = self.waiting.drain().flat_map(|(_, q)| q).collect();
        self.len -= taken.len();
        taken
    }

    /// The next resync allowed out at `now`, or when to look again.
    pub fn pop(&mut self, now: Instant) -> Next {
        if self.rotation.is_empty() {
            return Next::Wait(None);
        }
        if !self.global.ready(now) {
            return Next::Wait(Some(self.global.next_token()));
        }
        let mut soonest: Option<Instant> = None;
        for _ in 0..self.rotation.len() {
            let Some(tenant) = self.rotation.pop_front() else {
                break;
            };
            // Its turn passes; a finished transaction wakes the sender.
            if !self.may_send(tenant) {
                self.rotation.push_back(tenant);
                continue;
            }
            let rate = self.tenant_rate;
            let bucket = self
                .buckets
                .entry(tenant)
                .or_insert_with(|| Bucket::new(rate, now));
            if !bucket.ready(now) {
                let at = bucket.next_token();
                soonest = Some(soonest.map_or(at, |s| s.min(at)));
                self.rotation.push_back(tenant);
                continue;
            }
            bucket.tokens -= 1.0;
            self.global.tokens -= 1.0;
            let Some(queue) = self.waiting.get_mut(&tenant) else {
                continue;
            };
            let item = queue.pop_front();
            if queue.is_empty() {
                self.waiting.remove(&tenant);
            } else {
                self.rotation.push_back(tenant);
            }
            if let Some(item) = item {
                self.len -= 1;
                self.inflight.insert(item, tenant);
                *self.inflight_of.entry(tenant).or_default() += 1;
                return Next::Send(item);
            }
        }
        Next::Wait(soonest)
    }
}

#[cfg(test)]
#[path = "queue_tests.rs"]
mod tests;
