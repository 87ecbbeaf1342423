//! A source's host name to the addresses it may connect to: concurrent
//! lookups of one name share one resolution, bounded for the node and for
//! each tenant, and reqwest's resolver for HTTP sources.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

use futures::future::{BoxFuture, FutureExt, Shared};

use dialtone_sync::Id;

use super::SourceNetworks;

/// The addresses `host` resolves to that a source may connect to on
/// `port`; an error naming the host when there are none.
pub async fn resolve(
    networks: &SourceNetworks,
    host: &str,
    port: u16,
) -> Result<Vec<SocketAddr>, crate::DirectoryError> {
    // Every failure is logged: a host a tenant wrote is shown cut short.
    let shown = crate::ldap::server_text(host);
    let refused = || crate::DirectoryError::Refused(shown.clone());
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let found: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => lookup(networks.tenant, host, port)
            .await
            .map_err(|e| crate::DirectoryError::Unresolved(format!("resolving {shown}: {e}")))?,
    };
    let allowed: Vec<SocketAddr> = found.into_iter().filter(|a| networks.allows(*a)).collect();
    if allowed.is_empty() {
        return Err(refused());
    }
    Ok(allowed)
}

type Resolution = Shared<BoxFuture<'static, Result<Vec<SocketAddr>, String>>>;

/// Names being resolved now, each once, and how many each tenant started.
#[derive(Default)]
struct InFlight {
    /// (name, port) to (id, the tenant that started it, resolution).
    names: HashMap<(String, u16), (u64, Option<Id>, Resolution)>,
    per_tenant: HashMap<Option<Id>, usize>,
}

impl InFlight {
    fn finished(&mut self, name: &(String, u16), id: u64) {
        let Some((entry, tenant, _)) = self.names.get(name) else {
            return;
        };
        if *entry != id {
            return;
        }
        let tenant = *tenant;
        self.names.remove(name);
        if let Some(count) = self.per_tenant.get_mut(&tenant) {
            *count -= 1;
            if *count == 0 {
                self.per_tenant.remove(&tenant);
            }
        }
    }
}

static IN_FLIGHT: LazyLock<Mutex<InFlight>> = LazyLock::new(Mutex::default);
static RESOLUTIONS: AtomicU64 = AtomicU64::new(0);

/// Names resolving at once, all tenants: past it a source's lookup fails
/// at once. Each takes a blocking thread, and a tenant's sources are few.
const MAX_NAMES_IN_FLIGHT: usize = 256;

/// Places past [`MAX_NAMES_IN_FLIGHT`] for tenants with no name resolving:
/// a tenant whose DNS answers holds none almost always, so it still
/// resolves while tenants whose names hang fill the table. Using them up
/// as well takes this many more tenants, each with a name that hangs.
/// Together with the table, still well inside tokio's 512 blocking threads.
const RESERVED_NAMES: usize = 64;

/// Names one tenant's sources may have resolving at once. A resolution
/// cannot be cancelled and outlives the lookup that started it, so a
/// tenant whose DNS never answers could otherwise fill the node's table by
/// itself, by renaming a source's host again and again, and every other
/// tenant's sources would fail to resolve. Above the default quota of
/// sources, so only names that hang reach it; filling the node's table
/// takes [`MAX_NAMES_IN_FLIGHT`] / this many tenants at once, and the
/// reserve one more tenant for each of its places.
pub const MAX_NAMES_PER_TENANT: usize = 16;

/// `getaddrinfo` blocks a thread of tokio's blocking pool, which the render
/// pool needs too, and cannot be cancelled: a tenant's DNS that never
/// answers would hold a thread per lookup, and a burst of lookups could
/// fill the pool. So every concurrent lookup of one name waits for one
/// resolution, run as a task of its own that finishes whoever still waits.
/// A lookup that joins a resolution another tenant started is not counted
/// again: the answer is the same whoever asks.
async fn lookup(tenant: Option<Id>, host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    let resolution = {
        let mut in_flight = IN_FLIGHT.lock().unwrap_or_else(|e| e.into_inner());
        let key = (host.to_string(), port);
        match in_flight.names.get(&key) {
            Some((_, _, resolution)) => resolution.clone(),
            None => {
                if in_flight.per_tenant.get(&tenant).copied().unwrap_or(0) >= MAX_NAMES_PER_TENANT {
                    metrics::counter!("dialtone_lookup_resolutions_refused_total", "limit" => "tenant")
                        .increment(1);
                    return Err(
                        "too many of this tenant's host names being resolved at once".into(),
                    );
                }
                let holds_none = !in_flight.per_tenant.contains_key(&tenant);
                let room = if holds_none {
                    MAX_NAMES_IN_FLIGHT + RESERVED_NAMES
                } else {
                    MAX_NAMES_IN_FLIGHT
                };
                if in_flight.names.len() >= room {
                    metrics::counter!("dialtone_lookup_resolutions_refused_total", "limit" => "node")
                        .increment(1);
                    return Err("too many host names being resolved at once".into());
                }
                let id = RESOLUTIONS.fetch_add(1, Ordering::Relaxed);
                #[cfg(test)]
                tests::STARTED.lock().unwrap().push(key.clone());
                let (tx, rx) = tokio::sync::oneshot::channel();
                let name = key.clone();
                tokio::spawn(async move {
                    let found = resolve_now(&name).await;
                    IN_FLIGHT
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .finished(&name, id);
                    let _ = tx.send(found);
                });
                let resolution = async move {
                    rx.await
                        .unwrap_or_else(|_| Err("the resolver task ended".into()))
                }
                .boxed()
                .shared();
                in_flight
                    .names
                    .insert(key, (id, tenant, resolution.clone()));
                let held = in_flight.per_tenant.entry(tenant).or_default();
                *held += 1;
                if *held == MAX_NAMES_PER_TENANT {
                    // Once per filling: each takes that many names that hang.
                    tracing::warn!(
                        tenant = tenant.unwrap_or_default(),
                        names = MAX_NAMES_PER_TENANT,
                        "a tenant's directory sources hold their share of names being resolved; its new names fail until one answers"
                    );
                }
                resolution
            }
        }
    };
    resolution.await
}

async fn resolve_now((host, port): &(String, u16)) -> Result<Vec<SocketAddr>, String> {
    #[cfg(test)]
    if let Some(held) = tests::held(host) {
        return held.await;
    }
    tokio::net::lookup_host((host.as_str(), *port))
        .await
        .map(Iterator::collect)
        .map_err(|e| e.to_string())
}

/// reqwest's resolver for one source: only addresses the policy allows, on
/// the one port the source's URL names (redirects are not followed).
pub(crate) struct PolicyResolver {
    pub networks: Arc<SourceNetworks>,
    pub port: u16,
}

impl reqwest::dns::Resolve for PolicyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let (networks, port, host) = (self.networks.clone(), self.port, name.as_str().to_string());
        Box::pin(async move {
            let addrs = resolve(&networks, &host, port).await?;
            let addrs: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::time::Duration;

    /// Every resolution started, by name and port.
    pub(super) static STARTED: Mutex<Vec<(String, u16)>> = Mutex::new(Vec::new());

    /// Names under `<group>.held.test` stand for a DNS that does not
    /// answer: they resolve to nothing once their group is released, not
    /// before. Groups keep tests running in one process apart.
    static RELEASED: LazyLock<tokio::sync::watch::Sender<Vec<String>>> =
        LazyLock::new(|| tokio::sync::watch::channel(Vec::new()).0);

    pub(super) fn held(host: &str) -> Option<BoxFuture<'static, Result<Vec<SocketAddr>, String>>> {
        let group = host
            .strip_suffix(".held.test")?
            .rsplit('.')
            .next()?
            .to_string();
        let mut released = RELEASED.subscribe();
        Some(
            async move {
                let _ = released.wait_for(|groups| groups.contains(&group)).await;
                Err("no answer".to_string())
            }
            .boxed(),
        )
    }

    pub(crate) fn release_held(group: &str) {
        RELEASED.send_modify(|groups| groups.push(group.to_string()));
    }

    /// Tests that fill the process's table take turns.
    pub(crate) static TABLE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    pub(crate) fn in_flight_of(tenant: Id) -> usize {
        let in_flight = IN_FLIGHT.lock().unwrap();
        in_flight
            .per_tenant
            .get(&Some(tenant))
            .copied()
            .unwrap_or(0)
    }

    /// Waits until a lookup of `host` gives up, as a source's timeout would,
    /// and returns what it got by then (`None`: still resolving).
    async fn briefly(tenant: Id, host: &str) -> Option<Result<Vec<SocketAddr>, String>> {
        tokio::time::timeout(Duration::from_millis(20), lookup(Some(tenant), host, 389))
            .await
            .ok()
    }

    /// Whether a lookup of `host` started resolving (and was left to run).
    fn started(tenant: Id, host: &str) -> bool {
        lookup(Some(tenant), host, 389).now_or_never().is_none()
    }

    /// A tenant whose DNS never answers keeps at most its share of names
    /// resolving, however many it asks for; another tenant still resolves
    /// its own names and may share one of the first tenant's; when the
    /// answers come, the shares are given back.
    #[tokio::test]
    async fn a_tenant_with_hanging_names_holds_only_its_share() {
        let _turn = TABLE.lock().await;
        // Tenant ids no other test uses: the table is the process's.
        let (hostile, other) = (1_000_001, 1_000_002);
        for n in 0..MAX_NAMES_PER_TENANT {
            assert!(briefly(hostile, &format!("h{n}.share.held.test"))
                .await
                .is_none());
        }
        assert_eq!(in_flight_of(hostile), MAX_NAMES_PER_TENANT);
        let refused = briefly(hostile, "one-more.share.held.test").await;
        assert!(
            matches!(&refused, Some(Err(e)) if e.contains("this tenant's")),
            "{refused:?}"
        );
        assert_eq!(in_flight_of(hostile), MAX_NAMES_PER_TENANT);

        let own = briefly(other, "localhost").await;
        assert!(
            matches!(&own, Some(Ok(addrs)) if !addrs.is_empty()),
            "{own:?}"
        );
        assert!(
            briefly(other, "h0.share.held.test").await.is_none(),
            "shares a name in flight"
        );
        assert_eq!(
            in_flight_of(other),
            0,
            "a shared name counts once, for whoever started it"
        );

        release_held("share");
        for _ in 0..200 {
            if in_flight_of(hostile) == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(in_flight_of(hostile), 0);
        let again = briefly(hostile, "localhost").await;
        assert!(matches!(&again, Some(Ok(_))), "{again:?}");
    }

    /// Fifty lookups of one name at once start one resolution, all get its
    /// answer, and nothing is left in flight after.
    #[tokio::test]
    async fn concurrent_lookups_of_one_name_share_one_resolution() {
        // A port no other test asks for.
        let port = 40_000 + (std::process::id() % 20_000) as u16;
        let answers =
            futures::future::join_all((0..50).map(|_| lookup(None, "localhost", port))).await;
        let started = STARTED.lock().unwrap();
        let ours = started
            .iter()
            .filter(|(name, p)| name == "localhost" && *p == port);
        assert_eq!(ours.count(), 1);
        drop(started);
        for answer in answers {
            let addrs = answer.unwrap();
            assert!(addrs
                .iter()
                .any(|a| a.ip().is_loopback() && a.port() == port));
        }
        let in_flight = IN_FLIGHT.lock().unwrap();
        assert!(!in_flight
            .names
            .contains_key(&("localhost".to_string(), port)));
    }

    /// A host name that does not resolve and one that resolves only to
    /// addresses sources may not reach are told to a tenant alike, so its
    /// source's host cannot probe which internal names resolve here; the
    /// log and metrics keep them apart.
    #[tokio::test]
    async fn a_tenant_cannot_tell_a_missing_name_from_an_internal_one() {
        release_held("gone");
        let networks = SourceNetworks::default();
        let missing = resolve(&networks, "nothing.gone.held.test", 389)
            .await
            .unwrap_err();
        let internal = resolve(&networks, "localhost", 389).await.unwrap_err();
        assert_eq!((missing.kind(), internal.kind()), ("unresolved", "refused"));
        assert_eq!(missing.shown_to_tenant(), internal.shown_to_tenant());
    }

    /// Tenants whose names hang fill the node's table; a tenant with no
    /// name resolving still resolves from the reserve, one already holding
    /// a name does not, and the reserve is bounded too.
    #[tokio::test]
    async fn a_full_table_leaves_room_for_tenants_with_nothing_resolving() {
        let _turn = TABLE.lock().await;
        let first = 3_000_000;
        let mut tenant = first;
        let mut n = 0;
        while IN_FLIGHT.lock().unwrap().names.len() < MAX_NAMES_IN_FLIGHT {
            if in_flight_of(tenant) == MAX_NAMES_PER_TENANT {
                tenant += 1;
            }
            assert!(started(tenant, &format!("f{n}.full.held.test")));
            n += 1;
        }
        let holding_one = 3_100_000;
        let reserved = briefly(holding_one, "r0.full.held.test").await;
        assert!(
            reserved.is_none(),
            "a tenant holding none gets a reserved place: {reserved:?}"
        );
        let refused = briefly(holding_one, "r1.full.held.test").await;
        assert!(
            matches!(&refused, Some(Err(e)) if e == "too many host names being resolved at once"),
            "{refused:?}"
        );
        let healthy = briefly(3_100_001, "localhost").await;
        assert!(matches!(&healthy, Some(Ok(_))), "{healthy:?}");

        let mut tenant = 3_200_000;
        while IN_FLIGHT.lock().unwrap().names.len() < MAX_NAMES_IN_FLIGHT + RESERVED_NAMES {
            assert!(started(tenant, &format!("t{tenant}.full.held.test")));
            tenant += 1;
        }
        let none_left = briefly(tenant, "last.full.held.test").await;
        assert!(matches!(&none_left, Some(Err(_))), "{none_left:?}");

        release_held("full");
        for _ in 0..200 {
            if IN_FLIGHT.lock().unwrap().names.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(in_flight_of(first) == 0 && in_flight_of(holding_one) == 0);
    }
}
