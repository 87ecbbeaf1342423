//! A tenant's remote sources (LDAP, HTTP), built from its
//! `directory_sources` rows and kept between lookups so that connections
//! and breakers persist. A changed row is rebuilt on its next use.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dialtone_sync::{DirectorySource, Id, MirrorState, Purpose, SecretKey, SourceKind, Tenant};
use ipnet::IpNet;

use crate::breaker::Breaker;
use crate::clock::Clock;
use crate::error::DirectoryError;
use crate::ldap::LdapSource;
use crate::mirror::{MirrorAnswer, SourceMirror};
use crate::networks::SourceNetworks;
use crate::settings::{HttpSettings, LdapMode, LdapSettings};
use crate::source_label::SourceLabel;
use crate::upstream::HttpSource;

pub enum Remote {
    Ldap(Box<LdapSource>),
    Http(HttpSource),
}

pub struct RemoteSource {
    pub id: Id,
    pub tenant_id: Id,
    pub name: Arc<str>,
    pub priority: i32,
    pub timeout: Duration,
    pub remote: Remote,
    pub breaker: Breaker,
    /// Half the time the source could have for a lookup (its timeout, at
    /// most the lookup's deadline): a timeout within less is not counted.
    pub fair_budget: Duration,
    /// Set for LDAP sources in mirror mode: lookups answer from it.
    pub mirror: Option<Arc<SourceMirror>>,
    /// A failing source's lines in the log, one a second: a mirrored one
    /// has no breaker, and each miss of a tenant's distinct numbers asks it.
    pub failure_log: dialtone_sync::LogLimit,
}

impl RemoteSource {
    pub fn kind(&self) -> &'static str {
        match self.remote {
            Remote::Ldap(_) => "ldap",
            Remote::Http(_) => "http",
        }
    }

    /// `region` is the tenant's: which spellings of the number are its
    /// own national ones.
    pub async fn lookup(
        &self,
        e164: &str,
        region: &str,
        budget: Duration,
    ) -> Result<Option<String>, DirectoryError> {
        if let (Some(mirror), Remote::Ldap(source)) = (&self.mirror, &self.remote) {
            match mirror.lookup(e164) {
                MirrorAnswer::Found(name) => return Ok(Some(name)),
                MirrorAnswer::Missing if !mirror.live_fallback => return Ok(None),
                MirrorAnswer::NotReady if !mirror.live_fallback => {
                    return Err(DirectoryError::MirrorNotReady)
                }
                // The mirror answers whatever the directory's state, so
                // the breaker guards only the live fallback.
                _ => {
                    if self.breaker.permit().is_none() {
                        return Err(DirectoryError::BreakerOpen);
                    }
                    let result = source.lookup(e164, region, budget).await;
                    match &result {
                        Ok(_) => self.succeeded(),
                        Err(e) => self.failed(e, budget),
                    }
                    return result;
                }
            }
        }
        match &self.remote {
            Remote::Ldap(source) => source.lookup(e164, region, budget).await,
            Remote::Http(source) => source.lookup(e164, budget).await,
        }
    }

    /// Counts a failure after `budget` toward the breaker, unless it was a
    /// timeout within less than half the time the source could have had:
    /// that says only that a slow source before it used up the deadline,
    /// and counted, it would open a healthy source's breaker.
    pub fn failed(&self, error: &DirectoryError, budget: Duration) {
        let starved = matches!(error, DirectoryError::Timeout) && budget < self.fair_budget;
        if starved {
            return;
        }
        // Once per opening: a failed probe keeps it open without a line.
        if let Some(failures) = self.breaker.failure() {
            tracing::warn!(
                tenant = self.tenant_id,
                source_id = self.id,
                source = ?self.name,
                failures,
                "directory source failing; circuit opened"
            );
        }
    }

    /// Tells the breaker the source answered.
    pub fn succeeded(&self) {
        if self.breaker.success() {
            tracing::info!(
                tenant = self.tenant_id,
                source_id = self.id,
                source = ?self.name,
                "directory source answered again; circuit closed"
            );
        }
    }

    /// LDAP searches sent so far (0 for other kinds); tests count with it.
    pub fn searches(&self) -> u64 {
        match &self.remote {
            Remote::Ldap(source) => source.searches(),
            Remote::Http(_) => 0,
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct BreakerOptions {
    pub threshold: u32,
    pub cooldown: Duration,
    /// The lookup's deadline (see [`RemoteSource::failed`]).
    pub deadline: Duration,
}

/// Builds a source from its row. Also what the admin API uses to validate
/// a source before saving it. `tenant_networks` are the networks opened
/// for the row's tenant alone ([`crate::networks::tenant_networks`]).
pub fn build_source(
    row: &DirectorySource,
    key: Option<&SecretKey>,
    breaker: BreakerOptions,
    clock: Clock,
    networks: &Arc<SourceNetworks>,
    tenant_networks: &[IpNet],
) -> Result<RemoteSource, DirectoryError> {
    let secret = match (&row.secret, key) {
        (None, _) => None,
        (Some(sealed), Some(key)) => Some(key.open(Purpose::SourceSecret, sealed).map_err(
            |e| DirectoryError::Settings {
                source_name: row.name.to_string(),
                reason: format!("cannot open the stored secret: {e}"),
            },
        )?),
        (Some(_), None) => {
            return Err(DirectoryError::Settings {
                source_name: row.name.to_string(),
                reason: "a secret is stored but no secret key is configured".into(),
            })
        }
    };
    let networks = networks.for_tenant(row.tenant_id, tenant_networks);
    let timeout = Duration::from_millis(row.timeout_ms.max(1) as u64);
    let remote = match row.kind {
        SourceKind::Ldap => Remote::Ldap(Box::new(LdapSource::new(
            SourceLabel::new(row.tenant_id, row.id, &row.name),
            LdapSettings::parse(&row.name, &row.settings)?,
            secret,
            networks,
        )?)),
        SourceKind::Http => Remote::Http(HttpSource::new(
            &row.name,
            HttpSettings::parse(&row.name, &row.settings)?,
            secret,
            networks,
            timeout,
        )?),
    };
    Ok(RemoteSource {
        id: row.id,
        tenant_id: row.tenant_id,
        name: row.name.as_ref().into(),
        priority: row.priority,
        timeout,
        remote,
        breaker: Breaker::new(breaker.threshold, breaker.cooldown, clock),
        fair_budget: timeout.min(breaker.deadline) / 2,
        mirror: None,
        failure_log: dialtone_sync::LogLimit::new(),
    })
}

/// A tenant row's version and the networks it opens.
type Opened = (std::sync::Weak<Tenant>, Vec<IpNet>);

/// A built source, the row it was built from and the networks its tenant
/// had opened then.
type Built = (Arc<DirectorySource>, Vec<IpNet>, Arc<RemoteSource>);

pub struct SourceRegistry {
    key: Option<SecretKey>,
    breaker: BreakerOptions,
    clock: Clock,
    networks: Arc<SourceNetworks>,
    /// Each built source with the row it was built from: it is used only
    /// while the mirror holds that very row (a timestamp could repeat
    /// within a millisecond; the row cannot).
    built: Mutex<HashMap<Id, Built>>,
    /// Rows that would not build, so each is logged once.
    broken: Mutex<HashMap<Id, Arc<DirectorySource>>>,
    /// Each tenant's opened networks, read once per version of its row
    /// (every lookup miss asks, and its settings are up to 64 KiB of JSON).
    opened: Mutex<HashMap<Id, Opened>>,
}

impl SourceRegistry {
    pub fn new(
        key: Option<SecretKey>,
        breaker: BreakerOptions,
        clock: Clock,
        networks: Arc<SourceNetworks>,
    ) -> SourceRegistry {
        SourceRegistry {
            key,
            breaker,
            clock,
            networks,
            built: Mutex::default(),
            broken: Mutex::default(),
            opened: Mutex::default(),
        }
    }

    /// The networks a global admin opened for `tenant`'s sources alone.
    /// Stored lists were checked when written; one that no longer reads
    /// opens nothing.
    fn opened_for(&self, tenant: &Arc<Tenant>) -> Vec<IpNet> {
        if !tenant.settings.contains(crate::networks::TENANT_SETTING) {
            return Vec::new();
        }
        let mut opened = self.opened.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, nets)) = opened
            .get(&tenant.id)
            .filter(|(row, _)| std::ptr::eq(row.as_ptr(), Arc::as_ptr(tenant)))
        {
            return nets.clone();
        }
        let nets = crate::networks::tenant_networks(&tenant.settings).unwrap_or_default();
        // Only global admins set the key; deleted tenants' entries go now
        // and then.
        if opened.len() >= 4096 {
            opened.retain(|_, (row, _)| row.strong_count() > 0);
        }
        opened.insert(tenant.id, (Arc::downgrade(tenant), nets.clone()));
        nets
    }

    /// The tenant's enabled remote sources in priority order. Rows that do
    /// not build are skipped (and logged once per version).
    pub fn sources_of(&self, state: &MirrorState, tenant: Id) -> Vec<Arc<RemoteSource>> {
        let rows = state.sources_of(tenant);
        let mut out = Vec::with_capacity(rows.len());
        let opened = state
            .tenant(tenant)
            .map(|t| self.opened_for(t))
            .unwrap_or_default();
        for row in rows.iter().filter(|r| r.enabled) {
            if let Some(source) = self.get_or_build(row, &opened) {
                out.push(source);
            }
        }
        out.sort_by_key(|s| (s.priority, s.id));
        out
    }

    /// The source built from `row` while its tenant had `opened` these
    /// networks: a global admin closing one takes effect at the next lookup.
    fn get_or_build(
        &self,
        row: &Arc<DirectorySource>,
        opened: &[IpNet],
    ) -> Option<Arc<RemoteSource>> {
        let same = |(from, nets, _): &&Built| {
            (Arc::ptr_eq(from, row) || **from == **row) && nets.as_slice() == opened
        };
        if let Some((.., source)) = self
            .built
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&row.id)
            .filter(same)
        {
            return Some(source.clone());
        }
        if self
            .broken
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&row.id)
            .is_some_and(|from| Arc::ptr_eq(from, row) || **from == **row)
        {
            return None;
        }
        match build_source(
            row,
            self.key.as_ref(),
            self.breaker,
            self.clock.clone(),
            &self.networks,
            opened,
        ) {
            Ok(mut source) => {
                // Only the registry's sources mirror (and are synced by
                // `run_mirrors`); one built for the admin API's test call
                // asks the directory live.
                if let Remote::Ldap(ldap) = &source.remote {
                    let settings = ldap.settings();
                    if settings.mode == LdapMode::Mirror {
                        source.mirror =
                            Some(Arc::new(SourceMirror::new(row, settings.live_fallback)));
                    }
                }
                // Built outside the registry's lock, which every tenant's
                // lookups take: one built meanwhile by another lookup of
                // the same row is kept, so all share one breaker.
                let mut built = self.built.lock().unwrap_or_else(|e| e.into_inner());
                if let Some((.., source)) = built.get(&row.id).filter(same) {
                    return Some(source.clone());
                }
                let source = Arc::new(source);
                built.insert(row.id, (row.clone(), opened.to_vec(), source.clone()));
                Some(source)
            }
            Err(e) => {
                tracing::error!(tenant = row.tenant_id, source_id = row.id, source = ?row.name, error = &*e.to_string(), "directory source skipped");
                metrics::counter!("dialtone_lookup_source_config_errors_total").increment(1);
                self.built
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&row.id);
                self.broken
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(row.id, row.clone());
                None
            }
        }
    }

    /// Forgets built sources that the mirror no longer has.
    pub fn retain_current(&self, state: &MirrorState) {
        // Enabled ones only: a disabled mirrored source kept its whole
        // index in memory, outside the quota that counts enabled sources,
        // so enabling, syncing and disabling ten of them held ten quotas.
        let live: std::collections::HashSet<Id> = state
            .tenants()
            .flat_map(|t| state.sources_of(t.id))
            .filter(|s| s.enabled)
            .map(|s| s.id)
            .collect();
        self.built
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|id, _| live.contains(id));
        self.broken
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|id, _| live.contains(id));
    }

    /// The source built for `id`, if one is.
    pub fn built(&self, id: Id) -> Option<Arc<RemoteSource>> {
        let built = self.built.lock().unwrap_or_else(|e| e.into_inner());
        built.get(&id).map(|(.., source)| source.clone())
    }

    /// A built source by name, for tests and diagnostics.
    pub fn get(&self, state: &MirrorState, tenant: Id, name: &str) -> Option<Arc<RemoteSource>> {
        self.sources_of(state, tenant)
            .into_iter()
            .find(|s| &*s.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::networks::tests::{in_flight_of, release_held};

    fn row(tenant_id: Id, kind: SourceKind, settings: serde_json::Value) -> DirectorySource {
        DirectorySource {
            id: 1,
            tenant_id,
            name: "dir".into(),
            kind,
            priority: 10,
            enabled: true,
            settings: settings.to_string().into(),
            secret: None,
            timeout_ms: 20,
            updated_at: 0,
        }
    }

    /// One rule for a source's breaker, whether the service asks it or a
    /// mirror falls back to it live: a timeout within less than half of
    /// min(timeout, deadline) is not the source's fault; any other
    /// failure, or a timeout with the time it could have had, counts.
    #[tokio::test]
    async fn only_timeouts_with_a_fair_budget_count_toward_the_breaker() {
        use crate::breaker::BreakerState;
        let networks = SourceNetworks::default().shared();
        let breaker = BreakerOptions {
            threshold: 2,
            cooldown: Duration::from_secs(600),
            deadline: Duration::from_millis(30),
        };
        let settings = serde_json::json!({"url": "http://cnam.example.test/?n={e164}"});
        let build = || {
            let row = row(7, SourceKind::Http, settings.clone());
            build_source(&row, None, breaker, Clock::system(), &networks, &[]).unwrap()
        };
        // Timeout 20 ms, deadline 30 ms: fair is 10 ms.
        let starved = build();
        for _ in 0..5 {
            starved.failed(&DirectoryError::Timeout, Duration::from_millis(9));
        }
        assert_eq!(starved.breaker.state(), BreakerState::Closed);
        let slow = build();
        for _ in 0..2 {
            slow.failed(&DirectoryError::Timeout, Duration::from_millis(10));
        }
        assert_eq!(slow.breaker.state(), BreakerState::Open);
        let refusing = build();
        for _ in 0..2 {
            refusing.failed(
                &DirectoryError::Upstream("503".into()),
                Duration::from_millis(1),
            );
        }
        assert_eq!(refusing.breaker.state(), BreakerState::Open);
    }

    /// A source resolves its host as its tenant's: a name that hangs
    /// counts against that tenant's share and no one else's.
    #[tokio::test]
    async fn a_sources_names_count_against_its_own_tenant() {
        let _turn = crate::networks::tests::TABLE.lock().await;
        let (tenant, neighbour) = (2_000_001, 2_000_002);
        let networks = SourceNetworks::default().shared();
        let breaker = BreakerOptions {
            threshold: u32::MAX,
            cooldown: Duration::from_secs(1),
            deadline: Duration::from_secs(1),
        };
        for (kind, settings) in [
            (
                SourceKind::Ldap,
                serde_json::json!({"url": "ldap://dc.scoped.held.test/", "base_dn": "dc=x"}),
            ),
            (
                SourceKind::Http,
                serde_json::json!({"url": "http://cnam.scoped.held.test/?n={e164}"}),
            ),
        ] {
            let row = row(tenant, kind, settings);
            let source =
                build_source(&row, None, breaker, Clock::system(), &networks, &[]).unwrap();
            let answer = source
                .lookup("+15550100001", "US", Duration::from_millis(20))
                .await;
            assert!(answer.is_err(), "{answer:?}");
        }
        assert_eq!(in_flight_of(tenant), 2);
        assert_eq!(in_flight_of(neighbour), 0);
        release_held("scoped");
    }
}

#[cfg(test)]
mod tenant_network_tests {
    use super::*;
    use dialtone_sync::testing::build::{mirror_of, tenant_row};
    use dialtone_sync::Dataset;
    use std::net::SocketAddr;

    /// A network opened for a tenant reaches only that tenant's sources,
    /// and the registry builds a tenant's sources anew when a global admin
    /// changes its list: a closed network is closed at the next lookup.
    #[test]
    fn a_tenants_opened_networks_are_its_own_and_take_effect_at_once() {
        let nodes = SourceNetworks::parse(&["public"]).unwrap();
        let loopback: SocketAddr = "127.0.0.5:389".parse().unwrap();
        let opened =
            crate::networks::tenant_networks(r#"{"source_networks": ["127.0.0.0/8"]}"#).unwrap();
        assert!(nodes.for_tenant(1, &opened).allows(loopback));
        assert!(!nodes.for_tenant(2, &[]).allows(loopback));
        assert!(crate::networks::tenant_networks(r#"{"source_networks": "127.0.0.0/8"}"#).is_err());
        assert!(
            crate::networks::tenant_networks(r#"{"source_networks": null}"#)
                .unwrap()
                .is_empty()
        );

        let registry = SourceRegistry::new(
            None,
            BreakerOptions {
                threshold: 3,
                cooldown: Duration::from_secs(1),
                deadline: Duration::from_secs(1),
            },
            Clock::system(),
            nodes.shared(),
        );
        let source = DirectorySource {
            id: 7,
            tenant_id: 1,
            name: "dir".into(),
            kind: SourceKind::Http,
            priority: 10,
            enabled: true,
            settings: r#"{"url": "http://127.0.0.5/{e164}"}"#.into(),
            secret: None,
            timeout_ms: 500,
            updated_at: 1,
        };
        let built_with = |settings: &str| {
            let mirror = mirror_of(Dataset {
                tenants: vec![tenant_row(settings)],
                directory_sources: vec![source.clone()],
                ..Default::default()
            });
            registry.sources_of(&mirror.load(), 1).remove(0)
        };
        let closed = built_with("{}");
        assert!(Arc::ptr_eq(&closed, &built_with("{}")), "built once");
        let open = built_with(r#"{"source_networks": ["127.0.0.0/8"]}"#);
        assert!(!Arc::ptr_eq(&closed, &open), "built anew when opened");
        assert!(!Arc::ptr_eq(&open, &built_with("{}")), "and when closed");
    }
}
