//! Where tenant-configured sources may connect. A tenant writes a source's
//! URL, so without a check a tenant could make the node fetch its own
//! internal endpoints, a cloud metadata service, or anything on the
//! operator's private networks, and read the answer back.
//!
//! The operator's config decides (`lookup.source_networks`): by default
//! public addresses only. The check is made on the addresses a name
//! resolves to, at connection time (HTTP: in the resolver the client
//! connects with, so a second answer cannot differ from the checked one;
//! LDAP: on the resolved addresses, the connection then opened to a checked
//! one for every scheme and handed to ldap3, TLS verifying the certificate
//! against the URL's name).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use futures::future::{BoxFuture, FutureExt, Shared};

use dialtone_sync::Id;
use ipnet::IpNet;

/// The operator's allow-list for sources tenants configure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceNetworks {
    /// Every globally routable address.
    public: bool,
    allowed: Vec<IpNet>,
    /// This node's own listeners: never a source, whatever else is allowed.
    own: Vec<SocketAddr>,
    /// Stands in for the addresses read from the node's interfaces (tests).
    node_addresses: Option<Arc<[IpAddr]>>,
    /// The tenant whose sources use these networks: the names they resolve
    /// count against its share of the node's resolutions.
    tenant: Option<Id>,
}

impl Default for SourceNetworks {
    fn default() -> Self {
        SourceNetworks {
            public: true,
            allowed: Vec::new(),
            own: Vec::new(),
            node_addresses: None,
            tenant: None,
        }
    }
}

impl SourceNetworks {
    /// `public` and CIDRs or addresses, as the config lists them.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<SourceNetworks, String> {
        let mut networks = SourceNetworks {
            public: false,
            ..Default::default()
        };
        for entry in entries {
            let entry = entry.as_ref().trim();
            if entry == "public" {
                networks.public = true;
                continue;
            }
            let net = parse_network(entry).map_err(|e| format!("{e}, nor \"public\""))?;
            networks.allowed.push(net);
        }
        Ok(networks)
    }

    /// The node's own listeners, refused even where their network is allowed.
    pub fn with_own_listeners(mut self, listeners: impl IntoIterator<Item = SocketAddr>) -> Self {
        self.own.extend(listeners);
        self
    }

    /// Judges as if the node's interfaces held `addresses` (see
    /// [`SourceNetworks::allows`]), for tests.
    pub fn with_node_addresses(mut self, addresses: impl IntoIterator<Item = IpAddr>) -> Self {
        self.node_addresses = Some(addresses.into_iter().map(canonical).collect());
        self
    }

    pub fn shared(self) -> Arc<SourceNetworks> {
        Arc::new(self)
    }

    /// The policy for one tenant's sources: the node's, plus the networks
    /// a global admin opened for this tenant alone ([`tenant_networks`]).
    /// Their name resolutions count against the tenant's share
    /// ([`MAX_NAMES_PER_TENANT`]).
    pub fn for_tenant(&self, tenant: Id, extra: &[IpNet]) -> Arc<SourceNetworks> {
        let mut networks = SourceNetworks {
            tenant: Some(tenant),
            ..self.clone()
        };
        networks.allowed.extend_from_slice(extra);
        Arc::new(networks)
    }

    /// Whether a source may connect to `addr`: never to one of the node's
    /// own listeners, whatever is allowed; otherwise to an address in a
    /// network listed explicitly (by the operator, or by a global admin for
    /// the tenant), or, under `public`, to a public address that is none of
    /// the node's own interfaces' addresses. A connection to one of those
    /// stays inside the node, past any firewall outside it, and would
    /// reach whatever listens on every address there (a metrics exporter,
    /// a database) as a tenant's source.
    pub fn allows(&self, addr: SocketAddr) -> bool {
        let ip = canonical(addr.ip());
        let own = self.own.iter().any(|l| {
            l.port() == addr.port()
                && (canonical(l.ip()) == ip || l.ip().is_unspecified() || ip.is_loopback())
        });
        if own || ip.is_unspecified() {
            return false;
        }
        if self.allowed.iter().any(|net| net.contains(&ip)) {
            return true;
        }
        self.public && is_public(ip) && !self.is_node_address(ip)
    }

    fn is_node_address(&self, ip: IpAddr) -> bool {
        match &self.node_addresses {
            Some(addresses) => addresses.contains(&ip),
            // Never read: any address may be the node's own.
            None => interface_addresses().is_none_or(|own| own.contains(&ip)),
        }
    }
}

/// How long the node's interface addresses are trusted before read again:
/// an address added to an interface becomes the node's within this.
const INTERFACES_REREAD: Duration = Duration::from_secs(5);

struct InterfaceCache {
    /// `None` until a read succeeds.
    addresses: Option<Arc<[IpAddr]>>,
    read_at: Option<Instant>,
    failure_logged: bool,
}

static INTERFACES: LazyLock<Mutex<InterfaceCache>> = LazyLock::new(|| {
    Mutex::new(InterfaceCache {
        addresses: None,
        read_at: None,
        failure_logged: false,
    })
});

/// The addresses the node's interfaces hold, read again once the last
/// read is [`INTERFACES_REREAD`] old, outside the lock (the first read
/// under it, so no caller finds the list missing while it is made). A
/// failed read keeps the last list, logged once: the list barely changes,
/// and sources connect often. `None` until a read has succeeded: the
/// caller then takes every address for the node's own.
fn interface_addresses() -> Option<Arc<[IpAddr]>> {
    let lock = || INTERFACES.lock().unwrap_or_else(|e| e.into_inner());
    let mut cache = lock();
    if cache
        .read_at
        .is_some_and(|at| at.elapsed() < INTERFACES_REREAD)
    {
        return cache.addresses.clone();
    }
    cache.read_at = Some(Instant::now());
    let first = cache.addresses.is_none();
    let read = if first {
        read_interfaces()
    } else {
        // Others use the list read before meanwhile.
        drop(cache);
        let read = read_interfaces();
        cache = lock();
        read
    };
    match read {
        Ok(addresses) => cache.addresses = Some(addresses),
        Err(e) if !cache.failure_logged => {
            cache.failure_logged = true;
            tracing::error!(error = %e, "cannot read this node's interface addresses; sources are checked against the last ones read (none read yet: no public address is allowed)");
        }
        Err(_) => {}
    }
    cache.addresses.clone()
}

fn read_interfaces() -> Result<Arc<[IpAddr]>, nix::Error> {
    Ok(nix::ifaddrs::getifaddrs()?
        .filter_map(|i| i.address)
        .filter_map(|a| {
            a.as_sockaddr_in()
                .map(|v4| IpAddr::V4(v4.ip()))
                .or_else(|| a.as_sockaddr_in6().map(|v6| canonical(v6.ip().into())))
        })
        .collect())
}

/// The tenant setting naming networks only that tenant's sources may
/// reach: a customer's own AD on a private network. In the node's
/// `lookup.source_networks` such a network would be open to every
/// tenant's sources, and the source test reads an answer's first line
/// back: any tenant could then fetch from, scan, or bind to the customer's
/// network. Only a global admin sets it.
pub const TENANT_SETTING: &str = "source_networks";

/// Most networks one tenant's `source_networks` may list.
pub const MAX_TENANT_NETWORKS: usize = 64;

/// A tenant's `source_networks` from its settings (JSON object text):
/// networks (`10.20.0.0/16`) or addresses, none when the key is absent or
/// null. An error says what is wrong, for the API to refuse a write with.
pub fn tenant_networks(settings: &str) -> Result<Vec<IpNet>, String> {
    // Most tenants have none: skip parsing their settings.
    if !settings.contains(TENANT_SETTING) {
        return Ok(Vec::new());
    }
    let settings: serde_json::Value =
        serde_json::from_str(settings).map_err(|e| format!("settings: {e}"))?;
    let list = match settings.get(TENANT_SETTING) {
        None | Some(serde_json::Value::Null) => return Ok(Vec::new()),
        Some(serde_json::Value::Array(list)) => list,
        Some(_) => {
            return Err(format!(
                "settings.{TENANT_SETTING} must be a list of networks"
            ))
        }
    };
    if list.len() > MAX_TENANT_NETWORKS {
        return Err(format!(
            "settings.{TENANT_SETTING} lists {} networks; at most {MAX_TENANT_NETWORKS}",
            list.len()
        ));
    }
    list.iter()
        .map(|entry| {
            let Some(text) = entry.as_str() else {
                return Err(format!(
                    "settings.{TENANT_SETTING}: {entry} is not a network (10.20.0.0/16) or an address"
                ));
            };
            parse_network(text.trim()).map_err(|e| format!("settings.{TENANT_SETTING}: {e}"))
        })
        .collect()
}

/// A network or a bare address, as the operator's config and tenants'
/// settings list them. Addresses are judged as IPv4 once unmapped
/// ([`canonical`]), so an IPv4-mapped network (`::ffff:10.1.0.0/112`) is
/// read as the IPv4 network it covers: kept as written it would never
/// match, and a tenant's site written that way would keep nobody out.
fn parse_network(text: &str) -> Result<IpNet, String> {
    let network = text
        .parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| {
            format!("{text:?} is not a network (10.0.0.0/8, 2001:db8::/32) or an address")
        })?;
    let IpNet::V6(v6) = network else {
        return Ok(network);
    };
    let Some(v4) = v6.addr().to_ipv4_mapped() else {
        return Ok(network);
    };
    match v6.prefix_len().checked_sub(96) {
        Some(prefix) => Ok(IpNet::V4(
            ipnet::Ipv4Net::new(v4, prefix)
                .expect("a prefix of at most 32")
                .trunc(),
        )),
        None => Err(format!(
            "{text:?} reaches past the IPv4-mapped range ::ffff:0:0/96; write the IPv4 network (10.1.0.0/16)"
        )),
    }
}

/// An IPv4 address mapped into IPv6 is judged as the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Globally routable: none of the special-purpose ranges (loopback,
/// private, link-local and cloud metadata, shared/CGNAT, documentation,
/// benchmarking, multicast, reserved; for IPv6 also unique-local).
pub fn is_public(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || (a == 192 && b == 0 && c == 0)
        || (a == 198 && (18..20).contains(&b))
        || a >= 240)
}

/// Not public either: the forms that carry an IPv4 address inside (NAT64,
/// 6to4, Teredo, the old IPv4-compatible `::a.b.c.d`), since a relay or a
/// host's own stack may deliver them to that address, a private one too.
fn is_public_v6(ip: Ipv6Addr) -> bool {
    let [first, second, ..] = ip.segments();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
        || (first == 0x2001 && second == 0x0db8)
        || (first == 0x0064 && second == 0xff9b)
        || first == 0x2002
        || (first == 0x2001 && second == 0x0000)
        || ip.segments()[..6] == [0; 6])
}

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
#[path = "networks_mapped_tests.rs"]
mod mapped_tests;

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

    fn at(text: &str) -> SocketAddr {
        text.parse().unwrap()
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

    #[test]
    fn public_only_by_default() {
        let n = SourceNetworks::default();
        assert!(n.allows(at("203.0.114.10:389")));
        assert!(n.allows(at("8.8.8.8:443")));
        for refused in [
            "127.0.0.1:8080",
            "169.254.169.254:80",
            "10.1.2.3:389",
            "192.168.1.1:80",
            "172.16.0.1:80",
            "100.64.0.1:80",
            "0.0.0.0:80",
            "[::1]:80",
            "[fe80::1]:80",
            "[fd00::1]:80",
            "[::ffff:127.0.0.1]:80",
            "[::ffff:169.254.169.254]:80",
            "[::7f00:1]:80",
            "[2002:a00:1::1]:80",
            "[2001:0:a00:1::1]:80",
            "[64:ff9b:1::a00:1]:80",
            "198.51.100.7:80",
        ] {
            assert!(!n.allows(at(refused)), "{refused}");
        }
    }

    /// Read from the system: loopback is an interface's address too.
    #[test]
    fn the_nodes_interface_addresses_are_read() {
        let addresses = interface_addresses().expect("the interfaces are read");
        assert!(
            addresses.contains(&IpAddr::from([127, 0, 0, 1])),
            "{addresses:?}"
        );
    }

    #[test]
    fn operators_allow_networks_but_never_the_node_itself() {
        let n = SourceNetworks::parse(&["10.0.0.0/8", "127.0.0.1"])
            .unwrap()
            .with_own_listeners([at("0.0.0.0:8080"), at("127.0.0.1:8081")]);
        assert!(n.allows(at("10.20.30.40:636")));
        assert!(!n.allows(at("8.8.8.8:443")), "public was not listed");
        assert!(n.allows(at("127.0.0.1:389")));
        assert!(!n.allows(at("127.0.0.1:8081")), "the node's own listener");
        assert!(
            !n.allows(at("10.20.30.40:8080")),
            "a wildcard listener's port"
        );
        assert!(SourceNetworks::parse(&["everything"]).is_err());
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
