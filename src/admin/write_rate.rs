//! How fast a tenant may write. The database share bounds how many of a
//! tenant's requests run at once, not how many a second: two keep-alive
//! clients inside their share made 591 writes a second, each an audit row
//! kept for `audit_retention_days`, a change-log row every node applies,
//! and a catch-up on each. At that rate the change log's row cap was
//! reached within half an hour, so a node down for longer than that
//! reloaded in full instead of catching up, and another tenant's writes
//! took ten times as long at p99.
//!
//! A token bucket per tenant: `writes_per_minute` (the `[quotas]` default,
//! or the tenant's own), with a burst of a tenant's ten seconds' worth so
//! that an admin clicking through the page or a script's short run never
//! meets it. Bulk changes belong in `/v1/import`, one request for a whole
//! document. Global admins are not counted, as with the database share.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use dialtone_sync::Id;

/// Tenants whose buckets are full again are forgotten once the map holds
/// this many, so it never keeps every tenant that ever wrote.
const SWEEP_AT: usize = 1024;

#[derive(Default)]
pub struct WriteRates {
    buckets: Mutex<HashMap<Id, Bucket>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
    /// The bucket's own rate and burst, so that a sweep started by a
    /// tenant of another rate judges it rightly.
    per_second: f64,
    burst: f64,
}

/// The burst a rate allows: ten seconds' worth, at least one write.
fn burst(per_minute: u64) -> f64 {
    (per_minute as f64 / 6.0).max(1.0)
}

impl WriteRates {
    /// Spends one write of `tenant`'s, whose rate is `per_minute`; when
    /// none is left, how long until one is.
    pub fn take(&self, tenant: Id, per_minute: u64, now: Instant) -> Result<(), Duration> {
        if per_minute == 0 {
            // A global admin's "no writes" for this tenant.
            return Err(Duration::from_secs(60));
        }
        let per_second = per_minute as f64 / 60.0;
        let burst = burst(per_minute);
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= SWEEP_AT && !buckets.contains_key(&tenant) {
            buckets.retain(|_, b| b.refilled(now) < b.burst);
        }
        let bucket = buckets.entry(tenant).or_insert(Bucket {
            tokens: burst,
            at: now,
            per_second,
            burst,
        });
        // A quota a global admin changed applies from now.
        bucket.tokens = bucket.refilled(now).min(burst);
        (bucket.per_second, bucket.burst) = (per_second, burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / per_second;
            Err(Duration::from_secs_f64(wait.min(60.0)))
        }
    }
}

impl Bucket {
    /// The bucket's tokens at `now`.
    fn refilled(&self, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        (self.tokens + elapsed * self.per_second).min(self.burst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let rates = WriteRates::default();
        let start = Instant::now();
        // 1,200 a minute: 200 at once, then 20 a second.
        for i in 0..200 {
            assert!(rates.take(1, 1200, start).is_ok(), "write {i}");
        }
        let wait = rates.take(1, 1200, start).unwrap_err();
        assert!(wait <= Duration::from_millis(51), "{wait:?}");
        // Another tenant has its own.
        assert!(rates.take(2, 1200, start).is_ok());
        let later = start + Duration::from_millis(500);
        for i in 0..10 {
            assert!(rates.take(1, 1200, later).is_ok(), "write {i} after 0.5 s");
        }
        assert!(rates.take(1, 1200, later).is_err());
    }

    #[test]
    fn zero_means_no_writes_and_a_slow_rate_still_allows_one() {
        let rates = WriteRates::default();
        let now = Instant::now();
        assert!(rates.take(1, 0, now).is_err());
        assert!(rates.take(2, 1, now).is_ok());
        let wait = rates.take(2, 1, now).unwrap_err();
        assert_eq!(wait, Duration::from_secs(60));
    }

    /// A sweep by a tenant of a low rate does not forget a busy tenant of
    /// a high one, which would give it a fresh burst.
    #[test]
    fn a_sweep_judges_each_bucket_by_its_own_rate() {
        let rates = WriteRates::default();
        let start = Instant::now();
        for _ in 0..100 {
            rates.take(0, 1200, start).unwrap();
        }
        for tenant in 1..SWEEP_AT as Id {
            rates.take(tenant, 6, start).unwrap();
        }
        let later = start + Duration::from_secs(1);
        rates.take(SWEEP_AT as Id, 6, later).unwrap();
        assert!(rates.buckets.lock().unwrap().contains_key(&0));
    }

    #[test]
    fn full_buckets_are_forgotten() {
        let rates = WriteRates::default();
        let start = Instant::now();
        for tenant in 0..SWEEP_AT as Id {
            rates.take(tenant, 600, start).unwrap();
        }
        let later = start + Duration::from_secs(60);
        rates.take(SWEEP_AT as Id, 600, later).unwrap();
        assert_eq!(rates.buckets.lock().unwrap().len(), 1);
    }
}
