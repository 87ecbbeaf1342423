//! Anti-enumeration. A MAC is not a secret (one vendor prefix is 16.7M
//! addresses) and scanners walk them against provisioning servers, so every
//! miss (unknown file or phone, refused path, failed auth) costs the source a
//! token from its bucket, shared by TFTP and HTTP. A source with an empty
//! bucket is banned for a while. Bans are per source address: a known phone
//! elsewhere is never slowed by someone else's scan.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use moka::sync::Cache;

#[derive(Clone, Debug)]
pub struct GuardOptions {
    /// Misses a source may make in a burst.
    pub burst: u32,
    /// Misses a source may make per minute, sustained.
    pub per_minute: u32,
    /// How long a source stays banned.
    pub ban: Duration,
    /// Sources tracked at once (bounded memory under a spoofed-address flood).
    pub max_sources: u64,
}

impl Default for GuardOptions {
    fn default() -> Self {
        GuardOptions {
            burst: 30,
            per_minute: 10,
            ban: Duration::from_secs(600),
            max_sources: 100_000,
        }
    }
}

fn pack(burst: u32, per_minute: u32) -> u64 {
    (u64::from(burst) << 32) | u64::from(per_minute)
}

struct Bucket {
    tokens: f64,
    refilled: Instant,
}

pub struct Guard {
    options: GuardOptions,
    /// `burst` and `per_minute`, changeable while running (SIGHUP).
    limits: std::sync::atomic::AtomicU64,
    buckets: Cache<IpAddr, Arc<Mutex<Bucket>>>,
    bans: Cache<IpAddr, ()>,
}

impl Guard {
    pub fn new(options: GuardOptions) -> Guard {
        Guard {
            buckets: Cache::builder()
                .max_capacity(options.max_sources)
                // An idle bucket is full again by then; forget it.
                .time_to_idle(Duration::from_secs(3600))
                .build(),
            bans: Cache::builder()
                .max_capacity(options.max_sources)
                .time_to_live(options.ban)
                .build(),
            limits: std::sync::atomic::AtomicU64::new(pack(options.burst, options.per_minute)),
            options,
        }
    }

    /// New miss limits for every source from now on (SIGHUP). The ban
    /// length and the number of sources tracked are fixed at start.
    pub fn set_limits(&self, burst: u32, per_minute: u32) {
        self.limits.store(
            pack(burst, per_minute),
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    fn limits(&self) -> (u32, u32) {
        let packed = self.limits.load(std::sync::atomic::Ordering::Relaxed);
        ((packed >> 32) as u32, packed as u32)
    }

    pub fn is_banned(&self, source: IpAddr) -> bool {
        self.bans.contains_key(&source)
    }

    /// Counts a miss; returns true when it got the source banned.
    pub fn miss(&self, source: IpAddr) -> bool {
        let (burst, per_minute) = self.limits();
        let burst = f64::from(burst.max(1));
        let bucket = self.buckets.get_with(source, || {
            Arc::new(Mutex::new(Bucket {
                tokens: burst,
                refilled: Instant::now(),
            }))
        });
        let exhausted = {
            let mut b = bucket.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let refill =
                now.duration_since(b.refilled).as_secs_f64() * f64::from(per_minute) / 60.0;
            b.tokens = (b.tokens + refill).min(burst) - 1.0;
            b.refilled = now;
            b.tokens < 0.0
        };
        if exhausted && !self.is_banned(source) {
            self.bans.insert(source, ());
            self.buckets.invalidate(&source);
            // Recorded through the `metrics` facade; the exporter comes with
            // the observability work.
            metrics::counter!("dialtone_provisioning_bans_total").increment(1);
            // One line fail2ban can match: "... ban <address> ...".
            tracing::warn!(
                target: "dialtone::ban",
                "provisioning: ban {source} for {}s after repeated misses",
                self.options.ban.as_secs()
            );
            return true;
        }
        false
    }

    pub fn banned_sources(&self) -> u64 {
        self.bans.run_pending_tasks();
        self.bans.entry_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_misses_bans_only_that_source() {
        let guard = Guard::new(GuardOptions {
            burst: 5,
            per_minute: 1,
            ..Default::default()
        });
        let scanner: IpAddr = "192.0.2.10".parse().unwrap();
        let phone: IpAddr = "192.0.2.20".parse().unwrap();
        let bans: Vec<bool> = (0..6).map(|_| guard.miss(scanner)).collect();
        assert_eq!(bans, [false, false, false, false, false, true]);
        assert!(guard.is_banned(scanner));
        assert!(!guard.is_banned(phone));
        assert!(!guard.miss(phone));
    }

    #[test]
    fn new_limits_apply_at_once() {
        let guard = Guard::new(GuardOptions {
            burst: 2,
            per_minute: 1,
            ..Default::default()
        });
        let loud: IpAddr = "192.0.2.7".parse().unwrap();
        guard.set_limits(100, 1);
        for _ in 0..50 {
            assert!(!guard.miss(loud), "a raised burst is honoured");
        }
        guard.set_limits(1, 1);
        assert!(
            guard.miss("192.0.2.8".parse().unwrap()) || guard.miss("192.0.2.8".parse().unwrap())
        );
    }

    #[test]
    fn bans_expire() {
        let guard = Guard::new(GuardOptions {
            burst: 1,
            per_minute: 1,
            ban: Duration::from_millis(100),
            ..Default::default()
        });
        let scanner: IpAddr = "2001:db8::1".parse().unwrap();
        guard.miss(scanner);
        assert!(guard.miss(scanner));
        std::thread::sleep(Duration::from_millis(250));
        assert!(!guard.is_banned(scanner));
    }
}
