//! Which tenants' `provisioning_networks` hold an address, for one mirror
//! state. Two questions read it: under which tenant an unknown phone's
//! fetch is listed (`unclaimed.rs`), and whether a phone whose tenant sets
//! no networks is asking from inside another tenant's site (`admission.rs`).
//! A MAC is not a secret: a tenant may create a phone by a MAC that boots
//! at another tenant's office, and without this check that phone would get
//! the first tenant's configuration (its registrar, its settings) there.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Weak};

use arc_swap::ArcSwapOption;
use dialtone_sync::{Id, MirrorState};
use ipnet::{IpNet, Ipv6Net};

use crate::admission::provisioning_networks;

/// Every tenant network, by prefix length: an address is looked up once
/// per length present, not compared with every network.
struct Networks {
    state: Weak<MirrorState>,
    by_len: Vec<(bool, u8, HashMap<IpNet, Vec<Id>>)>,
}

/// Rebuilt when the mirror state changes, by one request at a time.
#[derive(Default)]
pub(crate) struct NetworkIndex(ArcSwapOption<Networks>, std::sync::Mutex<()>);

impl NetworkIndex {
    /// The tenants whose networks hold `remote`, each with whether a
    /// site-sized one does ([`narrow_enough`]).
    fn holders(&self, state: &Arc<MirrorState>, remote: IpAddr) -> Vec<(Id, bool)> {
        let networks = self.networks_for(state);
        let mut found: Vec<(Id, bool)> = Vec::new();
        // Every form admission matches a tenant's own networks under
        // (`guard::listed_in`): the host a ban keys, so that a site's
        // phones behind NAT64 pass its ban as they would over IPv4, and a
        // NAT64 address as written. Read under fewer forms, a site listed
        // by its NAT64 prefix held none of its addresses here, and another
        // tenant's phone was served there as if outside every site.
        for remote in dialtone_sync::addresses::listed_as(remote) {
            for (v6, len, nets) in &networks.by_len {
                if *v6 != remote.is_ipv6() {
                    continue;
                }
                let Ok(net) = IpNet::new(remote, *len).map(|n| n.trunc()) else {
                    continue;
                };
                for tenant in nets.get(&net).into_iter().flatten() {
                    let narrow = narrow_enough(&net);
                    match found.iter_mut().find(|(t, _)| t == tenant) {
                        Some((_, seen)) => *seen |= narrow,
                        None => found.push((*tenant, narrow)),
                    }
                }
            }
        }
        found
    }

    /// The one tenant whose networks hold `remote` (one of them
    /// site-sized); none when another tenant's do too. Only the operator
    /// sets networks (a tenant's token cannot), but the rule holds for a
    /// slip too: a narrower one inside another tenant's is no claim to
    /// that tenant's phones: with "most specific wins", a tenant listing
    /// a /32 of a neighbour's /24 would see (and could claim) the
    /// neighbour's new phones. Wide networks count as holders too: a
    /// tenant's /8 holding another's /24 lists for neither.
    pub(crate) fn tenant_of(&self, state: &Arc<MirrorState>, remote: IpAddr) -> Option<Id> {
        match self.holders(state, remote)[..] {
            [(tenant, true)] => Some(tenant),
            _ => None,
        }
    }

    /// Whether a site-sized network of a tenant other than `tenant` holds
    /// `remote`.
    pub(crate) fn held_by_another(
        &self,
        state: &Arc<MirrorState>,
        tenant: Id,
        remote: IpAddr,
    ) -> bool {
        self.holders(state, remote)
            .iter()
            .any(|&(other, narrow)| other != tenant && narrow)
    }

    fn networks_for(&self, state: &Arc<MirrorState>) -> Arc<Networks> {
        let current = || {
            self.0
                .load_full()
                .filter(|n| std::ptr::eq(n.state.as_ptr(), Arc::as_ptr(state)))
        };
        if let Some(current) = current() {
            return current;
        }
        // One request builds; the others wait and take its index, rather
        // than each scanning every tenant's settings again, or deciding
        // from an older state's networks.
        let _building = self.1.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(current) = current() {
            return current;
        }
        let mut by_len: Vec<(bool, u8, HashMap<IpNet, Vec<Id>>)> = Vec::new();
        for tenant in state.tenants() {
            let Some(nets) = provisioning_networks(tenant) else {
                continue;
            };
            for net in nets.iter().map(IpNet::trunc) {
                let key = (matches!(net, IpNet::V6(_)), net.prefix_len());
                let group = match by_len.iter().position(|(v6, len, _)| (*v6, *len) == key) {
                    Some(i) => &mut by_len[i].2,
                    None => {
                        by_len.push((key.0, key.1, HashMap::new()));
                        &mut by_len.last_mut().expect("just pushed").2
                    }
                };
                let holders = group.entry(net).or_default();
                if !holders.contains(&tenant.id) {
                    holders.push(tenant.id);
                }
            }
        }
        let built = Arc::new(Networks {
            state: Arc::downgrade(state),
            by_len,
        });
        self.0.store(Some(built.clone()));
        built
    }
}

/// A wide network would list phones booting at other organizations (their
/// addresses, MACs and models), so only a site-sized one (IPv4 /16, IPv6
/// /48 or narrower) lists any, or keeps another tenant's phones out;
/// networks set before they were the operator's alone may still be a
/// tenant's own.
///
/// Inside NAT64's well-known 64:ff9b::/96 the last 32 bits are the IPv4
/// host, and a client there is in the network as written too: a /96 is
/// all of IPv4, so a site there is a /112 (an IPv4 /16) or narrower.
fn narrow_enough(net: &IpNet) -> bool {
    match net {
        IpNet::V4(v4) => v4.prefix_len() >= 16,
        IpNet::V6(v6) => {
            let nat64 = Ipv6Net::new(Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0), 96)
                .expect("a prefix of at most 128");
            if nat64.contains(v6) || v6.contains(&nat64) {
                v6.prefix_len() >= 112
            } else {
                v6.prefix_len() >= 48
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dialtone_sync::testing::build::mirror_of;
    use dialtone_sync::{Dataset, Tenant};

    fn tenant(id: Id, networks: &[&str]) -> Tenant {
        Tenant {
            id,
            slug: format!("t{id}").into(),
            name: "T".into(),
            default_region: "US".into(),
            settings: serde_json::json!({ "provisioning_networks": networks })
                .to_string()
                .into(),
            updated_at: 1,
        }
    }

    #[test]
    fn only_a_source_no_other_tenant_holds_is_listed() {
        let tenants = vec![
            tenant(1, &["10.0.0.0/16", "11.0.0.0/8", "2001:db8::/32"]),
            tenant(2, &["10.0.1.0/24", "not a network"]),
            tenant(3, &["10.2.0.0/16"]),
            tenant(4, &["10.2.0.0/16", "10.2.0.9"]),
            tenant(6, &["10.5.0.0/16", "10.5.1.0/24"]),
            tenant(7, &["172.16.0.0/12"]),
            tenant(8, &["172.16.5.0/24"]),
            tenant(9, &["81.2.69.0/24"]),
            Tenant {
                settings: "{}".into(),
                ..tenant(5, &[])
            },
        ];
        let mirror = mirror_of(Dataset {
            tenants,
            ..Default::default()
        });
        let index = NetworkIndex::default();
        let state = mirror.load();
        let of = |ip: &str| index.tenant_of(&state, ip.parse().unwrap());
        // A narrower network inside another tenant's: neither.
        assert_eq!(of("10.0.1.3"), None);
        assert_eq!(of("10.0.3.1"), Some(1));
        // Wider than a site lists nothing.
        assert_eq!(of("11.3.0.1"), None);
        assert_eq!(of("2001:db8::1"), None);
        assert_eq!(of("172.17.0.1"), None);
        // But it still holds what it holds: a site inside another tenant's
        // wide network lists for neither.
        assert_eq!(of("172.16.5.1"), None);
        assert_eq!(of("10.2.0.1"), None);
        assert_eq!(of("10.2.0.9"), None);
        // A tenant's own networks may nest.
        assert_eq!(of("10.5.1.1"), Some(6));
        assert_eq!(of("192.0.2.1"), None);
        // An IPv4 host seen through NAT64 is at its site; a private one's
        // NAT64 form is only an IPv6 address.
        assert_eq!(of("64:ff9b::81.2.69.5"), Some(9));
        assert_eq!(of("::ffff:81.2.69.5"), Some(9));
        assert_eq!(of("64:ff9b::10.5.1.1"), None);
        // Built once per mirror state.
        let first = index.0.load_full().unwrap();
        of("10.0.1.3");
        assert!(Arc::ptr_eq(&first, &index.0.load_full().unwrap()));
        // Another tenant's site holds an address; a tenant's own, or a
        // wide network, does not make it another's.
        let other = |phone_tenant: Id, ip: &str| {
            index.held_by_another(&state, phone_tenant, ip.parse().unwrap())
        };
        assert!(other(5, "10.0.3.1"));
        assert!(other(5, "10.0.1.3"));
        assert!(!other(1, "10.0.3.1"));
        assert!(!other(5, "11.3.0.1"));
        assert!(other(7, "172.16.5.1"));
        assert!(!other(5, "192.0.2.1"));
    }

    /// A site listed by its NAT64 prefix holds its phones' addresses as
    /// admission reads them (`guard::listed_in`): another tenant's phone
    /// fetching from there is inside that site, not outside every one.
    #[test]
    fn a_site_listed_by_its_nat64_prefix_holds_its_addresses() {
        let tenants = vec![
            tenant(1, &["64:ff9b::5102:4500/120"]),
            tenant(2, &["81.2.70.0/24"]),
            tenant(3, &["64:ff9b::5102:4600/120"]),
            Tenant {
                settings: "{}".into(),
                ..tenant(4, &[])
            },
        ];
        let mirror = mirror_of(Dataset {
            tenants,
            ..Default::default()
        });
        let index = NetworkIndex::default();
        let state = mirror.load();
        let of = |ip: &str| index.tenant_of(&state, ip.parse().unwrap());
        let other = |phone_tenant: Id, ip: &str| {
            index.held_by_another(&state, phone_tenant, ip.parse().unwrap())
        };
        assert_eq!(of("64:ff9b::81.2.69.5"), Some(1));
        assert!(other(4, "64:ff9b::81.2.69.5"));
        assert!(other(2, "64:ff9b::5102:4505"));
        assert!(!other(1, "64:ff9b::81.2.69.5"));
        // The IPv4 host itself is not in an IPv6 network, for admission
        // either.
        assert_eq!(of("81.2.69.5"), None);
        assert!(!other(4, "81.2.69.5"));
        // One site listed in both forms by two tenants is neither's, and
        // each is inside the other's.
        assert_eq!(of("64:ff9b::81.2.70.5"), None);
        assert!(other(2, "64:ff9b::81.2.70.5"));
        assert!(other(3, "64:ff9b::81.2.70.5"));
    }

    /// A NAT64 network is as wide as the IPv4 network it holds: the whole
    /// prefix (all of IPv4), or one as wide as an IPv4 /8, is no site,
    /// though it is a /96 or a /104 of IPv6.
    #[test]
    fn a_wide_nat64_network_is_no_site() {
        let tenants = vec![
            tenant(1, &["64:ff9b::/96"]),
            tenant(2, &["64:ff9b::5100:0/104"]),
            tenant(3, &["64:ff9b::/64"]),
            tenant(4, &["64:ff9b::5102:4500/120"]),
            Tenant {
                settings: "{}".into(),
                ..tenant(5, &[])
            },
        ];
        let mirror = mirror_of(Dataset {
            tenants,
            ..Default::default()
        });
        let index = NetworkIndex::default();
        let state = mirror.load();
        let of = |ip: &str| index.tenant_of(&state, ip.parse().unwrap());
        let other = |phone_tenant: Id, ip: &str| {
            index.held_by_another(&state, phone_tenant, ip.parse().unwrap())
        };
        assert_eq!(of("64:ff9b::8.8.8.8"), None);
        assert!(!other(5, "64:ff9b::8.8.8.8"));
        assert!(!other(5, "64:ff9b::81.3.0.1"));
        // A site inside them is still one; the wide ones hold it too.
        assert_eq!(of("64:ff9b::81.2.69.5"), None);
        assert!(other(5, "64:ff9b::81.2.69.5"));
        assert!(!other(4, "64:ff9b::81.2.69.5"));
    }

    /// Requests deciding from two mirror states at once (an edit of a
    /// tenant's networks landing while fetches run) each get the answer of
    /// the state they hold, never an index built for the other.
    #[test]
    fn each_request_is_answered_from_its_own_state() {
        let state = |networks: &[&str]| {
            mirror_of(Dataset {
                tenants: vec![tenant(2, networks)],
                ..Default::default()
            })
            .load()
        };
        let (held, free) = (state(&["10.0.0.0/24"]), state(&["192.0.2.0/24"]));
        let index = NetworkIndex::default();
        let remote: IpAddr = "10.0.0.5".parse().unwrap();
        std::thread::scope(|s| {
            for worker in 0..4 {
                let (index, held, free) = (&index, &held, &free);
                s.spawn(move || {
                    for n in 0..2_000 {
                        let (state, want) = if (n + worker) % 2 == 0 {
                            (held, true)
                        } else {
                            (free, false)
                        };
                        assert_eq!(index.held_by_another(state, 1, remote), want, "round {n}");
                    }
                });
            }
        });
    }
}
