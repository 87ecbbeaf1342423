//! The `[provisioning]` and `[lookup]` sections and their defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use dialtone_tftp::engine::Budget;
use dialtone_tftp::pool::PoolOptions;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProvisioningConfig {
    /// The HTTP provisioning listener phones fetch from; its own port, apart
    /// from the API. Loopback by default: open it up deliberately.
    pub http_listen: SocketAddr,
    /// How phones reach the provisioning listener; templates build URLs
    /// (profile rules, directory) from it. Default: `http://<http_listen>`.
    pub base_url: Option<String>,
    /// Names plain-HTTP requests may give in `Host` besides `base_url`'s
    /// (addresses and `localhost` always pass); `["*"]` for any. Other
    /// names get 421: a page whose name was re-pointed here (DNS
    /// rebinding) would otherwise read phones' files from inside an
    /// office's `provisioning_networks`.
    pub host_names: Vec<String>,
    /// Templates in place of (or beside) the built-in shipped ones,
    /// `<dir>/<family>/<name>.tera`; re-read on SIGHUP. Unset: the
    /// built-in set only.
    pub templates_dir: Option<PathBuf>,
    /// Bound of the rendered-file cache; a change on SIGHUP empties it.
    pub render_cache_mb: u64,
    /// Cached files rendered again and compared each second, a canary for
    /// a cache that serves what a fresh render would not; 0 turns it off.
    pub render_self_check_per_s: usize,
    /// What one render may spend (tenants write templates): MiniJinja fuel
    /// (one per instruction, one per 64 bytes built), output size, time.
    pub render_fuel: u64,
    pub render_output_kb: usize,
    pub render_time_ms: u64,
    /// Renders at once (0: one per core), per tenant (0: half of them),
    /// and waiting (overall, per tenant); past those, "busy".
    pub render_threads: usize,
    pub render_per_tenant: usize,
    pub render_queue: usize,
    pub render_tenant_queue: usize,
    /// Firmware and other static files, served as they are; indexed at start
    /// and on SIGHUP. Unset: none served.
    pub static_dir: Option<PathBuf>,
    /// HTTPS provisioning listener; needs `tls_cert` and `tls_key` (PEM).
    pub https_listen: Option<SocketAddr>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// The TFTP listener; `"off"` disables TFTP. Port 69 needs
    /// CAP_NET_BIND_SERVICE.
    #[serde(with = "listen_or_off")]
    pub tftp_listen: Option<SocketAddr>,
    /// Concurrent TFTP transfers; past it, requests get "busy".
    pub tftp_max_transfers: usize,
    /// Largest block size a client may negotiate (RFC 2348). The default,
    /// 1468, fills a 1500-byte MTU over IPv4 (+ 4 TFTP, 8 UDP and 20 IPv4
    /// header bytes); an IPv6 client (not an IPv4-mapped one) is granted 20
    /// bytes less, 1448 by default, as its header is 20 bytes longer and a
    /// fragmented IPv6 packet is often dropped.
    pub tftp_blksize_limit: u16,
    /// Largest window a client may negotiate (RFC 7440).
    pub tftp_windowsize_limit: u16,
    /// Retransmission timeout and retries: a vanished client frees its slot
    /// after about timeout x (retries + 1).
    pub tftp_timeout_ms: u64,
    pub tftp_max_send_retries: u32,
    /// Largest timeout (RFC 2349, seconds) a client may negotiate; a larger
    /// one is declined and `tftp_timeout_ms` applies.
    pub tftp_max_timeout_s: u8,
    /// A transfer with no new ACK for this long ends with an error packet
    /// and frees its slot, whatever the timeout and retries.
    pub tftp_stall_s: u64,
    /// Bytes a second a transfer's client must acknowledge on average from
    /// the transfer's start, falling at most `tftp_min_rate_slack_s`
    /// behind; else the transfer ends with an error packet. Bounds how long
    /// a client pacing its ACKs holds a slot.
    pub tftp_min_rate: u32,
    pub tftp_min_rate_slack_s: u64,
    /// Transfers one source (IPv4 address, IPv6 /64) may have at once;
    /// past it, its requests get an error packet.
    pub tftp_max_per_source: usize,
    /// Transfers one source may have that its client has not acknowledged
    /// yet (forged sources never do); past it, its requests are dropped
    /// without a reply and a real phone retransmits.
    pub tftp_max_unacked_per_source: usize,
    /// Networks without the per-source cap (they still count globally).
    pub tftp_per_source_exempt: Vec<String>,
    /// Answer every transfer from the listening port, told apart by the
    /// client's address and port (phones behind a NAT or firewall that only
    /// lets answers in from that port), instead of a port per transfer.
    pub tftp_single_port: bool,
    /// Single-port mode: sockets sharing the port, a thread each (0: one
    /// per core).
    pub tftp_listeners: usize,
    /// Open HTTP provisioning connections at most; past it, new connections
    /// get 503 with Retry-After.
    pub http_max_connections: usize,
    /// Of those, what one source (IPv4 address, IPv6 /64) may hold open;
    /// past it, 503.
    pub http_max_per_source: usize,
    /// Networks without the HTTP per-source cap (they still count globally).
    pub http_per_source_exempt: Vec<String>,
    /// A client must send each request's headers within this time, or its
    /// connection is closed (slow and idle clients hold no slot for long).
    pub http_header_timeout_s: u64,
    /// Misses (unknown files, refused paths, failed device logins) a source
    /// may make in a burst, and per minute sustained (0: one an hour),
    /// before it is banned. Both change on SIGHUP.
    pub ban_burst: u32,
    pub ban_per_minute: u32,
    /// How long a ban lasts (fixed at start).
    pub ban_s: u64,
    /// Sources (IPv4 addresses, IPv6 /64s) tracked for misses, and banned,
    /// at once (fixed at start).
    pub ban_sources: usize,
    /// A banned source still gets the files of the phones that fetched
    /// their own files from it within this time (changes on SIGHUP).
    pub ban_known_ttl_s: u64,
    /// Phones whose sources are remembered at once (fixed at start).
    pub ban_known_phones: usize,
    /// Wrong credential answers one phone may get from sources it has not
    /// fetched its files from, within `ban_s` of the first (per node);
    /// past it only its known sources may try its credentials until
    /// then. Above what one source can miss in `ban_s` unbanned, so that
    /// one address alone never closes a phone. Changes on SIGHUP.
    pub ban_phone_failures: u32,
    /// List an unknown phone's fetch from outside every tenant's
    /// `provisioning_networks` too, on the unassigned list only global
    /// admins see. Off: anyone on the internet could fill that list.
    pub record_unclaimed_anywhere: bool,
    /// A phone whose tenant sets no `provisioning_networks` is not served
    /// inside another tenant's site-sized network (a MAC is no secret).
    /// Off where one tenant's site stages other tenants' phones (an
    /// integrator's bench) and listing the range for each is not wanted.
    pub sites_exclusive: bool,
    /// Bound of the queue between the front ends and the unclaimed-devices
    /// writer; past it, sightings are dropped and counted.
    pub unclaimed_queue: usize,
}

impl Default for ProvisioningConfig {
    fn default() -> Self {
        ProvisioningConfig {
            http_listen: "127.0.0.1:8081".parse().expect("valid default"),
            base_url: None,
            host_names: Vec::new(),
            templates_dir: None,
            render_cache_mb: 64,
            render_self_check_per_s: 20,
            render_fuel: 500_000,
            render_output_kb: 1024,
            render_time_ms: 250,
            render_threads: 0,
            render_per_tenant: 0,
            render_queue: 4096,
            render_tenant_queue: 1024,
            static_dir: None,
            https_listen: None,
            tls_cert: None,
            tls_key: None,
            tftp_listen: Some("127.0.0.1:6969".parse().expect("valid default")),
            tftp_max_transfers: 4096,
            tftp_blksize_limit: 1468,
            tftp_windowsize_limit: 16,
            tftp_timeout_ms: 2000,
            tftp_max_send_retries: 4,
            tftp_max_timeout_s: 5,
            tftp_stall_s: 15,
            tftp_min_rate: dialtone_tftp::tftp::TftpOptions::default().min_rate,
            tftp_min_rate_slack_s: dialtone_tftp::tftp::TftpOptions::default()
                .min_rate_slack
                .as_secs(),
            tftp_max_per_source: 64,
            tftp_max_unacked_per_source: 8,
            tftp_per_source_exempt: vec!["127.0.0.0/8".into(), "::1/128".into()],
            tftp_single_port: false,
            tftp_listeners: 0,
            http_max_connections: 4096,
            http_max_per_source: 256,
            http_per_source_exempt: vec!["127.0.0.0/8".into(), "::1/128".into()],
            http_header_timeout_s: 10,
            ban_burst: 30,
            ban_per_minute: 10,
            ban_s: 600,
            ban_sources: 100_000,
            // Phones fetch at every boot and most resync daily or weekly; a
            // month covers a phone that only reboots with the office's power.
            ban_known_ttl_s: 30 * 86_400,
            ban_known_phones: 200_000,
            ban_phone_failures: 200,
            record_unclaimed_anywhere: false,
            sites_exclusive: true,
            unclaimed_queue: 4096,
        }
    }
}

/// Warns when one unbanned address can, within `ban_s`, cause as many
/// wrong credential answers as close a phone's credentials to its new
/// addresses (`ban_phone_failures`): the README's rule, checked at start
/// and on SIGHUP, where `ban_s` keeps its running value while the others
/// change.
pub fn warn_if_one_address_closes_a_phone(p: &ProvisioningConfig, ban_s: u64) {
    let one_address =
        u64::from(p.ban_burst) + u64::from(p.ban_per_minute).saturating_mul(ban_s) / 60;
    if one_address >= u64::from(p.ban_phone_failures) {
        tracing::warn!(
            one_address,
            ban_phone_failures = p.ban_phone_failures,
            ban_s,
            "provisioning.ban_phone_failures is not above ban_burst + ban_per_minute * ban_s / 60: \
             one address alone can close a phone's credentials to its new addresses"
        );
    }
}

impl ProvisioningConfig {
    /// The shipped templates: built in, with `templates_dir` over them.
    pub fn shipped_source(&self) -> dialtone_tftp::templates::Source {
        match &self.templates_dir {
            Some(dir) => dialtone_tftp::templates::Source::BuiltInWith(dir.clone()),
            None => dialtone_tftp::templates::Source::BuiltIn,
        }
    }

    /// The render budget and pool as the provisioning crate takes them.
    pub fn render_options(&self) -> (Budget, PoolOptions) {
        (
            Budget {
                fuel: self.render_fuel,
                output_bytes: self.render_output_kb << 10,
                time: Duration::from_millis(self.render_time_ms),
            },
            PoolOptions {
                threads: self.render_threads,
                per_tenant: self.render_per_tenant,
                queue: self.render_queue,
                tenant_queue: self.render_tenant_queue,
            },
        )
    }

    pub fn base_url(&self) -> String {
        self.base_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.http_listen))
            .trim_end_matches('/')
            .to_string()
    }
}

/// Caller-name lookups (`/v1/lookup`, `/v3/phone/N`) on the API listener.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LookupConfig {
    /// Hard limit for one lookup, every source together. It sits in call
    /// setup: each millisecond is post-dial delay.
    pub deadline_ms: u64,
    /// How long a found name is cached.
    pub positive_ttl_s: u64,
    /// How long "no such number" is cached.
    pub negative_ttl_s: u64,
    /// How long a miss is cached when a source failed (not a real miss).
    pub failure_ttl_s: u64,
    /// How long past its TTL an answer is still served while one refresh runs.
    pub max_stale_s: u64,
    /// Bound of the answer cache. Once it is three quarters full, a tenant
    /// holding a quarter of it caches no new answers.
    pub cache_mb: u64,
    /// Loads (cache misses) running at once; more are answered empty at once.
    pub max_inflight: usize,
    /// Consecutive failures that open a source's circuit breaker...
    pub breaker_failures: u32,
    /// ...and how long it stays open before one probe is let through.
    pub breaker_cooldown_s: u64,
    /// Trailing digits that match a directory number that will not normalize.
    pub suffix_digits: usize,
    /// Tenants whose directory index is kept in memory.
    pub indexed_tenants: u64,
    /// Build, when the node starts, the index of every tenant directory of
    /// 1,000 entries or more (largest first, up to `indexed_tenants`, one
    /// at a time on one thread). Off: each is built on its tenant's first
    /// lookup, and a directory too large to index within `deadline_ms`
    /// answers no names (from any source) until its build ends, seconds at
    /// the entry quota.
    pub warm_directories: bool,
    /// Where directory sources (which tenants configure) may connect:
    /// `"public"` (every globally routable address) and networks or
    /// addresses. Customer AD over a private network is one more entry:
    /// `["public", "10.20.0.0/16"]`. This node's own listeners are refused
    /// whatever the list says.
    pub source_networks: Vec<String>,
    /// Threads mirrored LDAP sources' work (normalizing and merging what a
    /// sync read, building indexes, mirror files) takes at most, every
    /// tenant together; more waits its turn. 0: half the node's cores, at
    /// least one.
    pub mirror_threads: usize,
    /// Lookups a second one tenant's keys may make, cache hits included
    /// (1..=1000000; there is no unlimited: tenants are untrusted)...
    pub tenant_rate: u32,
    /// ...and how many past that rate at once (at least 1). Past both the
    /// PBX gets 429 with `Retry-After: 1` (an empty body in plain text),
    /// and no name. A global-admin key's lookups spend no tenant's budget.
    pub tenant_burst: u32,
}

impl Default for LookupConfig {
    fn default() -> Self {
        LookupConfig {
            deadline_ms: 300,
            positive_ttl_s: 3600,
            negative_ttl_s: 300,
            failure_ttl_s: 10,
            max_stale_s: 24 * 3600,
            cache_mb: 64,
            max_inflight: 1024,
            breaker_failures: 3,
            breaker_cooldown_s: 10,
            suffix_digits: 7,
            indexed_tenants: 10_000,
            warm_directories: true,
            source_networks: vec!["public".into()],
            mirror_threads: 0,
            // A 1,000-seat tenant at its busy hour makes under 20 a
            // second: ten times that, and ten seconds of it at once.
            tenant_rate: 200,
            tenant_burst: 2000,
        }
    }
}

impl LookupConfig {
    /// The lookup options; `listeners` are this node's own, which sources
    /// may never reach.
    pub fn options(
        &self,
        listeners: impl IntoIterator<Item = SocketAddr>,
    ) -> Result<dialtone_directory::LookupOptions> {
        use std::time::Duration;
        let networks = dialtone_directory::SourceNetworks::parse(&self.source_networks)
            .map_err(|e| anyhow::anyhow!("lookup.source_networks: {e}"))?
            .with_own_listeners(listeners);
        let defaults = dialtone_directory::LookupOptions::default();
        Ok(dialtone_directory::LookupOptions {
            deadline: Duration::from_millis(self.deadline_ms),
            positive_ttl: Duration::from_secs(self.positive_ttl_s),
            negative_ttl: Duration::from_secs(self.negative_ttl_s),
            failure_ttl: Duration::from_secs(self.failure_ttl_s),
            max_stale: Duration::from_secs(self.max_stale_s),
            cache_bytes: self.cache_mb << 20,
            max_inflight: self.max_inflight,
            breaker_threshold: self.breaker_failures,
            breaker_cooldown: Duration::from_secs(self.breaker_cooldown_s),
            suffix_len: self.suffix_digits,
            max_indexed_tenants: self.indexed_tenants,
            warm_directories: self.warm_directories,
            source_networks: networks.shared(),
            mirror_threads: match self.mirror_threads {
                0 => defaults.mirror_threads,
                n => n,
            },
            tenant_rate: self.tenant_rate,
            tenant_burst: self.tenant_burst,
            ..defaults
        })
    }
}

/// A listener's address, or `"off"`: TOML has no null, and a key left out
/// takes the section's default, so removing the key cannot turn a listener
/// that is on by default off.
pub mod listen_or_off {
    use std::net::SocketAddr;

    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub const OFF: &str = "off";

    /// The command line's spelling of the same (`--tftp-listen off`).
    #[derive(Clone, Copy, Debug)]
    pub struct Listen(pub Option<SocketAddr>);

    impl std::str::FromStr for Listen {
        type Err = String;

        fn from_str(text: &str) -> Result<Listen, String> {
            parse(text).map(Listen)
        }
    }

    pub fn parse(text: &str) -> Result<Option<SocketAddr>, String> {
        let text = text.trim();
        if text.eq_ignore_ascii_case(OFF) {
            return Ok(None);
        }
        text.parse().map(Some).map_err(|e| {
            format!("{text:?}: {e}; give an address and port (\"0.0.0.0:69\") or \"off\"")
        })
    }

    pub fn serialize<S: Serializer>(listen: &Option<SocketAddr>, s: S) -> Result<S::Ok, S::Error> {
        match listen {
            Some(addr) => s.collect_str(addr),
            None => s.serialize_str(OFF),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
        parse(&String::deserialize(d)?).map_err(D::Error::custom)
    }
}
