//! Checks a loaded configuration: values a section's type cannot refuse
//! by itself, each refused with its key named.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use anyhow::{bail, Result};

use super::Config;

/// Refuses a network list with an IPv4 octet a leading zero makes
/// ambiguous (`010.0.0.0/8`): read here as decimal, by inet_aton-style
/// tools as octal, so the list the operator checked with those would not
/// be the one enforced. Checked before the list is parsed, so that a bare
/// address so written (which the parser refuses) is told the same reason.
pub(super) fn written_networks(key: &str, list: &[String]) -> Result<()> {
    for entry in list {
        if let Err(e) = dialtone_sync::addresses::octets_unambiguous(entry) {
            bail!("{key}: {e}");
        }
    }
    Ok(())
}

impl Config {
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
        // A transfer holds its window's blocks until acknowledged, and a
        // window past half the block numbers (32,768) would read an old
        // duplicate ACK as a new one; 1,024 is far past any phone's ask.
        if !(8..=65_464).contains(&self.provisioning.tftp_blksize_limit)
            || !(1..=1_024).contains(&self.provisioning.tftp_windowsize_limit)
        {
            bail!("provisioning.tftp_blksize_limit must be 8..=65464 (RFC 2348) and tftp_windowsize_limit 1..=1024");
        }
        let p = &self.provisioning;
        if p.tftp_max_timeout_s == 0 || !(1..=3600).contains(&p.tftp_stall_s) {
            bail!("provisioning: tftp_max_timeout_s must be 1..=255 and tftp_stall_s 1..=3600");
        }
        if p.ban_sources == 0 || p.ban_known_ttl_s == 0 || p.ban_phone_failures == 0 {
            bail!("provisioning: ban_sources, ban_known_ttl_s and ban_phone_failures must be at least 1");
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
        if let Some(bad) = p.host_names.iter().find(|name| {
            let name = name.trim();
            let domain = name.strip_prefix("*.").unwrap_or(name);
            name.is_empty()
                || name.len() > dialtone_tftp::host_names::MAX_HOST_NAME
                || (name != "*"
                    && (domain.is_empty()
                        || !domain
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')))
        }) {
            bail!(
                "provisioning.host_names: {bad:?} is not a DNS name (letters, digits, '-' and '.', at most 253 characters; \"*.example.net\" for the names under one, \"*\" for any)"
            );
        }
        written_networks(
            "provisioning.tftp_per_source_exempt",
            &p.tftp_per_source_exempt,
        )?;
        if let Err(e) = dialtone_tftp::guard::source_networks(&p.tftp_per_source_exempt) {
            bail!("provisioning.tftp_per_source_exempt: {e}");
        }
        if p.http_max_per_source == 0 {
            bail!("provisioning.http_max_per_source must be at least 1 (exempt trusted networks with http_per_source_exempt)");
        }
        written_networks(
            "provisioning.http_per_source_exempt",
            &p.http_per_source_exempt,
        )?;
        if let Err(e) = dialtone_tftp::guard::source_networks(&p.http_per_source_exempt) {
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
        written_networks("lookup.source_networks", &self.lookup.source_networks)?;
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
        if self.lookup.mirror_threads > 256 {
            // tokio's blocking threads (512) also resolve names and write
            // snapshots.
            bail!("lookup.mirror_threads must be at most 256 (0 is half the cores)");
        }
        // No 0 for "unlimited": every tenant's work runs under a budget.
        if !(1..=1_000_000).contains(&self.lookup.tenant_rate) {
            bail!(
                "lookup.tenant_rate must be between 1 and 1000000 lookups a second per tenant \
                 (got {}; there is no unlimited)",
                self.lookup.tenant_rate
            );
        }
        if self.lookup.tenant_burst == 0 {
            bail!("lookup.tenant_burst must be at least 1");
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
        self.check_listeners_apart()?;
        self.check_bounds()
    }

    /// What is accepted but probably not meant, for `serve` to log and
    /// `check-config` to show.
    pub fn warnings(&self) -> Vec<String> {
        let p = &self.provisioning;
        let mut warnings = Vec::new();
        // Warned of, not refused: a private network or a tunnel may carry it.
        if let Some(exposed) = dialtone_sync::store::exposed_on_the_network(&self.database.url) {
            warnings.push(format!("database.url: {exposed}"));
        }
        if self.database.acquire_timeout_ms < super::sections::LEAST_ACQUIRE_TIMEOUT_MS {
            warnings.push(format!(
                "database.acquire_timeout_ms = {} is raised to {}: no connection opens sooner",
                self.database.acquire_timeout_ms,
                super::sections::LEAST_ACQUIRE_TIMEOUT_MS
            ));
        }
        // `key` wins, and an operator who replaced the file saw no effect
        // and no word why. Not refused: a node that starts today with both
        // (a drop-in's variable over the packaged file) must start after
        // an upgrade.
        if self.secrets.key.is_some() && self.secrets.key_file.is_some() {
            warnings.push(
                "secrets.key and secrets.key_file are both set (DIALTONE_SECRETS__KEY sets secrets.key): \
                 secrets.key is used and the file is not read"
                    .to_string(),
            );
        }
        if p.https_listen.is_none() && (p.tls_cert.is_some() || p.tls_key.is_some()) {
            warnings.push(
                "provisioning.tls_cert and tls_key are ignored: provisioning.https_listen is unset, \
                 so no HTTPS listener uses them"
                    .to_string(),
            );
        }
        warnings.extend(self.resync.warnings());
        warnings
    }

    /// Two of this node's own listeners on one address: the second bind
    /// failed with "Address already in use", which reads as another
    /// program holding the port. A wildcard takes its port on every
    /// address of its family, and `[::]` (bound dual-stack) on every IPv4
    /// address too; a mapped address is its IPv4 one; port 0 is a fresh
    /// port at each bind.
    fn check_listeners_apart(&self) -> Result<()> {
        let everywhere = |ip: IpAddr| ip == IpAddr::V6(Ipv6Addr::UNSPECIFIED);
        let overlap = |a: SocketAddr, b: SocketAddr| {
            let (x, y) = (a.ip().to_canonical(), b.ip().to_canonical());
            a.port() != 0
                && a.port() == b.port()
                && (everywhere(x)
                    || everywhere(y)
                    || (x.is_ipv4() == y.is_ipv4()
                        && (x == y || x.is_unspecified() || y.is_unspecified())))
        };
        for (protocol, listeners) in self.bound_listeners() {
            for (i, &(first_key, first)) in listeners.iter().enumerate() {
                if let Some(&(second_key, second)) =
                    listeners[i + 1..].iter().find(|(_, b)| overlap(first, *b))
                {
                    bail!(
                        "{first_key} ({first}) and {second_key} ({second}) would both listen on \
                         {protocol} port {}: give each its own address",
                        first.port()
                    );
                }
            }
        }
        Ok(())
    }

    /// The URL phones are told to fetch from is written into the settings
    /// they keep (Yealink's auto-provisioning server, Cisco's profile rule,
    /// Snom's setting server): one they cannot reach leaves them unable to
    /// re-provision until someone visits each. Without `base_url` it is
    /// made from `http_listen`, which is wrong when that is a wildcard, or
    /// loopback while phones reach this node on another address.
    ///
    /// Checked once the command line's listeners are applied (`main.rs`,
    /// and again at each reload), not as the file is read: a flag may open
    /// a listener the file keeps on loopback, or close one it opens.
    pub fn check_base_url(&self) -> Result<()> {
        let p = &self.provisioning;
        // Unmapped first: `[::ffff:127.0.0.1]` is loopback to the kernel,
        // though not to `Ipv6Addr::is_loopback`, and passed where
        // `127.0.0.1` was refused.
        let reached_elsewhere = [Some(p.http_listen), p.tftp_listen, p.https_listen]
            .into_iter()
            .flatten()
            .any(|listen| !listen.ip().to_canonical().is_loopback());
        let Some(base) = &p.base_url else {
            let listen = p.http_listen.ip().to_canonical();
            // A link-local address with its zone makes no URL at all.
            let no_url = url::Url::parse(&p.base_url()).is_err();
            // Port 0 is whatever port the bind was given, never known here.
            let no_port = p.http_listen.port() == 0;
            if listen.is_unspecified()
                || (listen.is_loopback() && reached_elsewhere)
                || no_url
                || no_port
            {
                bail!(
                    "provisioning.base_url is unset, so phones would be told to fetch from http://{}, \
                     which they cannot reach; set it to the URL phones use (\"http://prov.example.net\")",
                    p.http_listen
                );
            }
            return Ok(());
        };
        let url = url::Url::parse(base)
            .map_err(|e| anyhow::anyhow!("provisioning.base_url {base:?}: {e}"))?;
        // Loopback is unreachable to phones once they reach this node on
        // another address.
        let host_ip = |ip: std::net::IpAddr| {
            let ip = ip.to_canonical();
            ip.is_unspecified() || (ip.is_loopback() && reached_elsewhere)
        };
        let unreachable = match url.host() {
            Some(url::Host::Ipv4(ip)) => host_ip(ip.into()),
            Some(url::Host::Ipv6(ip)) => host_ip(ip.into()),
            Some(url::Host::Domain(name)) => name == "localhost" && reached_elsewhere,
            None => true,
        };
        if !matches!(url.scheme(), "http" | "https")
            || unreachable
            || url.port() == Some(0)
            || url.query().is_some()
            || url.fragment().is_some()
        {
            bail!(
                "provisioning.base_url {base:?} must be an http:// or https:// URL of a host phones \
                 reach, without a query or fragment"
            );
        }
        Ok(())
    }

    /// Durations and sizes past what anyone means: a "keep forever" of
    /// 9223372036854775807 days wrapped the history cutoff into the future
    /// (every row pruned), and some overflow the clock's arithmetic, a
    /// cache's or a channel's own limit and panic at start or at shutdown.
    fn check_bounds(&self) -> Result<()> {
        const TEN_YEARS_S: u64 = 10 * 366 * 86_400;
        const QUEUE_MAX: u64 = 1_000_000;
        let (m, p, l, d) = (
            &self.mirror,
            &self.provisioning,
            &self.lookup,
            &self.database,
        );
        const COUNT_MAX: u64 = 100_000_000;
        let bounds: [(&str, u64, u64, u64); 40] = [
            // Below 100 it is raised (`DatabaseConfig::acquire_timeout`).
            (
                "database.acquire_timeout_ms",
                d.acquire_timeout_ms,
                0,
                3_600_000,
            ),
            ("database.migration_retry_s", d.migration_retry_s, 0, 86_400),
            ("database.request_timeout_s", d.request_timeout_s, 1, 3_600),
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
                "mirror.audit_retention_days",
                m.audit_retention_days,
                1,
                36_600,
            ),
            (
                "mirror.max_staleness_s",
                m.max_staleness_s.unwrap_or(1),
                1,
                TEN_YEARS_S,
            ),
            // The drain takes about twice the grace, and systemd hears its
            // budget in microseconds as 32 bits (71 minutes): past 2,000 s
            // it would be told too little and kill the drain unfinished.
            (
                "http.shutdown_grace_s",
                self.http.shutdown_grace_s,
                0,
                2_000,
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
                "provisioning.tftp_min_rate",
                u64::from(p.tftp_min_rate),
                1,
                100_000_000,
            ),
            (
                "provisioning.tftp_min_rate_slack_s",
                p.tftp_min_rate_slack_s,
                1,
                86_400,
            ),
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
            // Queues and the render cache: bounded in fact, not only in
            // name (a channel of `usize::MAX >> 3` slots panicked at
            // start). The render queues take 0, as before (the pool holds
            // one).
            (
                "provisioning.unclaimed_queue",
                p.unclaimed_queue as u64,
                1,
                QUEUE_MAX,
            ),
            ("mirror.history_queue", m.history_queue as u64, 1, QUEUE_MAX),
            (
                "provisioning.render_queue",
                p.render_queue as u64,
                0,
                QUEUE_MAX,
            ),
            (
                "provisioning.render_tenant_queue",
                p.render_tenant_queue as u64,
                0,
                QUEUE_MAX,
            ),
            ("provisioning.render_cache_mb", p.render_cache_mb, 1, 65_536),
            // Counts the code adds to, shifts or sizes tables by: a huge
            // value wrapped (a lookup cache of 0 bytes, a restart limit
            // never reached) or panicked, where it should be refused.
            (
                "supervision.max_restarts",
                self.supervision.max_restarts as u64,
                0,
                1_000_000,
            ),
            (
                "provisioning.tftp_max_transfers",
                p.tftp_max_transfers as u64,
                1,
                QUEUE_MAX,
            ),
            (
                "provisioning.tftp_max_per_source",
                p.tftp_max_per_source as u64,
                1,
                QUEUE_MAX,
            ),
            (
                "provisioning.http_max_connections",
                p.http_max_connections as u64,
                1,
                QUEUE_MAX,
            ),
            (
                "provisioning.http_max_per_source",
                p.http_max_per_source as u64,
                1,
                QUEUE_MAX,
            ),
            (
                "provisioning.render_threads",
                p.render_threads as u64,
                0,
                4_096,
            ),
            (
                "provisioning.render_per_tenant",
                p.render_per_tenant as u64,
                0,
                4_096,
            ),
            (
                "provisioning.render_self_check_per_s",
                p.render_self_check_per_s as u64,
                0,
                QUEUE_MAX,
            ),
            (
                "provisioning.ban_sources",
                p.ban_sources as u64,
                1,
                COUNT_MAX,
            ),
            (
                "provisioning.ban_known_phones",
                p.ban_known_phones as u64,
                0,
                COUNT_MAX,
            ),
            ("lookup.cache_mb", l.cache_mb, 1, 65_536),
            ("lookup.max_inflight", l.max_inflight as u64, 1, QUEUE_MAX),
            ("lookup.indexed_tenants", l.indexed_tenants, 0, COUNT_MAX),
        ];
        // Row counts: 0 is no "unlimited" here. A catch-up limit of 0 made
        // every change a full reload, and -1 reloaded at every poll.
        let counts: [(&str, i64, i64, i64); 2] = [
            (
                "mirror.max_catch_up_rows",
                m.max_catch_up_rows,
                1,
                10_000_000,
            ),
            (
                "mirror.change_log_max_rows",
                m.change_log_max_rows,
                1,
                1_000_000_000_000,
            ),
        ];
        for (name, value, min, max) in counts {
            if !(min..=max).contains(&value) {
                bail!("{name} must be between {min} and {max} (got {value})");
            }
        }
        for (name, value, min, max) in bounds {
            if !(min..=max).contains(&value) {
                bail!("{name} must be between {min} and {max} (got {value})");
            }
        }
        Ok(())
    }
}
