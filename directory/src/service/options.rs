//! The lookup service's options: what the operator's `lookup` section
//! sets, with the defaults a node runs with when it sets nothing.

use std::sync::Arc;
use std::time::Duration;

use crate::networks::SourceNetworks;

#[derive(Clone, Debug)]
pub struct LookupOptions {
    /// Hard limit for one lookup, all sources together.
    pub deadline: Duration,
    pub positive_ttl: Duration,
    pub negative_ttl: Duration,
    /// How long a miss is cached when a source failed (so it is not a real
    /// miss). Short, so a recovered source is asked again soon.
    pub failure_ttl: Duration,
    /// How long past its TTL an answer may still be served while a refresh runs.
    pub max_stale: Duration,
    pub cache_bytes: u64,
    /// Loads running at once; lookups beyond it answer "unavailable" at once.
    /// One tenant may hold at most a quarter of them (at least one), less
    /// as more tenants load at once, and a tenant holding fewer than four
    /// may start one from a reserve of a quarter more when all are taken:
    /// tenants whose sources are slow to answer cannot shed everyone else's
    /// (see `admission`).
    pub max_inflight: usize,
    pub breaker_threshold: u32,
    pub breaker_cooldown: Duration,
    pub suffix_len: usize,
    /// Tenants whose local directory index is kept in memory.
    pub max_indexed_tenants: u64,
    /// Whether a node builds the large directories' indexes when it starts
    /// ([`LookupService::warm_directories`]) rather than on their first
    /// lookups.
    pub warm_directories: bool,
    /// Where tenant-configured sources may connect (public addresses only
    /// by default).
    pub source_networks: Arc<SourceNetworks>,
    /// Where mirrored LDAP sources keep their files, and large local
    /// directories their numbers' readings (beside the node's snapshot);
    /// `None` keeps both in memory only.
    pub mirror_dir: Option<std::path::PathBuf>,
    /// The default `directory_entries` quota, which also caps a tenant's
    /// mirrored entries per source.
    pub mirror_entry_quota: u64,
    /// Blocking threads mirrored sources' work (normalizing, merging,
    /// indexing, their files) takes at most, node-wide.
    pub mirror_threads: usize,
    /// Lookups a second one tenant's keys may make through the lookup
    /// routes, cache hits included, and how many at once past that rate;
    /// past both, 429 (`rate`).
    pub tenant_rate: u32,
    pub tenant_burst: u32,
}

impl Default for LookupOptions {
    fn default() -> Self {
        LookupOptions {
            deadline: Duration::from_millis(300),
            positive_ttl: Duration::from_secs(3600),
            negative_ttl: Duration::from_secs(300),
            failure_ttl: Duration::from_secs(10),
            max_stale: Duration::from_secs(24 * 3600),
            cache_bytes: 64 << 20,
            max_inflight: 1024,
            breaker_threshold: 3,
            breaker_cooldown: Duration::from_secs(10),
            suffix_len: crate::local::DEFAULT_SUFFIX_LEN,
            max_indexed_tenants: 10_000,
            warm_directories: true,
            source_networks: SourceNetworks::default().shared(),
            mirror_dir: None,
            mirror_entry_quota: 200_000,
            mirror_threads: default_mirror_threads(),
            // A 1,000-seat tenant at its busy hour makes under 20 a second.
            tenant_rate: 200,
            tenant_burst: 2000,
        }
    }
}

/// Half the node's cores, at least one: mirror work is background work,
/// and the other half is left to answering phones and lookups.
pub fn default_mirror_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}
