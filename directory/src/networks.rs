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
//!
//! `interfaces` reads the node's own addresses, which `public` never
//! reaches; `resolution` turns a source's host into the addresses it may
//! connect to, within each tenant's share of the node's resolutions.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use dialtone_sync::addresses::{canonical, is_public, listed_as};
use dialtone_sync::Id;
use ipnet::IpNet;

mod interfaces;
mod resolution;

use interfaces::interface_addresses;
pub(crate) use resolution::PolicyResolver;
pub use resolution::{resolve, MAX_NAMES_PER_TENANT};

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
    ///
    /// An address with an IPv4 host inside is judged as that host
    /// ([`canonical`]): on an IPv6-only node behind DNS64, an IPv4-only
    /// service is `64:ff9b::a.b.c.d`, public when `a.b.c.d` is. The prefix
    /// holds only global IPv4 (RFC 6052), so `64:ff9b::127.0.0.1` is no
    /// public address, and reaches a NAT64 gateway's inside only where a
    /// listed network holds it as written.
    pub fn allows(&self, addr: SocketAddr) -> bool {
        let ip = canonical(addr.ip());
        let own = self.own.iter().any(|l| {
            l.port() == addr.port()
                && (canonical(l.ip()) == ip || l.ip().is_unspecified() || ip.is_loopback())
        });
        if own || ip.is_unspecified() {
            return false;
        }
        let listed = listed_as(addr.ip()).any(|ip| self.allowed.iter().any(|n| n.contains(&ip)));
        if listed {
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

#[cfg(test)]
#[path = "networks_mapped_tests.rs"]
mod mapped_tests;

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    // Kept at this path: `sources.rs` tests share the process's table.
    pub(crate) use super::resolution::tests::{in_flight_of, release_held, TABLE};

    fn at(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn public_only_by_default() {
        let n = SourceNetworks::default();
        assert!(n.allows(at("203.0.114.10:389")));
        assert!(n.allows(at("8.8.8.8:443")));
        // An IPv4-only service seen through DNS64, from an IPv6-only node.
        assert!(n.allows(at("[64:ff9b::8.8.8.8]:443")));
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
            "[64:ff9b:1::808:808]:80",
            "[64:ff9b::127.0.0.1]:80",
            "[64:ff9b::10.1.0.5]:80",
            "[64:ff9b::169.254.169.254]:80",
            "[::ffff:0:127.0.0.1]:19000",
            "[::ffff:0:8.8.8.8]:80",
            "198.51.100.7:80",
        ] {
            assert!(!n.allows(at(refused)), "{refused}");
        }
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
}
