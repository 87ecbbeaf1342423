//! Each tenant's budget of caller-name lookups (`lookup.tenant_rate` a
//! second, `lookup.tenant_burst` at once), spent before the cache: a hit
//! is cheap but not free, and one tenant's key flooding the route slowed
//! every other tenant's hits tenfold.
//!
//! GCRA: a tenant's bucket is the instant it would be full again. A lookup
//! is let through while that instant is no further ahead than the burst
//! allows, and moves it one interval on. Refused lookups move nothing, so
//! a flood never pushes the tenant's recovery further away.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use dialtone_sync::Id;

use crate::clock::Clock;

/// How often buckets that filled up again are dropped, so the map holds
/// the tenants looking up now rather than every tenant ever seen.
const SWEEP_EVERY: Duration = Duration::from_secs(10);
/// One warning per tenant in this time at most: enough to find who.
const TENANT_WARNING_EVERY: Duration = Duration::from_secs(60);
/// One warning line in this time at most, across tenants: many flooding
/// tenants at once must not flood the log instead.
const ANY_WARNING_EVERY: Duration = Duration::from_secs(1);

pub(crate) struct TenantRates {
    rate: u32,
    burst: u32,
    interval: u64,
    /// How far ahead of now a bucket's full instant may be and still let a
    /// lookup through: the burst less the one being let through.
    tolerance: u64,
    clock: Clock,
    buckets: Mutex<Buckets>,
}

#[derive(Default)]
struct Buckets {
    by_tenant: HashMap<Id, Bucket>,
    next_sweep: u64,
    last_warning: Option<u64>,
}

struct Bucket {
    full_at: u64,
    warned_at: Option<u64>,
}

/// A lookup past its tenant's budget.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct OverBudget {
    /// Whether this refusal is the one to log.
    pub(crate) warn: bool,
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

impl TenantRates {
    /// A rate or burst of 0 is taken as 1: the configuration refuses 0, and
    /// "no budget" is not a setting anyone may reach by mistake.
    pub(crate) fn new(rate: u32, burst: u32, clock: Clock) -> TenantRates {
        let (rate, burst) = (rate.max(1), burst.max(1));
        let interval = 1_000_000_000 / u64::from(rate);
        TenantRates {
            rate,
            burst,
            interval,
            tolerance: interval.saturating_mul(u64::from(burst - 1)),
            clock,
            buckets: Mutex::default(),
        }
    }

    /// Spends one of `tenant`'s lookups, or says it has none left. A
    /// refusal is counted, and logged with the tenant's slug (`slug` is
    /// called only then) at most once a minute per tenant.
    pub(crate) fn spend(
        &self,
        tenant: Id,
        slug: impl FnOnce() -> Option<Box<str>>,
    ) -> Result<(), OverBudget> {
        let refused = self.take(tenant);
        if let Err(OverBudget { warn }) = refused {
            metrics::counter!("dialtone_lookup_rate_limited_total").increment(1);
            if warn {
                tracing::warn!(
                    tenant = slug().as_deref().unwrap_or("?"),
                    tenant_rate = self.rate,
                    tenant_burst = self.burst,
                    "a tenant's caller-name lookups are past lookup.tenant_rate: \
                     answering them 429 (logged once a minute per tenant)"
                );
            }
        }
        refused
    }

    fn take(&self, tenant: Id) -> Result<(), OverBudget> {
        let now = nanos(self.clock.now());
        let mut guard = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if now >= guard.next_sweep {
            guard.sweep(now);
            guard.next_sweep = now.saturating_add(nanos(SWEEP_EVERY));
        }
        let Buckets {
            by_tenant,
            last_warning,
            ..
        } = &mut *guard;
        let bucket = by_tenant.entry(tenant).or_insert(Bucket {
            full_at: now,
            warned_at: None,
        });
        let start = bucket.full_at.max(now);
        if start - now <= self.tolerance {
            bucket.full_at = start.saturating_add(self.interval);
            return Ok(());
        }
        let quiet_since = |at: Option<u64>, every: Duration| {
            at.is_none_or(|at| now.saturating_sub(at) >= nanos(every))
        };
        let warn = quiet_since(bucket.warned_at, TENANT_WARNING_EVERY)
            && quiet_since(*last_warning, ANY_WARNING_EVERY);
        if warn {
            bucket.warned_at = Some(now);
            *last_warning = Some(now);
        }
        Err(OverBudget { warn })
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.buckets.lock().unwrap().by_tenant.len()
    }
}

impl Buckets {
    /// Keeps the buckets not yet full again, and those of tenants warned
    /// of within the minute (forgetting them would warn again sooner).
    fn sweep(&mut self, now: u64) {
        let warning_every = nanos(TENANT_WARNING_EVERY);
        self.by_tenant.retain(|_, bucket| {
            bucket.full_at > now
                || bucket
                    .warned_at
                    .is_some_and(|at| now.saturating_sub(at) < warning_every)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spend_all(rates: &TenantRates, tenant: Id, count: usize) -> Vec<bool> {
        (0..count)
            .map(|_| rates.spend(tenant, || None).is_ok())
            .collect()
    }

    #[test]
    fn a_burst_is_let_through_and_the_next_lookup_refused() {
        let rates = TenantRates::new(5, 5, Clock::manual());
        assert_eq!(spend_all(&rates, 1, 5), [true; 5]);
        assert_eq!(rates.spend(1, || None), Err(OverBudget { warn: true }));
        // Warned once: the next refusals are counted, not logged.
        assert_eq!(rates.spend(1, || None), Err(OverBudget { warn: false }));
        // Another tenant's budget is its own.
        assert_eq!(spend_all(&rates, 2, 5), [true; 5]);
    }

    #[test]
    fn the_budget_refills_at_the_rate() {
        let clock = Clock::manual();
        let rates = TenantRates::new(10, 3, clock.clone());
        assert_eq!(spend_all(&rates, 1, 4), [true, true, true, false]);
        clock.advance(Duration::from_millis(100));
        assert_eq!(spend_all(&rates, 1, 2), [true, false]);
        // Refusals spent nothing: a full refill takes burst / rate.
        clock.advance(Duration::from_millis(300));
        assert_eq!(spend_all(&rates, 1, 4), [true, true, true, false]);
    }

    #[test]
    fn warnings_are_once_a_minute_per_tenant_and_once_a_second_in_all() {
        let clock = Clock::manual();
        let rates = TenantRates::new(1, 1, clock.clone());
        for tenant in [1, 2] {
            assert!(rates.spend(tenant, || None).is_ok());
        }
        assert_eq!(rates.take(1), Err(OverBudget { warn: true }));
        // Tenant 2 floods within the same second: counted, not logged yet.
        assert_eq!(rates.take(2), Err(OverBudget { warn: false }));
        clock.advance(Duration::from_millis(1500));
        assert!(rates.take(1).is_ok());
        assert_eq!(rates.take(1), Err(OverBudget { warn: false }));
        assert!(rates.take(2).is_ok());
        assert_eq!(rates.take(2), Err(OverBudget { warn: true }));
        clock.advance(TENANT_WARNING_EVERY);
        assert!(rates.take(1).is_ok());
        assert_eq!(rates.take(1), Err(OverBudget { warn: true }));
    }

    #[test]
    fn the_sweep_forgets_tenants_whose_budget_is_full_again() {
        let clock = Clock::manual();
        let rates = TenantRates::new(200, 2000, clock.clone());
        for tenant in 0..1000 {
            assert!(rates.spend(tenant, || None).is_ok());
        }
        assert_eq!(rates.tracked(), 1000);
        clock.advance(SWEEP_EVERY);
        assert!(rates.spend(5000, || None).is_ok());
        assert_eq!(rates.tracked(), 1);
    }

    #[test]
    fn the_sweep_keeps_tenants_still_short_or_warned_of() {
        let clock = Clock::manual();
        let rates = TenantRates::new(1, 20, clock.clone());
        let (warned, drained, quiet, later) = (1, 2, 3, 4);
        assert_eq!(spend_all(&rates, warned, 21).last(), Some(&false));
        assert_eq!(spend_all(&rates, drained, 20).last(), Some(&true));
        assert!(rates.spend(quiet, || None).is_ok());
        clock.advance(Duration::from_secs(15));
        assert!(rates.spend(later, || None).is_ok());
        assert_eq!(rates.tracked(), 3, "only the full bucket is dropped");
        // Both are full again after 20 s, but one was warned of within
        // the minute: forgetting it would warn of it again sooner.
        clock.advance(Duration::from_secs(15));
        assert!(rates.spend(later, || None).is_ok());
        assert_eq!(rates.tracked(), 2);
        clock.advance(TENANT_WARNING_EVERY);
        assert!(rates.spend(later, || None).is_ok());
        assert_eq!(rates.tracked(), 1);
    }
}
