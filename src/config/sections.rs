//! The configuration's smaller sections and their defaults.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use crate::resync::family;

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
    /// NOTIFYs awaiting an answer at once; past it, sending waits. A
    /// tenant holds at most a quarter of the places the others leave.
    pub max_inflight: usize,
    /// Seconds before a phone, or its line-1 address, sent a resync may be
    /// queued another (one that failed after its NOTIFY left counts too,
    /// each failure in a row doubling the wait up to an hour); 0: no
    /// spacing.
    pub phone_spacing_s: u64,
    /// Send straight to the address the phone last fetched from, port 5060,
    /// instead of the proxy: for sites where dialtone and the phones share
    /// a LAN.
    pub direct: bool,
    /// With `direct`: the networks a NOTIFY may go to. A fetch's source is
    /// the phone's word (a TFTP source can be forged), so this keeps
    /// NOTIFYs on the operator's own networks. Default: the private ranges.
    pub direct_networks: Vec<String>,
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
            phone_spacing_s: 60,
            direct: false,
            direct_networks: [
                "10.0.0.0/8",
                "172.16.0.0/12",
                "192.168.0.0/16",
                "100.64.0.0/10",
                "fc00::/7",
            ]
            .map(String::from)
            .to_vec(),
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
        split_host_port(proxy)
            .map_or(proxy, |(host, _)| host)
            .to_string()
    }

    pub(super) fn validate(&self) -> Result<()> {
        if let Some(proxy) = &self.proxy {
            check_proxy(proxy)?;
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
        // A semaphore of `max_inflight` places: past its own limit it
        // panicked the supervised task at every restart.
        if self.queue > 1_000_000 || self.tenant_queue > 1_000_000 || self.max_inflight > 1_000_000
        {
            bail!(
                "resync.queue, resync.tenant_queue and resync.max_inflight must be at most 1000000"
            );
        }
        if self.phone_spacing_s > 3600 {
            bail!("resync.phone_spacing_s must be at most 3600");
        }
        super::validate::written_networks("resync.direct_networks", &self.direct_networks)?;
        if let Err(e) = dialtone_tftp::guard::source_networks(&self.direct_networks) {
            bail!("resync.direct_networks: {e}");
        }
        let sender = self.sender_host();
        if !crate::resync::sip::valid_domain(&sender) {
            if self.from_domain.is_some() {
                bail!("resync.from_domain must be a host name or address");
            }
            // Without from_domain the proxy's host names the sender, and a
            // name a container network allows ("sip_proxy") is no SIP host.
            bail!(
                "resync.proxy's host {sender:?} is not a host name or address a SIP From header \
                 may carry (letters, digits, '-' and '.'); set resync.from_domain to one"
            );
        }
        Ok(())
    }

    /// A proxy written as an address of the family `listen` cannot send
    /// to failed every resync as "could not be resolved", with nothing
    /// said at start. Warned of, not refused: a node that started with it
    /// (and served its phones, failing only resyncs) must start after an
    /// upgrade; each resync says why it failed. Only while the proxy is
    /// used: `direct` sends past it.
    fn proxy_family_warning(&self) -> Option<String> {
        let proxy = self.proxy.as_deref().filter(|_| !self.direct)?;
        let literal = split_host_port(proxy).and_then(|(host, _)| {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            host.parse::<IpAddr>().ok()
        })?;
        let listen = self.listen.ip();
        (!family::reaches(listen, literal)).then(|| {
            format!(
                "resync.proxy {proxy} is {} and resync.listen {} is {}: no NOTIFY can reach it, \
                 and every resync fails; set resync.listen to an {0} address, or \"[::]:0\" for both",
                family::name(literal),
                self.listen,
                family::name(listen),
            )
        })
    }

    /// What `serve` logs at start and `check-config` shows: a proxy
    /// `listen` cannot send to, and `direct_networks` entries of the
    /// family `listen` cannot send to: their phones got "has not fetched
    /// its configuration" while history showed they had. The latter only
    /// with `direct` on: the shipped list holds `fc00::/7`, which the
    /// shipped `listen` (`0.0.0.0:0`) cannot reach.
    pub(super) fn warnings(&self) -> Vec<String> {
        let mut warnings: Vec<String> = self.proxy_family_warning().into_iter().collect();
        let listen = self.listen.ip();
        let unreached: Vec<&str> = self
            .direct_networks
            .iter()
            .filter(|text| {
                dialtone_tftp::tftp::parse_network(text)
                    .is_some_and(|net| !family::reaches(listen, net.addr()))
            })
            .map(String::as_str)
            .collect();
        if !self.direct || unreached.is_empty() {
            return warnings;
        }
        let theirs = if listen.to_canonical().is_ipv4() {
            "IPv6"
        } else {
            "IPv4"
        };
        warnings.push(format!(
            "resync.direct_networks has {theirs} networks ({}), and resync.listen {} is {}: no NOTIFY \
             reaches a phone in them (resync.listen = \"[::]:0\" sends over both)",
            unreached.join(", "),
            self.listen,
            family::name(listen),
        ));
        warnings
    }
}

/// `host:port` or `[IPv6]:port`. An unbracketed IPv6 address is refused,
/// not guessed at: in `2001:db8::5:5060` the last group may be the port
/// or part of the address.
fn check_proxy(proxy: &str) -> Result<()> {
    if !proxy.starts_with('[') && proxy.matches(':').count() > 1 {
        bail!("resync.proxy: write an IPv6 address in brackets, [addr]:port such as [2001:db8::5]:5060 (got {proxy:?})");
    }
    let port = split_host_port(proxy).map(|(_, port)| port.parse::<u16>());
    if !matches!(port, Some(Ok(p)) if p > 0) {
        bail!("resync.proxy must be host:port or [IPv6 address]:port (got {proxy:?})");
    }
    Ok(())
}

/// The host (an IPv6 address keeping its brackets, as a SIP URI writes
/// it) and the port text; `None` without a port.
fn split_host_port(text: &str) -> Option<(&str, &str)> {
    match text.strip_prefix('[') {
        Some(rest) => {
            let (address, after) = rest.split_once(']')?;
            address.parse::<std::net::Ipv6Addr>().ok()?;
            let port = after.strip_prefix(':')?;
            Some((&text[..address.len() + 2], port))
        }
        None => text
            .rsplit_once(':')
            .filter(|(host, _)| !host.contains(':')),
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
    /// How long a tenant's admin request waits on the database's answer
    /// before it is answered 503 (`outcome_unknown` for a write); its work
    /// goes on, holding its tenant's place, until the database answers or
    /// twice this long has passed (a dead connection), when it is dropped.
    pub request_timeout_s: u64,
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

/// Below this no connection opens in time: SQLite's start failed ("pool
/// timed out"), and a PostgreSQL node with a snapshot served it for ever,
/// never reaching the database.
pub const LEAST_ACQUIRE_TIMEOUT_MS: u64 = 100;

impl DatabaseConfig {
    /// `acquire_timeout_ms`, raised to [`LEAST_ACQUIRE_TIMEOUT_MS`]: raised
    /// and warned of rather than refused, so that a node configured below
    /// it still starts after an upgrade.
    pub fn acquire_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.acquire_timeout_ms.max(LEAST_ACQUIRE_TIMEOUT_MS))
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: "sqlite://./dialtone.db".into(),
            max_connections: 8,
            acquire_timeout_ms: 3000,
            request_timeout_s: 60,
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
    /// Audit rows are kept this long (a year and a month by default, for
    /// a yearly review).
    pub audit_retention_days: u64,
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
            audit_retention_days: 400,
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

#[cfg(test)]
#[path = "sections_tests.rs"]
mod tests;
