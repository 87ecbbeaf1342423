//! Configuration: defaults < TOML file < `DIALTONE_*` environment < flags.
//!
//! Environment variables name a key by its path with `__` between levels:
//! `DIALTONE_DATABASE__URL`, `DIALTONE_SECRETS__KEY`, `DIALTONE_HTTP__LISTEN`.
//! Every field is documented in the README's configuration reference; keep
//! the two in step.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use dialtone_tftp::engine::Budget;
use dialtone_tftp::pool::PoolOptions;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub database: DatabaseConfig,
    pub provisioning: ProvisioningConfig,
    pub secrets: SecretsConfig,
    pub mirror: MirrorConfig,
    pub http: HttpConfig,
    pub lookup: LookupConfig,
    pub log: LogConfig,
    pub supervision: SupervisionConfig,
    /// Per-tenant defaults; a global admin sets a tenant's own in its
    /// settings (`"quotas": {"phones": 50000}`).
    pub quotas: crate::admin::quotas::QuotaConfig,
    pub resync: ResyncConfig,
}

/// Pushing a re-provision to running phones: a SIP NOTIFY (`check-sync`,
/// `resync`) sent through the platform's SIP proxy, which knows where each
/// phone registered. Unset `proxy` (and `direct` off): not configured, and
/// the resync routes answer 503.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResyncConfig {
    /// `host:port` of the SIP proxy (Kamailio, OpenSIPS, the PBX's edge).
    pub proxy: Option<String>,
    /// Local UDP address NOTIFYs leave from and answers come back to.
    pub listen: SocketAddr,
    /// RFC 3261 timers: retransmissions start T1 apart and back off to T2;
    /// no final answer within 64 x T1 is a failure.
    pub t1_ms: u64,
    pub t2_ms: u64,
    /// NOTIFYs sent per second, overall and per tenant.
    pub rate_per_s: u32,
    pub tenant_rate_per_s: u32,
    /// Resyncs waiting to be sent, overall (past it: 503) and per tenant
    /// (past it: 429).
    pub queue: usize,
    pub tenant_queue: usize,
    /// NOTIFYs awaiting an answer at once; past it, sending waits.
    pub max_inflight: usize,
    /// Send straight to the address the phone last fetched from, port 5060,
    /// instead of the proxy: for sites where dialtone and the phones share
    /// a LAN.
    pub direct: bool,
    /// Host of the From header (`sip:dialtone@<from_domain>`). Default: the
    /// proxy's host, which phones that trust only their registrar expect.
    pub from_domain: Option<String>,
}

impl Default for ResyncConfig {
    fn default() -> Self {
        ResyncConfig {
            proxy: None,
            listen: "0.0.0.0:0".parse().expect("valid default"),
            t1_ms: 500,
            t2_ms: 4000,
            rate_per_s: 50,
            tenant_rate_per_s: 10,
            queue: 10_000,
            tenant_queue: 2000,
            max_inflight: 1024,
            direct: false,
            from_domain: None,
        }
    }
}

impl ResyncConfig {
    pub fn enabled(&self) -> bool {
        self.proxy.is_some() || self.direct
    }

    /// The From host: `from_domain`, else the proxy's host.
    pub fn sender_host(&self) -> String {
        if let Some(d) = &self.from_domain {
            return d.clone();
        }
        let proxy = self.proxy.as_deref().unwrap_or("dialtone.invalid");
        match proxy.strip_prefix('[') {
            Some(v6) => format!("[{}]", v6.split(']').next().unwrap_or(v6)),
            None => proxy.split(':').next().unwrap_or(proxy).to_string(),
        }
    }

    fn validate(&self) -> Result<()> {
        if let Some(proxy) = &self.proxy {
            let port = proxy.rsplit_once(':').map(|(_, p)| p.parse::<u16>());
            if !matches!(port, Some(Ok(p)) if p > 0) {
                bail!("resync.proxy must be host:port (got {proxy:?})");
            }
        }
        if !(1..=60_000).contains(&self.t1_ms) || self.t2_ms < self.t1_ms || self.t2_ms > 600_000 {
            bail!("resync: t1_ms must be 1..=60000 and t2_ms between t1_ms and 600000");
        }
        if self.rate_per_s == 0 || self.tenant_rate_per_s == 0 {
            bail!("resync: rate_per_s and tenant_rate_per_s must be at least 1");
        }
        if self.queue == 0 || self.tenant_queue == 0 || self.max_inflight == 0 {
            bail!("resync: queue, tenant_queue and max_inflight must be at least 1");
        }
        if self.queue > 1_000_000 {
            bail!("resync.queue must be at most 1000000");
        }
        if !crate::resync::sip::valid_domain(&self.sender_host()) {
            bail!("resync.from_domain must be a host name or address");
        }
        Ok(())
    }
}

/// Background tasks are restarted with backoff; past this many restarts of
/// one task within the window, the node reports itself degraded.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SupervisionConfig {
    pub max_restarts: usize,
    pub window_s: u64,
}

impl Default for SupervisionConfig {
    fn default() -> Self {
        SupervisionConfig {
            max_restarts: 5,
            window_s: 60,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://PATH` (embedded default) or `postgres://USER@HOST/DB`.
    pub url: String,
    /// Connections for the watcher, writers and admin queries; the hot path uses none.
    pub max_connections: u32,
    /// How long to wait for a connection (all taken, or none opens) before an
    /// admin request is answered 503 `busy`.
    pub acquire_timeout_ms: u64,
    /// Apply pending migrations at `serve` start.
    pub auto_migrate: bool,
    /// PostgreSQL: how long a migration waits for one table's lock before it
    /// steps back and tries again; queries on that table queue behind it
    /// meanwhile, so this is how long they can be held up.
    pub migration_lock_wait_ms: u64,
    /// PostgreSQL: how long a migration keeps stepping back and trying
    /// before `migrate` (or `serve`'s start) fails and says why.
    pub migration_retry_s: u64,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: "sqlite://./dialtone.db".into(),
            max_connections: 8,
            acquire_timeout_ms: 3000,
            auto_migrate: true,
            migration_lock_wait_ms: 2000,
            migration_retry_s: 60,
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecretsConfig {
    /// 32 bytes as 64 hex digits (or base64). Required with PostgreSQL.
    pub key: Option<String>,
    /// File holding the key. Default with SQLite: `<database>.key`, created
    /// (mode 0600) on first start.
    pub key_file: Option<PathBuf>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MirrorConfig {
    /// Where the mirror's snapshot is written. Default: beside the SQLite
    /// database, or `./dialtone.snapshot` with PostgreSQL.
    pub snapshot_path: Option<PathBuf>,
    /// How often the snapshot is rewritten when the mirror changed; 0 = only at shutdown.
    pub snapshot_interval_s: u64,
    /// Catch-up poll when no notification arrives; also the heartbeat.
    pub poll_interval_ms: u64,
    /// Further behind than this many change-log rows, reload everything.
    pub max_catch_up_rows: i64,
    /// Change-log rows older than this are pruned...
    pub change_log_retention_s: u64,
    /// ...and never more than this many are kept.
    pub change_log_max_rows: i64,
    pub prune_interval_s: u64,
    /// Provisioning history is kept this long.
    pub history_retention_days: u64,
    /// Bound of the queue between the front ends and the history writer.
    pub history_queue: usize,
    /// Report not-ready when the mirror has been stale (database unreachable)
    /// for longer than this. Unset: keep serving and stay ready, since stale
    /// configs beat no configs for phones.
    pub max_staleness_s: Option<u64>,
}

impl Default for MirrorConfig {
    fn default() -> Self {
        MirrorConfig {
            snapshot_path: None,
            snapshot_interval_s: 60,
            poll_interval_ms: 5000,
            max_catch_up_rows: 100_000,
            change_log_retention_s: 24 * 3600,
            change_log_max_rows: 1_000_000,
            prune_interval_s: 300,
            history_retention_days: 30,
            history_queue: 10_000,
            max_staleness_s: None,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// The API listener: health, readiness, metrics, lookups and the admin API.
    pub listen: SocketAddr,
    /// A listener for monitoring alone: `/healthz`, `/readyz` with its
    /// full body and `/metrics`. Once set, the API listener (which tenants
    /// and phones may reach) keeps `/healthz` and a `/readyz` that says
    /// only whether the node is ready, and no longer serves `/metrics`:
    /// both show the whole platform (row counts, error text, counters).
    /// Unset (the default): all of it is on the API listener.
    pub monitoring_listen: Option<SocketAddr>,
    /// How long in-flight requests get to finish at shutdown.
    pub shutdown_grace_s: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "127.0.0.1:8080".parse().expect("valid default"),
            monitoring_listen: None,
            shutdown_grace_s: 10,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProvisioningConfig {
    /// The HTTP provisioning listener phones fetch from; its own port, apart
    /// from the API. Loopback by default: open it up deliberately.
    pub http_listen: SocketAddr,
    /// How phones reach the provisioning listener; templates build URLs
    /// (profile rules, directory) from it. Default: `http://<http_listen>`.
    pub base_url: Option<String>,
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
    /// The TFTP listener; unset disables TFTP. Port 69 needs
    /// CAP_NET_BIND_SERVICE.
    pub tftp_listen: Option<SocketAddr>,
    /// Concurrent TFTP transfers; past it, requests get "busy".
    pub tftp_max_transfers: usize,
    /// Largest block size (RFC 2348) and window (RFC 7440) clients may negotiate.
    pub tftp_blksize_limit: u16,
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
    /// List an unknown phone's fetch from outside every tenant's
    /// `provisioning_networks` too, on the unassigned list only global
    /// admins see. Off: anyone on the internet could fill that list.
    pub record_unclaimed_anywhere: bool,
    /// Bound of the queue between the front ends and the unclaimed-devices
    /// writer; past it, sightings are dropped and counted.
    pub unclaimed_queue: usize,
}

impl Default for ProvisioningConfig {
    fn default() -> Self {
        ProvisioningConfig {
            http_listen: "127.0.0.1:8081".parse().expect("valid default"),
            base_url: None,
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
            record_unclaimed_anywhere: false,
            unclaimed_queue: 4096,
        }
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
    /// Bound of the answer cache.
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
            ..Default::default()
        })
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter: `info`, or `info,dialtone_sync=debug`. `RUST_LOG` wins when set.
    pub filter: String,
    /// `text` (human-readable) or `json` (one object a line).
    pub format: LogFormat,
    /// Append to this file instead of stderr; reopened on SIGHUP, for
    /// logrotate. Unset: stderr (journald under systemd).
    pub file: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            filter: "info".into(),
            format: LogFormat::Text,
            file: None,
        }
    }
}

const ENV_PREFIX: &str = "DIALTONE_";
/// Variables with the prefix that are not config keys.
const ENV_NOT_KEYS: &[&str] = &["DIALTONE_CONFIG", "DIALTONE_TEST_"];

impl Config {
    /// Reads the file (if any), then applies the environment. Errors name the
    /// file, line and key, or the variable.
    pub fn load(path: Option<&Path>) -> Result<Config> {
        Self::load_from(path, std::env::vars())
    }

    pub fn load_from(
        path: Option<&Path>,
        env: impl Iterator<Item = (String, String)>,
    ) -> Result<Config> {
        let mut value = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read config {}", path.display()))?;
                // Deserialize straight from the text first: only then do
                // errors carry the line and the key.
                toml::from_str::<Config>(&text)
                    .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), one_line(&e)))?;
                text.parse::<toml::Table>()
                    .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), one_line(&e)))?
            }
            None => toml::Table::new(),
        };
        let mut env: Vec<(String, String)> = env
            .filter(|(k, _)| {
                k.starts_with(ENV_PREFIX) && !ENV_NOT_KEYS.iter().any(|p| k.starts_with(p))
            })
            .collect();
        env.sort();
        for (name, raw) in &env {
            let path: Vec<String> = name[ENV_PREFIX.len()..]
                .split("__")
                .map(|p| p.to_ascii_lowercase())
                .collect();
            set_path(&mut value, &path, parse_env_value(raw))
                .with_context(|| format!("environment variable {name}"))?;
            let check: Result<Config, _> = toml::Value::Table(value.clone()).try_into();
            if let Err(e) = check {
                bail!("environment variable {name}: {}", one_line(&e));
            }
        }
        let config: Config = toml::Value::Table(value)
            .try_into()
            .map_err(|e| anyhow::anyhow!("{}", one_line(&e)))?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<()> {
        let backend = dialtone_sync::store::backend_of(&self.database.url)
            .map_err(|e| anyhow::anyhow!("database.url: {e}"))?;
        if backend == dialtone_sync::Backend::Postgres
            && self.secrets.key.is_none()
            && self.secrets.key_file.is_none()
        {
            bail!(
                "secrets.key: PostgreSQL needs a configured secret key shared by every node \
                 (set secrets.key, secrets.key_file or DIALTONE_SECRETS__KEY; `openssl rand -hex 32` makes one)"
            );
        }
        if self.database.max_connections == 0 {
            bail!("database.max_connections must be at least 1");
        }
        if !(1..=600_000).contains(&self.database.migration_lock_wait_ms) {
            // PostgreSQL reads 0 as no limit: the wait this setting bounds.
            bail!("database.migration_lock_wait_ms must be between 1 and 600000");
        }
        if self.mirror.poll_interval_ms == 0 || self.mirror.poll_interval_ms > 10_000 {
            bail!("mirror.poll_interval_ms must be between 1 and 10000 (it is also the heartbeat)");
        }
        if self.provisioning.tftp_blksize_limit < 8 || self.provisioning.tftp_windowsize_limit == 0
        {
            bail!("provisioning.tftp_blksize_limit must be at least 8 and tftp_windowsize_limit at least 1");
        }
        let p = &self.provisioning;
        if p.tftp_max_timeout_s == 0 || !(1..=3600).contains(&p.tftp_stall_s) {
            bail!("provisioning: tftp_max_timeout_s must be 1..=255 and tftp_stall_s 1..=3600");
        }
        if p.ban_sources == 0 || p.ban_known_ttl_s == 0 {
            bail!("provisioning: ban_sources and ban_known_ttl_s must be at least 1");
        }
        if p.tftp_max_unacked_per_source == 0 {
            bail!("provisioning.tftp_max_unacked_per_source must be at least 1");
        }
        if p.tftp_listeners > 256 {
            bail!("provisioning.tftp_listeners must be at most 256 (a thread each; 0 is one per core)");
        }
        if p.tftp_max_per_source == 0 {
            bail!("provisioning.tftp_max_per_source must be at least 1 (exempt trusted networks with tftp_per_source_exempt)");
        }
        if let Err(e) = dialtone_tftp::tftp::parse_networks(&p.tftp_per_source_exempt) {
            bail!("provisioning.tftp_per_source_exempt: {e}");
        }
        if p.http_max_per_source == 0 {
            bail!("provisioning.http_max_per_source must be at least 1 (exempt trusted networks with http_per_source_exempt)");
        }
        if let Err(e) = dialtone_tftp::tftp::parse_networks(&p.http_per_source_exempt) {
            bail!("provisioning.http_per_source_exempt: {e}");
        }
        if !(10_000..=100_000_000).contains(&p.render_fuel)
            || !(16..=65_536).contains(&p.render_output_kb)
            || !(10..=10_000).contains(&p.render_time_ms)
        {
            bail!("provisioning: render_fuel must be 10000..=100000000, render_output_kb 16..=65536 and render_time_ms 10..=10000");
        }
        if self.provisioning.https_listen.is_some()
            && (self.provisioning.tls_cert.is_none() || self.provisioning.tls_key.is_none())
        {
            bail!("provisioning.https_listen needs provisioning.tls_cert and provisioning.tls_key");
        }
        if self.provisioning.unclaimed_queue == 0 {
            bail!("provisioning.unclaimed_queue must be at least 1");
        }
        if self.mirror.history_queue == 0 {
            bail!("mirror.history_queue must be at least 1");
        }
        dialtone_directory::SourceNetworks::parse(&self.lookup.source_networks)
            .map_err(|e| anyhow::anyhow!("lookup.source_networks: {e}"))?;
        if !(10..=10_000).contains(&self.lookup.deadline_ms) {
            bail!("lookup.deadline_ms must be between 10 and 10000");
        }
        if self.lookup.max_inflight == 0 || self.lookup.cache_mb == 0 {
            bail!("lookup.max_inflight and lookup.cache_mb must be at least 1");
        }
        if !(4..=15).contains(&self.lookup.suffix_digits) {
            bail!("lookup.suffix_digits must be between 4 and 15");
        }
        // Checked here, not only where logging starts: a bad filter there
        // can only fall back (to `info`), and `check-config` would pass it.
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.filter) {
            bail!(
                "log.filter {:?} is not a tracing filter: {e}",
                self.log.filter
            );
        }
        self.resync.validate()?;
        self.check_durations()
    }

    /// Durations past what anyone means: a "keep forever" of
    /// 9223372036854775807 days wrapped the history cutoff into the future
    /// (every row pruned), and some overflow the clock's arithmetic or a
    /// cache's own limit and panic at start or at shutdown.
    fn check_durations(&self) -> Result<()> {
        const TEN_YEARS_S: u64 = 10 * 366 * 86_400;
        let (m, p, l, d) = (
            &self.mirror,
            &self.provisioning,
            &self.lookup,
            &self.database,
        );
        let bounds: [(&str, u64, u64, u64); 18] = [
            (
                "database.acquire_timeout_ms",
                d.acquire_timeout_ms,
                0,
                3_600_000,
            ),
            ("database.migration_retry_s", d.migration_retry_s, 0, 86_400),
            (
                "mirror.snapshot_interval_s",
                m.snapshot_interval_s,
                0,
                TEN_YEARS_S,
            ),
            (
                "mirror.change_log_retention_s",
                m.change_log_retention_s,
                1,
                TEN_YEARS_S,
            ),
            (
                "mirror.prune_interval_s",
                m.prune_interval_s,
                1,
                TEN_YEARS_S,
            ),
            (
                "mirror.history_retention_days",
                m.history_retention_days,
                1,
                3_660,
            ),
            (
                "mirror.max_staleness_s",
                m.max_staleness_s.unwrap_or(1),
                1,
                TEN_YEARS_S,
            ),
            (
                "http.shutdown_grace_s",
                self.http.shutdown_grace_s,
                0,
                3_600,
            ),
            (
                "provisioning.tftp_timeout_ms",
                p.tftp_timeout_ms,
                1,
                255_000,
            ),
            (
                "provisioning.http_header_timeout_s",
                p.http_header_timeout_s,
                1,
                300,
            ),
            ("provisioning.ban_s", p.ban_s, 1, TEN_YEARS_S),
            (
                "provisioning.ban_known_ttl_s",
                p.ban_known_ttl_s,
                1,
                TEN_YEARS_S,
            ),
            ("lookup.positive_ttl_s", l.positive_ttl_s, 0, TEN_YEARS_S),
            ("lookup.negative_ttl_s", l.negative_ttl_s, 0, TEN_YEARS_S),
            ("lookup.failure_ttl_s", l.failure_ttl_s, 0, TEN_YEARS_S),
            ("lookup.max_stale_s", l.max_stale_s, 0, TEN_YEARS_S),
            ("lookup.breaker_cooldown_s", l.breaker_cooldown_s, 0, 86_400),
            ("supervision.window_s", self.supervision.window_s, 1, 86_400),
        ];
        for (name, value, min, max) in bounds {
            if !(min..=max).contains(&value) {
                bail!("{name} must be between {min} and {max} (got {value})");
            }
        }
        Ok(())
    }

    /// SQLite file path when the database is SQLite.
    fn sqlite_path(&self) -> Option<PathBuf> {
        let rest = self
            .database
            .url
            .strip_prefix("sqlite://")
            .or_else(|| self.database.url.strip_prefix("sqlite:"))?;
        let rest = rest.split('?').next().unwrap_or(rest);
        (!rest.is_empty() && rest != ":memory:").then(|| PathBuf::from(rest))
    }

    pub fn key_file(&self) -> Option<PathBuf> {
        self.secrets
            .key_file
            .clone()
            .or_else(|| self.sqlite_path().map(|p| p.with_extension("key")))
    }

    /// Where mirrored LDAP sources keep their files: the snapshot's
    /// directory (`ldap-mirror-<source id>.bin`).
    pub fn mirror_dir(&self) -> PathBuf {
        self.snapshot_path()
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), PathBuf::from)
    }

    pub fn snapshot_path(&self) -> PathBuf {
        self.mirror
            .snapshot_path
            .clone()
            .unwrap_or_else(|| match self.sqlite_path() {
                Some(p) => p.with_extension("snapshot"),
                None => PathBuf::from("dialtone.snapshot"),
            })
    }

    /// This node's own listeners (API, monitoring, provisioning, HTTPS,
    /// TFTP), which sources tenants configure may never reach.
    pub fn own_listeners(&self) -> Vec<SocketAddr> {
        [
            Some(self.http.listen),
            self.http.monitoring_listen,
            Some(self.provisioning.http_listen),
            self.provisioning.https_listen,
            self.provisioning.tftp_listen,
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    /// The lookup options `serve` and `dialtone lookup` both run with: the
    /// `[lookup]` section, this node's own listeners refused, and mirrored
    /// sources' files and quota.
    pub fn lookup_options(&self) -> Result<dialtone_directory::LookupOptions> {
        let mut options = self.lookup.options(self.own_listeners())?;
        options.mirror_dir = Some(self.mirror_dir());
        options.mirror_entry_quota = self.quotas.directory_entries;
        Ok(options)
    }

    /// The effective config as TOML, secrets masked.
    pub fn to_masked_toml(&self) -> String {
        let mut shown = self.clone();
        if shown.secrets.key.is_some() {
            shown.secrets.key = Some("********".into());
        }
        shown.database.url = dialtone_sync::store::masked_url(&shown.database.url);
        toml::to_string_pretty(&shown).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }
}

fn one_line(e: &impl std::fmt::Display) -> String {
    // toml's messages span several lines with a source excerpt; keep the
    // position line and the message, which is what an operator needs.
    let text = e.to_string();
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let position = lines
        .iter()
        .find(|l| l.starts_with("TOML parse error"))
        .map(|l| l.trim_start_matches("TOML parse error "));
    let message = lines.last().copied().unwrap_or("");
    match position {
        Some(p) => format!("{p}: {message}"),
        None => lines.join(" "),
    }
}

fn parse_env_value(raw: &str) -> toml::Value {
    // Numbers and booleans as TOML reads them; anything else is a string.
    match format!("v = {raw}").parse::<toml::Table>() {
        Ok(mut t) if !matches!(t.get("v"), Some(toml::Value::Table(_))) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.into())),
        _ => toml::Value::String(raw.into()),
    }
}

fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<()> {
    let (last, parents) = path.split_last().context("empty key")?;
    let mut current = table;
    for part in parents {
        let entry = current
            .entry(part.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = entry
            .as_table_mut()
            .with_context(|| format!("{part} is not a section"))?;
    }
    current.insert(last.clone(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dialtone.toml");
        std::fs::write(&path, text).unwrap();
        Config::load_from(
            Some(&path),
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn defaults_need_no_file() {
        let c = Config::load_from(None, std::iter::empty()).unwrap();
        assert_eq!(c.database.url, "sqlite://./dialtone.db");
        assert_eq!(c.key_file().unwrap(), PathBuf::from("./dialtone.key"));
        assert_eq!(c.snapshot_path(), PathBuf::from("./dialtone.snapshot"));
    }

    /// The monitoring listener is one of this node's own: no source a
    /// tenant configures may reach it.
    #[test]
    fn the_monitoring_listener_is_one_of_the_nodes_own() {
        let c = load(
            "[http]\nlisten = \"127.0.0.1:8080\"\n",
            &[("DIALTONE_HTTP__MONITORING_LISTEN", "10.0.0.5:9464")],
        )
        .unwrap();
        let monitoring: SocketAddr = "10.0.0.5:9464".parse().unwrap();
        assert_eq!(c.http.monitoring_listen, Some(monitoring));
        assert!(c.own_listeners().contains(&monitoring));
        let unset = Config::load_from(None, std::iter::empty()).unwrap();
        assert_eq!(unset.http.monitoring_listen, None);
    }

    /// PostgreSQL reads a lock timeout of 0 as none: the migration would
    /// wait, and every query behind it, for as long as the table is busy.
    #[test]
    fn a_migration_lock_wait_of_zero_is_refused() {
        let err = load("[database]\nmigration_lock_wait_ms = 0\n", &[])
            .and_then(|c| c.validate())
            .unwrap_err()
            .to_string();
        assert!(err.contains("database.migration_lock_wait_ms"), "{err}");
        let c = load("[database]\nmigration_lock_wait_ms = 500\n", &[]).unwrap();
        assert!(c.validate().is_ok());
        assert_eq!(c.database.migration_retry_s, 60);
    }

    /// "Keep forever" written as the largest number, and other durations
    /// past what the clock or a cache can hold, are refused by name, not
    /// wrapped (the history cutoff went into the future: every row pruned)
    /// and not left to panic at start or at shutdown.
    #[test]
    fn durations_past_their_bounds_are_refused_by_name() {
        for (section, key, value) in [
            ("mirror", "history_retention_days", "9223372036854775807"),
            ("mirror", "history_retention_days", "0"),
            ("mirror", "change_log_retention_s", "9223372036854775807"),
            ("provisioning", "ban_s", "40000000000"),
            ("provisioning", "http_header_timeout_s", "0"),
            ("http", "shutdown_grace_s", "9223372036854775807"),
            ("lookup", "max_stale_s", "9223372036854775807"),
        ] {
            let err = load(&format!("[{section}]\n{key} = {value}\n"), &[])
                .and_then(|c| c.validate())
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(&format!("{section}.{key} must be between")),
                "{err}"
            );
        }
        assert!(load("[mirror]\nhistory_retention_days = 3650\n", &[])
            .unwrap()
            .validate()
            .is_ok());
        assert!(Config::default().validate().is_ok());
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let err = load(
            "[database]\nurl = \"sqlite://x.db\"\nmax_conections = 3\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains("max_conections"), "{err}");
    }

    #[test]
    fn wrong_type_is_named_with_its_line() {
        let err = load("[http]\n\nlisten = 8080\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 3"), "{err}");
        assert!(
            err.contains("listen") || err.contains("invalid type"),
            "{err}"
        );
    }

    #[test]
    fn tftp_source_limits_are_checked() {
        let err = load(
            "[provisioning]\ntftp_per_source_exempt = [\"10.0.0.0/8\", \"office\"]\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("tftp_per_source_exempt") && err.contains("office"),
            "{err}"
        );
        assert!(load("[provisioning]\ntftp_max_per_source = 0\n", &[]).is_err());
        assert!(load("[provisioning]\ntftp_max_timeout_s = 300\n", &[]).is_err());
    }

    #[test]
    fn resync_section_reads_from_file_and_environment() {
        let c = load(
            "[resync]\nproxy = \"sip.example.net:5060\"\nt1_ms = 100\n",
            &[("DIALTONE_RESYNC__TENANT_RATE_PER_S", "3")],
        )
        .unwrap();
        assert!(c.resync.enabled());
        assert_eq!((c.resync.t1_ms, c.resync.tenant_rate_per_s), (100, 3));
        assert_eq!(c.resync.sender_host(), "sip.example.net");
        assert!(!Config::default().resync.enabled());
        assert!(load("[resync]\nproxy = \"sip.example.net\"\n", &[]).is_err());
        assert!(load("[resync]\nt1_ms = 500\nt2_ms = 100\n", &[]).is_err());
        assert!(load("[resync]\nfrom_domain = \"a b\"\n", &[]).is_err());
        assert!(load("[resync]\nqueu = 1\n", &[]).is_err());
    }

    #[test]
    fn a_bad_log_filter_is_named() {
        for bad in ["info,dialtone_sync=loud", "dialtone=verbose", "[{x"] {
            let err = load(&format!("[log]\nfilter = {bad:?}\n"), &[])
                .unwrap_err()
                .to_string();
            assert!(err.contains("log.filter"), "{bad:?}: {err}");
        }
        let err = load("", &[("DIALTONE_LOG__FILTER", "debug,ldap3=chatty")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("log.filter"), "{err}");
        for good in [
            "info",
            "",
            "warn,dialtone_sync=debug,ldap3=error",
            "dialtone=trace",
        ] {
            let c = load(&format!("[log]\nfilter = {good:?}\n"), &[]).unwrap();
            assert_eq!(c.log.filter, good);
        }
    }

    #[test]
    fn environment_beats_file() {
        let c = load(
            "[database]\nmax_connections = 3\n",
            &[
                ("DIALTONE_DATABASE__MAX_CONNECTIONS", "12"),
                ("DIALTONE_HTTP__LISTEN", "127.0.0.1:9"),
            ],
        )
        .unwrap();
        assert_eq!(c.database.max_connections, 12);
        assert_eq!(c.http.listen.port(), 9);
    }

    #[test]
    fn bad_environment_names_the_variable() {
        let err = load("", &[("DIALTONE_DATABASE__MAX_CONNECTIONS", "lots")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("DIALTONE_DATABASE__MAX_CONNECTIONS"), "{err}");
        let err = load("", &[("DIALTONE_NOPE", "1")]).unwrap_err().to_string();
        assert!(
            err.contains("DIALTONE_NOPE") && err.contains("nope"),
            "{err}"
        );
    }

    #[test]
    fn postgres_requires_a_key_and_masks_it() {
        let err = load("[database]\nurl = \"postgres://u:pw@db/dialtone\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("secrets.key"), "{err}");
        let c = load(
            "[database]\nurl = \"postgres://u:pw@db/dialtone\"\n[secrets]\nkey = \"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\"\n",
            &[],
        )
        .unwrap();
        let shown = c.to_masked_toml();
        assert!(
            !shown.contains("pw@") && !shown.contains("00112233"),
            "{shown}"
        );
        assert!(shown.contains("u:********@db"), "{shown}");
    }

    /// Wherever the password is (the user part, the query, with an `@` in
    /// it), and whatever the scheme, `check-config` and the errors for a
    /// database URL never show it.
    #[test]
    fn database_passwords_are_masked_in_every_form() {
        let key = "[secrets]\nkey = \"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\"\n";
        for url in [
            "postgres://u@db/x?password=s3cret",
            // The old masking showed what follows the first `@`.
            "postgres://u:hunter@s3cret@db/x",
            "postgres://u:s3cret@db:99999/x",
        ] {
            let c = load(&format!("[database]\nurl = {url:?}\n{key}"), &[]).unwrap();
            let shown = c.to_masked_toml();
            assert!(
                !shown.contains("s3cret") && shown.contains("********"),
                "{url}: {shown}"
            );
        }
        let err = load("[database]\nurl = \"postgress://u:s3cret@db/x\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("database.url"), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
    }
}
