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
    /// Nothing may go before this instant (`None`: nothing is queued).
    Wait(Option<Instant>),
}

pub struct Queue {
    limit: usize,
    tenant_limit: usize,
    tenant_rate: u32,
    global: Bucket,
    waiting: HashMap<Id, VecDeque<u64>>,
    /// Buckets outlive their queues, so emptying a queue does not refill it.
    buckets: HashMap<Id, Bucket>,
    /// Tenants with something waiting, in serving order.
    rotation: VecDeque<Id>,
    len: usize,
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
            buckets: HashMap::new(),
            rotation: VecDeque::new(),
            len: 0,
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
        let own = self.waiting.get(&tenant).map_or(0, VecDeque::len);
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

    /// Queues `items` of one tenant, all or none.
    pub fn push(&mut self, tenant: Id, items: &[u64]) -> Result<(), Full> {
        if items.is_empty() {
            return Ok(());
        }
        self.check(tenant, items.len())?;
        if items.is_empty() {
            return Ok(());
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
        Ok(())
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
                return Next::Send(item);
            }
        }
        Next::Wait(soonest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(q: &mut Queue, now: Instant) -> Vec<u64> {
        let mut out = Vec::new();
        while let Next::Send(i) = q.pop(now) {
            out.push(i);
        }
        out
    }

    #[test]
    fn tenants_take_turns_and_each_keeps_its_order() {
        let mut q = Queue::new(100, 10, 100, 100);
        q.push(1, &[10, 11, 12, 13]).unwrap();
        q.push(2, &[20]).unwrap();
        q.push(3, &[30, 31]).unwrap();
        assert_eq!(drain(&mut q, Instant::now()), [10, 20, 30, 11, 31, 12, 13]);
        assert_eq!(q.len(), 0);
        assert_eq!(q.pop(Instant::now()), Next::Wait(None));
    }

    #[test]
    fn a_busy_tenant_is_held_to_its_rate_and_others_still_go() {
        let now = Instant::now();
        let mut q = Queue::new(100, 50, 100, 2);
        q.push(1, &(0..20).collect::<Vec<_>>()).unwrap();
        assert_eq!(drain(&mut q, now), [0, 1]);
        let Next::Wait(Some(at)) = q.pop(now) else {
            panic!("should wait for a token")
        };
        assert!(at > now && at <= now + Duration::from_millis(500));
        q.push(2, &[99]).unwrap();
        assert_eq!(drain(&mut q, now), [99]);
        // Half a second later, one more token for tenant 1.
        assert_eq!(drain(&mut q, now + Duration::from_millis(500)), [2]);
    }

    #[test]
    fn the_global_rate_holds_across_tenants() {
        let now = Instant::now();
        let mut q = Queue::new(100, 50, 3, 100);
        for t in 0..5 {
            q.push(t, &[t as u64]).unwrap();
        }
        assert_eq!(drain(&mut q, now).len(), 3);
        assert_eq!(drain(&mut q, now + Duration::from_secs(1)).len(), 2);
    }

    #[test]
    fn bounds_refuse_whole_batches() {
        let mut q = Queue::new(12, 3, 10, 10);
        assert_eq!(q.push(1, &[1, 2, 3, 4]), Err(Full::Tenant));
        q.push(1, &[1, 2, 3]).unwrap();
        assert_eq!(q.push(1, &[4]), Err(Full::Tenant));
        // A quarter of the 9 the first leaves.
        assert_eq!(q.room(2), Ok(3));
        q.push(2, &[5, 6, 7]).unwrap();
        assert_eq!(q.room(3), Ok(2));
        assert_eq!(q.len(), 6);
    }

    /// Five tenants each asking for their whole bound, again and again,
    /// never fill the queue: a sixth still gets room.
    #[test]
    fn a_few_tenants_together_never_fill_the_queue() {
        let mut q = Queue::new(10_000, 2_000, 10, 10);
        let mut item = 0;
        for tenant in 1..=5 {
            while let Ok(room) = q.room(tenant) {
                let items: Vec<u64> = (item..item + room as u64).collect();
                item += room as u64;
                q.push(tenant, &items).unwrap();
            }
        }
        assert!(q.len() < 10_000, "{}", q.len());
        assert!(q.room(6).unwrap() >= 100, "{:?}", q.room(6));
    }

    #[test]
    fn the_last_places_are_everyones() {
        let mut q = Queue::new(1, 5, 10, 10);
        q.push(1, &[1]).unwrap();
        assert_eq!(q.room(2), Err(Full::Global));
        assert_eq!(q.room(1), Err(Full::Tenant));
    }
}
